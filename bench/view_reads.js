#!/usr/bin/env node
'use strict';
/**
 * Verified reads against unverified ones (issue 14, target "verified reads
 * >= 0.8x the same reads unverified, sequential 1 GiB"): writes its own
 * section of bench/RESULTS.md (between the `view-reads` markers;
 * bench/sections.js). Runs over dist/ and the built addon (build first:
 * `npx node-gyp rebuild && npx tsc -p tsconfig.json`).
 *
 *   node bench/view_reads.js [--quick]
 *
 *   BENCH_RUNS=N     measured runs per figure (default 5; 1 with --quick)
 *   BENCH_QUICK=1    same as --quick: a 256 MiB view, fewer random reads
 *   BENCH_CACHE=DIR  where the 1 GiB base and its tree are kept (default
 *                    bench/.cache; made once, reused)
 *
 * What it measures, through the library as a long-lived reader uses it
 * (engine.openView: one open view, the base tree's checked groups cached),
 * with the file in the page cache (read once before), so the figures are
 * the engine's and not the disk's:
 *
 *   - sequential: the whole view in 4 MiB reads, one at a time;
 *   - random: 4 KiB reads at random block-aligned offsets, 1 and 8 in flight;
 *   - the scrub (`revpatch verify`'s engine call) over the whole view;
 *   - the engine alone (native/bench/view_read_bench.cc, built here with
 *     CMake in build-native/): View::ReadBlocks in 4 MiB runs, from the page
 *     cache and from the disk (the base's cached pages dropped first, that
 *     file's only), and 4 KiB random reads, without the addon's call cost.
 *
 * Each run measures both modes back to back, alternating which goes first;
 * the figures are medians over the runs, side by side.
 */
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const crypto = require('node:crypto');
const { execFileSync, spawnSync } = require('node:child_process');
const { replaceSection } = require('./sections.js');

const ROOT = path.resolve(__dirname, '..');
const RESULTS_MD = path.join(__dirname, 'RESULTS.md');
const SECTION = 'view-reads';
const QUICK = process.env.BENCH_QUICK === '1' || process.argv.includes('--quick');
const RUNS = Number(process.env.BENCH_RUNS || (QUICK ? 1 : 5));
if (!Number.isInteger(RUNS) || RUNS < 1 || RUNS > 50) {
  console.error(`BENCH_RUNS must be a whole number from 1 to 50, not ${process.env.BENCH_RUNS}`);
  process.exit(2);
}
const CACHE = path.resolve(process.env.BENCH_CACHE || path.join(__dirname, '.cache'));
const MIB = 1024 * 1024;
const SIZE = (QUICK ? 256 : 1024) * MIB;
const BLOCK = 4096;
const SEQ_READ = 4 * MIB;
const RANDOM_READS = QUICK ? 5000 : 20000;

let engine;
try {
  ({ engine } = require(path.join(ROOT, 'dist', 'index.js')));
} catch (err) {
  console.error(`dist/ is not built (npx tsc -p tsconfig.json): ${err.message}`);
  process.exit(1);
}

const log = (line) => process.stdout.write(`${line}\n`);
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const seconds = (start) => Number(process.hrtime.bigint() - start) / 1e9;

/** A base of SIZE bytes whose every block differs (random bytes, stamped), and its tree. */
async function makeBase() {
  const dir = path.join(CACHE, 'view-reads');
  fs.mkdirSync(dir, { recursive: true });
  const base = path.join(dir, `base-${SIZE / MIB}m.img`);
  const tree = `${base}.tree`;
  if (!fs.existsSync(base) || fs.statSync(base).size !== SIZE) {
    log(`making a ${SIZE / MIB} MiB base in ${dir}`);
    const chunk = crypto.randomBytes(MIB);
    const fd = fs.openSync(`${base}.tmp`, 'w');
    for (let i = 0; i < SIZE / MIB; i++) {
      for (let b = 0; b < MIB / BLOCK; b++) chunk.writeUInt32LE(i * (MIB / BLOCK) + b, b * BLOCK);
      fs.writeSync(fd, chunk);
    }
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fs.renameSync(`${base}.tmp`, base);
    fs.rmSync(tree, { force: true });
  }
  if (!fs.existsSync(tree)) await engine.buildBaseTree(base, BLOCK, tree);
  return { base, baseTree: tree, layers: [] };
}

async function sequential(spec, verify) {
  const view = await engine.openView(spec, { verify });
  try {
    const start = process.hrtime.bigint();
    for (let offset = 0; offset < SIZE; offset += SEQ_READ) {
      const got = await view.read(offset, SEQ_READ);
      if (got.length !== SEQ_READ) throw new Error('short read');
    }
    return SIZE / MIB / seconds(start);
  } finally {
    view.close();
  }
}

