#!/usr/bin/env node
'use strict';
/**
 * The NBD export's benchmark (issue 14, targets table): writes its own
 * section of bench/RESULTS.md (between the `nbd` markers;
 * bench/sections.js). Runs over dist/ and the plugin in build/Release (build
 * first: `npx node-gyp rebuild && npx tsc -p tsconfig.json`). Needs root
 * (a loop-mounted ext4), nbdkit, nbdcopy and a C compiler with libnbd-dev.
 *
 *   node bench/nbd.js
 *
 *   BENCH_RUNS=N   measured runs per figure (default 5), medians reported
 *   BENCH_QUICK=1  1 run each and smaller read counts, for a smoke test
 *
 * Each figure is measured against its reference in the same run,
 * alternating the two, so both see the same machine:
 *
 *  1. restart-to-view on ext4, 4 GiB volume: `revpatch boot` then
 *     `revpatch serve-view` until it prints `serving`, against `revpatch
 *     boot` then `revpatch export --mode copy`, each as CLI processes, on a
 *     loop-mounted ext4 filesystem (no reflinks) holding the state and the
 *     base. Target: ≤ 0.1×.
 *  2. sequential read of a 1 GiB view: `nbdcopy URI null:` through the
 *     export against `nbdcopy view.img null:` of the same bytes as a raw
 *     image file (nbdcopy reads local files directly). Target: ≥ 0.5×.
 *  3. random 4 KiB reads: bench/nbd_random_read.c (libnbd, one connection,
 *     a fixed queue depth, the same offsets) against the export and against
 *     nbdkit's own file plugin on the raw image. Target: ≥ 0.5×.
 *
 * The page cache is warm for both sides of 2 and 3 (each is read once
 * before the measured runs): the figures compare the servers, not the disk.
 */
const fs = require('node:fs');
const fsp = fs.promises;
const os = require('node:os');
const path = require('node:path');
const { spawn, spawnSync } = require('node:child_process');
const { replaceSection } = require('./sections.js');
const { makeVolumePair, keystream } = require('./volumes.js');

const ROOT = path.resolve(__dirname, '..');
const CLI = path.join(ROOT, 'bin', 'revpatch.js');
const RESULTS_MD = path.join(__dirname, 'RESULTS.md');
const SECTION = 'nbd';
const QUICK = process.env.BENCH_QUICK === '1';
const RUNS = Number(process.env.BENCH_RUNS || (QUICK ? 1 : 5));
const GiB = 1 << 30;
const MiB = 1 << 20;
const BLOCK = 4096;
const RANDOM_READS = QUICK ? 20000 : 100000;
const DEPTH = 16;

const { Device, createPatch, writeKeyPair, nbdkitPluginPath, startViewServer } = require(path.join(ROOT, 'dist', 'index.js'));

function log(message) {
  process.stdout.write(`[nbd] ${message}\n`);
}

