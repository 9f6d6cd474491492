import t from 'tap';
import * as crypto from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import type { Test as Tap } from 'tap';
import { RolloutController, type ControllerOptions } from '../lib/fleet/controller';
import { openStore } from '../lib/fleet/store';
import type { FleetStore, PlanRecord } from '../lib/fleet/types';
import { StateLock } from '../lib/engine/lock';
import { Repository } from '../lib/repo/publisher';
import type { Outcome, StoredReport } from '../lib/report/format';
import { rejectsWith, repoFixture } from './repo_fixture';
import { POSTGRES_MISSING, postgresBin, startPostgres } from './fixtures/postgres';

/** A repository with fix-1 v1 published at 100% (the `repo publish` default), a SQLite store and a clock. */
async function world(t: Tap, dbUrl?: string) {
  const f = await repoFixture(t);
  await f.repo.publish(f.patch1);
  const url = dbUrl ?? `sqlite:${path.join(f.dir, 'fleet.db')}`;
  const stores: FleetStore[] = [];
  const store = async () => {
    const s = await openStore(url);
    stores.push(s);
    return s;
  };
  const main = await store();
  t.teardown(async () => {
    for (const s of stores) await s.close();
  });
  const clock = { now: Date.now() };
  const controller = (over: Partial<ControllerOptions> = {}) =>
    new RolloutController({ store: main, repoDir: f.repoDir, clock: () => clock.now, lockWaitMs: 0, leaseMs: 30_000, ...over });
  const published = async () => (await Repository.open(f.repoDir)).patches().find((p) => p.id === 'fix-1' && p.version === 1)!;
  const timestampVersion = async () =>
    JSON.parse(await fs.readFile(path.join(f.repoDir, 'metadata', 'timestamp.json'), 'utf8')).signed.version as number;
  /** Reports of `n` distinct devices with `outcome`, received now. */
  const report = async (outcome: Outcome, n: number, version = 1) => {
    const batch: StoredReport[] = [];
    for (let i = 0; i < n; i++) {
      batch.push({
        id: crypto.randomBytes(16).toString('hex'),
        patch: 'fix-1',
        version,
        outcome,
        code: outcome === 'rolled-back' ? 'health-check-failed' : null,
        bootAttempts: 1,
        agentVersion: '0.1.0',
        time: new Date(clock.now).toISOString(),
        pseudonym: crypto.randomBytes(32).toString('hex'),
        receivedAt: clock.now,
      });
    }
    await main.insertReports([batch]);
  };
  return { f, store, main, clock, controller, published, timestampVersion, report };
}

const SMALL = { stages: [10, 50, 100], soakSeconds: 60, minReports: 5, maxFailurePct: 20 };

t.test('plan narrows a patch published at 100% to its first stage at once, recorded before it is published', async (t) => {
  const w = await world(t);
  t.equal((await w.published()).rollout, 100);
  const c = w.controller();
  const res = await c.plan('fix-1', SMALL);
  t.equal(res.published, true);
  t.equal(res.error, null);
  t.equal(res.decision.action, 'start');
  t.equal(res.decision.by, 'operator');
  t.equal(res.decision.fromRollout, 100);
  t.equal(res.decision.toRollout, 10);
  t.ok(res.decision.appliedAt !== null, 'marked applied once published');
  t.match(res.plan, { state: 'rolling', stage: 0, rollout: 10, halted: false, stageStartedAt: w.clock.now });
  const p = await w.published();
  t.same([p.rollout, p.halted, p.recalled], [10, false, false], 'the signed rollout is the first stage');
  t.same(await w.main.unappliedDecisions(), []);
});

