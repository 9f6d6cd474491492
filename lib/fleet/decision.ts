/**
 * The rollout controller's rule (DESIGN.md, "Fleet"; docs/fleet.md, "The
 * decision rule"): from a plan, the devices' outcome counts and a clock, what
 * to do next and why. Like lib/agent/policy.ts, every function here is pure —
 * numbers and a clock in, a decision out, no disk, network or time of its own
 * — so tests feed it counts, and the controller (lib/fleet/controller.ts)
 * stores each decision with the numbers it was made from before it acts.
 *
 * The rule. A device's verdict on a patch is `confirmed` (the health check
 * passed after the restart) or `failed` (it rolled back). `staged` and
 * `trial` are never success: a patch can install cleanly and still keep a
 * device from booting. The rule looks at the verdicts received since the
 * current stage began (so an operator's resume, which restarts the stage,
 * gives the patch a fresh hearing):
 *
 *   verdicts = confirmed + failed,   rate = failed / verdicts
 *
 *   1. Halt when at least HALT_MIN_FAILURES (3) devices failed and the
 *      lower bound of the one-sided 99.5% Wilson score interval of the
 *      rate (z = 2.576) is above maxFailurePct. Checked on every tick, with
 *      no soak and no minimum report count: a patch that fails everywhere
 *      halts at its third rollback. The three-failure floor keeps one or
 *      two unrelated rollbacks among the first verdicts of a stage (the
 *      background failures every fleet has) from halting a good patch.
 *      With `autoRecall` the halt also recalls the patch.
 *   2. Advance to the next stage when the stage has run soakSeconds, has at
 *      least minReports verdicts, and the rate (the point estimate) is at
 *      most maxFailurePct. The point estimate, not the Wilson upper bound:
 *      with no failure at all, the upper bound falls under 2% after 49
 *      verdicts at 84% confidence and 325 at 99.5%, and a 0.5% background
 *      rate adds hundreds more, so small stages and fleets could never
 *      advance, and a small stage whose devices have all reported could
 *      hold for ever on one unlucky failure. A good minReports does the
 *      bound's work instead: at the default 400 verdicts, a patch failing
 *      on 5.5% of devices shows 2% or less with odds of 1 in 2,000, and
 *      rule 1, run every tick, has nearly always halted it before.
 *   3. Complete when the last stage passes the same test.
 *   4. Otherwise hold, with the reason: soaking, awaiting reports, or a rate
 *      above the threshold without the confidence to halt.
 *
 * Exposure bound (docs/fleet.md, "Threat model"): a leaked enrollment token
 * lets anyone post reports, and fake confirmations could dilute the failure
 * rate. Failures are always counted in full (a fake failure can at worst
 * halt, the safe direction). When the number of enrolled devices is known,
 * the confirmations counted are capped at what the published rollout could
 * produce: enrolled × rollout, plus three standard deviations of the bucket
 * draw and 10 devices of slack (exposureBound). The inputs stored with a
 * decision record the counts as reported; the rate and interval are those
 * of the capped counts.
 *
 * Defaults of `revpatch fleet plan` (DEFAULT_PLAN): stages 1, 5, 25, 100 %;
 * soak 2 hours; 400 verdicts per stage; maximum failure rate 2%. The soak
 * lets the first restarts of a stage happen before it is judged; 400
 * verdicts make the point estimate reliable (above); 2% sits four times
 * above the background failure rate of a healthy fleet (0.5%) and well
 * below the 5% of a patch that must not spread. The 1% stage reaches 400
 * verdicts only in fleets of 40,000 devices or more: smaller fleets plan
 * larger first stages or fewer reports (a hold says so). Measured on the
 * fleet simulator's device model (checks every 6 hours, restarts 10 minutes
 * to 12 hours after staging) over 200 seeds of 100,000 devices: a 5% patch
 * halts in the 1% stage every time (at most 1% of the fleet installed it,
 * 0.021% hurt); a patch failing everywhere halts after 3 verdicts with at
 * most 0.21% installed; a good patch with 0.5% background failures
 * completes in 199 of 200 runs, in 15 hours at most
 * (test/fleet_decision.test.ts).
 *
 * hawkbitDecision is not used to run rollouts: it is the rule of Eclipse
 * hawkBit's default thresholds, kept for the side-by-side comparison of the
 * fleet simulation (bench/RESULTS.md).
 */
