/**
 * The simulated devices of `revpatch fleet simulate` (lib/bench/simulate.ts):
 * what each of up to millions of devices does with one patch, on a
 * simulated clock, driven by an event queue (lib/bench/event_queue.ts).
 *
 * A device checks the repository every `checkIntervalSeconds` ± jitter and
 * decides with the agent's own policy code (lib/agent/policy.ts), in the
 * agent's order: recall first (`recallDecision`), then whether the patch
 * fits (`compatibilityDecision`), the signed halt flag (`haltDecision`) and
 * the rollout bucket (`rolloutDecision`). A patch it takes is staged at once (reported
 * `staged`); the restart that boots it comes minutes to hours later
 * (`trial`), then the health check: `confirmed`, or — if the patch breaks
 * this device, or the device fails for unrelated reasons (the background
 * noise) — `rolled-back` after its boot attempts, with `health-check-failed`,
 * or `boot-loop` when the system never came up far enough to report a
 * trial. A recalled patch is dropped at once if only staged, else at the
 * next restart (`recalled`). What the device sees of the repository is the
 * view the caller passes in (one verified copy shared by all devices).
 *
 * The policy functions are pure, so a device remembers the last rollout
 * and halt flag it was refused under and asks again only when the view
 * changes: the decision it would get is the same.
 *
 * Device state lives in typed arrays, one slot per device; nothing here
 * does I/O. Reports leave through the `emit` callback, in time order.
 */
import { RevpatchError } from '../engine/errors';
import type { Outcome } from '../report/format';
import { compatibilityDecision, haltDecision, recallDecision, rolloutDecision, type InstalledPatch } from '../agent/policy';
import { EventQueue } from './event_queue';
import { logUniform, uniform, unit } from './sim_random';

/** What the devices see of the patch after a repository refresh. */
export interface PatchView {
  id: string;
  version: number;
  parent: string | null;
  rollout: number;
  halted: boolean;
  recalled: boolean;
}

export interface DeviceModelOptions {
  devices: number;
  /** Numeric seed (lib/bench/sim_random.ts seedOf). */
  seed: number;
  /** Probability (0..1) that the patch breaks a device. */
  failRate: number;
  /** Probability (0..1) that a device fails its health check for reasons unrelated to the patch. */
  noiseRate: number;
  /** Mean seconds between a device's checks; each interval is drawn within ± `checkJitter` of it. */
  checkIntervalSeconds: number;
  /** 0..1 (0.25: ± 25 %). */
  checkJitter: number;
  /** Seconds from staging to the restart that boots the patch: log-uniform in [min, max]. */
  restartDelaySeconds: [number, number];
  /** Seconds a boot takes before the health check has its answer. */
  bootSeconds: number;
  /** Boots a failing patch is tried before it is rolled back (the device's maxBootAttempts). */
  maxBootAttempts: number;
  /** Share (0..1) of the patch's failures that are boot loops rather than failed health checks. */
  bootLoopShare: number;
}

export const DEFAULT_DEVICE_MODEL: Omit<DeviceModelOptions, 'devices' | 'seed' | 'failRate' | 'noiseRate'> = {
  checkIntervalSeconds: 6 * 3600,
  checkJitter: 0.25,
  restartDelaySeconds: [10 * 60, 12 * 3600],
  bootSeconds: 180,
  maxBootAttempts: 3,
  bootLoopShare: 0.25,
};

/** One report a device sends, as the model produced it. */
export interface ModelReport {
  device: number;
  outcome: Outcome;
  code: string | null;
  bootAttempts: number;
  /** Simulated time (ms since the epoch). */
  at: number;
}

export type ReportSink = (report: ModelReport) => void;

/** Where a device stands with the patch. */
const enum S {
  None = 0,
  Staged = 1,
  Booting = 2,
  Active = 3,
  Failed = 4,
  Removed = 5,
  PendingRemoval = 6,
}
const STATE_COUNT = 7;
/** The record's name of each state, for the policy functions. */
const RECORD_STATE = ['none', 'staged', 'trial', 'active', 'failed', 'removed', 'pending-removal'];

