/**
 * `revpatch fleet simulate` (DESIGN.md, "Fleet"; issue 13 part 4): a
 * simulated fleet of devices on a simulated clock against the real fleet
 * service, to measure how far a bad patch spreads before the rollout
 * controller halts it, and that a good one completes.
 *
 * Real parts, in process, over loopback:
 *   - the collector (lib/fleet/server.ts FleetServer) on 127.0.0.1 with a
 *     SQLite store (default in memory; `db` may name a file), its clock the
 *     simulated one, so receive times and stage soak are simulated time;
 *   - the rollout controller (lib/fleet/controller.ts), ticked on the
 *     simulated clock, deciding with the chosen rule (`revpatch`, the
 *     controller's own, or `hawkbit`, Eclipse hawkBit's default thresholds)
 *     and publishing through the real publisher into a temporary TUF
 *     repository that holds one small signed patch, published at rollout 0;
 *   - that repository served on loopback (lib/repo/serve.ts) and read each
 *     tick through the real repository client (lib/repo/client.ts) with the
 *     simulated time as TUF's reference time: all devices share that one
 *     verified copy until the next tick;
 *   - the report client (lib/report/client.ts): pseudonyms, reports and
 *     batches of 100 POSTed over HTTP with a device enrollment token;
 *   - the agent's policy (lib/agent/policy.ts) in every device's decision
 *     (lib/bench/sim_devices.ts).
 *
 * Each tick (`tickSeconds` of simulated time): send the reports made since
 * the last one, run the controller, refresh the repository client, then
 * run the devices' events up to the next tick against the new view (once
 * four full batches of 100 wait, they are sent at once, as many devices
 * would). The run ends when the rollout is settled — halted, recalled or
 * complete, and every device that took the patch has reached a verdict
 * (complete: every device has checked since); the ticks are then
 * `settleTickSeconds` apart, as the controller has nothing left to decide
 * — or at the decision itself with `settle: false`; or when the rollout
 * has stalled (`stalled`: it holds, every device has checked and reported
 * since the last change and the stage has soaked, so nothing can change);
 * or at `maxSimSeconds`.
 *
 * The repository and the client's state live in memory (/dev/shm) where
 * the system has it: every tick re-reads and re-signs metadata with fsyncs
 * that would measure the disk rather than the rollout.
 *
 * Deterministic for a seed: the devices draw from a seeded hash
 * (lib/bench/sim_random.ts), reports are sent in a fixed order with the
 * simulated time as the server's clock, and nothing reads the real time
 * except the wall-clock figure. Report ids and pseudonym secrets differ
 * per run; they change nothing the controller counts.
 */
