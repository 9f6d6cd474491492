#!/usr/bin/env node
'use strict';
/**
 * Background etiquette (issue 16, part 3): what an install takes from the
 * device's foreground, and whether the agent's download cap holds. Writes
 * its own section of bench/RESULTS.md (between the `background` markers;
 * bench/sections.js). Runs over dist/ and build/Release (build first).
 *
 *   node bench/background.js      (npm run bench:background)
 *
 *   BENCH_RUNS=N         measured runs per figure (default 3), medians
 *   BENCH_WINDOW_S=S     seconds each foreground workload runs (default 6)
 *   BENCH_QUICK=1        1 run, 3 s windows, two rates: a smoke test
 *   BENCH_COMPARE_ROOT=DIR  also a background install from another build
 *                        (DIR/dist and DIR/build/Release, e.g. one with a
 *                        variant of the writeback), as a fourth column
 *   BENCH_VOLUME_1G / BENCH_PATCH_1G / BENCH_PUB
 *                        an existing 1 GiB base volume, a patch for it and
 *                        the publisher key that signed it (default: the
 *                        pair in bench/.cache, made with bench/volumes.js)
 *
 * 1. Foreground beside an install. The install is `revpatch install` of a
 *    1 GiB volume's patch (4 % of blocks changed) in a child process, with
 *    and without `--background` (nice 19 and the idle I/O class on the
 *    engine threads). Installs run back to back (install,
 *    remove, install ...) from before the window to its end, so the
 *    workload never runs beside an idle device; then the loop is killed
 *    and its unsealed layer deleted. Workloads:
 *      - I/O: `dd` direct writes then direct reads of a 64 MiB file in
 *        1 MiB blocks, on the same disk as the device state, repeated
 *        for the window; MB/s;
 *      - CPU: one Node thread hashing 64 KiB buffers for the window;
 *        hashes/s.
 *    Alone / beside a normal install / beside a background install are
 *    interleaved in each round, so all three see the same machine.
 *    Targets: both workloads ≥ 0.9× alone beside the background install.
 * 2. Download cap. The agent (AgentSettings.maxBytesPerSecond, what
 *    `agent --max-rate` sets) streams the same patch from a local
 *    repository server; the rate is the bytes received over the time from
 *    the first progress event to the last, within a window. Target:
 *    within ±10 % of R.
 */
const fs = require('node:fs');
const fsp = fs.promises;
const os = require('node:os');
const path = require('node:path');
const { spawn, spawnSync } = require('node:child_process');
const { replaceSection } = require('./sections.js');

const ROOT = path.resolve(__dirname, '..');
const CLI = path.join(ROOT, 'bin', 'revpatch.js');
const RESULTS_MD = path.join(__dirname, 'RESULTS.md');
const SECTION = 'background';
const QUICK = process.env.BENCH_QUICK === '1';
const RUNS = Number(process.env.BENCH_RUNS || (QUICK ? 1 : 3));
const WINDOW_S = Number(process.env.BENCH_WINDOW_S || (QUICK ? 3 : 6));
const RATES = QUICK ? [256 * 1024, 1024 * 1024] : [256 * 1024, 1024 * 1024, 4 * 1024 * 1024];
const COMPARE_ROOT = process.env.BENCH_COMPARE_ROOT ? path.resolve(process.env.BENCH_COMPARE_ROOT) : null;
const RATE_WINDOW_MS = QUICK ? 4000 : 8000;
const GiB = 1 << 30;
const MiB = 1 << 20;
const DD_MIB = 64;

const { Device, Agent, RepositoryClient, createPatch } = require(path.join(ROOT, 'dist', 'index.js'));
const { Repository } = require(path.join(ROOT, 'dist', 'repo', 'publisher.js'));
const { serveRepository } = require(path.join(ROOT, 'dist', 'repo', 'serve.js'));

function log(message) {
  process.stdout.write(`[background] ${message}\n`);
}

const { median } = require(path.join(ROOT, 'dist', 'bench', 'bench.js'));

