/**
 * The background agent (DESIGN.md, "Lifecycle on a device"; docs/agent.md):
 * the part of a device's management software that keeps it patched by
 * itself. Each check refreshes the repository's TUF metadata, removes
 * recalled patches, picks the offered patches the policy (lib/agent/policy.ts)
 * allows, stages each while it downloads (lib/device/stream_install.ts), and asks
 * the host for the restart that activates them. After a restart it tells
 * the device the boot got as far as the health check, runs the host's check
 * and confirms.
 *
 * The agent never restarts anything and never touches the device's files
 * itself: every change goes through Device, whose transitions each have one
 * commit point, and the agent only stops between them (run(signal)). What it
 * did and saw goes to <state>/agent.log (pino) and, one line per transition,
 * to <state>/audit.ndjson (fsynced).
 *
 * Its own memory — a random device id for the rollout, the deferrals of the
 * pending restart, the last patch states it saw — lives in
 * <state>/agent/state.json. It is advisory: losing it re-reports a
 * transition or restarts the deferral count, never changes what is
 * installed. The commit record stays the one truth.
 *
 * When the device reports to a fleet service (`revpatch init --report`),
 * each transition that matters also becomes a report (lib/agent/outcomes.ts)
 * queued right after the agent audits it, past the commit point. Queuing
 * is synchronous and never throws; sending is the reporter's background
 * work (lib/report/reporter.ts), so a collector that is down or hangs never
 * delays a transition.
 */
import { EventEmitter } from 'node:events';
import * as crypto from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { Device } from '../device/device';
import * as engine from '../engine/engine';
import { RevpatchError, toRevpatchError, type ErrorCode } from '../engine/errors';
import { writeFileAtomic } from '../engine/atomic';
import type { PatchRecord } from '../device/record';
import type { RepoPatch, RepositoryClientApi } from '../repo/types';
import { installFromDownload, pruneDownloads } from '../device/stream_install';
import { Reporter, type FlushResult, type RecordFields } from '../report/reporter';
import { outcomeOf, type BootLimits } from './outcomes';
import { AuditTrail, silentLogger, type AuditEntry, type Logger } from './log';
import { readPersistedSettings, writePersistedSettings, type PersistedSettings } from './settings_file';
import {
  autoInstallDecision,
  deferralDecision,
  compatibilityDecision,
  haltDecision,
  estimateLayerBytes,
  recallDecision,
  restartDecision,
  rolloutDecision,
  spaceDecision,
  DEFAULT_MARGIN_BYTES,
  checkRateCap,
  type DeferralLimit,
  type TimeRange,
} from './policy';

export const AGENT_DIR = 'agent';
export const AGENT_STATE_FILE = 'state.json';

// ------------------------------------------------------------------ events

export interface ProgressEvent {
  patch: string;
  phase: 'download' | 'install';
  done: number;
  total: number;
}

export interface RestartRequiredEvent {
  reason: string;
  /** request: the policy allows it now; force: deferrals ran out; wait: not yet (see code). */
  action: 'request' | 'force' | 'wait';
  code: string;
  /** Patches waiting for it: staged ones and pending removals. */
  patches: string[];
  nextStart: Date | null;
}

export interface PatchEvent {
  id: string;
  version: number;
  reason?: string;
}

/** An error with the patch it concerns, if any. */
export interface AgentError extends RevpatchError {
  patch?: string;
}

export interface AgentEvents {
  progress: [ProgressEvent];
  staged: [PatchEvent];
  'restart-required': [RestartRequiredEvent];
  activated: [PatchEvent[]];
  'rolled-back': [PatchEvent];
  recalled: [PatchEvent & { state: string }];
  error: [AgentError];
}

// ------------------------------------------------------------------- hooks

export type RestartAnswer = 'accepted' | 'deferred';

/** What the host (the device's OS or management software) provides. */
export interface AgentHooks {
  /**
   * Ask for a restart. `forced`: the user may no longer defer it. Answer
   * 'deferred' if the user put it off (counted against the deferral limit).
   * Without this hook the agent only emits `restart-required`.
   */
  requestRestart?(reason: string, info: { forced: boolean; patches: string[] }): RestartAnswer | Promise<RestartAnswer>;
  /** The host's health check after a restart; true confirms trial patches. Default: healthy. */
  healthCheck?(): boolean | Promise<boolean>;
  /** Restarts wait for mains power. Default: false. */
  onBattery?(): boolean | Promise<boolean>;
  /** Restarts wait until the device is idle. Default: true. */
  idle?(): boolean | Promise<boolean>;
  /** The clock (policy, expiry). Default: the wall clock. */
  now?(): Date;
  /** Free bytes where layers and downloads go. Default: the filesystem's. */
  freeSpace?(dir: string): Promise<number>;
}

