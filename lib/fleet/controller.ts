/**
 * The rollout controller (DESIGN.md, "Fleet"; docs/fleet.md): the loop that
 * acts on the rule of lib/fleet/decision.ts. Each tick, the one controller
 * that leads (FleetStore.tryLead: a PostgreSQL advisory lock, or a lease row
 * in SQLite) reads each rolling plan's outcome counts, asks the rule, and
 * carries out what it decided:
 *
 *   1. record the decision with its numbers and the plan it leads to, in one
 *      compare-and-set on the plan's revision (FleetStore.decide) — a null
 *      answer means another process decided first, and this one does nothing;
 *   2. publish it: the repository's signed rollout, halted and recalled
 *      flags of that patch version (Repository.update, under the repository
 *      lock, re-signing targets, snapshot and timestamp);
 *   3. mark it applied.
 *
 * A decision is recorded before it is published (DESIGN.md invariant 10), so
 * a controller that dies between 1 and 3 leaves a decision unapplied, and
 * whoever leads next publishes it before deciding anything new: no decision
 * is lost, and none is made twice (the plan it recorded is the one the next
 * leader decides from).
 *
 * What is published is always the plan as it stands when the repository
 * lock is held, not the decision in hand: two publishers that race (the
 * leader and an operator's `fleet halt`) each write the newest plan, so the
 * repository ends with the newest decision whatever order they run in. A
 * publish that changes nothing writes nothing.
 *
 * Holds are recorded only when their reason code changes (soaking, then
 * awaiting reports, ...), so the decision log shows why a rollout waits
 * without a row per tick.
 *
 * Operator actions (plan, halt, resume, recall, advance) do not need
 * leadership: they make the same compare-and-set and publish the same way,
 * with `by: 'operator'`. `plan()` records the start and publishes the first
 * stage itself, so a patch published at 100% (the `repo publish` default) is
 * narrowed to the first stage at once rather than at the next tick; a plan a
 * crash left `planned` is started by the next tick. A failed publish does not
 * undo the recorded decision: the action returns it with `published: false`
 * and the error, and the leader publishes it at its next tick.
 */
import * as crypto from 'node:crypto';
import * as os from 'node:os';
import { RevpatchError, toRevpatchError } from '../engine/errors';
import { Repository } from '../repo/publisher';
import type { PatchUpdate, RepoPatch } from '../repo/types';
import { ZERO_COUNTS, type OutcomeCounts } from '../report/format';
import { DEFAULT_PLAN, decideRollout, hawkbitDecision, validatePlan, type RolloutDecision, type RolloutInput } from './decision';
import type { DecisionAction, DecisionRecord, FleetStore, PlanRecord, RolloutPlan } from './types';

/** A pino logger fits; only these calls are made. */
export interface ControllerLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface ControllerOptions {
  store: FleetStore;
  /** The repository directory the controller re-signs (`--repo DIR`). */
  repoDir: string;
  /** Server clock, ms since the epoch (default Date.now); the repository's expiry uses it too. */
  clock?: () => number;
  /** Who leads (default host:pid:random); two controllers must differ. */
  owner?: string;
  /** Leadership lease (default 30 s); tick more often than this. */
  leaseMs?: number;
  /** 'revpatch' (default) or 'hawkbit' (hawkBit's default thresholds, for comparison only). */
  rule?: 'revpatch' | 'hawkbit';
  logger?: ControllerLogger;
  /** How long a publish waits for another repository change (default 10 s), then E_BUSY. */
  lockWaitMs?: number;
}

/** The fields of `revpatch fleet plan`; the rest come from DEFAULT_PLAN. */
export interface PlanOptions {
  /** The patch version (default: the newest published). */
  version?: number;
  stages?: number[];
  soakSeconds?: number;
  minReports?: number;
  maxFailurePct?: number;
  autoRecall?: boolean;
}

/** What an operator action did. */
export interface ActionResult {
  plan: PlanRecord;
  decision: DecisionRecord;
  /** Whether the repository carries the decision now (else the leader publishes it at its next tick). */
  published: boolean;
  error: { code: string; message: string } | null;
}