t.test('plan resolves the newest published version, and refuses what it cannot plan, storing nothing', async (t) => {
  const w = await world(t);
  const c = w.controller();
  await rejectsWith(t, c.plan('nope', SMALL), 'E_UNKNOWN_PATCH');
  await rejectsWith(t, c.plan('fix-1', { ...SMALL, version: 7 }), 'E_UNKNOWN_PATCH', 'an unpublished version');
  await rejectsWith(t, c.plan('fix-1', { ...SMALL, stages: [50, 10] }), 'E_INVALID_ARGUMENT', 'decreasing stages');
  await rejectsWith(t, c.plan('fix-1', { ...SMALL, maxFailurePct: 150 }), 'E_INVALID_ARGUMENT');
  await rejectsWith(t, c.plan('fix-1', { ...SMALL, minReports: 0 }), 'E_INVALID_ARGUMENT');
  await rejectsWith(t, c.plan('', SMALL), 'E_INVALID_ARGUMENT');
  t.same(await w.main.listPlans(), [], 'no plan stored');
  t.equal((await w.published()).rollout, 100, 'the repository is untouched');

  const res = await c.plan('fix-1', SMALL);
  t.equal(res.plan.version, 1, 'the newest published version');
  const ts = await w.timestampVersion();
  await rejectsWith(t, c.plan('fix-1', SMALL), 'E_EXISTS', 'a second plan for a rolling version');
  t.equal((await w.main.decisions('fix-1')).length, 1);
  t.equal(await w.timestampVersion(), ts);

  await w.f.repo.update('fix-1', 1, { recalled: true });
  await rejectsWith(t, w.controller().plan('fix-1', SMALL), 'E_STATE', 'planning a recalled version');
});

t.test('a plan left planned by a crash is started by the next tick, as the controller', async (t) => {
  const w = await world(t);
  await w.main.createPlan({
    patch: 'fix-1', version: 1, ...SMALL, autoRecall: false,
    state: 'planned', stage: -1, rollout: 100, stageStartedAt: null, halted: false, revision: 0, createdAt: w.clock.now, updatedAt: w.clock.now,
  });
  const res = await w.controller().tick();
  t.equal(res.leading, true);
  t.same(res.decisions.map((d) => [d.action, d.by, d.toRollout]), [['start', 'controller', 10]]);
  t.equal((await w.published()).rollout, 10);
});

t.test('confirmations after the soak advance the stage and re-sign the repository; staged devices count for nothing', async (t) => {
  const w = await world(t);
  const c = w.controller();
  await c.plan('fix-1', SMALL);
  await w.report('staged', 50);
  await w.report('trial', 40);
  w.clock.now += 61_000;
  let res = await c.tick();
  t.same(res.decisions.map((d) => [d.action, d.code]), [['hold', 'awaiting-reports']], 'installs and trials are no verdicts');
  res = await c.tick();
  t.same(res.decisions, [], 'the same hold is not recorded twice');

  await w.report('confirmed', 5);
  w.clock.now += 1000;
  const ts = await w.timestampVersion();
  res = await c.tick();
  t.same(res.decisions.map((d) => [d.action, d.code, d.fromRollout, d.toRollout, d.stage]), [['advance', 'stage-passed', 10, 50, 1]]);
  const d = res.decisions[0];
  t.ok(d.appliedAt !== null);
  t.equal(d.inputs?.stageCounts.confirmed, 5, 'the numbers are stored with the decision');
  t.equal(d.inputs?.counts.staged, 50);
  t.equal(d.inputs?.soakedSeconds, 62);
  t.equal((await w.published()).rollout, 50);
  t.ok((await w.timestampVersion()) > ts, 'targets, snapshot and timestamp were re-signed');

  // The new stage counts only what arrives from now on.
  res = await c.tick();
  t.same(res.decisions.map((x) => x.code), ['soaking']);
  w.clock.now += 61_000;
  t.same((await c.tick()).decisions.map((x) => x.code), ['awaiting-reports'], 'the first stage’s confirmations do not count again');
  await w.report('confirmed', 6);
  t.same((await c.tick()).decisions.map((x) => [x.action, x.toRollout]), [['advance', 100]]);
  w.clock.now += 61_000;
  await w.report('confirmed', 6);
  t.same((await c.tick()).decisions.map((x) => [x.action, x.code]), [['complete', 'stages-complete']]);
  t.equal((await w.main.getPlan('fix-1', 1))?.state, 'complete');
  t.equal((await w.published()).rollout, 100);
  t.same((await c.tick()).decisions, [], 'a complete rollout is left alone');
});