export interface AgentSettings {
  /** The "install security patches automatically" switch. */
  autoInstall: boolean;
  /** Local-time ranges in which restarts may be requested; empty: any time. */
  maintenanceWindows: TimeRange[];
  deferral: DeferralLimit;
  /** Mean time between checks of the daemon loop. */
  pollIntervalMs: number;
  /** Each wait is pollIntervalMs × (1 ± jitter), uniformly, so a fleet does not check in step. */
  jitter: number;
  /** Bytes kept free beyond the patch and its layer. */
  marginBytes: number;
  /**
   * Download bandwidth cap in bytes per second (`agent --max-rate`); 0:
   * unlimited. Otherwise at least MIN_RATE_CAP, the download's own
   * slow-retrieval floor (lib/repo/download.ts).
   */
  maxBytesPerSecond: number;
  /**
   * Install at the lowest CPU and I/O priority (Device InstallOptions
   * .background), so the device's foreground work goes first. On unless
   * `agent --no-background`.
   */
  background: boolean;
}

export const DEFAULT_SETTINGS: AgentSettings = {
  autoInstall: true,
  maintenanceWindows: [],
  deferral: { maxCount: 3, maxDurationMs: 7 * 86400 * 1000 },
  pollIntervalMs: 6 * 3600 * 1000,
  jitter: 0.25,
  marginBytes: DEFAULT_MARGIN_BYTES,
  maxBytesPerSecond: 0,
  background: true,
};

// --------------------------------------------------------------- installer

export interface InstallContext {
  device: Device;
  client: RepositoryClientApi;
  patch: RepoPatch;
  now: Date;
  signal?: AbortSignal;
  /** AgentSettings.background and .maxBytesPerSecond as the check saw them. */
  background: boolean;
  maxBytesPerSecond: number;
  onProgress(phase: ProgressEvent['phase'], done: number, total: number): void;
}

/** Gets a patch from the repository into the device, staged. */
export type PatchInstaller = (context: InstallContext) => Promise<PatchRecord>;

/**
 * The default installer: the streaming install (lib/device/stream_install.ts), which
 * applies the patch while it downloads into STATE/downloads/, checks that the
 * signed manifest is the patch the signed metadata names, and keeps a partial
 * download for the next check only after a failure a retry can get past.
 */
export const installWhileDownloading: PatchInstaller = (context) =>
  installFromDownload(context.device, context.client, context.patch, {
    signal: context.signal,
    now: context.now,
    background: context.background,
    // Unlimited leaves the key out, so a cap in the client's transport options stands.
    ...(context.maxBytesPerSecond > 0 ? { maxBytesPerSecond: context.maxBytesPerSecond } : {}),
    onProgress: (p) => context.onProgress('download', p.received, p.total),
    onApplyProgress: (done, total) => context.onProgress('install', done, total),
  });

// ------------------------------------------------------------------ report

export interface Skipped {
  id: string;
  version: number;
  code: string;
  reason: string;
}

export interface Refused {
  id: string | null;
  code: ErrorCode;
  message: string;
}

export interface CheckReport {
  /** Patches this check staged, in order. */
  staged: string[];
  /** Patches this check marked for removal (or removed) because the vendor recalled them. */
  recalled: string[];
  /** Offered but not taken, with the policy's reason. */
  skipped: Skipped[];
  /** Offered and available to install by hand (auto-install off). */
  available: string[];
  /** Chosen but refused by a check (download, signature, metadata), with a stable code. */
  refused: Refused[];
  restart: RestartRequiredEvent | null;
  /** The check stopped early because the signal was aborted. */
  aborted: boolean;
}

export interface StartupReport {
  /** Patches confirmed after a passed health check. */
  activated: string[];
  /** Patches the last boot rolled back. */
  rolledBack: string[];
  healthy: boolean | null;
}

export interface InstallOfferedOptions {
  /** Install even if the device is outside the patch's staged rollout (audited). */
  forceRollout?: boolean;
  signal?: AbortSignal;
}

export interface InstallOfferedResult {
  patch: PatchRecord;
  /** The device was outside the rollout and `forceRollout` took it anyway. */
  forcedRollout: boolean;
}

/** What the last check saw, for a host's screen (the settings page). */
export interface LastCheck {
  /** When it ended (ISO). */
  at: string;
  /** The patches the repository offered. */
  offered: RepoPatch[];
  report: CheckReport;
}

/** The restart the device waits for, as a notice for the user. */
export interface RestartNotice {
  /** Staged patches or pending removals wait for a restart. */
  pending: boolean;
  /** The patches that wait: staged (activated by it) and pending removal (dropped by it). */
  patches: string[];
  /** Times the user deferred it so far. */
  deferrals: number;
  /** Deferrals left (null: no count limit). */
  deferralsLeft: number | null;
  /** When deferring stops and the restart is forced (ISO; null: no time limit, or not yet asked for). */
  deadline: string | null;
  /** The deferral rule's verdict: may-defer or exhausted, with its code and reason. */
  decision: { action: string; code: string; reason: string };
}

interface AgentState {
  format: 1;
  deviceId: string;
  deferral: { count: number; firstRequestedAt: string | null };
  /** Last state seen per patch (id@installedAt). */
  known: Record<string, string>;
}

export interface AgentOptions {
  stateDir: string;
  client: RepositoryClientApi;
  hooks?: AgentHooks;
  settings?: Partial<AgentSettings>;
  /** The rollout identity; default a random id kept in <state>/agent/state.json. */
  deviceId?: string;
  installer?: PatchInstaller;
  logger?: Logger;
  /** Default <state>/audit.ndjson. */
  audit?: AuditTrail;
  /** How long a device transition waits for another process's lock (default 60 s). */
  lockWaitMs?: number;
  /**
   * Where outcomes are reported. Default: the state directory's reporter if
   * `init --report` set one up; null: no reporting.
   */
  reporter?: Reporter | null;
}