import { RevpatchError } from '../engine/errors';
import type { OutcomeCounts } from '../report/format';
import type { DecisionAction, DecisionInputs, PlanRecord, RolloutPlan } from './types';

/** One-sided 99.5% confidence for the halt rule. */
export const HALT_Z = 2.576;
/** Failures a stage needs before it can halt. */
export const HALT_MIN_FAILURES = 3;

export const DEFAULT_STAGES: readonly number[] = [1, 5, 25, 100];
export const DEFAULT_SOAK_SECONDS = 7200;
export const DEFAULT_MIN_REPORTS = 400;
export const DEFAULT_MAX_FAILURE_PCT = 2;

/** The options of `revpatch fleet plan` when none are given. */
export const DEFAULT_PLAN: Readonly<Omit<RolloutPlan, 'patch' | 'version'>> = {
  stages: [...DEFAULT_STAGES],
  soakSeconds: DEFAULT_SOAK_SECONDS,
  minReports: DEFAULT_MIN_REPORTS,
  maxFailurePct: DEFAULT_MAX_FAILURE_PCT,
  autoRecall: false,
};

/** Bounds of a plan, checked at the edge (validatePlan). */
export const MAX_STAGES = 20;
export const MAX_SOAK_SECONDS = 30 * 86400;
export const MAX_MIN_REPORTS = 10_000_000;

/** The Wilson score interval of a proportion `failures / n` (0..1); [0, 1] when n is 0. */
export function wilsonInterval(failures: number, n: number, z: number): { lower: number; upper: number } {
  if (!Number.isFinite(failures) || !Number.isFinite(n) || failures < 0 || n < 0 || failures > n) {
    throw new RevpatchError('E_INVALID_ARGUMENT', `wilsonInterval: ${failures} of ${n} is not a proportion`);
  }
  if (!Number.isFinite(z) || z <= 0) throw new RevpatchError('E_INVALID_ARGUMENT', `wilsonInterval: z ${z} must be positive`);
  if (n === 0) return { lower: 0, upper: 1 };
  const p = failures / n;
  const z2 = z * z;
  const denominator = 1 + z2 / n;
  const centre = (p + z2 / (2 * n)) / denominator;
  const half = (z * Math.sqrt((p * (1 - p)) / n + z2 / (4 * n * n))) / denominator;
  return { lower: Math.max(0, centre - half), upper: Math.min(1, centre + half) };
}

/**
 * The most devices a rollout of `rolloutPct` % of `enrolled` devices can
 * plausibly reach: the expected count, three standard deviations of the
 * binomial bucket draw, and 10 devices of slack.
 */
export function exposureBound(enrolled: number, rolloutPct: number): number {
  const r = Math.min(Math.max(rolloutPct / 100, 0), 1);
  const mean = enrolled * r;
  return Math.ceil(mean + 3 * Math.sqrt(mean * (1 - r)) + 10);
}

const isId = (s: unknown) => typeof s === 'string' && /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(s);

