#!/usr/bin/env node
'use strict';
/**
 * `npm run bench`: revpatch against bsdiff/bspatch, zstd --patch-from,
 * xdelta3 and HDiffPatch (hdiffz/hpatchz, both its modes) on real and
 * synthetic pairs, side by side in one run; writes bench/RESULTS.md,
 * bench/results.json and bench/install-time.svg.
 *
 *   BENCH_RUNS=N   runs per step (default 5; a step whose first run takes
 *                  over 10 s runs 3 times, over 40 s once)
 *   BENCH_QUICK=1  smoke run: one run, small pairs only (a few minutes)
 *   BENCH_CACHE=DIR  data and scratch directory (default bench/.cache)
 *   HDIFFPATCH_DIR=DIR  where hdiffz and hpatchz are (default
 *                  ../shared/tools/hdiffpatch beside the repository's main
 *                  checkout); without them the bench says so and goes on
 *
 * Data lives in bench/.cache (downloaded packages, images, volumes); the
 * scratch directory inside it is emptied at the start and the end.
 *
 * The fleet steps (bench/fleet.js: `npm run bench:fleet`, run after this
 * one by `npm run bench`) own marked sections of RESULTS.md; rewriting the
 * file keeps them as they are (writeResultsFile).
 */
const fs = require('node:fs');
const fsp = fs.promises;
const path = require('node:path');
const os = require('node:os');
const { execFileSync, spawnSync } = require('node:child_process');
const { monitorEventLoopDelay } = require('node:perf_hooks');

const ROOT = path.resolve(__dirname, '..');
const B = require(path.join(ROOT, 'dist', 'bench', 'bench.js'));
const { Device } = require(path.join(ROOT, 'dist', 'index.js'));
const { makeVolumePair, makeSmallChange, keystream } = require('./volumes.js');
const { lineChart } = require('./svg.js');
const { readSection, replaceSection } = require('./sections.js');

const QUICK = process.env.BENCH_QUICK === '1';
const RUNS = Number(process.env.BENCH_RUNS || (QUICK ? 1 : 5));
if (!Number.isInteger(RUNS) || RUNS < 1 || RUNS > 100) {
  console.error(`BENCH_RUNS must be a whole number from 1 to 100, not ${process.env.BENCH_RUNS}`);
  process.exit(2);
}
const POLICY = { runs: RUNS, capSlow: true };
/** Another tool's step is stopped after max(180 s, 2 s per MiB of NEW) and reported as not finished. */
const toolTimeout = (bytes) => Math.max(180, Math.ceil((2 * bytes) / (1 << 20)));
const CACHE = path.resolve(process.env.BENCH_CACHE || path.join(__dirname, '.cache'));
const WORK = path.join(CACHE, 'work');
const MiB = 1 << 20;
const GiB = 1 << 30;
const ESBUILD_VERSIONS = ['0.24.0', '0.24.1', '0.24.2'];
/** Platforms of esbuild benchmarked besides linux-x64 (one version step each, full runs only). */
const OTHER_PLATFORMS = ['linux-arm64', 'darwin-arm64'];
/** The other files of the ext4 trees; only esbuild's version differs between the two. */
const TREE_PACKAGES = ['acorn@8.14.0', 'semver@7.6.3'];
const EXT4_SIZE = '16M';
const VOLUME_SIZES = QUICK ? [32 * MiB] : [64 * MiB, 256 * MiB, GiB, 4 * GiB, 16 * GiB];
const SCALING_SIZES = QUICK ? [32 * MiB, 128 * MiB] : [64 * MiB, 4 * GiB];
/**
 * The REPLACE-everything pairs measure throughput: this size and a quarter
 * of it, whose difference cancels the fixed costs (replaceThroughput); the
 * larger is large enough for those not to dominate the whole command
 * either. create takes about 40 s on 1 GiB of random data (three runs).
 */
const REPLACE_SIZE = QUICK ? 32 * MiB : GiB;
const IS_ROOT = typeof process.getuid === 'function' && process.getuid() === 0;

const started = Date.now();
const notes = [];
const commandsUsed = new Map();

function log(message) {
  const s = ((Date.now() - started) / 1000).toFixed(0).padStart(5);
  process.stdout.write(`[${s} s] ${message}\n`);
}

function note(message) {
  notes.push(message);
  log(`note: ${message}`);
}

/** Runs one part of the benchmark; a failure is noted in RESULTS.md and the run goes on. */
async function attempt(label, fn) {
  try {
    return await fn();
  } catch (err) {
    note(`${label} failed: ${err && err.code ? `${err.code}: ` : ''}${err && err.message ? err.message : err}`);
    return null;
  }
}

function sh(cmd, args, options = {}) {
  return execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8', ...options });
}

function sizeLabel(n) {
  return n >= GiB ? `${n / GiB} GiB` : `${n / MiB} MiB`;
}

// ---------------------------------------------------------------------------
// Tools

function ensureTools() {
  const wanted = [
    ['bsdiff', 'bsdiff'],
    ['zstd', 'zstd'],
    ['xdelta3', 'xdelta3'],
    ['/usr/bin/time', 'time'],
    ['mke2fs', 'e2fsprogs'],
    ['mkfs.xfs', 'xfsprogs'],
  ];
  const missing = wanted.filter(([bin]) => (bin.startsWith('/') ? !fs.existsSync(bin) : !B.which(bin) && !fs.existsSync(`/usr/sbin/${bin}`) && !fs.existsSync(`/sbin/${bin}`)));
  if (missing.length === 0) return;
  const pkgs = missing.map(([, pkg]) => pkg);
  if (!IS_ROOT || !B.which('apt-get')) {
    note(`missing ${pkgs.join(', ')} and cannot install them (needs root and apt-get); those measurements are skipped`);
    return;
  }
  log(`installing Debian packages: ${pkgs.join(' ')} (apt-get install -y)`);
  let r = spawnSync('apt-get', ['install', '-y', ...pkgs], { stdio: 'inherit' });
  if (r.status !== 0) {
    spawnSync('apt-get', ['update'], { stdio: 'inherit' });
    r = spawnSync('apt-get', ['install', '-y', ...pkgs], { stdio: 'inherit' });
  }
  if (r.status !== 0) note(`apt-get install ${pkgs.join(' ')} failed; the missing tools are skipped`);
  else note(`installed from Debian for this run: ${pkgs.join(', ')}`);
}

function sbin(name) {
  for (const dir of ['', '/usr/sbin/', '/sbin/']) {
    const full = dir ? `${dir}${name}` : B.which(name);
    if (full && fs.existsSync(full)) return full;
  }
  return null;
}

// ---------------------------------------------------------------------------
// HDiffPatch: not packaged for Debian or on npm, so looked for beside the
// repository; where it is not there the bench says so and goes on.

