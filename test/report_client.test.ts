import t from 'tap';
import * as crypto from 'node:crypto';
import { promises as fs, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { agentVersion, newReport, postBatch, pseudonymOf } from '../lib/report/client';
import { CONFIG_FILE, REPORT_DIR, SECRET_FILE, configureReporting, readReportConfig } from '../lib/report/config';
import { REPORT_FORMAT, type DeviceReport } from '../lib/report/format';
import { QUEUE_FILE, ReportQueue } from '../lib/report/queue';
import { Reporter } from '../lib/report/reporter';
import { spawn } from 'node:child_process';
import { ROOT, exited, tempDir } from './helpers';
import { startCollector } from './report_collector_stub';

const SECRET_A = Buffer.alloc(32, 0xa1);
const SECRET_B = Buffer.alloc(32, 0xb2);
const TOKEN = `rpd_${crypto.randomBytes(32).toString('base64url')}`;

function report(patch = 'fix-1', outcome: DeviceReport['outcome'] = 'staged'): DeviceReport {
  return newReport({ patch, version: 1, outcome, pseudonym: pseudonymOf(SECRET_A, patch) });
}

/** A reporter over a fresh queue in a temp dir, sending to `url`, with short backoff and a fixed jitter. */
async function makeReporter(t: Parameters<typeof tempDir>[0], url: string, extra: ConstructorParameters<typeof Reporter>[3] = {}) {
  const dir = await tempDir(t, 'revpatch-report-');
  const queue = await ReportQueue.open(dir, { maxBytes: extra.maxQueueBytes });
  const reporter = new Reporter({ format: 1, url, token: TOKEN }, SECRET_A, queue, {
    backoff: { baseMs: 5, maxMs: 20 },
    timeoutMs: 2000,
    random: () => 0.5,
    ...extra,
  });
  t.teardown(() => reporter.close());
  return { dir, queue, reporter };
}

t.test('pseudonyms', async (t) => {
  t.test('are stable per (device, patch), differ across patches and devices, and are 64 hex', async (t) => {
    const a1 = pseudonymOf(SECRET_A, 'fix-1');
    t.match(a1, /^[0-9a-f]{64}$/);
    t.equal(pseudonymOf(Buffer.from(SECRET_A), 'fix-1'), a1, 'the same device and patch give the same pseudonym');
    t.not(pseudonymOf(SECRET_A, 'fix-2'), a1, 'another patch: another pseudonym');
    t.not(pseudonymOf(SECRET_B, 'fix-1'), a1, 'another device: another pseudonym');
  });

  t.test('are not a bare HMAC of the patch id (domain-separated)', async (t) => {
    const bare = crypto.createHmac('sha256', SECRET_A).update('fix-1').digest('hex');
    t.not(pseudonymOf(SECRET_A, 'fix-1'), bare);
  });

  t.test('refuse a short secret', async (t) => {
    t.throws(() => pseudonymOf(Buffer.alloc(8), 'fix-1'), { code: 'E_INVALID_ARGUMENT' });
  });
});

t.test('a new report has a fresh random id, the agent version and defaults', async (t) => {
  const a = report();
  const b = report();
  t.match(a.id, /^[0-9a-f]{32}$/);
  t.not(a.id, b.id);
  const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
  t.equal(a.agentVersion, pkg.version);
  t.equal(agentVersion(), pkg.version);
  t.equal(a.code, null);
  t.equal(a.bootAttempts, 0);
  t.ok(!Number.isNaN(Date.parse(a.time)));
  t.throws(() => newReport({ patch: 'x', version: 1, outcome: 'installed' as never, pseudonym: a.pseudonym }), { code: 'E_INVALID_ARGUMENT' });
});

t.test('postBatch', async (t) => {
  t.test('sends one batch with the bearer token and returns the acknowledgement', async (t) => {
    const collector = await startCollector(t);
    const reports = [report('fix-1'), report('fix-2')];
    const ack = await postBatch(`${collector.url}/`, TOKEN, reports);
    t.same(ack, { accepted: 2, duplicates: 0 });
    const [req] = collector.requests;
    t.equal(req.method, 'POST');
    t.equal(req.path, '/v1/reports');
    t.equal(req.headers.authorization, `Bearer ${TOKEN}`);
    t.equal(req.headers['content-type'], 'application/json');
    t.same(req.batch, { format: REPORT_FORMAT, reports });
    t.same(await postBatch(collector.url, TOKEN, reports), { accepted: 0, duplicates: 2 }, 'the same ids again are duplicates');
  });

  t.test('maps answers to stable codes', async (t) => {
    const collector = await startCollector(t);
    const cases: Array<[number, unknown, string]> = [
      [500, undefined, 'E_NETWORK'],
      [503, { error: { code: 'E_IO', message: 'disk' } }, 'E_NETWORK'],
      [429, undefined, 'E_NETWORK'],
      [401, { error: { code: 'E_AUTH', message: 'unknown token' } }, 'E_AUTH'],
      [403, undefined, 'E_FORBIDDEN'],
      [400, { error: { code: 'E_FORMAT', message: 'not a batch' } }, 'E_FORMAT'],
      [400, { error: { code: 'E_NETWORK', message: 'a lie' } }, 'E_INVALID_ARGUMENT'],
      [400, 'not json', 'E_INVALID_ARGUMENT'],
      [413, undefined, 'E_TOO_LARGE'],
      [200, { accepted: -1, duplicates: 0 }, 'E_NETWORK'],
      [200, 'ok', 'E_NETWORK'],
    ];
    for (const [status, body, code] of cases) {
      collector.answer = () => ({ status, body });
      await t.rejects(postBatch(collector.url, TOKEN, [report()]), { code }, `${status} ${JSON.stringify(body)} → ${code}`);
    }
  });

  t.test('a collector that is down or never answers is E_NETWORK', async (t) => {
    const collector = await startCollector(t);
    collector.answer = () => 'hang';
    await t.rejects(postBatch(collector.url, TOKEN, [report()], { timeoutMs: 100 }), { code: 'E_NETWORK' });
    const url = collector.url;
    await collector.close();
    await t.rejects(postBatch(url, TOKEN, [report()]), { code: 'E_NETWORK' });
  });

  t.test('an abort is E_ABORTED; a URL that is not http(s) is refused before any request', async (t) => {
    const collector = await startCollector(t);
    collector.answer = () => 'hang';
    const controller = new AbortController();
    const pending = postBatch(collector.url, TOKEN, [report()], { signal: controller.signal });
    await collector.received(1);
    controller.abort();
    await t.rejects(pending, { code: 'E_ABORTED' });
    await t.rejects(postBatch('file:///etc', TOKEN, [report()]), { code: 'E_INVALID_ARGUMENT' });
    await t.rejects(postBatch('not a url', TOKEN, [report()]), { code: 'E_INVALID_ARGUMENT' });
  });
});

t.test('the report queue', async (t) => {
  t.test('survives a reopen with its reports in order', async (t) => {
    const dir = await tempDir(t);
    const q = await ReportQueue.open(dir);
    const sent = [report('a'), report('b'), report('c')];
    for (const r of sent) q.append(r);
    await q.close();
    const again = await ReportQueue.open(dir);
    t.teardown(() => again.close());
    t.same(again.peek(10).map((e) => e.report), sent);
    t.equal(again.dropped, 0);
  });

  t.test('keeps the newest reports when full and counts the dropped ones, across a reopen', async (t) => {
    const dir = await tempDir(t);
    const maxBytes = 4096;
    const q = await ReportQueue.open(dir, { maxBytes });
    const all: DeviceReport[] = [];
    for (let i = 0; i < 100; i++) {
      const r = report(`p-${i}`);
      all.push(r);
      q.append(r);
    }
    t.ok(q.bytes <= maxBytes, `the reports kept weigh ${q.bytes} ≤ ${maxBytes}`);
    const kept = q.peek(1000).map((e) => e.report);
    t.ok(kept.length > 0 && kept.length < 100);
    t.same(kept, all.slice(100 - kept.length), 'the newest are kept, in order');
    t.equal(q.dropped, 100 - kept.length, 'every dropped report is counted');
    t.ok(q.fileBytes <= 2 * maxBytes + 100, `the file stays bounded during a burst (${q.fileBytes} bytes)`);
    await q.close();
    const onDisk = (await fs.stat(path.join(dir, QUEUE_FILE))).size;
    t.ok(onDisk <= 2 * maxBytes + 100, `and after it (${onDisk} bytes)`);
    const again = await ReportQueue.open(dir, { maxBytes });
    t.teardown(() => again.close());
    t.equal(again.dropped, 100 - kept.length, 'the count survives a restart, counted once');
    t.same(again.peek(1000).map((e) => e.report), kept);
  });

  t.test('ignores a torn last record and appends after it cleanly', async (t) => {
    const dir = await tempDir(t);
    const q = await ReportQueue.open(dir);
    const first = [report('a'), report('b')];
    for (const r of first) q.append(r);
    await q.close();
    const torn = JSON.stringify(report('c'));
    await fs.appendFile(path.join(dir, QUEUE_FILE), torn.slice(0, torn.length / 2));
    const again = await ReportQueue.open(dir);
    t.same(again.peek(10).map((e) => e.report), first, 'the torn record is ignored');
    t.equal(again.dropped, 0, 'a torn tail is not a dropped report: it was never queued');
    const next = report('d');
    again.append(next);
    await again.close();
    const third = await ReportQueue.open(dir);
    t.teardown(() => third.close());
    t.same(third.peek(10).map((e) => e.report), [...first, next], 'the next record is whole');
  });

  t.test('skips and counts a whole line that is not a report, and rewrites the file without it', async (t) => {
    const dir = await tempDir(t);
    const q = await ReportQueue.open(dir);
    q.append(report('a'));
    await q.close();
    await fs.appendFile(path.join(dir, QUEUE_FILE), '{"id":"nope"}\n');
    const again = await ReportQueue.open(dir);
    t.equal(again.length, 1);
    t.equal(again.dropped, 1);
    await again.close();
    const third = await ReportQueue.open(dir);
    t.teardown(() => third.close());
    t.equal(third.dropped, 1, 'counted once');
    t.notMatch(await fs.readFile(path.join(dir, QUEUE_FILE), 'utf8'), /nope/);
  });

  t.test('acknowledged reports are compacted away durably; the rest survive a reopen', async (t) => {
    const dir = await tempDir(t);
    const q = await ReportQueue.open(dir);
    const all = Array.from({ length: 10 }, (_, i) => report(`p-${i}`));
    for (const r of all) q.append(r);
    const before = q.fileBytes;
    await q.remove(q.peek(6).map((e) => e.seq));
    t.ok(q.fileBytes < before, 'the file shrank');
    t.same((await fs.readdir(dir)).filter((n) => n.startsWith('.')), [], 'no temporary file is left');
    q.append(report('after'));
    await q.close();
    const again = await ReportQueue.open(dir);
    t.teardown(() => again.close());
    t.same(
      again.peek(10).map((e) => e.report.patch),
      ['p-6', 'p-7', 'p-8', 'p-9', 'after'],
      'an append after a compaction lands in the new file',
    );
  });

  t.test('killed with SIGKILL while appending and compacting, it reopens whole and bounded', async (t) => {
    const dir = await tempDir(t);
    const maxBytes = 8192;
    // A child appends reports and acknowledges every other batch, so compactions run all the time.
    const script = `
      const { ReportQueue } = require(${JSON.stringify(path.join(ROOT, 'dist', 'report', 'queue.js'))});
      const { newReport, pseudonymOf } = require(${JSON.stringify(path.join(ROOT, 'dist', 'report', 'client.js'))});
      (async () => {
        const q = await ReportQueue.open(${JSON.stringify(dir)}, { maxBytes: ${maxBytes} });
        const secret = Buffer.alloc(32, 7);
        for (let i = 0; ; i++) {
          q.append(newReport({ patch: 'p-' + i, version: 1, outcome: 'staged', pseudonym: pseudonymOf(secret, 'p-' + i) }));
          if (i === 50) process.stdout.write('running\\n');
          if (i % 20 === 0) await q.remove(q.peek(5).map((e) => e.seq));
          if (i % 7 === 0) await new Promise((r) => setImmediate(r));
        }
      })();`;
    for (let round = 0; round < 3; round++) {
      const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
      await new Promise<void>((resolve, reject) => {
        child.stdout!.once('data', () => resolve());
        child.once('exit', (code) => reject(new Error(`the appending child exited early (${code})`)));
      });
      await new Promise((r) => setTimeout(r, 50 + 100 * round));
      child.kill('SIGKILL');
      await exited(child);
      const q = await ReportQueue.open(dir, { maxBytes });
      const reports = q.peek(10_000).map((e) => e.report);
      t.ok(reports.length > 0, `round ${round}: ${reports.length} reports survive`);
      t.ok(q.bytes <= maxBytes, `round ${round}: within the bound`);
      const numbers = reports.map((r) => Number(r.patch.slice(2)));
      t.same(numbers, [...numbers].sort((a, b) => a - b), `round ${round}: in order`);
      t.same((await fs.readdir(dir)).filter((n) => n.startsWith('.')), [], `round ${round}: no temporary file is left`);
      await q.close();
    }
  });

  t.test('has one owner at a time', async (t) => {
    const dir = await tempDir(t);
    const q = await ReportQueue.open(dir);
    await t.rejects(ReportQueue.open(dir), { code: 'E_BUSY' });
    await q.close();
    const again = await ReportQueue.open(dir);
    await again.close();
  });

  t.test('refuses a bound too small to hold a report', async (t) => {
    const dir = await tempDir(t);
    await t.rejects(ReportQueue.open(dir, { maxBytes: 100 }), { code: 'E_INVALID_ARGUMENT' });
  });
});

t.test('the reporter', async (t) => {
  t.test('retries with backoff until the collector accepts; the ids stay the same, so the collector counts them once', async (t) => {
    const collector = await startCollector(t);
    collector.answer = (n) => (n < 3 ? { status: 503 } : { status: 200 });
    const { reporter } = await makeReporter(t, collector.url);
    reporter.record({ patch: 'fix-1', version: 1, outcome: 'staged' });
    reporter.record({ patch: 'fix-1', version: 1, outcome: 'trial', bootAttempts: 0 });
    const result = await reporter.flush({ timeoutMs: 10_000 });
    t.same(result, { sent: 2, remaining: 0, error: null });
    t.equal(collector.requests.length, 4, 'three failures, then the accepted send');
    const idSets = collector.requests.map((r) => r.batch!.reports.map((x) => x.id).join());
    t.equal(new Set(idSets).size, 1, 'every retry sent the same ids');
    t.equal(collector.stored.size, 2, 'stored once');
    t.equal(reporter.stats().queued, 0);
  });

  t.test('the backoff is full jitter under an exponential ceiling', async (t) => {
    const collector = await startCollector(t);
    let r = 0;
    const { reporter } = await makeReporter(t, collector.url, { backoff: { baseMs: 100, maxMs: 1000 }, random: () => r });
    r = 0;
    t.equal(reporter.backoffMs(1), 0);
    r = 0.999999;
    t.same([1, 2, 3, 4, 5, 10].map((n) => reporter.backoffMs(n)), [99, 199, 399, 799, 999, 999]);
    r = 0.5;
    t.same([1, 2, 3].map((n) => reporter.backoffMs(n)), [50, 100, 200]);
  });

  t.test('a batch the collector refuses for good (400) is dropped and counted, and the queue moves on', async (t) => {
    const collector = await startCollector(t);
    collector.answer = (n) => (n === 0 ? { status: 400, body: { error: { code: 'E_FORMAT', message: 'bad' } } } : { status: 200 });
    const { reporter, dir } = await makeReporter(t, collector.url, { batchSize: 2 });
    for (let i = 0; i < 3; i++) reporter.record({ patch: `p-${i}`, version: 1, outcome: 'staged' });
    const result = await reporter.flush({ timeoutMs: 10_000 });
    t.same(result, { sent: 1, remaining: 0, error: null });
    t.equal(collector.requests.length, 2, 'the refused batch is not sent again');
    t.equal(reporter.stats().rejected, 2);
    await reporter.close();
    const queue = await ReportQueue.open(dir);
    t.teardown(() => queue.close());
    t.equal(queue.rejected, 2, 'the count is persisted');
    t.equal(queue.length, 0);
  });

  t.test('a refused token keeps the reports queued', async (t) => {
    const collector = await startCollector(t);
    collector.answer = () => ({ status: 401, body: { error: { code: 'E_AUTH', message: 'revoked' } } });
    const { reporter } = await makeReporter(t, collector.url);
    reporter.record({ patch: 'fix-1', version: 1, outcome: 'staged' });
    const result = await reporter.flush({ timeoutMs: 2000 });
    t.equal(result.remaining, 1);
    t.equal(result.error, 'E_AUTH');
    t.equal(reporter.stats().rejected, 0);
  });

  t.test('sends at most 100 reports per batch', async (t) => {
    const collector = await startCollector(t);
    const { reporter } = await makeReporter(t, collector.url);
    for (let i = 0; i < 250; i++) reporter.record({ patch: `p-${i % 7}`, version: 1, outcome: 'confirmed' });
    t.same(await reporter.flush({ timeoutMs: 10_000 }), { sent: 250, remaining: 0, error: null });
    t.same(collector.requests.map((r) => r.batch!.reports.length), [100, 100, 50]);
    t.equal(collector.stored.size, 250);
  });

  t.test('the background sender sends what is recorded, and stop() abandons a request that hangs with its reports still queued', async (t) => {
    const collector = await startCollector(t);
    const { reporter, dir } = await makeReporter(t, collector.url, { timeoutMs: 60_000 });
    reporter.start();
    reporter.record({ patch: 'fix-1', version: 1, outcome: 'staged' });
    await collector.received(1);
    while (reporter.stats().queued > 0) await new Promise((r) => setTimeout(r, 5));
    t.equal(collector.stored.size, 1);
    collector.answer = () => 'hang';
    reporter.record({ patch: 'fix-1', version: 1, outcome: 'trial' });
    await collector.received(2);
    await reporter.stop();
    t.equal(reporter.stats().queued, 1, 'the unanswered report waits');
    await reporter.close();
    const queue = await ReportQueue.open(dir);
    t.teardown(() => queue.close());
    t.same(queue.peek(10).map((e) => e.report.outcome), ['trial'], 'and it is still on disk');
  });

  t.test('flush returns by its deadline while a background send hangs', async (t) => {
    const collector = await startCollector(t);
    collector.answer = () => 'hang';
    const { reporter } = await makeReporter(t, collector.url, { timeoutMs: 600_000 });
    reporter.start();
    reporter.record({ patch: 'fix-1', version: 1, outcome: 'staged' });
    await collector.received(1);
    const result = await reporter.flush({ timeoutMs: 100 });
    t.same(result, { sent: 0, remaining: 1, error: 'E_ABORTED' });
    await reporter.stop();
  });

  t.test('record never throws: a report that cannot be queued is logged and lost', async (t) => {
    const collector = await startCollector(t);
    const warnings: string[] = [];
    const { reporter, queue } = await makeReporter(t, collector.url, {
      logger: { debug: () => undefined, info: () => undefined, warn: (_o, msg) => warnings.push(String(msg)) },
    });
    await queue.close();
    t.doesNotThrow(() => reporter.record({ patch: 'fix-1', version: 1, outcome: 'staged' }));
    t.same(warnings, ['report not queued']);
  });
});

t.test('setting reporting up', async (t) => {
  async function tokenFile(t: Parameters<typeof tempDir>[0], content: string) {
    const dir = await tempDir(t);
    const file = path.join(dir, 'token');
    await fs.writeFile(file, content);
    return file;
  }

  t.test('writes config and a 32-byte secret, mode 0600, and keeps the secret when set up again', async (t) => {
    const state = await tempDir(t);
    const file = await tokenFile(t, `${TOKEN}\n`);
    const config = await configureReporting(state, { url: 'http://127.0.0.1:8700/', tokenFile: file });
    t.same(config, { format: 1, url: 'http://127.0.0.1:8700', token: TOKEN });
    const dir = path.join(state, REPORT_DIR);
    const secret = await fs.readFile(path.join(dir, SECRET_FILE));
    t.equal(secret.length, 32);
    for (const name of [SECRET_FILE, CONFIG_FILE]) t.equal((await fs.stat(path.join(dir, name))).mode & 0o777, 0o600, `${name} is 0600`);
    t.same(await readReportConfig(state), config);
    await configureReporting(state, { url: 'https://fleet.example', tokenFile: file });
    t.ok((await fs.readFile(path.join(dir, SECRET_FILE))).equals(secret), 'the pseudonyms stay stable');
    t.equal((await readReportConfig(state))?.url, 'https://fleet.example');
    const reporter = await Reporter.open(state);
    t.ok(reporter);
    await reporter?.close();
  });

  t.test('bad input gets a stable code and writes nothing', async (t) => {
    const state = await tempDir(t);
    const good = await tokenFile(t, TOKEN);
    const cases: Array<[string, string, string]> = [
      ['ftp://fleet.example', good, 'E_INVALID_ARGUMENT'],
      ['not a url', good, 'E_INVALID_ARGUMENT'],
      ['http://user:pw@fleet.example', good, 'E_INVALID_ARGUMENT'],
      ['http://fleet.example', path.join(state, 'missing'), 'E_NOT_FOUND'],
      ['http://fleet.example', await tokenFile(t, ''), 'E_KEY'],
      ['http://fleet.example', await tokenFile(t, 'two words here and more'), 'E_KEY'],
      ['http://fleet.example', state, 'E_KEY'],
    ];
    for (const [url, tokenFile, code] of cases) {
      await t.rejects(configureReporting(state, { url, tokenFile }), { code }, `${url} ${path.basename(tokenFile)} → ${code}`);
    }
    t.same(await fs.readdir(state), [], 'nothing was written');
  });

  t.test('a state directory without reporting has no reporter', async (t) => {
    const state = await tempDir(t);
    t.equal(await Reporter.open(state), null);
  });

  t.test('a damaged config is E_CORRUPT', async (t) => {
    const state = await tempDir(t);
    await fs.mkdir(path.join(state, REPORT_DIR));
    await fs.writeFile(path.join(state, REPORT_DIR, CONFIG_FILE), '{"format":1}');
    await t.rejects(Reporter.open(state), { code: 'E_CORRUPT' });
  });
});
