/**
 * The fleet store's contract (lib/fleet/types.ts, FleetStore), one suite run
 * against every backend: SQLite in a file, SQLite in memory, and a real
 * PostgreSQL server started for this file (test/fixtures/postgres.ts).
 * Leadership is also tested across processes: the leader is SIGKILLed and
 * another process takes over.
 */
import t, { type Test as T } from 'tap';
import * as path from 'node:path';
import { existsSync } from 'node:fs';
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import Database from 'better-sqlite3';
import { Client } from 'pg';
import { openStore, fleetDbUrl, DEFAULT_FLEET_DB } from '../lib/fleet/store';
import type { DecisionRecord, FleetStore, PlanRecord, TokenRecord } from '../lib/fleet/types';
import { ZERO_COUNTS, type StoredReport } from '../lib/report/format';
import { ROOT, tempDir } from './helpers';
import { startPostgres, postgresBin, POSTGRES_MISSING, type TestPostgres } from './fixtures/postgres';

const LEAD_CHILD = path.join(__dirname, 'fixtures', 'lead_child.js');

// ------------------------------------------------------------------ builders

/** A device's pseudonym (64 hex digits, one per number). */
const device = (n: number): string => n.toString(16).padStart(64, '0');

let nextId = 0;
function report(over: Partial<StoredReport> = {}): StoredReport {
  nextId++;
  return {
    id: nextId.toString(16).padStart(32, '0'),
    patch: 'p',
    version: 1,
    outcome: 'confirmed',
    code: null,
    bootAttempts: 0,
    agentVersion: '0.1.0',
    time: '2026-01-01T00:00:00.000Z',
    pseudonym: device(1),
    receivedAt: 1000,
    ...over,
  };
}

function plan(over: Partial<PlanRecord> = {}): PlanRecord {
  return {
    patch: 'p',
    version: 1,
    stages: [1, 5, 25, 100],
    soakSeconds: 600,
    minReports: 20,
    maxFailurePct: 2.5,
    autoRecall: true,
    state: 'planned',
    stage: -1,
    rollout: 0,
    stageStartedAt: null,
    halted: false,
    revision: 0,
    createdAt: 1000,
    updatedAt: 1000,
    ...over,
  };
}

function decision(over: Partial<Omit<DecisionRecord, 'seq'>> = {}): Omit<DecisionRecord, 'seq'> {
  return {
    patch: 'p',
    version: 1,
    at: 2000,
    action: 'start',
    code: 'plan-started',
    reason: 'the plan starts at its first stage',
    by: 'controller',
    fromRollout: 0,
    toRollout: 1,
    stage: 0,
    inputs: {
      counts: { ...ZERO_COUNTS, confirmed: 3 },
      stageCounts: { ...ZERO_COUNTS },
      failureRate: 0.125,
      wilsonLower: 0.01,
      wilsonUpper: 0.4,
      soakedSeconds: 12.5,
      enrolledDevices: 40,
    },
    appliedAt: null,
    ...over,
  };
}

function token(over: Partial<TokenRecord> = {}): TokenRecord {
  return { hash: 'a'.repeat(64), kind: 'device', devices: 10, createdAt: 1000, revoked: false, ...over };
}

async function rejectsWith(t: T, p: Promise<unknown>, code: string, what: string): Promise<void> {
  await t.rejects(p, { code }, what);
}

// ------------------------------------------------------------------ backends

interface Backend {
  name: string;
  /** A URL of a fresh, empty database. */
  fresh(t: T): Promise<string>;
  /** Whether opening the same URL twice reaches the same database. */
  shared: boolean;
  /** Runs SQL on the database directly, bypassing the store. */
  raw?(url: string, sql: string): Promise<void>;
}

let pgServer: Promise<TestPostgres | null> | null = null;
let pgDatabases = 0;
function postgres(): Promise<TestPostgres | null> {
  pgServer ??= startPostgres(t);
  return pgServer;
}

async function pgQuery(url: string, sql: string, params: unknown[] = []): Promise<Record<string, unknown>[]> {
  const client = new Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query(sql, params)).rows;
  } finally {
    await client.end();
  }
}

