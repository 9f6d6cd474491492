'use strict';
// A quick measure of the collector's ingest rate (not a test, not the
// benchmark of record): the collector runs from dist/ in a child process
// (test/fixtures/fleet_server_child.js) on a temporary SQLite file; this
// process is the load generator, posting batches of BATCH fresh reports
// over CONCURRENCY keep-alive connections for SECONDS, optionally held to
// RATE reports/s. Prints reports/s and request latency percentiles.
//
//   npx tsc -p tsconfig.json && node scripts/fleet-ingest-rate.js \
//     [--seconds 10] [--concurrency 32] [--batch 100] [--rate REPORTS_PER_S]
//
// FLEET_INGEST_DB=:memory: runs the collector on an in-memory SQLite (to
// tell the store's share from the server's); FLEET_SERVER_NODE_ARGS passes
// node flags to the collector (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof").
// On a machine shared with other work the rate varies with the load; the
// CPU time per report it prints does much less.
const { spawn } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const { createInterface } = require('node:readline');

function option(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

const SECONDS = option('seconds', 10);
const CONCURRENCY = option('concurrency', 32);
const BATCH = option('batch', 100);
const RATE = option('rate', 0);
const OUTCOMES = ['staged', 'trial', 'confirmed', 'confirmed', 'confirmed', 'rolled-back'];
const PSEUDONYMS = Array.from({ length: 20000 }, () => crypto.randomBytes(32).toString('hex'));

function batchBody() {
  const ids = crypto.randomBytes(16 * BATCH).toString('hex');
  const time = new Date().toISOString();
  const reports = [];
  for (let i = 0; i < BATCH; i++) {
    const outcome = OUTCOMES[(Math.random() * OUTCOMES.length) | 0];
    reports.push({
      id: ids.slice(i * 32, i * 32 + 32),
      patch: 'fix-1',
      version: 1,
      outcome,
      code: outcome === 'rolled-back' ? 'health-check-failed' : null,
      bootAttempts: 0,
      agentVersion: '0.1.0',
      time,
      pseudonym: PSEUDONYMS[(Math.random() * PSEUDONYMS.length) | 0],
    });
  }
  return JSON.stringify({ format: 1, reports });
}

function post(agent, url, token, body) {
  return new Promise((resolve, reject) => {
    const req = http.request(`${url}/v1/reports`, {
      method: 'POST',
      agent,
      headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) },
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, text: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function main() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'revpatch-ingest-'));
  const child = spawn(process.execPath, [...(process.env.FLEET_SERVER_NODE_ARGS ? process.env.FLEET_SERVER_NODE_ARGS.split(' ') : []), path.join(__dirname, '..', 'test', 'fixtures', 'fleet_server_child.js'), process.env.FLEET_INGEST_DB || path.join(dir, 'fleet.db')], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const lines = createInterface({ input: child.stdout });
  const { url, token } = JSON.parse(await new Promise((resolve) => lines.once('line', resolve)));
  const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });

  // Warm up the connections and the server's code paths.
  await Promise.all(Array.from({ length: CONCURRENCY }, () => post(agent, url, token, batchBody())));

  const latencies = [];
  const cpuBefore = process.cpuUsage();
  let reports = 0;
  let failures = 0;
  const start = process.hrtime.bigint();
  const end = start + BigInt(Math.round(SECONDS * 1e9));
  const interval = RATE > 0 ? (1e9 * BATCH) / RATE : 0; // ns between batches when rate-limited
  let nextSlot = Number(start);
  const worker = async () => {
    while (process.hrtime.bigint() < end) {
      if (interval > 0) {
        const slot = nextSlot;
        nextSlot += interval;
        const wait = (slot - Number(process.hrtime.bigint())) / 1e6;
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      }
      const body = batchBody();
      const t0 = process.hrtime.bigint();
      const answer = await post(agent, url, token, body);
      latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
      if (answer.status === 200) reports += JSON.parse(answer.text).accepted;
      else failures++;
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  const generatorCpu = process.cpuUsage(cpuBefore);
  agent.destroy();

  child.kill('SIGTERM');
  const closing = await new Promise((resolve) => lines.once('line', resolve));
  await new Promise((resolve) => child.once('exit', resolve));
  fs.rmSync(dir, { recursive: true, force: true });

  latencies.sort((a, b) => a - b);
  const pct = (p) => latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))];
  const { commits, cpu } = JSON.parse(closing);
  const total = reports + CONCURRENCY * BATCH; // with the warm-up
  const perReport = (usage) => +((usage.user + usage.system) / total).toFixed(2);
  const result = {
    batch: BATCH,
    concurrency: CONCURRENCY,
    targetRate: RATE || null,
    seconds: Number(seconds.toFixed(2)),
    reportsPerSecond: Math.round(reports / seconds),
    requests: latencies.length,
    failures,
    latencyMs: { p50: +pct(50).toFixed(1), p90: +pct(90).toFixed(1), p99: +pct(99).toFixed(1), max: +latencies[latencies.length - 1].toFixed(1) },
    commits: commits.commits,
    batchesPerCommit: +(commits.batches / commits.commits).toFixed(1),
    // CPU time per report (µs), independent of what else runs on the machine:
    // 1e6 / (server + generator) is the rate two free cores could reach.
    serverCpuUsPerReport: perReport(cpu),
    generatorCpuUsPerReport: +((generatorCpu.user + generatorCpu.system) / reports).toFixed(2),
    cores: os.cpus().length,
    loadAverage: os.loadavg().map((l) => +l.toFixed(1)),
  };
  process.stdout.write(JSON.stringify(result, null, 2) + '\n');
}

main().catch((err) => {
  process.stderr.write(`${err.stack}\n`);
  process.exit(1);
});