import * as crypto from 'node:crypto';
import { constants as fsConstants, promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { RevpatchError } from '../engine/errors';
import { writeKeyPair } from '../patch/keys';
import { createPatch } from '../publisher/create';
import { Repository } from '../repo/publisher';
import { RepositoryClient } from '../repo/client';
import { serveRepository, type RepositoryServer } from '../repo/serve';
import { newReport, postBatch, pseudonymOf } from '../report/client';
import type { BatchAck, DeviceReport } from '../report/format';
import { openStore } from '../fleet/store';
import { FleetServer } from '../fleet/server';
import { mintToken } from '../fleet/tokens';
import { RolloutController } from '../fleet/controller';
import { DEFAULT_PLAN, validatePlan } from '../fleet/decision';
import type { DecisionRecord, FleetStore, PlanRecord } from '../fleet/types';
import { DEFAULT_DEVICE_MODEL, DeviceModel, type ModelReport, type PatchView } from './sim_devices';
import { seedOf } from './sim_random';

export const SIMULATION_RULES = ['revpatch', 'hawkbit'] as const;
export type SimulationRule = (typeof SIMULATION_RULES)[number];

export interface SimulateOptions {
  /** Simulated devices (default 100,000). */
  devices?: number;
  /** Percent (0..100) of devices the patch breaks: they fail its health check (default 0). */
  failPct?: number;
  /** Percent (0..100) of devices that fail their health check for unrelated reasons (default 0.5). */
  noisePct?: number;
  /** Any number or string (default 1). */
  seed?: number | string;
  /** The rollout plan; each field defaults to `revpatch fleet plan`'s (lib/fleet/decision.ts DEFAULT_PLAN). */
  stages?: number[];
  soakSeconds?: number;
  minReports?: number;
  maxFailurePct?: number;
  autoRecall?: boolean;
  /** The controller's rule (default 'revpatch'). */
  rule?: SimulationRule;
  /** Simulated seconds at most (default 14 days). */
  maxSimSeconds?: number;
  /** Simulated seconds between controller ticks and repository reads while the rollout runs (default 60). */
  tickSeconds?: number;
  /** The same once the rollout is decided (halted, recalled, complete) and the run waits for devices to settle (default 900). */
  settleTickSeconds?: number;
  /** Mean seconds between a device's checks (default 6 h), each within ± checkJitterPct (default 25). */
  checkIntervalSeconds?: number;
  checkJitterPct?: number;
  /** Seconds from staging to the restart that boots the patch, log-uniform (default 10 min .. 12 h). */
  restartDelaySeconds?: [number, number];
  /**
   * After the rollout's last decision (halt, recall, complete), run on until
   * every device has settled, so `installed` and `hurt` are final (default
   * true); false ends the run at that decision.
   */
  settle?: boolean;
  /** Reports per POST (default 100). */
  batchSize?: number;
  /** Fleet database URL (default sqlite::memory:). */
  db?: string;
  /** Called after every tick with where the run stands. */
  onTick?: (progress: SimulationProgress) => void;
}

export interface SimulationProgress {
  simulatedSeconds: number;
  rollout: number;
  state: string;
  installed: number;
  reportsSent: number;
}

/** One decision of the controller, its time relative to the start of the run. */
export interface SimulatedDecision {
  atSeconds: number;
  action: string;
  code: string;
  reason: string;
  by: string;
  fromRollout: number;
  toRollout: number;
  failureRate: number | null;
  wilsonLower: number | null;
  confirmed: number | null;
  failed: number | null;
}

export interface SimulationResult {
  devices: number;
  failPct: number;
  noisePct: number;
  seed: number | string;
  rule: SimulationRule;
  plan: { stages: number[]; soakSeconds: number; minReports: number; maxFailurePct: number; autoRecall: boolean };
  /** How the devices and the loop were set up. */
  options: {
    tickSeconds: number;
    settleTickSeconds: number;
    maxSimSeconds: number;
    checkIntervalSeconds: number;
    checkJitterPct: number;
    restartDelaySeconds: [number, number];
    bootSeconds: number;
    maxBootAttempts: number;
    bootLoopShare: number;
    batchSize: number;
  };
  /** Devices that installed (staged) the patch. */
  installed: number;
  /** Devices the patch broke: they booted it and failed because of it. */
  hurt: number;
  /** Devices that booted it, confirmed it, rolled it back (and of those, for unrelated reasons only). */
  booted: number;
  confirmed: number;
  rolledBack: number;
  noiseFailures: number;
  /** Devices that removed the patch because it was recalled. */
  recalledOnDevices: number;
  /** Devices the patch would break had they all taken it (the scenario's ground truth). */
  breakingDevices: number;
  halted: boolean;
  recalled: boolean;
  /** The plan's state at the end: planned, rolling, halted, complete, recalled. */
  state: string;
  finalRollout: number;
  /** Simulated seconds from the start of the rollout to the halt; null if it never halted. */
  timeToHaltSeconds: number | null;
  /** Simulated seconds from the start to the completion; null if it never completed. */
  timeToCompleteSeconds: number | null;
  /** Rollout percentages the plan reached, in order. */
  stagesReached: number[];
  /** Reports the collector stored (its own count), and the reports and batches sent. */
  reportsIngested: number;
  reportsSent: number;
  batches: number;
  decisions: SimulatedDecision[];
  /** Simulated seconds the run covered, and whether it stopped at maxSimSeconds before settling. */
  simulatedSeconds: number;
  timedOut: boolean;
  /**
   * The rollout can go no further: it holds at a stage whose devices have
   * all reported, soaked, and nothing new can come (e.g. a fleet too small
   * for the plan's minReports at that stage); the run ended there.
   */
  stalled: boolean;
  ticks: number;
  events: number;
  /** Real seconds: the whole run, and the part spent in the simulated loop. */
  wallSeconds: number;
  loopWallSeconds: number;
}

const PATCH_ID = 'sim-fix';
/** Batches sent at once. */
const IN_FLIGHT = 4;
const BLOCK = 4096;
const DEFAULTS = {
  devices: 100_000,
  failPct: 0,
  noisePct: 0.5,
  seed: 1 as number | string,
  rule: 'revpatch' as SimulationRule,
  maxSimSeconds: 14 * 86400,
  tickSeconds: 60,
  settleTickSeconds: 900,
  checkJitterPct: 25,
  batchSize: 100,
  db: 'sqlite::memory:',
};

interface Resolved {
  devices: number;
  failPct: number;
  noisePct: number;
  seed: number | string;
  rule: SimulationRule;
  plan: SimulationResult['plan'];
  maxSimSeconds: number;
  tickSeconds: number;
  settleTickSeconds: number;
  checkIntervalSeconds: number;
  checkJitterPct: number;
  restartDelaySeconds: [number, number];
  batchSize: number;
  settle: boolean;
  db: string;
  onTick?: (progress: SimulationProgress) => void;
}

function invalid(message: string): never {
  throw new RevpatchError('E_INVALID_ARGUMENT', message);
}

function percent(name: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || v > 100) invalid(`${name} must be a percentage from 0 to 100, not ${String(v)}`);
  return v;
}

