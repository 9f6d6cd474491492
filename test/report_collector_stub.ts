/**
 * A stand-in collector for the report client tests: a loopback HTTP server
 * that keeps every POST /v1/reports it gets (headers and parsed batch) and
 * answers with what the test's `answer` says, by request number. `hang`
 * never answers. Reports are stored once per id, as the real collector does.
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { DeviceReport, ReportBatch } from '../lib/report/format';

export type Answer = { status: number; body?: unknown } | 'hang';

export interface CollectorStub {
  url: string;
  requests: Array<{ method: string; path: string; headers: http.IncomingHttpHeaders; batch: ReportBatch | null }>;
  /** Reports stored, once per id. */
  stored: Map<string, DeviceReport>;
  /** The answer to request number n (0-based); default 200 with an acknowledgement. */
  answer: (n: number) => Answer;
  /** Resolves once `count` requests have arrived. */
  received(count: number): Promise<void>;
  close(): Promise<void>;
}

export async function startCollector(t: { teardown(fn: () => unknown): void }): Promise<CollectorStub> {
  const waiters: Array<{ count: number; resolve: () => void }> = [];
  const stub: CollectorStub = {
    url: '',
    requests: [],
    stored: new Map(),
    answer: () => ({ status: 200 }),
    received: (count) =>
      new Promise<void>((resolve) => {
        if (stub.requests.length >= count) resolve();
        else waiters.push({ count, resolve });
      }),
    close: async () => undefined,
  };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      let batch: ReportBatch | null = null;
      try {
        batch = JSON.parse(Buffer.concat(chunks).toString('utf8')) as ReportBatch;
      } catch {
        batch = null;
      }
      const n = stub.requests.length;
      stub.requests.push({ method: req.method ?? '', path: req.url ?? '', headers: req.headers, batch });
      for (const w of waiters.filter((w) => stub.requests.length >= w.count)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve();
      }
      const answer = stub.answer(n);
      if (answer === 'hang') return;
      let body = answer.body;
      if (answer.status === 200 && body === undefined) {
        let accepted = 0;
        let duplicates = 0;
        for (const r of batch?.reports ?? []) {
          if (stub.stored.has(r.id)) duplicates += 1;
          else {
            stub.stored.set(r.id, r);
            accepted += 1;
          }
        }
        body = { accepted, duplicates };
      }
      const text = body === undefined ? '' : typeof body === 'string' ? body : JSON.stringify(body);
      res.writeHead(answer.status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) }).end(text);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  stub.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  stub.close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  t.teardown(() => stub.close());
  return stub;
}
