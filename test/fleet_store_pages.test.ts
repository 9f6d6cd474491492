/**
 * The store reads the dashboard pages through (FleetStore.decisionPage,
 * outcomeSeries), on SQLite and on a real PostgreSQL
 * (test/fixtures/postgres.ts): pages newest first below a seq, holds left
 * out on request, totals; outcome intervals that sum to the counts, a
 * confirmed device that later rolled back counted as a failure, verdicts
 * outside the range in the first or last interval.
 */
import t, { type Test } from 'tap';
import * as crypto from 'node:crypto';
import { openStore } from '../lib/fleet/store';
import type { DecisionAction, FleetStore, PlanRecord } from '../lib/fleet/types';
import type { StoredReport } from '../lib/report/format';
import { POSTGRES_MISSING, startPostgres } from './fixtures/postgres';
import { makeReport } from './fleet_fixture';

const T0 = Date.UTC(2026, 11, 2, 6, 0, 0);

const PLAN: PlanRecord = {
  patch: 'fix-1', version: 1, stages: [10, 100], soakSeconds: 0, minReports: 1, maxFailurePct: 5, autoRecall: false,
  state: 'rolling', stage: 0, rollout: 10, stageStartedAt: T0, halted: false, revision: 0, createdAt: T0, updatedAt: T0,
};

function stored(over: Record<string, unknown>): StoredReport {
  return { ...makeReport(over), receivedAt: over.receivedAt as number } as StoredReport;
}

async function exercise(t: Test, store: FleetStore): Promise<void> {
  await store.createPlan(PLAN);
  const actions: DecisionAction[] = ['start', 'hold', 'hold', 'advance', 'hold', 'halt', 'hold'];
  let plan = PLAN;
  const seqs: number[] = [];
  for (const [i, action] of actions.entries()) {
    const next = { ...plan, revision: plan.revision + 1 };
    const d = await store.decide(plan.revision, next, {
      patch: 'fix-1', version: 1, at: T0 + i, action, code: action, reason: action, by: 'controller',
      fromRollout: 10, toRollout: 10, stage: 0, inputs: null, appliedAt: T0,
    });
    seqs.push(d!.seq);
    plan = next;
  }
  const first = await store.decisionPage('fix-1', 1, { limit: 3 });
  t.equal(first.total, 7);
  t.same(first.decisions.map((d) => d.seq), seqs.slice(-3).reverse(), 'the newest three, newest first');
  const second = await store.decisionPage('fix-1', 1, { limit: 3, before: first.decisions[2].seq });
  t.same(second.decisions.map((d) => d.seq), seqs.slice(1, 4).reverse(), 'the next three below');
  const changes = await store.decisionPage('fix-1', 1, { limit: 10, changesOnly: true });
  t.equal(changes.total, 3);
  t.same(changes.decisions.map((d) => d.action), ['halt', 'advance', 'start']);
  t.same((await store.decisionPage('fix-2', 1, { limit: 10 })).decisions, [], 'another patch has none');

  const device = () => crypto.randomBytes(32).toString('hex');
  const flip = device();
  await store.insertReports([
    [
      stored({ outcome: 'confirmed', receivedAt: T0 - 5000 }), // before the range: the first interval
      stored({ outcome: 'confirmed', receivedAt: T0 + 1500 }),
      stored({ outcome: 'confirmed', pseudonym: flip, receivedAt: T0 + 2500 }),
      stored({ outcome: 'rolled-back', code: 'boot-loop', bootAttempts: 3, pseudonym: flip, receivedAt: T0 + 3500 }),
      stored({ outcome: 'rolled-back', code: 'health-check-failed', bootAttempts: 1, receivedAt: T0 + 99_000 }), // after: the last
      stored({ outcome: 'staged', receivedAt: T0 + 1000 }),
    ],
  ]);
  const series = await store.outcomeSeries('fix-1', 1, T0, 1000, 5);
  t.same(series, [
    { confirmed: 1, failed: 0 },
    { confirmed: 1, failed: 0 },
    { confirmed: 0, failed: 0 },
    { confirmed: 0, failed: 1 },
    { confirmed: 0, failed: 1 },
  ], 'verdicts per interval; the device that confirmed then rolled back is a failure');
  const counts = await store.counts('fix-1', 1);
  t.equal(series.reduce((n, b) => n + b.confirmed, 0), counts.confirmed, 'the series sums to the confirmed count');
  t.equal(series.reduce((n, b) => n + b.failed, 0), counts.failed, 'and to the rolled-back count');
}

t.test('SQLite: decision pages and the outcome series', async (t) => {
  const store = await openStore('sqlite::memory:');
  t.teardown(() => store.close());
  await exercise(t, store);
});

t.test('PostgreSQL: decision pages and the outcome series', async (t) => {
  const pg = await startPostgres(t);
  if (!pg) return t.plan(0, POSTGRES_MISSING);
  const store = await openStore(pg.url);
  t.teardown(() => store.close());
  await exercise(t, store);
});
