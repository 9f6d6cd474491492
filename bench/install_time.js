'use strict';
// Install time of one large executable pair, side by side in one run:
// `revpatch install` (the command line, with its fsyncs), revpatch
// in-process (`Device.install`, no Node start-up), `hpatchz OLD DIFF OUT &&
// sync` and `zstd -d --patch-from=OLD DIFF -o OUT && sync`. Each round runs
// every tool once, in turn, on inputs read just before (warmInputs), so a
// shared machine's drift hits all alike; medians over the rounds.
//
//   node bench/install_time.js --old OLD --new NEW [--runs N] [--work DIR]
//        [--patch P --pub KEY.pub] [--hdiff D] [--zstd Z] [--json]
//   REVPATCH_ROOT=/path/to/checkout node bench/install_time.js ...  (its build)
//
// Missing patches are made once into --work (default bench/.cache/install):
// revpatch with a fresh key, `hdiffz -m-6 -SD -c-lzma2-9-64m`, `zstd -19
// --long=27 --patch-from` (the level changes the patch, hardly the decode).
// A tool that is not installed is skipped and said so. Every tool's output
// is compared with NEW once (revpatch's through its target digest, which
// install checks, and an export of the view).
//
// Also a library: module.exports.installTimes(options) returns the figures
// (bench/executables.js can call it per pair).

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { execFileSync, spawnSync } = require('node:child_process');
const { performance } = require('node:perf_hooks');

// REVPATCH_ROOT: another checkout's build to time (before/after figures).
const ROOT = path.resolve(process.env.REVPATCH_ROOT || path.join(__dirname, '..'));
const B = require(path.join(ROOT, 'dist', 'bench', 'bench.js'));
const { Device } = require(path.join(ROOT, 'dist', 'index.js'));
const CLI = path.join(ROOT, 'bin', 'revpatch.js');
// As bench/run.js looks for it, and from a worktree one level deeper.
const HDIFF_DIR = process.env.HDIFFPATCH_DIR ||
  [path.join(ROOT, '..', 'shared', 'tools', 'hdiffpatch'), path.join(ROOT, '..', '..', 'shared', 'tools', 'hdiffpatch')]
    .find((d) => fs.existsSync(path.join(d, 'hpatchz'))) || path.join(ROOT, '..', 'shared', 'tools', 'hdiffpatch');

