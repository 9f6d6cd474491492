#!/usr/bin/env node
'use strict';
/**
 * The fleet service's ingest and device-side benchmark (issue 13, targets
 * table): writes bench/fleet-ingest.json and its own section of
 * bench/RESULTS.md (between the `fleet-ingest` markers; bench/sections.js).
 * Runs over dist/ (build first: `npx tsc -p tsconfig.json`).
 *
 *   node bench/fleet_ingest.js [--quick]
 *
 *   BENCH_RUNS=N   measured runs per figure (default 5; 1 with --quick)
 *   BENCH_QUICK=1  same as --quick: short runs, for a smoke test
 *
 * What it measures, each in separate processes (the collector under test,
 * the load generator bench/fleet_load.js, PostgreSQL), so the figures are
 * of the real service as `revpatch fleet serve` runs it:
 *
 *   1. SQLite ingest at saturation: batches of 100 reports, N requests in
 *      flight over keep-alive connections (closed loop) against one
 *      collector over a fresh SQLite file on the temp filesystem with the
 *      store's own (durable) settings; then, open loop at half that rate,
 *      each request's latency from the moment it was due.
 *   2. PostgreSQL ingest: two collector processes over one database (a
 *      throwaway cluster, bench/fleet_postgres.js), load split between them.
 *   3. SIGKILL: the collector is killed several times under load and
 *      restarted; the generator retries each unacknowledged batch with the
 *      same ids and records every acknowledged id. Then the database is
 *      read: acknowledged reports missing, and reports stored twice.
 *   4. Device-side cost: what Reporter.record() adds to a transition, and
 *      the report queue's bound in bytes against its file after overfilling.
 *
 * CPU use of every process involved and of the whole machine is sampled
 * from /proc around each run: the machine is two cores shared with other
 * work, and the load generator competes for them too.
 */
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawn, fork, execFileSync } = require('node:child_process');

const { replaceSection } = require('./sections.js');
const { startPostgres, pgBin } = require('./fleet_postgres.js');

const ROOT = path.resolve(__dirname, '..');
const DIST = path.join(ROOT, 'dist');
const QUICK = process.env.BENCH_QUICK === '1' || process.argv.includes('--quick');
const RUNS = Number(process.env.BENCH_RUNS || (QUICK ? 1 : 5));
if (!Number.isInteger(RUNS) || RUNS < 1 || RUNS > 50) {
  console.error(`BENCH_RUNS must be a whole number from 1 to 50, not ${process.env.BENCH_RUNS}`);
  process.exit(2);
}
const RESULTS_MD = path.join(__dirname, 'RESULTS.md');
const RESULTS_JSON = path.join(__dirname, 'fleet-ingest.json');
const SECTION = 'fleet-ingest';

const BATCH = 100;
const PATCH = 'bench-patch';
const VERSION = 1;
const TARGET_RATE = 50_000;
const TARGET_P99_MS = 50;
const TARGET_RECORD_MS = 1;

/** Requests in flight tried for the saturation rate; the best is measured RUNS times. */
const SWEEP = QUICK ? [16] : [4, 16, 64];
const SWEEP_MS = QUICK ? 1000 : 3000;
const WARMUP_MS = QUICK ? 300 : 1000;
const RUN_MS = QUICK ? 1000 : 5000;
const OPEN_MS = QUICK ? 2000 : 10_000;
const OPEN_RUNS = QUICK ? 1 : Math.min(RUNS, 3);
const PG_RUNS = QUICK ? 1 : Math.min(RUNS, 3);
const KILLS = QUICK ? 2 : 5;
/** Load between kills, ms (uniform in this range; seeded). */
const KILL_GAP = QUICK ? [300, 600] : [700, 2000];

const started = Date.now();
const notes = [];

function log(message) {
  const s = ((Date.now() - started) / 1000).toFixed(0).padStart(4);
  process.stdout.write(`[${s} s] ${message}\n`);
}

function note(message) {
  notes.push(message);
  log(`note: ${message}`);
}

async function attempt(label, fn) {
  try {
    return await fn();
  } catch (err) {
    note(`${label} failed: ${err && err.code ? `${err.code}: ` : ''}${err && err.message ? err.message : err}`);
    if (process.env.BENCH_DEBUG) console.error(err);
    return null;
  }
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return null;
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/** A small deterministic generator (mulberry32) for the kill schedule. */
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------
// CPU accounting from /proc

const TICK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** utime + stime of a process in seconds, or 0 once it is gone. */
function procCpu(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / TICK;
  } catch {
    return 0;
  }
}

