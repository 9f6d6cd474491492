#!/usr/bin/env node
'use strict';
/**
 * `npm run bench:create` (and part of `npm run bench`): what `revpatch
 * create` costs as the images grow, beside the other tools' create on the
 * same pairs in the same run — the publisher's side of the benchmark.
 * Owns the section `create-scale` of bench/RESULTS.md (bench/sections.js)
 * and writes its raw figures to bench/create-results.json.
 *
 * Pairs: the esbuild executables, the ext4 images, and the synthetic
 * volumes of 64 MiB, 1 GiB, 4 GiB and 16 GiB (4 % of blocks changed; built
 * and cached by bench/run.js's helpers, so both steps share them). Tools:
 * revpatch create (default settings), xdelta3 -9, HDiffPatch in both modes,
 * bsdiff and zstd --patch-from, each where it fits in memory and time; what
 * is skipped says why. Only create is timed here (install belongs to
 * bench/run.js); every tool's output is checked once on pairs up to
 * CHECK_LIMIT, by applying it (revpatch: install + boot, view digest against
 * the patch's target).
 *
 *   BENCH_QUICK=1        smoke run: one esbuild pair, one ext4 pair, 16 MiB
 *                        and 64 MiB volumes standing in for 4 and 16 GiB,
 *                        other tools stopped after 60 s
 *   BENCH_RUNS=N         runs of a create whose first run takes at most 5 s
 *                        (default 3); a slower one runs once
 *   BENCH_CREATE_LIMIT=S revpatch create is stopped after S s (default 1800)
 *   BENCH_TOOL_LIMIT=S   another tool's create is stopped after S s (or 60 s
 *                        per GiB of NEW where that is more), and skipped
 *                        where it would take longer (default 300; 60 in a
 *                        smoke run)
 *   BENCH_CACHE, HDIFFPATCH_DIR  as for bench/run.js
 */
const fs = require('node:fs');
const path = require('node:path');
const os = require('node:os');

const R = require('./run.js');
const { writeSection } = require('./sections.js');

const ROOT = path.resolve(__dirname, '..');
const B = require(path.join(ROOT, 'dist', 'bench', 'bench.js'));
const { MiB, GiB, QUICK, CACHE, log, note, attempt, sizeLabel } = R;

const SECTION = 'create-scale';
const WORK = path.join(CACHE, 'work-create');

const RUNS = R.positiveEnv('BENCH_RUNS', QUICK ? 1 : 3, 100);
/** A create whose first run takes longer runs only once: the step has to fit in about 25 minutes. */
const CHEAP_SECONDS = 5;
const REVPATCH_LIMIT = R.positiveEnv('BENCH_CREATE_LIMIT', 1800, 86400);
const TOOL_LIMIT = R.positiveEnv('BENCH_TOOL_LIMIT', QUICK ? 60 : 300, 86400);
/** Another tool's limit on NEW of `bytes`: TOOL_LIMIT, or 60 s per GiB where that is more (xdelta3 -9 needs about 35 s per GiB here). */
const toolLimit = (bytes) => Math.max(TOOL_LIMIT, Math.ceil((60 * bytes) / GiB));
/** Outputs are checked by applying them up to this size: beyond it each check writes a whole non-sparse image. */
const CHECK_LIMIT = GiB;
const VOLUMES = QUICK ? [16 * MiB, 64 * MiB] : [64 * MiB, GiB, 4 * GiB, 16 * GiB];
/** The two largest volumes: the 4 GiB and 16 GiB of the targets (in a smoke run, smaller stand-ins). */
const [BIG, HUGE] = VOLUMES.slice(-2);
const RSS_LIMIT = GiB;
/** The other tools, in the order of the tables: the anchors of the targets first. */
const OTHER_TOOLS = ['xdelta3', 'hdiffz -m', 'hdiffz -s', 'bsdiff', 'zstd'];