const keyOf = (p: PatchRecord) => `${p.id}@${p.installedAt}`;

function auditEvent(from: string | null, to: string): string {
  if (from === null) return to === 'staged' ? 'staged' : `seen-${to}`;
  if (to === 'trial') return 'booted';
  if (to === 'active') return 'activated';
  if (to === 'failed') return 'rolled-back';
  if (to === 'removed') return 'removed';
  if (to === 'pending-removal') return 'removal-pending';
  return `${from}-to-${to}`;
}

export class Agent extends EventEmitter<AgentEvents> {
  readonly stateDir: string;
  readonly settings: AgentSettings;
  private readonly client: RepositoryClientApi;
  private readonly hooks: AgentHooks;
  private readonly installer: PatchInstaller;
  private readonly log: Logger;
  private readonly audit: AuditTrail;
  private readonly lockWaitMs: number;
  private readonly fixedDeviceId: string | undefined;
  private reporter: Reporter | null | undefined;
  /** The open of the state directory's reporter, once started. */
  private reporterOpening: Promise<Reporter | null> | null = null;
  /** Reports made while the reporter was still opening. */
  private early: RecordFields[] = [];
  /** The agent opened the reporter itself (and closes it). */
  private ownsReporter = false;
  private bootLimits: BootLimits | null = null;
  private state: AgentState | null = null;
  private reservedBytes = 0;
  /** The transition in flight, which run() waits for before it returns. */
  private busy: Promise<unknown> = Promise.resolve();
  /** The automatic-install switch from the options, used while none is persisted. */
  private readonly autoInstallDefault: boolean;
  /** The options' download cap and priority, used while none is persisted. */
  private readonly maxRateDefault: number;
  private readonly backgroundDefault: boolean;
  private last: LastCheck | null = null;
  /** The metadata refresh in flight (refreshOffered). */
  private refreshing: Promise<unknown> = Promise.resolve();

  constructor(options: AgentOptions) {
    super();
    this.stateDir = path.resolve(options.stateDir);
    this.client = options.client;
    this.hooks = options.hooks ?? {};
    this.settings = { ...DEFAULT_SETTINGS, ...options.settings };
    this.autoInstallDefault = this.settings.autoInstall;
    this.maxRateDefault = checkRateCap(this.settings.maxBytesPerSecond, 'maxBytesPerSecond');
    if (typeof this.settings.background !== 'boolean') {
      throw new RevpatchError('E_INVALID_ARGUMENT', 'background must be true or false');
    }
    this.backgroundDefault = this.settings.background;
    this.installer = options.installer ?? installWhileDownloading;
    this.log = options.logger ?? silentLogger();
    this.audit = options.audit ?? AuditTrail.forState(this.stateDir);
    this.lockWaitMs = options.lockWaitMs ?? 60_000;
    this.fixedDeviceId = options.deviceId;
    this.reporter = options.reporter;
    const s = this.settings;
    if (!(s.pollIntervalMs >= 1000) || !(s.jitter >= 0 && s.jitter < 1) || !(s.marginBytes >= 0)) {
      throw new RevpatchError('E_INVALID_ARGUMENT', 'poll interval must be ≥ 1 s, jitter in [0, 1), margin ≥ 0');
    }
  }

  private now(): Date {
    return this.hooks.now ? this.hooks.now() : new Date();
  }

  private get agentDir(): string {
    return path.join(this.stateDir, AGENT_DIR);
  }

  private async openDevice(): Promise<Device> {
    const device = await Device.open(this.stateDir, { lockWaitMs: this.lockWaitMs });
    this.bootLimits = { maxBootAttempts: device.config.maxBootAttempts, maxEarlyBoots: device.config.maxEarlyBoots };
    return device;
  }

  // ------------------------------------------------------------ reporting

  /**
   * Opens the state directory's reporter once. The first startup starts
   * this without waiting for it, so not even the first transition pays for
   * the open; reports made meanwhile wait in memory. A damaged setup only
   * disables reporting.
   */
  private openReporter(): Promise<Reporter | null> {
    if (this.reporter !== undefined) return Promise.resolve(this.reporter);
    this.reporterOpening ??= (async () => {
      let reporter: Reporter | null = null;
      try {
        reporter = await Reporter.open(this.stateDir, { logger: this.log });
      } catch (err) {
        const e = toRevpatchError(err);
        this.log.warn({ code: e.code, err: e.message }, 'reporting is set up but cannot start; not reporting');
      }
      this.reporter = reporter;
      this.ownsReporter = reporter !== null;
      this.reporterOpening = null;
      for (const fields of this.early.splice(0)) reporter?.record(fields);
      return reporter;
    })();
    return this.reporterOpening;
  }

  /** Queues a report (never throws, never waits). */
  private report(fields: RecordFields | null): void {
    if (!fields) return;
    if (this.reporter) this.reporter.record(fields);
    else if (this.reporter === undefined && this.early.length < 1000) this.early.push(fields);
  }