/** CPU seconds of a process and all its children now (PostgreSQL's backends). */
function treeCpu(root) {
  let total = procCpu(root);
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${name}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(f[1]) === root) total += (Number(f[11]) + Number(f[12])) / TICK;
    } catch {
      // gone meanwhile
    }
  }
  return total;
}

/** Busy CPU seconds of the whole machine (all cores) now. */
function machineCpu() {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, idle, iowait, irq, softirq, steal] = f;
  return { busy: (user + nice + system + irq + softirq + steal) / TICK, iowait: iowait / TICK, idle: idle / TICK };
}

/**
 * Samples CPU around a run: `parts` maps a label to a function returning
 * CPU seconds; the result is cores used (CPU s per wall s) by each, by the
 * whole machine, and by everything else (other users of the machine).
 */
function cpuMeter(parts) {
  const t0 = performance.now();
  const m0 = machineCpu();
  const p0 = Object.fromEntries(Object.entries(parts).map(([k, f]) => [k, f()]));
  return () => {
    const wall = (performance.now() - t0) / 1000;
    const m1 = machineCpu();
    const cores = {};
    let ours = 0;
    for (const [k, f] of Object.entries(parts)) {
      cores[k] = round((f() - p0[k]) / wall, 2);
      ours += cores[k];
    }
    const machine = (m1.busy - m0.busy) / wall;
    return { cores, machine: round(machine, 2), others: round(Math.max(0, machine - ours), 2), iowait: round((m1.iowait - m0.iowait) / wall, 2) };
  };
}

function round(x, digits = 0) {
  if (x === null || x === undefined || Number.isNaN(x)) return null;
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

// ---------------------------------------------------------------------------
// Processes

const live = new Set();

/** Starts bench/fleet_collector.js on `db`; resolves once it listens. */
function startCollector(db, port = 0) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(__dirname, 'fleet_collector.js'), db, String(port)], { stdio: ['ignore', 'pipe', 'pipe'] });
    live.add(child);
    let out = '';
    let err = '';
    child.stderr.on('data', (d) => {
      err += d;
    });
    const exited = new Promise((r) => child.once('exit', (code, signal) => r({ code, signal })));
    child.once('exit', (code, signal) => {
      live.delete(child);
      reject(new Error(`collector exited (${signal || code}) before it listened: ${err.trim().split('\n').slice(0, 3).join(' ')}`));
    });
    child.stdout.on('data', (d) => {
      out += d;
      const nl = out.indexOf('\n');
      if (nl === -1) return;
      const { port: p } = JSON.parse(out.slice(0, nl));
      resolve({ child, pid: child.pid, port: p, url: `http://127.0.0.1:${p}`, exited, stderr: () => err });
    });
  });
}

async function stopCollector(c, signal = 'SIGTERM') {
  if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill(signal);
  const r = await c.exited;
  live.delete(c.child);
  return r;
}

