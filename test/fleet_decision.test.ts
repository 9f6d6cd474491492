import t from 'tap';
import {
  DEFAULT_PLAN,
  HALT_MIN_FAILURES,
  decideRollout,
  exposureBound,
  hawkbitDecision,
  validatePlan,
  wilsonInterval,
  type RolloutInput,
} from '../lib/fleet/decision';
import type { PlanRecord, RolloutPlan } from '../lib/fleet/types';
import { ZERO_COUNTS, type OutcomeCounts } from '../lib/report/format';
import { RevpatchError } from '../lib/engine/errors';

const T0 = Date.UTC(2026, 0, 1);

function plan(over: Partial<PlanRecord> = {}): PlanRecord {
  return {
    patch: 'fix-1',
    version: 1,
    ...DEFAULT_PLAN,
    stages: [1, 5, 25, 100],
    state: 'rolling',
    stage: 0,
    rollout: 1,
    stageStartedAt: T0,
    halted: false,
    revision: 1,
    createdAt: T0,
    updatedAt: T0,
    ...over,
  };
}

const counts = (over: Partial<OutcomeCounts> = {}): OutcomeCounts => ({ ...ZERO_COUNTS, ...over });

function input(over: Partial<RolloutInput> & { stage?: Partial<OutcomeCounts>; soaked?: number } = {}): RolloutInput {
  const stageCounts = over.stageCounts ?? counts(over.stage);
  return {
    plan: over.plan ?? plan(),
    counts: over.counts ?? stageCounts,
    stageCounts,
    now: over.now ?? T0 + (over.soaked ?? 0) * 1000,
    enrolledDevices: over.enrolledDevices ?? null,
  };
}

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    return err instanceof RevpatchError ? err.code : String(err);
  }
  return 'no error';
}

// ------------------------------------------------------------------ wilson

t.test('the Wilson interval matches known values and brackets the estimate', async (t) => {
  // 10 of 100 at z = 1.96: [0.0552, 0.1744] (Wilson 1927; the usual tables).
  const w = wilsonInterval(10, 100, 1.96);
  t.ok(Math.abs(w.lower - 0.0552) < 1e-4, `lower ${w.lower}`);
  t.ok(Math.abs(w.upper - 0.1744) < 1e-4, `upper ${w.upper}`);
  t.same(wilsonInterval(0, 0, 2), { lower: 0, upper: 1 }, 'no data: anything is possible');
  const none = wilsonInterval(0, 50, 2.576);
  t.equal(none.lower, 0);
  t.ok(none.upper > 0 && none.upper < 0.15);
  const all = wilsonInterval(5, 5, 2.576);
  t.ok(all.lower > 0.4 && all.upper === 1);
  for (const [k, n] of [[1, 3], [7, 1000], [999, 1000]]) {
    const i = wilsonInterval(k, n, 2.326);
    t.ok(i.lower <= k / n && k / n <= i.upper, `${k}/${n} inside its interval`);
  }
});

t.test('the Wilson interval refuses what is not a proportion', async (t) => {
  t.equal(codeOf(() => wilsonInterval(3, 2, 2)), 'E_INVALID_ARGUMENT');
  t.equal(codeOf(() => wilsonInterval(-1, 2, 2)), 'E_INVALID_ARGUMENT');
  t.equal(codeOf(() => wilsonInterval(1, NaN, 2)), 'E_INVALID_ARGUMENT');
  t.equal(codeOf(() => wilsonInterval(1, 2, 0)), 'E_INVALID_ARGUMENT');
});

// ------------------------------------------------------------------ plans

t.test('a plan with bad fields is refused with E_INVALID_ARGUMENT naming the field', async (t) => {
  const good: RolloutPlan = { patch: 'fix-1', version: 1, ...DEFAULT_PLAN };
  t.doesNotThrow(() => validatePlan(good));
  const cases: Array<[string, Partial<RolloutPlan>, RegExp]> = [
    ['empty stages', { stages: [] }, /stages/],
    ['decreasing stages', { stages: [5, 1] }, /increase/],
    ['a repeated stage', { stages: [5, 5] }, /increase/],
    ['a stage above 100', { stages: [1, 150] }, /percentage/],
    ['a zero stage', { stages: [0, 10] }, /percentage/],
    ['a stage finer than 0.01', { stages: [0.001, 10] }, /decimals/],
    ['a negative soak', { soakSeconds: -1 }, /soak/],
    ['a fractional soak', { soakSeconds: 1.5 }, /soak/],
    ['zero min-reports', { minReports: 0 }, /min-reports/],
    ['a max-failure of 100', { maxFailurePct: 100 }, /max-failure/],
    ['a negative max-failure', { maxFailurePct: -1 }, /max-failure/],
    ['a bad patch id', { patch: '../x' }, /patch id/],
    ['a zero version', { version: 0 }, /version/],
  ];
  for (const [name, over, re] of cases) {
    let caught: unknown;
    try {
      validatePlan({ ...good, ...over });
    } catch (err) {
      caught = err;
    }
    t.equal((caught as RevpatchError)?.code, 'E_INVALID_ARGUMENT', name);
    t.match((caught as Error)?.message, re, `${name}: the message names the field`);
  }
});