async function randomReads(spec, verify, depth, seed) {
  const view = await engine.openView(spec, { verify });
  const blocks = SIZE / BLOCK;
  let state = seed >>> 0 || 1;
  const next = () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) % blocks;
  };
  try {
    let issued = 0;
    const start = process.hrtime.bigint();
    const worker = async () => {
      while (issued < RANDOM_READS) {
        issued++;
        const got = await view.read(next() * BLOCK, BLOCK);
        if (got.length !== BLOCK) throw new Error('short read');
      }
    };
    await Promise.all(Array.from({ length: depth }, worker));
    return RANDOM_READS / seconds(start);
  } finally {
    view.close();
  }
}

async function scrub(spec) {
  const start = process.hrtime.bigint();
  const r = await engine.scrubView(spec, 10);
  if (r.bad !== 0) throw new Error(`the bench base has ${r.bad} bad blocks`);
  return SIZE / MIB / seconds(start);
}

/** The engine-alone figures from view_read_bench, or the reason there are none. */
function nativeRuns(spec) {
  const dir = path.join(ROOT, 'build-native');
  const have = spawnSync('sh', ['-c', 'command -v cmake']).status === 0;
  if (!have) return { skipped: 'cmake is not installed' };
  try {
    execFileSync('cmake', ['-S', path.join(ROOT, 'native'), '-B', dir, '-DCMAKE_BUILD_TYPE=RelWithDebInfo'], { stdio: 'ignore' });
    execFileSync('cmake', ['--build', dir, '--target', 'view_read_bench', '-j', '2'], { stdio: 'ignore' });
    const out = execFileSync(path.join(dir, 'view_read_bench'), [spec.base, spec.baseTree, String(RUNS)], { encoding: 'utf8' });
    return JSON.parse(out);
  } catch (err) {
    return { skipped: `view_read_bench failed: ${String(err.message).split('\n')[0]}` };
  }
}

function machine() {
  const cpus = os.cpus();
  const flags = fs.existsSync('/proc/cpuinfo') ? fs.readFileSync('/proc/cpuinfo', 'utf8') : '';
  return {
    cpu: `${cpus.length} × ${cpus[0]?.model ?? 'unknown'}`,
    shaNi: /\bsha_ni\b/.test(flags),
    node: process.version,
    load: os.loadavg().map((x) => x.toFixed(2)).join(' '),
  };
}

