/**
 * The command line (DESIGN.md, "Command line"): the contract acceptance
 * tests use. Exit 0 on success; 1 on failure with `error E_CODE: message`
 * on stderr; 2 on usage errors. `--json` prints machine output on stdout.
 */
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { Device } from '../device/device';
import { RevpatchError, toRevpatchError } from '../engine/errors';
import { writeKeyPair } from '../patch/keys';
import { createPatch, MAX_THREADS } from '../publisher/create';
import { inspectPatch } from '../patch/inspect';
import { progressBar } from './progress';
import { parseByteSize, parseCount } from './byte_size';
import type { PatchRecord } from '../device/record';
import { registerRepo } from './cli_repo';
import { installOfferedById, registerAgent } from './cli_agent';
import { ID_PATTERN } from '../patch/manifest';
import { registerBench } from './cli_bench';
import { readReportConfig, readReportingInput, reportDir, writeReportConfig } from '../report/config';
import { readQueueStats, type QueueSnapshot } from '../report/queue';
import { registerFleet } from './cli_fleet';
import { registerServeView } from './cli_serve_view';
import { registerVerify } from './cli_verify';

interface GlobalOptions {
  state?: string;
  json?: boolean;
  wait?: number;
}

class UsageError extends Error {}

function stateDir(options: GlobalOptions): string {
  return path.resolve(options.state ?? process.env.REVPATCH_STATE ?? './revpatch-state');
}

function openOptions(options: GlobalOptions) {
  return { lockWaitMs: (options.wait ?? 0) * 1000 };
}

function integer(name: string, min: number, max: number) {
  return (value: string): number => {
    if (!/^\d+$/.test(value)) throw new InvalidArgumentError(`${name} must be a whole number`);
    const n = Number(value);
    if (n < min || n > max) throw new InvalidArgumentError(`${name} must be from ${min} to ${max}`);
    return n;
  };
}

/** Whether something exists at `file` (a path that exists is always a file install). */
async function pathExists(file: string): Promise<boolean> {
  try {
    await fs.lstat(file);
    return true;
  } catch {
    return false;
  }
}

function print(options: GlobalOptions, json: unknown, text: () => string): void {
  process.stdout.write(options.json ? `${JSON.stringify(json, null, 2)}\n` : `${text()}\n`);
}

function patchLine(p: PatchRecord): string {
  const attempts = p.state === 'trial' ? ` (failed attempts ${p.bootAttempts}, early boots ${p.earlyBoots})` : '';
  const reason = p.reason && (p.state === 'failed' || p.state === 'removed') ? ` — ${p.reason}` : '';
  return `${p.id.padEnd(24)} v${String(p.version).padEnd(5)} ${p.state.padEnd(16)} parent ${p.parent ?? 'base'}${attempts}${reason}`;
}

function listJson(patches: PatchRecord[]) {
  return patches.map((p) => ({
    id: p.id,
    state: p.state,
    version: p.version,
    parent: p.parent,
    title: p.title,
    severity: p.severity,
    bootAttempts: p.bootAttempts,
    earlyBoots: p.earlyBoots,
    installedAt: p.installedAt,
    stateChangedAt: p.stateChangedAt,
    targetDigest: p.targetDigest,
    reason: p.reason ?? null,
  }));
}

/**
 * The report queue's counters for `status`, or null when the device does
 * not report. Read from the queue file without its lock (readQueueStats):
 * a running agent owns the queue, and status must neither fail with
 * E_BUSY nor take it over. What only the agent's memory holds (reports
 * sent since it started, the last send error) is not shown.
 */
async function reportStatus(stateDir: string): Promise<({ url: string } & QueueSnapshot) | null> {
  const config = await readReportConfig(stateDir);
  if (!config) return null;
  return { url: config.url, ...(await readQueueStats(reportDir(stateDir))) };
}