/** Forks the load generator; `run(options)` resolves with its result, `stop()` ends a durable run. */
function loadGenerator() {
  const child = fork(path.join(__dirname, 'fleet_load.js'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  live.add(child);
  child.once('exit', () => live.delete(child));
  return {
    pid: child.pid,
    run(options) {
      return new Promise((resolve, reject) => {
        child.once('message', (m) => (m.ok ? resolve(m.result) : reject(new Error(m.error))));
        child.once('exit', (code) => reject(new Error(`load generator exited with ${code}`)));
        child.send({ cmd: 'run', options: { batchSize: BATCH, patch: PATCH, version: VERSION, ...options } });
      });
    },
    stop() {
      child.send({ cmd: 'stop' });
    },
  };
}

function cleanup() {
  for (const c of live) {
    try {
      c.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
}
process.on('exit', cleanup);
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130));

// ---------------------------------------------------------------------------
// Store set-up and inspection (in this process, between runs)

function fleet() {
  return {
    store: require(path.join(DIST, 'fleet', 'store.js')),
    tokens: require(path.join(DIST, 'fleet', 'tokens.js')),
  };
}

/** Applies the migrations and mints a device token; returns the token. */
async function prepareDb(url) {
  const { store: S, tokens: T } = fleet();
  const store = await S.openStore(url);
  try {
    return await T.mintToken(store, 'device', { devices: 1_000_000, now: Date.now() });
  } finally {
    await store.close();
  }
}

function tempDir(label) {
  return fs.mkdtempSync(path.join(os.tmpdir(), `revpatch-bench-${label}-`));
}

// ---------------------------------------------------------------------------
// 1. SQLite

async function sqliteClosed(concurrency, ms) {
  const dir = tempDir('sqlite');
  try {
    const db = `sqlite:${path.join(dir, 'fleet.db')}`;
    const token = await prepareDb(db);
    const c = await startCollector(db);
    const gen = loadGenerator();
    const meter = cpuMeter({ collector: () => procCpu(c.pid), generator: () => procCpu(gen.pid) });
    const r = await gen.run({ mode: 'closed', urls: [c.url], token, concurrency, warmupMs: WARMUP_MS, durationMs: ms });
    r.cpu = meter();
    await stopCollector(c);
    return r;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function sqliteOpen(rate, ms) {
  const dir = tempDir('sqlite');
  try {
    const db = `sqlite:${path.join(dir, 'fleet.db')}`;
    const token = await prepareDb(db);
    const c = await startCollector(db);
    const gen = loadGenerator();
    const meter = cpuMeter({ collector: () => procCpu(c.pid), generator: () => procCpu(gen.pid) });
    const r = await gen.run({ mode: 'open', urls: [c.url], token, rate, durationMs: ms });
    r.cpu = meter();
    await stopCollector(c);
    return r;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function saturation(label, closedRun) {
  const sweep = [];
  for (const n of SWEEP) {
    const r = await closedRun(n, SWEEP_MS);
    log(`${label} sweep: ${n} in flight: ${Math.round(r.reportsPerSecond)} reports/s, p99 ${fmtMs(r.latency.p99)}, cpu ${JSON.stringify(r.cpu.cores)} others ${r.cpu.others}`);
    sweep.push({ concurrency: n, reportsPerSecond: r.reportsPerSecond, p99: r.latency.p99 });
  }
  const best = sweep.reduce((a, b) => (b.reportsPerSecond > a.reportsPerSecond ? b : a)).concurrency;
  const runs = [];
  for (let i = 0; i < RUNS; i++) {
    const r = await closedRun(best, RUN_MS);
    log(`${label} run ${i + 1}/${RUNS}: ${Math.round(r.reportsPerSecond)} reports/s (${best} in flight), p50 ${fmtMs(r.latency.p50)} p99 ${fmtMs(r.latency.p99)}, failures ${JSON.stringify(r.failures)}, cpu ${JSON.stringify(r.cpu.cores)} others ${r.cpu.others}`);
    runs.push(r);
  }
  return { sweep, concurrency: best, runs, reportsPerSecond: median(runs.map((r) => r.reportsPerSecond)) };
}

async function sqliteIngest() {
  const sat = await saturation('sqlite', sqliteClosed);
  const rate = Math.max(1, Math.round(sat.reportsPerSecond / 2 / BATCH));
  const open = [];
  for (let i = 0; i < OPEN_RUNS; i++) {
    const r = await sqliteOpen(rate, OPEN_MS);
    log(`sqlite open loop ${i + 1}/${OPEN_RUNS}: ${rate * BATCH} reports/s (${rate} batches/s): p50 ${fmtMs(r.latency.p50)} p99 ${fmtMs(r.latency.p99)} max ${fmtMs(r.latency.max)}, failures ${JSON.stringify(r.failures)}`);
    open.push(r);
  }
  return {
    ...sat,
    halfRate: {
      reportsPerSecond: rate * BATCH,
      batchesPerSecond: rate,
      runs: open,
      p50: median(open.map((r) => r.latency.p50)),
      p99: median(open.map((r) => r.latency.p99)),
    },
  };
}

// ---------------------------------------------------------------------------
// 2. PostgreSQL, two collectors

async function postgresIngest(pg) {
  const token = await prepareDb(pg.url);
  const collectors = [await startCollector(pg.url), await startCollector(pg.url)];
  try {
    const run = async (concurrency, ms) => {
      const gen = loadGenerator();
      const meter = cpuMeter({
        collectors: () => collectors.reduce((s, c) => s + procCpu(c.pid), 0),
        postgres: () => treeCpu(pg.pid()),
        generator: () => procCpu(gen.pid),
      });
      const r = await gen.run({ mode: 'closed', urls: collectors.map((c) => c.url), token, concurrency, warmupMs: WARMUP_MS, durationMs: ms });
      r.cpu = meter();
      return r;
    };
    return await saturation('postgres x2', run);
  } finally {
    for (const c of collectors) await stopCollector(c);
  }
}

// ---------------------------------------------------------------------------
// 3. SIGKILL under load

/**
 * Runs the durable generator against `count` collectors on `db`, killing
 * one of them (in turn) KILLS times and restarting it on the same port;
 * then reads back every stored id and compares with what was acknowledged.
 */
async function killTest(db, count, seed) {
  const dir = tempDir('kill');
  const random = rng(seed);
  try {
    const token = await prepareDb(db);
    const collectors = [];
    for (let i = 0; i < count; i++) collectors.push(await startCollector(db));
    const ackFile = path.join(dir, 'acked.txt');
    const gen = loadGenerator();
    const done = gen.run({ mode: 'durable', urls: collectors.map((c) => c.url), token, concurrency: 16, ackFile });
    const kills = [];
    for (let k = 0; k < KILLS; k++) {
      await sleep(KILL_GAP[0] + random() * (KILL_GAP[1] - KILL_GAP[0]));
      const i = k % count;
      const victim = collectors[i];
      const r = await stopCollector(victim, 'SIGKILL');
      kills.push({ collector: i, signal: r.signal, at: Date.now() - started });
      collectors[i] = await startCollector(db, victim.port);
    }
    await sleep(KILL_GAP[0]);
    gen.stop();
    const load = await done;
    for (const c of collectors) await stopCollector(c);
    const acked = fs.readFileSync(ackFile, 'utf8').split('\n').filter(Boolean);
    const check = await inspectStored(db, acked);
    return { kills, load, ...check };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Reads the reports table directly (the store interface has no per-id
 * query) and, through the store, the distinct-device counts: acknowledged
 * ids missing, ids stored more than once, and whether counts().confirmed
 * equals the distinct devices with a stored confirmation.
 */
async function inspectStored(db, acked) {
  const stored = await storedIds(db);
  const { store: S } = fleet();
  const store = await S.openStore(db);
  let reportCount;
  let counts;
  try {
    reportCount = await store.reportCount();
    counts = await store.counts(PATCH, VERSION);
  } finally {
    await store.close();
  }
  const seen = new Map();
  const confirmedDevices = new Set();
  for (const r of stored) {
    seen.set(r.id, (seen.get(r.id) || 0) + 1);
    if (r.outcome === 'confirmed') confirmedDevices.add(r.pseudonym);
  }
  const ackedSet = new Set(acked);
  let lost = 0;
  for (const id of ackedSet) if (!seen.has(id)) lost += 1;
  let twice = 0;
  for (const n of seen.values()) if (n > 1) twice += n - 1;
  return {
    acknowledged: ackedSet.size,
    acknowledgedRepeats: acked.length - ackedSet.size,
    storedRows: stored.length,
    storedDistinct: seen.size,
    storedNotAcknowledged: [...seen.keys()].filter((id) => !ackedSet.has(id)).length,
    reportCount,
    lost,
    countedTwice: twice + Math.max(0, reportCount - seen.size),
    confirmedCounted: counts.confirmed,
    confirmedDevicesStored: confirmedDevices.size,
  };
}

/** A stored row with its keys as hex, whether the backend keeps them as text or bytes. */
function plainRow(r) {
  const hex = (v) => (Buffer.isBuffer(v) ? v.toString('hex') : String(v));
  return { id: hex(r.id), outcome: r.outcome, pseudonym: hex(r.pseudonym) };
}

async function storedIds(db) {
  if (db.startsWith('sqlite:')) {
    const Database = require('better-sqlite3');
    const conn = new Database(db.slice('sqlite:'.length), { readonly: true });
    try {
      return conn.prepare('SELECT id, outcome, pseudonym FROM reports').all().map(plainRow);
    } finally {
      conn.close();
    }
  }
  const { Client } = require('pg');
  const client = new Client({ connectionString: db });
  await client.connect();
  try {
    return (await client.query('SELECT id, outcome, pseudonym FROM reports')).rows.map(plainRow);
  } finally {
    await client.end();
  }
}

// ---------------------------------------------------------------------------
// 4. Device-side cost

async function deviceCost() {
  return require('./fleet_device.js').measure({ quick: QUICK, log });
}

// ---------------------------------------------------------------------------
// Report

function fmtMs(ms) {
  if (ms === null || ms === undefined) return 'n/a';
  return ms < 10 ? `${ms.toFixed(2)} ms` : `${ms.toFixed(1)} ms`;
}

const fmtInt = (n) => (n === null || n === undefined ? 'n/a' : Math.round(n).toLocaleString('en-US'));

function machineInfo() {
  const cpus = os.cpus();
  return {
    cpu: cpus[0] ? cpus[0].model : 'unknown',
    cores: cpus.length,
    memoryGiB: round(os.totalmem() / 2 ** 30, 1),
    kernel: os.release(),
    node: process.version,
    tmp: os.tmpdir(),
    postgres: pgBin(),
  };
}

function render(r) {
  const L = [];
  const s = r.sqlite;
  const p = r.postgres;
  const k = r.kill;
  const d = r.device;
  L.push('## Fleet: collector ingest and device-side cost');
  L.push('');
  L.push(`Generated by \`node bench/fleet_ingest.js\`${r.quick ? ' --quick (smoke run: short runs, not figures to quote)' : ''} on ${r.date} in ${(r.elapsed / 60).toFixed(1)} minutes. Do not edit by hand: run it again. Raw figures: [fleet-ingest.json](fleet-ingest.json).`);
  L.push('');
  L.push(`Machine: ${r.machine.cpu}, ${r.machine.cores} cores, ${r.machine.memoryGiB} GiB, Node ${r.machine.node}; 1-minute load average ${r.load.start} at the start, ${r.load.end} at the end. The machine is shared: the \`others\` figures below are the cores busy with work that is not this benchmark's during each run.`);
  L.push('');
  L.push('| target | goal | measured | met |');
  L.push('|---|---|---|---|');
  if (s) {
    L.push(`| collector ingest, SQLite, batches of 100 | ≥ ${fmtInt(TARGET_RATE)} reports/s | **${fmtInt(s.reportsPerSecond)} reports/s** (median of ${s.runs.length} runs of ${RUN_MS / 1000} s, ${s.concurrency} requests in flight) | ${s.reportsPerSecond >= TARGET_RATE ? 'yes' : '**no**'} |`);
    L.push(`| p99 request latency at half that rate | ≤ ${TARGET_P99_MS} ms | **p99 ${fmtMs(s.halfRate.p99)}**, p50 ${fmtMs(s.halfRate.p50)} at ${fmtInt(s.halfRate.reportsPerSecond)} reports/s, open loop (median of ${s.halfRate.runs.length} runs of ${OPEN_MS / 1000} s) | ${s.halfRate.p99 !== null && s.halfRate.p99 <= TARGET_P99_MS ? 'yes' : '**no**'} |`);
  } else L.push('| collector ingest, SQLite | | not measured (see notes) | |');
  if (p) {
    L.push(`| collector ingest, PostgreSQL, two collectors | combined rate next to SQLite's | **${fmtInt(p.reportsPerSecond)} reports/s** combined (median of ${p.runs.length} runs, ${p.concurrency} in flight) vs SQLite ${s ? fmtInt(s.reportsPerSecond) : 'n/a'} | reported |`);
  } else L.push('| collector ingest, PostgreSQL, two collectors | | not measured (see notes) | |');
  for (const [label, t] of [['SQLite', k && k.sqlite], ['PostgreSQL, two collectors', k && k.postgres]]) {
    if (!t) {
      L.push(`| reports lost after SIGKILL (${label}) | | not measured (see notes) | |`);
      continue;
    }
    const ok = t.lost === 0 && t.countedTwice === 0 && t.confirmedCounted === t.confirmedDevicesStored;
    L.push(`| reports lost after SIGKILL (${label}) | 0 lost; 0 counted twice | **${t.lost} lost, ${t.countedTwice} counted twice** of ${fmtInt(t.acknowledged)} acknowledged; ${t.kills.length} kills | ${ok ? 'yes' : '**no**'} |`);
  }
  if (d) {
    L.push(`| device-side cost | ≤ ${TARGET_RECORD_MS} ms per transition; queue bounded in bytes | **${d.summary}** | ${d.met ? 'yes' : '**no**'} |`);
  } else L.push('| device-side cost | | not measured (see notes) | |');
  L.push('');
  L.push('### How');
  L.push('');
  L.push('- Every part runs in processes of its own: the collector (`bench/fleet_collector.js`: `openStore` + `FleetServer.start` on 127.0.0.1, no controller), the load generator (`bench/fleet_load.js`), PostgreSQL. Reports are shaped as the device's client makes them: random 128-bit ids, a random 256-bit pseudonym per simulated device, three reports per device (staged, trial, confirmed), ~250 bytes of JSON each; a batch is one `POST /v1/reports` of 100, with a device token, over a keep-alive `http.Agent`.');
  L.push(`- Saturation: closed loop, N requests always in flight; N swept over ${SWEEP.join(', ')} for ${SWEEP_MS / 1000} s each, then the best N measured ${RUNS} times for ${RUN_MS / 1000} s after ${WARMUP_MS / 1000} s of warm-up, each on a fresh database; a report counts when its batch was sent and acknowledged (200, stored) inside the window.`);
  L.push('- SQLite: a new file in the temp directory (ext4 on the VM disk) per run, opened by `openStore(\'sqlite:PATH\')` with the store\'s own settings (see the store for its journal and synchronous modes: acknowledged means durable).');
  L.push('- Latency: open loop at half the median saturated rate: batches sent at fixed times whatever the answers, each latency taken from when the batch was due, so queueing in the server or the sender is counted.');
  L.push('- PostgreSQL: a throwaway cluster (Debian PostgreSQL 15, `initdb` as `nobody` in a temp dir, fsync and synchronous_commit on), two collector processes on it, the generator alternating between them.');
  L.push(`- SIGKILL: 16 workers each send a batch and retry it with the same ids (20–50 ms apart) until a collector acknowledges it; the collector is SIGKILLed ${KILLS} times ${KILL_GAP[0] / 1000}–${KILL_GAP[1] / 1000} s apart and restarted on its port; then every stored id is read from the database and compared with the acknowledged ones, and \`counts()\` with the distinct devices stored.`);
  if (d && d.method) for (const m of d.method) L.push(`- ${m}`);
  L.push('');
  if (s) {
    L.push('### SQLite runs');
    L.push('');
    L.push('| run | in flight | reports/s | p50 | p99 | collector cores | generator cores | others |');
    L.push('|---|---|---|---|---|---|---|---|');
    for (const w of s.sweep) L.push(`| sweep | ${w.concurrency} | ${fmtInt(w.reportsPerSecond)} | | ${fmtMs(w.p99)} | | | |`);
    s.runs.forEach((x, i) => L.push(`| ${i + 1} | ${x.concurrency} | ${fmtInt(x.reportsPerSecond)} | ${fmtMs(x.latency.p50)} | ${fmtMs(x.latency.p99)} | ${x.cpu.cores.collector} | ${x.cpu.cores.generator} | ${x.cpu.others} |`));
    s.halfRate.runs.forEach((x, i) => L.push(`| open ${i + 1} | ${x.maxInFlight} max | ${fmtInt(x.reportsPerSecond)} (fixed) | ${fmtMs(x.latency.p50)} | ${fmtMs(x.latency.p99)} | ${x.cpu.cores.collector} | ${x.cpu.cores.generator} | ${x.cpu.others} |`));
    L.push('');
  }
  if (p) {
    L.push('### PostgreSQL runs (two collectors)');
    L.push('');
    L.push('| run | in flight | reports/s | p50 | p99 | collectors cores | postgres cores | generator cores | others |');
    L.push('|---|---|---|---|---|---|---|---|---|');
    for (const w of p.sweep) L.push(`| sweep | ${w.concurrency} | ${fmtInt(w.reportsPerSecond)} | | ${fmtMs(w.p99)} | | | | |`);
    p.runs.forEach((x, i) => L.push(`| ${i + 1} | ${x.concurrency} | ${fmtInt(x.reportsPerSecond)} | ${fmtMs(x.latency.p50)} | ${fmtMs(x.latency.p99)} | ${x.cpu.cores.collectors} | ${x.cpu.cores.postgres} | ${x.cpu.cores.generator} | ${x.cpu.others} |`));
    L.push('');
  }
  if (k && (k.sqlite || k.postgres)) {
    L.push('### SIGKILL runs');
    L.push('');
    L.push('| store | kills | acknowledged | retried batches | stored | stored, not acknowledged | lost | counted twice | counts().confirmed / devices stored |');
    L.push('|---|---|---|---|---|---|---|---|---|');
    for (const [label, t] of [['SQLite', k.sqlite], ['PostgreSQL x2', k.postgres]]) {
      if (!t) continue;
      L.push(`| ${label} | ${t.kills.length} | ${fmtInt(t.acknowledged)} | ${fmtInt(t.load.retriedBatches)} | ${fmtInt(t.storedDistinct)} | ${fmtInt(t.storedNotAcknowledged)} | ${t.lost} | ${t.countedTwice} | ${fmtInt(t.confirmedCounted)} / ${fmtInt(t.confirmedDevicesStored)} |`);
    }
    L.push('');
  }
  if (d && d.table) {
    L.push('### Device side');
    L.push('');
    for (const line of d.table) L.push(line);
    L.push('');
  }
  if (r.analysis && r.analysis.length) {
    L.push('### Notes on the figures');
    L.push('');
    for (const a of r.analysis) L.push(`- ${a}`);
    L.push('');
  }
  if (r.notes.length) {
    L.push('### Problems in this run');
    L.push('');
    for (const n of r.notes) L.push(`- ${n}`);
    L.push('');
  }
  return L.join('\n');
}

/** Plain statements about the figures, from the figures (the missed targets say why). */
function analyse(r) {
  const out = [];
  const s = r.sqlite;
  if (s) {
    const best = s.runs.reduce((a, b) => (b.reportsPerSecond > a.reportsPerSecond ? b : a));
    const c = best.cpu;
    out.push(`At saturation (SQLite, best run) the collector used ${c.cores.collector} cores, the load generator ${c.cores.generator}, other work on the machine ${c.others} (of ${r.machine.cores}).`);
    if (s.reportsPerSecond < TARGET_RATE) {
      out.push(`The SQLite ingest target (${fmtInt(TARGET_RATE)} reports/s) is missed: ${fmtInt(s.reportsPerSecond)} reports/s measured. ${r.profile ? r.profile : ''}`.trim());
    }
  }
  return out;
}

// ---------------------------------------------------------------------------

async function main() {
  if (!fs.existsSync(path.join(DIST, 'fleet', 'server.js'))) {
    console.error('dist/fleet/server.js is missing: build first (npx tsc -p tsconfig.json)');
    process.exit(2);
  }
  const r = { quick: QUICK, runs: RUNS, date: new Date().toISOString(), machine: machineInfo(), load: { start: round(os.loadavg()[0], 2) } };
  log(`fleet ingest benchmark${QUICK ? ' (quick)' : ''}: ${RUNS} runs per figure; load average ${r.load.start}`);

  r.sqlite = await attempt('SQLite ingest', sqliteIngest);
  let pg = null;
  pg = await attempt('starting PostgreSQL', startPostgres);
  if (pg) {
    try {
      r.postgres = await attempt('PostgreSQL ingest', () => postgresIngest(pg));
    } finally {
      pg.stop();
    }
  }
  r.kill = {};
  const dir = tempDir('kill-db');
  try {
    r.kill.sqlite = await attempt('SIGKILL test (SQLite)', () => killTest(`sqlite:${path.join(dir, 'fleet.db')}`, 1, 13));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  for (const [label, t] of Object.entries(r.kill)) if (t) log(`SIGKILL ${label}: ${JSON.stringify({ ...t, load: undefined, kills: t.kills.length })}`);
  const pg2 = await attempt('starting PostgreSQL', startPostgres);
  if (pg2) {
    try {
      r.kill.postgres = await attempt('SIGKILL test (PostgreSQL)', () => killTest(pg2.url, 2, 31));
    } finally {
      pg2.stop();
    }
  }
  r.device = await attempt('device-side cost', deviceCost);

  r.load.end = round(os.loadavg()[0], 2);
  r.elapsed = (Date.now() - started) / 1000;
  r.notes = notes;
  r.analysis = analyse(r);
  fs.writeFileSync(RESULTS_JSON, `${JSON.stringify(r, null, 1)}\n`);
  const md = fs.existsSync(RESULTS_MD) ? fs.readFileSync(RESULTS_MD, 'utf8') : '# Benchmarks\n';
  fs.writeFileSync(RESULTS_MD, replaceSection(md, SECTION, render(r)));
  log(`done in ${(r.elapsed / 60).toFixed(1)} min: bench/fleet-ingest.json, bench/RESULTS.md (section ${SECTION})`);
}

if (require.main === module) {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}

module.exports = { render };