const enum E {
  Check = 0,
  Restart = 1,
  BootEnd = 2,
}

/** Fixed draw numbers per device; later draws count up from FIRST_FREE_DRAW. */
const DRAW_BREAKS = 0;
const DRAW_NOISE = 1;
const DRAW_LOOP = 2;
const DRAW_PHASE = 3;
const FIRST_FREE_DRAW = 8;

export interface ModelCounts {
  /** Devices that staged the patch. */
  installed: number;
  /** Devices the patch broke (booted it and failed because of it). */
  hurt: number;
  /** Devices that booted the patch. */
  booted: number;
  confirmed: number;
  rolledBack: number;
  /** Of those rolled back, the ones that failed for unrelated reasons only. */
  noiseFailures: number;
  recalled: number;
  /** Devices between staging and a verdict, or waiting to drop a recalled patch. */
  inTransition: number;
  events: number;
  /** Calls of the agent's policy functions made. */
  policyCalls: number;
}

export class DeviceModel {
  readonly options: DeviceModelOptions;
  private readonly queue: EventQueue;
  private readonly state: Uint8Array;
  private readonly breaks: Uint8Array;
  private readonly noise: Uint8Array;
  private readonly draws: Uint32Array;
  /** The rollout a device was last refused under (-1: none), and whether the patch was halted then. */
  private readonly refusedAt: Float64Array;
  private readonly refusedHalted: Uint8Array;
  private readonly stateCounts = new Array<number>(STATE_COUNT).fill(0);
  private readonly ids: string[] = [];
  private clock: number;
  readonly counts: ModelCounts = {
    installed: 0,
    hurt: 0,
    booted: 0,
    confirmed: 0,
    rolledBack: 0,
    noiseFailures: 0,
    recalled: 0,
    inTransition: 0,
    events: 0,
    policyCalls: 0,
  };

  /** `start` is the simulated time (ms) the first checks are drawn from. */
  constructor(options: DeviceModelOptions, start: number) {
    validateModel(options);
    this.options = options;
    const n = options.devices;
    this.clock = start;
    this.queue = new EventQueue(n * 2);
    this.state = new Uint8Array(n);
    this.breaks = new Uint8Array(n);
    this.noise = new Uint8Array(n);
    this.draws = new Uint32Array(n).fill(FIRST_FREE_DRAW);
    this.refusedAt = new Float64Array(n).fill(-1);
    this.refusedHalted = new Uint8Array(n);
    this.stateCounts[S.None] = n;
    const interval = options.checkIntervalSeconds * 1000;
    for (let d = 0; d < n; d++) {
      this.breaks[d] = unit(options.seed, d, DRAW_BREAKS) < options.failRate ? 1 : 0;
      this.noise[d] = unit(options.seed, d, DRAW_NOISE) < options.noiseRate ? 1 : 0;
      this.queue.push(start + Math.floor(unit(options.seed, d, DRAW_PHASE) * interval), d * 4 + E.Check);
    }
  }

  /** The device id the rollout bucket is computed from (never sent: reports carry pseudonyms). */
  deviceId(d: number): string {
    let id = this.ids[d];
    if (id === undefined) {
      id = `sim-${this.options.seed.toString(16)}-${d}`;
      this.ids[d] = id;
    }
    return id;
  }

  /** The simulated time of the last event run (ms). */
  get now(): number {
    return this.clock;
  }

  /** Devices running the patch (confirmed, not removed). */
  activeDevices(): number {
    return this.stateCounts[S.Active];
  }

  /** Time of the next event (Infinity when none). */
  nextEventAt(): number {
    return this.queue.peekTime();
  }