const now = () => Number(process.hrtime.bigint()) / 1e6;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The 1 GiB pair's base, patch and key: given, or made once into bench/.cache. */
async function volumePatch() {
  const given = [process.env.BENCH_VOLUME_1G, process.env.BENCH_PATCH_1G, process.env.BENCH_PUB];
  if (given.every(Boolean)) return { base: given[0], patch: given[1], pub: given[2] };
  const cache = path.join(__dirname, '.cache', 'background');
  await fsp.mkdir(cache, { recursive: true });
  const base = path.join(cache, '1g-old.img');
  const next = path.join(cache, '1g-new.img');
  const patch = path.join(cache, '1g.rvp');
  const pub = path.join(cache, 'keys', 'revpatch.pub');
  if (!fs.existsSync(patch)) {
    const { makeVolumePair } = require('./volumes.js');
    const { writeKeyPair } = require(path.join(ROOT, 'dist', 'index.js'));
    log('making the 1 GiB volume pair and its patch (once)');
    await makeVolumePair(base, next, GiB);
    const keys = await writeKeyPair(path.join(cache, 'keys'));
    await createPatch({ from: base, to: next, keyPath: keys.secretKeyPath, id: 'p1', out: `${patch}.tmp` });
    await fsp.rename(`${patch}.tmp`, patch);
  }
  return { base, patch, pub };
}

/** Deletes what an install killed mid-way left in the state (its unsealed layer, checkpoint, downloads). */
async function cleanState(state) {
  for (const dir of ['layers', 'downloads']) {
    const d = path.join(state, dir);
    for (const name of await fsp.readdir(d).catch(() => [])) await fsp.rm(path.join(d, name), { recursive: true, force: true });
  }
}

async function layerBytes(state) {
  let total = 0;
  for (const name of await fsp.readdir(path.join(state, 'layers')).catch(() => [])) {
    total += (await fsp.stat(path.join(state, 'layers', name)).catch(() => ({ size: 0 }))).size;
  }
  return total;
}

// One process installing and removing the patch in a loop, as a device
// agent would install (one long-lived process, no start-up per install).
const INSTALL_LOOP = `
const [root, state, patch, id, background] = process.argv.slice(1);
const { Device } = require(root + '/dist/index.js');
(async () => {
  const device = await Device.open(state);
  for (let n = 1; ; n++) {
    await device.install(patch, { background: background === '1' });
    process.stdout.write(n + '\\n');
    await device.remove(id);
  }
})().catch((err) => { process.stderr.write(String(err.stack || err)); process.exit(1); });
`;

/**
 * Starts installs of `patch` one after the other (install, then remove,
 * again), so one is running however long the window; resolves once the
 * first writes its layer (the engine is applying).
 */
async function startInstall(state, patch, id, background, root = ROOT) {
  const child = spawn(process.execPath, ['-e', INSTALL_LOOP, root, state, patch, id, background ? '1' : '0'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let err = '';
  let done = 0;
  child.stderr.on('data', (d) => (err += d));
  child.stdout.on('data', (d) => (done = Number(String(d).trim().split('\n').pop()) || done));
  const started = now();
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the install loop ended: ${err}`);
    if ((await layerBytes(state)) > 0) return { child, startedMs: now() - started, completed: () => done };
    if (now() - started > 120_000) throw new Error('the install did not start writing within 120 s');
    await sleep(50);
  }
}

/** Stops the install loop (as a crash would) and puts the device back: the patch removed, no layer left. */
async function stopInstall(install, state, id) {
  const completed = install.completed();
  await new Promise((resolve) => {
    if (install.child.exitCode !== null) return resolve();
    install.child.once('exit', resolve);
    process.kill(-install.child.pid, 'SIGKILL');
  });
  spawnSync(process.execPath, [CLI, '--state', state, 'remove', id], { stdio: 'ignore' });
  await cleanState(state);
  return { completed };
}

function run(cmd, args) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d) => (err += d));
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} ${args.join(' ')}: ${code} ${err}`))));
  });
}