function positive(name: string, v: unknown, max: number): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0 || v > max) invalid(`${name} must be a number above 0 and at most ${max}, not ${String(v)}`);
  return v;
}

/** Every option checked before anything is made; E_INVALID_ARGUMENT names the first bad one. */
export function resolveSimulateOptions(options: SimulateOptions = {}): Resolved {
  if (typeof options !== 'object' || options === null) invalid('simulateFleet needs an options object');
  const devices = options.devices ?? DEFAULTS.devices;
  if (!Number.isSafeInteger(devices) || devices < 1 || devices > 10_000_000) invalid(`devices must be a whole number from 1 to 10,000,000, not ${String(devices)}`);
  const seed = options.seed ?? DEFAULTS.seed;
  if (!((typeof seed === 'number' && Number.isSafeInteger(seed)) || (typeof seed === 'string' && seed.length > 0 && seed.length <= 200))) {
    invalid(`seed must be a whole number or a non-empty string, not ${String(seed)}`);
  }
  const rule = options.rule ?? DEFAULTS.rule;
  if (!SIMULATION_RULES.includes(rule)) invalid(`rule must be one of ${SIMULATION_RULES.join(', ')}, not ${String(rule)}`);
  const plan = {
    stages: options.stages ?? [...DEFAULT_PLAN.stages],
    soakSeconds: options.soakSeconds ?? DEFAULT_PLAN.soakSeconds,
    minReports: options.minReports ?? DEFAULT_PLAN.minReports,
    maxFailurePct: options.maxFailurePct ?? DEFAULT_PLAN.maxFailurePct,
    autoRecall: options.autoRecall ?? DEFAULT_PLAN.autoRecall,
  };
  validatePlan({ patch: PATCH_ID, version: 1, ...plan });
  const checkIntervalSeconds = positive('check interval', options.checkIntervalSeconds ?? DEFAULT_DEVICE_MODEL.checkIntervalSeconds, 30 * 86400);
  const restartDelaySeconds = options.restartDelaySeconds ?? DEFAULT_DEVICE_MODEL.restartDelaySeconds;
  if (!Array.isArray(restartDelaySeconds) || restartDelaySeconds.length !== 2) invalid('restart delay must be [min, max] seconds');
  positive('restart delay min', restartDelaySeconds[0], 30 * 86400);
  positive('restart delay max', restartDelaySeconds[1], 30 * 86400);
  if (restartDelaySeconds[1] < restartDelaySeconds[0]) invalid(`restart delay max ${restartDelaySeconds[1]} is below min ${restartDelaySeconds[0]}`);
  const batchSize = options.batchSize ?? DEFAULTS.batchSize;
  if (!Number.isSafeInteger(batchSize) || batchSize < 1 || batchSize > 1000) invalid(`batch size must be a whole number from 1 to 1000, not ${String(batchSize)}`);
  const settle = options.settle ?? true;
  if (typeof settle !== 'boolean') invalid('settle must be true or false');
  const db = options.db ?? DEFAULTS.db;
  if (typeof db !== 'string' || !db.startsWith('sqlite:')) invalid(`the simulation's database must be sqlite:PATH or sqlite::memory:, not ${String(db)}`);
  if (options.onTick !== undefined && typeof options.onTick !== 'function') invalid('onTick must be a function');
  return {
    devices,
    failPct: percent('failPct', options.failPct ?? DEFAULTS.failPct),
    noisePct: percent('noisePct', options.noisePct ?? DEFAULTS.noisePct),
    seed,
    rule,
    plan,
    maxSimSeconds: positive('maxSimSeconds', options.maxSimSeconds ?? DEFAULTS.maxSimSeconds, 365 * 86400),
    tickSeconds: positive('tickSeconds', options.tickSeconds ?? DEFAULTS.tickSeconds, 86400),
    settleTickSeconds: positive('settleTickSeconds', options.settleTickSeconds ?? DEFAULTS.settleTickSeconds, 86400),
    checkIntervalSeconds,
    checkJitterPct: percent('checkJitterPct', options.checkJitterPct ?? DEFAULTS.checkJitterPct),
    restartDelaySeconds: [restartDelaySeconds[0], restartDelaySeconds[1]],
    batchSize,
    settle,
    db,
    onTick: options.onTick,
  };
}