// --------------------------------------------------------------- the rule

t.test('a planned rollout starts at the first stage', async (t) => {
  const d = decideRollout(input({ plan: plan({ state: 'planned', stage: -1, rollout: 100, stageStartedAt: null }), now: T0 + 5 }));
  t.equal(d.action, 'start');
  t.equal(d.code, 'plan-started');
  t.same(d.next, { state: 'rolling', stage: 0, rollout: 1, halted: false, stageStartedAt: T0 + 5 });
});

t.test('three rollbacks and no confirmation halt at once, before the soak and the minimum', async (t) => {
  const d = decideRollout(input({ stage: { failed: 3 }, soaked: 10 }));
  t.equal(d.action, 'halt');
  t.equal(d.code, 'failure-rate-above-threshold');
  t.same(d.next, { state: 'halted', stage: 0, rollout: 1, halted: true, stageStartedAt: T0 });
  t.equal(d.inputs.failureRate, 1);
  t.ok(d.inputs.wilsonLower > 0.02);
  t.match(d.reason, /3 failed of 3 verdicts/);
});

t.test('fewer than three failures never halt, however high the rate', async (t) => {
  const d = decideRollout(input({ stage: { failed: HALT_MIN_FAILURES - 1 }, soaked: 10 }));
  t.equal(d.action, 'hold');
  t.equal(d.code, 'soaking');
});

t.test('with auto-recall a halt recalls the patch', async (t) => {
  const d = decideRollout(input({ plan: plan({ autoRecall: true }), stage: { failed: 20, confirmed: 100 } }));
  t.equal(d.action, 'recall');
  t.equal(d.code, 'failure-rate-above-threshold');
  t.equal(d.next.state, 'recalled');
  t.equal(d.next.halted, true);
});

t.test('a stage holds while it soaks, then while it lacks verdicts, then advances', async (t) => {
  const stage = { confirmed: 450, failed: 2, staged: 900, trial: 30 };
  const soak = DEFAULT_PLAN.soakSeconds;
  const soaking = decideRollout(input({ stage, soaked: soak - 1 }));
  t.equal(soaking.action, 'hold');
  t.equal(soaking.code, 'soaking');
  t.equal(soaking.inputs.soakedSeconds, soak - 1);
  t.same(soaking.next, { state: 'rolling', stage: 0, rollout: 1, halted: false, stageStartedAt: T0 });

  const few = decideRollout(input({ stage: { confirmed: DEFAULT_PLAN.minReports - 2, failed: 1, staged: 900, trial: 500 }, soaked: soak }));
  t.equal(few.action, 'hold');
  t.equal(few.code, 'awaiting-reports', 'staged and trial devices are not verdicts');

  const go = decideRollout(input({ stage, soaked: soak }));
  t.equal(go.action, 'advance');
  t.equal(go.code, 'stage-passed');
  t.same(go.next, { state: 'rolling', stage: 1, rollout: 5, halted: false, stageStartedAt: T0 + soak * 1000 });
  t.equal(go.inputs.failureRate, 2 / 452);
});

t.test('a rate above the maximum without confidence holds instead of advancing or halting', async (t) => {
  // 12 of 400 = 3%: above 2%, but the 99.5% lower bound is below 2%.
  const d = decideRollout(input({ stage: { confirmed: 388, failed: 12 }, soaked: 7200 }));
  t.equal(d.action, 'hold');
  t.equal(d.code, 'failure-rate-uncertain');
  t.ok(d.inputs.wilsonLower < 0.02);
});

