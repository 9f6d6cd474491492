/**
 * `npm start`: the whole story on an embedded default, no arguments.
 *
 * First run: sample images (a 32 MiB base, fix-1 over it, fix-2 stacked on
 * fix-1), a publisher key, two signed patches and a TUF repository holding
 * them, kept in ./revpatch-demo/template. Every run then copies that
 * repository, re-signs its timestamp (as a vendor's cron job would), serves
 * it on 127.0.0.1, sets a fresh device up over the base and lets the agent
 * do its job: check, download (a progress bar on a terminal), stage,
 * restart, health check, confirm; then the vendor recalls fix-2 and the
 * next restart removes it. Each step is printed; the exported image is
 * compared with the expected one after each restart.
 *
 * Then the vendor's side (lib/cli/walkthrough_fleet.ts): a fleet service in
 * this process with its SQLite database in the run directory, a bad patch
 * (fix-3) planned in stages, simulated devices reporting, and the rollout
 * controller halting and recalling it; `fleet status` is printed at the end.
 * The fleet service serves its dashboard meanwhile: its URL and how to log
 * in are printed, no browser is opened. `npm start -- --serve` keeps the
 * service up after the story until Ctrl-C, for a look at the dashboard;
 * without it the run ends by itself.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import * as crypto from 'node:crypto';
import { Agent, type RestartAnswer } from '../agent/agent';
import { Device } from '../device/device';
import { writeKeyPair } from '../patch/keys';
import { createPatch } from '../publisher/create';
import { RevpatchError, toRevpatchError } from '../engine/errors';
import { openAgentLog } from '../agent/log';
import { progressBar, type ProgressBar } from './progress';
import { Repository } from '../repo/publisher';
import { RepositoryClient } from '../repo/client';
import { serveRepository } from '../repo/serve';
import { runFleetWalkthrough } from './walkthrough_fleet';
import { untilStopped } from './stop_signal';

const BLOCK = 4096;
const IMAGE_BYTES = 32 * 1024 * 1024;

/** Deterministic bytes, so every run shows the same digests. */
function stream(seed: string, size: number): Buffer {
  const out = Buffer.alloc(size);
  let counter = 0;
  for (let off = 0; off < size; off += 32) {
    crypto.createHash('sha256').update(`${seed}:${counter++}`).digest().copy(out, off);
  }
  return out;
}

/** A base image: "code" regions of random bytes, text tables, zero gaps. */
export function sampleBase(): Buffer {
  const image = Buffer.alloc(IMAGE_BYTES);
  stream('code', 12 * 1024 * 1024).copy(image, 0);
  const table = Buffer.from('revpatch sample configuration table entry;'.repeat(40000));
  table.copy(image, 16 * 1024 * 1024);
  stream('data', 8 * 1024 * 1024).copy(image, 22 * 1024 * 1024);
  return image;
}

/** fix-1: a few rewritten blocks, an edit that shifts bytes, moved and zeroed blocks, growth. */
export function samplePatched(base: Buffer): Buffer {
  const image = Buffer.alloc(IMAGE_BYTES + 64 * 1024);
  base.copy(image);
  stream('fix-1', 3 * BLOCK).copy(image, 100 * BLOCK);
  image.write('security fix: bounds check added ', 2 * 1024 * 1024 + 123);
  const shifted = Buffer.concat([Buffer.from('INSERTED'), base.subarray(5 * 1024 * 1024, 5 * 1024 * 1024 + 16 * BLOCK)]);
  shifted.copy(image, 5 * 1024 * 1024, 0, 16 * BLOCK);
  base.copy(image, 30 * 1024 * 1024, 1 * 1024 * 1024, 1 * 1024 * 1024 + 8 * BLOCK);
  image.fill(0, 22 * 1024 * 1024, 22 * 1024 * 1024 + 4 * BLOCK);
  image.write('v2', 16 * 1024 * 1024 + 40);
  stream('new-tail', 64 * 1024).copy(image, IMAGE_BYTES);
  return image;
}

/** fix-2, stacked on fix-1: another handful of blocks. */
export function sampleSecondFix(fixed: Buffer): Buffer {
  const image = Buffer.from(fixed);
  stream('fix-2', 5 * BLOCK).copy(image, 700 * BLOCK);
  image.write('security fix 2: input validated ', 9 * 1024 * 1024 + 7);
  return image;
}

/** fix-3, over fix-1: the bad patch of the fleet part (a version string changed, say). */
export function sampleBadFix(fixed: Buffer): Buffer {
  const image = Buffer.from(fixed);
  image.write('version 99.0 (incompatible) ', 16 * 1024 * 1024 + 40);
  stream('fix-3', 2 * BLOCK).copy(image, 900 * BLOCK);
  return image;
}

interface Template {
  dir: string;
  base: string;
  images: Record<'fix-1' | 'fix-2', string>;
  pub: string;
  repo: string;
  /** The bad patch of the fleet part, signed, not in the repository. */
  badPatch: string;
}

