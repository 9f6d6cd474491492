/** Fixtures of the fleet service tests: valid reports, raw HTTP requests with any header, body or framing. */
import * as crypto from 'node:crypto';
import * as http from 'node:http';
import type { DeviceReport } from '../lib/report/format';

/** A valid report with fresh random id and pseudonym; `over` replaces fields (even with invalid values). */
export function makeReport(over: Record<string, unknown> = {}): DeviceReport {
  return {
    id: crypto.randomBytes(16).toString('hex'),
    patch: 'fix-1',
    version: 1,
    outcome: 'confirmed',
    code: null,
    bootAttempts: 0,
    agentVersion: '0.1.0',
    time: '2026-12-02T06:00:00.000Z',
    pseudonym: crypto.randomBytes(32).toString('hex'),
    ...over,
  } as DeviceReport;
}

export function makeBatch(n: number, over: Record<string, unknown> = {}): { format: 1; reports: DeviceReport[] } {
  return { format: 1, reports: Array.from({ length: n }, () => makeReport(over)) };
}

export interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  /** The body as JSON, or undefined if it is not JSON. */
  json: any;
}

export interface CallOptions {
  method?: string;
  headers?: Record<string, string | undefined>;
  /** Sent with a Content-Length unless `chunked`. */
  body?: string | Buffer | object;
  /** Sends the body in chunks of this many bytes with chunked transfer encoding. */
  chunked?: number;
  /** A keep-alive agent to reuse connections. */
  agent?: http.Agent;
}

/**
 * One request to `url` + `path`. Headers given as undefined are left out
 * (so a test can drop Host or Content-Type); a server that answers before
 * reading the whole body and closes is fine: the answer is returned.
 */
export function call(url: string, path: string, options: CallOptions = {}): Promise<Answer> {
  const target = new URL(path, url);
  const body =
    options.body === undefined
      ? undefined
      : Buffer.isBuffer(options.body)
        ? options.body
        : Buffer.from(typeof options.body === 'string' ? options.body : JSON.stringify(options.body));
  const headers: Record<string, string> = {};
  if (body !== undefined && !options.chunked) headers['Content-Length'] = String(body.length);
  if (body !== undefined && typeof options.body === 'object' && !Buffer.isBuffer(options.body)) headers['Content-Type'] = 'application/json';
  for (const [name, value] of Object.entries(options.headers ?? {})) {
    for (const k of Object.keys(headers)) if (k.toLowerCase() === name.toLowerCase()) delete headers[k];
    if (value !== undefined) headers[name] = value;
  }
  return new Promise<Answer>((resolve, reject) => {
    let answered = false;
    const req = http.request(
      {
        host: target.hostname,
        port: target.port,
        path: target.pathname + target.search,
        method: options.method ?? (body === undefined ? 'GET' : 'POST'),
        headers,
        agent: options.agent ?? false,
        setHost: !Object.keys(options.headers ?? {}).some((k) => k.toLowerCase() === 'host'),
      },
      (res) => {
        answered = true;
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json: unknown;
          try {
            json = JSON.parse(text);
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
        });
      },
    );
    req.on('error', (err) => {
      if (!answered) reject(err);
    });
    if (body !== undefined && options.chunked) {
      for (let i = 0; i < body.length; i += options.chunked) req.write(body.subarray(i, i + options.chunked));
      req.end();
    } else {
      req.end(body);
    }
  });
}

/** POST /v1/reports with a Bearer token. */
export function postReports(url: string, token: string | undefined, body: unknown, options: CallOptions = {}): Promise<Answer> {
  return call(url, '/v1/reports', {
    method: 'POST',
    ...options,
    body: body as object,
    headers: { Authorization: token === undefined ? undefined : `Bearer ${token}`, ...options.headers },
  });
}