const fmtS = B.fmtSeconds;
const fmtB = B.fmtBytes;
const ratio = (a, b) => (a !== null && a !== undefined && b ? `${(a / b).toFixed(2)}x` : '—');

// ---------------------------------------------------------------------------
// Measuring

function failure(step, r, limit) {
  if (r.timedOut) return `${step} did not finish within ${limit} s (stopped)`;
  const last = r.stderr.trim().split('\n').slice(-1)[0] || r.stdout.trim().split('\n').slice(-1)[0] || '';
  return `${step} failed (exit ${r.code}): ${last.slice(0, 300)}`;
}

/**
 * Runs `createOnce` RUNS times when its first run is cheap (up to
 * CHEAP_SECONDS), else once, each run on warmed inputs; { create, failed }.
 */
async function timedCreates(inputs, createOnce, limit) {
  const samples = [];
  let exact = true;
  for (let i = 0; i < RUNS; i++) {
    await B.warmInputs(inputs);
    const r = await createOnce();
    samples.push({ seconds: r.seconds, peakRss: r.peakRss });
    exact = exact && r.rssExact;
    if (r.code !== 0) return { create: B.summarize(samples, exact), failed: failure('create', r, limit) };
    if (i === 0 && r.seconds > CHEAP_SECONDS) break;
  }
  return { create: B.summarize(samples, exact), failed: null };
}

