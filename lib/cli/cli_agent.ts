/**
 * `revpatch agent [--once]` (DESIGN.md, "Command line"; docs/agent.md):
 * the background agent as a command. `--once` runs one check and exits 0,
 * or 1 with the stable code of the first refusal; without it the agent runs
 * as a daemon until SIGTERM or SIGINT, finishing the transition in flight.
 *
 * The host's hooks are commands here: `--health-command` (exit 0 = healthy)
 * and `--restart-command` (run to restart; exit 75, EX_TEMPFAIL, = the user
 * deferred). Without a restart command the agent only reports that a
 * restart is required.
 *
 * A device set up with `init --report` reports outcomes to its fleet
 * service; `--once` then sends what it can for at most REPORT_FLUSH_MS
 * before it exits. A collector that is down only leaves the reports queued
 * for the next run: it never changes the exit status.
 */
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import type { AgentHooks, AgentSettings, CheckReport, RestartAnswer } from '../agent/agent';
import { Device } from '../device/device';
import type { PatchRecord } from '../device/record';
import { RevpatchError } from '../engine/errors';
import type { LogLevel } from '../agent/log';
import { checkRateCap, parseTimeRange, type TimeRange } from '../agent/policy';
import { parseByteSize } from './byte_size';
import { progressBar, type ProgressBar } from './progress';

// The agent, its log (pino) and the repository client (tuf-js) load when
// the command runs, not with every revpatch command (lib/cli/cli.ts).
/* eslint-disable @typescript-eslint/no-require-imports */
const agentModules = () => ({
  ...(require('../agent/agent') as typeof import('../agent/agent')),
  ...(require('../agent/log') as typeof import('../agent/log')),
  ...(require('../repo/client') as typeof import('../repo/client')),
});
const settingsPageModule = () => require('../agent/settings_page') as typeof import('../agent/settings_page');
/* eslint-enable @typescript-eslint/no-require-imports */

interface GlobalOptions {
  state?: string;
  json?: boolean;
  wait?: number;
}

interface AgentCliOptions {
  once?: boolean;
  interval: number;
  jitter: number;
  autoInstall: boolean;
  window: TimeRange[];
  maxDeferrals?: number;
  deferHours?: number;
  marginMib: number;
  maxRate?: number;
  background: boolean;
  deviceId?: string;
  healthCommand?: string;
  restartCommand?: string;
  logLevel: LogLevel;
  ui?: string;
  uiAllowRemote?: boolean;
}

/** How long `agent --once` waits for the fleet service before leaving reports queued. */
export const REPORT_FLUSH_MS = 5000;

/** Exit status of a restart command that means "the user put it off". */
export const EXIT_DEFERRED = 75;

function number(name: string, min: number, max: number) {
  return (value: string): number => {
    const n = Number(value);
    if (value.trim() === '' || !Number.isFinite(n) || n < min || n > max) {
      throw new InvalidArgumentError(`${name} must be a number from ${min} to ${max}`);
    }
    return n;
  };
}

function collectWindow(value: string, previous: TimeRange[]): TimeRange[] {
  try {
    return [...previous, parseTimeRange(value)];
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

/** Runs `command` with sh; resolves with its exit status. */
function runCommand(command: string, env: NodeJS.ProcessEnv): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn('/bin/sh', ['-c', command], { stdio: ['ignore', 'inherit', 'inherit'], env: { ...process.env, ...env } });
    child.once('error', reject);
    child.once('exit', (code, sig) => resolve(code ?? (sig ? 128 : 1)));
  });
}

export function hooksFromCommands(options: { healthCommand?: string; restartCommand?: string }): AgentHooks {
  const hooks: AgentHooks = {};
  if (options.healthCommand) {
    const command = options.healthCommand;
    hooks.healthCheck = async () => (await runCommand(command, {})) === 0;
  }
  if (options.restartCommand) {
    const command = options.restartCommand;
    hooks.requestRestart = async (reason, info): Promise<RestartAnswer> => {
      const status = await runCommand(command, {
        REVPATCH_RESTART_REASON: reason,
        REVPATCH_RESTART_FORCED: info.forced ? '1' : '0',
        REVPATCH_PATCHES: info.patches.join(' '),
      });
      if (status === 0) return 'accepted';
      if (status === EXIT_DEFERRED) return 'deferred';
      throw new RevpatchError('E_IO', `restart command exited with status ${status}`);
    };
  }
  return hooks;
}