const BACKENDS: Backend[] = [
  {
    name: 'SQLite file',
    shared: true,
    fresh: async (t) => `sqlite:${path.join(await tempDir(t, 'revpatch-fleet-'), 'fleet.db')}`,
    raw: async (url, sql) => {
      const db = new Database(url.slice('sqlite:'.length));
      try {
        db.exec(sql);
      } finally {
        db.close();
      }
    },
  },
  { name: 'SQLite :memory:', shared: false, fresh: async () => 'sqlite::memory:' },
  {
    name: 'PostgreSQL',
    shared: true,
    fresh: async () => {
      const pg = await postgres();
      if (!pg) throw new Error(POSTGRES_MISSING);
      const name = `fleet_${++pgDatabases}`;
      await pgQuery(pg.url, `CREATE DATABASE ${name}`);
      return pg.url.replace('/postgres?', `/${name}?`);
    },
    raw: async (url, sql) => void (await pgQuery(url, sql)),
  },
];

/** Opens a store on a fresh database, closed at teardown. */
async function fresh(t: T, b: Backend): Promise<{ store: FleetStore; url: string }> {
  const url = await b.fresh(t);
  const store = await openStore(url);
  t.teardown(() => store.close());
  return { store, url };
}

async function open(t: T, url: string): Promise<FleetStore> {
  const store = await openStore(url);
  t.teardown(() => store.close());
  return store;
}

// ---------------------------------------------------------------- the suite