async function revpatchRow(pair, keys) {
  const rp = B.revpatchCommand();
  const dir = path.join(WORK, 'revpatch');
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const patch = path.join(dir, 'bench.rvp');
  const args = ['create', '--from', pair.old, '--to', pair.new, '--key', keys.key, '--id', 'bench', '--out', patch];
  const row = { tool: 'revpatch', patchSize: null, create: null, checked: null, skipped: null };
  try {
    log('  revpatch create');
    const { create, failed } = await timedCreates([pair.old, pair.new], () => B.runMeasured(rp[0], [...rp.slice(1), ...args], { timeoutSeconds: REVPATCH_LIMIT }), REVPATCH_LIMIT);
    if (failed) return { ...row, skipped: failed, create };
    row.create = create;
    row.patchSize = fs.statSync(patch).size;
    if (pair.newSize > CHECK_LIMIT) {
      row.checked = 'not applied here (bench/run.js installs it)';
      return row;
    }
    log('  revpatch install + boot (check)');
    const cli = async (step, a) => {
      const r = await B.runMeasured(rp[0], [...rp.slice(1), ...a]);
      if (r.code !== 0) throw new Error(failure(step, r, 0));
      return r;
    };
    try {
      const target = JSON.parse((await cli('inspect', ['inspect', patch, '--json'])).stdout).manifest.target.digest;
      const state = path.join(dir, 'state');
      await cli('init', ['--state', state, 'init', '--volume', pair.old, '--trust', keys.pub]);
      await cli('install', ['--state', state, 'install', patch]);
      const view = JSON.parse((await cli('boot', ['--state', state, '--json', 'boot'])).stdout).viewDigest;
      if (view !== target) return { ...row, skipped: `WRONG OUTPUT: after install and boot the view is ${view}, the patch's target ${target}` };
    } catch (err) {
      return { ...row, skipped: `its patch does not install: ${err.message}` };
    }
    row.checked = 'yes';
    return row;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function otherRow(tool, pair) {
  const row = { tool: tool.name, patchSize: null, create: null, checked: null, skipped: null };
  if (!B.toolInstalled(tool)) return { ...row, skipped: `not installed (Debian package ${tool.debianPackage})` };
  const limit = toolLimit(pair.newSize);
  const why = tool.unsuitable(pair.oldSize, pair.newSize) ?? R.tooSlow(tool.name, pair.kind, pair.newSize, limit);
  if (why) return { ...row, skipped: why };
  const dir = path.join(WORK, 'other');
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const patch = path.join(dir, 'patch');
  const out = path.join(dir, 'out');
  try {
    log(`  ${tool.name} create`);
    const [cmd, args] = tool.create(pair.old, pair.new, patch);
    const { create, failed } = await timedCreates([pair.old, pair.new], () => B.runMeasured(cmd, args, { timeoutSeconds: limit }), limit);
    if (failed) {
      // Stopped at the limit: at least that long, so a larger pair of the kind is not tried.
      if (create.seconds >= limit) R.recordPace(tool.name, pair.kind, pair.newSize, create.seconds);
      return { ...row, skipped: failed };
    }
    R.recordPace(tool.name, pair.kind, pair.newSize, create.seconds);
    row.create = create;
    row.patchSize = fs.statSync(patch).size;
    if (pair.newSize > CHECK_LIMIT) {
      row.checked = `not applied (over ${sizeLabel(CHECK_LIMIT)})`;
      return row;
    }
    const [acmd, aargs] = tool.apply(pair.old, patch, out);
    const r = await B.runMeasured(acmd, aargs, { timeoutSeconds: limit });
    if (r.code !== 0) return { ...row, skipped: `its patch does not apply: ${failure('apply', r, limit)}` };
    if (!(await B.sameBytes(out, pair.new))) return { ...row, skipped: 'WRONG OUTPUT: applying its patch gives other bytes than NEW' };
    row.checked = 'yes';
    return row;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function measurePair(pair, keys, tools) {
  log(pair.name);
  pair.oldSize = fs.statSync(pair.old).size;
  pair.newSize = fs.statSync(pair.new).size;
  const rows = [await revpatchRow(pair, keys)];
  for (const name of OTHER_TOOLS) {
    const tool = tools.get(name);
    if (!tool) continue;
    const row = await attempt(`${name} on ${pair.name}`, () => otherRow(tool, pair));
    if (row) rows.push(row);
  }
  return { name: pair.name, kind: pair.kind, size: pair.size ?? null, oldSize: pair.oldSize, newSize: pair.newSize, rows };
}

// ---------------------------------------------------------------------------
// Targets

const ran = (row) => row && !row.skipped && row.create && row.patchSize !== null;
const rowOf = (p, tool) => p.rows.find((x) => x.tool === tool) ?? null;

function evaluate(r) {
  const T = [];
  const vols = r.pairs.filter((p) => p.kind === 'volume');
  const rssRows = vols.map((p) => ({ p, rp: rowOf(p, 'revpatch') }));
  const over = rssRows.some(({ rp }) => ran(rp) && rp.create.peakRss !== null && rp.create.peakRss > RSS_LIMIT);
  const failed = rssRows.some(({ rp }) => !ran(rp));
  const all = rssRows.length === VOLUMES.length && rssRows.every(({ rp }) => ran(rp) && rp.create.peakRss !== null);
  T.push({
    target: `create peak RSS, every volume up to ${sizeLabel(HUGE)}: ≤ ${fmtB(RSS_LIMIT)} (default setting)`,
    measured: rssRows.map(({ p, rp }) => `${sizeLabel(p.size)}: ${ran(rp) ? fmtB(rp.create.peakRss) : `not measured (${rp.skipped})`}`).join('; ') || 'no volume measured',
    ok: over || failed ? false : all ? true : null,
  });
  for (const p of r.pairs) {
    const rp = rowOf(p, 'revpatch');
    const others = p.rows.filter((x) => x.tool !== 'revpatch' && ran(x));
    const best = others.length ? others.reduce((a, b) => (a.patchSize <= b.patchSize ? a : b)) : null;
    T.push({
      target: `patch size, ${p.name}: ≤ the smallest of the others`,
      measured: !ran(rp) ? `revpatch: ${rp.skipped}` : best ? `${rp.patchSize} vs ${best.tool} ${best.patchSize} (${ratio(rp.patchSize, best.patchSize)}); ran: ${others.map((x) => x.tool).join(', ')}` : 'no other tool ran',
      ok: ran(rp) && best ? rp.patchSize <= best.patchSize : !ran(rp) ? false : null,
    });
  }
  const big = vols.find((p) => p.size === BIG);
  if (big) {
    const rp = rowOf(big, 'revpatch');
    const xd = rowOf(big, 'xdelta3');
    T.push({
      target: `create time, ${sizeLabel(BIG)} volume: ≤ 2 × xdelta3 -9's, with the patch ≤ 0.85 × xdelta3's`,
      measured: ran(rp) && ran(xd)
        ? `${fmtS(rp.create.seconds)} vs ${fmtS(xd.create.seconds)} (${ratio(rp.create.seconds, xd.create.seconds)}); patch ${rp.patchSize} vs ${xd.patchSize} (${ratio(rp.patchSize, xd.patchSize)})`
        : `not measured: ${!ran(rp) ? `revpatch ${rp?.skipped}` : `xdelta3 ${xd ? xd.skipped : 'not run'}`}`,
      ok: ran(rp) && ran(xd) ? rp.create.seconds <= 2 * xd.create.seconds && rp.patchSize <= 0.85 * xd.patchSize : !ran(rp) ? false : null,
    });
  }
  const scaling = r.scaling;
  T.push({
    target: `create time scaling, ${sizeLabel(HUGE)} / ${sizeLabel(BIG)}: ≤ 4.5×`,
    measured: scaling.revpatch !== null
      ? `${scaling.revpatch.toFixed(2)}× (${scaling.detail}); xdelta3 -9: ${scaling.xdelta3 !== null ? `${scaling.xdelta3.toFixed(2)}×` : 'not measured'}`
      : `${scaling.stopped ? '' : 'not measured: '}${scaling.detail}`,
    ok: scaling.revpatch !== null ? scaling.revpatch <= 4.5 : false,
  });
  for (const p of r.pairs.filter((x) => x.kind === 'executable')) {
    const rp = rowOf(p, 'revpatch');
    const hm = rowOf(p, 'hdiffz -m');
    T.push({
      target: `create time, ${p.name}: ≤ 2 × hdiffz -m's, with the patch ≤ 0.6 × hdiffz -m's`,
      measured: ran(rp) && ran(hm)
        ? `${fmtS(rp.create.seconds)} vs ${fmtS(hm.create.seconds)} (${ratio(rp.create.seconds, hm.create.seconds)}); patch ${rp.patchSize} vs ${hm.patchSize} (${ratio(rp.patchSize, hm.patchSize)})`
        : `not measured: ${!ran(rp) ? `revpatch ${rp?.skipped}` : hm ? `hdiffz -m ${hm.skipped}` : 'HDiffPatch not found'}`,
      ok: ran(rp) && ran(hm) ? rp.create.seconds <= 2 * hm.create.seconds && rp.patchSize <= 0.6 * hm.patchSize : !ran(rp) ? false : null,
    });
  }
  return T;
}

/** revpatch's (and xdelta3's) create time on the largest volume over the next. */
function scalingOf(pairs) {
  const at = (size) => pairs.find((p) => p.kind === 'volume' && p.size === size);
  const [b, h] = [at(BIG), at(HUGE)];
  const times = (tool) => {
    const rb = b && rowOf(b, tool);
    const rh = h && rowOf(h, tool);
    return ran(rb) && ran(rh) ? [rh.create.seconds, rb.create.seconds] : null;
  };
  const rp = times('revpatch');
  const xd = times('xdelta3');
  // Stopped at its limit on the larger volume: the ratio is at least the limit's.
  const rb = b && rowOf(b, 'revpatch');
  const rh = h && rowOf(h, 'revpatch');
  const stopped = !rp && ran(rb) && rh && rh.create && rh.create.seconds >= REVPATCH_LIMIT;
  return {
    revpatch: rp ? rp[0] / rp[1] : null,
    xdelta3: xd ? xd[0] / xd[1] : null,
    stopped: Boolean(stopped),
    detail: rp
      ? `${fmtS(rp[0])} / ${fmtS(rp[1])}`
      : stopped
        ? `over ${(rh.create.seconds / rb.create.seconds).toFixed(1)}×: the ${sizeLabel(HUGE)} create was stopped after ${fmtS(rh.create.seconds)}, the ${sizeLabel(BIG)} one took ${fmtS(rb.create.seconds)}`
        : `revpatch create did not run on both the ${sizeLabel(BIG)} and the ${sizeLabel(HUGE)} volume`,
  };
}

// ---------------------------------------------------------------------------
// Report

const { verdict } = R;

function pairTable(p) {
  const rp = rowOf(p, 'revpatch');
  const rows = p.rows.map((x) => {
    const name = x.tool === 'bsdiff' ? 'bsdiff' : x.tool === 'revpatch' ? 'revpatch create' : x.tool;
    if (x.skipped && !ran(x)) return [name, `skipped: ${x.skipped}`, '', '', '', '', '', ''];
    return [
      name,
      String(x.patchSize),
      x.tool === 'revpatch' ? '1.00x' : ran(rp) ? ratio(x.patchSize, rp.patchSize) : '—',
      fmtS(x.create.seconds),
      x.tool === 'revpatch' ? '1.00x' : ran(rp) ? ratio(x.create.seconds, rp.create.seconds) : '—',
      fmtB(x.create.peakRss),
      String(x.create.runs),
      x.skipped ?? x.checked ?? '—',
    ];
  });
  return B.markdownTable(['tool', 'patch bytes', 'size/rp', 'create', 'create/rp', 'create peak RSS', 'runs', 'output checked'], rows);
}

function scalingTable(r) {
  const vols = r.pairs.filter((p) => p.kind === 'volume');
  const cell = (p, tool) => {
    const x = rowOf(p, tool);
    if (ran(x)) return `${fmtS(x.create.seconds)}, ${fmtB(x.create.peakRss)}`;
    if (x && x.create) return `failed after ${fmtS(x.create.seconds)}`;
    return x ? 'skipped' : '—';
  };
  return B.markdownTable(['volume', 'changed blocks', 'revpatch create (time, peak RSS)', 'revpatch s per GiB', 'xdelta3 -9', 'hdiffz -s', 'hdiffz -m'], vols.map((p) => {
    const rp = rowOf(p, 'revpatch');
    return [sizeLabel(p.size), String(p.changedBlocks ?? '—'), cell(p, 'revpatch'), ran(rp) ? (rp.create.seconds / (p.size / GiB)).toFixed(1) : '—', cell(p, 'xdelta3'), cell(p, 'hdiffz -s'), cell(p, 'hdiffz -m')];
  }));
}

function section(r) {
  const L = [];
  L.push('## Create at scale (issue 16)');
  L.push('');
  L.push(`Generated by \`npm run bench:create\` (bench/create.js) on ${new Date(r.finished).toISOString()} in ${(r.elapsed / 60).toFixed(1)} minutes` +
    `${QUICK ? ' — **BENCH_QUICK=1 smoke run: one run per step, small pairs only, volumes of 16 and 64 MiB standing in for 4 and 16 GiB; not the full benchmark**' : ''}. ` +
    'Raw figures: [create-results.json](create-results.json).');
  L.push('');
  L.push(`Machine: ${r.machine.cpuModel}, ${r.machine.cpus} cores, ${fmtB(r.machine.memory)}; 1-minute load average ${r.load.start.toFixed(2)} at the start, ${r.load.end.toFixed(2)} at the end ` +
    '(a shared virtual machine: the figures of one run are comparable with each other, less so with another run\'s). ' +
    `revpatch: \`dist/\` and addon build/Release/revpatch.node of ${r.addonTime}; tools: ${Object.entries(r.machine.tools).map(([k, v]) => `${k} ${v}`).join('; ')}.`);
  L.push('');
  L.push('Method:');
  L.push('');
  L.push(`- Only create is timed here (wall clock from spawn to exit; peak RSS from ${r.machine.rssSource}); install is bench/run.js's. revpatch is \`revpatch create\` through its command line with its default settings (Node start-up included), the others as below.`);
  L.push(`- A create whose first run takes at most ${CHEAP_SECONDS} s runs ${RUNS} time(s) and the median is reported; a slower one runs once (the \`runs\` column). Both inputs are read once before every run, so each tool starts from the page cache.`);
  L.push(`- Every output is checked once on pairs up to ${sizeLabel(CHECK_LIMIT)}: other tools' patches applied and compared byte for byte with NEW; revpatch's installed and booted, the view digest against the patch's target. Larger pairs are not applied here (each check would write a whole image); bench/run.js installs revpatch's patches of every volume and checks them.`);
  L.push(`- revpatch create is stopped after ${REVPATCH_LIMIT} s, another tool's after ${TOOL_LIMIT} s or 60 s per GiB of NEW, whichever is more. A tool is skipped where its memory would not fit in three quarters of what is available (bsdiff: ${B.BSDIFF_MEMORY_FACTOR}× the file; hdiffz -m: NEW + 5× OLD, 9× from 2 GiB, + 1 GiB; hdiffz -s: OLD / 4 + 1 GiB), where zstd's window cannot hold the reference (2 GiB), or where it would run past its limit judging by its time per byte on the largest pair of the same kind so far (linear).`);
  L.push('- hdiffz checks its own patch by applying it before it exits (its default), and that is part of its create time.');
  L.push('');
  L.push('```');
  for (const [k, v] of Object.entries(r.commands)) L.push(`${k.padEnd(16)} ${v}`);
  L.push('```');
  L.push('');
  L.push('### Targets of issue 16 (the publisher\'s side)');
  L.push('');
  L.push(B.markdownTable(['target', 'measured', 'verdict'], r.targets.map((t) => [t.target, t.measured, verdict(t.ok)])));
  L.push('');
  L.push('### Scaling over the synthetic volumes');
  L.push('');
  L.push(`Sparse volumes (bench/volumes.js: a quarter of the 1 MiB extents hold data), 4 % of all blocks changed in place. Create time of ${sizeLabel(HUGE)} over ${sizeLabel(BIG)}: revpatch ${r.scaling.revpatch !== null ? `${r.scaling.revpatch.toFixed(2)}×` : 'not measured'}, xdelta3 -9 ${r.scaling.xdelta3 !== null ? `${r.scaling.xdelta3.toFixed(2)}×` : 'not measured'} (the sizes differ by 4×).`);
  L.push('');
  L.push(scalingTable(r));
  L.push('');
  L.push('### By pair');
  for (const p of r.pairs) {
    L.push('');
    L.push(`#### ${p.name}`);
    L.push('');
    L.push(`OLD ${p.oldSize} bytes, NEW ${p.newSize} bytes.`);
    L.push('');
    L.push(pairTable(p));
  }
  if (r.notes.length) {
    L.push('');
    L.push('### Notes from this run');
    L.push('');
    for (const n of r.notes) L.push(`- ${n}`);
  }
  return L.join('\n');
}

// ---------------------------------------------------------------------------

async function pairsToMeasure() {
  const pairs = [];
  const bins = await attempt('npm pack of esbuild', () => R.esbuildBinaries());
  if (bins) {
    const steps = QUICK ? [['0.24.0', '0.24.1']] : [['0.24.0', '0.24.1'], ['0.24.1', '0.24.2']];
    for (const [a, b] of steps) pairs.push({ name: `esbuild executable ${a} → ${b}`, kind: 'executable', old: bins[a], new: bins[b] });
  }
  const ext4 = (await attempt('building the ext4 images', R.ext4Pairs)) ?? [];
  for (const p of QUICK ? ext4.slice(0, 1) : ext4) pairs.push({ ...p });
  return pairs;
}

async function main() {
  if (!fs.existsSync(path.join(ROOT, 'build', 'Release', 'revpatch.node'))) {
    console.error('the addon is not built: run npm install (or npx node-gyp build -j 2) first');
    process.exit(1);
  }
  const started = Date.now();
  log(`revpatch create at scale: ${RUNS} run(s) per cheap step${QUICK ? ', quick smoke run' : ''}`);
  R.ensureTools();
  const hdiff = R.hdiffpatchTools();
  if (hdiff.absent) note(hdiff.absent);
  const tools = new Map([...B.TOOL_NAMES.map((n) => [n, B.TOOLS[n]]), ...hdiff.tools.map((t) => [t.name, t])]);
  fs.rmSync(WORK, { recursive: true, force: true });
  fs.mkdirSync(WORK, { recursive: true });
  const r = { started, quick: QUICK, runs: RUNS, load: { start: os.loadavg()[0] }, pairs: [] };
  r.addonTime = fs.statSync(path.join(ROOT, 'build', 'Release', 'revpatch.node')).mtime.toISOString();
  const rp = B.revpatchCommand();
  const keyDir = path.join(WORK, 'keys');
  const kg = await B.runMeasured(rp[0], [...rp.slice(1), 'keygen', '--out', keyDir]);
  if (kg.code !== 0) throw new Error(`revpatch keygen failed: ${kg.stderr.trim()}`);
  const keys = { key: path.join(keyDir, 'revpatch.key'), pub: path.join(keyDir, 'revpatch.pub') };

  for (const pair of await pairsToMeasure()) {
    const m = await attempt(pair.name, () => measurePair(pair, keys, tools));
    if (m) r.pairs.push(m);
  }
  for (const size of VOLUMES) {
    const v = await attempt(`building the ${sizeLabel(size)} volume pair`, () => R.volumePair(size));
    if (!v) continue;
    const pair = { name: `synthetic ${sizeLabel(size)} volume, 4 % of blocks changed in place`, kind: 'volume', size, old: v.old, new: v.new };
    const m = await attempt(pair.name, () => measurePair(pair, keys, tools));
    if (m) r.pairs.push({ ...m, changedBlocks: v.changedBlocks });
  }

  const addonNow = fs.statSync(path.join(ROOT, 'build', 'Release', 'revpatch.node')).mtime.toISOString();
  if (addonNow !== r.addonTime) note(`the addon was rebuilt during this run (${r.addonTime} at the start, ${addonNow} at the end)`);
  r.load.end = os.loadavg()[0];
  r.machine = await B.machineInfo(CACHE);
  r.machine.tools.hdiffpatch = hdiff.version ?? 'not found';
  r.commands = {
    'revpatch create': 'revpatch create --from OLD --to NEW --key KEY --id bench --out PATCH',
    ...Object.fromEntries(OTHER_TOOLS.filter((n) => tools.has(n)).map((n) => {
      const t = tools.get(n);
      return [n, t.display?.create ?? B.commandLine(...t.create('OLD', 'NEW', 'PATCH'))];
    })),
  };
  r.scaling = scalingOf(r.pairs);
  r.targets = evaluate(r);
  r.finished = Date.now();
  r.elapsed = (r.finished - started) / 1000;
  r.notes = R.notes;
  fs.writeFileSync(path.join(__dirname, 'create-results.json'), `${JSON.stringify(r, null, 1)}\n`);
  writeSection(path.join(__dirname, 'RESULTS.md'), SECTION, section(r));
  fs.rmSync(WORK, { recursive: true, force: true });
  log(`done in ${(r.elapsed / 60).toFixed(1)} min: section ${SECTION} of bench/RESULTS.md, bench/create-results.json`);
  for (const t of r.targets) log(`  ${t.ok === null ? 'n/a ' : t.ok ? 'MET ' : 'MISS'} ${t.target}: ${t.measured}`);
}

module.exports = { evaluate, scalingOf, section, toolLimit, VOLUMES };

if (require.main === module) {
  main().catch((err) => {
    console.error(err && err.stack ? err.stack : err);
    process.exitCode = 1;
  });
}
