/**
 * `repo serve`: a small static HTTP server for development and tests. It
 * serves only DIR/metadata/ and DIR/targets/ (never keys/ or repo.json),
 * GET and HEAD, with single byte ranges (Range, If-Range) and an ETag, and
 * binds 127.0.0.1 unless told otherwise. Production repositories are served
 * by any static server or CDN; this one exists so the whole story runs on
 * one machine.
 */
import { createReadStream, promises as fs } from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { RevpatchError } from '../engine/errors';
import { METADATA_DIR, TARGETS_DIR } from './publisher';

export interface ServeOptions {
  host?: string;
  /** 0 picks a free port. */
  port?: number;
}

export interface RepositoryServer {
  url: string;
  server: http.Server;
  close(): Promise<void>;
}

/** Resolves a request path inside DIR/metadata or DIR/targets, or null. */
function resolveRequest(root: string, urlPath: string): string | null {
  let decoded: string;
  try {
    decoded = decodeURIComponent(urlPath.split('?')[0]);
  } catch {
    return null;
  }
  if (decoded.includes('\0') || decoded.includes('\\')) return null;
  const parts = decoded.split('/').filter((p) => p.length > 0);
  if (parts.length < 2 || (parts[0] !== METADATA_DIR && parts[0] !== TARGETS_DIR)) return null;
  if (parts.some((p) => p === '..' || p === '.' || p.startsWith('.'))) return null;
  const file = path.join(root, ...parts);
  if (!file.startsWith(path.join(root, parts[0]) + path.sep)) return null;
  return file;
}

/** Parses one `bytes=` range against `size`: [start, end] inclusive, null for none, 'bad' if unsatisfiable. */
export function parseRange(header: string | undefined, size: number): [number, number] | null | 'bad' {
  if (!header) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return null; // multiple or malformed ranges: send the whole file
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0) return 'bad';
    return [Math.max(0, size - suffix), size - 1];
  }
  const start = Number(m[1]);
  const end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  if (start >= size || end < start) return 'bad';
  return [start, end];
}

export async function serveRepository(dir: string, options: ServeOptions = {}): Promise<RepositoryServer> {
  const root = await fs.realpath(path.resolve(dir)).catch(() => {
    throw new RevpatchError('E_NOT_FOUND', `${dir} does not exist`);
  });
  const host = options.host ?? '127.0.0.1';
  const server = http.createServer((req, res) => {
    void handle(root, req, res).catch(() => {
      if (!res.headersSent) res.writeHead(500);
      res.end();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 8080, host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  const shownHost = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return {
    url: `http://${shownHost}:${address.port}`,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

async function handle(root: string, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { Allow: 'GET, HEAD' }).end();
    return;
  }
  const file = resolveRequest(root, req.url ?? '/');
  const stat = file ? await fs.lstat(file).catch(() => null) : null;
  // No symlinks, neither the file nor a directory on the way.
  const real = file && stat ? await fs.realpath(file).catch(() => null) : null;
  if (!file || !stat || !stat.isFile() || real !== file) {
    res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found\n');
    return;
  }
  const size = stat.size;
  const etag = `"${size.toString(16)}-${Math.floor(stat.mtimeMs).toString(16)}"`;
  const headers: http.OutgoingHttpHeaders = {
    'Accept-Ranges': 'bytes',
    ETag: etag,
    'Last-Modified': stat.mtime.toUTCString(),
    'Content-Type': file.endsWith('.json') ? 'application/json' : 'application/octet-stream',
    'Cache-Control': 'no-cache',
  };
  const ifRange = req.headers['if-range'];
  let range = parseRange(req.headers.range, size);
  if (range !== null && ifRange !== undefined && ifRange !== etag) range = null;
  if (range === 'bad') {
    res.writeHead(416, { ...headers, 'Content-Range': `bytes */${size}` }).end();
    return;
  }
  const [start, end] = range ?? [0, size - 1];
  const length = size === 0 ? 0 : end - start + 1;
  if (range) {
    res.writeHead(206, { ...headers, 'Content-Range': `bytes ${start}-${end}/${size}`, 'Content-Length': length });
  } else {
    res.writeHead(200, { ...headers, 'Content-Length': length });
  }
  if (req.method === 'HEAD' || length === 0) {
    res.end();
    return;
  }
  const stream = createReadStream(file, { start, end });
  stream.on('error', () => res.destroy());
  stream.pipe(res);
}
