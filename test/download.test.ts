import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as crypto from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import t, { type Test } from 'tap';
import * as atomic from '../lib/engine/atomic';
import { backoffDelay, download, fetchBytes } from '../lib/repo/download';
import type { DownloadProgress } from '../lib/repo/types';
import { sha256, tempDir } from './helpers';
import { rejectsWith } from './repo_fixture';

type Tap = Test;

const FAST = { retries: 0, backoffMs: 10, connectTimeoutMs: 20_000, readTimeoutMs: 20_000, minBytesPerSecond: 0 };

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const port = (s.address() as AddressInfo).port;
  await new Promise((resolve) => s.close(resolve));
  return port;
}

async function waitForPort(port: number, ms: number, child: ChildProcess): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (child.exitCode !== null) return false;
    const ok = await new Promise<boolean>((resolve) => {
      const c = net.connect(port, '127.0.0.1', () => {
        c.destroy();
        resolve(true);
      });
      c.on('error', () => resolve(false));
    });
    if (ok) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}

interface Nginx {
  url: string;
  root: string;
  port: number;
}

/** A real nginx on 127.0.0.1 serving a private temp root; null (with the reason) if it cannot start. */
async function startNginx(t: Tap): Promise<Nginx | string> {
  const probe = spawnSync('nginx', ['-v'], { encoding: 'utf8' });
  if (probe.error) return 'nginx is not installed (apt-get install -y nginx-light)';
  const dir = await tempDir(t, 'revpatch-nginx-');
  const root = path.join(dir, 'www');
  await fs.mkdir(root);
  for (const d of ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) await fs.mkdir(path.join(dir, d));
  const port = await freePort();
  const conf = [
    'daemon off;',
    process.getuid?.() === 0 ? 'user root;' : '',
    'worker_processes 1;',
    `pid ${dir}/nginx.pid;`,
    `error_log ${dir}/error.log warn;`,
    'events { worker_connections 64; }',
    'http {',
    '  access_log off;',
    '  sendfile off;',
    `  client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy; fastcgi_temp_path ${dir}/fastcgi;`,
    `  uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;`,
    '  default_type application/octet-stream;',
    `  server { listen 127.0.0.1:${port}; root ${root};`,
    `    location /trickle/ { alias ${root}/; limit_rate 2k; }`,
    '  }',
    '}',
  ].join('\n');
  await fs.writeFile(path.join(dir, 'nginx.conf'), conf);
  const child = spawn('nginx', ['-p', dir, '-e', `${dir}/error.log`, '-c', path.join(dir, 'nginx.conf')], { stdio: 'ignore' });
  child.on('error', () => undefined);
  t.teardown(() => {
    child.kill('SIGTERM');
  });
  if (!(await waitForPort(port, 5000, child))) {
    const log = await fs.readFile(path.join(dir, 'error.log'), 'utf8').catch(() => '');
    return `nginx did not start: ${log.trim().split('\n').pop() ?? 'no log'}`;
  }
  return { url: `http://127.0.0.1:${port}`, root, port };
}