t.test('rollbacks halt the rollout and publish the halted flag; the rollout percentage stays', async (t) => {
  const w = await world(t);
  const c = w.controller();
  await c.plan('fix-1', SMALL);
  await w.report('confirmed', 1);
  await w.report('rolled-back', 5);
  const res = await c.tick();
  t.same(res.decisions.map((d) => [d.action, d.code]), [['halt', 'failure-rate-above-threshold']], 'no soak needed to halt');
  const p = await w.published();
  t.same([p.rollout, p.halted, p.recalled], [10, true, false]);
  t.equal((await w.main.getPlan('fix-1', 1))?.state, 'halted');
  await w.report('confirmed', 100);
  w.clock.now += 3600_000;
  t.same((await c.tick()).decisions, [], 'a halted rollout stays halted until an operator resumes it');
});

t.test('with auto-recall the halt recalls the patch version in the repository', async (t) => {
  const w = await world(t);
  const c = w.controller();
  await c.plan('fix-1', { ...SMALL, autoRecall: true });
  await w.report('rolled-back', 3);
  const res = await c.tick();
  t.same(res.decisions.map((d) => [d.action, d.code]), [['recall', 'failure-rate-above-threshold']]);
  const p = await w.published();
  t.same([p.halted, p.recalled], [true, true]);
  t.equal((await w.main.getPlan('fix-1', 1))?.state, 'recalled');
});

t.test('a leader that dies between recording and publishing: the next leader publishes its decision, once', async (t) => {
  const w = await world(t);
  const storeA = await w.store();
  const storeB = await w.store();
  const a = w.controller({ store: storeA, owner: 'a' });
  const b = w.controller({ store: storeB, owner: 'b' });
  await a.plan('fix-1', SMALL);
  await w.report('confirmed', 5);
  w.clock.now += 61_000;

  // A's publish fails: another process holds the repository lock.
  const lock = await StateLock.acquire(w.f.repoDir);
  const ts = await w.timestampVersion();
  const failed = await a.tick();
  await lock.release();
  t.equal(failed.leading, true);
  t.same(failed.decisions.map((d) => [d.action, d.appliedAt]), [['advance', null]], 'recorded, not applied');
  t.same(failed.errors.map((e) => e.code), ['E_BUSY']);
  const pending = await storeA.unappliedDecisions();
  t.same(pending.map((d) => [d.action, d.toRollout]), [['advance', 50]], 'recorded with its numbers, not published');
  t.equal(pending[0].inputs?.stageCounts.confirmed, 5);
  t.equal((await w.published()).rollout, 10, 'the repository still says 10%');
  t.equal(await w.timestampVersion(), ts);

  // A dies. B cannot lead until A's lease runs out.
  t.equal((await b.tick()).leading, false);
  w.clock.now += 31_000;
  const taken = await b.tick();
  t.equal(taken.leading, true);
  t.same(taken.republished.map((d) => d.seq), [pending[0].seq], 'B publishes A’s decision');
  t.equal((await w.published()).rollout, 50);
  t.same(await storeB.unappliedDecisions(), []);
  t.notOk(taken.decisions.some((d) => d.action === 'advance'), 'and does not advance again');
  const advances = (await storeB.decisions('fix-1', 1)).filter((d) => d.action === 'advance');
  t.equal(advances.length, 1, 'one advance in all');
  t.equal((await a.tick()).leading, false, 'A, back, no longer leads');
});

t.test('two controllers ticking at once make each decision once', async (t) => {
  const w = await world(t);
  const a = w.controller({ store: await w.store(), owner: 'a' });
  const b = w.controller({ store: await w.store(), owner: 'b', lockWaitMs: 5000 });
  await a.plan('fix-1', SMALL);
  await w.report('confirmed', 5);
  w.clock.now += 61_000;
  const [ra, rb] = await Promise.all([a.tick(), b.tick()]);
  t.equal(Number(ra.leading) + Number(rb.leading), 1, 'one leads');
  t.equal((await w.main.decisions('fix-1', 1)).filter((d) => d.action === 'advance').length, 1);
  // An operator halt racing a tick: both land, in some order, and the repository shows the newest plan.
  await w.report('confirmed', 5);
  w.clock.now += 61_000;
  const [, halted] = await Promise.all([b.tick(), a.halt('fix-1')]);
  const plan = (await w.main.getPlan('fix-1', 1)) as PlanRecord;
  t.equal(plan.state, 'halted');
  t.equal(halted.plan.halted, true);
  await b.tick();
  const p = await w.published();
  t.same([p.rollout, p.halted], [plan.rollout, true], 'the repository carries the newest plan');
  t.same(await w.main.unappliedDecisions(), []);
});

