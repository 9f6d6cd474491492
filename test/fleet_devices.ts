/**
 * Real devices for the fleet end-to-end test: each one a state directory
 * set up with Device.init over one shared base image, the real Agent with
 * the real RepositoryClient, and a host the test plays by hand. The host's
 * restart is `Device.boot()` followed by `agent.startup()`, as a device's
 * init system would run them; a host whose health check fails keeps
 * restarting (the agent asks for a forced restart) until the boot rolls
 * the patch back.
 *
 * A device is "broken" by a patch when its health check fails while it
 * runs a given view: the hook reads the device's booted view digest, so
 * the check fails exactly while the bad patch is in the booted view and
 * passes again once the device is back on the base or on a good patch.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { Agent, type AgentOptions, type CheckReport, type StartupReport } from '../lib/agent/agent';
import { Device } from '../lib/device/device';
import type { PatchRecord } from '../lib/device/record';
import { RepositoryClient } from '../lib/repo/client';
import { configureReporting } from '../lib/report/config';
import { Reporter } from '../lib/report/reporter';
import { FAST_TRANSPORT } from './agent_fixture';

export interface FleetDeviceOptions {
  /** The rollout identity (fixed, so the test knows which stage reaches which device). */
  id: string;
  stateDir: string;
  base: string;
  trust: string;
  blockSize: number;
  repoUrl: string;
  rootPath: string;
  maxBootAttempts: number;
  /** The fleet service this device reports to (`revpatch init --report URL --report-token FILE`). */
  report?: { url: string; tokenFile: string };
  agent?: Partial<AgentOptions>;
}

/** What one check and the restarts it led to did on a device. */
export interface CycleResult {
  check: CheckReport;
  /** Restarts the host went through (0 when none was asked for). */
  restarts: number;
  startups: StartupReport[];
}

export class FleetDevice {
  /** Booted view digests for which this device's health check fails. */
  readonly breaksOn = new Set<string>();
  private restartWanted = false;
  agent!: Agent;
  reporter: Reporter | null = null;

  private constructor(readonly options: FleetDeviceOptions) {}

  get id(): string {
    return this.options.id;
  }

  get stateDir(): string {
    return this.options.stateDir;
  }

  static async create(options: FleetDeviceOptions): Promise<FleetDevice> {
    await Device.init(options.stateDir, {
      volume: options.base,
      trust: options.trust,
      blockSize: options.blockSize,
      maxBootAttempts: options.maxBootAttempts,
      repository: { url: options.repoUrl, root: options.rootPath },
    });
    if (options.report) await configureReporting(options.stateDir, options.report);
    const device = new FleetDevice(options);
    await device.makeAgent();
    return device;
  }

  /** A fresh Agent (and client), as after a restart of the management software. */
  async makeAgent(extra: Partial<AgentOptions> = {}): Promise<void> {
    const client = await RepositoryClient.open(this.stateDir, {
      url: this.options.repoUrl,
      rootPath: this.options.rootPath,
      transport: { ...FAST_TRANSPORT, retries: 3, connectTimeoutMs: 20_000, readTimeoutMs: 20_000 },
    });
    await this.close();
    // The background sender runs as on a device; the test also flushes.
    this.reporter = await Reporter.open(this.stateDir, { backoff: { baseMs: 200, maxMs: 2000 } });
    this.reporter?.start();
    this.agent = new Agent({
      stateDir: this.stateDir,
      client,
      deviceId: this.id,
      reporter: this.reporter ?? undefined,
      lockWaitMs: 30_000,
      ...this.options.agent,
      ...extra,
      hooks: {
        requestRestart: () => {
          this.restartWanted = true;
          return 'accepted';
        },
        healthCheck: () => this.healthy(),
        ...this.options.agent?.hooks,
        ...extra.hooks,
      },
    });
  }

  /**
   * Sends every queued report (the background sender would, in its own
   * time); fails if any remain, so a round's outcomes are all at the
   * collector before the test waits for the controller.
   */
  async flushReports(): Promise<void> {
    if (!this.reporter) return;
    const result = await this.reporter.flush({ timeoutMs: 30_000 });
    if (result.remaining > 0) throw new Error(`${this.id}: ${result.remaining} reports not sent (${result.error})`);
  }

  /** Stops the agent's reporting and closes the report queue (it has one owner at a time). */
  async close(): Promise<void> {
    await this.agent?.close();
    await this.reporter?.close();
    this.reporter = null;
  }

  /** The host's health check: fails while the booted view is one this device breaks on. */
  async healthy(): Promise<boolean> {
    if (this.breaksOn.size === 0) return true;
    return !this.breaksOn.has(await this.bootedDigest());
  }

  async open(): Promise<Device> {
    return Device.open(this.stateDir, { lockWaitMs: 30_000 });
  }

  async bootedDigest(): Promise<string> {
    return (await (await this.open()).status()).bootedDigest;
  }

  async patches(): Promise<PatchRecord[]> {
    return (await this.open()).list();
  }

  /**
   * One check of the agent, then every restart it asks for: boot, startup
   * (health check, confirm). A failed health check asks for a forced
   * restart, so a broken device goes round until its boot rolls the patch
   * back; `maxRestarts` bounds that loop so a device that never settles
   * fails the test instead of hanging it.
   */
  async cycle(maxRestarts = 10): Promise<CycleResult> {
    this.restartWanted = false;
    const check = await this.agent.checkOnce();
    const result: CycleResult = { check, restarts: 0, startups: [] };
    while (this.restartWanted) {
      if (result.restarts >= maxRestarts) {
        throw new Error(`${this.id} still asks for a restart after ${maxRestarts} restarts`);
      }
      this.restartWanted = false;
      result.restarts += 1;
      await (await this.open()).boot();
      result.startups.push(await this.agent.startup());
    }
    return result;
  }
}

/** Runs `fn` over `items` with at most `limit` in flight; rejects with the first error after all settle. */
export async function inParallel<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  const errors: unknown[] = [];
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      try {
        results[i] = await fn(items[i]);
      } catch (err) {
        errors.push(err);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (errors.length > 0) throw errors[0];
  return results;
}

export async function fileExists(file: string): Promise<boolean> {
  return fs.access(file).then(
    () => true,
    () => false,
  );
}

export const stateDirOf = (dir: string, id: string) => path.join(dir, 'devices', id);