/** Checks a plan the operator gives; E_INVALID_ARGUMENT naming the first bad field. */
export function validatePlan(plan: RolloutPlan): void {
  const bad = (why: string): never => {
    throw new RevpatchError('E_INVALID_ARGUMENT', why);
  };
  if (!isId(plan.patch)) bad(`patch id ${JSON.stringify(plan.patch)} is not a patch id`);
  if (!Number.isSafeInteger(plan.version) || plan.version < 1) bad(`version ${String(plan.version)} is not a positive integer`);
  if (!Array.isArray(plan.stages) || plan.stages.length === 0 || plan.stages.length > MAX_STAGES) {
    bad(`stages must list 1 to ${MAX_STAGES} rollout percentages`);
  }
  let previous = 0;
  for (const s of plan.stages) {
    if (typeof s !== 'number' || !Number.isFinite(s) || s <= 0 || s > 100) bad(`stage ${String(s)} is not a percentage in (0, 100]`);
    if (Math.abs(Math.round(s * 100) - s * 100) > 1e-6) bad(`stage ${s} has more than two decimals (rollout steps are 0.01%)`);
    if (s <= previous) bad(`stages must increase strictly: ${plan.stages.join(', ')}`);
    previous = s;
  }
  if (!Number.isSafeInteger(plan.soakSeconds) || plan.soakSeconds < 0 || plan.soakSeconds > MAX_SOAK_SECONDS) {
    bad(`soak ${String(plan.soakSeconds)} is not a number of seconds from 0 to ${MAX_SOAK_SECONDS}`);
  }
  if (!Number.isSafeInteger(plan.minReports) || plan.minReports < 1 || plan.minReports > MAX_MIN_REPORTS) {
    bad(`min-reports ${String(plan.minReports)} is not a whole number from 1 to ${MAX_MIN_REPORTS}`);
  }
  if (typeof plan.maxFailurePct !== 'number' || !Number.isFinite(plan.maxFailurePct) || plan.maxFailurePct < 0 || plan.maxFailurePct >= 100) {
    bad(`max-failure ${String(plan.maxFailurePct)} is not a percentage from 0 to below 100`);
  }
  if (typeof plan.autoRecall !== 'boolean') bad('autoRecall must be true or false');
}

/** What decideRollout and hawkbitDecision are given. */
export interface RolloutInput {
  plan: PlanRecord;
  /** Every device's outcome for the plan's patch version. */
  counts: OutcomeCounts;
  /** Outcomes received since the current stage began (plan.stageStartedAt). */
  stageCounts: OutcomeCounts;
  /** Server clock, ms since the epoch. */
  now: number;
  /** Devices enrolled (sum over device tokens), or null if unknown. */
  enrolledDevices: number | null;
}

/** The plan fields a decision changes. */
export type PlanChange = Pick<PlanRecord, 'state' | 'stage' | 'rollout' | 'halted' | 'stageStartedAt'>;

export interface RolloutDecision {
  action: DecisionAction;
  /** Stable kebab-case reason. */
  code: string;
  reason: string;
  /** The plan as it stands after the decision (equal to the current one for 'hold'). */
  next: PlanChange;
  inputs: DecisionInputs;
}

const pct = (x: number) => `${(x * 100).toFixed(2)}%`;

function checkInput(input: RolloutInput): void {
  const counts = [input.counts, input.stageCounts];
  for (const c of counts) {
    for (const [k, v] of Object.entries(c)) {
      if (!Number.isSafeInteger(v) || v < 0) throw new RevpatchError('E_INVALID_ARGUMENT', `count ${k} ${String(v)} is not a device count`);
    }
  }
  if (!Number.isFinite(input.now)) throw new RevpatchError('E_INVALID_ARGUMENT', `now ${String(input.now)} is not a time`);
  const e = input.enrolledDevices;
  if (e !== null && (!Number.isSafeInteger(e) || e < 0)) {
    throw new RevpatchError('E_INVALID_ARGUMENT', `enrolled devices ${String(e)} is not a device count`);
  }
}

function current(plan: PlanRecord): PlanChange {
  return { state: plan.state, stage: plan.stage, rollout: plan.rollout, halted: plan.halted, stageStartedAt: plan.stageStartedAt };
}

function soakedSeconds(plan: PlanRecord, now: number): number {
  return plan.stageStartedAt === null ? 0 : Math.max(0, Math.floor((now - plan.stageStartedAt) / 1000));
}