t.test('operators halt, resume, advance and recall without leading, and each is published', async (t) => {
  const w = await world(t);
  const leader = w.controller({ owner: 'leader' });
  const operator = w.controller({ owner: 'operator' });
  await leader.tick();
  await operator.plan('fix-1', SMALL);

  const halted = await operator.halt('fix-1');
  t.match(halted.decision, { action: 'halt', code: 'operator-halt', by: 'operator' });
  t.equal(halted.published, true);
  t.equal((await w.published()).halted, true);

  w.clock.now += 5_000;
  const resumed = await operator.resume('fix-1');
  t.match(resumed.decision, { action: 'resume', by: 'operator', toRollout: 10 });
  t.equal(resumed.plan.stageStartedAt, w.clock.now, 'the stage starts over');
  t.same([(await w.published()).halted, (await w.published()).rollout], [false, 10]);

  const advanced = await operator.advance('fix-1');
  t.match(advanced.decision, { action: 'advance', code: 'operator-advance', fromRollout: 10, toRollout: 50 });
  t.equal((await w.published()).rollout, 50);
  await operator.advance('fix-1');
  const completed = await operator.advance('fix-1');
  t.match(completed.decision, { action: 'complete', code: 'operator-complete' });
  t.equal((await w.published()).rollout, 100);

  const recalled = await operator.recall('fix-1');
  t.match(recalled.decision, { action: 'recall', by: 'operator' });
  t.equal((await w.published()).recalled, true);
  t.same(await w.main.unappliedDecisions(), []);
});

t.test('operator actions on unknown patches or in the wrong state are refused and change nothing', async (t) => {
  const w = await world(t);
  const c = w.controller();
  for (const act of ['halt', 'resume', 'recall', 'advance'] as const) {
    await rejectsWith(t, c[act]('nope'), 'E_UNKNOWN_PATCH', `${act} of an unknown patch`);
    await rejectsWith(t, c[act]('fix-1'), 'E_UNKNOWN_PATCH', `${act} of a patch without a plan`);
    await rejectsWith(t, c[act]('fix-1', 0), 'E_INVALID_ARGUMENT', `${act} of version 0`);
  }
  await c.plan('fix-1', SMALL);
  await rejectsWith(t, c.resume('fix-1'), 'E_STATE', 'resuming a rollout that is not halted');
  await rejectsWith(t, c.halt('fix-1', 2), 'E_UNKNOWN_PATCH', 'a version without a plan');
  await c.halt('fix-1');
  const snapshot = async () => ({
    decisions: (await w.main.decisions('fix-1')).length,
    plan: await w.main.getPlan('fix-1', 1),
    ts: await w.timestampVersion(),
  });
  let before = await snapshot();
  await rejectsWith(t, c.halt('fix-1'), 'E_STATE', 'halting a halted rollout');
  await rejectsWith(t, c.advance('fix-1'), 'E_STATE', 'advancing a halted rollout');
  t.same(await snapshot(), before, 'nothing recorded or published');
  await c.recall('fix-1');
  before = await snapshot();
  for (const act of ['halt', 'resume', 'recall', 'advance'] as const) {
    await rejectsWith(t, c[act]('fix-1'), 'E_STATE', `${act} of a recalled rollout`);
  }
  t.same(await snapshot(), before, 'nothing recorded or published');
});

t.test('an operator decision whose publish fails is kept and published by the next tick', async (t) => {
  const w = await world(t);
  const c = w.controller();
  await c.plan('fix-1', SMALL);
  const lock = await StateLock.acquire(w.f.repoDir);
  const res = await c.halt('fix-1');
  await lock.release();
  t.equal(res.published, false);
  t.equal(res.error?.code, 'E_BUSY');
  t.equal(res.plan.state, 'halted', 'recorded');
  t.equal((await w.published()).halted, false, 'not yet published');
  const tick = await c.tick();
  t.same(tick.republished.map((d) => d.action), ['halt']);
  t.equal((await w.published()).halted, true);
});

t.test('a patch recalled by hand in the repository ends its plan', async (t) => {
  const w = await world(t);
  const c = w.controller();
  await c.plan('fix-1', SMALL);
  await w.f.repo.recall('fix-1');
  const res = await c.tick();
  t.same(res.decisions.map((d) => [d.action, d.code]), [['recall', 'recalled-in-repository']]);
  t.same(res.errors, []);
  t.equal((await w.main.getPlan('fix-1', 1))?.state, 'recalled');
});