function which(bin) {
  const r = spawnSync('sh', ['-c', `command -v ${bin}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}

function tool(name) {
  const local = path.join(HDIFF_DIR, name);
  if (name.startsWith('h') && fs.existsSync(local)) return local;
  return which(name);
}

function timed(file, args) {
  const t0 = performance.now();
  execFileSync(file, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  execFileSync('sync');
  return (performance.now() - t0) / 1000;
}

function sameFile(a, b) {
  const sa = fs.statSync(a), sb = fs.statSync(b);
  if (sa.size !== sb.size) return false;
  return spawnSync('cmp', ['-s', a, b]).status === 0;
}

async function installTimes(o) {
  const work = o.work || path.join(__dirname, '.cache', 'install');
  fs.mkdirSync(work, { recursive: true });
  const runs = o.runs || 5;
  const skipped = {};
  let patch = o.patch, pub = o.pub;
  if (!patch) {
    const keys = path.join(work, 'keys');
    if (!fs.existsSync(path.join(keys, 'revpatch.pub'))) execFileSync('node', [CLI, 'keygen', '--out', keys]);
    pub = path.join(keys, 'revpatch.pub');
    patch = path.join(work, 'pair.rvp');
    if (!fs.existsSync(patch)) {
      execFileSync('node', [CLI, 'create', '--from', o.old, '--to', o.new, '--key', path.join(keys, 'revpatch.key'),
        '--id', 'pair', '--version', '1', '--out', patch], { stdio: 'inherit' });
    }
  }
  const hdiffz = tool('hdiffz'), hpatchz = tool('hpatchz'), zstd = which('zstd');
  let hdiff = o.hdiff;
  if (!hdiff && hdiffz && hpatchz) {
    hdiff = path.join(work, 'pair.hdiff');
    if (!fs.existsSync(hdiff)) execFileSync(hdiffz, ['-m-6', '-SD', '-c-lzma2-9-64m', '-f', o.old, o.new, hdiff], { stdio: 'ignore' });
  } else if (!hdiff) skipped.hpatchz = 'hdiffz/hpatchz not found (HDIFFPATCH_DIR)';
  let zpatch = o.zstd;
  if (!zpatch && zstd) {
    zpatch = path.join(work, 'pair.zst');
    if (!fs.existsSync(zpatch)) execFileSync(zstd, ['-q', '-f', '-19', '--long=27', `--patch-from=${o.old}`, o.new, '-o', zpatch]);
  } else if (!zpatch) skipped.zstd = 'zstd not found';

  // One device state made by init, copied fresh for each run.
  const state0 = path.join(work, 'state0');
  fs.rmSync(state0, { recursive: true, force: true });
  await Device.init(state0, { volume: o.old, trust: pub });
  const state = path.join(work, 'state');
  const out = path.join(work, 'out.bin');
  const fresh = () => {
    fs.rmSync(state, { recursive: true, force: true });
    fs.cpSync(state0, state, { recursive: true });
    fs.rmSync(out, { force: true });
    execFileSync('sync');
  };
  const samples = { cli: [], inProcess: [], hpatchz: [], zstd: [] };
  const verified = {};
  for (let r = 0; r < runs; r++) {
    fresh();
    await B.warmInputs([o.old, patch]);
    samples.cli.push(timed('node', [CLI, '--state', state, 'install', patch]));
    if (r === 0) {
      execFileSync('node', [CLI, '--state', state, 'boot'], { stdio: 'ignore' });
      execFileSync('node', [CLI, '--state', state, 'export', '--out', out, '--mode', 'copy'], { stdio: 'ignore' });
      // The view is block-padded: its first NEW-size bytes must be NEW.
      const n = fs.statSync(o.new).size;
      const got = Buffer.alloc(n);
      const fd = fs.openSync(out, 'r');
      fs.readSync(fd, got, 0, n, 0);
      fs.closeSync(fd);
      verified.revpatch = got.equals(fs.readFileSync(o.new));
    }
    fresh();
    await B.warmInputs([o.old, patch]);
    const device = await Device.open(state);
    const t0 = performance.now();
    await device.install(patch);
    execFileSync('sync');
    samples.inProcess.push((performance.now() - t0) / 1000);
    if (hdiff && hpatchz) {
      fresh();
      await B.warmInputs([o.old, hdiff]);
      samples.hpatchz.push(timed(hpatchz, ['-f', o.old, hdiff, out]));
      if (r === 0) verified.hpatchz = sameFile(out, o.new);
    }
    if (zpatch && zstd) {
      fresh();
      await B.warmInputs([o.old, zpatch]);
      samples.zstd.push(timed(zstd, ['-q', '-d', '-f', '--long=27', `--patch-from=${o.old}`, zpatch, '-o', out]));
      if (r === 0) verified.zstd = sameFile(out, o.new);
    }
  }
  fs.rmSync(state, { recursive: true, force: true });
  fs.rmSync(state0, { recursive: true, force: true });
  fs.rmSync(out, { force: true });
  const med = (xs) => (xs.length ? B.median(xs) : null);
  return {
    old: o.old, new: o.new, runs, cpus: os.cpus().length, load: os.loadavg()[0],
    bytes: { revpatch: fs.statSync(patch).size, hdiff: hdiff ? fs.statSync(hdiff).size : null, zstd: zpatch ? fs.statSync(zpatch).size : null },
    seconds: { cli: med(samples.cli), inProcess: med(samples.inProcess), hpatchz: med(samples.hpatchz), zstd: med(samples.zstd) },
    samples, verified, skipped,
  };
}

module.exports = { installTimes };

if (require.main === module) {
  const args = process.argv.slice(2);
  const opt = {};
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '--json') opt.json = true;
    else if (a.startsWith('--')) opt[a.slice(2)] = args[++i];
  }
  if (!opt.old || !opt.new) {
    console.error('usage: node bench/install_time.js --old OLD --new NEW [--runs N] [--work DIR] [--patch P --pub KEY] [--hdiff D] [--zstd Z] [--json]');
    process.exit(2);
  }
  if (opt.runs) opt.runs = Number(opt.runs);
  installTimes(opt).then((r) => {
    if (opt.json) return console.log(JSON.stringify(r, null, 2));
    const f = (s) => (s === null ? 'skipped' : `${s.toFixed(2)} s`);
    console.log(`install of ${path.basename(r.new)} (${(fs.statSync(r.new).size / 1e6).toFixed(1)} MB), median of ${r.runs}, load ${r.load.toFixed(1)} on ${r.cpus} CPUs`);
    console.log(`  revpatch install (CLI, fsync)   ${f(r.seconds.cli)}   patch ${r.bytes.revpatch} B`);
    console.log(`  revpatch in-process + sync      ${f(r.seconds.inProcess)}`);
    console.log(`  hpatchz + sync                  ${f(r.seconds.hpatchz)}   patch ${r.bytes.hdiff ?? '-'} B`);
    console.log(`  zstd -d --patch-from + sync     ${f(r.seconds.zstd)}   patch ${r.bytes.zstd ?? '-'} B`);
    console.log(`  outputs equal NEW: ${JSON.stringify(r.verified)}${Object.keys(r.skipped).length ? `; skipped: ${JSON.stringify(r.skipped)}` : ''}`);
  }).catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