function render(r) {
  const fmt = (x, d = 0) => x.toFixed(d);
  const ratio = (on, off) => `${(on / off).toFixed(2)}×`;
  const L = [];
  L.push('## Verified reads (issue 14)');
  L.push('');
  L.push(`Every block a view reads is checked against its leaf hash (docs/reliability.md, "Verified reads"). ` +
    `Through the library as a long-lived reader uses it (\`engine.openView\`), a ${r.sizeMiB} MiB base-only view ` +
    `of random blocks, in the page cache; medians of ${r.runs} runs, both modes in each run, side by side.`);
  L.push('');
  L.push('| reads | unverified | verified | verified / unverified | target |');
  L.push('|---|---|---|---|---|');
  const seqRatio = r.seq.on / r.seq.off;
  L.push(`| sequential, 4 MiB reads | ${fmt(r.seq.off)} MiB/s | ${fmt(r.seq.on)} MiB/s | ${ratio(r.seq.on, r.seq.off)} | ≥ 0.8× ${seqRatio >= 0.8 ? '(met)' : '(**missed**)'} |`);
  for (const d of Object.keys(r.random)) {
    L.push(`| random 4 KiB, ${d} in flight | ${fmt(r.random[d].off)} reads/s | ${fmt(r.random[d].on)} reads/s | ${ratio(r.random[d].on, r.random[d].off)} | — |`);
  }
  L.push(`| scrub (\`revpatch verify\`'s engine call) | — | ${fmt(r.scrub)} MiB/s | — | — |`);
  if (r.native.runs) {
    const n = (k) => median(r.native.runs.map((x) => x[k]));
    const met = (on, off) => (on / off >= 0.8 ? '(met)' : '(**missed**)');
    L.push(`| engine alone, sequential, page cache | ${fmt(n('seqOff'))} MiB/s | ${fmt(n('seqOn'))} MiB/s | ${ratio(n('seqOn'), n('seqOff'))} | ≥ 0.8× ${met(n('seqOn'), n('seqOff'))} |`);
    L.push(`| engine alone, sequential, from the disk | ${fmt(n('coldOff'))} MiB/s | ${fmt(n('coldOn'))} MiB/s | ${ratio(n('coldOn'), n('coldOff'))} | ≥ 0.8× ${met(n('coldOn'), n('coldOff'))} |`);
    L.push(`| engine alone, random 4 KiB, page cache | ${fmt(n('randomOff'))} reads/s | ${fmt(n('randomOn'))} reads/s | ${ratio(n('randomOn'), n('randomOff'))} | — |`);
  } else {
    L.push(`| engine alone | ${r.native.skipped} | | | |`);
  }
  L.push('');
  L.push(`**Target.** Met where a reader has a cost of its own besides the engine: through the library ` +
    `an unverified 4 MiB read takes ${fmt(4000 / r.seq.off, 1)} ms (a worker-thread hop, a 4 MiB Buffer handed to ` +
    `JavaScript, ReadBytes), against ${r.native.runs ? fmt(4000 / median(r.native.runs.map((x) => x.seqOff)), 2) : '?'} ms ` +
    `for the engine's own read, so hashing adds little to it; an NBD server's socket adds cost of the same kind. ` +
    (r.native.runs && median(r.native.runs.map((x) => x.seqOn)) < 0.8 * median(r.native.runs.map((x) => x.seqOff))
      ? `Missed by the engine alone: verification hashes every byte with SHA-256 (two blocks at a time with SHA-NI, ` +
        `a run of 2 MiB or more on two threads; the scrub, which does little else, ran at ${fmt(r.scrub)} MiB/s), ` +
        `while an unverified read is a copy from the page cache (${fmt(median(r.native.runs.map((x) => x.seqOff)))} MiB/s) ` +
        `or from this virtual disk with the kernel's readahead (${fmt(median(r.native.runs.map((x) => x.coldOff)))} MiB/s). ` +
        'No hash keeps up with a memory copy; the gap closes as the reader does more per byte, or with more free cores ' +
        '(several NBD requests in flight hash on several threads).'
      : r.native.runs ? 'The engine alone meets it too.' : ''));
  L.push('');
  L.push('Per run, sequential MiB/s unverified / verified: through the library ' +
    r.seq.runs.map((x) => `${fmt(x.off)} / ${fmt(x.on)}`).join('; ') +
    (r.native.runs ? `; the engine alone, page cache ${r.native.runs.map((x) => `${fmt(x.seqOff)} / ${fmt(x.seqOn)}`).join('; ')}` +
      `; from the disk ${r.native.runs.map((x) => `${fmt(x.coldOff)} / ${fmt(x.coldOn)}`).join('; ')}` : '') + '.');
  L.push('');
  L.push(`Machine: ${r.machine.cpu}, SHA-NI ${r.machine.shaNi ? 'present' : 'absent'}, Node ${r.machine.node}; ` +
    `load average at the start ${r.machine.load} (the cores are shared with other work). ` +
    `A random read's cost is mostly the call itself (a worker-thread hop and a Buffer); ` +
    `the first read of each group of 256 blocks also reads and checks 8 KiB of the tree, then cached. ` +
    `Layer blocks cost the same hash, against a leaf already in memory.`);
  L.push('');
  L.push(`Command: \`node bench/view_reads.js\`${r.quick ? ' --quick' : ''} (BENCH_RUNS=${r.runs}), ${r.date}.`);
  return L.join('\n');
}

async function main() {
  const m = machine();
  const spec = await makeBase();
  log(`warming the page cache (${SIZE / MIB} MiB)`);
  await sequential(spec, false);
  const seqRuns = [];
  const rand = { 1: { on: [], off: [] }, 8: { on: [], off: [] } };
  const scrubs = [];
  for (let run = 0; run < RUNS; run++) {
    const order = run % 2 === 0 ? [false, true] : [true, false];
    const seq = {};
    for (const verify of order) seq[verify ? 'on' : 'off'] = await sequential(spec, verify);
    seqRuns.push(seq);
    for (const depth of [1, 8]) {
      for (const verify of order) rand[depth][verify ? 'on' : 'off'].push(await randomReads(spec, verify, depth, 1000 + run));
    }
    scrubs.push(await scrub(spec));
    log(`run ${run + 1}/${RUNS}: sequential ${seq.off.toFixed(0)} / ${seq.on.toFixed(0)} MiB/s (unverified / verified)`);
  }
  log('the engine alone (view_read_bench)');
  const native = nativeRuns(spec);
  const r = {
    native,
    sizeMiB: SIZE / MIB,
    runs: RUNS,
    quick: QUICK,
    date: new Date().toISOString().slice(0, 10),
    machine: m,
    seq: { off: median(seqRuns.map((x) => x.off)), on: median(seqRuns.map((x) => x.on)), runs: seqRuns },
    random: Object.fromEntries(
      Object.entries(rand).map(([d, x]) => [d, { off: median(x.off), on: median(x.on) }]),
    ),
    scrub: median(scrubs),
  };
  const md = fs.existsSync(RESULTS_MD) ? fs.readFileSync(RESULTS_MD, 'utf8') : '';
  fs.writeFileSync(RESULTS_MD, replaceSection(md, SECTION, render(r)));
  log(`sequential: ${r.seq.off.toFixed(0)} / ${r.seq.on.toFixed(0)} MiB/s, ratio ${(r.seq.on / r.seq.off).toFixed(2)}; bench/RESULTS.md (section ${SECTION})`);
}

main().catch((err) => {
  console.error(err.stack || String(err));
  process.exit(1);
});