/** dd direct writes and reads of a 64 MiB file for the window; MB/s (10^6). */
async function ioWorkload(dir) {
  const file = path.join(dir, 'fg.dat');
  const end = now() + WINDOW_S * 1000;
  let bytes = 0;
  const t0 = now();
  while (now() < end) {
    await run('dd', ['if=/dev/zero', `of=${file}`, 'bs=1M', `count=${DD_MIB}`, 'oflag=direct', 'conv=fsync', 'status=none']);
    await run('dd', [`if=${file}`, 'of=/dev/null', 'bs=1M', 'iflag=direct', 'status=none']);
    bytes += 2 * DD_MIB * MiB;
  }
  const ms = now() - t0;
  await fsp.rm(file, { force: true });
  return (bytes / 1e6) / (ms / 1000);
}

const CPU_CHILD = `
const buf = crypto.randomBytes(65536);
const end = Date.now() + Number(process.argv[1]) * 1000;
let n = 0;
const t0 = process.hrtime.bigint();
while (Date.now() < end) { crypto.createHash('sha256').update(buf).digest(); n++; }
const s = Number(process.hrtime.bigint() - t0) / 1e9;
process.stdout.write(String(n / s));
`;

/** One Node thread hashing 64 KiB buffers for the window; hashes/s. */
async function cpuWorkload() {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', CPU_CHILD, String(WINDOW_S)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.on('exit', (code) => (code === 0 ? resolve(Number(out)) : reject(new Error(`cpu loop exited ${code}`))));
  });
}

async function foreground(work, state, patch, id) {
  const modes = ['alone', 'normal', 'background', ...(COMPARE_ROOT ? ['compare'] : [])];
  const r = { io: {}, cpu: {}, installs: [] };
  for (const w of ['io', 'cpu']) for (const m of modes) r[w][m] = [];
  for (let round = 0; round < RUNS; round++) {
    for (const w of ['io', 'cpu']) {
      for (const m of modes) {
        let install = null;
        if (m !== 'alone') {
          install = await startInstall(state, patch, id, m !== 'normal', m === 'compare' ? COMPARE_ROOT : ROOT);
        }
        const value = w === 'io' ? await ioWorkload(work) : await cpuWorkload();
        if (install) {
          const stopped = await stopInstall(install, state, id);
          r.installs.push({ workload: w, mode: m, ...stopped });
        }
        r[w][m].push(value);
        log(`round ${round + 1} ${w} ${m}: ${value.toFixed(1)}`);
      }
    }
  }
  return r;
}

async function rateCap(work, vp) {
  const repoDir = path.join(work, 'repo');
  const repo = await Repository.init(repoDir, { publisherKey: vp.pub });
  await repo.publish(vp.patch);
  const server = await serveRepository(repoDir, { port: 0 });
  const results = [];
  try {
    // Each run on a fresh copy of one set-up device: the agent never takes
    // again a patch the device held before (removed), so a reused state
    // would download nothing once a run finished its install.
    const template = path.join(work, 'agent-template');
    const state = path.join(work, 'agent-state');
    log('setting up the agent device (hashing the 1 GiB base)');
    await Device.init(template, {
      volume: vp.base,
      trust: vp.pub,
      repository: { url: server.url, root: path.join(repoDir, 'metadata', '1.root.json') },
    });
    for (const rate of RATES) {
      const runs = [];
      for (let i = 0; i < RUNS; i++) {
        await fsp.rm(state, { recursive: true, force: true });
        await fsp.cp(template, state, { recursive: true });
        const client = await RepositoryClient.open(state, { url: server.url, rootPath: path.join(repoDir, 'metadata', '1.root.json') });
        const agent = new Agent({ stateDir: state, client, deviceId: 'bench', settings: { maxBytesPerSecond: rate } });
        const controller = new AbortController();
        let first = null;
        let last = null;
        agent.on('progress', (p) => {
          if (p.phase !== 'download' || p.done <= 0) return;
          const t = now();
          if (!first) first = { t, bytes: p.done };
          last = { t, bytes: p.done };
          if (t - first.t >= RATE_WINDOW_MS || p.done >= p.total) controller.abort();
        });
        await agent.checkOnce({ signal: controller.signal }).catch(() => undefined);
        await agent.close();
        const measured = last && first && last.t > first.t ? ((last.bytes - first.bytes) * 1000) / (last.t - first.t) : NaN;
        runs.push(measured);
        log(`rate ${rate}: ${measured.toFixed(0)} B/s over ${last ? ((last.t - first.t) / 1000).toFixed(1) : '?'} s`);
      }
      results.push({ rate, runs, measured: median(runs) });
    }
  } finally {
    await server.close();
  }
  return results;
}