  /** Sends queued reports for at most `timeoutMs` (for `agent --once`); null when not reporting. Never throws. */
  async flushReports(options: { timeoutMs?: number } = {}): Promise<FlushResult | null> {
    const reporter = await this.openReporter();
    return reporter ? reporter.flush(options) : null;
  }

  /** Stops reporting and closes the reporter the agent opened itself (one it was given stays open). */
  async close(): Promise<void> {
    await this.reporterOpening;
    const reporter = this.reporter;
    if (!reporter) return;
    if (this.ownsReporter) {
      this.reporter = undefined;
      this.ownsReporter = false;
      await reporter.close();
    } else {
      await reporter.stop();
    }
  }

  // ------------------------------------------------------------ own state

  private async loadState(): Promise<AgentState> {
    if (this.state) return this.state;
    const file = path.join(this.agentDir, AGENT_STATE_FILE);
    let state: AgentState | null = null;
    try {
      const parsed = JSON.parse(await fs.readFile(file, 'utf8')) as AgentState;
      if (parsed && parsed.format === 1 && typeof parsed.deviceId === 'string' && parsed.known && parsed.deferral) state = parsed;
      else this.log.warn({ file }, 'agent state has an unknown shape; starting afresh');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.log.warn({ file, err }, 'agent state unreadable; starting afresh');
    }
    if (!state) {
      state = { format: 1, deviceId: crypto.randomBytes(16).toString('hex'), deferral: { count: 0, firstRequestedAt: null }, known: {} };
      this.state = state;
      await this.saveState();
    }
    this.state = state;
    return state;
  }

  private async saveState(): Promise<void> {
    await fs.mkdir(this.agentDir, { recursive: true });
    await writeFileAtomic(path.join(this.agentDir, AGENT_STATE_FILE), `${JSON.stringify(this.state, null, 1)}\n`);
  }

  /** The identity the staged rollout buckets this device by. */
  async deviceId(): Promise<string> {
    return this.fixedDeviceId ?? (await this.loadState()).deviceId;
  }

  private async record(entry: Omit<AuditEntry, 'time'>): Promise<void> {
    await this.audit.append({ time: this.now().toISOString(), ...entry });
    this.log.info(entry, String(entry.event));
  }

  private fail(err: unknown, patch: string | null): AgentError {
    const e = toRevpatchError(err) as AgentError;
    if (patch !== null) e.patch = patch;
    if (this.listenerCount('error') > 0) this.emit('error', e);
    return e;
  }

  /**
   * Compares the device's patches with what the agent saw last: audits
   * every transition (including those `boot` made while the agent was not
   * running) and reports rollbacks. Saves its memory only if it changed.
   */
  private async observe(patches: readonly PatchRecord[]): Promise<string[]> {
    const state = await this.loadState();
    const rolledBack: string[] = [];
    let changed = false;
    for (const p of patches) {
      const key = keyOf(p);
      const before = state.known[key] ?? null;
      if (before === p.state) continue;
      await this.record({ event: auditEvent(before, p.state), patch: p.id, version: p.version, from: before, to: p.state, reason: p.reason });
      if (this.bootLimits) this.report(outcomeOf(before, p, patches, this.bootLimits));
      if (p.state === 'failed' && before !== null) {
        rolledBack.push(p.id);
        this.emit('rolled-back', { id: p.id, version: p.version, reason: p.reason });
      }
      state.known[key] = p.state;
      changed = true;
    }
    const pending = patches.some((p) => p.state === 'staged' || p.state === 'pending-removal');
    if (!pending && (state.deferral.count !== 0 || state.deferral.firstRequestedAt !== null)) {
      state.deferral = { count: 0, firstRequestedAt: null };
      changed = true;
    } else if (pending && state.deferral.firstRequestedAt === null) {
      state.deferral.firstRequestedAt = this.now().toISOString();
      changed = true;
    }
    if (changed) await this.saveState();
    return rolledBack;
  }

  // --------------------------------------------------------------- startup

  /**
   * Runs once after each restart (and harmlessly more often): tells the
   * device the boot reached the health check, runs the host's check, and
   * confirms trial patches when it passes (`activated`); reports patches the
   * boot rolled back (`rolled-back`). A failed check asks for a forced
   * restart, which counts as a failed attempt, until the device rolls the
   * patch back.
   */
  async startup(): Promise<StartupReport> {
    void this.openReporter();
    return this.transition(async () => {
      let device = await this.openDevice();
      const report: StartupReport = { activated: [], rolledBack: [], healthy: null };
      report.rolledBack = await this.observe(device.list());
      const trial = device.list().filter((p) => p.state === 'trial');
      if (trial.length === 0) return report;
      await device.reached();
      let healthy: boolean;
      try {
        healthy = this.hooks.healthCheck ? await this.hooks.healthCheck() : true;
      } catch (err) {
        this.log.warn({ err }, 'health check threw');
        healthy = false;
      }
      report.healthy = healthy;
      if (!healthy) {
        const ids = trial.map((p) => p.id);
        await this.record({ event: 'health-check-failed', patches: ids });
        const reason = `health check failed with ${ids.join(', ')} in trial: restart to roll back`;
        const event: RestartRequiredEvent = { reason, action: 'force', code: 'health-check-failed', patches: ids, nextStart: null };
        this.emit('restart-required', event);
        await this.hooks.requestRestart?.(reason, { forced: true, patches: ids });
        return report;
      }
      report.activated = await device.confirm();
      device = await this.openDevice();
      await this.observe(device.list());
      const byId = new Map(device.list().map((p) => [p.id, p]));
      if (report.activated.length > 0) {
        this.emit(
          'activated',
          report.activated.map((id) => ({ id, version: byId.get(id)?.version ?? 0 })),
        );
      }
      return report;
    });
  }