  /** Devices the patch would break, whether or not they take it (the scenario's ground truth). */
  breakingDevices(): number {
    let n = 0;
    for (let d = 0; d < this.options.devices; d++) n += this.breaks[d];
    return n;
  }

  /**
   * Runs every event due before `until` (ms) against `view`, emitting
   * reports in time order; stops early (returns false) when `shouldPause`
   * says so after an event, e.g. to send a full batch of reports.
   */
  runUntil(until: number, view: PatchView | null, emit: ReportSink, shouldPause: () => boolean = () => false): boolean {
    const { queue } = this;
    while (queue.peekTime() < until) {
      const at = queue.peekTime();
      const payload = queue.pop();
      this.clock = at;
      this.counts.events += 1;
      const d = Math.floor(payload / 4);
      const kind = payload - d * 4;
      if (kind === E.Check) this.check(d, at, view, emit);
      else if (kind === E.Restart) this.restart(d, at, emit);
      else this.bootEnd(d, at, emit);
      if (shouldPause()) return false;
    }
    this.clock = Math.max(this.clock, until);
    return true;
  }

  private draw(d: number): number {
    return unit(this.options.seed, d, this.draws[d]++);
  }

  private setState(d: number, next: S): void {
    const before = this.state[d] as S;
    this.stateCounts[before] -= 1;
    this.stateCounts[next] += 1;
    this.state[d] = next;
    this.counts.inTransition = this.stateCounts[S.Staged] + this.stateCounts[S.Booting] + this.stateCounts[S.PendingRemoval];
  }

  private installed(d: number, view: PatchView): InstalledPatch[] {
    const s = this.state[d] as S;
    return s === S.None ? [] : [{ id: view.id, version: view.version, parent: view.parent, state: RECORD_STATE[s] }];
  }

  private restartDelay(d: number): number {
    const [lo, hi] = this.options.restartDelaySeconds;
    return Math.round(logUniform(this.draw(d), lo, hi) * 1000);
  }

  private check(d: number, at: number, view: PatchView | null, emit: ReportSink): void {
    const { options } = this;
    const s = this.state[d] as S;
    if (s !== S.Failed && s !== S.Removed) {
      // Nothing can happen to a device done with the only patch: it stops checking.
      const j = options.checkJitter;
      const next = options.checkIntervalSeconds * 1000 * uniform(this.draw(d), 1 - j, 1 + j);
      this.queue.push(at + Math.round(next), d * 4 + E.Check);
    }
    if (!view) return;
    if (view.recalled) {
      if (s !== S.Staged && s !== S.Active) return;
      this.counts.policyCalls += 1;
      const decision = recallDecision(this.installed(d, view)[0]);
      if (decision.action === 'remove-now') {
        this.setState(d, S.Removed);
        this.counts.recalled += 1;
        emit({ device: d, outcome: 'recalled', code: 'recall', bootAttempts: 0, at });
      } else if (decision.action === 'remove-at-restart') {
        this.setState(d, S.PendingRemoval);
        this.queue.push(at + this.restartDelay(d), d * 4 + E.Restart);
      }
      return;
    }
    if (s !== S.None) return;
    if (this.refusedAt[d] === view.rollout && this.refusedHalted[d] === (view.halted ? 1 : 0)) return;
    this.counts.policyCalls += 1;
    // In the agent's order: does it fit, is it halted, is the device in the rollout.
    const installed = this.installed(d, view);
    const compat = compatibilityDecision(view, installed);
    const halt = compat.action === 'install' ? haltDecision(view, installed) : null;
    const rollout = halt?.action === 'continue' ? rolloutDecision(this.deviceId(d), view.id, view.rollout) : null;
    if (rollout?.action !== 'install') {
      this.refusedAt[d] = view.rollout;
      this.refusedHalted[d] = view.halted ? 1 : 0;
      return;
    }
    this.setState(d, S.Staged);
    this.counts.installed += 1;
    emit({ device: d, outcome: 'staged', code: null, bootAttempts: 0, at });
    this.queue.push(at + this.restartDelay(d), d * 4 + E.Restart);
  }