export interface TickResult {
  /** Whether this controller led the tick (else it did nothing). */
  leading: boolean;
  /** Decisions recorded by this tick (holds included); `appliedAt` null for one whose publish failed (see errors). */
  decisions: DecisionRecord[];
  /** Unapplied decisions, left by an earlier publish that failed, that this tick published. */
  republished: DecisionRecord[];
  errors: Array<{ patch: string; version: number; code: string; message: string }>;
}

export interface PatchStatus {
  plan: PlanRecord;
  counts: OutcomeCounts;
  stageCounts: OutcomeCounts;
  /** failed / (confirmed + failed) over every device of the version, 0 when none. */
  failureRate: number;
  /** The rule's view of the current stage: its rate, Wilson interval (capped counts) and what it would decide now. */
  stage: { failureRate: number; wilsonLower: number; wilsonUpper: number; soakedSeconds: number };
  next: { action: DecisionAction; code: string; reason: string };
  enrolledDevices: number | null;
  decisions: DecisionRecord[];
}

type Rule = (input: RolloutInput) => RolloutDecision;

/** The operator's actions besides plan. */
export const OPERATOR_ACTIONS = ['halt', 'resume', 'recall', 'advance'] as const;
export type OperatorAction = (typeof OPERATOR_ACTIONS)[number];

/** Attempts of an operator action whose compare-and-set lost to a concurrent decision. */
const CAS_ATTEMPTS = 8;

const silent: ControllerLogger = { info: () => undefined, warn: () => undefined, error: () => undefined };

export class RolloutController {
  readonly owner: string;
  private readonly store: FleetStore;
  private readonly repoDir: string;
  private readonly clock: () => number;
  private readonly leaseMs: number;
  private readonly rule: Rule;
  private readonly log: ControllerLogger;
  private readonly lockWaitMs: number;
  private timer: NodeJS.Timeout | null = null;
  private running = false;
  private inFlight: Promise<TickResult> | null = null;

  constructor(options: ControllerOptions) {
    if (!options || !options.store || typeof options.repoDir !== 'string' || options.repoDir === '') {
      throw new RevpatchError('E_INVALID_ARGUMENT', 'a controller needs a store and a repository directory');
    }
    const rule = options.rule ?? 'revpatch';
    if (rule !== 'revpatch' && rule !== 'hawkbit') throw new RevpatchError('E_INVALID_ARGUMENT', `unknown rule ${String(rule)}`);
    const leaseMs = options.leaseMs ?? 30_000;
    if (!Number.isFinite(leaseMs) || leaseMs <= 0) throw new RevpatchError('E_INVALID_ARGUMENT', `lease ${leaseMs} ms must be positive`);
    this.store = options.store;
    this.repoDir = options.repoDir;
    this.clock = options.clock ?? Date.now;
    this.owner = options.owner ?? `${os.hostname()}:${process.pid}:${crypto.randomBytes(4).toString('hex')}`;
    this.leaseMs = leaseMs;
    this.rule = rule === 'hawkbit' ? hawkbitDecision : decideRollout;
    this.log = options.logger ?? silent;
    this.lockWaitMs = options.lockWaitMs ?? 10_000;
  }

  // ------------------------------------------------------------------ loop

  /** One round; concurrent calls share the round in flight. */
  tick(): Promise<TickResult> {
    if (!this.inFlight) {
      this.inFlight = this.round().finally(() => {
        this.inFlight = null;
      });
    }
    return this.inFlight;
  }

  /** Ticks now and then every `intervalMs` (the next round is timed from the end of the last). */
  start(intervalMs: number): void {
    if (!Number.isFinite(intervalMs) || intervalMs <= 0) {
      throw new RevpatchError('E_INVALID_ARGUMENT', `tick interval ${intervalMs} ms must be positive`);
    }
    if (this.running) throw new RevpatchError('E_STATE', 'the controller is already running');
    this.running = true;
    const loop = () => {
      this.tick()
        .catch((err) => {
          const e = toRevpatchError(err);
          this.log.error({ code: e.code }, `controller tick failed: ${e.message}`);
        })
        .finally(() => {
          if (this.running) this.timer = setTimeout(loop, intervalMs);
        });
    };
    loop();
  }

