/**
 * `revpatch bench` through the command line on tiny images: the shape of
 * its table and JSON, that it checks every tool's output, that it leaves no
 * temporary files, and its error codes. No timing is asserted: speed is
 * measured by the benchmarks (bench/), never by tests.
 */
import t, { type Test } from 'tap';
import { promises as fs, existsSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { addonBuilt, BLOCK, CliResult, ROOT, runCli, stampedImage, tempDir } from './helpers';

const built = addonBuilt() && existsSync(path.join(ROOT, 'dist', 'cli', 'cli_bench.js'));

function installed(binary: string): boolean {
  return (process.env.PATH ?? '').split(path.delimiter).some((d) => {
    try {
      return d !== '' && statSync(path.join(d, binary)).isFile();
    } catch {
      return false;
    }
  });
}

const expectError = (t: Tap, r: CliResult, code: string) => {
  t.equal(r.code, 1, 'exit 1');
  t.match(r.stderr, new RegExp(`^error ${code}: .+`, 'm'), `stderr says error ${code}`);
};
type Tap = Test;

async function imagePair(dir: string): Promise<{ from: string; to: string }> {
  const base = stampedImage(64, 'base');
  const next = Buffer.from(base);
  stampedImage(4, 'fix').copy(next, 9 * BLOCK);
  next.write('a few bytes edited in place', 30 * BLOCK + 100);
  const from = path.join(dir, 'old.img');
  const to = path.join(dir, 'new.img');
  await fs.writeFile(from, base);
  await fs.writeFile(to, next);
  return { from, to };
}

interface StepJson {
  seconds: number;
  peakRss: number | null;
  runs: number;
  samples: { seconds: number; peakRss: number | null }[];
}

interface ToolJson {
  tool: string;
  patchSize: number | null;
  create: StepJson | null;
  apply: StepJson | null;
  restart?: StepJson;
  removeRestart?: StepJson;
  applyInProcess?: StepJson;
  verified: boolean;
  skipped?: string;
}

if (!built) {
  t.skip('CLI not built (npm run build)', () => {});
} else {
  t.test('bench --help names its options', async (t) => {
    const r = runCli(['bench', '--help']);
    t.equal(r.code, 0);
    for (const flag of ['--from', '--to', '--runs', '--json', '--tools', '--work-dir']) t.match(r.stdout, flag);
  });

  t.test('bench --json measures revpatch and every installed tool, checks their output and removes its temp dir', async (t) => {
    const dir = await tempDir(t);
    const { from, to } = await imagePair(dir);
    const work = path.join(dir, 'work');
    await fs.mkdir(work);
    const r = runCli(['bench', '--from', from, '--to', to, '--runs', '2', '--work-dir', work, '--json']);
    t.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { from: string; oldSize: number; newSize: number; runs: number; idleNodeRss: number; machine: { cpus: number; node: string }; tools: ToolJson[] };
    t.equal(out.from, from);
    t.equal(out.oldSize, 64 * BLOCK);
    t.equal(out.newSize, 64 * BLOCK);
    t.equal(out.runs, 2);
    t.equal(out.machine.node, process.version);
    t.ok(out.machine.cpus >= 1);
    t.same(out.tools.map((x) => x.tool), ['revpatch', 'bsdiff', 'zstd', 'xdelta3'], 'revpatch first, then the three tools in order');

    const rp = out.tools[0];
    t.equal(rp.verified, true, 'the booted view matched the target');
    t.ok((rp.patchSize ?? 0) > 0);
    for (const step of [rp.create, rp.apply, rp.restart, rp.removeRestart]) {
      t.equal(step?.runs, 2, 'each revpatch step ran twice');
      t.equal(step?.samples.length, 2);
      t.ok((step?.seconds ?? 0) > 0);
      t.ok((step?.peakRss ?? 0) > 0, 'peak RSS measured');
    }
    t.equal(rp.applyInProcess?.runs, 2, 'the in-process install ran twice');
    t.ok((rp.applyInProcess?.seconds ?? 0) > 0);
    t.equal(rp.applyInProcess?.peakRss, null, 'no peak RSS for an install inside the bench process');
    for (const tool of out.tools.slice(1)) {
      const binary = tool.tool === 'bsdiff' ? 'bspatch' : tool.tool;
      if (!installed(binary)) {
        t.match(tool.skipped, /not installed/, `${tool.tool} reported as not installed`);
        continue;
      }
      t.notOk(tool.skipped, `${tool.tool} ran`);
      t.equal(tool.verified, true, `${tool.tool} output equals NEW`);
      t.ok((tool.patchSize ?? 0) > 0);
      t.equal(tool.create?.runs, 2);
      t.equal(tool.apply?.runs, 2);
    }
    t.same(await fs.readdir(work), [], 'the temporary directory is gone');
    t.equal((await fs.readFile(from)).equals(stampedImage(64, 'base')), true, 'OLD is untouched');
  });

  t.test('bench prints a table with one row per tool and the restart figures', async (t) => {
    const dir = await tempDir(t);
    const { from, to } = await imagePair(dir);
    const r = runCli(['bench', '--from', from, '--to', to, '--runs', '1', '--tools', 'xdelta3', '--work-dir', dir]);
    t.equal(r.code, 0, r.stderr);
    const lines = r.stdout.split('\n');
    const header = lines.findIndex((l) => /^tool\s+patch\s+size\/rp\s+create/.test(l));
    t.ok(header >= 0, 'a header row');
    t.match(lines[header + 1], /^-+\s+-+/, 'a rule under it');
    t.match(lines[header + 2], /^revpatch \(install\)\s+\d+\s+1\.00x/, 'revpatch row, ratio 1 to itself');
    t.match(lines[header + 3], /^xdelta3\s+(\d+\s+\d+\.\d\dx|skipped: not installed)/, 'the requested tool only');
    t.notMatch(r.stdout, /bsdiff|^zstd/m, 'tools not asked for are left out');
    t.match(r.stdout, /install in-process:\s+\d+(\.\d+)? m?s/);
    t.match(r.stdout, /restart-activate \(boot\):\s+\d+(\.\d+)? m?s, peak RSS/);
    t.match(r.stdout, /remove and restart:\s+\d+(\.\d+)? m?s/);
    t.same((await fs.readdir(dir)).sort(), ['new.img', 'old.img'], 'nothing left beside the images');
  });

  t.test('bench with a missing image fails with E_NOT_FOUND before measuring anything', async (t) => {
    const dir = await tempDir(t);
    const { from, to } = await imagePair(dir);
    let r = runCli(['bench', '--from', path.join(dir, 'missing.img'), '--to', to, '--work-dir', dir]);
    expectError(t, r, 'E_NOT_FOUND');
    t.match(r.stderr, /--from .*missing\.img/);
    r = runCli(['bench', '--from', from, '--to', path.join(dir, 'gone.img'), '--work-dir', dir]);
    expectError(t, r, 'E_NOT_FOUND');
    t.match(r.stderr, /--to .*gone\.img/);
    t.equal(r.stdout, '', 'no table');
    t.same((await fs.readdir(dir)).sort(), ['new.img', 'old.img'], 'no temporary directory was left');
  });

  t.test('bench refuses a directory as an image and a missing work directory', async (t) => {
    const dir = await tempDir(t);
    const { from, to } = await imagePair(dir);
    expectError(t, runCli(['bench', '--from', dir, '--to', to]), 'E_INVALID_ARGUMENT');
    expectError(t, runCli(['bench', '--from', from, '--to', to, '--work-dir', path.join(dir, 'nowhere')]), 'E_NOT_FOUND');
  });

  t.test('bench usage errors exit 2', async (t) => {
    const dir = await tempDir(t);
    const { from, to } = await imagePair(dir);
    t.equal(runCli(['bench', '--from', from]).code, 2, '--to missing');
    t.equal(runCli(['bench', '--from', from, '--to', to, '--runs', '0']).code, 2, '--runs 0');
    t.equal(runCli(['bench', '--from', from, '--to', to, '--runs', 'many']).code, 2, '--runs not a number');
    t.equal(runCli(['bench', '--from', from, '--to', to, '--runs', '101']).code, 2, '--runs too large');
    t.equal(runCli(['bench', '--from', from, '--to', to, '--tools', 'bsdiff,gzip']).code, 2, 'unknown tool');
  });

  t.test('a revpatch step failing inside bench reports its error code and cleans up', async (t) => {
    const dir = await tempDir(t);
    const { from, to } = await imagePair(dir);
    const work = path.join(dir, 'work');
    await fs.mkdir(work);
    // The first engine I/O call of every revpatch child fails.
    const r = runCli(['bench', '--from', from, '--to', to, '--runs', '1', '--work-dir', work], { REVPATCH_FAULT: 'eio:1' });
    expectError(t, r, 'E_IO');
    t.match(r.stderr, /revpatch \w+ failed/);
    t.same(await fs.readdir(work), [], 'the temporary directory is gone');
  });
}