function sh(cmd, args, options = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 * MiB, ...options });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status ?? r.signal}): ${r.stderr || r.error}`);
  return r.stdout;
}

function have(cmd) {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function now() {
  return Number(process.hrtime.bigint()) / 1e6;
}

function missing() {
  if (process.getuid?.() !== 0) return 'not root: the ext4 volume is a loop mount';
  if (!nbdkitPluginPath()) return 'the nbdkit plugin is not built (apt-get install nbdkit-plugin-dev; npx node-gyp rebuild)';
  for (const cmd of ['nbdkit', 'nbdcopy', 'mkfs.ext4', 'cc']) if (!have(cmd)) return `${cmd} is not installed`;
  if (!fs.existsSync('/usr/include/libnbd.h')) return 'libnbd.h is missing (apt-get install libnbd-dev)';
  return null;
}

/** A device whose booted view is `base` plus one active patch made from `changed`. */
async function makeDevice(dir, base, changed) {
  const keys = await writeKeyPair(path.join(dir, 'keys'));
  const patch = path.join(dir, 'fix.rvp');
  await createPatch({ from: base, to: changed, keyPath: keys.secretKeyPath, id: 'fix', out: patch, blockSize: BLOCK });
  const state = path.join(dir, 'state');
  await Device.init(state, { volume: base, trust: keys.publicKeyPath, blockSize: BLOCK });
  const device = await Device.open(state);
  await device.install(patch);
  await device.boot();
  await device.confirm();
  return state;
}

function cli(args) {
  sh(process.execPath, [CLI, ...args]);
}

/** Runs `revpatch serve-view` until it prints its ready line; resolves with the child. */
function serveView(state) {
  const child = spawn(process.execPath, [CLI, '--state', state, 'serve-view'], { stdio: ['ignore', 'pipe', 'pipe'] });
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    child.stderr.on('data', (d) => (err += d));
    child.stdout.on('data', (d) => {
      out += d;
      if (out.includes('\n')) resolve(child);
    });
    child.once('exit', (code) => reject(new Error(`serve-view exited ${code}: ${err}`)));
  });
}

function stopChild(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
}

async function restartToView(work) {
  const img = path.join(work, 'ext4.img');
  const mnt = path.join(work, 'ext4');
  await fsp.mkdir(mnt);
  sh('truncate', ['-s', '8G', img]);
  sh('mkfs.ext4', ['-q', '-F', img]);
  sh('mount', ['-o', 'loop', img, mnt]);
  try {
    log('building the 4 GiB volume pair on the loop-mounted ext4');
    const base = path.join(mnt, 'base.img');
    const changed = path.join(mnt, 'changed.img');
    const pair = await makeVolumePair(base, changed, 4 * GiB, 0.001, 'nbd-restart');
    const state = await makeDevice(mnt, base, changed);
    await fsp.rm(changed);
    const out = path.join(mnt, 'export.img');
    const serve = [];
    const copy = [];
    for (let i = 0; i < RUNS; i++) {
      log(`restart-to-view run ${i + 1}/${RUNS}`);
      let t0 = now();
      cli(['--state', state, 'boot']);
      const child = await serveView(state);
      serve.push(now() - t0);
      await stopChild(child);

      t0 = now();
      cli(['--state', state, 'boot']);
      cli(['--state', state, 'export', '--out', out, '--mode', 'copy']);
      copy.push(now() - t0);
      await fsp.rm(out);
    }
    return { serveMs: median(serve), copyMs: median(copy), serveRuns: serve, copyRuns: copy, changedBlocks: pair.changedBlocks, dataExtents: pair.dataExtents, extents: pair.extents };
  } finally {
    spawnSync('umount', [mnt]);
  }
}

/** A fully written 1 GiB volume, a 1 MiB patch over it, the device and the view as a raw image. */
async function readFixture(work) {
  const dir = path.join(work, 'reads');
  await fsp.mkdir(dir);
  const base = path.join(dir, 'base.img');
  const changed = path.join(dir, 'changed.img');
  const fd = await fsp.open(base, 'w');
  for (let off = 0; off < GiB; off += 64 * MiB) await fd.write(keystream(`nbd-read:${off}`, 64 * MiB), 0, 64 * MiB, off);
  await fd.close();
  await fsp.copyFile(base, changed);
  const cfd = await fsp.open(changed, 'r+');
  for (let i = 0; i < 16; i++) {
    const at = Math.floor(((i + 0.5) * GiB) / 16 / BLOCK) * BLOCK;
    await cfd.write(keystream(`nbd-change:${i}`, 16 * BLOCK), 0, 16 * BLOCK, at);
  }
  await cfd.close();
  const state = await makeDevice(dir, base, changed);
  await fsp.rm(changed);
  const view = path.join(dir, 'view.img');
  cli(['--state', state, 'export', '--out', view, '--mode', 'copy']);
  return { state, view, dir };
}

async function sequential(fx, uri, fileUri, unverifiedUri) {
  const run = (src) => {
    const t0 = now();
    sh('nbdcopy', [src, 'null:']);
    return now() - t0;
  };
  run(uri);
  run(fx.view);
  run(fileUri);
  run(unverifiedUri);
  const nbd = [];
  const raw = [];
  const file = [];
  const unverified = [];
  for (let i = 0; i < RUNS; i++) {
    log(`sequential read run ${i + 1}/${RUNS}`);
    nbd.push(run(uri));
    raw.push(run(fx.view));
    file.push(run(fileUri));
    unverified.push(run(unverifiedUri));
  }
  const mbps = (ms) => GiB / MiB / (ms / 1000);
  return {
    nbdMiBps: mbps(median(nbd)),
    rawMiBps: mbps(median(raw)),
    fileMiBps: mbps(median(file)),
    unverifiedMiBps: mbps(median(unverified)),
    nbdRuns: nbd,
    rawRuns: raw,
    fileRuns: file,
    unverifiedRuns: unverified,
  };
}

/**
 * The same plugin on the same view with `verify=off` (a benchmark-only
 * parameter serve-view never passes): what the hash checks cost a reader
 * of the export, everything else equal.
 */
async function unverifiedServer(work, state) {
  const device = await Device.open(state);
  const view = device.bootedView();
  const digest = (await device.status()).bootedDigest;
  const sock = path.join(work, 'unverified.sock');
  const pid = path.join(work, 'unverified.pid');
  const args = ['--foreground', '--exit-with-parent', '--readonly', '-U', sock, '-P', pid, nbdkitPluginPath(), `base=${view.base}`, `tree=${view.baseTree}`];
  for (const layer of view.layers) args.push(`layer=${layer}`);
  args.push(`digest=${digest}`, 'verify=off');
  const child = spawn('nbdkit', args, { stdio: ['ignore', 'ignore', 'ignore'] });
  for (let i = 0; i < 1500 && !fs.existsSync(pid); i++) await new Promise((r) => setTimeout(r, 20));
  if (!fs.existsSync(pid)) throw new Error('nbdkit with the revpatch plugin (verify=off) did not start');
  return { uri: `nbd+unix:///?socket=${sock}`, stop: () => stopChild(child) };
}