t.test('a stage too small for the minimum says so while it waits', async (t) => {
  // 5,000 devices at 1%: about 50 devices, never 200 verdicts.
  const d = decideRollout(input({ stage: { confirmed: 60 }, soaked: 7200, enrolledDevices: 5000 }));
  t.equal(d.action, 'hold');
  t.equal(d.code, 'awaiting-reports');
  t.match(d.reason, /reaches at most \d+ devices/);
});

t.test('the last stage completes the rollout', async (t) => {
  const p = plan({ stage: 3, rollout: 100 });
  const d = decideRollout(input({ plan: p, stage: { confirmed: 5000, failed: 20 }, soaked: 7200 }));
  t.equal(d.action, 'complete');
  t.equal(d.next.state, 'complete');
  t.equal(d.next.rollout, 100);
});

t.test('halted, complete and recalled rollouts are left alone', async (t) => {
  for (const state of ['halted', 'complete', 'recalled'] as const) {
    const d = decideRollout(input({ plan: plan({ state, halted: state !== 'complete' }), stage: { confirmed: 1000 }, soaked: 99999 }));
    t.equal(d.action, 'hold', state);
    t.equal(d.code, `plan-${state}`);
  }
});

t.test('fake confirmations beyond what the rollout could reach are not counted', async (t) => {
  // 100,000 enrolled at 1%: about 1,000 devices can have the patch.
  const bound = exposureBound(100_000, 1);
  t.ok(bound > 1000 && bound < 1200, `bound ${bound}`);
  const stage = { confirmed: 1_000_000, failed: 60 };
  const diluted = decideRollout(input({ stage, soaked: 7200 }));
  t.equal(diluted.action, 'advance', 'without the bound, a million fake confirmations hide 60 failures');
  const bounded = decideRollout(input({ stage, soaked: 7200, enrolledDevices: 100_000 }));
  t.equal(bounded.action, 'halt', 'with it, the failures count against at most the bound');
  t.equal(bounded.inputs.enrolledDevices, 100_000);
  t.equal(bounded.inputs.stageCounts.confirmed, 1_000_000, 'the counts are stored as reported');
  t.ok(Math.abs(bounded.inputs.failureRate - 60 / (bound + 60)) < 1e-12, 'the rate is of the capped counts');
  t.match(bounded.reason, /exposure bound/);
});

t.test('fake failures can only halt', async (t) => {
  const d = decideRollout(input({ stage: { confirmed: 500, failed: 1_000_000 }, enrolledDevices: 100_000 }));
  t.equal(d.action, 'halt');
});

t.test('bad counts and clocks are refused', async (t) => {
  t.equal(codeOf(() => decideRollout(input({ stage: { confirmed: -1 } }))), 'E_INVALID_ARGUMENT');
  t.equal(codeOf(() => decideRollout(input({ stage: { failed: 1.5 } }))), 'E_INVALID_ARGUMENT');
  t.equal(codeOf(() => decideRollout({ ...input(), now: NaN })), 'E_INVALID_ARGUMENT');
  t.equal(codeOf(() => decideRollout({ ...input(), enrolledDevices: -5 })), 'E_INVALID_ARGUMENT');
});

// ---------------------------------------------------------------- hawkBit

t.test('the hawkBit rule advances on installs and never sees rollbacks', async (t) => {
  // 10,000 devices, stage 1% → a group of 100; 60 installed, 55 of them rolled back.
  const d = hawkbitDecision(input({ stage: { staged: 60, failed: 55, confirmed: 5 }, enrolledDevices: 10_000 }));
  t.equal(d.action, 'advance');
  t.equal(d.code, 'hawkbit-success-threshold');
  t.equal(d.next.rollout, 5);
  const wait = hawkbitDecision(input({ stage: { staged: 49 }, enrolledDevices: 10_000 }));
  t.equal(wait.action, 'hold');
  t.equal(wait.code, 'hawkbit-awaiting-group');
  // The second group is 4% of the fleet: 400 devices.
  const second = plan({ stage: 1, rollout: 5 });
  t.equal(hawkbitDecision(input({ plan: second, stage: { staged: 199 }, enrolledDevices: 10_000 })).action, 'hold');
  t.equal(hawkbitDecision(input({ plan: second, stage: { staged: 200 }, enrolledDevices: 10_000 })).action, 'advance');
});