/**
 * Where the run's repository and client state go: memory (/dev/shm) when
 * the system has it, since every tick re-signs or re-reads metadata with an
 * fsync that measures the disk, not the rollout; else the temp directory.
 */
async function scratchRoot(): Promise<string> {
  const shm = '/dev/shm';
  const ok = await fs.access(shm, fsConstants.W_OK).then(
    () => true,
    () => false,
  );
  return ok ? shm : os.tmpdir();
}

/** A tiny image pair and the signed patch between them, in `dir`. */
async function makePatch(dir: string): Promise<{ file: string; publicKey: string }> {
  const keys = await writeKeyPair(path.join(dir, 'keys'));
  const base = Buffer.alloc(16 * BLOCK);
  for (let i = 0; i < 16; i++) base.fill(`base block ${i};`, i * BLOCK, (i + 1) * BLOCK);
  const fixed = Buffer.from(base);
  fixed.fill('fixed block 3;', 3 * BLOCK, 4 * BLOCK);
  const from = path.join(dir, 'base.img');
  const to = path.join(dir, 'fixed.img');
  await fs.writeFile(from, base);
  await fs.writeFile(to, fixed);
  const file = path.join(dir, `${PATCH_ID}.rvp`);
  await createPatch({ from, to, keyPath: keys.secretKeyPath, id: PATCH_ID, out: file, title: 'Simulated fix', severity: 'high' });
  return { file, publicKey: keys.publicKeyPath };
}

function viewOf(patches: readonly { id: string; version: number; parent: string | null; rollout: number; recalled: boolean; halted?: boolean }[]): PatchView | null {
  const p = patches.find((x) => x.id === PATCH_ID);
  if (!p) return null;
  return { id: p.id, version: p.version, parent: p.parent, rollout: p.rollout, recalled: p.recalled, halted: p.halted === true };
}

function decisionOf(d: DecisionRecord, start: number): SimulatedDecision {
  const i = d.inputs;
  return {
    atSeconds: Math.round((d.at - start) / 1000),
    action: d.action,
    code: d.code,
    reason: d.reason,
    by: d.by,
    fromRollout: d.fromRollout,
    toRollout: d.toRollout,
    failureRate: i ? i.failureRate : null,
    wilsonLower: i ? i.wilsonLower : null,
    confirmed: i ? i.stageCounts.confirmed : null,
    failed: i ? i.stageCounts.failed : null,
  };
}

