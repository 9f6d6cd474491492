/**
 * `revpatch fleet …` (DESIGN.md, "Fleet"; docs/fleet.md): the vendor's side
 * of the report loop. `serve` runs the report collector, the rollout
 * controller and the operator API in one process; `enroll` mints tokens;
 * `revoke` retires one; `plan`, `halt`, `resume`, `recall` and `advance` are the operator's hand
 * on the controller; `status` shows what it decided and why; `simulate`
 * runs a simulated fleet against the real collector and controller.
 *
 * Every flag is checked before anything is opened (lib/cli/fleet_args.ts):
 * a malformed one is a usage error, exit 2, and changes nothing. Failures
 * after that are `error E_CODE: message`, exit 1 (lib/cli/cli.ts's main).
 * The store, controller, server and simulator load when a fleet command
 * runs, not with every revpatch command.
 *
 * A SQLite database inside the repository directory is refused
 * (E_INVALID_ARGUMENT): a web server publishes that directory as it is, and
 * the database holds token hashes and every report.
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import { existsSync, promises as fs } from 'node:fs';
import * as path from 'node:path';
import { isErrorCode, RevpatchError, toRevpatchError } from '../engine/errors';
import {
  DEFAULT_MAX_FAILURE_PCT,
  DEFAULT_MIN_REPORTS,
  DEFAULT_SOAK_SECONDS,
  DEFAULT_STAGES,
  MAX_MIN_REPORTS,
  MAX_SOAK_SECONDS,
} from '../fleet/decision';
import type { FleetStore } from '../fleet/types';
import { readTokenFile } from '../report/config';
import { fleetStatus, statusText } from './fleet_status';
import { untilStopped } from './stop_signal';
import {
  DEFAULT_FLEET_HOST,
  DEFAULT_FLEET_PORT,
  decimal,
  insideDirectory,
  isLoopback,
  parseAllowHost,
  parseListen,
  parseStages,
  patchId,
  sqliteFileOf,
  whole,
  type ListenAddress,
} from './fleet_args';

/* eslint-disable @typescript-eslint/no-require-imports */
const storeModule = () => require('../fleet/store') as typeof import('../fleet/store');
const controllerModule = () => require('../fleet/controller') as typeof import('../fleet/controller');
const serverModule = () => require('../fleet/server') as typeof import('../fleet/server');
const dashboardModule = () => require('../fleet/dashboard') as typeof import('../fleet/dashboard');
const tokensModule = () => require('../fleet/tokens') as typeof import('../fleet/tokens');
const publisherModule = () => require('../repo/publisher') as typeof import('../repo/publisher');
const simulateModule = () => require('../bench/simulate') as typeof import('../bench/simulate');
/* eslint-enable @typescript-eslint/no-require-imports */

type FleetServerInstance = Awaited<ReturnType<ReturnType<typeof serverModule>['FleetServer']['start']>>;

interface DbOptions {
  db?: string;
  json?: boolean;
}

interface RepoOptions extends DbOptions {
  repo: string;
}

/** The database URL a command uses: --db, else $REVPATCH_FLEET_DB, else sqlite:./revpatch-fleet.db. */
function dbUrl(opts: DbOptions): string {
  return storeModule().fleetDbUrl(opts.db);
}

/** Refuses a SQLite file inside the repository directory before either is opened. */
function checkPlacement(url: string, repoDir: string): void {
  const file = sqliteFileOf(url);
  if (file !== null && insideDirectory(file, repoDir)) {
    throw new RevpatchError(
      'E_INVALID_ARGUMENT',
      `the fleet database ${file} is inside the repository ${path.resolve(repoDir)}, which a web server publishes; put it elsewhere (--db sqlite:PATH)`,
    );
  }
}

/**
 * Runs `fn` with the store open, closing it whatever happens. With
 * `existing`, a SQLite file that is not there is E_NOT_FOUND rather than a
 * new empty database: a mistyped --db must not read as "nothing planned".
 */