/** nbdkit's file plugin on `file`, on a Unix socket; resolves once it listens. */
async function fileServer(work, file) {
  const sock = path.join(work, 'file.sock');
  const pid = path.join(work, 'file.pid');
  const child = spawn('nbdkit', ['--foreground', '--exit-with-parent', '--readonly', '-U', sock, '-P', pid, 'file', `file=${file}`], { stdio: ['ignore', 'ignore', 'inherit'] });
  for (let i = 0; i < 1500 && !fs.existsSync(pid); i++) await new Promise((r) => setTimeout(r, 20));
  if (!fs.existsSync(pid)) throw new Error('nbdkit file plugin did not start');
  return { uri: `nbd+unix:///?socket=${sock}`, stop: () => stopChild(child) };
}

async function random(work, client, uri, fileUri) {
  const run = (u) => JSON.parse(sh(client, [u, String(RANDOM_READS), String(DEPTH), '7'])).readsPerSecond;
  run(uri);
  run(fileUri);
  const nbd = [];
  const file = [];
  for (let i = 0; i < RUNS; i++) {
    log(`random read run ${i + 1}/${RUNS}`);
    nbd.push(run(uri));
    file.push(run(fileUri));
  }
  return { nbdIops: median(nbd), fileIops: median(file), nbdRuns: nbd, fileRuns: file };
}

function verdict(ok) {
  return ok ? 'met' : '**missed**';
}