export function buildProgram(): Command {
  const program = new Command('revpatch');
  program
    .description('Signed block-level security patches, activated at restart and removed in O(1).')
    .option('--state <dir>', 'device state directory (default $REVPATCH_STATE, else ./revpatch-state)')
    .option('--json', 'machine-readable output')
    .option('--wait <seconds>', 'wait this long for another revpatch process to finish (default: fail with E_BUSY)', integer('--wait', 0, 86400))
    .showHelpAfterError()
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });
  const globals = (): GlobalOptions => program.opts<GlobalOptions>();

  program
    .command('keygen')
    .description('write a new Ed25519 publisher key pair: DIR/revpatch.key (0600) and DIR/revpatch.pub')
    .requiredOption('--out <dir>', 'directory for the key files')
    .action(async (opts: { out: string }) => {
      const keys = await writeKeyPair(opts.out);
      print(globals(), keys, () => `secret key: ${keys.secretKeyPath}\npublic key: ${keys.publicKeyPath}\nkey id:     ${keys.keyId}`);
    });

  program
    .command('create')
    .description('make a signed patch that turns image OLD into image NEW')
    .requiredOption('--from <old>', 'the image the patch applies to')
    .requiredOption('--to <new>', 'the image the patch produces')
    .requiredOption('--key <key>', 'publisher secret key (revpatch.key)')
    .requiredOption('--id <id>', 'patch id')
    .requiredOption('--out <file>', 'patch file to write')
    .option('--parent <id>', 'id of the patch this one is stacked on (default: the base)')
    .option('--title <title>', 'human-readable title')
    .option('--version <n>', 'patch version (anti-rollback)', integer('--version', 1, 2 ** 31 - 1))
    .addOption(new Option('--severity <level>', 'severity').choices(['low', 'moderate', 'high', 'critical']))
    .option('--block-size <bytes>', 'block size', integer('--block-size', 512, 1 << 20))
    .option('--expires <date>', 'ISO date-time after which devices refuse the patch')
    .option('--max-memory <size>', 'peak memory of the whole run: bytes or with K/M/G (default 1G); part of what makes the patch')
    .option('--threads <n>', 'threads encoding regions, 0 = one per core (default 0); never changes the patch')
    .action(async (opts) => {
      const maxMemory = opts.maxMemory === undefined ? undefined : parseByteSize('--max-memory', opts.maxMemory);
      const threads = opts.threads === undefined ? undefined : parseCount('--threads', opts.threads, 0, MAX_THREADS);
      const bar = progressBar('create', !globals().json);
      try {
        const result = await createPatch({
          from: opts.from,
          to: opts.to,
          keyPath: opts.key,
          id: opts.id,
          out: opts.out,
          parent: opts.parent,
          title: opts.title,
          version: opts.version,
          severity: opts.severity,
          blockSize: opts.blockSize,
          expires: opts.expires,
          maxMemory,
          threads,
          onProgress: bar.update,
        });
        bar.stop();
        const m = result.manifest;
        print(globals(), { path: result.path, size: result.size, manifest: m }, () =>
          [
            `wrote ${result.path} (${result.size} bytes)`,
            `  id ${m.id} v${m.version}, parent ${m.parent ?? 'base'}`,
            `  ${m.operationCount} operations, ${m.changedBlocks} changed blocks, payload ${m.payload.size} bytes`,
          ].join('\n'),
        );
      } finally {
        bar.stop();
      }
    });

  program
    .command('inspect')
    .description('show a patch file: manifest, operation statistics, signature verdict')
    .argument('<file>', 'patch file')
    .option('--trust <pub>', 'publisher public key to verify the signature and payload with')
    .option('--json', 'machine-readable output')
    .action(async (file: string, opts: { trust?: string; json?: boolean }) => {
      const info = await inspectPatch(file, opts.trust);
      const options = { ...globals(), json: globals().json || opts.json };
      print(options, info, () => {
        const m = info.manifest;
        const lines = [
          `patch ${m.id} v${m.version}: ${m.title}`,
          `  severity ${m.severity}, parent ${m.parent ?? 'base'}, removable ${m.removable}`,
          `  created ${m.created}${m.expires ? `, expires ${m.expires}` : ''}`,
          `  block size ${m.blockSize}; source ${m.source.size} bytes ${m.source.digest}`,
          `  target ${m.target.size} bytes ${m.target.digest}`,
          `  payload ${m.payload.size} bytes in ${m.payload.chunks.length} chunks, ${m.operationCount} operations`,
          `  signature: ${info.signature}${info.signature === 'unchecked' ? ' (pass --trust PUB to verify)' : ` (key ${m.keyId})`}`,
          `  payload:   ${info.payload}`,
        ];
        if (info.requires) {
          const r = info.requires;
          const needs = [
            ...(r.deltaVersions ?? []).map((v) => `delta version ${v}`),
            ...(r.zstd ? [`zstd ${r.zstd} (its zstd stream recipes)`] : []),
            ...(r.deflate ? ['deflate streams'] : []),
          ];
          lines.push(`  requires:  ${needs.join(', ')}`);
          lines.push(
            info.unmet.length === 0 ? '    this engine can apply it' : `    this engine cannot apply it: ${info.unmet.join('; ')}`,
          );
        }
        const stats = info.stats?.byType ?? m.operations;
        for (const [type, s] of Object.entries(stats)) {
          if (s.count > 0) lines.push(`    ${type.padEnd(15)} ${s.count} ops, ${s.targetBlocks} blocks, ${s.dataBytes} data bytes`);
        }
        return lines.join('\n');
      });
    });

  program
    .command('init')
    .description('set a device up over a base volume')
    .requiredOption('--volume <img>', 'base volume (image file or block device); never written')
    .requiredOption('--trust <pub>', 'publisher public key')
    .option('--repo <url>', 'repository URL (with --root)')
    .option('--root <root>', 'trusted root metadata of the repository (with --repo)')
    .option('--block-size <bytes>', 'block size', integer('--block-size', 512, 1 << 20))
    .option('--max-boot-attempts <n>', 'unconfirmed boots before a trial patch is rolled back', integer('--max-boot-attempts', 1, 100))
    .option('--max-early-boots <n>', 'boots ending before the health check that a trial patch survives', integer('--max-early-boots', 1, 100))
    .option('--live <img>', 'keep an exported image of the booted view here, refreshed at boot')
    .option('--report <url>', 'fleet service to report outcomes to (with --report-token)')
    .option('--report-token <file>', 'file holding the enrollment token (revpatch fleet enroll; with --report)')
    .action(async (opts) => {
      if (Boolean(opts.repo) !== Boolean(opts.root)) throw new UsageError('--repo and --root go together');
      if (Boolean(opts.report) !== Boolean(opts.reportToken)) throw new UsageError('--report and --report-token go together');
      // Checked before the device is set up, so bad input leaves no state behind.
      const reporting = opts.report ? await readReportingInput({ url: opts.report, tokenFile: opts.reportToken }) : null;
      const device = await Device.init(stateDir(globals()), {
        ...openOptions(globals()),
        maxEarlyBoots: opts.maxEarlyBoots,
        volume: opts.volume,
        trust: opts.trust,
        blockSize: opts.blockSize,
        maxBootAttempts: opts.maxBootAttempts,
        liveImage: opts.live ?? null,
        repository: opts.repo ? { url: opts.repo, root: path.resolve(opts.root) } : null,
      });
      if (reporting) await writeReportConfig(device.stateDir, reporting);
      const c = device.config;
      const report = reporting ? { url: reporting.url } : null;
      print(globals(), { stateDir: device.stateDir, ...c, report }, () =>
        `device set up in ${device.stateDir}\n  volume ${c.volume} (${c.baseSize} bytes)\n  base digest ${c.baseDigest}` +
        (report ? `\n  reports to ${report.url}` : ''),
      );
    });

  program
    .command('install')
    .description('verify a patch file, or fetch an offered patch by id from the repository, and stage it for the next restart')
    .argument('<file|id>', 'patch file, or the id of a patch the configured repository offers')
    .option('--force-rollout', 'install by id even outside the staged rollout (recorded in the audit trail)')
    .option('--device-id <id>', 'the rollout identity, if the agent runs with --device-id')
    .option('--background', 'apply at the lowest CPU and I/O priority (nice 19, idle I/O class), as the agent does')
    .action(async (file: string, opts: { forceRollout?: boolean; deviceId?: string; background?: boolean }) => {
      if (!(await pathExists(file)) && ID_PATTERN.test(file)) {
        const patch = await installOfferedById(stateDir(globals()), file, { ...opts, json: globals().json, wait: globals().wait });
        print(globals(), patch, () => `staged ${patch.id} v${patch.version} from the repository; it takes effect at the next restart (revpatch boot)`);
        return;
      }
      if (opts.forceRollout || opts.deviceId) throw new UsageError('--force-rollout and --device-id apply to an install by id');
      const device = await Device.open(stateDir(globals()), openOptions(globals()));
      const bar = progressBar('install', !globals().json);
      try {
        const patch = await device.install(file, { onProgress: bar.update, background: opts.background === true });
        bar.stop();
        print(globals(), patch, () => `staged ${patch.id} v${patch.version}; it takes effect at the next restart (revpatch boot)`);
      } finally {
        bar.stop();
      }
    });

  program
    .command('boot')
    .description('the startup sequence: activate staged patches, drop removals, roll back failed trials')
    .action(async () => {
      const device = await Device.open(stateDir(globals()), openOptions(globals()));
      const report = await device.boot();
      print(globals(), report, () =>
        [
          `booted view ${report.viewDigest}`,
          ...report.activated.map((id) => `  ${id}: trial (confirm after the health check)`),
          ...report.removed.map((id) => `  ${id}: removed`),
          ...report.failed.map((id) => `  ${id}: failed and rolled back`),
          ...(report.liveImage ? [`  live image refreshed: ${report.liveImage}`] : []),
        ].join('\n'),
      );
    });

  program
    .command('reached')
    .description('the system is up and its health check is about to run: an unconfirmed boot now counts against trial patches')
    .action(async () => {
      const device = await Device.open(stateDir(globals()), openOptions(globals()));
      const marked = await device.reached();
      print(globals(), { reached: marked }, () => (marked.length ? `health check pending for: ${marked.join(', ')}` : 'no trial patch'));
    });

  program
    .command('confirm')
    .description('the health check passed: trial patches become active')
    .action(async () => {
      const device = await Device.open(stateDir(globals()), openOptions(globals()));
      const confirmed = await device.confirm();
      print(globals(), { confirmed }, () => (confirmed.length ? `active: ${confirmed.join(', ')}` : 'nothing to confirm'));
    });

  program
    .command('remove')
    .description('remove a patch (and all stacked on it) at the next restart')
    .argument('<id>', 'patch id')
    .action(async (id: string) => {
      const device = await Device.open(stateDir(globals()), openOptions(globals()));
      const changed = await device.remove(id);
      print(globals(), listJson(changed), () =>
        changed.map((p) => `${p.id}: ${p.state === 'removed' ? 'removed' : 'removed at the next restart'}`).join('\n'),
      );
    });

  for (const name of ['list', 'status'] as const) {
    program
      .command(name)
      .description(name === 'list' ? 'installed patches and their states' : 'the device: views, pending restart, patches')
      .option('--json', 'machine-readable output')
      .action(async (opts: { json?: boolean }) => {
        const options = { ...globals(), json: globals().json || opts.json };
        const device = await Device.open(stateDir(options), openOptions(options));
        if (name === 'list') {
          const patches = device.list();
          print(options, listJson(patches), () => (patches.length ? patches.map(patchLine).join('\n') : 'no patches installed'));
          return;
        }
        const status = await device.status();
        const reports = await reportStatus(device.stateDir);
        print(options, { ...status, patches: listJson(status.patches), reports }, () =>
          [
            `state ${status.stateDir} (generation ${status.generation}, ${status.boots} boots)`,
            `volume ${status.volume}`,
            `base        ${status.baseDigest}`,
            ...(status.baseChanges.length
              ? [
                  `            base volume changed since it was recorded (${status.baseChanges.join(', ')}): ` +
                    'the digests here are the record\'s, not checked against its bytes; run `revpatch verify`',
                ]
              : []),
            `booted view ${status.bootedDigest}`,
            `next boot   ${status.nextBootDigest}${status.restartRequired ? '  (restart required)' : ''}`,
            reports
              ? `reports     to ${reports.url}: ${reports.queued} queued (${reports.queuedBytes} bytes), ${reports.dropped} dropped, ${reports.rejected} rejected`
              : 'reports     not configured',
            ...status.patches.map((p) => `  ${patchLine(p)}`),
          ].join('\n'),
        );
      });
  }

  program
    .command('export')
    .description('write the booted view as a complete image')
    .requiredOption('--out <img>', 'image file to write (replaced atomically)')
    .addOption(new Option('--mode <mode>', 'reflink the base where possible, or always copy').choices(['auto', 'copy', 'reflink']).default('auto'))
    .action(async (opts: { out: string; mode: 'auto' | 'copy' | 'reflink' }) => {
      const device = await Device.open(stateDir(globals()), openOptions(globals()));
      const bar = progressBar('export', !globals().json);
      try {
        const result = await device.export(opts.out, { mode: opts.mode, onProgress: bar.update });
        bar.stop();
        print(globals(), { out: path.resolve(opts.out), ...result }, () =>
          `wrote ${path.resolve(opts.out)} (${result.size} bytes, ${result.reflinked ? `base reflinked, ${result.bytesWritten} bytes written` : 'copied, every block checked'})` +
          (result.baseVerified
            ? ''
            : '\n  the base was cloned, not read: its blocks were not checked against the tree; run `revpatch verify` to check them'),
        );
      } finally {
        bar.stop();
      }
    });

  registerRepo(program);
  registerVerify(program);
  registerAgent(program);
  registerBench(program);
  registerFleet(program);
  registerServeView(program);
  return program;
}

/** Runs the CLI and returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') return 0;
      return 2;
    }
    if (err instanceof UsageError) {
      process.stderr.write(`usage error: ${err.message}\n`);
      return 2;
    }
    const e = err instanceof RevpatchError ? err : toRevpatchError(err);
    process.stderr.write(`error ${e.code}: ${e.message}\n`);
    if (process.env.REVPATCH_DEBUG) process.stderr.write(`${(err as Error).stack}\n`);
    return 1;
  }
}