  private restart(d: number, at: number, emit: ReportSink): void {
    const s = this.state[d] as S;
    if (s === S.PendingRemoval) {
      this.setState(d, S.Removed);
      this.counts.recalled += 1;
      emit({ device: d, outcome: 'recalled', code: 'recall', bootAttempts: 0, at });
      return;
    }
    if (s !== S.Staged) return; // dropped by a recall before it ran
    this.setState(d, S.Booting);
    this.counts.booted += 1;
    const boot = this.options.bootSeconds * 1000;
    const attempts = this.options.maxBootAttempts;
    if (this.breaks[d]) {
      this.counts.hurt += 1;
      if (unit(this.options.seed, d, DRAW_LOOP) < this.options.bootLoopShare) {
        // The system never gets as far as the agent: no trial report; the
        // device falls back to the base after its early boots.
        this.queue.push(at + attempts * boot, d * 4 + E.BootEnd);
        return;
      }
    }
    emit({ device: d, outcome: 'trial', code: null, bootAttempts: 0, at: at + boot });
    const failing = this.breaks[d] === 1 || this.noise[d] === 1;
    this.queue.push(at + (failing ? attempts : 1) * boot, d * 4 + E.BootEnd);
  }

  private bootEnd(d: number, at: number, emit: ReportSink): void {
    if (this.state[d] !== S.Booting) return;
    const attempts = this.options.maxBootAttempts;
    if (this.breaks[d] || this.noise[d]) {
      this.setState(d, S.Failed);
      this.counts.rolledBack += 1;
      if (!this.breaks[d]) this.counts.noiseFailures += 1;
      const loop = this.breaks[d] === 1 && unit(this.options.seed, d, DRAW_LOOP) < this.options.bootLoopShare;
      emit({ device: d, outcome: 'rolled-back', code: loop ? 'boot-loop' : 'health-check-failed', bootAttempts: attempts, at });
      return;
    }
    this.setState(d, S.Active);
    this.counts.confirmed += 1;
    emit({ device: d, outcome: 'confirmed', code: null, bootAttempts: 0, at });
  }
}

function validateModel(o: DeviceModelOptions): void {
  const bad = (what: string) => {
    throw new RevpatchError('E_INVALID_ARGUMENT', what);
  };
  if (!Number.isSafeInteger(o.devices) || o.devices < 1 || o.devices > 10_000_000) bad(`devices must be a whole number from 1 to 10,000,000, not ${o.devices}`);
  for (const [name, v] of [['fail rate', o.failRate], ['noise rate', o.noiseRate], ['check jitter', o.checkJitter], ['boot-loop share', o.bootLoopShare]] as const) {
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || v > 1) bad(`${name} must be from 0 to 1, not ${String(v)}`);
  }
  if (!(o.checkIntervalSeconds >= 1 && Number.isFinite(o.checkIntervalSeconds))) bad(`check interval must be at least 1 second, not ${o.checkIntervalSeconds}`);
  const [lo, hi] = o.restartDelaySeconds;
  if (!(lo > 0 && hi >= lo && Number.isFinite(hi))) bad(`restart delay must be 0 < min <= max seconds, not ${lo}..${hi}`);
  if (!(o.bootSeconds > 0 && Number.isFinite(o.bootSeconds))) bad(`boot time must be positive, not ${o.bootSeconds}`);
  if (!Number.isSafeInteger(o.maxBootAttempts) || o.maxBootAttempts < 1 || o.maxBootAttempts > 100) bad(`boot attempts must be from 1 to 100, not ${o.maxBootAttempts}`);
  if (!Number.isSafeInteger(o.seed) || o.seed < 0 || o.seed > 0xffffffff) bad(`seed must be a 32-bit unsigned number, not ${o.seed}`);
}