/** Its two modes, with the command lines of the issue that set them as anchors. */
const HDIFFPATCH_MODES = [
  {
    name: 'hdiffz -m',
    args: ['-m-6', '-SD', '-c-lzma2-9-64m'],
    // hdiffz's own figure: NEW + 5 x OLD (9 x from 2 GiB), plus the compressor.
    memory: (o, n) => n + (o >= 2 * GiB ? 9 : 5) * o + GiB,
  },
  {
    name: 'hdiffz -s',
    args: ['-s-64', '-c-lzma2-9-64m'],
    // OLD x 16 / 64 for the block index, plus the compressor.
    memory: (o) => (16 * o) / 64 + GiB,
  },
];

/** Where hdiffz and hpatchz are looked for: $HDIFFPATCH_DIR, else ../shared/tools/hdiffpatch beside this checkout or beside the main checkout of a worktree. */
function hdiffpatchCandidates() {
  if (process.env.HDIFFPATCH_DIR) return [path.resolve(process.env.HDIFFPATCH_DIR)];
  const dirs = [path.join(ROOT, '..', 'shared', 'tools', 'hdiffpatch')];
  try {
    const common = path.resolve(ROOT, sh('git', ['-C', ROOT, 'rev-parse', '--git-common-dir']).trim());
    dirs.push(path.join(path.dirname(common), '..', 'shared', 'tools', 'hdiffpatch'));
  } catch {
    /* not a git checkout: the first place only */
  }
  return [...new Set(dirs.map((d) => path.resolve(d)))];
}