function verdict(ok) {
  return ok ? 'met' : '**missed**';
}

function render(r) {
  const L = [];
  L.push('## Background etiquette (issue 16)');
  L.push('');
  L.push(`${r.date}, ${r.machine}. \`node bench/background.js\`, ${r.runs} run(s) per figure, medians; windows of ${WINDOW_S} s.`);
  L.push('');
  if (r.skipped) {
    L.push(`Skipped: ${r.skipped}.`);
    return L.join('\n');
  }
  const f = r.fg;
  const ratio = (w, m) => median(f[w][m]) / median(f[w].alone);
  L.push('| foreground workload | alone | beside a normal install | beside a background install | ratio, normal | ratio, background | target | verdict |');
  L.push('|---|---|---|---|---|---|---|---|');
  const row = (name, w, unit) =>
    `| ${name} | ${median(f[w].alone).toFixed(1)} ${unit} | ${median(f[w].normal).toFixed(1)} ${unit} | ${median(f[w].background).toFixed(1)} ${unit} | ${ratio(w, 'normal').toFixed(2)}× | ${ratio(w, 'background').toFixed(2)}× | ≥ 0.9× | ${verdict(ratio(w, 'background') >= 0.9)} |`;
  L.push(row(`I/O: dd direct write + read, ${DD_MIB} MiB, 1 MiB blocks`, 'io', 'MB/s'));
  L.push(row('CPU: one thread, SHA-256 of 64 KiB', 'cpu', 'hashes/s'));
  if (f.io.compare) {
    L.push('');
    const wins = (w) => f[w].background.filter((x, i) => x >= f[w].compare[i]).length;
    L.push(`Beside a background install from the build in \`${COMPARE_ROOT}\` (BENCH_COMPARE_ROOT), same rounds: I/O ${median(f.io.compare).toFixed(1)} MB/s (${ratio('io', 'compare').toFixed(2)}×; runs ${f.io.compare.map((x) => x.toFixed(1)).join(', ')}), CPU ${median(f.cpu.compare).toFixed(0)} hashes/s (${ratio('cpu', 'compare').toFixed(2)}×; runs ${f.cpu.compare.map((x) => x.toFixed(0)).join(', ')}); installs completed per window ${median(r.fg.installs.filter((x) => x.mode === 'compare').map((x) => x.completed))}. This build's background install left the foreground at least as much in ${wins('io')} of ${f.io.compare.length} rounds for I/O and ${wins('cpu')} of ${f.cpu.compare.length} for CPU.`);
  }
  L.push('');
  L.push('| download cap R | measured rate | measured / R | target | verdict |');
  L.push('|---|---|---|---|---|');
  for (const c of r.caps) {
    const q = c.measured / c.rate;
    L.push(`| ${c.rate / 1024} KiB/s | ${(c.measured / 1024).toFixed(1)} KiB/s | ${q.toFixed(3)} | 0.9–1.1 | ${verdict(q >= 0.9 && q <= 1.1)} |`);
  }
  L.push('');
  L.push(`- Install: \`revpatch install\` of the 1 GiB volume's patch (${(r.patchBytes / MiB).toFixed(1)} MiB, 4 % of blocks changed), in a child process, with \`--background\` (engine threads at nice 19 and in the idle I/O class) or without. Installs run back to back in one Node process (Device.install, Device.remove, again: no process start-up per install) from before the window until its end, then the loop is killed and its unsealed layer deleted. Installs completed per window (medians; what the foreground's share costs the install): normal ${median(r.fg.installs.filter((x) => x.mode === 'normal').map((x) => x.completed))}, background ${median(r.fg.installs.filter((x) => x.mode === 'background').map((x) => x.completed))}.`);
  L.push(`- Runs: I/O MB/s alone ${f.io.alone.map((x) => x.toFixed(1)).join(', ')}; normal ${f.io.normal.map((x) => x.toFixed(1)).join(', ')}; background ${f.io.background.map((x) => x.toFixed(1)).join(', ')}. CPU hashes/s alone ${f.cpu.alone.map((x) => x.toFixed(0)).join(', ')}; normal ${f.cpu.normal.map((x) => x.toFixed(0)).join(', ')}; background ${f.cpu.background.map((x) => x.toFixed(0)).join(', ')}.`);
  L.push(`- Disk: ${r.disk}. The idle I/O class is honoured by the BFQ scheduler only; under another scheduler it is kept but has no effect, and the install's I/O competes as best effort.`);
  L.push(`- Download: the agent (AgentSettings.maxBytesPerSecond, as \`agent --max-rate\` sets it) streaming the same patch from a repository on 127.0.0.1; rate = bytes between the first and the last progress event over their time, within ${RATE_WINDOW_MS / 1000} s. Runs (KiB/s): ${r.caps.map((c) => `${c.rate / 1024}: ${c.runs.map((x) => (x / 1024).toFixed(1)).join(', ')}`).join('; ')}.`);
  L.push('- Figures from a machine shared with other work (load average at the start ' + r.load + '): the ratios compare runs interleaved in the same rounds, not absolute speeds.');
  for (const [w, name] of [['io', 'Foreground I/O'], ['cpu', 'Foreground CPU']]) {
    const q = ratio(w, 'background');
    const alone = f[w].alone.filter(Number.isFinite);
    const spread = (Math.max(...alone) - Math.min(...alone)) / median(alone);
    if (q < 0.9) {
      L.push(
        `- **${name} target missed** (${q.toFixed(2)}× beside a background install, ${ratio(w, 'normal').toFixed(2)}× beside a normal one). ` +
          `The runs alone spread by ${(spread * 100).toFixed(0)} % of their median on this shared machine. The install's engine threads do run at nice 19 ` +
          '(test/background_install.test.ts reads it back), but nice only orders threads waiting for the same CPU: with 2 CPUs the install also runs on the one the loop does not use, ' +
          'so the likely causes of what is left (not isolated here) are what the two CPUs share on this host and the kernel\'s page-cache and writeback work done for the install, which no thread priority removes.',
      );
    }
  }
  for (const c of r.caps) {
    const q = c.measured / c.rate;
    if (!(q >= 0.9 && q <= 1.1)) L.push(`- **Download cap target missed** at ${c.rate / 1024} KiB/s (${q.toFixed(3)}×).`);
  }
  return L.join('\n');
}