/** A TCP proxy in front of `port` that records request heads and can cut the first connection after N bytes. */
async function proxy(t: Tap, port: number, cutFirstAfter: number) {
  const heads: string[] = [];
  let connections = 0;
  const server = net.createServer((client) => {
    const n = ++connections;
    const upstream = net.connect(port, '127.0.0.1');
    let sent = 0;
    let head = '';
    client.on('data', (d) => {
      if (!head.includes('\r\n\r\n')) {
        head += d.toString('latin1');
        if (head.includes('\r\n\r\n')) heads.push(head);
      }
      upstream.write(d);
    });
    upstream.on('data', (d: Buffer) => {
      if (n === 1 && sent + d.length > cutFirstAfter) {
        client.write(d.subarray(0, cutFirstAfter - sent));
        client.destroy();
        upstream.destroy();
        return;
      }
      sent += d.length;
      client.write(d);
    });
    upstream.on('end', () => client.end());
    upstream.on('error', () => client.destroy());
    client.on('error', () => upstream.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => server.close());
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, heads, connections: () => connections };
}

/** A node server for precise faults. */
async function faultServer(t: Tap, handler: http.RequestListener) {
  const server = http.createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

const body = crypto.randomBytes(1024 * 1024 + 123);
const bodyHash = sha256(body);

t.test('against nginx', async (t) => {
  const nginx = await startNginx(t);
  if (typeof nginx === 'string') {
    t.skip(`nginx tests skipped: ${nginx}`, () => {});
    return;
  }
  await fs.writeFile(path.join(nginx.root, 'patch.rvp'), body);

  t.test('downloads a file whole with length and hash checked, progress to the end', async (t) => {
    const dir = await tempDir(t);
    const seen: DownloadProgress[] = [];
    const r = await download(`${nginx.url}/patch.rvp`, path.join(dir, 'p'), {
      ...FAST,
      expectedLength: body.length,
      sha256: bodyHash,
      onProgress: (p) => seen.push(p),
    });
    t.equal(r.bytes, body.length);
    t.equal(r.resumedFrom, 0);
    t.same(await fs.readFile(path.join(dir, 'p')), body);
    t.ok(seen.every((p, i) => i === 0 || p.received >= seen[i - 1].received), 'progress never goes back');
    t.equal(seen[seen.length - 1].received, body.length);
    await t.rejects(fs.stat(path.join(dir, 'p.etag')), 'the validator file is removed once complete');
  });

  t.test('continues a partial file with Range and If-Range', async (t) => {
    const dir = await tempDir(t);
    const dest = path.join(dir, 'p');
    const p = await proxy(t, nginx.port, Infinity);
    const first = await fetch(`${nginx.url}/patch.rvp`, { method: 'HEAD' });
    await fs.writeFile(dest, body.subarray(0, 300_000));
    await fs.writeFile(`${dest}.etag`, first.headers.get('etag') as string);
    const r = await download(`${p.url}/patch.rvp`, dest, { ...FAST, expectedLength: body.length, sha256: bodyHash });
    t.equal(r.resumedFrom, 300_000);
    t.match(p.heads[0], /Range: bytes=300000-/i);
    t.match(p.heads[0], /If-Range: "/i);
    t.same(await fs.readFile(dest), body);
  });

  t.test('a connection dropped mid-file is resumed from where it broke', async (t) => {
    const dir = await tempDir(t);
    const p = await proxy(t, nginx.port, 400_000);
    const r = await download(`${p.url}/patch.rvp`, path.join(dir, 'p'), {
      ...FAST,
      retries: 3,
      expectedLength: body.length,
      sha256: bodyHash,
    });
    t.equal(r.attempts, 2);
    t.equal(p.connections(), 2);
    t.notMatch(p.heads[0], /Range:/i, 'the first request is for the whole file');
    t.match(p.heads[1], /Range: bytes=\d+-/i, 'the second continues');
    const from = Number(/Range: bytes=(\d+)-/i.exec(p.heads[1])?.[1]);
    t.ok(from > 0 && from <= 400_000, `resumed at ${from}`);
    t.same(await fs.readFile(path.join(dir, 'p')), body);
  });

  t.test('a write still in flight when the connection is cut ends before the next attempt asks for its range', async (t) => {
    // Writes near the cut (400 000 bytes) take 150 ms each, so the last
    // chunk before it is still being written when the connection closes.
    // Were the attempt failed at once, the next one would ask for a range
    // from the count before that chunk, the chunk would land after, and the
    // range would no longer fit (a third attempt).
    let delayed = 0;
    const slowWrite: typeof atomic.writeAll = async (handle, chunk, at) => {
      if (at + chunk.byteLength > 380_000 && at < 400_000) {
        delayed += 1;
        await new Promise((resolve) => setTimeout(resolve, 150));
      }
      return atomic.writeAll(handle, chunk, at);
    };
    const mocked = t.mockRequire('../lib/repo/download', { '../lib/engine/atomic': { ...atomic, writeAll: slowWrite } }) as {
      download: typeof download;
    };
    const dir = await tempDir(t);
    const p = await proxy(t, nginx.port, 400_000);
    const r = await mocked.download(`${p.url}/patch.rvp`, path.join(dir, 'p'), {
      ...FAST,
      retries: 3,
      expectedLength: body.length,
      sha256: bodyHash,
    });
    t.ok(delayed > 0, 'writes near the cut were slowed');
    t.equal(r.attempts, 2);
    t.equal(p.connections(), 2);
    t.same(await fs.readFile(path.join(dir, 'p')), body);
  });

  t.test('a dropped connection without retries fails E_NETWORK and keeps the prefix for later', async (t) => {
    const dir = await tempDir(t);
    const p = await proxy(t, nginx.port, 200_000);
    const dest = path.join(dir, 'p');
    await rejectsWith(t, download(`${p.url}/patch.rvp`, dest, { ...FAST, expectedLength: body.length, sha256: bodyHash }), 'E_NETWORK');
    const kept = (await fs.stat(dest)).size;
    t.ok(kept > 0 && kept <= 200_000, `kept ${kept} bytes`);
    const r = await download(`${nginx.url}/patch.rvp`, dest, { ...FAST, expectedLength: body.length, sha256: bodyHash });
    t.equal(r.resumedFrom, kept, 'the next run continues');
    t.same(await fs.readFile(dest), body);
  });

  t.test('a server that trickles bytes (nginx limit_rate) is abandoned with E_SLOW_RETRIEVAL', async (t) => {
    const dir = await tempDir(t);
    await rejectsWith(
      t,
      download(`${nginx.url}/trickle/patch.rvp`, path.join(dir, 'p'), {
        ...FAST,
        minBytesPerSecond: 64 * 1024,
        rateWindowMs: 1000,
        expectedLength: body.length,
        sha256: bodyHash,
      }),
      'E_SLOW_RETRIEVAL',
    );
  });

  t.test('a file shorter than announced is E_LENGTH_MISMATCH, a longer one E_TOO_LARGE', async (t) => {
    const dir = await tempDir(t);
    await rejectsWith(t, download(`${nginx.url}/patch.rvp`, path.join(dir, 'a'), { ...FAST, expectedLength: body.length + 10 }), 'E_LENGTH_MISMATCH');
    await rejectsWith(t, download(`${nginx.url}/patch.rvp`, path.join(dir, 'b'), { ...FAST, expectedLength: body.length - 10 }), 'E_TOO_LARGE');
    t.equal((await fs.stat(path.join(dir, 'b'))).size, 0, 'oversized data is not kept');
  });

  t.test('the wrong hash is E_HASH_MISMATCH; a 404 is E_NOT_FOUND', async (t) => {
    const dir = await tempDir(t);
    await rejectsWith(t, download(`${nginx.url}/patch.rvp`, path.join(dir, 'a'), { ...FAST, expectedLength: body.length, sha256: 'a'.repeat(64) }), 'E_HASH_MISMATCH');
    await rejectsWith(t, download(`${nginx.url}/missing.rvp`, path.join(dir, 'b'), { ...FAST, retries: 3, expectedLength: 10 }), 'E_NOT_FOUND');
  });

  t.test('a stale partial file of another version is replaced: If-Range gets the whole new file', async (t) => {
    const dir = await tempDir(t);
    const dest = path.join(dir, 'p');
    await fs.writeFile(dest, crypto.randomBytes(100_000));
    await fs.writeFile(`${dest}.etag`, '"stale-validator"');
    const r = await download(`${nginx.url}/patch.rvp`, dest, { ...FAST, expectedLength: body.length, sha256: bodyHash });
    t.equal(r.bytes, body.length);
    t.same(await fs.readFile(dest), body);
  });

  t.test('a spliced prefix without a validator fails the hash once and is fetched again whole', async (t) => {
    const dir = await tempDir(t);
    const dest = path.join(dir, 'p');
    await fs.writeFile(dest, crypto.randomBytes(100_000));
    const r = await download(`${nginx.url}/patch.rvp`, dest, { ...FAST, retries: 1, expectedLength: body.length, sha256: bodyHash });
    t.equal(r.attempts, 2);
    t.same(await fs.readFile(dest), body);
  });

  t.test('the bandwidth cap holds the transfer at or below the cap', async (t) => {
    const dir = await tempDir(t);
    const started = Date.now();
    await download(`${nginx.url}/patch.rvp`, path.join(dir, 'p'), {
      ...FAST,
      maxBytesPerSecond: 1024 * 1024,
      expectedLength: body.length,
      sha256: bodyHash,
    });
    // A lower bound only: a cap can make a transfer slower, never faster.
    t.ok(Date.now() - started >= 900, 'about one second for a little over 1 MiB at 1 MiB/s');
  });
});

t.test('endless chunked body is cut at the first excess byte (E_TOO_LARGE)', async (t) => {
  const url = await faultServer(t, (_req, res) => {
    res.writeHead(200);
    const chunk = Buffer.alloc(16 * 1024, 1);
    const pump = () => {
      while (res.write(chunk));
    };
    res.on('drain', pump);
    pump();
  });
  const dir = await tempDir(t);
  await rejectsWith(t, download(url, path.join(dir, 'p'), { ...FAST, expectedLength: 100_000 }), 'E_TOO_LARGE');
  await rejectsWith(t, fetchBytes(url, 50_000, FAST), 'E_TOO_LARGE');
});

t.test('a Content-Length beyond the expected length is refused before the body', async (t) => {
  const url = await faultServer(t, (_req, res) => {
    res.writeHead(200, { 'Content-Length': 10_000_000 });
    res.write(Buffer.alloc(10));
  });
  const dir = await tempDir(t);
  await rejectsWith(t, download(url, path.join(dir, 'p'), { ...FAST, expectedLength: 1000 }), 'E_TOO_LARGE');
});

t.test('silence after the headers hits the read timeout (E_SLOW_RETRIEVAL)', async (t) => {
  const url = await faultServer(t, (_req, res) => {
    res.writeHead(200, { 'Content-Length': 1000 });
    res.write(Buffer.alloc(10));
  });
  const dir = await tempDir(t);
  await rejectsWith(t, download(url, path.join(dir, 'p'), { ...FAST, readTimeoutMs: 300, expectedLength: 1000 }), 'E_SLOW_RETRIEVAL');
});

t.test('no response headers in time hits the connect timeout (E_SLOW_RETRIEVAL)', async (t) => {
  const url = await faultServer(t, () => undefined);
  const dir = await tempDir(t);
  await rejectsWith(t, download(url, path.join(dir, 'p'), { ...FAST, connectTimeoutMs: 300, expectedLength: 10 }), 'E_SLOW_RETRIEVAL');
});

t.test('server errors are retried with backoff; client errors are not', async (t) => {
  let hits = 0;
  const url = await faultServer(t, (req, res) => {
    hits += 1;
    if (req.url === '/teapot') return void res.writeHead(418).end();
    if (hits < 3) return void res.writeHead(503).end();
    res.writeHead(200, { 'Content-Length': 5 }).end('hello');
  });
  const dir = await tempDir(t);
  const r = await download(`${url}/ok`, path.join(dir, 'p'), { ...FAST, retries: 4, expectedLength: 5, sha256: sha256(Buffer.from('hello')) });
  t.equal(r.attempts, 3);
  hits = 0;
  await rejectsWith(t, download(`${url}/teapot`, path.join(dir, 'q'), { ...FAST, retries: 4, expectedLength: 5 }), 'E_NETWORK');
  t.equal(hits, 1, 'a 4xx is not retried');
});

t.test('an AbortSignal stops the download with E_ABORTED, also during backoff', async (t) => {
  const url = await faultServer(t, (_req, res) => {
    res.writeHead(200, { 'Content-Length': 1000 });
    res.write(Buffer.alloc(10));
  });
  const dir = await tempDir(t);
  const controller = new AbortController();
  setTimeout(() => controller.abort(), 100);
  await rejectsWith(t, download(url, path.join(dir, 'p'), { ...FAST, expectedLength: 1000, signal: controller.signal }), 'E_ABORTED');
  const refused = `http://127.0.0.1:${await freePort()}`;
  const c2 = new AbortController();
  setTimeout(() => c2.abort(), 100);
  await rejectsWith(t, download(refused, path.join(dir, 'q'), { ...FAST, retries: 10, backoffMs: 10_000, expectedLength: 10, signal: c2.signal }), 'E_ABORTED');
});

t.test('bad arguments are E_INVALID_ARGUMENT', async (t) => {
  const dir = await tempDir(t);
  await rejectsWith(t, download('http://127.0.0.1:1/x', path.join(dir, 'a'), { expectedLength: -1 }), 'E_INVALID_ARGUMENT');
  await rejectsWith(t, download('http://127.0.0.1:1/x', path.join(dir, 'a'), { expectedLength: 1, sha256: 'xyz' }), 'E_INVALID_ARGUMENT');
  await rejectsWith(t, download('file:///etc/passwd', path.join(dir, 'a'), { ...FAST, expectedLength: 1 }), 'E_INVALID_ARGUMENT');
  await rejectsWith(t, download('http://127.0.0.1:1/x', path.join(dir, 'a'), { expectedLength: 1, maxBytesPerSecond: 10, minBytesPerSecond: 100 }), 'E_INVALID_ARGUMENT');
});

t.test('backoff delays are jittered below an exponential cap', async (t) => {
  t.equal(backoffDelay(0, 500, 30_000, () => 0.999), 499);
  t.equal(backoffDelay(3, 500, 30_000, () => 0.5), 2000);
  t.equal(backoffDelay(20, 500, 30_000, () => 0.999), 29_970);
  t.equal(backoffDelay(5, 500, 30_000, () => 0), 0);
});