/** Runs one simulated fleet against the real fleet service; see the header. */
export async function simulateFleet(options: SimulateOptions = {}): Promise<SimulationResult> {
  const o = resolveSimulateOptions(options);
  const wallStart = performance.now();
  const seed = seedOf(o.seed);
  // Whole seconds: TUF expiry is in whole seconds.
  const start = Math.floor(Date.now() / 1000) * 1000;
  let now = start;
  const clock = () => now;
  const dateClock = () => new Date(now);

  const work = await fs.mkdtemp(path.join(await scratchRoot(), 'revpatch-simulate-'));
  let repoServer: RepositoryServer | null = null;
  let store: FleetStore | null = null;
  let collector: FleetServer | null = null;
  let controller: RolloutController | null = null;
  try {
    const { file, publicKey } = await makePatch(work);
    const span = Math.ceil(o.maxSimSeconds) + 86400;
    const repoDir = path.join(work, 'repo');
    const repo = await Repository.init(repoDir, {
      publisherKey: publicKey,
      expiry: { root: span, targets: span, snapshot: span, timestamp: span },
      now: dateClock,
    });
    await repo.publish(file, { rollout: 0, now: dateClock });
    repoServer = await serveRepository(repoDir, { host: '127.0.0.1', port: 0 });
    const client = await RepositoryClient.open(path.join(work, 'device'), {
      url: repoServer.url,
      rootPath: path.join(repoDir, 'metadata', '1.root.json'),
      now: dateClock,
    });

    store = await openStore(o.db);
    controller = new RolloutController({ store, repoDir, clock, rule: o.rule });
    collector = await FleetServer.start({ store, clock, host: '127.0.0.1', port: 0 });
    const collectorUrl = collector.url;
    const token = await mintToken(store, 'device', { devices: o.devices, now });
    await controller.plan(PATCH_ID, { version: 1, ...o.plan });

    const model = new DeviceModel(
      {
        devices: o.devices,
        seed,
        failRate: o.failPct / 100,
        noiseRate: o.noisePct / 100,
        ...DEFAULT_DEVICE_MODEL,
        checkIntervalSeconds: o.checkIntervalSeconds,
        checkJitter: o.checkJitterPct / 100,
        restartDelaySeconds: o.restartDelaySeconds,
      },
      start,
    );

    // Reports, and the per-device pseudonym secrets, made as devices report.
    const pseudonyms = new Map<number, string>();
    const secretSeed = crypto.randomBytes(32);
    const pseudonym = (d: number): string => {
      let p = pseudonyms.get(d);
      if (p === undefined) {
        const secret = crypto.createHmac('sha256', secretSeed).update(String(d)).digest();
        p = pseudonymOf(secret, PATCH_ID);
        pseudonyms.set(d, p);
      }
      return p;
    };
    let outbox: DeviceReport[] = [];
    let reportsSent = 0;
    let batches = 0;
    const emit = (r: ModelReport) => {
      outbox.push(
        newReport({
          patch: PATCH_ID,
          version: 1,
          outcome: r.outcome,
          code: r.code,
          bootAttempts: r.bootAttempts,
          pseudonym: pseudonym(r.device),
          time: new Date(r.at),
        }),
      );
    };
    /** Sends what the outbox holds, in batches, the server clock at `now`. */
    /**
     * Sends the outbox in batches of `batchSize`, up to IN_FLIGHT at once as
     * many devices would (the collector commits them as a group); all with
     * the server clock at `now`, which stands still while they are sent. A
     * partial batch waits unless `all`.
     */
    const flush = async (all: boolean) => {
      while (outbox.length >= o.batchSize || (all && outbox.length > 0)) {
        const wave: DeviceReport[][] = [];
        while (wave.length < IN_FLIGHT && (outbox.length >= o.batchSize || (all && outbox.length > 0))) {
          wave.push(outbox.slice(0, o.batchSize));
          outbox = outbox.slice(o.batchSize);
        }
        const acks: BatchAck[] = await Promise.all(wave.map((batch) => postBatch(collectorUrl, token, batch)));
        acks.forEach((ack, i) => {
          if (ack.accepted + ack.duplicates !== wave[i].length) {
            throw new RevpatchError('E_STATE', `the collector acknowledged ${ack.accepted + ack.duplicates} of ${wave[i].length} reports`);
          }
          reportsSent += wave[i].length;
          batches += 1;
        });
      }
    };

    const loopStart = performance.now();
    const tick = o.tickSeconds * 1000;
    const settleTick = o.settleTickSeconds * 1000;
    const end = start + o.maxSimSeconds * 1000;
    const checkWindow = o.checkIntervalSeconds * (1 + o.checkJitterPct / 100) * 1000;
    let plan: PlanRecord | null = null;
    let ticks = 0;
    let completedAt: number | null = null;
    let timedOut = false;
    let stalled = false;
    let viewKey = '';
    let viewSince = start;
    for (;;) {
      await flush(true);
      await controller.tick();
      ticks += 1;
      await client.refresh();
      const view = viewOf(await client.patches());
      const key = view ? `${view.rollout}/${view.halted}/${view.recalled}` : '';
      if (key !== viewKey) {
        viewKey = key;
        viewSince = now;
      }
      plan = await store.getPlan(PATCH_ID, 1);
      if (!plan) throw new RevpatchError('E_STATE', 'the simulated patch lost its plan');
      if (plan.state === 'complete' && completedAt === null) completedAt = now;
      o.onTick?.({ simulatedSeconds: (now - start) / 1000, rollout: plan.rollout, state: plan.state, installed: model.counts.installed, reportsSent });
      const decided = plan.state === 'halted' || plan.state === 'recalled' || plan.state === 'complete';
      const settled =
        (decided && !o.settle) ||
        ((plan.state === 'halted' || plan.state === 'recalled') && model.counts.inTransition === 0 && (plan.state !== 'recalled' || model.activeDevices() === 0)) ||
        (plan.state === 'complete' && completedAt !== null && now - completedAt >= checkWindow && model.counts.inTransition === 0);
      if (settled) break;
      // Nothing can change any more: every device has checked since the
      // view last changed, every one that took the patch has its verdict
      // (all sent), and the stage has soaked, so the rule sees the same
      // numbers for ever (a fleet too small for the plan's minReports).
      stalled =
        plan.state === 'rolling' &&
        now - viewSince >= checkWindow &&
        model.counts.inTransition === 0 &&
        plan.stageStartedAt !== null &&
        now - plan.stageStartedAt >= plan.soakSeconds * 1000;
      if (stalled) break;
      if (now >= end) {
        timedOut = true;
        break;
      }
      const until = Math.min(now + (decided ? settleTick : tick), end);
      while (!model.runUntil(until, view, emit, () => outbox.length >= o.batchSize * IN_FLIGHT)) {
        now = model.now;
        await flush(false);
      }
      now = until;
    }
    const loopWallSeconds = (performance.now() - loopStart) / 1000;

    const records = await store.decisions(PATCH_ID, 1);
    const decisions = records.map((d) => decisionOf(d, start));
    const halt = records.find((d) => d.action === 'halt' || d.action === 'recall');
    const stagesReached: number[] = [];
    for (const d of records) {
      if ((d.action === 'start' || d.action === 'advance') && !stagesReached.includes(d.toRollout)) stagesReached.push(d.toRollout);
    }
    const final = plan as PlanRecord;
    const c = model.counts;
    return {
      devices: o.devices,
      failPct: o.failPct,
      noisePct: o.noisePct,
      seed: o.seed,
      rule: o.rule,
      plan: o.plan,
      options: {
        tickSeconds: o.tickSeconds,
        settleTickSeconds: o.settleTickSeconds,
        maxSimSeconds: o.maxSimSeconds,
        checkIntervalSeconds: o.checkIntervalSeconds,
        checkJitterPct: o.checkJitterPct,
        restartDelaySeconds: o.restartDelaySeconds,
        bootSeconds: model.options.bootSeconds,
        maxBootAttempts: model.options.maxBootAttempts,
        bootLoopShare: model.options.bootLoopShare,
        batchSize: o.batchSize,
      },
      installed: c.installed,
      hurt: c.hurt,
      booted: c.booted,
      confirmed: c.confirmed,
      rolledBack: c.rolledBack,
      noiseFailures: c.noiseFailures,
      recalledOnDevices: c.recalled,
      breakingDevices: model.breakingDevices(),
      halted: final.halted,
      recalled: final.state === 'recalled',
      state: final.state,
      finalRollout: final.rollout,
      timeToHaltSeconds: halt ? Math.round((halt.at - start) / 1000) : null,
      timeToCompleteSeconds: completedAt === null ? null : Math.round((completedAt - start) / 1000),
      stagesReached,
      reportsIngested: await store.reportCount(),
      reportsSent,
      batches,
      decisions,
      simulatedSeconds: Math.round((now - start) / 1000),
      timedOut,
      stalled,
      ticks,
      events: c.events,
      wallSeconds: (performance.now() - wallStart) / 1000,
      loopWallSeconds,
    };
  } finally {
    if (collector) await collector.close();
    if (controller) await controller.stop();
    if (store) await store.close();
    if (repoServer) await repoServer.close();
    await fs.rm(work, { recursive: true, force: true });
  }
}