/** Made once beside the template (also in templates made before the fleet part existed). */
async function ensureBadPatch(t: Template): Promise<void> {
  const ready = await fs.stat(t.badPatch).then(
    () => true,
    () => false,
  );
  if (ready) return;
  const image = path.join(t.dir, 'fix-3.img');
  await fs.writeFile(image, sampleBadFix(await fs.readFile(t.images['fix-1'])));
  const tmp = `${t.badPatch}.tmp`;
  await fs.rm(tmp, { force: true });
  await createPatch({
    from: t.images['fix-1'],
    to: image,
    keyPath: path.join(t.dir, 'keys', 'revpatch.key'),
    id: 'fix-3',
    parent: 'fix-1',
    out: tmp,
    title: 'Third sample fix (bad: breaks the health check)',
    severity: 'high',
  });
  await fs.rename(tmp, t.badPatch);
  await fs.rm(image, { force: true });
}

/** Made once: images, key, patches and the repository. */
async function ensureTemplate(dir: string, log: (line: string) => void): Promise<Template> {
  const t: Template = {
    dir,
    base: path.join(dir, 'base.img'),
    images: { 'fix-1': path.join(dir, 'fix-1.img'), 'fix-2': path.join(dir, 'fix-2.img') },
    pub: path.join(dir, 'keys', 'revpatch.pub'),
    repo: path.join(dir, 'repo'),
    badPatch: path.join(dir, 'fix-3.rvp'),
  };
  const ready = await fs.stat(path.join(dir, 'READY')).then(
    () => true,
    () => false,
  );
  if (ready) {
    log(`sample repository: ${t.repo} (made earlier; delete ${dir} to make it again)`);
    await ensureBadPatch(t);
    return t;
  }
  log('first run: making sample images, a publisher key, two patches and a repository, and a bad third patch for the fleet part');
  await fs.rm(dir, { recursive: true, force: true });
  await fs.mkdir(dir, { recursive: true });
  const base = sampleBase();
  const one = samplePatched(base);
  await fs.writeFile(t.base, base);
  await fs.writeFile(t.images['fix-1'], one);
  await fs.writeFile(t.images['fix-2'], sampleSecondFix(one));
  const keys = await writeKeyPair(path.join(dir, 'keys'));
  const files = { 'fix-1': path.join(dir, 'fix-1.rvp'), 'fix-2': path.join(dir, 'fix-2.rvp') };
  await createPatch({ from: t.base, to: t.images['fix-1'], keyPath: keys.secretKeyPath, id: 'fix-1', out: files['fix-1'], title: 'Sample security fix', severity: 'high' });
  await createPatch({
    from: t.images['fix-1'],
    to: t.images['fix-2'],
    keyPath: keys.secretKeyPath,
    id: 'fix-2',
    parent: 'fix-1',
    out: files['fix-2'],
    title: 'Second sample fix',
    severity: 'critical',
  });
  const repo = await Repository.init(t.repo, { publisherKey: keys.publicKeyPath });
  await repo.publish(files['fix-1']);
  await repo.publish(files['fix-2']);
  await ensureBadPatch(t);
  await fs.writeFile(path.join(dir, 'READY'), 'ok\n');
  return t;
}

export interface WalkthroughOptions {
  /** Keep the fleet service and its dashboard up after the story until this resolves (`--serve`). */
  serve?: (dashboard: { url: string; tokenFile: string }) => Promise<void>;
}