async function withStore<T>(url: string, fn: (store: FleetStore) => Promise<T>, { existing = false } = {}): Promise<T> {
  const file = sqliteFileOf(url);
  if (existing && file !== null && !existsSync(file)) {
    throw new RevpatchError('E_NOT_FOUND', `no fleet database at ${file} (fleet enroll, plan or serve create it; --db names another)`);
  }
  const store = await storeModule().openStore(url);
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

/** Fails with E_NOT_FOUND unless DIR holds a repository, before the database is touched. */
async function openRepository(dir: string) {
  return publisherModule().Repository.open(dir);
}

/** What the service did, one line each on stderr (stdout carries only where it listens). */
function lineLogger() {
  const line = (level: string) => (obj: object, msg?: string) => {
    const fields = Object.entries(obj)
      .filter(([, v]) => v !== undefined && typeof v !== 'object')
      .map(([k, v]) => `${k}=${String(v)}`)
      .join(' ');
    process.stderr.write(`${new Date().toISOString()} ${level} ${msg ?? ''}${fields ? `  (${fields})` : ''}\n`);
  };
  return { info: line('info'), warn: line('warn'), error: line('error') };
}

/** The operator API's view: the controller's actions, and `fleet status --json` entries as the status. */
function operatorOf(controller: Controller, store: FleetStore): import('../fleet/server').FleetOperator {
  return {
    status: (patch) => fleetStatus(store, patch),
    halt: (patch, version) => controller.halt(patch, version),
    resume: (patch, version) => controller.resume(patch, version),
    recall: (patch, version) => controller.recall(patch, version),
    advance: (patch, version) => controller.advance(patch, version),
  };
}

type Controller = InstanceType<ReturnType<typeof controllerModule>['RolloutController']>;
type ActionResult = Awaited<ReturnType<Controller['halt']>>;

/** An action recorded but not published (the repository was busy, say) is a failure the operator must see. */
function checkPublished(result: ActionResult): void {
  if (result.published || result.error === null) return;
  const d = result.decision;
  throw new RevpatchError(
    isErrorCode(result.error.code) ? result.error.code : 'E_UNKNOWN',
    `${d.action} of ${d.patch} v${d.version} is recorded (decision ${d.seq}) but the repository does not carry it yet: ${result.error.message}; a running fleet serve publishes it at its next tick, or run the command again`,
  );
}

function decisionLine(d: ActionResult['decision']): string {
  return `${d.patch} v${d.version}: ${d.action} ${d.fromRollout}% → ${d.toRollout}%: ${d.reason}`;
}

// ---------------------------------------------------------------- commands

export function registerFleet(program: Command): void {
  const globalJson = (): boolean => Boolean(program.opts<{ json?: boolean }>().json);
  // The global --wait: how long a repository change waits for another publisher (default 10 s here).
  const lockWaitMs = (): number => (program.opts<{ wait?: number }>().wait ?? 10) * 1000;
  const print = (json: boolean, value: unknown, text: () => string) =>
    process.stdout.write(json ? `${JSON.stringify(value, null, 2)}\n` : `${text()}\n`);

  const fleet = program.command('fleet').description('the fleet service: device reports, rollout control, operator commands (docs/fleet.md)');
  const dbOption = () => new Option('--db <url>', 'fleet database: sqlite:PATH or postgres://… (default $REVPATCH_FLEET_DB, else sqlite:./revpatch-fleet.db)');
  const repoOption = () => new Option('--repo <dir>', 'the repository directory the controller re-signs').makeOptionMandatory();

  fleet
    .command('serve')
    .description(`report collector, rollout controller and operator API in one process (listens on ${DEFAULT_FLEET_HOST}:${DEFAULT_FLEET_PORT} unless --listen)`)
    .addOption(repoOption())
    .addOption(dbOption())
    .option('--listen <host:port>', `address to listen on (default ${DEFAULT_FLEET_HOST}:${DEFAULT_FLEET_PORT}; port 0: any free one)`, parseListen)
    .option('--tick <seconds>', 'seconds between controller ticks (default 10)', decimal('--tick', 0.1, 3600), 10)
    .option(
      '--allow-host <name>',
      'another name the Host header may give (the proxy in front: fleet.example or fleet.example:443); repeatable',
      (value: string, previous: string[]) => [...previous, parseAllowHost(value)],
      [],
    )
    .option('--json', 'print where it listens as JSON')
    .action(async (opts: RepoOptions & { listen?: ListenAddress; tick: number; allowHost: string[] }) => {
      const json = globalJson() || Boolean(opts.json);
      const url = dbUrl(opts);
      checkPlacement(url, opts.repo);
      const listen = opts.listen ?? { host: DEFAULT_FLEET_HOST, port: DEFAULT_FLEET_PORT };
      const repository = await openRepository(opts.repo);
      const store = await storeModule().openStore(url);
      const { RolloutController } = controllerModule();
      const logger = lineLogger();
      // The lease outlives a few ticks, so a slow tick never hands leadership over by itself.
      const leaseMs = Math.max(30_000, opts.tick * 3000);
      const controller = new RolloutController({ store, repoDir: repository.dir, lockWaitMs: lockWaitMs(), logger, leaseMs });
      let server: FleetServerInstance | null = null;
      const operator = operatorOf(controller, store);
      const web = new (dashboardModule().Dashboard)({ store, operator });
      try {
        server = await serverModule()
          .FleetServer.start({ store, operator, host: listen.host, port: listen.port, allowedHosts: opts.allowHost, logger, web })
          .catch((err: NodeJS.ErrnoException) => {
            if (err?.code === 'EADDRINUSE') throw new RevpatchError('E_BUSY', `${listen.host}:${listen.port} is in use by another process (--listen HOST:PORT)`, { cause: err });
            if (err?.code === 'EADDRNOTAVAIL') throw new RevpatchError('E_INVALID_ARGUMENT', `${listen.host} is not an address of this machine`, { cause: err });
            throw err;
          });
        controller.start(opts.tick * 1000);
        const info = { url: server.url, dashboard: `${server.url}/`, db: storeModule().redactDbUrl(url), repo: path.resolve(opts.repo), tickSeconds: opts.tick };
        const at = server.url;
        print(json, info, () =>
          [
            `fleet service listening on ${at}${isLoopback(listen.host) ? '' : '  (not loopback: put TLS in front of it)'}`,
            `  reports: POST ${at}/v1/reports (device token); operator API: ${at}/v1/patches (operator token)`,
            `  dashboard: ${at}/ (log in with an operator token: revpatch fleet enroll --operator --out FILE)`,
            `  database ${info.db}; repository ${info.repo}; controller tick ${opts.tick} s`,
            '  SIGTERM or Ctrl-C stops it after the tick and commits in flight',
          ].join('\n'),
        );
        await untilStopped();
      } finally {
        // The server first (no new request; those in flight are answered and
        // committed), then the controller (its tick in flight finishes),
        // then the store.
        if (server) await server.close();
        await controller.stop();
        await store.close();
      }
    });

  fleet
    .command('enroll')
    .description('mint a device enrollment token (or, with --operator, an operator token) into FILE (mode 0600)')
    .addOption(dbOption())
    .requiredOption('--out <file>', 'file to write the token to; never overwritten')
    .addOption(
      new Option('--devices <n>', 'devices this enrollment token stands for (the exposure bound, default 1)')
        .argParser(whole('--devices', 1, 10_000_000))
        .conflicts('operator'),
    )
    .option('--operator', 'an operator token (the operator API) instead of a device token')
    .option('--json', 'machine-readable output')
    .action(async (opts: DbOptions & { out: string; devices?: number; operator?: boolean }) => {
      const json = globalJson() || Boolean(opts.json);
      const url = dbUrl(opts);
      const out = path.resolve(opts.out);
      // The file is created first (exclusively, 0600) so that a name already
      // taken stores no token; the token is written only once it is stored.
      let handle: fs.FileHandle;
      try {
        handle = await fs.open(out, 'wx', 0o600);
      } catch (err) {
        const e = toRevpatchError(err);
        throw new RevpatchError(e.code, e.code === 'E_EXISTS' ? `${out} already exists; tokens are never overwritten` : `${out}: ${e.message}`, { cause: err });
      }
      let written = false;
      try {
        const kind = opts.operator ? 'operator' : 'device';
        const devices = opts.operator ? 0 : (opts.devices ?? 1);
        const { mintToken, hashToken } = tokensModule();
        const token = await withStore(url, (store) => mintToken(store, kind, { devices, now: Date.now() }));
        await handle.writeFile(`${token}\n`);
        await handle.sync();
        written = true;
        // The hash, never the token: it names the token for fleet revoke once the file is gone.
        const hash = hashToken(token);
        print(json, { file: out, kind, devices, hash }, () =>
          [
            kind === 'operator'
              ? `operator token written to ${out} (mode 0600): it opens the operator API; keep it secret`
              : `enrollment token for ${devices} device${devices === 1 ? '' : 's'} written to ${out} (mode 0600); devices use it with revpatch init --report URL --report-token FILE`,
            `  token hash ${hash} (revpatch fleet revoke --token-hash ${hash} retires it)`,
          ].join('\n'),
        );
      } finally {
        await handle.close();
        if (!written) await fs.rm(out, { force: true });
      }
    });

  fleet
    .command('revoke')
    .description('revoke a device or operator token: its next request is refused (E_AUTH, HTTP 401)')
    .addOption(new Option('--token-file <file>', 'the file holding the token (as fleet enroll wrote it)').conflicts('tokenHash'))
    .addOption(new Option('--token-hash <hex>', 'the token\'s SHA-256 as fleet enroll printed it (64 hex digits)').argParser(tokenHashArg))
    .addOption(dbOption())
    .option('--json', 'machine-readable output')
    .action(async (opts: DbOptions & { tokenFile?: string; tokenHash?: string }, command: Command) => {
      const json = globalJson() || Boolean(opts.json);
      // A usage error (exit 2, the message on stderr), before anything is opened.
      if (opts.tokenFile === undefined && opts.tokenHash === undefined) command.error('error: fleet revoke needs --token-file FILE or --token-hash HEX');
      const { hashToken } = tokensModule();
      const hash = opts.tokenHash ?? hashToken(await readAnyToken(opts.tokenFile as string));
      const result = await withStore(
        dbUrl(opts),
        async (store) => {
          const revoked = await store.revokeToken(hash);
          const record = await store.findToken(hash);
          if (record === null) throw new RevpatchError('E_NOT_FOUND', `no token with hash ${hash} is enrolled in this fleet database`);
          if (!revoked) throw new RevpatchError('E_STATE', `the ${record.kind} token ${hash} is already revoked`);
          return { hash, kind: record.kind, devices: record.devices, revoked: true, enrolledDevices: await store.enrolledDevices() };
        },
        { existing: true },
      );
      print(json, result, () =>
        result.kind === 'operator'
          ? `revoked operator token ${hash}: the operator API refuses it from now on`
          : `revoked enrollment token ${hash} (${result.devices} device${result.devices === 1 ? '' : 's'}): its reports are refused from now on; enrolled devices now ${result.enrolledDevices}`,
      );
    });

  fleet
    .command('plan')
    .description('give a published patch a rollout plan and start it: its first stage is recorded and published at once')
    .argument('<id>', 'patch id (its newest published version)', patchId)
    .addOption(repoOption())
    .option('--stages <list>', `rollout percentages, strictly increasing, in (0, 100] (default ${DEFAULT_STAGES.join(',')})`, parseStages)
    .option('--version <n>', 'the published version to roll out (default: the newest)', whole('--version', 1, 2 ** 31 - 1))
    .option('--soak <seconds>', `seconds each stage runs before the next (default ${DEFAULT_SOAK_SECONDS})`, whole('--soak', 0, MAX_SOAK_SECONDS))
    .option('--min-reports <n>', `devices with a verdict (confirmed or failed) a stage needs to advance (default ${DEFAULT_MIN_REPORTS})`, whole('--min-reports', 1, MAX_MIN_REPORTS))
    .option('--max-failure <pct>', `failure rate (percent) above which the rollout halts, with confidence (default ${DEFAULT_MAX_FAILURE_PCT})`, decimal('--max-failure', 0, 100, { maxExclusive: true }))
    .option('--auto-recall', 'a halt also recalls the patch (devices remove it at their next restart)')
    .addOption(dbOption())
    .option('--json', 'machine-readable output')
    .action(async (id: string, opts: RepoOptions & { stages: number[]; version?: number; soak?: number; minReports?: number; maxFailure?: number; autoRecall?: boolean }) => {
      const json = globalJson() || Boolean(opts.json);
      const url = dbUrl(opts);
      checkPlacement(url, opts.repo);
      const repository = await openRepository(opts.repo);
      const result = await withStore(url, async (store) => {
        const { RolloutController } = controllerModule();
        const controller = new RolloutController({ store, repoDir: repository.dir, lockWaitMs: lockWaitMs() });
        return controller.plan(id, {
          version: opts.version,
          stages: opts.stages,
          soakSeconds: opts.soak,
          minReports: opts.minReports,
          maxFailurePct: opts.maxFailure,
          autoRecall: Boolean(opts.autoRecall),
        });
      });
      checkPublished(result);
      const plan = result.plan;
      print(json, result, () =>
        [
          `planned ${plan.patch} v${plan.version}: stages ${plan.stages.join(', ')}%, soak ${plan.soakSeconds} s, ${plan.minReports} verdicts a stage, halt above ${plan.maxFailurePct}%${plan.autoRecall ? ', auto-recall' : ''}`,
          `  ${decisionLine(result.decision)}`,
        ].join('\n'),
      );
    });

  fleet
    .command('status')
    .description('per patch: state, stage, rollout, counts per outcome, failure rate, decisions with their reasons')
    .argument('[id]', 'only this patch', patchId)
    .addOption(dbOption())
    .option('--json', 'machine-readable output')
    .action(async (id: string | undefined, opts: DbOptions) => {
      const json = globalJson() || Boolean(opts.json);
      const entries = await withStore(dbUrl(opts), (store) => fleetStatus(store, id), { existing: true });
      if (id !== undefined && entries.length === 0) throw new RevpatchError('E_UNKNOWN_PATCH', `no rollout plan for ${id}`);
      print(json, entries, () => statusText(entries));
    });

  const actions = {
    halt: 'stop offering ID to devices that do not have it; devices that have it keep it',
    resume: 'lift a halt: the rollout goes on from its current stage',
    recall: 'recall ID: every device removes it at its next restart',
    advance: 'move ID to its next stage now, without waiting for soak or reports',
  } as const;
  for (const [action, description] of Object.entries(actions) as [keyof typeof actions, string][]) {
    fleet
      .command(action)
      .description(description)
      .argument('<id>', 'patch id', patchId)
      .addOption(repoOption())
      .option('--version <n>', "the plan's patch version (default: the newest planned)", whole('--version', 1, 2 ** 31 - 1))
      .addOption(dbOption())
      .option('--json', 'machine-readable output')
      .action(async (id: string, opts: RepoOptions & { version?: number }) => {
        const json = globalJson() || Boolean(opts.json);
        const url = dbUrl(opts);
        checkPlacement(url, opts.repo);
        const repository = await openRepository(opts.repo);
        const result = await withStore(
          url,
          async (store) => {
            const { RolloutController } = controllerModule();
            const controller = new RolloutController({ store, repoDir: repository.dir, lockWaitMs: lockWaitMs() });
            return controller[action](id, opts.version);
          },
          { existing: true },
        );
        checkPublished(result);
        print(json, result, () => decisionLine(result.decision));
      });
  }

  fleet
    .command('simulate')
    .description('a simulated fleet against the real collector and controller over loopback, on a simulated clock')
    .option('--devices <n>', 'simulated devices (default 100000)', whole('--devices', 1, 10_000_000))
    .option('--fail <pct>', 'percent of devices whose health check the patch breaks (default 0)', decimal('--fail', 0, 100))
    .option('--noise <pct>', 'percent of devices that fail for unrelated reasons (default 0.5)', decimal('--noise', 0, 100))
    .option('--seed <s>', 'random seed: a whole number or a word (default 1)', seedArg)
    .option('--stages <list>', `the plan's rollout percentages (default ${DEFAULT_STAGES.join(',')})`, parseStages)
    .option('--soak <seconds>', `simulated seconds each stage runs (default ${DEFAULT_SOAK_SECONDS})`, whole('--soak', 0, MAX_SOAK_SECONDS))
    .option('--min-reports <n>', `verdicts a stage needs (default ${DEFAULT_MIN_REPORTS})`, whole('--min-reports', 1, MAX_MIN_REPORTS))
    .option('--max-failure <pct>', `halt threshold, percent (default ${DEFAULT_MAX_FAILURE_PCT})`, decimal('--max-failure', 0, 100, { maxExclusive: true }))
    .option('--auto-recall', 'a halt also recalls the patch')
    .addOption(new Option('--rule <rule>', "the controller's rule, or Eclipse hawkBit's default thresholds for comparison").choices(['revpatch', 'hawkbit']).default('revpatch'))
    .option('--json', 'machine-readable output')
    .action(
      async (opts: {
        devices?: number;
        fail?: number;
        noise?: number;
        seed?: number | string;
        stages?: number[];
        soak?: number;
        minReports?: number;
        maxFailure?: number;
        autoRecall?: boolean;
        rule: 'revpatch' | 'hawkbit';
        json?: boolean;
      }) => {
        const json = globalJson() || Boolean(opts.json);
        // Where the run stands, on a terminal only (never in --json or a pipe).
        const progress = !json && Boolean(process.stderr.isTTY);
        const result = await simulateModule().simulateFleet({
          devices: opts.devices,
          failPct: opts.fail,
          noisePct: opts.noise,
          seed: opts.seed,
          stages: opts.stages,
          soakSeconds: opts.soak,
          minReports: opts.minReports,
          maxFailurePct: opts.maxFailure,
          autoRecall: opts.autoRecall,
          rule: opts.rule,
          onTick: progress
            ? (p) => {
                const line = `simulated ${duration(Math.round(p.simulatedSeconds))}: ${p.state} at ${p.rollout}%, ${p.installed} installed, ${p.reportsSent} reports`;
                process.stderr.write(`\r${line.padEnd(78)}`);
              }
            : undefined,
        });
        if (progress) process.stderr.write(`\r${''.padEnd(78)}\r`);
        print(json, result, () => simulationText(result));
      },
    );
}

function tokenHashArg(value: string): string {
  if (!/^[0-9a-fA-F]{64}$/.test(value)) throw new InvalidArgumentError('--token-hash must be 64 hex digits (the SHA-256 fleet enroll printed)');
  return value.toLowerCase();
}

/** The device or operator token in `file`: E_NOT_FOUND if it is missing, E_KEY if it does not hold one fleet token. */
async function readAnyToken(file: string): Promise<string> {
  const token = await readTokenFile(file).catch((err: RevpatchError) => {
    throw err.code === 'E_KEY' ? new RevpatchError('E_KEY', `${file} does not hold a fleet token (rpd_… or rpo_…)`, { cause: err }) : err;
  });
  if (!tokensModule().isWellFormedToken(token)) throw new RevpatchError('E_KEY', `${file} does not hold a fleet token (rpd_… or rpo_…)`);
  return token;
}

function seedArg(value: string): number | string {
  if (/^\d{1,15}$/.test(value)) return Number(value);
  if (value.length === 0 || value.length > 200) throw new InvalidArgumentError('--seed must be a whole number or a word of at most 200 characters');
  return value;
}

type SimulationResult = Awaited<ReturnType<ReturnType<typeof simulateModule>['simulateFleet']>>;

const duration = (seconds: number | null) => {
  if (seconds === null) return 'never';
  if (seconds < 120) return `${seconds} s`;
  if (seconds < 7200) return `${(seconds / 60).toFixed(1)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
};

/**
 * Why a stalled run stopped, and what moves it: every device of the stage
 * has reported and the stage still has fewer verdicts than the plan asks,
 * so the fleet is too small for the plan at that stage.
 */
function stalledHint(r: SimulationResult): string {
  const first = r.finalRollout === r.plan.stages[0];
  return (
    `  hint: the fleet is too small for the plan: the ${r.finalRollout}% stage of ${r.devices} devices cannot give the ${r.plan.minReports} verdicts it needs; ` +
    `use a larger ${first ? 'first ' : ''}stage (--stages) or a lower --min-reports`
  );
}

export function simulationText(r: SimulationResult): string {
  const share = (n: number) => `${n} (${((100 * n) / r.devices).toFixed(3)}% of the fleet)`;
  const lines = [
    `simulated ${r.devices} devices, patch breaks ${r.failPct}%, background failures ${r.noisePct}%, seed ${r.seed}, rule ${r.rule}`,
    `  plan: stages ${r.plan.stages.join(', ')}%, soak ${r.plan.soakSeconds} s, ${r.plan.minReports} verdicts a stage, halt above ${r.plan.maxFailurePct}%${r.plan.autoRecall ? ', auto-recall' : ''}`,
    `  outcome: ${r.state.toUpperCase()} at ${r.finalRollout}%${r.stalled ? ' (stalled)' : ''}; stages reached ${r.stagesReached.join(' → ') || 'none'}`,
    ...(r.stalled ? [stalledHint(r)] : []),
    `  installed ${share(r.installed)}; hurt ${share(r.hurt)}`,
    `  booted ${r.booted}, confirmed ${r.confirmed}, rolled back ${r.rolledBack} (unrelated ${r.noiseFailures}), removed by recall ${r.recalledOnDevices}`,
    `  time to halt ${duration(r.timeToHaltSeconds)}, to complete ${duration(r.timeToCompleteSeconds)} (simulated; ${duration(r.simulatedSeconds)} in all${r.timedOut ? ', stopped at the time limit' : ''})`,
    `  reports ingested ${r.reportsIngested} in ${r.batches} batches; ${r.ticks} controller ticks; ${r.wallSeconds.toFixed(1)} s of real time`,
    '  decisions:',
    ...r.decisions.filter((d) => d.action !== 'hold').map((d) => `    +${duration(d.atSeconds).padEnd(9)} ${d.action.padEnd(8)} ${d.fromRollout}% → ${d.toRollout}%: ${d.reason}`),
  ];
  return lines.join('\n');
}