for (const b of BACKENDS) {
  const missing = b.name === 'PostgreSQL' && !postgresBin() ? POSTGRES_MISSING : false;
  const notShared = b.shared ? false : 'a :memory: database belongs to one store: it cannot be shared or reopened';
  t.test(b.name, { skip: missing }, async (t) => {

    t.test('counts distinct devices per outcome of one patch version', async (t) => {
      const { store } = await fresh(t, b);
      const acks = await store.insertReports([
        [
          report({ outcome: 'staged', pseudonym: device(1) }),
          report({ outcome: 'trial', pseudonym: device(1) }),
          report({ outcome: 'confirmed', pseudonym: device(1) }),
          // Device 2 confirms twice (two reports): one device.
          report({ outcome: 'confirmed', pseudonym: device(2) }),
          report({ outcome: 'confirmed', pseudonym: device(2) }),
        ],
        [
          // Device 3 confirmed, then rolled back: failed, not confirmed.
          report({ outcome: 'confirmed', pseudonym: device(3) }),
          report({ outcome: 'rolled-back', code: 'health-check-failed', bootAttempts: 1, pseudonym: device(3) }),
          report({ outcome: 'refused', code: 'E_BASE_MISMATCH', pseudonym: device(4) }),
          report({ outcome: 'removed', code: 'user', pseudonym: device(5) }),
          report({ outcome: 'recalled', code: 'recall', pseudonym: device(6) }),
          // Other versions and patches do not count.
          report({ outcome: 'rolled-back', code: 'boot-loop', version: 2, pseudonym: device(1) }),
          report({ outcome: 'rolled-back', code: 'boot-loop', patch: 'q', pseudonym: device(1) }),
        ],
      ]);
      t.same(acks, [
        { accepted: 5, duplicates: 0 },
        { accepted: 7, duplicates: 0 },
      ]);
      t.same(await store.counts('p', 1), { staged: 1, refused: 1, trial: 1, confirmed: 2, failed: 1, removed: 1, recalled: 1 });
      t.same(await store.counts('p', 2), { ...ZERO_COUNTS, failed: 1 });
      t.same(await store.counts('nothing', 1), ZERO_COUNTS, 'a patch without reports counts zero');
      t.equal(await store.reportCount(), 12);
    });

    t.test('a report id is stored and counted once across batches and calls', async (t) => {
      const { store } = await fresh(t, b);
      const a = report({ pseudonym: device(1) });
      const c = report({ pseudonym: device(2), outcome: 'rolled-back', code: 'boot-loop' });
      t.same(await store.insertReports([[a, a], [a, c]]), [
        { accepted: 1, duplicates: 1 },
        { accepted: 1, duplicates: 1 },
      ]);
      // A retried batch, even one whose copy differs, changes nothing.
      t.same(await store.insertReports([[a, { ...c, outcome: 'confirmed' }]]), [{ accepted: 0, duplicates: 2 }]);
      t.same(await store.insertReports([]), [], 'an empty group is answered with nothing');
      t.same(await store.insertReports([[]]), [{ accepted: 0, duplicates: 0 }]);
      t.equal(await store.reportCount(), 2);
      t.same(await store.counts('p', 1), { ...ZERO_COUNTS, confirmed: 1, failed: 1 });
    });

    t.test('ids and pseudonyms are compared exactly, hex or not', async (t) => {
      const { store } = await fresh(t, b);
      const hex = 'ab'.repeat(16);
      t.same(
        await store.insertReports([
          [
            report({ id: hex, pseudonym: 'ab'.repeat(32) }),
            report({ id: hex.toUpperCase(), pseudonym: 'AB'.repeat(32) }),
            report({ id: 'r-1', pseudonym: 'device one' }),
            report({ id: 'r-1', pseudonym: 'device two' }),
            report({ id: 'R-1', pseudonym: 'abc' }),
          ],
        ]),
        [{ accepted: 4, duplicates: 1 }],
      );
      t.same(await store.counts('p', 1), { ...ZERO_COUNTS, confirmed: 4 }, 'ab… and AB… are two devices, as are device one and abc');
      t.same(await store.insertReports([[report({ id: hex }), report({ id: 'R-1' })]]), [{ accepted: 0, duplicates: 2 }]);
    });

    t.test('two collectors storing the same reports at once store each once', { skip: notShared }, async (t) => {
      const { store: a, url } = await fresh(t, b);
      const c = await open(t, url);
      const reports = Array.from({ length: 1200 }, (_, i) => report({ pseudonym: device(i % 300), outcome: i % 7 ? 'confirmed' : 'rolled-back' }));
      const batches = (rs: StoredReport[]): StoredReport[][] => Array.from({ length: rs.length / 100 }, (_, i) => rs.slice(i * 100, i * 100 + 100));
      // Opposite orders, many transactions in flight: the worst case for lock order.
      const acks = (
        await Promise.all([
          ...batches(reports).map((x) => a.insertReports([x])),
          ...batches([...reports].reverse()).map((x) => c.insertReports([x])),
        ])
      ).flat();
      t.equal(acks.reduce((n, x) => n + x.accepted, 0), 1200, 'each report accepted once');
      t.equal(acks.reduce((n, x) => n + x.duplicates, 0), 1200, 'and a duplicate the other time');
      t.equal(await a.reportCount(), 1200);
      const failed = new Set(reports.filter((r) => r.outcome === 'rolled-back').map((r) => r.pseudonym)).size;
      t.same(await c.counts('p', 1), { ...ZERO_COUNTS, failed, confirmed: 300 - failed });
    });

    t.test('since counts only devices whose verdict was first received at or after it', async (t) => {
      const { store } = await fresh(t, b);
      await store.insertReports([
        [
          report({ pseudonym: device(1), receivedAt: 1000 }),
          report({ pseudonym: device(2), receivedAt: 5000 }),
          report({ pseudonym: device(3), outcome: 'rolled-back', code: 'boot-loop', receivedAt: 999 }),
          report({ pseudonym: device(4), outcome: 'rolled-back', code: 'boot-loop', receivedAt: 5001 }),
        ],
      ]);
      // A later copy of device 1's verdict does not move its first receive time.
      await store.insertReports([[report({ pseudonym: device(1), receivedAt: 9000 })]]);
      t.same(await store.counts('p', 1, 1000), { ...ZERO_COUNTS, confirmed: 2, failed: 1 });
      t.same(await store.counts('p', 1, 5000), { ...ZERO_COUNTS, confirmed: 1, failed: 1 });
      t.same(await store.counts('p', 1, 5002), ZERO_COUNTS);
      t.same(await store.counts('p', 1), { ...ZERO_COUNTS, confirmed: 2, failed: 2 });
      // An earlier copy (reports out of order) does move it back.
      await store.insertReports([[report({ pseudonym: device(2), receivedAt: 10 })]]);
      t.same(await store.counts('p', 1, 1000), { ...ZERO_COUNTS, confirmed: 1, failed: 1 });
    });

    t.test('a group with one bad report stores nothing of any batch', async (t) => {
      const { store } = await fresh(t, b);
      const before = report({ pseudonym: device(9) });
      await store.insertReports([[before]]);
      const bad: [string, Partial<StoredReport>][] = [
        ['an unknown outcome', { outcome: 'exploded' as never }],
        ['a missing pseudonym', { pseudonym: null as never }],
        ['negative boot attempts', { bootAttempts: -1 }],
        ['a version that is not an integer', { version: 'one' as never }],
        ['a missing id', { id: undefined as never }],
      ];
      for (const [what, over] of bad) {
        const good = [report({ pseudonym: device(1) }), report({ pseudonym: device(2) })];
        await rejectsWith(t, store.insertReports([good, [report(), report(over)], [report()]]), 'E_INVALID_ARGUMENT', what);
        // The good batch of the failed group is stored when sent again: nothing of it was kept.
        t.same(await store.insertReports([good]), [{ accepted: 2, duplicates: 0 }], `${what}: nothing of the group was kept`);
        await store.insertReports([good]);
      }
      t.equal(await store.reportCount(), 1 + 2 * bad.length);
      t.same(await store.counts('p', 1), { ...ZERO_COUNTS, confirmed: 3 }, 'devices 1, 2 and 9');
    });

    t.test('tokens are found by hash and enrolled devices sum unrevoked device tokens', async (t) => {
      const { store } = await fresh(t, b);
      t.equal(await store.enrolledDevices(), 0);
      const device1 = token({ hash: '1'.repeat(64), devices: 10 });
      await store.addToken(device1);
      await store.addToken(token({ hash: '2'.repeat(64), devices: 5 }));
      await store.addToken(token({ hash: '3'.repeat(64), devices: 100, revoked: true }));
      await store.addToken(token({ hash: '4'.repeat(64), kind: 'operator', devices: 0 }));
      t.same(await store.findToken(device1.hash), device1);
      t.same(await store.findToken('4'.repeat(64)), token({ hash: '4'.repeat(64), kind: 'operator', devices: 0 }));
      t.same(await store.findToken('3'.repeat(64)), token({ hash: '3'.repeat(64), devices: 100, revoked: true }));
      t.equal(await store.findToken('5'.repeat(64)), null);
      t.equal(await store.enrolledDevices(), 15);
      await rejectsWith(t, store.addToken({ ...device1, devices: 99 }), 'E_EXISTS', 'a hash stored twice');
      await rejectsWith(t, store.addToken(token({ hash: '6'.repeat(64), kind: 'admin' as never })), 'E_INVALID_ARGUMENT', 'an unknown kind');
      await rejectsWith(t, store.addToken(token({ hash: '7'.repeat(64), devices: -1 })), 'E_INVALID_ARGUMENT', 'negative devices');
      t.equal(await store.enrolledDevices(), 15, 'refused tokens changed nothing');
      t.same(await store.findToken(device1.hash), device1);
    });

    t.test('a revoked token is revoked once and leaves the enrolled devices', async (t) => {
      const { store } = await fresh(t, b);
      const device = token({ hash: '1'.repeat(64), devices: 10 });
      const other = token({ hash: '2'.repeat(64), devices: 5 });
      const operator = token({ hash: '4'.repeat(64), kind: 'operator', devices: 0 });
      for (const k of [device, other, operator]) await store.addToken(k);
      t.equal(await store.enrolledDevices(), 15);
      t.equal(await store.revokeToken(device.hash), true, 'the first revocation revokes');
      t.same(await store.findToken(device.hash), { ...device, revoked: true }, 'the record stays, marked revoked');
      t.equal(await store.enrolledDevices(), 5, 'its devices no longer count');
      t.equal(await store.revokeToken(device.hash), false, 'a second revocation changes nothing');
      t.equal(await store.revokeToken('5'.repeat(64)), false, 'an unknown hash');
      t.equal(await store.findToken('5'.repeat(64)), null, 'an unknown hash is not created');
      t.same(await store.findToken(other.hash), other, 'other tokens are untouched');
      t.equal(await store.revokeToken(operator.hash), true, 'operator tokens are revoked the same way');
      t.equal((await store.findToken(operator.hash))?.revoked, true);
      t.equal(await store.enrolledDevices(), 5);
      await rejectsWith(t, store.addToken({ ...device, revoked: false }), 'E_EXISTS', 'a revoked hash cannot be enrolled again');
      t.equal((await store.findToken(device.hash))?.revoked, true, 'and stays revoked');
    });

    t.test('plans are stored whole, one live plan per patch version', async (t) => {
      const { store } = await fresh(t, b);
      t.equal(await store.getPlan('p', 1), null);
      t.equal(await store.latestPlan('p'), null);
      const p1 = plan({ soakSeconds: 0.5, maxFailurePct: 2.5, stageStartedAt: null });
      await store.createPlan(p1);
      t.same(await store.getPlan('p', 1), p1);
      await rejectsWith(t, store.createPlan(plan({ stages: [50, 100] })), 'E_EXISTS', 'a second plan of a rolling version');
      t.same(await store.getPlan('p', 1), p1, 'the refused plan changed nothing');
      const p3 = plan({ version: 3, state: 'rolling', stage: 1, rollout: 5, stageStartedAt: 4000, halted: true, autoRecall: false });
      const p2 = plan({ version: 2 });
      await store.createPlan(p3);
      await store.createPlan(p2);
      await store.createPlan(plan({ patch: 'a' }));
      t.same(await store.latestPlan('p'), p3);
      t.same((await store.listPlans()).map((p) => `${p.patch}@${p.version}`), ['a@1', 'p@1', 'p@2', 'p@3']);
      await rejectsWith(t, store.createPlan(plan({ version: 4, state: 'paused' as never })), 'E_INVALID_ARGUMENT', 'an unknown state');
      t.equal(await store.getPlan('p', 4), null);
    });

    t.test('a finished plan can be replaced and its revisions continue', async (t) => {
      const { store } = await fresh(t, b);
      await store.createPlan(plan());
      await store.decide(0, plan({ state: 'recalled', updatedAt: 3000 }), decision({ action: 'recall', code: 'operator-recall' }));
      await store.createPlan(plan({ stages: [10, 100], createdAt: 5000, updatedAt: 5000 }));
      const replaced = await store.getPlan('p', 1);
      t.same(replaced?.stages, [10, 100]);
      t.equal(replaced?.state, 'planned');
      t.equal(replaced?.revision, 2, 'one past the recalled plan, so a stale decision cannot apply');
      t.equal(await store.decide(0, plan({ state: 'rolling' }), decision()), null);
    });

    t.test('decide is a compare-and-set on the plan revision', async (t) => {
      const { store } = await fresh(t, b);
      await store.createPlan(plan());
      const next = plan({ state: 'rolling', stage: 0, rollout: 1, stageStartedAt: 2000, updatedAt: 2000 });
      const d = await store.decide(0, next, decision());
      t.ok(d && d.seq > 0, 'the decision is stored with a seq');
      t.same(d, { ...decision(), seq: d?.seq });
      t.same(await store.getPlan('p', 1), { ...next, revision: 1 });

      // A second decider that read revision 0 loses and stores nothing.
      t.equal(await store.decide(0, plan({ state: 'halted', halted: true }), decision({ action: 'halt', code: 'x' })), null);
      t.same(await store.getPlan('p', 1), { ...next, revision: 1 });
      t.same((await store.decisions('p')).map((x) => x.seq), [d?.seq]);

      // Two deciders at once on revision 1: exactly one wins.
      const both = await Promise.all([
        store.decide(1, plan({ state: 'halted', halted: true, revision: 1 }), decision({ action: 'halt', code: 'a' })),
        store.decide(1, plan({ state: 'rolling', stage: 1, rollout: 5, revision: 1 }), decision({ action: 'advance', code: 'b' })),
      ]);
      t.equal(both.filter((x) => x !== null).length, 1);
      t.equal((await store.getPlan('p', 1))?.revision, 2);
      t.equal((await store.decisions('p', 1)).length, 2);

      t.equal(await store.decide(0, plan({ version: 9 }), decision({ version: 9 })), null, 'no plan, no decision');
      await rejectsWith(t, store.decide(2, plan(), decision({ version: 2 })), 'E_INVALID_ARGUMENT', 'a decision on another plan');
      await rejectsWith(t, store.decide(2, plan(), decision({ action: 'explode' as never })), 'E_INVALID_ARGUMENT', 'an unknown action');
      t.equal((await store.getPlan('p', 1))?.revision, 2, 'a refused decision leaves the plan as it was');
      t.equal((await store.decisions('p')).length, 2);
    });

    t.test('unapplied decisions come oldest first until marked applied', async (t) => {
      const { store } = await fresh(t, b);
      await store.createPlan(plan());
      await store.createPlan(plan({ version: 2 }));
      const d1 = await store.decide(0, plan({ state: 'rolling' }), decision());
      const d2 = await store.decide(0, plan({ version: 2, state: 'rolling' }), decision({ version: 2, inputs: null }));
      const d3 = await store.decide(1, plan({ state: 'halted', halted: true }), decision({ action: 'halt', by: 'operator', appliedAt: 7000 }));
      t.ok(d1 && d2 && d3 && d1.seq < d2.seq && d2.seq < d3.seq, 'seq increases');
      t.same(await store.unappliedDecisions(), [d1, d2]);
      await store.markApplied(d1!.seq, 8000);
      t.same(await store.unappliedDecisions(), [d2]);
      await store.markApplied(d1!.seq, 9000);
      t.equal((await store.decisions('p', 1))[0].appliedAt, 8000, 'the first time applied is kept');
      await rejectsWith(t, store.markApplied(d3!.seq + 100, 1), 'E_NOT_FOUND', 'an unknown seq');
      t.same(await store.decisions('p'), [{ ...d1, appliedAt: 8000 }, d2, d3]);
      t.same(await store.decisions('p', 2), [d2]);
      t.same(await store.decisions('q'), []);
    });

    t.test('two stores on one database: only one leads', { skip: notShared }, async (t) => {
      const { store: a, url } = await fresh(t, b);
      const c = await open(t, url);
      t.equal(await a.tryLead('a', 60_000, 1000), true);
      t.equal(await c.tryLead('c', 60_000, 1001), false);
      t.equal(await a.tryLead('a', 60_000, 2000), true, 'the leader renews');
      t.equal(await c.tryLead('c', 60_000, 2001), false);
      await c.resign('c');
      t.equal(await a.tryLead('a', 60_000, 3000), true, 'resign by a non-leader changes nothing');
      await a.resign('a');
      t.equal(await c.tryLead('c', 60_000, 4000), true, 'taken once the leader resigned');
      t.equal(await a.tryLead('a', 60_000, 4001), false);
      await rejectsWith(t, a.tryLead('', 1000, 1), 'E_INVALID_ARGUMENT', 'an empty owner');
    });

    if (b.name === 'SQLite file') {
      t.test('a SQLite lease is taken over only once it has run out', async (t) => {
        const { store: a, url } = await fresh(t, b);
        const c = await open(t, url);
        t.equal(await a.tryLead('a', 1000, 10_000), true);
        t.equal(await c.tryLead('c', 1000, 10_999), false);
        t.equal(await c.tryLead('c', 1000, 11_000), true, 'expired at 11000');
        t.equal(await a.tryLead('a', 1000, 11_500), false, 'the old leader has lost it');
        t.equal(await c.tryLead('c', 1000, 11_900), true);
        t.equal(await a.tryLead('a', 1000, 12_000), false, 'renewed at 11900 until 12900');
        await rejectsWith(t, a.tryLead('a', 0, 13_000), 'E_INVALID_ARGUMENT', 'a lease of no length');
      });
    }

    if (b.name === 'PostgreSQL') {
      t.test('a leader whose session is cut loses leadership at once', async (t) => {
        const { store: a, url } = await fresh(t, b);
        const c = await open(t, url);
        t.equal(await a.tryLead('a', 1, 0), true);
        t.equal(await c.tryLead('c', 1, 0), false);
        const cut = await pgQuery(
          url,
          `SELECT pg_terminate_backend(l.pid) AS ok FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
        );
        t.same(cut, [{ ok: true }], "the leader's session is terminated");
        t.equal(await c.tryLead('c', 1, 0), true, 'the lock was released with the session');
        t.equal(await a.tryLead('a', 1, 0), false, 'the old leader knows it lost');
        await c.resign('c');
        t.equal(await a.tryLead('a', 1, 0), true, 'and leads again on a fresh session once free');
      });
    }

    t.test('reopening keeps everything and applies no migration twice', { skip: notShared }, async (t) => {
      const { store: first, url } = await fresh(t, b);
      await first.insertReports([[report({ pseudonym: device(1) }), report({ pseudonym: device(2), outcome: 'staged' })]]);
      await first.addToken(token());
      await first.createPlan(plan());
      const d = await first.decide(0, plan({ state: 'rolling' }), decision());
      await first.close();
      const again = await open(t, url);
      await again.close();
      const store = await open(t, url);
      t.equal(await store.reportCount(), 2);
      t.same(await store.counts('p', 1), { ...ZERO_COUNTS, confirmed: 1, staged: 1 });
      t.same(await store.findToken(token().hash), token());
      t.same(await store.getPlan('p', 1), plan({ state: 'rolling', revision: 1 }));
      t.same(await store.unappliedDecisions(), [d]);
      t.same(await store.insertReports([[report({ pseudonym: device(3) })]]), [{ accepted: 1, duplicates: 0 }]);
      const applied = b.name === 'PostgreSQL' ? await pgQuery(url, 'SELECT version FROM schema_migrations ORDER BY version') : sqliteRows(url, 'SELECT version FROM schema_migrations ORDER BY version');
      t.same(applied, [{ version: 1 }], 'each migration recorded once');
    });

    t.test('a database whose schema is newer than the code is refused', { skip: notShared }, async (t) => {
      const { store, url } = await fresh(t, b);
      await store.close();
      await b.raw!(url, 'INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, \'from the future\', 0)');
      await rejectsWith(t, openStore(url), 'E_UNSUPPORTED', 'schema 999');
    });

    t.test('a closed store refuses calls', async (t) => {
      const { store } = await fresh(t, b);
      await store.close();
      await rejectsWith(t, store.reportCount(), 'E_STATE', 'reportCount after close');
      await rejectsWith(t, store.insertReports([[report()]]), 'E_STATE', 'insertReports after close');
      await rejectsWith(t, store.revokeToken('1'.repeat(64)), 'E_STATE', 'revokeToken after close');
      await store.close();
    });

    t.test('when the leader process is killed another takes over', { skip: notShared }, async (t) => {
      if (!existsSync(path.join(ROOT, 'dist', 'fleet', 'store.js'))) throw new Error('dist/ is not built: npx tsc -p tsconfig.json');
      const { store, url } = await fresh(t, b);
      await store.close();
      // PostgreSQL leads by session: a lease of an hour must not delay the takeover.
      const leaseMs = b.name === 'PostgreSQL' ? 3_600_000 : 1500;
      const a = candidate(t, url, 'a', leaseMs);
      await a.until((l) => l.leading === true);
      const c = candidate(t, url, 'c', leaseMs);
      const first = await c.until((l) => l.leading !== undefined);
      t.equal(first.leading, false, 'a second process does not lead while the first does');
      await a.until((l) => l.leading === true, a.lines.length); // a renewal after c has tried
      const killedAt = Date.now();
      a.child.kill('SIGKILL');
      await new Promise((resolve) => a.child.once('exit', resolve));
      const lastRenewal = Math.max(...a.lines.filter((l) => l.leading).map((l) => l.at!));
      const took = await c.until((l) => l.leading === true);
      t.ok(took.done! >= killedAt, 'the second process did not lead while the first lived');
      t.ok(a.lines.every((l) => l.ready || l.leading), 'the first led until it was killed');
      if (b.name !== 'PostgreSQL') {
        t.ok(took.at! >= lastRenewal + leaseMs, `taken at ${took.at}, not before the lease renewed at ${lastRenewal} ran out`);
      }
      c.child.kill('SIGKILL');
    });
  });
}

function sqliteRows(url: string, sql: string): unknown[] {
  const db = new Database(url.slice('sqlite:'.length), { readonly: true });
  try {
    return db.prepare(sql).all();
  } finally {
    db.close();
  }
}

interface LeadLine {
  owner: string;
  ready?: boolean;
  leading?: boolean;
  at?: number;
  done?: number;
}

/** A lead_child.js process and the lines it printed; `until` waits for a line that matches. */
function candidate(t: T, url: string, owner: string, leaseMs: number) {
  const child: ChildProcess = spawn(process.execPath, [LEAD_CHILD, url, owner, String(leaseMs), '50'], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const lines: LeadLine[] = [];
  const waiters: { match: (l: LeadLine) => boolean; resolve: (l: LeadLine) => void }[] = [];
  let exited = false;
  createInterface({ input: child.stdout! }).on('line', (text) => {
    const line = JSON.parse(text) as LeadLine;
    lines.push(line);
    for (const w of [...waiters]) {
      if (w.match(line)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(line);
      }
    }
  });
  child.once('exit', () => (exited = true));
  return {
    child,
    lines,
    /** The first line from index `from` on (printed or still to come) that matches. */
    until(match: (l: LeadLine) => boolean, from = 0): Promise<LeadLine> {
      const seen = lines.slice(from).find(match);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        if (exited) return reject(new Error(`${owner} exited`));
        waiters.push({ match, resolve });
        child.once('exit', (code) => reject(new Error(`${owner} exited (${code}) before a matching line`)));
      });
    },
  };
}

t.test('a database URL names its backend', async (t) => {
  await rejectsWith(t, openStore('mysql://localhost/fleet'), 'E_INVALID_ARGUMENT', 'an unknown scheme');
  await rejectsWith(t, openStore('sqlite:'), 'E_INVALID_ARGUMENT', 'sqlite: without a path');
  await rejectsWith(t, openStore(''), 'E_INVALID_ARGUMENT', 'an empty URL');
  await t.rejects(openStore('postgres://u:secret@localhost/fleet'.replace('postgres', 'mongodb')), { message: /u:\*\*\*@/ }, 'the password is not echoed');
  const dir = await tempDir(t);
  await rejectsWith(t, openStore(`sqlite:${path.join(dir, 'missing', 'fleet.db')}`), 'E_NOT_FOUND', 'a SQLite file in a missing directory');
  await rejectsWith(t, openStore(`postgresql://revpatch@/postgres?host=${encodeURIComponent(dir)}`), 'E_NETWORK', 'no PostgreSQL server at the socket');

  const cwd = process.cwd();
  process.chdir(dir);
  t.teardown(() => process.chdir(cwd));
  const store = await openStore('sqlite:./relative.db');
  await store.close();
  t.ok(existsSync(path.join(dir, 'relative.db')), 'a relative path is taken from the working directory');
  t.equal(store.kind, 'sqlite');
});

t.test('the database URL is the given one, else $REVPATCH_FLEET_DB, else the default file', async (t) => {
  const saved = process.env.REVPATCH_FLEET_DB;
  t.teardown(() => {
    if (saved === undefined) delete process.env.REVPATCH_FLEET_DB;
    else process.env.REVPATCH_FLEET_DB = saved;
  });
  delete process.env.REVPATCH_FLEET_DB;
  t.equal(fleetDbUrl(), 'sqlite:./revpatch-fleet.db');
  t.equal(DEFAULT_FLEET_DB, 'sqlite:./revpatch-fleet.db');
  process.env.REVPATCH_FLEET_DB = 'postgres://db/fleet';
  t.equal(fleetDbUrl(), 'postgres://db/fleet');
  t.equal(fleetDbUrl('sqlite:/var/lib/fleet.db'), 'sqlite:/var/lib/fleet.db');
});