function render(r) {
  const L = [];
  L.push('## NBD export (`revpatch serve-view`)');
  L.push('');
  L.push(`Measured ${r.date} by \`node bench/nbd.js\` on ${r.machine}; medians of ${r.runs} runs, the two sides of each row alternated in one run.`);
  L.push('');
  if (r.skipped) {
    L.push(`Skipped: ${r.skipped}.`);
    return L.join('\n');
  }
  const a = r.restart;
  const b = r.sequential;
  const c = r.random;
  const ra = a.serveMs / a.copyMs;
  const rb = b.nbdMiBps / b.rawMiBps;
  const rc = c.nbdIops / c.fileIops;
  L.push('| measurement | revpatch | reference | ratio | target | |');
  L.push('|---|---|---|---|---|---|');
  L.push(`| restart-to-view, ext4, 4 GiB volume | boot + serve-view ready: ${(a.serveMs / 1000).toFixed(2)} s | boot + export (copy): ${(a.copyMs / 1000).toFixed(2)} s | ${ra.toFixed(3)}× | ≤ 0.1× | ${verdict(ra <= 0.1)} |`);
  L.push(`| sequential read, 1 GiB view, \`nbdcopy … null:\` | through NBD: ${b.nbdMiBps.toFixed(0)} MiB/s | raw image file: ${b.rawMiBps.toFixed(0)} MiB/s | ${rb.toFixed(2)}× | ≥ 0.5× | ${verdict(rb >= 0.5)} |`);
  const rv = b.nbdMiBps / b.unverifiedMiBps;
  L.push(`| verified reads, sequential 1 GiB through NBD | verified (serve-view): ${b.nbdMiBps.toFixed(0)} MiB/s | same plugin, \`verify=off\`: ${b.unverifiedMiBps.toFixed(0)} MiB/s | ${rv.toFixed(2)}× | ≥ 0.8× | ${verdict(rv >= 0.8)} |`);
  L.push(`| (for scale) the same, nbdkit's \`file\` plugin on the raw image | | ${b.fileMiBps.toFixed(0)} MiB/s | ${(b.nbdMiBps / b.fileMiBps).toFixed(2)}× of it | | |`);
  L.push(`| random 4 KiB reads, queue depth ${DEPTH}, 1 connection | revpatch plugin: ${c.nbdIops.toFixed(0)} reads/s | nbdkit \`file\` plugin: ${c.fileIops.toFixed(0)} reads/s | ${rc.toFixed(2)}× | ≥ 0.5× | ${verdict(rc >= 0.5)} |`);
  L.push('');
  L.push(`- Restart-to-view: a 4 GiB volume (${a.dataExtents} of ${a.extents} 1 MiB extents hold data, the rest holes, as bench/volumes.js makes them) with one active patch of ${a.changedBlocks} blocks, state and base on an ext4 filesystem loop-mounted from a file (\`truncate -s 8G ext4.img; mkfs.ext4 -q -F ext4.img; mount -o loop ext4.img MNT\`). Each side is CLI processes: \`revpatch --state MNT/state boot\` then \`revpatch --state MNT/state serve-view\` until it prints \`serving …\` (then SIGTERM, not timed), against \`revpatch boot\` then \`revpatch export --out MNT/export.img --mode copy\` (ext4 has no reflinks: the copy writes the volume's data and fsyncs it). Runs (s): serve ${a.serveRuns.map((x) => (x / 1000).toFixed(2)).join(', ')}; export ${a.copyRuns.map((x) => (x / 1000).toFixed(2)).join(', ')}.`);
  L.push(`- Sequential: a fully written 1 GiB volume with one active patch of 256 blocks in 16 runs; \`nbdcopy nbd+unix:///?socket=STATE/view.sock null:\` against \`nbdcopy view.img null:\`, where view.img is \`revpatch export --mode copy\` of the same view. Page cache warm on both sides. Runs (MiB/s): NBD ${b.nbdRuns.map((ms) => (1024 / (ms / 1000)).toFixed(0)).join(', ')}; raw ${b.rawRuns.map((ms) => (1024 / (ms / 1000)).toFixed(0)).join(', ')}; nbdkit file plugin ${b.fileRuns.map((ms) => (1024 / (ms / 1000)).toFixed(0)).join(', ')}; revpatch plugin with \`verify=off\` ${b.unverifiedRuns.map((ms) => (1024 / (ms / 1000)).toFixed(0)).join(', ')}.`);
  if (rb < 0.5) {
    L.push(`- **Sequential target missed** (${rb.toFixed(2)}×): nbdcopy reads a local file with one copy out of the page cache, while any NBD server adds the socket: a pread into the server's buffer, a send, a receive into nbdcopy's, with server and client threads sharing the 2 cores. nbdkit's own \`file\` plugin, which does no more than pread, reaches ${(b.fileMiBps / b.rawMiBps).toFixed(2)}× of the raw file on this machine, so the gap is the NBD transport's, not the view's: the revpatch plugin reads at ${(b.nbdMiBps / b.fileMiBps).toFixed(2)}× of the file plugin while checking every block against the tree.`);
  }
  L.push(`- Random: \`bench/nbd_random_read URI ${RANDOM_READS} ${DEPTH} 7\` (libnbd, asynchronous reads, ${DEPTH} in flight on one connection, the same ${RANDOM_READS} block-aligned offsets each run) against the export of that view and against \`nbdkit --readonly file file=view.img\`; both nbdkit with their default threads, both on Unix sockets. Runs (reads/s): revpatch ${c.nbdRuns.map((x) => x.toFixed(0)).join(', ')}; file ${c.fileRuns.map((x) => x.toFixed(0)).join(', ')}.`);
  L.push(`- The revpatch plugin's reads are verified: every block is hashed and checked against its leaf in the tree before it is served (View's default; the cost alone is in bench/view_reads.js).`);
  if (ra > 0.1) L.push(`- **Restart-to-view target missed** (${ra.toFixed(3)}×).`);
  if (rc < 0.5) L.push(`- **Random-read target missed** (${rc.toFixed(2)}×).`);
  return L.join('\n');
}