t.test('the hawkBit rule pauses when half a group reports an install error', async (t) => {
  const d = hawkbitDecision(input({ stage: { refused: 50, staged: 10 }, enrolledDevices: 10_000 }));
  t.equal(d.action, 'halt');
  t.equal(d.code, 'hawkbit-error-threshold');
  t.equal(d.next.halted, true);
  const last = hawkbitDecision(input({ plan: plan({ stage: 3, rollout: 100 }), stage: { staged: 3750 }, enrolledDevices: 10_000 }));
  t.equal(last.action, 'complete');
  t.equal(hawkbitDecision(input({ stage: { staged: 60 } })).code, 'enrolled-unknown');
});

// ------------------------------------------------------------ Monte Carlo

/** mulberry32: a small seeded generator, so every run draws the same fleet. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

interface FleetRun {
  /** Minutes the run took (to its end state or the limit). */
  minutes: number;
  finalState: string;
  stagesReached: number;
  /** Fractions of the fleet. */
  installed: number;
  hurt: number;
  /** Minutes from the start to the halt, or null. */
  haltMinutes: number | null;
  verdictsAtHalt: number | null;
}

interface FleetModel {
  devices: number;
  /** Probability that the patch fails a device's health check. */
  fail: number;
  /** Probability that a device fails for unrelated reasons. */
  background: number;
  seed: number;
  rule?: 'revpatch' | 'hawkbit';
  /** Minutes between a device's checks (default 6 h, the fleet simulator's device model). */
  checkMinutes?: number;
  /** Restart delay after staging, uniform in [min, max] minutes (default 10 min to 12 h). */
  restartMinutes?: [number, number];
  days?: number;
  plan?: Partial<PlanRecord>;
}

/**
 * Every device on a one-minute clock: each has a rollout bucket, a check
 * phase, a restart delay and whether it will fail, drawn from the seed. A
 * device in the rollout takes the patch at its next check (unless the
 * rollout is halted by then), restarts after its delay and reports its
 * verdict. The rule runs every minute on the counts the store would give.
 */
function simulate(m: FleetModel): FleetRun {
  const random = rng(m.seed);
  const rule = m.rule === 'hawkbit' ? hawkbitDecision : decideRollout;
  const N = m.devices;
  const check = m.checkMinutes ?? 360;
  const [rMin, rMax] = m.restartMinutes ?? [10, 720];
  const limit = (m.days ?? 14) * 1440;
  // Devices sorted by bucket: a rollout of r% reaches the first r% of them.
  const phase = new Float64Array(N);
  const delay = new Float64Array(N);
  const patchFails = new Uint8Array(N);
  const fails = new Uint8Array(N);
  for (let i = 0; i < N; i++) {
    phase[i] = random() * check;
    delay[i] = rMin + random() * (rMax - rMin);
    patchFails[i] = random() < m.fail ? 1 : 0;
    fails[i] = patchFails[i] || random() < m.background ? 1 : 0;
  }
  const installsAt = new Map<number, number[]>();
  const verdictsAt = new Map<number, number[]>();
  const at = (map: Map<number, number[]>, minute: number, device: number) => {
    const list = map.get(minute);
    if (list) list.push(device);
    else map.set(minute, [device]);
  };
  let p: PlanRecord = plan({ state: 'planned', stage: -1, rollout: 0, stageStartedAt: null, ...m.plan });
  let reached = 0;
  let eligible = 0;
  let installed = 0;
  let hurt = 0;
  const all = counts();
  let stage = counts();
  let haltMinutes: number | null = null;
  let verdictsAtHalt: number | null = null;
  let minute = 0;
  for (; minute < limit; minute++) {
    const now = T0 + minute * 60_000;
    const d = rule({ plan: p, counts: all, stageCounts: stage, now, enrolledDevices: N });
    if (d.action !== 'hold') {
      if (d.next.stageStartedAt !== p.stageStartedAt) stage = counts();
      const upTo = Math.round((N * d.next.rollout) / 100);
      for (; eligible < upTo; eligible++) {
        const wait = (((phase[eligible] - minute) % check) + check) % check;
        at(installsAt, minute + Math.ceil(wait), eligible);
      }
      p = { ...p, ...d.next };
      reached = Math.max(reached, p.stage + 1);
      if (d.action === 'halt' || d.action === 'recall') {
        haltMinutes = minute;
        verdictsAtHalt = d.inputs.stageCounts.confirmed + d.inputs.stageCounts.failed;
      }
      if (p.state !== 'rolling') break;
    }
    for (const i of installsAt.get(minute) ?? []) {
      installed++;
      all.staged++;
      stage.staged++;
      at(verdictsAt, minute + Math.ceil(delay[i]), i);
    }
    installsAt.delete(minute);
    for (const i of verdictsAt.get(minute) ?? []) {
      if (fails[i]) {
        all.failed++;
        stage.failed++;
        hurt += patchFails[i];
      } else {
        all.confirmed++;
        stage.confirmed++;
      }
    }
    verdictsAt.delete(minute);
  }
  return { minutes: minute, finalState: p.state, stagesReached: reached, installed: installed / N, hurt: hurt / N, haltMinutes, verdictsAtHalt };
}