export async function runWalkthrough(workDir: string, log: (line: string) => void = console.log, options: WalkthroughOptions = {}): Promise<void> {
  const dir = path.resolve(workDir);
  log(`revpatch walkthrough in ${dir}\n`);
  const started = process.hrtime.bigint();
  const elapsed = () => `${(Number(process.hrtime.bigint() - started) / 1e9).toFixed(2).padStart(6)} s`;
  const say = (who: string, text: string) => log(`${elapsed()}  ${who.padEnd(9)} ${text}`);

  const template = await ensureTemplate(path.join(dir, 'template'), (line) => say('setup', line));
  const run = path.join(dir, 'run');
  await fs.rm(run, { recursive: true, force: true });
  await fs.mkdir(run, { recursive: true });
  const repoDir = path.join(run, 'repo');
  await fs.cp(template.repo, repoDir, { recursive: true });
  const vendor = await Repository.open(repoDir);
  await vendor.refresh();
  say('vendor', `repository with ${vendor.patches().map((p) => `${p.id} v${p.version}`).join(', ')}; timestamp re-signed`);

  const server = await serveRepository(repoDir, { host: '127.0.0.1', port: 0 });
  const logFile = openAgentLog(path.join(run, 'state'), 'info');
  try {
    say('vendor', `serving it on ${server.url}`);
    const stateDir = path.join(run, 'state');
    const device = await Device.init(stateDir, {
      volume: template.base,
      trust: template.pub,
      repository: { url: server.url, root: path.join(repoDir, 'metadata', '1.root.json') },
    });
    say('device', `set up over the base image (digest ${device.config.baseDigest.slice(0, 16)}…)`);

    const client = await RepositoryClient.open(stateDir, { url: server.url, rootPath: path.join(repoDir, 'metadata', '1.root.json') });
    let restartAsked = false;
    const agent = new Agent({
      stateDir,
      client,
      logger: logFile.logger,
      deviceId: 'walkthrough-device',
      hooks: {
        requestRestart: (reason): RestartAnswer => {
          say('host', `restart requested ${reason}: accepted`);
          restartAsked = true;
          return 'accepted';
        },
        healthCheck: async () => {
          say('host', 'health check: the system came up');
          return true;
        },
      },
    });
    const bars = new Map<string, ProgressBar>();
    const done = new Set<string>();
    agent.on('progress', (p) => {
      const key = `${p.phase} ${p.patch}`;
      if (!bars.has(key)) bars.set(key, progressBar(key.padEnd(16), true));
      bars.get(key)!.update(p.done, p.total);
      if (p.done >= p.total && !done.has(key)) {
        done.add(key);
        bars.get(key)!.stop();
        if (p.phase === 'download') say('agent', `downloaded ${p.patch} (${p.total} bytes, hash and length checked)`);
      }
    });
    agent.on('staged', (p) => say('agent', `staged ${p.id} v${p.version}`));
    agent.on('restart-required', (r) => say('agent', `restart required for ${r.patches.join(', ')} (${r.reason})`));
    agent.on('activated', (ps) => say('agent', `confirmed: ${ps.map((p) => p.id).join(', ')} active`));
    agent.on('recalled', (p) => say('agent', `${p.id} recalled: ${p.state}`));
    agent.on('rolled-back', (p) => say('agent', `${p.id} rolled back: ${p.reason ?? ''}`));

    const exported = path.join(run, 'exported.img');
    const restart = async (expect: string, what: string) => {
      if (!restartAsked) throw new RevpatchError('E_STATE', 'the agent did not ask for the restart it needs');
      restartAsked = false;
      const d = await Device.open(stateDir);
      const report = await d.boot();
      const parts = [
        report.trial.length ? `trial: ${report.trial.join(', ')}` : '',
        report.removed.length ? `removed: ${report.removed.join(', ')}` : '',
      ].filter(Boolean);
      say('device', `restart (boot): ${parts.join('; ') || 'nothing changed'}; view ${report.viewDigest.slice(0, 16)}…`);
      await agent.startup();
      await (await Device.open(stateDir)).export(exported);
      const same = (await fs.readFile(exported)).equals(await fs.readFile(expect));
      say('device', `exported image equals ${what}: ${same ? 'yes' : 'NO'}`);
      if (!same) throw new RevpatchError('E_HASH_MISMATCH', `the exported image is not ${what}`);
    };

    say('agent', 'check: refresh the repository, apply the policy, download, stage');
    const first = await agent.checkOnce();
    for (const bar of bars.values()) bar.stop();
    if (first.staged.length !== 2) {
      throw new RevpatchError('E_STATE', `expected fix-1 and fix-2 staged, got ${JSON.stringify(first)}`);
    }
    await restart(template.images['fix-2'], 'fix-2 (over fix-1)');

    const recalled = await vendor.recall('fix-2');
    say('vendor', `recalled ${recalled.map((p) => p.id).join(', ')}: targets, snapshot and timestamp re-signed`);
    say('agent', 'check');
    const second = await agent.checkOnce();
    if (!second.recalled.includes('fix-2')) throw new RevpatchError('E_STATE', 'the agent did not act on the recall');
    await restart(template.images['fix-1'], 'fix-1 again');

    const listing = (await Device.open(stateDir)).list();
    say('device', listing.map((p) => `${p.id} ${p.state}${p.reason ? ` (${p.reason})` : ''}`).join(', '));
    say('device', `logs: ${path.join(stateDir, 'agent.log')}, audit trail: ${path.join(stateDir, 'audit.ndjson')}`);

    log('');
    say('fleet', 'the vendor\'s side: device reports and a rollout controller that halts a bad patch');
    await runFleetWalkthrough({ runDir: run, repoDir, vendor, repoServer: server, badPatch: template.badPatch, say, log, serve: options.serve });
    say('done', 'see docs/fleet.md for the fleet service, and revpatch fleet --help');
  } finally {
    await logFile.close();
    await server.close();
  }
}

if (require.main === module) {
  const args = process.argv.slice(2);
  const unknown = args.filter((a) => a.startsWith('-') && a !== '--serve');
  const dirs = args.filter((a) => !a.startsWith('-'));
  if (unknown.length > 0 || dirs.length > 1) {
    process.stderr.write('usage: npm start [-- [--serve] [DIR]]  (--serve keeps the fleet dashboard up after the walkthrough)\n');
    process.exit(2);
  }
  const workDir = dirs[0] ?? path.join(process.cwd(), 'revpatch-demo');
  runWalkthrough(workDir, console.log, { serve: args.includes('--serve') ? () => untilStopped() : undefined }).catch((err) => {
    const e = toRevpatchError(err);
    process.stderr.write(`error ${e.code}: ${e.message}\n`);
    process.exitCode = 1;
  });
}