  /** Stops the timer, waits for the round in flight, and gives up leadership so another controller takes over at once. */
  async stop(): Promise<void> {
    this.running = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.inFlight) await this.inFlight.catch(() => undefined);
    await this.store.resign(this.owner);
  }

  private async round(): Promise<TickResult> {
    const result: TickResult = { leading: false, decisions: [], republished: [], errors: [] };
    if (!(await this.store.tryLead(this.owner, this.leaseMs, this.clock()))) return result;
    result.leading = true;
    const fail = (patch: string, version: number, err: unknown) => {
      const e = toRevpatchError(err);
      result.errors.push({ patch, version, code: e.code, message: e.message });
      this.log.error({ patch, version, code: e.code }, `rollout of ${patch} v${version}: ${e.message}`);
    };

    // A leader that died between recording and publishing: finish its work first.
    const unapplied = await this.store.unappliedDecisions();
    for (const key of new Set(unapplied.map((d) => `${d.version}:${d.patch}`))) {
      const [v, ...rest] = key.split(':');
      const patch = rest.join(':');
      const version = Number(v);
      try {
        const applied = await this.publish(patch, version);
        result.republished.push(...applied);
        if (applied.length > 0) this.log.info({ patch, version, seqs: applied.map((d) => d.seq) }, 'published decisions left unapplied');
      } catch (err) {
        fail(patch, version, err);
      }
    }

    const enrolled = await this.enrolled();
    let published: RepoPatch[] = [];
    try {
      published = (await Repository.open(this.repoDir)).patches();
    } catch (err) {
      fail('*', 0, err);
      return result;
    }
    for (const plan of await this.store.listPlans()) {
      if (plan.state !== 'planned' && plan.state !== 'rolling') continue;
      try {
        await this.decideOne(plan, enrolled, published, result);
      } catch (err) {
        fail(plan.patch, plan.version, err);
      }
    }
    return result;
  }

  /**
   * The rule for one plan, recorded (into `result.decisions`) and
   * published; a failed publish throws after the decision is recorded.
   */
  private async decideOne(plan: PlanRecord, enrolled: number | null, published: RepoPatch[], result: TickResult): Promise<void> {
    const now = this.clock();
    const repoPatch = published.find((p) => p.id === plan.patch && p.version === plan.version);
    if (!repoPatch) throw new RevpatchError('E_UNKNOWN_PATCH', `${plan.patch} version ${plan.version} is not in the repository`);
    let d: RolloutDecision;
    if (repoPatch.recalled) {
      // Recalled by hand (`repo recall`): the plan follows, nothing else can change.
      const base = this.rule(await this.ruleInput(plan, enrolled, now));
      d = {
        ...base,
        action: 'recall',
        code: 'recalled-in-repository',
        reason: `${plan.patch} v${plan.version} was recalled in the repository`,
        next: { ...base.next, state: 'recalled', halted: true, stage: plan.stage, rollout: plan.rollout, stageStartedAt: plan.stageStartedAt },
      };
    } else {
      d = this.rule(await this.ruleInput(plan, enrolled, now));
    }
    if (d.action === 'hold') {
      const last = (await this.store.decisions(plan.patch, plan.version)).at(-1);
      if (last && last.action === 'hold' && last.code === d.code) return;
    }
    const recorded = await this.record(plan, d, 'controller', now);
    if (!recorded) return;
    this.log.info({ patch: plan.patch, version: plan.version, action: d.action, code: d.code }, d.reason);
    if (d.action === 'hold') {
      result.decisions.push(recorded.decision);
      return;
    }
    try {
      await this.publish(plan.patch, plan.version);
    } catch (err) {
      // Recorded: the next tick (of whoever leads) publishes it.
      result.decisions.push(recorded.decision);
      throw err;
    }
    result.decisions.push(await this.current(recorded.decision));
  }

  // -------------------------------------------------------------- publish

  /**
   * Makes the repository carry the plan of `patch` `version` as it stands
   * under the repository lock, then marks applied every decision that plan
   * includes. Returns those decisions.
   */
  private async publish(patch: string, version: number): Promise<DecisionRecord[]> {
    const repo = await Repository.open(this.repoDir, { now: () => new Date(this.clock()), lockWaitMs: this.lockWaitMs });
    let covered: DecisionRecord[] = [];
    await repo.update(patch, version, async (current): Promise<PatchUpdate> => {
      // Decisions first, then the plan: the plan read is at least as new as every decision listed.
      covered = (await this.store.unappliedDecisions()).filter((d) => d.patch === patch && d.version === version);
      const plan = await this.store.getPlan(patch, version);
      if (!plan) throw new RevpatchError('E_UNKNOWN_PATCH', `${patch} version ${version} has no rollout plan`);
      if (plan.state === 'recalled') return current.recalled ? {} : { recalled: true, halted: true };
      return { rollout: plan.rollout, halted: plan.halted };
    });
    const at = this.clock();
    for (const d of covered) await this.store.markApplied(d.seq, at);
    return covered.map((d) => ({ ...d, appliedAt: d.appliedAt ?? at }));
  }

  // --------------------------------------------------------------- record

  /** The compare-and-set of one decision; null if another process decided first. */
  private async record(
    plan: PlanRecord,
    d: RolloutDecision,
    by: 'controller' | 'operator',
    now: number,
  ): Promise<{ plan: PlanRecord; decision: DecisionRecord } | null> {
    const next: PlanRecord = { ...plan, ...d.next, revision: plan.revision + 1, updatedAt: now };
    const decision = await this.store.decide(plan.revision, next, {
      patch: plan.patch,
      version: plan.version,
      at: now,
      action: d.action,
      code: d.code,
      reason: d.reason,
      by,
      fromRollout: plan.rollout,
      toRollout: next.rollout,
      stage: next.stage,
      inputs: d.inputs,
      // A hold changes nothing the repository carries.
      appliedAt: d.action === 'hold' ? now : null,
    });
    return decision ? { plan: next, decision } : null;
  }

  private async enrolled(): Promise<number | null> {
    const n = await this.store.enrolledDevices();
    // No token states a device count: the exposure bound is unknown, not zero.
    return n > 0 ? n : null;
  }

  private async ruleInput(plan: PlanRecord, enrolled: number | null, now: number): Promise<RolloutInput> {
    const counts = await this.store.counts(plan.patch, plan.version);
    const stageCounts = plan.stageStartedAt === null ? { ...ZERO_COUNTS } : await this.store.counts(plan.patch, plan.version, plan.stageStartedAt);
    return { plan, counts, stageCounts, now, enrolledDevices: enrolled };
  }

  // ------------------------------------------------------------ operators

  /**
   * Gives a published patch a rollout plan and starts it: records the plan
   * and its start, then publishes the first stage. E_UNKNOWN_PATCH if the
   * patch (or the given version) is not published, E_STATE if it was
   * recalled, E_INVALID_ARGUMENT for a bad option, E_EXISTS if the version
   * already has a plan that is neither complete nor recalled — in every
   * such case nothing is stored or published.
   */
  async plan(patch: string, options: PlanOptions = {}): Promise<ActionResult> {
    if (typeof options !== 'object' || options === null) throw new RevpatchError('E_INVALID_ARGUMENT', 'plan options must be an object');
    if (typeof patch !== 'string' || patch === '') throw new RevpatchError('E_INVALID_ARGUMENT', 'a patch id is required');
    if (options.version !== undefined && (!Number.isSafeInteger(options.version) || options.version < 1)) {
      throw new RevpatchError('E_INVALID_ARGUMENT', `version ${String(options.version)} is not a positive integer`);
    }
    const versions = (await Repository.open(this.repoDir)).patches().filter((p) => p.id === patch);
    if (versions.length === 0) throw new RevpatchError('E_UNKNOWN_PATCH', `the repository has no patch ${patch}`);
    const target =
      options.version === undefined
        ? versions.reduce((a, b) => (b.version > a.version ? b : a))
        : versions.find((p) => p.version === options.version);
    if (!target) throw new RevpatchError('E_UNKNOWN_PATCH', `the repository has no version ${options.version} of ${patch}`);
    if (target.recalled) throw new RevpatchError('E_STATE', `${patch} v${target.version} was recalled; publish a new version`);
    const rollout: RolloutPlan = {
      patch,
      version: target.version,
      stages: options.stages ?? [...DEFAULT_PLAN.stages],
      soakSeconds: options.soakSeconds ?? DEFAULT_PLAN.soakSeconds,
      minReports: options.minReports ?? DEFAULT_PLAN.minReports,
      maxFailurePct: options.maxFailurePct ?? DEFAULT_PLAN.maxFailurePct,
      autoRecall: options.autoRecall ?? DEFAULT_PLAN.autoRecall,
    };
    validatePlan(rollout);
    const now = this.clock();
    await this.store.createPlan({
      ...rollout,
      state: 'planned',
      stage: -1,
      rollout: target.rollout,
      stageStartedAt: null,
      halted: target.halted,
      revision: 0,
      createdAt: now,
      updatedAt: now,
    });
    for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
      const planned = await this.store.getPlan(patch, target.version);
      if (!planned) throw new RevpatchError('E_UNKNOWN_PATCH', `the plan of ${patch} v${target.version} vanished`);
      if (planned.state !== 'planned') {
        // A leader's tick started it first: report that decision.
        const started = (await this.store.decisions(patch, target.version)).filter((d) => d.action === 'start').at(-1);
        if (started) return this.publishResult(planned, started);
        throw new RevpatchError('E_STATE', `${patch} v${target.version} is ${planned.state}`);
      }
      const d = decideRollout(await this.ruleInput(planned, await this.enrolled(), this.clock()));
      const recorded = await this.record(planned, d, 'operator', this.clock());
      if (recorded) return this.publishResult(recorded.plan, recorded.decision);
    }
    throw new RevpatchError('E_BUSY', `${patch}: other decisions kept changing the plan; try again`);
  }

  /** Halts the rollout (the newest plan of `patch`, or `version`): devices that do not hold the patch no longer take it. */
  halt(patch: string, version?: number): Promise<ActionResult> {
    return this.act('halt', patch, version);
  }

  /** Lifts a halt: the rollout continues at its stage, which starts over (soak and verdicts counted from now). */
  resume(patch: string, version?: number): Promise<ActionResult> {
    return this.act('resume', patch, version);
  }

  /** Recalls the patch version: every device removes it at its next restart. Final. */
  recall(patch: string, version?: number): Promise<ActionResult> {
    return this.act('recall', patch, version);
  }

  /** Moves to the next stage now, whatever the rule says; at the last stage, completes the rollout. */
  advance(patch: string, version?: number): Promise<ActionResult> {
    return this.act('advance', patch, version);
  }

  private async act(action: OperatorAction, patch: string, version?: number): Promise<ActionResult> {
    if (typeof patch !== 'string' || patch === '') throw new RevpatchError('E_INVALID_ARGUMENT', 'a patch id is required');
    if (version !== undefined && (!Number.isSafeInteger(version) || version < 1)) {
      throw new RevpatchError('E_INVALID_ARGUMENT', `version ${String(version)} is not a positive integer`);
    }
    for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
      const plan = version === undefined ? await this.store.latestPlan(patch) : await this.store.getPlan(patch, version);
      if (!plan) {
        throw new RevpatchError('E_UNKNOWN_PATCH', `${patch}${version === undefined ? '' : ` v${version}`} has no rollout plan (revpatch fleet plan)`);
      }
      const now = this.clock();
      const base = this.rule(await this.ruleInput(plan, await this.enrolled(), now));
      const d = operatorDecision(action, plan, now, base);
      const recorded = await this.record(plan, d, 'operator', now);
      if (recorded) {
        this.log.info({ patch: plan.patch, version: plan.version, action: d.action, by: 'operator' }, d.reason);
        return this.publishResult(recorded.plan, recorded.decision);
      }
    }
    throw new RevpatchError('E_BUSY', `${patch}: other decisions kept changing the plan; try again`);
  }

  private async publishResult(plan: PlanRecord, decision: DecisionRecord): Promise<ActionResult> {
    try {
      const applied = await this.publish(plan.patch, plan.version);
      const mine = applied.find((d) => d.seq === decision.seq);
      return { plan, decision: mine ?? (await this.current(decision)), published: true, error: null };
    } catch (err) {
      const e = toRevpatchError(err);
      this.log.warn({ patch: plan.patch, version: plan.version, code: e.code, seq: decision.seq }, `decision recorded, publish failed: ${e.message}`);
      return { plan, decision, published: false, error: { code: e.code, message: e.message } };
    }
  }

  private async current(decision: DecisionRecord): Promise<DecisionRecord> {
    return (await this.store.decisions(decision.patch, decision.version)).find((d) => d.seq === decision.seq) ?? decision;
  }

  // --------------------------------------------------------------- status

  /** Every plan (or those of `patch`), with its counts, the rule's view now, and its decisions. */
  async status(patch?: string): Promise<PatchStatus[]> {
    const enrolled = await this.enrolled();
    const now = this.clock();
    const out: PatchStatus[] = [];
    for (const plan of await this.store.listPlans()) {
      if (patch !== undefined && plan.patch !== patch) continue;
      const input = await this.ruleInput(plan, enrolled, now);
      const view = this.rule(input);
      const verdicts = input.counts.confirmed + input.counts.failed;
      out.push({
        plan,
        counts: input.counts,
        stageCounts: input.stageCounts,
        failureRate: verdicts === 0 ? 0 : input.counts.failed / verdicts,
        stage: {
          failureRate: view.inputs.failureRate,
          wilsonLower: view.inputs.wilsonLower,
          wilsonUpper: view.inputs.wilsonUpper,
          soakedSeconds: view.inputs.soakedSeconds,
        },
        next: { action: view.action, code: view.code, reason: view.reason },
        enrolledDevices: enrolled,
        decisions: await this.store.decisions(plan.patch, plan.version),
      });
    }
    return out;
  }
}