async function main() {
  const r = {
    date: new Date().toISOString().slice(0, 16).replace('T', ' ') + ' UTC',
    machine: `${os.cpus().length} × ${os.cpus()[0]?.model ?? 'cpu'}, ${Math.round(os.totalmem() / GiB)} GiB RAM, Linux ${os.release()} (a shared machine)`,
    runs: RUNS,
  };
  const why = missing();
  if (why) {
    r.skipped = why;
    log(`skipped: ${why}`);
  } else {
    const work = await fsp.mkdtemp(path.join(os.tmpdir(), 'revpatch-bench-nbd-'));
    try {
      const client = path.join(work, 'nbd_random_read');
      sh('cc', ['-O2', '-o', client, path.join(__dirname, 'nbd_random_read.c'), '-lnbd']);
      r.restart = await restartToView(work);
      log('building the 1 GiB read volume');
      const fx = await readFixture(work);
      const server = await startViewServer(fx.state, {});
      try {
        const file = await fileServer(work, fx.view);
        const unverified = await unverifiedServer(work, fx.state);
        try {
          r.sequential = await sequential(fx, server.uri, file.uri, unverified.uri);
          r.random = await random(work, client, server.uri, file.uri);
        } finally {
          await file.stop();
          await unverified.stop();
        }
      } finally {
        await server.close();
      }
    } finally {
      await fsp.rm(work, { recursive: true, force: true });
    }
  }
  const md = fs.existsSync(RESULTS_MD) ? fs.readFileSync(RESULTS_MD, 'utf8') : '# Benchmarks\n';
  fs.writeFileSync(RESULTS_MD, replaceSection(md, SECTION, render(r)));
  log(`bench/RESULTS.md (section ${SECTION}) written`);
}

main().catch((err) => {
  process.stderr.write(`${err.stack || err}\n`);
  process.exit(1);
});