function executable(file) {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

/**
 * HDiffPatch's two modes as tools for B.benchTool, or { tools: [], absent }
 * saying where it was looked for. The executables are named by full path
 * (`binaries` stays empty: they were found here, not on PATH).
 */
function hdiffpatchTools() {
  const candidates = hdiffpatchCandidates();
  const dir = candidates.find((d) => executable(path.join(d, 'hdiffz')) && executable(path.join(d, 'hpatchz')));
  if (!dir) {
    return { tools: [], dir: null, version: null, absent: `HDiffPatch not found (no executable hdiffz and hpatchz in ${candidates.join(' or ')}; set HDIFFPATCH_DIR): its rows are left out` };
  }
  const hdiffz = path.join(dir, 'hdiffz');
  const hpatchz = path.join(dir, 'hpatchz');
  let version = 'unknown version';
  const r = spawnSync(hdiffz, ['-v'], { encoding: 'utf8' });
  const m = /v(\d+\.\d+\.\d+)/.exec(`${r.stdout}${r.stderr}`);
  if (m) version = m[1];
  const tools = HDIFFPATCH_MODES.map((mode) => ({
    name: mode.name,
    binaries: [],
    debianPackage: 'none (HDiffPatch is not in Debian)',
    create: (o, n, p) => [hdiffz, [...mode.args, '-f', o, n, p]],
    apply: (o, p, out) => [hpatchz, ['-f', o, p, out]],
    unsuitable: (o, n) => {
      const need = mode.memory(o, n);
      const free = B.memAvailable();
      return need <= 0.75 * free ? null : `needs about ${fmtB(need)} of memory, ${fmtB(free)} available`;
    },
    /** The command lines with the executables' names only, for reports. */
    display: {
      create: B.commandLine('hdiffz', [...mode.args, '-f', 'OLD', 'NEW', 'PATCH']),
      apply: B.commandLine('hpatchz', ['-f', 'OLD', 'PATCH', 'OUT']),
    },
  }));
  return { tools, dir, version: `HDiffPatch ${version} (${dir})`, absent: null };
}

/**
 * How long each other tool took per byte of NEW on the largest pair of a
 * kind so far in this run: a step predicted to run past its time limit
 * (extrapolating linearly, which is kind to the tools that grow faster) is
 * skipped and says so instead of being stopped after the whole limit.
 */
const pace = new Map();

function recordPace(tool, kind, bytes, seconds) {
  const key = `${tool}\0${kind}`;
  const had = pace.get(key);
  if (!had || bytes >= had.bytes) pace.set(key, { bytes, seconds });
}

/** { seconds, from } predicted for `tool` on NEW of `bytes`, or null without an earlier pair of that kind. */
function expectedSeconds(tool, kind, bytes) {
  const p = pace.get(`${tool}\0${kind}`);
  if (!p || p.bytes >= bytes) return null;
  return { seconds: (p.seconds * bytes) / p.bytes, from: `${fmtS(p.seconds)} on ${fmtB(p.bytes)}` };
}

/** Why `tool` is skipped on NEW of `bytes` for time, or null. */
function tooSlow(tool, kind, bytes, limitSeconds) {
  const guess = expectedSeconds(tool, kind, bytes);
  if (!guess || guess.seconds <= limitSeconds) return null;
  return `would take about ${fmtS(guess.seconds)} (${guess.from}), past the ${limitSeconds} s limit`;
}

/** B.benchTool for one tool object, skipped when it would run past the tool timeout. */
async function benchOther(tool, kind, oldPath, newPath, options) {
  const bytes = fs.statSync(newPath).size;
  const why = tooSlow(tool.name, kind, bytes, options.toolTimeout(bytes));
  const commands = tool.display ?? { create: B.commandLine(...tool.create('OLD', 'NEW', 'PATCH')), apply: B.commandLine(...tool.apply('OLD', 'PATCH', 'OUT')) };
  if (why) return { tool: tool.name, patchSize: null, create: null, apply: null, verified: false, skipped: why, commands };
  const r = await B.benchTool(tool, oldPath, newPath, options);
  r.commands = commands;
  if (!r.skipped) recordPace(tool.name, kind, bytes, r.create.seconds);
  return r;
}

/** revpatch, bsdiff, zstd, xdelta3 and HDiffPatch's modes on one pair. */
async function benchAll(name, kind, oldPath, newPath, options, hdiff) {
  const pair = await B.benchPair(name, oldPath, newPath, { ...options, tools: [] });
  for (const t of B.TOOL_NAMES) pair.tools.push(await benchOther(B.TOOLS[t], kind, oldPath, newPath, options));
  for (const t of hdiff.tools) pair.tools.push(await benchOther(t, kind, oldPath, newPath, options));
  return pair;
}

// ---------------------------------------------------------------------------
// Real data

function npmPack(spec) {
  const dir = path.join(CACHE, 'npm');
  fs.mkdirSync(dir, { recursive: true });
  const [name, version] = spec.startsWith('@') ? ['@' + spec.slice(1).split('@')[0], spec.slice(1).split('@')[1]] : spec.split('@');
  const file = path.join(dir, `${name.replace(/^@/, '').replace('/', '-')}-${version}.tgz`);
  if (!fs.existsSync(file)) {
    log(`npm pack ${spec}`);
    sh('npm', ['pack', spec, '--pack-destination', dir, '--silent']);
  }
  return file;
}

function unpack(tgz, dest) {
  fs.rmSync(dest, { recursive: true, force: true });
  fs.mkdirSync(dest, { recursive: true });
  sh('tar', ['xzf', tgz, '-C', dest, '--strip-components=1', '--no-same-owner']);
}

/** esbuild's executable for `platform` (an @esbuild package name) at each of `versions`. */
async function esbuildBinaries(platform = 'linux-x64', versions = ESBUILD_VERSIONS) {
  const out = {};
  for (const v of versions) {
    const dir = path.join(CACHE, 'data', platform === 'linux-x64' ? `esbuild-${v}` : `esbuild-${platform}-${v}`);
    if (!fs.existsSync(path.join(dir, 'bin', 'esbuild'))) unpack(npmPack(`@esbuild/${platform}@${v}`), dir);
    out[v] = path.join(dir, 'bin', 'esbuild');
  }
  return out;
}

/** A tree of the other packages plus esbuild at `version`, as node_modules. */
function buildTree(dest, version) {
  fs.rmSync(dest, { recursive: true, force: true });
  for (const spec of TREE_PACKAGES) unpack(npmPack(spec), path.join(dest, 'node_modules', spec.split('@')[0]));
  unpack(npmPack(`@esbuild/linux-x64@${version}`), path.join(dest, 'node_modules', '@esbuild', 'linux-x64'));
}

const MKE2FS_ENV = { ...process.env, E2FSPROGS_FAKE_TIME: '1700000000' };
function mke2fsArgs(tree, image) {
  return ['-q', '-F', '-t', 'ext4', '-b', '4096', '-U', '5f0c6a9e-3b1d-4c2a-9e8f-0123456789ab', '-E', 'hash_seed=0b3e2a1c-4d5e-4f60-8a7b-9c0d1e2f3a4b,root_owner=0:0', '-d', tree, image, EXT4_SIZE];
}

/**
 * The ext4 pairs: A = tree with esbuild 0.24.1; "rebuilt" B = an independent
 * mke2fs of the tree with 0.24.2; "in place" B = a copy of A, loop-mounted,
 * esbuild's files replaced.
 */
async function ext4Pairs() {
  const mke2fs = sbin('mke2fs');
  if (!mke2fs) {
    note('mke2fs not found: the ext4 image pairs are skipped');
    return [];
  }
  const dir = path.join(CACHE, 'data', 'ext4');
  fs.mkdirSync(dir, { recursive: true });
  const treeA = path.join(dir, 'tree-a');
  const treeB = path.join(dir, 'tree-b');
  buildTree(treeA, '0.24.1');
  buildTree(treeB, '0.24.2');
  const imgA = path.join(dir, 'a.img');
  const imgB = path.join(dir, 'b-rebuilt.img');
  for (const [tree, img] of [[treeA, imgA], [treeB, imgB]]) {
    fs.rmSync(img, { force: true });
    sh(mke2fs, mke2fsArgs(tree, img), { env: MKE2FS_ENV });
  }
  commandsUsed.set('ext4 image', `E2FSPROGS_FAKE_TIME=1700000000 ${B.commandLine('mke2fs', mke2fsArgs('TREE', 'IMAGE'))}`);
  const pairs = [{ name: 'ext4 image, rebuilt from scratch (esbuild 0.24.1 → 0.24.2)', old: imgA, new: imgB, kind: 'image' }];
  const imgC = path.join(dir, 'b-in-place.img');
  if (!IS_ROOT) {
    note('not root: the ext4 pair "updated in place" needs a loop mount and is skipped (run npm run bench as root)');
    return pairs;
  }
  fs.rmSync(imgC, { force: true });
  sh('cp', ['--sparse=always', imgA, imgC]);
  const mnt = path.join(dir, 'mnt');
  fs.mkdirSync(mnt, { recursive: true });
  try {
    sh('mount', ['-o', 'loop', imgC, mnt]);
  } catch (err) {
    note(`mount -o loop failed (${String(err.stderr || err.message).trim()}): the ext4 pair "updated in place" is skipped`);
    return pairs;
  }
  try {
    const pkg = path.join(mnt, 'node_modules', '@esbuild', 'linux-x64');
    fs.rmSync(pkg, { recursive: true, force: true });
    sh('cp', ['-a', path.join(treeB, 'node_modules', '@esbuild', 'linux-x64'), pkg]);
  } finally {
    sh('umount', [mnt]);
  }
  commandsUsed.set('ext4 in place', 'cp --sparse=always A.img B.img; mount -o loop B.img MNT; rm -rf MNT/node_modules/@esbuild/linux-x64; cp -a TREE_B/node_modules/@esbuild/linux-x64 MNT/node_modules/@esbuild/; umount MNT');
  pairs.push({ name: 'ext4 image, updated in place (esbuild 0.24.1 → 0.24.2)', old: imgA, new: imgC, kind: 'image' });
  return pairs;
}

/** Synthetic volume pairs, cached between runs (the generator is deterministic). */
async function volumePair(size, fraction = 0.04) {
  const dir = path.join(CACHE, 'volumes');
  fs.mkdirSync(dir, { recursive: true });
  const tag = `${sizeLabel(size).replace(' ', '')}-${fraction}`;
  const old = path.join(dir, `${tag}-old.img`);
  const neu = path.join(dir, `${tag}-new.img`);
  const stamp = path.join(dir, `${tag}.json`);
  const version = 2;
  let info = null;
  try {
    info = JSON.parse(fs.readFileSync(stamp, 'utf8'));
    if (info.version !== version || !fs.existsSync(old) || !fs.existsSync(neu)) info = null;
  } catch {
    info = null;
  }
  if (!info) {
    log(`building the ${sizeLabel(size)} volume pair`);
    info = { version, ...(await makeVolumePair(old, neu, size, fraction)) };
    fs.writeFileSync(stamp, JSON.stringify(info));
  }
  return { old, new: neu, ...info };
}

// ---------------------------------------------------------------------------
// Extra measurements

async function eventLoopDuringInstall(volume, patch, pub) {
  const state = path.join(WORK, 'eventloop-state');
  fs.rmSync(state, { recursive: true, force: true });
  const device = await Device.init(state, { volume, trust: pub });
  const h = monitorEventLoopDelay({ resolution: 1 });
  h.enable();
  const t0 = performance.now();
  await device.install(patch);
  const seconds = (performance.now() - t0) / 1000;
  h.disable();
  fs.rmSync(state, { recursive: true, force: true });
  return { p99: h.percentile(99) / 1e6, max: h.max / 1e6, mean: h.mean / 1e6, samples: h.count, seconds };
}

/** A pair whose new image shares nothing with the old: the patch REPLACEs every block. */
function replacePair(size) {
  const dir = path.join(CACHE, 'volumes');
  const old = path.join(dir, `replace-${size / MiB}-old.img`);
  const neu = path.join(dir, `replace-${size / MiB}-new.img`);
  if (!fs.existsSync(neu) || fs.statSync(neu).size !== size || !fs.existsSync(old)) {
    log(`building the ${sizeLabel(size)} replace-everything pair`);
    fs.writeFileSync(old, keystream('replace-old', size));
    fs.writeFileSync(neu, keystream('replace-new', size));
    execFileSync('sync');  // not written back during the timed runs
  }
  return { old, neu };
}

/**
 * REPLACE throughput at two sizes. After every revpatch install run, cp and
 * cp + sync copy the same new image, so that the two are measured side by
 * side and a shared machine's drift hits both alike. The whole-command
 * figures at the large size include revpatch's fixed costs (Node start-up,
 * loading the modules and the addon, about 0.1 s; judged on their own by
 * the install-time targets of the small pairs); the difference between the
 * two sizes cancels them, for revpatch and cp alike, and is the throughput.
 */
async function replaceThroughput(rpDir) {
  const out = path.join(WORK, 'cp-out');
  const points = [];
  for (const size of [REPLACE_SIZE / 4, REPLACE_SIZE]) {
    log(`  ${sizeLabel(size)}`);
    const { old, neu } = replacePair(size);
    const cp = [];
    const cpSync = [];
    const afterInstallRun = async () => {
      fs.rmSync(out, { force: true });
      await B.warmInputs([neu]);
      cp.push(await B.runMeasured('cp', [neu, out]));
      fs.rmSync(out, { force: true });
      await B.warmInputs([neu]);
      cpSync.push(await B.runMeasured('sh', ['-c', 'cp "$0" "$1" && sync "$1"', neu, out]));
      fs.rmSync(out, { force: true });
    };
    const rp = await B.benchRevpatch(old, neu, { policy: POLICY, workDir: rpDir, onStep: log, afterInstallRun });
    points.push({ size, rp, cp: B.summarize(cp), cpSync: B.summarize(cpSync) });
  }
  const [small, large] = points;
  const delta = (pick) => pick(large) - pick(small);
  const bytes = large.size - small.size;
  const marginal = {
    bytes,
    rp: delta((p) => p.rp.apply.seconds),
    rpInProcess: delta((p) => p.rp.applyInProcess.seconds),
    cp: delta((p) => p.cp.seconds),
    cpSync: delta((p) => p.cpSync.seconds),
  };
  return { size: large.size, rp: large.rp, cp: large.cp, cpSync: large.cpSync, small, marginal };
}

/** Export through reflinks on a loop-mounted XFS: small patch on the smallest and largest scaling volume. */
async function xfsExport(scaling) {
  if (!IS_ROOT) return { skipped: 'not root: needs mkfs.xfs and a loop mount' };
  const mkfs = sbin('mkfs.xfs');
  if (!mkfs) return { skipped: 'mkfs.xfs not found (Debian package xfsprogs)' };
  const img = path.join(CACHE, 'xfs.img');
  const mnt = path.join(CACHE, 'xfs-mnt');
  fs.rmSync(img, { force: true });
  const biggest = Math.max(...scaling.map((s) => s.size));
  fs.closeSync(fs.openSync(img, 'w'));
  fs.truncateSync(img, Math.max(2 * biggest, 2 * GiB));
  sh(mkfs, ['-q', '-f', '-m', 'reflink=1', img]);
  fs.mkdirSync(mnt, { recursive: true });
  try {
    sh('mount', ['-o', 'loop', img, mnt]);
  } catch (err) {
    fs.rmSync(img, { force: true });
    return { skipped: `mount -o loop failed: ${String(err.stderr || err.message).trim()}` };
  }
  const rpcli = B.revpatchCommand();
  const cli = async (args) => {
    const r = await B.runMeasured(rpcli[0], [...rpcli.slice(1), ...args]);
    if (r.code !== 0) throw new Error(`revpatch ${args.join(' ')}: ${r.stderr}`);
    return r;
  };
  const rows = [];
  try {
    for (const s of scaling) {
      const base = path.join(mnt, `base-${s.size}.img`);
      sh('cp', ['--sparse=always', s.old, base]);
      const state = path.join(mnt, `state-${s.size}`);
      await cli(['--state', state, 'init', '--volume', base, '--trust', s.pub]);
      await cli(['--state', state, 'install', s.patch]);
      await cli(['--state', state, 'boot']);
      const out = path.join(mnt, `export-${s.size}.img`);
      let reflinked = true;
      let verified = false;
      const step = await B.repeat(POLICY, async () => {
        fs.rmSync(out, { force: true });
        const r = await cli(['--state', state, '--json', 'export', '--out', out, '--mode', 'reflink']);
        reflinked = reflinked && JSON.parse(r.stdout).reflinked === true;
        if (!verified) {
          if (!(await B.sameBytes(out, s.small))) throw new Error(`the ${sizeLabel(s.size)} export differs from the patched image`);
          verified = true;
        }
        return r;
      });
      fs.rmSync(out, { force: true });
      rows.push({ size: s.size, step, reflinked, verified });
    }
  } finally {
    sh('umount', [mnt]);
    fs.rmSync(img, { force: true });
  }
  commandsUsed.set('xfs', `truncate -s ${sizeLabel(Math.max(2 * biggest, 2 * GiB))} xfs.img; mkfs.xfs -q -f -m reflink=1 xfs.img; mount -o loop xfs.img MNT; revpatch --state MNT/state export --out MNT/export.img --mode reflink`);
  return { rows };
}

// ---------------------------------------------------------------------------
// Report

const fmtS = B.fmtSeconds;
const fmtB = B.fmtBytes;

function verdict(ok) {
  return ok === null ? 'not measured' : ok ? '**met**' : '**not met**';
}

function pairTable(pair) {
  const { header, rows } = B.pairRows(pair);
  return B.markdownTable(header, rows);
}

function toolOf(pair, name) {
  return pair.tools.find((t) => t.tool === name && !t.skipped) ?? null;
}

function writeResults(r) {
  const L = [];
  const m = r.machine;
  L.push('# Benchmarks');
  L.push('');
  L.push(`Generated by \`npm run bench\` (bench/run.js) on ${new Date(r.finished).toISOString()} in ${(r.elapsed / 60).toFixed(1)} minutes` +
    `${QUICK ? ' — **BENCH_QUICK=1 smoke run: one run per step, small pairs only; not the full benchmark**' : ''}. ` +
    'Do not edit by hand: run the benchmark again. Raw figures: [results.json](results.json).');
  L.push('');
  L.push('## Machine');
  L.push('');
  const load = r.loadAverage
    ? `; 1-minute load average ${r.loadAverage.start.toFixed(2)} at the start, ${r.loadAverage.end.toFixed(2)} at the end`
    : '';
  L.push(`- CPU: ${m.cpuModel}, ${m.cpus} cores available (a virtual machine: work of the host's other guests is not visible from inside${load})`);
  L.push(`- memory: ${fmtB(m.memory)}; kernel: ${m.kernel}`);
  L.push(`- filesystem of bench/.cache: ${m.filesystem}`);
  L.push(`- Node ${m.node}; revpatch addon build/Release/revpatch.node of ${r.addonTime}`);
  for (const [t, v] of Object.entries(m.tools)) L.push(`- ${t}: ${v}`);
  L.push(`- peak memory: ${m.rssSource}; time: wall clock from spawn to exit`);
  L.push('');
  L.push('## Method');
  L.push('');
  L.push(`- Each step is run ${RUNS} times and the median reported; a step whose first run takes over 10 s is run 3 times, over 40 s once (the \`runs\` column: create/apply).`);
  L.push('- revpatch is measured through its command line (`node bin/revpatch.js`), so every figure includes Node start-up and loading the addon, as a device pays it.');
  L.push('  *create* is `revpatch create`; *apply* is `revpatch install` on a fresh state directory as `revpatch init` leaves it; *restart-activate* is `revpatch boot` after it; *remove and restart* is `revpatch remove ID` then `revpatch boot` (after `confirm`).');
  L.push('- Before each timed apply run, each tool\'s inputs (OLD and the patch; for cp, NEW) are read once, so every tool reads them from the page cache: this virtual machine evicts idle cache between runs, partly and unevenly.');
  L.push('- Every tool\'s output is checked once per pair: bspatch/zstd/xdelta3/hpatchz output compared byte for byte with NEW; for revpatch the booted view digest after install + boot equals the patch\'s target digest.');
  L.push('- `x/rp` columns: the tool\'s figure divided by revpatch\'s; above 1.00x revpatch is smaller or faster.');
  L.push('- A step of another tool that runs longer than max(180 s, 2 s per MiB of NEW) is stopped and reported as not finished.');
  L.push(`- bsdiff is skipped where its working set (${B.BSDIFF_MEMORY_FACTOR}x the file) would not fit in three quarters of the memory available at the time (the machine is shared).`);
  L.push('- HDiffPatch (hdiffz/hpatchz, not in Debian: looked for at `$HDIFFPATCH_DIR` or `../shared/tools/hdiffpatch`) in its best-compression mode (`-m`) and its streaming mode (`-s`), each skipped where hdiffz\'s own memory figure for the mode would not fit like bsdiff\'s; hdiffz checks its patch by applying it before it exits, and that is part of its create time.');
  L.push('- Another tool\'s step that would run past the time limit, judged from its time per byte on the largest pair of the same kind so far in the run (linearly), is skipped and says so.');
  L.push('');
  L.push('Command lines:');
  L.push('');
  L.push('```');
  for (const p of r.pairs.slice(0, 1)) for (const t of p.tools) if (t.commands) L.push(`${t.tool.padEnd(8)} create: ${t.commands.create}\n${''.padEnd(8)} apply:  ${t.commands.apply}`);
  L.push('revpatch restart-activate: revpatch --state STATE boot');
  L.push('revpatch remove+restart:   revpatch --state STATE remove bench && revpatch --state STATE boot');
  for (const [k, v] of commandsUsed) L.push(`${k}: ${v}`);
  L.push('```');
  L.push('');
  L.push('## Data');
  L.push('');
  L.push(`- **esbuild**: the \`bin/esbuild\` executable of \`npm pack @esbuild/linux-x64@V\` for V = ${ESBUILD_VERSIONS.join(' → ')}, and of \`@esbuild/${OTHER_PLATFORMS.join('` and `@esbuild/')}\` (arm64 ELF and Mach-O) for 0.24.0 → 0.24.1.`);
  L.push(`- **ext4 images** (${EXT4_SIZE}): \`mke2fs -d\` of a node_modules tree (${TREE_PACKAGES.join(', ')} and @esbuild/linux-x64) with esbuild 0.24.1, against the same tree with 0.24.2, rebuilt by a second mke2fs or updated in place through a loop mount.`);
  L.push('- **synthetic volumes**: bench/volumes.js — a quarter of the 1 MiB extents hold data (the rest are holes, as free space), data blocks are 1 KiB of random bytes and 3 KiB of 16-letter text; 4 % of all blocks changed in place in runs of 1–16 blocks, half small edits (twelve 4-byte words per block), half new data. Deterministic (AES-CTR keystreams with fixed keys).');
  L.push('');
  L.push('## Results by pair');
  for (const p of r.pairs) {
    L.push('');
    L.push(`### ${p.name}`);
    L.push('');
    L.push(`OLD ${p.oldSize} bytes, NEW ${p.newSize} bytes.`);
    L.push('');
    L.push(pairTable(p));
    const rp = p.tools[0];
    L.push('');
    L.push(`revpatch install in-process (\`Device.install\`, as an agent embedding the library installs: no Node start-up) ${fmtS(rp.applyInProcess?.seconds)}; ` +
      `restart-activate ${fmtS(rp.restart?.seconds)} (peak ${fmtB(rp.restart?.peakRss)}), remove and restart ${fmtS(rp.removeRestart?.seconds)} (peak ${fmtB(rp.removeRestart?.peakRss)}); ` +
      `container (header, manifest, signature) ${rp.patchSize - rp.payloadSize} bytes = ${(((rp.patchSize - rp.payloadSize) / rp.patchSize) * 100).toFixed(2)} % of the patch; ` +
      `one-off \`revpatch init\` of the base ${fmtS(rp.init.seconds)}.`);
  }
  L.push('');
  L.push('## Install time against volume size');
  L.push('');
  L.push('![install time](install-time.svg)');
  L.push('');
  L.push(B.markdownTable(['volume', 'changed blocks', 'revpatch install', 'revpatch in-process', 'bspatch', 'zstd -d', 'xdelta3 -d'], r.volumes.map((v) => {
    const p = r.pairs.find((x) => x.name === v.pairName);
    const cell = (name) => {
      const t = p.tools.find((x) => x.tool === name);
      return t.skipped ? 'skipped' : fmtS(t.apply.seconds);
    };
    return [sizeLabel(v.size), String(v.changedBlocks), cell('revpatch'), fmtS(p.tools[0].applyInProcess?.seconds), cell('bsdiff'), cell('zstd'), cell('xdelta3')];
  })));
  L.push('');
  L.push('## Scaling: a fixed small patch');
  L.push('');
  L.push(`The same ${r.scaling.blocks}-block change (${fmtB(r.scaling.blocks * 4096)} of new data at block ${r.scaling.atBlock}) on each volume.`);
  L.push('');
  L.push(B.markdownTable(['volume', 'patch', 'install', 'install in-process', 'install peak RSS', 'restart-activate', 'remove and restart', 'runs'], r.scaling.rows.map((s) => [
    sizeLabel(s.size), String(s.rp.patchSize), fmtS(s.rp.apply.seconds), fmtS(s.rp.applyInProcess?.seconds), fmtB(s.rp.apply.peakRss), fmtS(s.rp.restart.seconds), fmtS(s.rp.removeRestart.seconds), String(s.rp.apply.runs),
  ])));
  L.push('');
  L.push(`Idle Node process (\`node -e 'setTimeout(() => {}, 50)'\`) peak RSS: ${fmtB(r.idleRss)}. Node start-up (\`node -e 0\`, median of 5): ${fmtS(r.nodeStartup)}; every command-line figure includes it and the loading of revpatch's modules.`);
  if (r.xfs.skipped) {
    L.push('');
    L.push(`Export through reflinks on XFS: skipped — ${r.xfs.skipped}.`);
  } else {
    L.push('');
    L.push('Export of the booted view (`revpatch export --mode reflink`) on a loop-mounted XFS made with `mkfs.xfs -m reflink=1`, each export checked byte for byte against the patched image once:');
    L.push('');
    L.push(B.markdownTable(['volume', 'export', 'peak RSS', 'reflinked', 'runs'], r.xfs.rows.map((x) => [sizeLabel(x.size), fmtS(x.step.seconds), fmtB(x.step.peakRss), x.reflinked ? 'yes' : 'no', String(x.step.runs)])));
  }
  L.push('');
  L.push('## Responsiveness');
  L.push('');
  L.push(B.markdownTable(['install (in-process, Device.install)', 'duration', 'event-loop delay p99', 'max', 'mean', 'samples'], r.eventLoop.map((e) => [
    e.name, fmtS(e.seconds), `${e.p99.toFixed(2)} ms`, `${e.max.toFixed(2)} ms`, `${e.mean.toFixed(2)} ms`, String(e.samples),
  ])));
  L.push('');
  L.push('`perf_hooks.monitorEventLoopDelay({ resolution: 1 })` enabled around `await device.install(patch)` on a fresh device.');
  L.push('');
  L.push('## REPLACE throughput');
  L.push('');
  const rt = r.replace;
  if (!rt) L.push('Not measured (see the notes).');
  else {
    const m = rt.marginal;
    const rate = (seconds) => (seconds > 0 ? `${fmtB(m.bytes / seconds)}/s` : 'n/a');
    L.push(`Pairs of unrelated random images: each patch REPLACEs every block. After every revpatch install run, \`cp NEW OUT\` and \`cp NEW OUT && sync OUT\` copy the same new image, so the tools are measured side by side. ` +
      `An install is durable when it returns (fsync), so it is held against cp + sync.`);
    L.push('');
    L.push(B.markdownTable(['size', 'patch', 'revpatch install', 'revpatch in-process', 'cp', 'cp + sync', 'runs'], [rt.small, rt].map((p) => [
      sizeLabel(p.size), String(p.rp.patchSize), fmtS(p.rp.apply.seconds), fmtS(p.rp.applyInProcess?.seconds), fmtS(p.cp.seconds), fmtS(p.cpSync.seconds), String(p.rp.apply.runs),
    ])));
    L.push('');
    L.push(`Throughput, from the difference between the two sizes (${fmtB(m.bytes)} more): revpatch install ${rate(m.rp)}, in-process ${rate(m.rpInProcess)}; cp + sync ${rate(m.cpSync)}; cp ${rate(m.cp)}. ` +
      `The difference cancels what does not grow with the size, for every tool: for revpatch's command line that is Node start-up and loading its modules and the addon (about 0.1 s, judged on its own by the install-time targets of the small pairs above). ` +
      `Over the whole command at ${sizeLabel(rt.size)}, revpatch install reaches ${(rt.cpSync.seconds / rt.rp.apply.seconds).toFixed(2)}x of cp + sync's throughput (in-process ${(rt.cpSync.seconds / rt.rp.applyInProcess.seconds).toFixed(2)}x; against plain cp, page cache only, ${(rt.cp.seconds / rt.rp.apply.seconds).toFixed(2)}x). ` +
      `Each payload byte is hashed twice on the device: its chunk digest before it is used (the reading thread) and its leaf hash for the view digest (shared between the reading and the writing thread as each has time).`);
  }
  L.push('');
  L.push('## Targets of issue 4');
  L.push('');
  L.push(B.markdownTable(['target', 'measured', 'verdict'], r.targets.map((t) => [t.target, t.measured, verdict(t.ok)])));
  if (notes.length) {
    L.push('');
    L.push('## Notes from this run');
    L.push('');
    for (const n of notes) L.push(`- ${n}`);
  }
  L.push('');
  return L.join('\n');
}

function evaluateTargets(r) {
  const T = [];
  const smallest = (p) => {
    const others = p.tools.filter((t) => t.tool !== 'revpatch' && !t.skipped && t.patchSize !== null);
    if (!others.length) return null;
    return others.reduce((a, b) => (a.patchSize <= b.patchSize ? a : b));
  };
  for (const p of r.pairs) {
    const rp = p.tools[0];
    const best = smallest(p);
    if (!best) continue;
    const exe = p.kind === 'executable';
    const limit = exe ? 0.9 : 1;
    T.push({
      target: `patch size, ${p.name}: ≤ ${exe ? '0.9 × ' : ''}the smallest of the others`,
      measured: `${rp.patchSize} vs ${best.tool} ${best.patchSize} (${(rp.patchSize / best.patchSize).toFixed(3)}x)`,
      ok: rp.patchSize <= limit * best.patchSize,
    });
  }
  const big = r.pairs.filter((p) => p.tools[0].patchSize > 1 << 20);
  if (big.length) {
    const worst = Math.max(...big.map((p) => (p.tools[0].patchSize - p.tools[0].payloadSize) / p.tools[0].patchSize));
    T.push({ target: 'container overhead negligible for large patches (> 1 MiB)', measured: `at most ${(worst * 100).toFixed(3)} % of the patch`, ok: worst < 0.01 });
  }
  for (const p of r.pairs) {
    const rp = p.tools[0];
    const rivals = ['bsdiff', 'zstd'].map((n) => toolOf(p, n)).filter(Boolean);
    if (!rivals.length) continue;
    const worst = rivals.reduce((a, b) => (a.apply.seconds <= b.apply.seconds ? a : b));
    T.push({
      target: `install ≤ bspatch and zstd -d, ${p.name}`,
      measured: `${fmtS(rp.apply.seconds)} vs ${rivals.map((t) => `${t.tool === 'bsdiff' ? 'bspatch' : 'zstd -d'} ${fmtS(t.apply.seconds)}`).join(', ')} (in-process ${fmtS(rp.applyInProcess?.seconds)}, Node start-up ${fmtS(r.nodeStartup)})`,
      ok: rp.apply.seconds <= worst.apply.seconds,
    });
  }
  const p256 = r.pairs.find((p) => p.name.startsWith('synthetic 256 MiB'));
  const bs256 = p256 && toolOf(p256, 'bsdiff');
  T.push({
    target: 'install ≤ 0.25 × bspatch on the 256 MiB in-place pair',
    measured: bs256 ? `${fmtS(p256.tools[0].apply.seconds)} vs bspatch ${fmtS(bs256.apply.seconds)} (${(p256.tools[0].apply.seconds / bs256.apply.seconds).toFixed(2)}x)` : 'bspatch not run on 256 MiB',
    ok: bs256 ? p256.tools[0].apply.seconds <= 0.25 * bs256.apply.seconds : null,
  });
  const worstLoop = r.eventLoop.length === 0 ? { p99: Infinity } : r.eventLoop.reduce((a, b) => (a.p99 >= b.p99 ? a : b), { p99: 0, name: '' });
  T.push({ target: 'event-loop p99 delay during an install ≤ 20 ms', measured: r.eventLoop.map((e) => `${e.name}: ${e.p99.toFixed(2)} ms`).join('; '), ok: worstLoop.p99 <= 20 });
  for (const p of r.pairs) {
    const bs = toolOf(p, 'bsdiff');
    if (!bs) continue;
    const rp = p.tools[0];
    T.push({
      target: `create ≤ 2 × bsdiff (goal), ${p.name}`,
      measured: `${fmtS(rp.create.seconds)} (peak ${fmtB(rp.create.peakRss)}) vs bsdiff ${fmtS(bs.create.seconds)} (peak ${fmtB(bs.create.peakRss)}): ${(rp.create.seconds / bs.create.seconds).toFixed(2)}x`,
      ok: rp.create.seconds <= 2 * bs.create.seconds,
    });
  }
  const rt = r.replace;
  if (rt) {
    const m = rt.marginal;
    const tpRatio = m.cpSync / m.rp;
    const whole = rt.cpSync.seconds / rt.rp.apply.seconds;
    T.push({
      target: 'REPLACE-everything install ≥ 0.7 × cp throughput (cp + sync)',
      measured: `${tpRatio.toFixed(2)}x from ${sizeLabel(rt.small.size)} to ${sizeLabel(rt.size)} (in-process ${(m.cpSync / m.rpInProcess).toFixed(2)}x); whole command at ${sizeLabel(rt.size)}, start-up included: ${whole.toFixed(2)}x (in-process ${(rt.cpSync.seconds / rt.rp.applyInProcess.seconds).toFixed(2)}x)`,
      ok: m.rp > 0 && m.cpSync > 0 ? tpRatio >= 0.7 : null,
    });
  } else {
    T.push({ target: 'REPLACE-everything install ≥ 0.7 × cp throughput', measured: 'failed (see the notes)', ok: null });
  }
  if (r.scaling.rows.length < 2) {
    T.push({ target: 'scaling of install, remove + restart, memory', measured: 'failed (see the notes)', ok: null });
    return T;
  }
  const [lo, hi] = [r.scaling.rows[0], r.scaling.rows[r.scaling.rows.length - 1]];
  const span = `${sizeLabel(hi.size)} / ${sizeLabel(lo.size)}`;
  const iRatio = hi.rp.apply.seconds / lo.rp.apply.seconds;
  const rRatio = hi.rp.removeRestart.seconds / lo.rp.removeRestart.seconds;
  const ipRatio = hi.rp.applyInProcess.seconds / lo.rp.applyInProcess.seconds;
  T.push({ target: `small patch install time ratio ${span} ≤ 1.2`, measured: `${iRatio.toFixed(2)} (${fmtS(hi.rp.apply.seconds)} / ${fmtS(lo.rp.apply.seconds)}; in-process ${ipRatio.toFixed(2)}: ${fmtS(hi.rp.applyInProcess.seconds)} / ${fmtS(lo.rp.applyInProcess.seconds)})`, ok: iRatio <= 1.2 });
  T.push({ target: `remove + restart time ratio ${span} ≤ 1.2`, measured: `${rRatio.toFixed(2)} (${fmtS(hi.rp.removeRestart.seconds)} / ${fmtS(lo.rp.removeRestart.seconds)})`, ok: rRatio <= 1.2 });
  const above = hi.rp.apply.peakRss - r.idleRss;
  T.push({ target: `install peak RSS on ${sizeLabel(hi.size)} ≤ 64 MiB above an idle Node process`, measured: `${fmtB(above)} above (${fmtB(hi.rp.apply.peakRss)} vs ${fmtB(r.idleRss)})`, ok: above <= 64 * MiB });
  if (r.xfs.rows) {
    const [a, b] = [r.xfs.rows[0], r.xfs.rows[r.xfs.rows.length - 1]];
    const ratio = b.step.seconds / a.step.seconds;
    T.push({ target: `reflink export on XFS ratio ${span} ≤ 1.5`, measured: `${ratio.toFixed(2)} (${fmtS(b.step.seconds)} / ${fmtS(a.step.seconds)})${a.reflinked && b.reflinked ? '' : ', not reflinked'}`, ok: ratio <= 1.5 && a.reflinked && b.reflinked });
  } else {
    T.push({ target: 'reflink export on XFS ratio ≤ 1.5', measured: `skipped: ${r.xfs.skipped}`, ok: null });
  }
  return T;
}

function plot(r) {
  const series = [
    ['revpatch install', 'revpatch', '#1f77b4'],
    ['bspatch', 'bsdiff', '#d62728'],
    ['zstd -d --patch-from', 'zstd', '#2ca02c'],
  ].map(([name, tool, color]) => ({
    name,
    color,
    points: r.volumes
      .map((v) => {
        const t = r.pairs.find((p) => p.name === v.pairName).tools.find((x) => x.tool === tool);
        return t && !t.skipped ? [v.size, t.apply.seconds] : null;
      })
      .filter(Boolean),
  }));
  return lineChart({
    title: 'Install time against volume size (4 % of blocks changed)',
    xLabel: 'volume size',
    yLabel: 'apply time (median)',
    series: series.filter((s) => s.points.length),
    xTicks: r.volumes.map((v) => ({ value: v.size, label: sizeLabel(v.size) })),
  });
}

// ---------------------------------------------------------------------------

async function main() {
  if (!fs.existsSync(path.join(ROOT, 'build', 'Release', 'revpatch.node'))) {
    console.error('the addon is not built: run npm install (or npx node-gyp build -j 2) first');
    process.exit(1);
  }
  log(`revpatch benchmark: ${RUNS} run(s) per step${QUICK ? ', quick smoke run' : ''}`);
  ensureTools();
  const hdiff = hdiffpatchTools();
  if (hdiff.absent) note(hdiff.absent);
  fs.rmSync(WORK, { recursive: true, force: true });
  fs.mkdirSync(WORK, { recursive: true });
  const options = { policy: POLICY, workDir: WORK, toolTimeout, onStep: (s) => log(`  ${s}`) };
  const r = { pairs: [], volumes: [], eventLoop: [], started, loadAverage: { start: os.loadavg()[0] } };
  r.addonTime = fs.statSync(path.join(ROOT, 'build', 'Release', 'revpatch.node')).mtime.toISOString();

  // First, while the disk is quiet: the later steps write and delete many
  // GiB (volumes, an 8 GiB XFS image). Run last, the step's 1 GiB installs
  // were bimodal (docs/benchmarks.md); online discard, which does the work
  // for deletions in later fsyncs, is the likely cause. The REPLACE step is
  // the one whose figures are all disk writes.
  log('REPLACE throughput');
  r.replace = await attempt('REPLACE throughput', () => replaceThroughput(path.join(WORK, 'replace')));

  const bins = await esbuildBinaries();
  const exePairs = QUICK ? [['0.24.0', '0.24.1']] : [['0.24.0', '0.24.1'], ['0.24.1', '0.24.2']];
  for (const [a, b] of exePairs) {
    const name = `esbuild executable ${a} → ${b}`;
    log(name);
    const pair = await attempt(name, () => benchAll(name, 'executable', bins[a], bins[b], options, hdiff));
    if (pair) r.pairs.push({ ...pair, kind: 'executable' });
  }
  // The same release for Apple silicon and 64-bit Arm Linux: arm64 code, a
  // Mach-O image and an ELF one.
  for (const platform of QUICK ? [] : OTHER_PLATFORMS) {
    const other = await attempt(`npm pack @esbuild/${platform}`, () => esbuildBinaries(platform, ['0.24.0', '0.24.1']));
    if (!other) continue;
    const name = `esbuild executable ${platform} 0.24.0 → 0.24.1`;
    log(name);
    const pair = await attempt(name, () => benchAll(name, 'executable', other['0.24.0'], other['0.24.1'], options, hdiff));
    if (pair) r.pairs.push({ ...pair, kind: 'executable' });
  }
  for (const p of (await attempt('building the ext4 images', ext4Pairs)) ?? []) {
    log(p.name);
    const pair = await attempt(p.name, () => benchAll(p.name, p.kind, p.old, p.new, options, hdiff));
    if (pair) r.pairs.push({ ...pair, kind: p.kind });
  }
  for (const size of VOLUME_SIZES) {
    const v = await volumePair(size);
    const name = `synthetic ${sizeLabel(size)} volume, 4 % of blocks changed in place`;
    log(name);
    const pair = await attempt(name, () => benchAll(name, 'volume', v.old, v.new, options, hdiff));
    if (!pair) continue;
    r.pairs.push({ ...pair, kind: 'volume' });
    r.volumes.push({ size, changedBlocks: v.changedBlocks, pairName: name });
    if (size === 256 * MiB || size === VOLUME_SIZES[VOLUME_SIZES.length - 1]) {
      const rpWork = path.join(WORK, 'revpatch');
      log(`  event-loop delay during an in-process install (${sizeLabel(size)})`);
      const e = await attempt('event-loop measurement', () => eventLoopDuringInstall(v.old, path.join(rpWork, 'bench.rvp'), path.join(rpWork, 'keys', 'revpatch.pub')));
      if (e) r.eventLoop.push({ name: `${sizeLabel(size)} volume, 4 % changed`, ...e });
    }
  }

  log('scaling: a fixed small patch');
  const blocks = 64;
  const atBlock = 12345;
  r.scaling = { blocks, atBlock, rows: [] };
  const scalingInputs = [];
  for (const size of SCALING_SIZES) {
    const v = await volumePair(size);
    const small = path.join(CACHE, 'volumes', `${sizeLabel(size).replace(' ', '')}-small.img`);
    if (!fs.existsSync(small)) await makeSmallChange(v.old, small, atBlock, blocks);
    const dir = path.join(WORK, `scaling-${size}`);
    fs.mkdirSync(dir, { recursive: true });
    log(`  ${sizeLabel(size)}`);
    const rp = await attempt(`scaling on ${sizeLabel(size)}`, () => B.benchRevpatch(v.old, small, { ...options, workDir: dir }));
    if (!rp) continue;
    r.scaling.rows.push({ size, rp });
    scalingInputs.push({ size, old: v.old, small, patch: path.join(dir, 'revpatch', 'bench.rvp'), pub: path.join(dir, 'revpatch', 'keys', 'revpatch.pub') });
  }
  r.idleRss = await B.idleNodeRss(RUNS);
  r.nodeStartup = await B.nodeStartup(RUNS);
  log('export through reflinks on XFS');
  r.xfs = scalingInputs.length >= 2 ? (await attempt('XFS export', () => xfsExport(scalingInputs))) ?? { skipped: 'failed (see the notes)' } : { skipped: 'the scaling patches are missing' };
  if (r.xfs.skipped) note(`XFS reflink export skipped: ${r.xfs.skipped}`);


  const addonNow = fs.statSync(path.join(ROOT, 'build', 'Release', 'revpatch.node')).mtime.toISOString();
  if (addonNow !== r.addonTime) note(`the addon was rebuilt during this run (${r.addonTime} at the start, ${addonNow} at the end): steps before and after ran different engine builds`);
  r.loadAverage.end = os.loadavg()[0];
  r.machine = await B.machineInfo(CACHE);
  r.machine.tools.hdiffpatch = hdiff.version ?? 'not found';
  r.finished = Date.now();
  r.elapsed = (r.finished - started) / 1000;
  r.targets = evaluateTargets(r);
  r.notes = notes;
  r.commandsUsed = Object.fromEntries(commandsUsed);
  fs.writeFileSync(path.join(__dirname, 'results.json'), `${JSON.stringify(r, null, 1)}\n`);
  fs.writeFileSync(path.join(__dirname, 'install-time.svg'), plot(r));
  writeResultsFile(writeResults(r));
  fs.rmSync(WORK, { recursive: true, force: true });
  log(`done in ${(r.elapsed / 60).toFixed(1)} min: bench/RESULTS.md, bench/install-time.svg, bench/results.json`);
  for (const t of r.targets) log(`  ${t.ok === null ? 'n/a ' : t.ok ? 'MET ' : 'MISS'} ${t.target}: ${t.measured}`);
}

/**
 * Writes RESULTS.md with `text`, carrying over every section another step
 * owns (`<!-- NAME:begin -->` … `<!-- NAME:end -->`, bench/sections.js)
 * from the file as it was.
 */
function writeResultsFile(text) {
  const file = path.join(__dirname, 'RESULTS.md');
  const old = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
  let out = text;
  for (const m of old.matchAll(/<!-- ([a-z][a-z0-9-]*):begin -->/g)) {
    const body = readSection(old, m[1]);
    if (body !== null && readSection(out, m[1]) === null) out = replaceSection(out, m[1], body);
  }
  fs.writeFileSync(file, out);
}

/** `node bench/run.js --render`: RESULTS.md and the plot again from results.json (after a change to the report only). */
function render() {
  const r = JSON.parse(fs.readFileSync(path.join(__dirname, 'results.json'), 'utf8'));
  notes.push(...(r.notes ?? []));
  for (const [k, v] of Object.entries(r.commandsUsed ?? {})) commandsUsed.set(k, v);
  r.targets = evaluateTargets(r);
  fs.writeFileSync(path.join(__dirname, 'install-time.svg'), plot(r));
  writeResultsFile(writeResults(r));
}

/** What bench/create.js shares with this step rather than repeating it. */
/** A whole-number setting from the environment, 1..max; exits 2 on anything else. */
function positiveEnv(name, fallback, max) {
  const raw = process.env[name];
  const v = Number(raw || fallback);
  if (!Number.isInteger(v) || v < 1 || v > max) {
    console.error(`${name} must be a whole number from 1 to ${max}, not ${raw}`);
    process.exit(2);
  }
  return v;
}

module.exports = {
  positiveEnv,
  CACHE, QUICK, MiB, GiB, ESBUILD_VERSIONS, IS_ROOT, notes, commandsUsed,
  log, note, attempt, sizeLabel, ensureTools, npmPack, unpack, esbuildBinaries, ext4Pairs, volumePair,
  hdiffpatchTools, recordPace, tooSlow, benchAll, verdict,
};

if (require.main === module) {
  if (process.argv.includes('--render')) render();
  else main().catch((err) => {
    console.error(err && err.stack ? err.stack : err);
    process.exitCode = 1;
  });
}