function reportText(report: CheckReport): string {
  const lines: string[] = [];
  for (const id of report.staged) lines.push(`staged ${id}; it takes effect at the next restart`);
  for (const id of report.recalled) lines.push(`recalled ${id}: removed at the next restart`);
  for (const id of report.available) lines.push(`available ${id} (automatic installation is off: revpatch install ${id})`);
  for (const s of report.skipped) lines.push(`skipped ${s.id} v${s.version}: ${s.reason}`);
  for (const r of report.refused) lines.push(`refused ${r.id ?? 'repository'}: ${r.code}: ${r.message}`);
  if (report.restart) lines.push(`restart required for ${report.restart.patches.join(', ')}: ${report.restart.reason}`);
  if (lines.length === 0) lines.push('up to date');
  return lines.join('\n');
}

/**
 * `revpatch install ID`: the offered patch `id`, through the agent's own
 * path (Agent.installOffered) with the agent's rollout identity and the
 * persisted settings, so a hand install passes the same checks a check
 * would, except the automatic-install switch.
 */
export async function installOfferedById(
  stateDir: string,
  id: string,
  options: { forceRollout?: boolean; deviceId?: string; json?: boolean; wait?: number; background?: boolean },
): Promise<PatchRecord> {
  const { Agent, openAgentLog, RepositoryClient } = agentModules();
  const device = await Device.open(stateDir, { lockWaitMs: (options.wait ?? 0) * 1000 });
  const repository = device.config.repository;
  if (!repository) {
    throw new RevpatchError('E_NO_REPOSITORY', `${stateDir} has no repository to install ${id} from; set one up with revpatch init --repo URL --root ROOT, or install a patch file`);
  }
  const client = await RepositoryClient.open(stateDir, { url: repository.url, rootPath: repository.root });
  const log = openAgentLog(stateDir);
  const agent = new Agent({
    stateDir,
    client,
    deviceId: options.deviceId,
    logger: log.logger,
    lockWaitMs: (options.wait ?? 0) * 1000,
    // A hand install runs at normal priority unless --background.
    settings: { background: options.background === true },
  });
  const bars = new Map<string, ProgressBar>();
  agent.on('progress', (p) => {
    let bar = bars.get(p.phase);
    if (!bar) {
      bar = progressBar(`${p.phase} ${p.patch}`, !options.json);
      bars.set(p.phase, bar);
    }
    bar.update(p.done, p.total);
  });
  try {
    const result = await agent.installOffered(id, { forceRollout: options.forceRollout });
    return result.patch;
  } finally {
    for (const bar of bars.values()) bar.stop();
    await agent.flushReports({ timeoutMs: REPORT_FLUSH_MS });
    await agent.close();
    await log.close();
  }
}