/** For states the rule does not move ('halted', 'complete', 'recalled'): a hold naming the state. */
function settled(plan: PlanRecord, inputs: DecisionInputs): RolloutDecision {
  return { action: 'hold', code: `plan-${plan.state}`, reason: `the rollout is ${plan.state}: the controller leaves it alone`, next: current(plan), inputs };
}

function start(plan: PlanRecord, now: number, inputs: DecisionInputs): RolloutDecision {
  return {
    action: 'start',
    code: 'plan-started',
    reason: `rollout starts at stage 1 of ${plan.stages.length}: ${plan.stages[0]}%`,
    next: { state: 'rolling', stage: 0, rollout: plan.stages[0], halted: false, stageStartedAt: now },
    inputs,
  };
}

/** The controller's rule (see the header). */
export function decideRollout(input: RolloutInput): RolloutDecision {
  checkInput(input);
  const { plan, counts, stageCounts, now, enrolledDevices } = input;
  // Exposure bound: confirmations beyond what the rollout could produce are not counted.
  const bound = enrolledDevices === null ? Infinity : exposureBound(enrolledDevices, plan.rollout);
  const confirmed = Math.min(stageCounts.confirmed, bound);
  const failed = stageCounts.failed;
  const verdicts = confirmed + failed;
  const rate = verdicts === 0 ? 0 : failed / verdicts;
  const wilson = wilsonInterval(failed, verdicts, HALT_Z);
  const soaked = soakedSeconds(plan, now);
  const inputs: DecisionInputs = {
    counts: { ...counts },
    stageCounts: { ...stageCounts },
    failureRate: rate,
    wilsonLower: wilson.lower,
    wilsonUpper: wilson.upper,
    soakedSeconds: soaked,
    enrolledDevices,
  };
  if (plan.state === 'planned') return start(plan, now, inputs);
  if (plan.state !== 'rolling') return settled(plan, inputs);

  const max = plan.maxFailurePct / 100;
  const capped = confirmed < stageCounts.confirmed ? ` (confirmations capped at ${bound} of ${stageCounts.confirmed} reported: exposure bound)` : '';
  const numbers = `${failed} failed of ${verdicts} verdicts in stage ${plan.stage + 1}${capped}: ${pct(rate)}, 99.5% lower bound ${pct(wilson.lower)}`;
  if (failed >= HALT_MIN_FAILURES && wilson.lower > max) {
    const recall = plan.autoRecall;
    return {
      action: recall ? 'recall' : 'halt',
      code: 'failure-rate-above-threshold',
      reason: `${numbers} > ${plan.maxFailurePct}%: halted${recall ? ' and recalled (auto-recall)' : ''}`,
      next: { ...current(plan), state: recall ? 'recalled' : 'halted', halted: true },
      inputs,
    };
  }
  const hold = (code: string, reason: string): RolloutDecision => ({ action: 'hold', code, reason, next: current(plan), inputs });
  if (soaked < plan.soakSeconds) return hold('soaking', `stage ${plan.stage + 1} has soaked ${soaked} of ${plan.soakSeconds} s`);
  if (verdicts < plan.minReports) {
    const reach = bound < plan.minReports ? ` (the ${plan.rollout}% rollout reaches at most ${bound} devices: raise the stage or lower min-reports)` : '';
    return hold('awaiting-reports', `stage ${plan.stage + 1} has ${verdicts} of the ${plan.minReports} verdicts it needs${reach}`);
  }
  if (rate > max) {
    return hold('failure-rate-uncertain', `${numbers}: above ${plan.maxFailurePct}% but not with confidence; holding`);
  }
  const last = plan.stage >= plan.stages.length - 1;
  if (last) {
    return {
      action: 'complete',
      code: 'stages-complete',
      reason: `${numbers} ≤ ${plan.maxFailurePct}% after ${soaked} s: the rollout is complete at ${plan.rollout}%`,
      next: { ...current(plan), state: 'complete' },
      inputs,
    };
  }
  const to = plan.stages[plan.stage + 1];
  return {
    action: 'advance',
    code: 'stage-passed',
    reason: `${numbers} ≤ ${plan.maxFailurePct}% after ${soaked} s: advancing to ${to}%`,
    next: { state: 'rolling', stage: plan.stage + 1, rollout: to, halted: false, stageStartedAt: now },
    inputs,
  };
}

