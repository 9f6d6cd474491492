import t, { type Test } from 'tap';
import { RevpatchError } from '../lib/engine/errors';
import { FleetServer, type FleetOperator, type FleetServerOptions } from '../lib/fleet/server';
import * as net from 'node:net';
import * as path from 'node:path';
import { RolloutController } from '../lib/fleet/controller';
import { Repository } from '../lib/repo/publisher';
import { addonBuilt } from './helpers';
import { repoFixture } from './repo_fixture';
import { openStore } from '../lib/fleet/store';
import { authenticate, hashToken, mintToken } from '../lib/fleet/tokens';
import type { FleetStore, PlanRecord } from '../lib/fleet/types';
import { MAX_BATCH_REPORTS, type StoredReport } from '../lib/report/format';
import { call, makeBatch, makeReport, postReports, type Answer } from './fleet_fixture';

const NOW = Date.UTC(2026, 11, 2, 6, 0, 0);

async function world(t: Test, options: Partial<FleetServerOptions> = {}, store?: FleetStore) {
  store ??= await openStore('sqlite::memory:');
  const server = await FleetServer.start({ store, clock: () => NOW, ...options });
  t.teardown(async () => {
    await server.close();
    await store.close();
  });
  const device = await mintToken(store, 'device', { devices: 3, now: NOW });
  const operator = await mintToken(store, 'operator', { now: NOW });
  return { store, server, url: server.url, device, operator };
}

function isError(t: Test, answer: Answer, status: number, code: string, what: string): void {
  t.equal(answer.status, status, `${what}: HTTP ${status}`);
  t.equal(answer.json?.error?.code, code, `${what}: ${code}`);
  t.type(answer.json?.error?.message, 'string', `${what}: a message`);
  t.equal(answer.headers['cache-control'], 'no-store', `${what}: no-store`);
  t.equal(answer.headers['x-content-type-options'], 'nosniff', `${what}: nosniff`);
}

/** A store that fails its next `failures` commits, holds commits while `gate` is set, and counts the batches of each commit. */
function instrumented(store: FleetStore) {
  const control = {
    failures: 0,
    /** A report with this agentVersion makes the store refuse its commit, as a constraint would. */
    poison: null as string | null,
    gate: null as Promise<void> | null,
    commits: [] as number[],
  };
  const wrapped = Object.create(store) as FleetStore;
  wrapped.insertReports = async (batches: readonly (readonly StoredReport[])[]) => {
    control.commits.push(batches.length);
    if (control.gate) await control.gate;
    if (control.failures > 0) {
      control.failures--;
      throw new RevpatchError('E_IO', 'disk I/O error (injected)');
    }
    if (batches.some((b) => b.some((r) => r.agentVersion === control.poison))) {
      throw new RevpatchError('E_INVALID_ARGUMENT', 'CHECK constraint failed (injected)');
    }
    return store.insertReports(batches);
  };
  return { store: wrapped, control };
}

// ------------------------------------------------------------------ tokens