export function registerAgent(program: Command): void {
  program
    .command('agent')
    .description('check the repository, apply the policy, download and stage patches; a daemon unless --once')
    .option('--once', 'one check, then exit (1 with the code of the first refusal)')
    .option('--interval <seconds>', 'mean time between checks', number('--interval', 1, 30 * 86400), 6 * 3600)
    .option('--jitter <fraction>', 'each wait is the interval × (1 ± fraction)', number('--jitter', 0, 0.99), 0.25)
    .option('--no-auto-install', 'only report available patches (the "install automatically" switch off)')
    .option('--window <HH:MM-HH:MM>', 'maintenance window for restarts, local time; repeatable', collectWindow, [])
    .option('--max-deferrals <n>', 'times the user may defer a restart', number('--max-deferrals', 0, 1000))
    .option('--defer-hours <h>', 'hours after which a restart can no longer be deferred', number('--defer-hours', 0, 24 * 365))
    .option('--margin-mib <MiB>', 'disk space kept free beyond the patch and its layer', number('--margin-mib', 0, 1 << 20), 64)
    .option('--max-rate <rate>', 'download cap in bytes per second, K/M/G suffixes (2M); 0: unlimited (the default)', (v: string) =>
      checkRateCap(parseByteSize('--max-rate', v), '--max-rate'),
    )
    .option('--no-background', 'install at normal CPU and I/O priority (default: nice 19 and the idle I/O class)')
    .option('--device-id <id>', 'identity for the staged rollout (default: a random id kept in the state directory)')
    .option('--health-command <cmd>', 'after a restart: exit 0 if the system is healthy (confirms trial patches)')
    .option('--restart-command <cmd>', `run to restart the device; exit ${EXIT_DEFERRED} when the user defers`)
    .option('--ui <host:port>', 'also serve the device settings page here (loopback only, unless --ui-allow-remote)')
    .option('--ui-allow-remote', 'let --ui listen on an address other machines can reach')
    .addOption(
      new Option('--log-level <level>', 'agent.log verbosity').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    )
    .action(async (opts: AgentCliOptions) => {
      const { Agent, openAgentLog, RepositoryClient } = agentModules();
      const globals = program.opts<GlobalOptions>();
      if (opts.ui !== undefined && opts.once) throw new InvalidArgumentError('--ui runs with the daemon, not with --once');
      const listen = opts.ui !== undefined ? settingsPageModule().parseListen(opts.ui) : null;
      if (listen && !settingsPageModule().isLoopbackHost(listen.host) && !opts.uiAllowRemote) {
        throw new RevpatchError(
          'E_INVALID_ARGUMENT',
          `--ui ${opts.ui}: ${listen.host} is not a loopback address; the settings page listens on loopback unless --ui-allow-remote is given`,
        );
      }
      const stateDir = path.resolve(globals.state ?? process.env.REVPATCH_STATE ?? './revpatch-state');
      const device = await Device.open(stateDir, { lockWaitMs: (globals.wait ?? 0) * 1000 });
      const repository = device.config.repository;
      if (!repository) {
        throw new RevpatchError('E_NOT_INITIALIZED', `${stateDir} has no repository; set one up with revpatch init --repo URL --root ROOT`);
      }
      const client = await RepositoryClient.open(stateDir, { url: repository.url, rootPath: repository.root });
      const settings: Partial<AgentSettings> = {
        autoInstall: opts.autoInstall,
        maintenanceWindows: opts.window,
        deferral: {
          maxCount: opts.maxDeferrals ?? 3,
          maxDurationMs: (opts.deferHours ?? 7 * 24) * 3600 * 1000,
        },
        pollIntervalMs: opts.interval * 1000,
        jitter: opts.jitter,
        marginBytes: Math.round(opts.marginMib * 1024 * 1024),
        maxBytesPerSecond: opts.maxRate ?? 0,
        background: opts.background,
      };
      const log = openAgentLog(stateDir, opts.logLevel);
      const agent = new Agent({
        stateDir,
        client,
        settings,
        deviceId: opts.deviceId,
        hooks: hooksFromCommands(opts),
        logger: log.logger,
        lockWaitMs: Math.max((globals.wait ?? 0) * 1000, 60_000),
      });
      const bars = new Map<string, ProgressBar>();
      agent.on('progress', (p) => {
        const key = `${p.phase} ${p.patch}`;
        let bar = bars.get(key);
        if (!bar) {
          bar = progressBar(key, !globals.json);
          bars.set(key, bar);
        }
        bar.update(p.done, p.total);
      });
      const stopBars = () => {
        for (const bar of bars.values()) bar.stop();
        bars.clear();
      };
      try {
        if (opts.once) {
          let report: CheckReport;
          try {
            report = await agent.checkOnce();
          } finally {
            const flushed = await agent.flushReports({ timeoutMs: REPORT_FLUSH_MS });
            if (flushed && flushed.remaining > 0) log.logger.info({ ...flushed }, 'reports left queued for the next run');
          }
          stopBars();
          process.stdout.write(globals.json ? `${JSON.stringify(report, null, 2)}\n` : `${reportText(report)}\n`);
          const first = report.refused[0];
          if (first) throw new RevpatchError(first.code, `${first.id ?? 'repository'}: ${first.message}`);
          return;
        }
        const controller = new AbortController();
        const stop = () => controller.abort();
        process.once('SIGTERM', stop);
        process.once('SIGINT', stop);
        agent.on('staged', (p) => process.stdout.write(`staged ${p.id} v${p.version}\n`));
        agent.on('restart-required', (r) => process.stdout.write(`restart required for ${r.patches.join(', ')}: ${r.reason}\n`));
        agent.on('error', (e) => process.stderr.write(`error ${e.code}: ${e.message}\n`));
        const page = listen
          ? await settingsPageModule().startSettingsPage(agent, { ...listen, allowRemote: opts.uiAllowRemote === true })
          : null;
        if (page) process.stdout.write(`settings page: ${page.loginUrl}\n`);
        try {
          await agent.run(controller.signal);
        } finally {
          await page?.close();
          process.removeListener('SIGTERM', stop);
          process.removeListener('SIGINT', stop);
        }
      } finally {
        stopBars();
        await agent.close();
        await log.close();
      }
    });
}