function diskOf(dir) {
  const dev = spawnSync('df', ['--output=source', dir], { encoding: 'utf8' }).stdout.trim().split('\n').pop() ?? '';
  const name = path.basename(dev).replace(/[0-9]+$/, '');
  let sched = 'unknown';
  try {
    sched = fs.readFileSync(`/sys/block/${name}/queue/scheduler`, 'utf8').trim();
  } catch {
    // not a block device we can name
  }
  return `${dev} (scheduler: ${sched})`;
}

async function main() {
  const r = {
    date: new Date().toISOString().slice(0, 16).replace('T', ' ') + ' UTC',
    machine: `${os.cpus().length} × ${os.cpus()[0]?.model ?? 'cpu'}, ${Math.round(os.totalmem() / GiB)} GiB RAM, Linux ${os.release()} (a shared machine)`,
    runs: RUNS,
    load: os.loadavg().map((x) => x.toFixed(1)).join(' / '),
  };
  if (process.platform !== 'linux') r.skipped = 'needs Linux (dd with direct I/O, /proc)';
  else if (spawnSync('sh', ['-c', 'command -v dd']).status !== 0) r.skipped = 'dd is not installed';
  if (!r.skipped) {
    const vp = await volumePatch();
    r.patchBytes = (await fsp.stat(vp.patch)).size;
    const work = await fsp.mkdtemp(path.join(os.tmpdir(), 'revpatch-bench-bg-'));
    r.disk = diskOf(work);
    try {
      const state = path.join(work, 'state');
      log('setting up the device (hashing the 1 GiB base)');
      await Device.init(state, { volume: vp.base, trust: vp.pub });
      const id = JSON.parse(spawnSync(process.execPath, [CLI, '--json', 'inspect', vp.patch], { encoding: 'utf8' }).stdout).manifest.id;
      r.fg = await foreground(work, state, vp.patch, id);
      r.caps = await rateCap(work, vp);
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