/** Eclipse hawkBit's default group thresholds (comparison only). */
export const HAWKBIT_SUCCESS_THRESHOLD = 0.5;
export const HAWKBIT_ERROR_THRESHOLD = 0.5;

/**
 * For comparison only, never used to run a rollout: the rule of Eclipse
 * hawkBit's default rollout thresholds. Each stage's new devices form a
 * group (enrolled × the stage's increment); the next group starts when 50%
 * of the group report success, and success there is counted when the
 * install finishes — our `staged` — so a device that rolls back after the
 * restart still counted; the rollout pauses (our halt) when 50% report an
 * install error — our `refused`. Rollbacks are invisible to it.
 */
export function hawkbitDecision(input: RolloutInput): RolloutDecision {
  checkInput(input);
  const { plan, counts, stageCounts, now, enrolledDevices } = input;
  const soaked = soakedSeconds(plan, now);
  const previous = plan.stage > 0 ? plan.stages[plan.stage - 1] : 0;
  const group =
    enrolledDevices === null || plan.stage < 0 ? 0 : Math.max(1, Math.round((enrolledDevices * (plan.stages[plan.stage] - previous)) / 100));
  const errors = stageCounts.refused;
  const successes = stageCounts.staged;
  const errorRate = group === 0 ? 0 : errors / group;
  const wilson = wilsonInterval(Math.min(errors, errors + successes), errors + successes, HALT_Z);
  const inputs: DecisionInputs = {
    counts: { ...counts },
    stageCounts: { ...stageCounts },
    failureRate: Math.min(1, errorRate),
    wilsonLower: wilson.lower,
    wilsonUpper: wilson.upper,
    soakedSeconds: soaked,
    enrolledDevices,
  };
  if (plan.state === 'planned') return start(plan, now, inputs);
  if (plan.state !== 'rolling') return settled(plan, inputs);
  const hold = (code: string, reason: string): RolloutDecision => ({ action: 'hold', code, reason, next: current(plan), inputs });
  if (enrolledDevices === null) return hold('enrolled-unknown', 'hawkBit rule: the group size needs the number of enrolled devices');
  if (errors >= HAWKBIT_ERROR_THRESHOLD * group) {
    return {
      action: 'halt',
      code: 'hawkbit-error-threshold',
      reason: `hawkBit rule: ${errors} install errors in a group of ${group} (≥ 50%): paused`,
      next: { ...current(plan), state: 'halted', halted: true },
      inputs,
    };
  }
  if (successes < HAWKBIT_SUCCESS_THRESHOLD * group) {
    return hold('hawkbit-awaiting-group', `hawkBit rule: ${successes} of a group of ${group} installed (< 50%)`);
  }
  if (plan.stage >= plan.stages.length - 1) {
    return {
      action: 'complete',
      code: 'hawkbit-success-threshold',
      reason: `hawkBit rule: ${successes} of the last group of ${group} installed (≥ 50%): complete`,
      next: { ...current(plan), state: 'complete' },
      inputs,
    };
  }
  const to = plan.stages[plan.stage + 1];
  return {
    action: 'advance',
    code: 'hawkbit-success-threshold',
    reason: `hawkBit rule: ${successes} of a group of ${group} installed (≥ 50%): next group, ${to}%`,
    next: { state: 'rolling', stage: plan.stage + 1, rollout: to, halted: false, stageStartedAt: now },
    inputs,
  };
}