t.test('a minted token is stored only as its SHA-256 and names its kind', async (t) => {
  const store = await openStore('sqlite::memory:');
  t.teardown(() => store.close());
  const device = await mintToken(store, 'device', { devices: 7, now: NOW });
  const operator = await mintToken(store, 'operator', { now: NOW });
  t.match(device, /^rpd_[A-Za-z0-9_-]{43}$/);
  t.match(operator, /^rpo_[A-Za-z0-9_-]{43}$/);
  t.not(device.slice(4), operator.slice(4));
  const record = await store.findToken(hashToken(device));
  t.match(record, { hash: hashToken(device), kind: 'device', devices: 7, createdAt: NOW, revoked: false });
  t.notOk(JSON.stringify(record).includes(device.slice(4)), 'the token itself is not stored');
  t.match(await store.findToken(hashToken(operator)), { kind: 'operator', devices: 0 });
  t.equal(hashToken('abc'), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad', 'hex SHA-256');
  t.match(hashToken(device), /^[0-9a-f]{64}$/);
  await t.rejects(mintToken(store, 'device', { devices: 0, now: NOW }), { code: 'E_INVALID_ARGUMENT' });
  await t.rejects(mintToken(store, 'device', { devices: 1.5, now: NOW }), { code: 'E_INVALID_ARGUMENT' });
  await t.rejects(mintToken(store, 'admin' as never, { now: NOW }), { code: 'E_INVALID_ARGUMENT' });
});

t.test('authenticate refuses a missing, malformed, unknown or revoked token and a token of the other API', async (t) => {
  const store = await openStore('sqlite::memory:');
  t.teardown(() => store.close());
  const device = await mintToken(store, 'device', { now: NOW });
  const operator = await mintToken(store, 'operator', { now: NOW });
  const revoked = 'rpd_' + 'A'.repeat(43);
  await store.addToken({ hash: hashToken(revoked), kind: 'device', devices: 1, createdAt: NOW, revoked: true });
  t.match(await authenticate(store, `Bearer ${device}`, 'device'), { kind: 'device' });
  t.match(await authenticate(store, `bearer  ${operator}`, 'operator'), { kind: 'operator' });
  for (const [header, what] of [
    [undefined, 'no header'],
    ['', 'empty header'],
    [`Basic ${device}`, 'another scheme'],
    [`Bearer ${device}x`, 'malformed'],
    [`Bearer rpd_${'B'.repeat(43)}`, 'unknown'],
    [`Bearer ${revoked}`, 'revoked'],
  ] as const) {
    await t.rejects(authenticate(store, header, 'device'), { code: 'E_AUTH' }, what);
  }
  await t.rejects(authenticate(store, `Bearer ${operator}`, 'device'), { code: 'E_FORBIDDEN' });
  await t.rejects(authenticate(store, `Bearer ${device}`, 'operator'), { code: 'E_FORBIDDEN' });
});

// ------------------------------------------------------------- device API

t.test('an accepted batch is stored once, with the server clock, and answered with its counts', async (t) => {
  const { url, device, store } = await world(t);
  const batch = makeBatch(5);
  const a = await postReports(url, device, batch);
  t.equal(a.status, 200);
  t.same(a.json, { accepted: 5, duplicates: 0 });
  t.equal(a.headers['cache-control'], 'no-store');
  t.equal(a.headers['x-content-type-options'], 'nosniff');
  t.match(a.headers['content-type'], /^application\/json/);
  t.equal(await store.reportCount(), 5);
  t.match(await store.counts('fix-1', 1, NOW), { confirmed: 5 }, 'received at the server clock');
  t.match(await store.counts('fix-1', 1, NOW + 1), { confirmed: 0 });
});

t.test('a retried batch is counted once', async (t) => {
  const { url, device, store } = await world(t);
  const batch = makeBatch(4);
  t.same((await postReports(url, device, batch)).json, { accepted: 4, duplicates: 0 });
  t.same((await postReports(url, device, batch)).json, { accepted: 0, duplicates: 4 });
  const mixed = { format: 1, reports: [...batch.reports.slice(0, 2), makeReport(), makeReport()] };
  t.same((await postReports(url, device, mixed)).json, { accepted: 2, duplicates: 2 });
  t.equal(await store.reportCount(), 6);
  t.match(await store.counts('fix-1', 1), { confirmed: 6 });
});

t.test('every bad report batch is refused with its code and stores nothing', async (t) => {
  const { url, device, operator, store, server } = await world(t);
  const revoked = 'rpd_' + 'C'.repeat(43);
  await store.addToken({ hash: hashToken(revoked), kind: 'device', devices: 1, createdAt: NOW, revoked: true });
  const good = makeBatch(3, { time: '2024-02-29T23:59:59.5+05:30' });
  const host = `${server.host}:${server.port}`;

  const cases: [string, () => Promise<Answer>, number, string][] = [
    ['no token', () => postReports(url, undefined, good), 401, 'E_AUTH'],
    ['a malformed token', () => postReports(url, 'nonsense', good), 401, 'E_AUTH'],
    ['an unknown token', () => postReports(url, 'rpd_' + 'D'.repeat(43), good), 401, 'E_AUTH'],
    ['a revoked token', () => postReports(url, revoked, good), 401, 'E_AUTH'],
    ['an operator token', () => postReports(url, operator, good), 403, 'E_FORBIDDEN'],
    ['a foreign Host', () => postReports(url, device, good, { headers: { Host: 'evil.example:80' } }), 403, 'E_FORBIDDEN'],
    ['our port on another name', () => postReports(url, device, good, { headers: { Host: `evil.example:${server.port}` } }), 403, 'E_FORBIDDEN'],
    ['a foreign Origin', () => postReports(url, device, good, { headers: { Origin: 'http://evil.example' } }), 403, 'E_FORBIDDEN'],
    ['Origin null', () => postReports(url, device, good, { headers: { Origin: 'null' } }), 403, 'E_FORBIDDEN'],
    ['an Origin on another port', () => postReports(url, device, good, { headers: { Origin: `http://127.0.0.1:${server.port + 1}` } }), 403, 'E_FORBIDDEN'],
    ['text/plain', () => postReports(url, device, JSON.stringify(good), { headers: { 'Content-Type': 'text/plain' } }), 415, 'E_UNSUPPORTED'],
    ['a form', () => postReports(url, device, JSON.stringify(good), { headers: { 'Content-Type': 'application/x-www-form-urlencoded' } }), 415, 'E_UNSUPPORTED'],
    ['no content type', () => postReports(url, device, JSON.stringify(good), { headers: { 'Content-Type': undefined } }), 415, 'E_UNSUPPORTED'],
    ['latin-1 JSON', () => postReports(url, device, good, { headers: { 'Content-Type': 'application/json; charset=iso-8859-1' } }), 415, 'E_UNSUPPORTED'],
    ['malformed JSON', () => postReports(url, device, '{"format":1,"reports":[', { headers: { 'Content-Type': 'application/json' } }), 400, 'E_INVALID_ARGUMENT'],
    ['an empty body', () => postReports(url, device, '', { headers: { 'Content-Type': 'application/json' } }), 400, 'E_INVALID_ARGUMENT'],
    ['a JSON array', () => postReports(url, device, [good]), 400, 'E_INVALID_ARGUMENT'],
    ['format 2', () => postReports(url, device, { ...good, format: 2 }), 400, 'E_UNSUPPORTED'],
    ['format "1"', () => postReports(url, device, { ...good, format: '1' }), 400, 'E_UNSUPPORTED'],
    ['no format', () => postReports(url, device, { reports: good.reports }), 400, 'E_INVALID_ARGUMENT'],
    ['no reports', () => postReports(url, device, { format: 1, reports: [] }), 400, 'E_INVALID_ARGUMENT'],
    ['reports not an array', () => postReports(url, device, { format: 1, reports: {} }), 400, 'E_INVALID_ARGUMENT'],
    ['too many reports', () => postReports(url, device, makeBatch(MAX_BATCH_REPORTS + 1)), 413, 'E_TOO_LARGE'],
    ['an unknown batch field', () => postReports(url, device, { ...good, extra: 1 }), 400, 'E_INVALID_ARGUMENT'],
    ['GET', () => call(url, '/v1/reports', { headers: { Authorization: `Bearer ${device}` } }), 405, 'E_UNSUPPORTED'],
    ['PUT', () => postReports(url, device, good, { method: 'PUT' }), 405, 'E_UNSUPPORTED'],
  ];

  // One bad report among good ones refuses the whole batch.
  const badFields: [string, Record<string, unknown>][] = [
    ['id of 31 hex', { id: 'a'.repeat(31) }],
    ['id in upper case', { id: 'A'.repeat(32) }],
    ['id a number', { id: 12 }],
    ['pseudonym of 63 hex', { pseudonym: 'b'.repeat(63) }],
    ['pseudonym not hex', { pseudonym: 'g'.repeat(64) }],
    ['unknown outcome', { outcome: 'installed' }],
    ['outcome null', { outcome: null }],
    ['patch id with a slash', { patch: '../etc' }],
    ['patch id empty', { patch: '' }],
    ['patch id too long', { patch: 'p'.repeat(129) }],
    ['version 0', { version: 0 }],
    ['version 1.5', { version: 1.5 }],
    ['version a string', { version: '1' }],
    ['version too large', { version: 2 ** 31 }],
    ['code a number', { code: 5 }],
    ['code too long', { code: 'E'.repeat(65) }],
    ['code with spaces', { code: 'E IO' }],
    ['bootAttempts negative', { bootAttempts: -1 }],
    ['bootAttempts huge', { bootAttempts: 1e9 }],
    ['bootAttempts missing', { bootAttempts: undefined }],
    ['agentVersion too long', { agentVersion: '1'.repeat(65) }],
    ['agentVersion with markup', { agentVersion: '<script>' }],
    ['time not a date', { time: 'yesterday' }],
    ['time month 13', { time: '2026-13-01T00:00:00Z' }],
    ['time without zone', { time: '2026-12-01T00:00:00' }],
    ['time on February 29 of 2025', { time: '2025-02-29T00:00:00Z' }],
    ['time on April 31', { time: '2026-04-31T00:00:00Z' }],
    ['time with a leap second', { time: '2026-12-31T23:59:60Z' }],
    ['time at hour 24', { time: '2026-12-31T24:00:00Z' }],
    ['time with offset +24:00', { time: '2026-12-31T10:00:00+24:00' }],
    ['time too long', { time: '2026-12-31T10:00:00.1234567890Z' }],
    ['an unknown report field', { device: 'serial-123' }],
    ['__proto__', JSON.parse('{"__proto__": {"x": 1}}')],
  ];
  for (const [what, over] of badFields) {
    const reports = [makeReport(), makeReport(over), makeReport()];
    cases.push([what, () => postReports(url, device, { format: 1, reports }), 400, 'E_INVALID_ARGUMENT']);
  }
  t.equal(host.startsWith('127.0.0.1:'), true);

  for (const [what, send, status, code] of cases) {
    isError(t, await send(), status, code, what);
  }
  t.equal(await store.reportCount(), 0, 'nothing of a refused batch is stored');
  t.same(await store.counts('fix-1', 1), { staged: 0, refused: 0, trial: 0, confirmed: 0, failed: 0, removed: 0, recalled: 0 });
  t.same((await postReports(url, device, good)).json, { accepted: 3, duplicates: 0 }, 'the server still takes a good batch');
});

t.test('a body over the limit is refused unread, declared or chunked', async (t) => {
  const { url, device, store } = await world(t, { maxBatchBytes: 2048 });
  const big = makeBatch(20);
  t.ok(JSON.stringify(big).length > 2048);
  const declared = await postReports(url, device, big);
  isError(t, declared, 413, 'E_TOO_LARGE', 'Content-Length over the limit');
  t.equal(declared.headers.connection, 'close', 'the unread body ends the connection');
  isError(t, await postReports(url, device, big, { chunked: 512 }), 413, 'E_TOO_LARGE', 'chunked over the limit');
  isError(t, await postReports(url, device, big, { headers: { 'Content-Length': '999999999999' } }), 413, 'E_TOO_LARGE', 'a huge declared length');
  t.equal(await store.reportCount(), 0);
  t.same((await postReports(url, device, makeBatch(2), { chunked: 100 })).json, { accepted: 2, duplicates: 0 }, 'a chunked batch under the limit is taken');
});

t.test('the default limit is MAX_BATCH_BYTES', async (t) => {
  const { url, device, store } = await world(t);
  const padded = Buffer.alloc(1024 * 1024 + 1, 0x20);
  isError(t, await postReports(url, device, padded, { headers: { 'Content-Type': 'application/json' } }), 413, 'E_TOO_LARGE', 'over 1 MiB');
  t.equal(await store.reportCount(), 0);
});

t.test('headers over the limit are refused', async (t) => {
  const { url, device, store } = await world(t);
  const a = await postReports(url, device, makeBatch(1), { headers: { 'X-Padding': 'x'.repeat(20 * 1024) } });
  t.equal(a.status, 431);
  t.equal(await store.reportCount(), 0);
});

t.test('a request that sends its body too slowly is cut off and stores nothing', async (t) => {
  const { server, device, store } = await world(t, { requestTimeoutMs: 300 });
  const body = JSON.stringify(makeBatch(2));
  const answer = await new Promise<string>((resolve, reject) => {
    const socket = net.connect(server.port, '127.0.0.1', () => {
      socket.write(
        `POST /v1/reports HTTP/1.1\r\nHost: ${server.host}:${server.port}\r\nAuthorization: Bearer ${device}\r\n` +
          `Content-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body.slice(0, 20)}`,
      );
    });
    let got = '';
    socket.on('data', (d) => (got += d.toString()));
    socket.on('close', () => resolve(got));
    socket.on('error', reject);
  });
  t.match(answer, /^HTTP\/1\.1 408 /, 'answered 408');
  t.equal(await store.reportCount(), 0);
});

t.test('the Host may be localhost or an allowed name; the Origin must match it', async (t) => {
  const { url, device, server, store } = await world(t, { allowedHosts: ['fleet.example.com', 'Proxy.Example:8443'] });
  for (const host of [`localhost:${server.port}`, `127.0.0.1:${server.port}`, 'fleet.example.com', 'proxy.example:8443']) {
    t.equal((await postReports(url, device, makeBatch(1), { headers: { Host: host } })).status, 200, host);
  }
  t.equal((await postReports(url, device, makeBatch(1), { headers: { Origin: `http://localhost:${server.port}` } })).status, 200, 'own Origin');
  t.equal((await postReports(url, device, makeBatch(1), { headers: { Origin: 'https://fleet.example.com' } })).status, 200, 'allowed Origin');
  for (const host of ['fleet.example.com:81', 'localhost', `localhost:${server.port}.evil.example`]) {
    isError(t, await postReports(url, device, makeBatch(1), { headers: { Host: host } }), 403, 'E_FORBIDDEN', host);
  }
  isError(t, await call(url, '/v1/health', { headers: { Host: 'rebound.example' } }), 403, 'E_FORBIDDEN', 'health on a foreign Host');
  t.equal(await store.reportCount(), 6);
});

// ----------------------------------------------------------- group commit

t.test('batches sent concurrently are all acknowledged and stored, gathered into few commits', async (t) => {
  const base = await openStore('sqlite::memory:');
  const { store, control } = instrumented(base);
  const { url, device, server } = await world(t, {}, store);
  // Hold the first commit until every other batch is waiting: they must all go into the next one.
  let release!: () => void;
  control.gate = new Promise<void>((r) => (release = r));
  const batches = Array.from({ length: 40 }, () => makeBatch(25));
  const answers = batches.map((b) => postReports(url, device, b));
  while (server.queuedBatches < 40 - control.commits.reduce((a, b) => a + b, 0)) await new Promise((r) => setTimeout(r, 5));
  control.gate = null;
  release();
  const all = await Promise.all(answers);
  t.ok(all.every((a) => a.status === 200 && a.json.accepted === 25 && a.json.duplicates === 0), 'every batch acknowledged');
  t.equal(await base.reportCount(), 1000);
  t.equal(control.commits.length, 2, 'the batches that waited went into one commit');
  t.same(server.commitStats, { commits: 2, batches: 40, reports: 1000, failedCommits: 0 });
});

t.test('a failing commit answers 503 to each of its batches and stores nothing of them', async (t) => {
  const base = await openStore('sqlite::memory:');
  const { store, control } = instrumented(base);
  const { url, device, server } = await world(t, {}, store);
  control.failures = 2;
  let release!: () => void;
  control.gate = new Promise<void>((r) => (release = r));
  const batches = [makeBatch(3), makeBatch(4), makeBatch(5)];
  const first = postReports(url, device, batches[0]);
  while (control.commits.length === 0) await new Promise((r) => setTimeout(r, 5));
  const rest = batches.slice(1).map((b) => postReports(url, device, b));
  while (server.queuedBatches < 2) await new Promise((r) => setTimeout(r, 5));
  control.gate = null;
  release();
  for (const a of await Promise.all([first, ...rest])) {
    isError(t, a, 503, 'E_IO', 'failed commit');
    t.equal(a.headers['retry-after'], '1');
  }
  t.same(control.commits, [1, 2], 'the two batches that waited failed in one commit');
  t.equal(await base.reportCount(), 0, 'nothing stored');
  const retried = await Promise.all(batches.map((b) => postReports(url, device, b)));
  t.same(retried.map((a) => a.json), [3, 4, 5].map((n) => ({ accepted: n, duplicates: 0 })), 'a retry is stored in full');
  t.equal(await base.reportCount(), 12);
});

t.test('a batch the store refuses fails alone; the batches committed with it are stored', async (t) => {
  const base = await openStore('sqlite::memory:');
  const { store, control } = instrumented(base);
  const { url, device, server } = await world(t, {}, store);
  control.poison = '9.9.9-poison';
  let release!: () => void;
  control.gate = new Promise<void>((r) => (release = r));
  const first = postReports(url, device, makeBatch(2));
  while (control.commits.length === 0) await new Promise((r) => setTimeout(r, 5));
  const good = [makeBatch(3), makeBatch(4)];
  const poisoned = { format: 1, reports: [makeReport(), makeReport({ agentVersion: '9.9.9-poison' })] };
  const answers = [postReports(url, device, good[0]), postReports(url, device, poisoned), postReports(url, device, good[1])];
  while (server.queuedBatches < 3) await new Promise((r) => setTimeout(r, 5));
  control.gate = null;
  release();
  t.same((await first).json, { accepted: 2, duplicates: 0 });
  const [a, p, b] = await Promise.all(answers);
  t.same(a.json, { accepted: 3, duplicates: 0 });
  t.same(b.json, { accepted: 4, duplicates: 0 });
  isError(t, p, 400, 'E_INVALID_ARGUMENT', 'the refused batch');
  t.same(control.commits, [1, 3, 1, 1, 1], 'the group of three failed, then each batch went alone');
  t.equal(await base.reportCount(), 9, 'nothing of the refused batch is stored');
});

t.test('batches beyond the queue bound are answered 503 E_BUSY and not stored while the store lags', async (t) => {
  const base = await openStore('sqlite::memory:');
  const { store, control } = instrumented(base);
  const { url, device, server } = await world(t, { maxQueuedReports: 10 }, store);
  let release!: () => void;
  control.gate = new Promise<void>((r) => (release = r));
  const first = postReports(url, device, makeBatch(4));
  while (control.commits.length === 0) await new Promise((r) => setTimeout(r, 5));
  const waiting = postReports(url, device, makeBatch(8));
  while (server.queuedBatches < 1) await new Promise((r) => setTimeout(r, 5));
  const refused = makeBatch(3);
  const shed = await postReports(url, device, refused);
  isError(t, shed, 503, 'E_BUSY', 'over the queue bound');
  t.equal(shed.headers['retry-after'], '5');
  control.gate = null;
  release();
  t.same((await first).json, { accepted: 4, duplicates: 0 });
  t.same((await waiting).json, { accepted: 8, duplicates: 0 });
  t.equal(await base.reportCount(), 12, 'nothing of the refused batch is stored');
  t.same((await postReports(url, device, refused)).json, { accepted: 3, duplicates: 0 }, 'taken once the queue drained');
  await t.rejects(FleetServer.start({ store, maxQueuedReports: 0 }), { code: 'E_INVALID_ARGUMENT' });
});

t.test('close finishes the commit in flight, answers it, then stops', async (t) => {
  const base = await openStore('sqlite::memory:');
  t.teardown(() => base.close());
  const { store, control } = instrumented(base);
  const server = await FleetServer.start({ store, clock: () => NOW });
  const device = await mintToken(store, 'device', { now: NOW });
  let release!: () => void;
  control.gate = new Promise<void>((r) => (release = r));
  const answer = postReports(server.url, device, makeBatch(6));
  while (control.commits.length === 0) await new Promise((r) => setTimeout(r, 5));
  let closed = false;
  const closing = server.close().then(() => (closed = true));
  await new Promise((r) => setTimeout(r, 50));
  t.equal(closed, false, 'close waits for the commit');
  control.gate = null;
  release();
  t.same((await answer).json, { accepted: 6, duplicates: 0 });
  await closing;
  t.equal(await base.reportCount(), 6);
  await t.rejects(postReports(server.url, device, makeBatch(1)), { code: 'ECONNREFUSED' }, 'no longer accepting');
});

// ----------------------------------------------------------- operator API

/** The rollout controller is an operator (checked by the compiler). */
export const controllerIsAnOperator = (controller: RolloutController): FleetOperator => controller;

/** An operator that records its calls and answers like the controller: status rows, E_UNKNOWN_PATCH, E_STATE. */
function recordingOperator() {
  const calls: string[] = [];
  const rows = [
    { plan: { patch: 'fix-1', version: 1 }, state: 'halted', rollout: 5 },
    { plan: { patch: 'fix-1', version: 2 }, state: 'rolling', rollout: 1 },
    { plan: { patch: 'fix-2', version: 1 }, state: 'complete', rollout: 100 },
  ];
  const act = (action: string) => async (id: string, version?: number) => {
    calls.push(`${action} ${id}${version === undefined ? '' : ` v${version}`}`);
    if (!rows.some((r) => r.plan.patch === id && (version === undefined || r.plan.version === version))) {
      throw new RevpatchError('E_UNKNOWN_PATCH', `no plan for ${id}`);
    }
    if (action === 'resume' && id === 'fix-2') throw new RevpatchError('E_STATE', 'fix-2 is complete');
    return { patch: id, action };
  };
  const operator: FleetOperator = {
    status: async (patch?: string) => {
      calls.push(`status${patch === undefined ? '' : ` ${patch}`}`);
      return rows.filter((r) => patch === undefined || r.plan.patch === patch);
    },
    halt: act('halt'),
    resume: act('resume'),
    recall: act('recall'),
    advance: act('advance'),
  };
  return { operator, calls };
}

t.test('the operator API shows status and acts, with an operator token only', async (t) => {
  const { operator, calls } = recordingOperator();
  const { url, device, operator: token, store } = await world(t, { operator });
  const auth = { Authorization: `Bearer ${token}` };

  const list = await call(url, '/v1/patches', { headers: auth });
  t.equal(list.status, 200);
  t.same(list.json, { patches: await operator.status() });
  const one = await call(url, '/v1/patches/fix-1', { headers: auth });
  t.same(one.json, { patches: (await operator.status()).slice(0, 2) }, 'the plans of that patch');

  for (const action of ['halt', 'resume', 'recall', 'advance']) {
    const a = await call(url, `/v1/patches/fix-1/${action}`, { method: 'POST', headers: auth });
    t.equal(a.status, 200, action);
    t.same(a.json, { patch: 'fix-1', action });
  }
  t.equal((await call(url, '/v1/patches/fix-1/halt', { method: 'POST', headers: auth, body: {} })).status, 200, 'an empty JSON object is fine');
  t.equal((await call(url, '/v1/patches/fix-1/recall', { method: 'POST', headers: auth, body: { version: 1 } })).status, 200, 'a version');
  t.same(calls, ['status', 'status', 'status fix-1', 'status', 'halt fix-1', 'resume fix-1', 'recall fix-1', 'advance fix-1', 'halt fix-1', 'recall fix-1 v1']);

  const revoked = 'rpo_' + 'E'.repeat(43);
  await store.addToken({ hash: hashToken(revoked), kind: 'operator', devices: 0, createdAt: NOW, revoked: true });
  const cases: [string, () => Promise<Answer>, number, string][] = [
    ['no token', () => call(url, '/v1/patches'), 401, 'E_AUTH'],
    ['a revoked token', () => call(url, '/v1/patches', { headers: { Authorization: `Bearer ${revoked}` } }), 401, 'E_AUTH'],
    ['an unknown token', () => call(url, '/v1/patches/fix-1/halt', { method: 'POST', headers: { Authorization: `Bearer rpo_${'F'.repeat(43)}` } }), 401, 'E_AUTH'],
    ['a device token reading', () => call(url, '/v1/patches', { headers: { Authorization: `Bearer ${device}` } }), 403, 'E_FORBIDDEN'],
    ['a device token halting', () => call(url, '/v1/patches/fix-1/halt', { method: 'POST', headers: { Authorization: `Bearer ${device}` } }), 403, 'E_FORBIDDEN'],
    ['a device token resuming', () => call(url, '/v1/patches/fix-1/resume', { method: 'POST', headers: { Authorization: `Bearer ${device}` } }), 403, 'E_FORBIDDEN'],
    ['a cookie instead of a token', () => call(url, '/v1/patches/fix-1/halt', { method: 'POST', headers: { Cookie: `token=${token}` } }), 401, 'E_AUTH'],
    ['a foreign Origin', () => call(url, '/v1/patches/fix-1/halt', { method: 'POST', headers: { ...auth, Origin: 'http://evil.example' } }), 403, 'E_FORBIDDEN'],
    ['a foreign Host', () => call(url, '/v1/patches/fix-1/halt', { method: 'POST', headers: { ...auth, Host: 'evil.example' } }), 403, 'E_FORBIDDEN'],
    ['a form body', () => call(url, '/v1/patches/fix-1/halt', { method: 'POST', headers: { ...auth, 'Content-Type': 'application/x-www-form-urlencoded' }, body: 'a=1' }), 415, 'E_UNSUPPORTED'],
    ['a text body', () => call(url, '/v1/patches/fix-1/halt', { method: 'POST', headers: { ...auth, 'Content-Type': 'text/plain' }, body: '{}' }), 415, 'E_UNSUPPORTED'],
    ['malformed JSON', () => call(url, '/v1/patches/fix-1/halt', { method: 'POST', headers: { ...auth, 'Content-Type': 'application/json' }, body: '{' }), 400, 'E_INVALID_ARGUMENT'],
    ['an unknown argument', () => call(url, '/v1/patches/fix-1/halt', { method: 'POST', headers: auth, body: { force: true } }), 400, 'E_INVALID_ARGUMENT'],
    ['a JSON array', () => call(url, '/v1/patches/fix-1/halt', { method: 'POST', headers: auth, body: [] }), 400, 'E_INVALID_ARGUMENT'],
    ['version 0', () => call(url, '/v1/patches/fix-1/halt', { method: 'POST', headers: auth, body: { version: 0 } }), 400, 'E_INVALID_ARGUMENT'],
    ['version 1.5', () => call(url, '/v1/patches/fix-1/halt', { method: 'POST', headers: auth, body: { version: 1.5 } }), 400, 'E_INVALID_ARGUMENT'],
    ['version "2"', () => call(url, '/v1/patches/fix-1/halt', { method: 'POST', headers: auth, body: { version: '2' } }), 400, 'E_INVALID_ARGUMENT'],
    ['an unknown version', () => call(url, '/v1/patches/fix-1/halt', { method: 'POST', headers: auth, body: { version: 9 } }), 404, 'E_UNKNOWN_PATCH'],
    ['a body over the limit', () => call(url, '/v1/patches/fix-1/halt', { method: 'POST', headers: { ...auth, 'Content-Type': 'application/json' }, body: ' '.repeat(17 * 1024) }), 413, 'E_TOO_LARGE'],
    ['an unknown patch', () => call(url, '/v1/patches/nope/halt', { method: 'POST', headers: auth }), 404, 'E_UNKNOWN_PATCH'],
    ['an unknown patch read', () => call(url, '/v1/patches/nope', { headers: auth }), 404, 'E_UNKNOWN_PATCH'],
    ['a bad patch id read', () => call(url, '/v1/patches/a%20b', { headers: auth }), 400, 'E_INVALID_ARGUMENT'],
    ['a bad patch id', () => call(url, '/v1/patches/-x/halt', { method: 'POST', headers: auth }), 400, 'E_INVALID_ARGUMENT'],
    ['a refused transition', () => call(url, '/v1/patches/fix-2/resume', { method: 'POST', headers: auth }), 409, 'E_STATE'],
    ['an unknown action', () => call(url, '/v1/patches/fix-1/delete', { method: 'POST', headers: auth }), 404, 'E_NOT_FOUND'],
    ['GET of an action', () => call(url, '/v1/patches/fix-1/halt', { headers: auth }), 405, 'E_UNSUPPORTED'],
    ['DELETE of a patch', () => call(url, '/v1/patches/fix-1', { method: 'DELETE', headers: auth }), 405, 'E_UNSUPPORTED'],
    ['POST of the list', () => call(url, '/v1/patches', { method: 'POST', headers: auth, body: {} }), 405, 'E_UNSUPPORTED'],
    ['OPTIONS (no CORS)', () => call(url, '/v1/patches/fix-1/halt', { method: 'OPTIONS', headers: { Origin: url, 'Access-Control-Request-Method': 'POST' } }), 405, 'E_UNSUPPORTED'],
    ['an unknown route', () => call(url, '/v1/devices', { headers: auth }), 404, 'E_NOT_FOUND'],
    ['the root', () => call(url, '/', { headers: auth }), 404, 'E_NOT_FOUND'],
  ];
  const before = calls.length;
  for (const [what, send, status, code] of cases) {
    const a = await send();
    isError(t, a, status, code, what);
    t.notOk(a.headers['access-control-allow-origin'], `${what}: no CORS`);
  }
  t.same(calls.slice(before), ['halt fix-1 v9', 'halt nope', 'status nope', 'resume fix-2'], 'only authenticated well-formed requests reached the operator');
  const method = await call(url, '/v1/patches/fix-1/halt', { headers: auth });
  t.equal(method.headers.allow, 'POST');
});

t.test('without a controller the operator API reads plans from the store and refuses actions', async (t) => {
  const { url, operator, device, store } = await world(t);
  const auth = { Authorization: `Bearer ${operator}` };
  t.same((await call(url, '/v1/patches', { headers: auth })).json, { patches: [] });
  isError(t, await call(url, '/v1/patches/fix-1', { headers: auth }), 404, 'E_UNKNOWN_PATCH', 'no plan');

  const plan: PlanRecord = {
    patch: 'fix-1', version: 1, stages: [1, 5, 25, 100], soakSeconds: 600, minReports: 50, maxFailurePct: 2, autoRecall: true,
    state: 'rolling', stage: 0, rollout: 1, stageStartedAt: NOW, halted: false, revision: 0, createdAt: NOW, updatedAt: NOW,
  };
  await store.createPlan(plan);
  await store.createPlan({ ...plan, patch: 'fix-0' });
  await postReports(url, device, makeBatch(2));
  const list = await call(url, '/v1/patches', { headers: auth });
  t.equal(list.status, 200);
  t.same(list.json.patches.map((p: { plan: PlanRecord }) => p.plan.patch), ['fix-0', 'fix-1']);
  const one = await call(url, '/v1/patches/fix-1', { headers: auth });
  t.equal(one.json.patches.length, 1);
  t.match(one.json.patches[0], { plan: { patch: 'fix-1', version: 1, state: 'rolling', rollout: 1 }, counts: { confirmed: 2 }, decisions: [] });
  isError(t, await call(url, '/v1/patches/fix-1/halt', { method: 'POST', headers: auth }), 503, 'E_STATE', 'no controller');
  t.match(await store.getPlan('fix-1', 1), { state: 'rolling', revision: 0 }, 'the plan is unchanged');
});

t.test('health answers without a token, and only GET', async (t) => {
  const { url } = await world(t);
  const a = await call(url, '/v1/health');
  t.equal(a.status, 200);
  t.same(a.json, { ok: true });
  t.equal(a.headers['cache-control'], 'no-store');
  isError(t, await call(url, '/v1/health', { method: 'POST', body: {} }), 405, 'E_UNSUPPORTED', 'POST health');
});

t.test('the server listens on loopback by default and refuses a bad start', async (t) => {
  const store = await openStore('sqlite::memory:');
  t.teardown(() => store.close());
  const server = await FleetServer.start({ store });
  t.teardown(() => server.close());
  t.match(server.url, /^http:\/\/127\.0\.0\.1:\d+$/);
  await t.rejects(FleetServer.start({ store: undefined as never }), { code: 'E_INVALID_ARGUMENT' });
  await t.rejects(FleetServer.start({ store, maxBatchBytes: 0 }), { code: 'E_INVALID_ARGUMENT' });
  await t.rejects(FleetServer.start({ store, port: server.port }), { code: 'EADDRINUSE' });
});

t.test('the operator API drives the rollout controller: a halt over HTTP is recorded and signed', { skip: addonBuilt() ? false : 'the addon is not built' }, async (t) => {
  const f = await repoFixture(t);
  await f.repo.publish(f.patch1);
  const store = await openStore(`sqlite:${path.join(f.dir, 'fleet.db')}`);
  const controller = new RolloutController({ store, repoDir: f.repoDir, lockWaitMs: 0 });
  await controller.plan('fix-1', { stages: [10, 50, 100], soakSeconds: 60, minReports: 5, maxFailurePct: 20 });
  const { url, operator, device } = await world(t, { operator: controller }, store);
  const auth = { Authorization: `Bearer ${operator}` };

  isError(t, await call(url, '/v1/patches/fix-1/halt', { method: 'POST', headers: { Authorization: `Bearer ${device}` } }), 403, 'E_FORBIDDEN', 'a device token');
  t.match(await store.latestPlan('fix-1'), { state: 'rolling', halted: false }, 'a refused halt changes nothing');

  const halted = await call(url, '/v1/patches/fix-1/halt', { method: 'POST', headers: auth });
  t.equal(halted.status, 200);
  t.match(halted.json, { published: true, plan: { state: 'halted', halted: true }, decision: { action: 'halt', by: 'operator' } });
  const signed = (await Repository.open(f.repoDir)).patches().find((p) => p.id === 'fix-1' && p.version === 1);
  t.equal(signed?.halted, true, 'the repository carries the halt');

  const status = await call(url, '/v1/patches/fix-1', { headers: auth });
  t.equal(status.status, 200);
  t.match(status.json.patches[0], { plan: { patch: 'fix-1', version: 1, state: 'halted' } });
  t.same(status.json.patches[0].decisions.map((d: { action: string }) => d.action), ['start', 'halt']);
  isError(t, await call(url, '/v1/patches/fix-1/advance', { method: 'POST', headers: auth }), 409, 'E_STATE', 'advancing a halted rollout');
  isError(t, await call(url, '/v1/patches/fix-9/halt', { method: 'POST', headers: auth }), 404, 'E_UNKNOWN_PATCH', 'a patch without a plan');
  t.match(await store.latestPlan('fix-1'), { state: 'halted' });
});