/**
 * What an operator's action does to a plan, as a decision; E_STATE (nothing
 * recorded) when the plan's state does not allow it. `base` is the rule's
 * view now, whose numbers are stored with the decision.
 */
function operatorDecision(action: OperatorAction, plan: PlanRecord, now: number, base: RolloutDecision): RolloutDecision {
  const name = `${plan.patch} v${plan.version}`;
  const refuse = (why: string): never => {
    throw new RevpatchError('E_STATE', `${name} is ${plan.state}: ${why}`);
  };
  const keep = { state: plan.state, stage: plan.stage, rollout: plan.rollout, halted: plan.halted, stageStartedAt: plan.stageStartedAt };
  const make = (a: DecisionAction, code: string, reason: string, next: RolloutDecision['next']): RolloutDecision => ({
    action: a,
    code,
    reason,
    next,
    inputs: base.inputs,
  });
  switch (action) {
    case 'halt':
      if (plan.state !== 'rolling' && plan.state !== 'planned') refuse('only a planned or rolling rollout can be halted');
      return make('halt', 'operator-halt', `halted by the operator at ${plan.rollout}%`, { ...keep, state: 'halted', halted: true });
    case 'resume': {
      if (plan.state !== 'halted') refuse('only a halted rollout can be resumed');
      const stage = Math.max(plan.stage, 0);
      const rollout = plan.stage < 0 ? plan.stages[0] : plan.rollout;
      return make('resume', 'operator-resume', `resumed by the operator at ${rollout}%: stage ${stage + 1} starts over`, {
        state: 'rolling',
        stage,
        rollout,
        halted: false,
        stageStartedAt: now,
      });
    }
    case 'recall':
      if (plan.state === 'recalled') refuse('it is already recalled');
      return make('recall', 'operator-recall', `recalled by the operator: devices remove it at their next restart`, {
        ...keep,
        state: 'recalled',
        halted: true,
      });
    case 'advance': {
      if (plan.state !== 'rolling' && plan.state !== 'planned') refuse('only a planned or rolling rollout can advance (resume a halted one first)');
      const stage = plan.stage + 1;
      if (stage >= plan.stages.length) {
        return make('complete', 'operator-complete', `completed by the operator at ${plan.rollout}%`, { ...keep, state: 'complete' });
      }
      const rollout = plan.stages[stage];
      return make(stage === 0 ? 'start' : 'advance', 'operator-advance', `advanced by the operator to ${rollout}%`, {
        state: 'rolling',
        stage,
        rollout,
        halted: false,
        stageStartedAt: now,
      });
    }
  }
}