t.test('status shows each plan with its counts, failure rate, what the rule would do and its decisions', async (t) => {
  const w = await world(t);
  const c = w.controller();
  await c.plan('fix-1', SMALL);
  await w.report('confirmed', 8);
  await w.report('rolled-back', 2);
  await w.report('staged', 12);
  const [s] = await c.status();
  t.equal(s.plan.patch, 'fix-1');
  t.equal(s.counts.confirmed, 8);
  t.equal(s.counts.failed, 2);
  t.equal(s.counts.staged, 12);
  t.equal(s.stageCounts.confirmed, 8);
  t.equal(s.failureRate, 0.2);
  t.equal(s.next.code, 'soaking');
  t.same(s.decisions.map((d) => d.action), ['start']);
  t.same(await c.status('other'), []);
});

t.test('start ticks until stop, which waits for the tick in flight and hands leadership over', async (t) => {
  const w = await world(t);
  await w.main.createPlan({
    patch: 'fix-1', version: 1, ...SMALL, autoRecall: false,
    state: 'planned', stage: -1, rollout: 100, stageStartedAt: null, halted: false, revision: 0, createdAt: w.clock.now, updatedAt: w.clock.now,
  });
  const a = w.controller({ owner: 'a' });
  a.start(60_000);
  t.throws(() => a.start(10), { code: 'E_STATE' });
  await a.stop();
  t.equal((await w.published()).rollout, 10, 'the first tick ran before stop returned');
  t.equal((await w.controller({ owner: 'b' }).tick()).leading, true, 'another controller leads at once');
  t.throws(() => w.controller().start(0), { code: 'E_INVALID_ARGUMENT' });
});

t.test('the hawkBit rule advances on installs alone', async (t) => {
  const w = await world(t);
  const c = w.controller({ rule: 'hawkbit' });
  await c.plan('fix-1', SMALL);
  await w.main.addToken({ hash: 'a'.repeat(64), kind: 'device', devices: 100, createdAt: w.clock.now, revoked: false });
  await w.report('staged', 5);
  await w.report('rolled-back', 5);
  const res = await c.tick();
  t.same(res.decisions.map((d) => [d.action, d.code]), [['advance', 'hawkbit-success-threshold']], 'five rollbacks in a group of ten go unseen');
  t.equal((await w.published()).rollout, 50);
});

t.test('on PostgreSQL: the leader dies between recording and publishing, another takes over without a lease and publishes it once', { skip: postgresBin() ? false : POSTGRES_MISSING }, async (t) => {
  const pg = await startPostgres(t);
  if (!pg) throw new Error(POSTGRES_MISSING);
  const w = await world(t, pg.url);
  const storeA = await w.store();
  const storeB = await w.store();
  const a = w.controller({ store: storeA, owner: 'a' });
  const b = w.controller({ store: storeB, owner: 'b' });
  await a.plan('fix-1', SMALL);
  t.equal((await a.tick()).leading, true);
  t.equal((await b.tick()).leading, false, 'one leader');
  await w.report('confirmed', 5);
  w.clock.now += 61_000;
  const lock = await StateLock.acquire(w.f.repoDir);
  const failed = await a.tick();
  await lock.release();
  t.same(failed.errors.map((e) => e.code), ['E_BUSY']);
  t.same((await storeB.unappliedDecisions()).map((d) => d.action), ['advance']);
  await storeA.close(); // the leader's process ends: its session and advisory lock with it
  // The server drops the lock when it has processed the disconnect: B leads then, with no lease to wait out.
  let taken = await b.tick();
  for (let i = 0; i < 100 && !taken.leading; i++) {
    await new Promise((r) => setTimeout(r, 50));
    taken = await b.tick();
  }
  t.equal(taken.leading, true, 'B leads once the dead leader’s session is gone');
  t.same(taken.republished.map((d) => d.action), ['advance']);
  t.equal((await w.published()).rollout, 50);
  t.equal((await storeB.decisions('fix-1', 1)).filter((d) => d.action === 'advance').length, 1);
  t.same(await storeB.unappliedDecisions(), []);
});