const fmt = (x: number) => `${(x * 100).toFixed(3)}%`;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const seeds = (n: number, from: number) => Array.from({ length: n }, (_, i) => from + i);

t.test('Monte Carlo: a patch failing on 5% of devices halts inside the 1% stage', async (t) => {
  const runs = seeds(20, 1).map((seed) => simulate({ devices: 100_000, fail: 0.05, background: 0.005, seed }));
  for (const r of runs) {
    t.equal(r.finalState, 'halted');
    t.equal(r.stagesReached, 1, 'never left the first stage');
    t.ok(r.installed <= 0.01, `installed ${fmt(r.installed)} ≤ 1%`);
    t.ok(r.hurt <= 0.001, `hurt ${fmt(r.hurt)} ≤ 0.1%`);
  }
  const minutes = runs.map((r) => r.haltMinutes ?? 0);
  t.comment(
    `5% patch, 20 seeds: installed ≤ ${fmt(Math.max(...runs.map((r) => r.installed)))}, hurt ≤ ${fmt(Math.max(...runs.map((r) => r.hurt)))}, ` +
      `halted after ${Math.min(...minutes)}–${Math.max(...minutes)} min (median ${median(minutes)})`,
  );
});

t.test('Monte Carlo: a patch failing everywhere halts in the first stage after a few verdicts', async (t) => {
  const runs = seeds(20, 100).map((seed) => simulate({ devices: 100_000, fail: 1, background: 0.005, seed }));
  for (const r of runs) {
    t.equal(r.finalState, 'halted');
    t.equal(r.stagesReached, 1);
    t.ok(r.verdictsAtHalt !== null && r.verdictsAtHalt >= HALT_MIN_FAILURES && r.verdictsAtHalt <= 5, `halted after ${r.verdictsAtHalt} verdicts`);
    t.ok(r.installed <= 0.0025, `installed ${fmt(r.installed)}`);
  }
  const installed = runs.map((r) => r.installed);
  t.comment(`100% patch, 20 seeds: installed median ${fmt(median(installed))}, at most ${fmt(Math.max(...installed))}; halted after ≤ ${Math.max(...runs.map((r) => r.haltMinutes ?? 0))} min`);
});

t.test('Monte Carlo: a good patch with 0.5% background failures reaches 100% in 20 of 20 seeds', async (t) => {
  const runs = seeds(20, 1000).map((seed) => simulate({ devices: 100_000, fail: 0, background: 0.005, seed }));
  for (const r of runs) {
    t.equal(r.finalState, 'complete');
    t.equal(r.stagesReached, 4);
  }
  t.comment(`good patch: ${runs.filter((r) => r.finalState === 'complete').length} of 20 complete, after ≤ ${(Math.max(...runs.map((r) => r.minutes)) / 60).toFixed(1)} h`);
});

t.test('Monte Carlo: a small first stage holds instead of advancing on too few verdicts', async (t) => {
  // 20,000 devices: the 1% stage has about 200, never the 400 verdicts a stage needs.
  const r = simulate({ devices: 20_000, fail: 0, background: 0.005, seed: 3, days: 3 });
  t.equal(r.finalState, 'rolling');
  t.equal(r.stagesReached, 1);
  const bigger = simulate({ devices: 20_000, fail: 0, background: 0.005, seed: 3, plan: { stages: [5, 25, 100] } });
  t.equal(bigger.finalState, 'complete', 'a larger first stage fits the fleet');
});

t.test('Monte Carlo: hawkBit defaults let the 5% patch through the whole fleet', async (t) => {
  const r = simulate({ devices: 100_000, fail: 0.05, background: 0.005, seed: 7, rule: 'hawkbit' });
  t.equal(r.finalState, 'complete', 'rollbacks never pause it');
  t.equal(r.stagesReached, 4);
  t.comment(`hawkBit defaults, 5% patch: ${r.finalState} after ${(r.minutes / 60).toFixed(1)} h, installed ${fmt(r.installed)} by then, hurt ${fmt(r.hurt)}`);
});