  /** Runs `fn` as the one transition in flight; run() waits for it before returning. */
  private transition<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.busy.then(fn, fn);
    this.busy = result.catch(() => undefined);
    return result;
  }

  // ----------------------------------------------------------------- check

  /**
   * One round: refresh the repository (a refusal throws its stable code:
   * freeze, rollback, bad signatures, ...), handle recalls, stage what the
   * policy allows, then decide about the restart. Per-patch refusals are
   * in the report's `refused` (and emitted as `error`); the check goes on
   * with the other patches. An aborted `signal` stops it between steps.
   */
  async checkOnce(options: { signal?: AbortSignal } = {}): Promise<CheckReport> {
    const { signal } = options;
    const report: CheckReport = { staged: [], recalled: [], skipped: [], available: [], refused: [], restart: null, aborted: false };
    await this.startup();
    await this.loadPersistedSettings();
    const offered = await this.refreshOfferedOrRefuse();
    this.log.info({ patches: offered.map((p) => `${p.id}@${p.version}`) }, 'repository refreshed');

    // Recalls first: they may free the parent a newer patch needs.
    for (const patch of offered.filter((p) => p.recalled)) {
      if (signal?.aborted) return { ...report, aborted: true };
      await this.transition(() => this.handleRecall(patch, report));
    }

    // Then installs, bottom up: each staged patch may be the parent of the next.
    const candidates = offered.filter((p) => !p.recalled);
    const decided = new Set<string>();
    const chosenPatches: RepoPatch[] = [];
    for (;;) {
      if (signal?.aborted) return { ...report, aborted: true };
      const device = await this.openDevice();
      const { nextBootDigest } = await device.status();
      const installed = device.list();
      const fits: RepoPatch[] = [];
      const waiting: Array<[RepoPatch, { code: string; reason: string }]> = [];
      for (const patch of candidates) {
        if (decided.has(patch.target)) continue;
        const compat = compatibilityDecision(patch, installed, nextBootDigest);
        if (compat.action === 'install') {
          fits.push(patch);
        } else if (compat.action === 'wait') {
          waiting.push([patch, compat]);
        } else {
          decided.add(patch.target);
          if (compat.code === 'installed') this.log.debug({ patch: patch.id }, compat.reason);
          else this.skip(report, patch, compat.code, compat.reason);
        }
      }
      if (fits.length === 0) {
        for (const [patch, compat] of waiting) this.skip(report, patch, compat.code, compat.reason);
        break;
      }
      // Of the patches made for the same view, the newest version.
      fits.sort((a, b) => b.version - a.version || b.publishedAt.localeCompare(a.publishedAt));
      const chosen = fits[0];
      for (const other of fits.slice(1)) {
        decided.add(other.target);
        this.skip(report, other, 'superseded', `${chosen.id} v${chosen.version} is newer for the same view`);
      }
      decided.add(chosen.target);
      chosenPatches.push(chosen);
      await this.transition(() => this.offer(device, chosen, report, signal));
    }
    if (signal?.aborted) return { ...report, aborted: true };
    await this.transition(() => this.pruneDownloads(chosenPatches));
    report.restart = await this.transition(() => this.considerRestart());
    this.last = { at: this.now().toISOString(), offered, report };
    return report;
  }

  // ------------------------------------------------------------ settings

  /** Applies the persisted settings (settings_file.ts) over the agent's own; a damaged file is logged and ignored. */
  private async loadPersistedSettings(): Promise<void> {
    let persisted: PersistedSettings = {};
    try {
      persisted = await readPersistedSettings(this.stateDir);
    } catch (err) {
      this.log.warn({ code: toRevpatchError(err).code, err: (err as Error).message }, 'persisted settings unreadable; using the defaults');
    }
    this.settings.autoInstall = persisted.autoInstall ?? this.autoInstallDefault;
    this.settings.maxBytesPerSecond = persisted.maxBytesPerSecond ?? this.maxRateDefault;
    this.settings.background = persisted.background ?? this.backgroundDefault;
  }

  /** The automatic-install switch as the next check will see it. */
  async autoInstall(): Promise<boolean> {
    await this.loadPersistedSettings();
    return this.settings.autoInstall;
  }

  /**
   * Sets the automatic-install switch and persists it (atomically), so this
   * agent and any other on the same state directory honour it at their
   * next check. Audited as `settings-changed`.
   */
  async setAutoInstall(on: boolean): Promise<void> {
    if (typeof on !== 'boolean') throw new RevpatchError('E_INVALID_ARGUMENT', 'the automatic-install switch is true or false');
    await this.transition(async () => {
      let persisted: PersistedSettings = {};
      try {
        persisted = await readPersistedSettings(this.stateDir);
      } catch {
        // a damaged file is replaced
      }
      await writePersistedSettings(this.stateDir, { ...persisted, autoInstall: on });
      this.settings.autoInstall = on;
      await this.record({ event: 'settings-changed', autoInstall: on, by: 'user' });
    });
  }

  /** What the last check of this agent saw, or null before the first. */
  lastCheck(): LastCheck | null {
    return this.last;
  }

  /**
   * Marks `id` and the patches stacked on it for removal at the next
   * restart (a staged one goes at once), for the user (Device.remove), as
   * the one transition in flight; the change is audited like any other.
   */
  async removeByUser(id: string): Promise<PatchRecord[]> {
    return this.transition(async () => {
      const device = await this.openDevice();
      const changed = await device.remove(id);
      await this.observe((await this.openDevice()).list());
      return changed;
    });
  }

  /** The pending restart and the deferral left (lib/agent/policy.ts deferralDecision). */
  async restartNotice(): Promise<RestartNotice> {
    const device = await this.openDevice();
    const waiting = device.list().filter((p) => p.state === 'staged' || p.state === 'pending-removal').map((p) => p.id);
    const state = await this.loadState();
    const limit = this.settings.deferral;
    const decision = deferralDecision(state.deferral, limit, this.now());
    const deadline =
      limit.maxDurationMs !== undefined && state.deferral.firstRequestedAt !== null
        ? new Date(Date.parse(state.deferral.firstRequestedAt) + limit.maxDurationMs).toISOString()
        : null;
    return {
      pending: waiting.length > 0,
      patches: waiting,
      deferrals: state.deferral.count,
      deferralsLeft: limit.maxCount !== undefined ? Math.max(limit.maxCount - state.deferral.count, 0) : null,
      deadline,
      decision: { action: decision.action, code: decision.code, reason: decision.reason },
    };
  }

  /**
   * Keeps in STATE/downloads/ only what the next check may resume: the
   * downloads of the patches this check chose, which the streaming install
   * has already deleted unless a retry can get past their failure. Partial
   * downloads of patches since recalled, superseded, withdrawn or no longer
   * fitting the device are deleted, so they do not pile up on it.
   */
  private async pruneDownloads(chosen: readonly RepoPatch[]): Promise<void> {
    const deleted = await pruneDownloads(this.stateDir, chosen);
    if (deleted.length > 0) this.log.info({ deleted }, 'deleted downloads no check will resume');
  }

  private skip(report: CheckReport, patch: RepoPatch, code: string, reason: string): void {
    report.skipped.push({ id: patch.id, version: patch.version, code, reason });
    this.log.info({ patch: patch.id, version: patch.version, code }, reason);
  }

  private async handleRecall(patch: RepoPatch, report: CheckReport): Promise<void> {
    const device = await this.openDevice();
    const live = device.list().find((p) => p.id === patch.id && p.state !== 'removed' && p.state !== 'failed');
    if (!live) return;
    const decision = recallDecision(live);
    if (decision.action === 'none') return;
    try {
      await device.remove(patch.id, 'recalled');
    } catch (err) {
      const e = this.fail(err, patch.id);
      report.refused.push({ id: patch.id, code: e.code, message: e.message });
      await this.record({ event: 'refused', patch: patch.id, code: e.code, reason: e.message });
      return;
    }
    const after = (await this.openDevice()).list();
    const state = await this.loadState();
    for (const p of after) {
      const before = state.known[keyOf(p)] ?? null;
      if (before === p.state) continue;
      await this.record({ event: 'recalled', patch: p.id, version: p.version, from: before, to: p.state, reason: p.reason });
      if (before !== 'pending-removal') this.report({ patch: p.id, version: p.version, outcome: 'recalled', code: 'recall', bootAttempts: p.bootAttempts });
      state.known[keyOf(p)] = p.state;
      report.recalled.push(p.id);
      this.emit('recalled', { id: p.id, version: p.version, state: p.state, reason: decision.reason });
    }
    await this.saveState();
    await this.observe(after);
  }

  /** Applies the remaining rules to a patch that fits, and stages it. Returns whether it did. */
  private async offer(device: Device, patch: RepoPatch, report: CheckReport, signal?: AbortSignal): Promise<boolean> {
    const halt = haltDecision(patch, device.list());
    if (halt.action !== 'continue') {
      this.skip(report, patch, halt.code, halt.reason);
      return false;
    }
    // The rollout before the switch: a patch outside the device's rollout is
    // not offered to the user either (install ID would refuse it).
    const rollout = rolloutDecision(await this.deviceId(), patch.id, patch.rollout);
    if (rollout.action === 'skip') {
      this.skip(report, patch, rollout.code, rollout.reason);
      return false;
    }
    const auto = autoInstallDecision(this.settings);
    if (auto.action === 'notify') {
      report.available.push(patch.id);
      this.skip(report, patch, auto.code, auto.reason);
      return false;
    }
    const space = await this.reserveSpace(patch);
    if (space.action === 'skip') {
      this.skip(report, patch, space.code, space.reason);
      await this.record({ event: 'skipped', patch: patch.id, version: patch.version, code: space.code, reason: space.reason });
      return false;
    }
    try {
      const record = await this.stage(device, patch, space.reserveBytes, {}, signal);
      report.staged.push(record.id);
      return true;
    } catch (err) {
      const e = toRevpatchError(err);
      if (e.code === 'E_ABORTED') return false;
      report.refused.push({ id: patch.id, code: e.code, message: e.message });
      return false;
    }
  }

  /** The free-space rule for `patch`, against what other work in flight reserved. */
  private async reserveSpace(patch: RepoPatch): Promise<ReturnType<typeof spaceDecision>> {
    const free = this.hooks.freeSpace
      ? await this.hooks.freeSpace(this.stateDir)
      : await engine.freeSpace(this.stateDir);
    return spaceDecision({
      freeBytes: free,
      reservedBytes: this.reservedBytes,
      patchBytes: patch.length,
      layerBytes: estimateLayerBytes({ patchBytes: patch.length }),
      marginBytes: this.settings.marginBytes,
    });
  }

  /**
   * Downloads and stages `patch` (the installer), holding `reserveBytes`
   * meanwhile; audits and reports the outcome either way. `extra` goes into
   * the audit line of the staging (who asked, a forced rollout). A refusal
   * is audited, reported, emitted as `error` and thrown; an abort is thrown
   * as E_ABORTED without an audit line (the next attempt resumes).
   */
  private async stage(
    device: Device,
    patch: RepoPatch,
    reserveBytes: number,
    extra: Record<string, unknown>,
    signal?: AbortSignal,
  ): Promise<PatchRecord> {
    this.reservedBytes += reserveBytes;
    try {
      this.log.info({ patch: patch.id, version: patch.version, bytes: patch.length, ...extra }, 'downloading');
      let record: PatchRecord;
      try {
        record = await this.installer({
          device,
          client: this.client,
          patch,
          now: this.now(),
          signal,
          background: this.settings.background,
          maxBytesPerSecond: this.settings.maxBytesPerSecond,
          onProgress: (phase, done, total) => this.emit('progress', { patch: patch.id, phase, done, total }),
        });
      } catch (err) {
        const e = toRevpatchError(err);
        if (e.code === 'E_ABORTED') throw e;
        this.fail(e, patch.id);
        await this.record({ event: 'refused', patch: patch.id, version: patch.version, code: e.code, reason: e.message, ...extra });
        this.report({ patch: patch.id, version: patch.version, outcome: 'refused', code: e.code });
        throw e;
      }
      const state = await this.loadState();
      state.known[keyOf(record)] = record.state;
      await this.saveState();
      await this.record({ event: 'staged', patch: record.id, version: record.version, from: null, to: record.state, target: patch.target, ...extra });
      this.report({ patch: record.id, version: record.version, outcome: 'staged', bootAttempts: record.bootAttempts });
      this.emit('staged', { id: record.id, version: record.version });
      return record;
    } finally {
      this.reservedBytes -= reserveBytes;
    }
  }

  // ------------------------------------------------------- install by hand

  /**
   * Installs the patch `id` the repository offers, as a check would but
   * asked for by hand (`revpatch install ID`, the settings page's Install
   * button): the metadata is refreshed and TUF-verified, and the patch
   * staged while it downloads, after every rule of the policy except the
   * automatic-install switch. Each refusal has its own code and changes
   * nothing on the device:
   *
   * - E_NOT_OFFERED: the repository offers no patch with that id;
   * - E_RECALLED: the vendor recalled it;
   * - E_HALTED: its rollout is halted (and the device does not hold it);
   * - E_OUTSIDE_ROLLOUT: the device is outside its staged rollout, unless
   *   `forceRollout`, which the audit line of the staging records;
   * - the compatibility rule's refusals: E_EXISTS (already installed),
   *   E_STATE (held before: removed, recalled or failed), E_PARENT_MISSING,
   *   E_BASE_MISMATCH (another patch is on top, or the view differs);
   * - E_NO_SPACE, and whatever the download and install refuse.
   *
   * Of several versions of `id`, the newest is the one offered.
   */
  async installOffered(id: string, options: InstallOfferedOptions = {}): Promise<InstallOfferedResult> {
    const forceRollout = options.forceRollout === true;
    const refuse = async (code: ErrorCode, message: string, patch?: RepoPatch): Promise<never> => {
      const e = this.fail(new RevpatchError(code, message), id);
      await this.record({ event: 'install-refused', patch: id, version: patch?.version ?? null, code, reason: message, by: 'user' });
      throw e;
    };
    const offered = await this.refreshOfferedOrRefuse();
    const versions = offered.filter((p) => p.id === id).sort((a, b) => b.version - a.version);
    if (versions.length === 0) return refuse('E_NOT_OFFERED', `the repository offers no patch with id ${id}`);
    const patch = versions[0];
    if (patch.recalled) return refuse('E_RECALLED', `${id} v${patch.version} was recalled by the vendor: it is not installed`, patch);
    return this.transition(async () => {
      const device = await this.openDevice();
      await this.observe(device.list());
      const { nextBootDigest } = await device.status();
      const installed = device.list();
      const compat = compatibilityDecision(patch, installed, nextBootDigest);
      if (compat.action !== 'install') {
        const code: ErrorCode =
          compat.code === 'installed'
            ? 'E_EXISTS'
            : compat.code === 'held-before'
              ? 'E_STATE'
              : compat.code === 'parent-missing'
                ? 'E_PARENT_MISSING'
                : 'E_BASE_MISMATCH';
        return refuse(code, compat.reason, patch);
      }
      const halt = haltDecision(patch, installed);
      if (halt.action !== 'continue') return refuse('E_HALTED', halt.reason, patch);
      const rollout = rolloutDecision(await this.deviceId(), patch.id, patch.rollout);
      if (rollout.action === 'skip' && !forceRollout) {
        return refuse('E_OUTSIDE_ROLLOUT', `${rollout.reason}; --force-rollout installs it anyway`, patch);
      }
      const space = await this.reserveSpace(patch);
      if (space.action === 'skip') return refuse('E_NO_SPACE', space.reason, patch);
      const extra: Record<string, unknown> = { by: 'user' };
      if (rollout.action === 'skip') {
        extra.forcedRollout = true;
        extra.rollout = patch.rollout;
        extra.rolloutReason = rollout.reason;
      }
      const record = await this.stage(device, patch, space.reserveBytes, extra, options.signal);
      return { patch: record, forcedRollout: rollout.action === 'skip' };
    });
  }

  /**
   * Refreshes the TUF metadata and lists the offered patches, one caller at
   * a time (the daemon's check and an install by hand share the client).
   */
  /** refreshOffered, with a failure audited as a refused check and rethrown. */
  private async refreshOfferedOrRefuse(): Promise<RepoPatch[]> {
    try {
      return await this.refreshOffered();
    } catch (err) {
      const e = this.fail(err, null);
      await this.record({ event: 'refused', patch: null, code: e.code, reason: e.message });
      throw e;
    }
  }

  private refreshOffered(): Promise<RepoPatch[]> {
    const run = async () => {
      await this.client.refresh();
      return this.client.patches();
    };
    const result = this.refreshing.then(run, run);
    this.refreshing = result.catch(() => undefined);
    return result;
  }

  /** Asks the host for a restart when one is needed and the policy allows it. */
  private async considerRestart(): Promise<RestartRequiredEvent | null> {
    const device = await this.openDevice();
    const patches = device.list();
    await this.observe(patches);
    const waiting = patches.filter((p) => p.state === 'staged' || p.state === 'pending-removal').map((p) => p.id);
    if (waiting.length === 0) return null;
    const state = await this.loadState();
    const decision = restartDecision({
      restartPending: true,
      now: this.now(),
      windows: this.settings.maintenanceWindows,
      deferral: state.deferral,
      limit: this.settings.deferral,
      onBattery: this.hooks.onBattery ? await this.hooks.onBattery() : false,
      idle: this.hooks.idle ? await this.hooks.idle() : true,
    });
    if (decision.action === 'none') return null;
    const event: RestartRequiredEvent = {
      reason: decision.reason,
      action: decision.action,
      code: decision.code,
      patches: waiting,
      nextStart: decision.nextStart,
    };
    this.emit('restart-required', event);
    this.log.info({ ...event }, 'restart required');
    if ((decision.action === 'request' || decision.action === 'force') && this.hooks.requestRestart) {
      const forced = decision.action === 'force';
      const answer = await this.hooks.requestRestart(`to ${waiting.length > 1 ? 'apply changes to' : 'apply'} ${waiting.join(', ')}`, {
        forced,
        patches: waiting,
      });
      await this.record({ event: 'restart-requested', patches: waiting, code: decision.code, forced, answer });
      if (answer === 'deferred' && !forced) {
        state.deferral.count += 1;
        await this.saveState();
      }
    }
    return event;
  }

  // ------------------------------------------------------------------ loop

  /** The next wait of the daemon loop: the poll interval ± jitter. */
  nextDelayMs(random: () => number = Math.random): number {
    const { pollIntervalMs, jitter } = this.settings;
    return Math.round(pollIntervalMs * (1 - jitter + 2 * jitter * random()));
  }

  /**
   * The daemon: startup, then a check every nextDelayMs() until `signal`
   * aborts. An abort stops the wait at once and a download at its next
   * chunk (resumed next time); a device transition in flight always
   * finishes, and run() returns only after it has.
   */
  async run(signal: AbortSignal): Promise<void> {
    this.log.info({ settings: this.settings }, 'agent started');
    (await this.openReporter())?.start();
    while (!signal.aborted) {
      try {
        const report = await this.checkOnce({ signal });
        this.log.info({ staged: report.staged, recalled: report.recalled, refused: report.refused }, 'check done');
      } catch (err) {
        this.log.error({ code: toRevpatchError(err).code, err: (err as Error).message }, 'check failed');
      }
      if (signal.aborted) break;
      await sleep(this.nextDelayMs(), signal);
    }
    await this.busy;
    if (this.reporter) {
      await this.reporter.stop();
      await this.reporter.queue.sync().catch(() => undefined);
    }
    this.log.info('agent stopped');
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) {
      resolve();
      return;
    }
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}
