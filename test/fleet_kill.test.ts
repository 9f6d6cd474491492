/**
 * Acknowledged means durable: the collector (test/fixtures/fleet_server_child.js,
 * dist/ on a SQLite file) is SIGKILLed under load, several times at
 * different moments, and restarted on the same file. Every batch it
 * acknowledged must be in the database, a batch retried after a kill must
 * be counted once, and the counts must match the distinct pseudonyms sent.
 */
import t from 'tap';
import * as crypto from 'node:crypto';
import { existsSync } from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import Database from 'better-sqlite3';
import { openStore } from '../lib/fleet/store';
import { ZERO_COUNTS, type DeviceReport, type OutcomeCounts } from '../lib/report/format';
import { ROOT, tempDir } from './helpers';

const CHILD = path.join(ROOT, 'test', 'fixtures', 'fleet_server_child.js');
const BUILT = existsSync(path.join(ROOT, 'dist', 'fleet', 'server.js')) && existsSync(path.join(ROOT, 'dist', 'fleet', 'store.js'));
const CONNECTIONS = 8;
const BATCH = 50;
const PSEUDONYMS = Array.from({ length: 3000 }, () => crypto.randomBytes(32).toString('hex'));
const SENT_OUTCOMES = ['staged', 'trial', 'confirmed'] as const;

interface Batch {
  reports: DeviceReport[];
  body: string;
}

function newBatch(): Batch {
  const reports = Array.from({ length: BATCH }, (): DeviceReport => ({
    id: crypto.randomBytes(16).toString('hex'),
    patch: 'fix-1',
    version: 1,
    outcome: SENT_OUTCOMES[crypto.randomInt(SENT_OUTCOMES.length)],
    code: null,
    bootAttempts: 0,
    agentVersion: '0.1.0',
    time: new Date().toISOString(),
    pseudonym: PSEUDONYMS[crypto.randomInt(PSEUDONYMS.length)],
  }));
  return { reports, body: JSON.stringify({ format: 1, reports }) };
}

interface Collector {
  child: ChildProcess;
  url: string;
  token: string;
  exited: Promise<void>;
}

async function startCollector(db: string, token?: string): Promise<Collector> {
  const child = spawn(process.execPath, [CHILD, db, ...(token ? [token] : [])], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const lines = createInterface({ input: child.stdout! });
  const first = await new Promise<string>((resolve, reject) => {
    lines.once('line', resolve);
    child.once('exit', (code) => reject(new Error(`the collector exited (${code}) before it served`)));
  });
  const info = JSON.parse(first) as { url: string; token: string };
  return { child, url: info.url, token: info.token, exited };
}

function post(agent: http.Agent, url: string, token: string, body: string): Promise<{ status: number; json: any }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      `${url}/v1/reports`,
      {
        method: 'POST',
        agent,
        headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          try {
            resolve({ status: res.statusCode ?? 0, json: JSON.parse(Buffer.concat(chunks).toString('utf8')) });
          } catch (err) {
            reject(err);
          }
        });
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

t.test('a collector killed under load loses no acknowledged report and counts none twice', { skip: BUILT ? false : 'dist/ is not built (npx tsc -p tsconfig.json)' }, async (t) => {
  const dir = await tempDir(t, 'revpatch-fleet-kill-');
  const db = path.join(dir, 'fleet.db');
  const sent: Batch[] = [];
  const unacked: Batch[] = [];
  const acked = new Set<Batch>();
  let acceptedSum = 0;
  let token: string | undefined;

  /** Sends batches from CONNECTIONS connections until `stop()` says so; a batch not acknowledged waits to be retried. */
  let badAcks = 0;
  async function load(c: Collector, fresh: boolean, until: (ackedNow: number) => boolean): Promise<number> {
    const agent = new http.Agent({ keepAlive: true, maxSockets: CONNECTIONS });
    let ackedHere = 0;
    let stopped = false;
    const worker = async (): Promise<void> => {
      while (!stopped) {
        let batch = unacked.shift();
        if (!batch) {
          if (!fresh) break;
          batch = newBatch();
          sent.push(batch);
        }
        try {
          const answer = await post(agent, c.url, c.token, batch.body);
          if (answer.status !== 200) throw new Error(`HTTP ${answer.status} ${JSON.stringify(answer.json)}`);
          if (answer.json.accepted + answer.json.duplicates !== BATCH) badAcks++;
          acked.add(batch);
          acceptedSum += answer.json.accepted;
          ackedHere++;
          if (until(ackedHere)) stopped = true;
        } catch {
          unacked.push(batch);
          stopped = true;
        }
      }
    };
    await Promise.all(Array.from({ length: CONNECTIONS }, worker));
    agent.destroy();
    return ackedHere;
  }

  function checkAcknowledgedAreStored(when: string): void {
    const conn = new Database(db);
    try {
      const stored = new Set((conn.prepare('SELECT id FROM reports').pluck().all() as string[]));
      const sentIds = new Set(sent.flatMap((b) => b.reports.map((r) => r.id)));
      let missing = 0;
      for (const b of acked) for (const r of b.reports) if (!stored.has(r.id)) missing++;
      t.equal(missing, 0, `${when}: every acknowledged report is stored`);
      t.ok([...stored].every((id) => sentIds.has(id)), `${when}: nothing stored that was not sent`);
      const partial = sent.filter((b) => {
        const n = b.reports.filter((r) => stored.has(r.id)).length;
        return n !== 0 && n !== b.reports.length;
      });
      t.equal(partial.length, 0, `${when}: no batch is stored half-way`);
    } finally {
      conn.close();
    }
  }

  // Kill at different moments: after a few, some, and many acknowledged batches, plus a random delay.
  for (const [round, afterBatches] of [5, 40, 150].entries()) {
    const c = await startCollector(db, token);
    token = c.token;
    let killed = false;
    const kill = (): void => {
      if (killed) return;
      killed = true;
      setTimeout(() => c.child.kill('SIGKILL'), crypto.randomInt(0, 20));
    };
    const acks = await load(c, true, (n) => {
      if (n >= afterBatches) kill();
      return false;
    });
    kill();
    await c.exited;
    t.equal(c.child.signalCode, 'SIGKILL', `round ${round + 1}: the collector was killed`);
    t.ok(acks >= afterBatches, `round ${round + 1}: killed after ${acks} acknowledged batches`);
    checkAcknowledgedAreStored(`after kill ${round + 1}`);
  }
  t.ok(unacked.length > 0, 'some batches were in flight at a kill');

  // Restart: every batch not acknowledged is retried, and the rest counts once.
  const c = await startCollector(db, token);
  const retries = unacked.length;
  await load(c, false, () => false);
  t.equal(unacked.length, 0, `the ${retries} unacknowledged batches were taken on retry`);
  c.child.kill('SIGTERM');
  await c.exited;
  t.equal(c.child.exitCode, 0, 'the collector closes cleanly on SIGTERM');
  checkAcknowledgedAreStored('at the end');

  const store = await openStore(`sqlite:${db}`);
  t.teardown(() => store.close());
  const distinctIds = new Set(sent.flatMap((b) => b.reports.map((r) => r.id)));
  t.equal(acked.size, sent.length, 'every batch sent was acknowledged in the end');
  t.equal(await store.reportCount(), distinctIds.size, 'each report is stored exactly once');
  t.ok(acceptedSum <= distinctIds.size, 'no report was accepted twice');
  t.equal(badAcks, 0, 'every acknowledgement covers its whole batch');
  const expected: OutcomeCounts = { ...ZERO_COUNTS };
  for (const outcome of SENT_OUTCOMES) {
    expected[outcome] = new Set(sent.flatMap((b) => b.reports.filter((r) => r.outcome === outcome).map((r) => r.pseudonym))).size;
  }
  t.same(await store.counts('fix-1', 1), expected, 'the counts are the distinct pseudonyms per outcome');
  t.comment(`${sent.length} batches of ${BATCH}, ${retries} retried after 3 kills`);
});
