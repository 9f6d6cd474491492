'use strict';
/**
 * The load generator of the fleet ingest benchmark (bench/fleet_ingest.js),
 * run as a child process of its own so that its CPU is visible apart from
 * the collector's (/proc/PID/stat) and it never shares an event loop with
 * the server it measures.
 *
 * It POSTs report batches to one or more collectors (round-robin) through a
 * keep-alive http.Agent and answers one IPC message, `{ cmd: 'run', ... }`,
 * with one result message. Three modes:
 *
 *   closed   `concurrency` requests in flight at all times for `warmupMs`
 *            then `durationMs`: the saturation rate (acknowledged reports
 *            per second in the measured window) and the latency of each
 *            request there.
 *   open     batches sent at a fixed rate whatever the answers (open loop):
 *            each request's latency is taken from the moment it was due, so
 *            a slow server cannot hide its queue by slowing the sender.
 *   durable  `concurrency` workers that retry a batch, with the same report
 *            ids, until it is acknowledged (the collector is being killed and
 *            restarted meanwhile); runs until a `{ cmd: 'stop' }` message,
 *            then writes the ids of every acknowledged report to `ackFile`.
 *
 * Three reports in a row (staged, trial, confirmed) share a pseudonym, as
 * one device's would.
 */
const http = require('node:http');
const fs = require('node:fs');
const crypto = require('node:crypto');

const OUTCOME_CYCLE = ['staged', 'trial', 'confirmed'];
const TIME = new Date(Date.UTC(2026, 11, 1, 12, 0, 0)).toISOString();

/**
 * Builds the bodies of batches as devices would send them: each report id
 * is 128 random bits (as lib/report/client.ts newReport draws them) and each
 * simulated device has a random 256-bit pseudonym (an HMAC output looks
 * no different), so the collector's unique indexes see random keys, not a
 * counter that would keep every insert on the last page.
 */
class BatchMaker {
  constructor({ batchSize, patch, version, agentVersion }) {
    this.batchSize = batchSize;
    this.seq = 0;
    this.pseudonym = '';
    this.head = `"patch":${JSON.stringify(patch)},"version":${version},"outcome":"`;
    this.tail = `,"bootAttempts":0,"agentVersion":${JSON.stringify(agentVersion)},"time":"${TIME}","pseudonym":"`;
  }

  /** `{ body: Buffer, ids: string[] }` of the next batch. */
  next() {
    const n = this.batchSize;
    const ids = crypto.randomBytes(16 * n).toString('hex');
    const pseudonyms = crypto.randomBytes(32 * Math.ceil(n / 3 + 1)).toString('hex');
    const out = new Array(n);
    const parts = new Array(n);
    let p = 0;
    for (let i = 0; i < n; i += 1) {
      const k = this.seq % 3;
      this.seq += 1;
      if (k === 0 || this.pseudonym === '') this.pseudonym = pseudonyms.slice(64 * p, 64 * ++p);
      const id = ids.slice(32 * i, 32 * i + 32);
      out[i] = id;
      parts[i] = `{"id":"${id}",${this.head}${OUTCOME_CYCLE[k]}","code":null${this.tail}${this.pseudonym}"}`;
    }
    return { body: Buffer.from(`{"format":1,"reports":[${parts.join(',')}]}`), ids: out };
  }
}

/** One POST; resolves `{ status, body, ms }` or rejects on a transport error. */
function post(agent, target, token, body) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const req = http.request(
      {
        agent,
        host: target.hostname,
        port: target.port,
        path: target.pathname,
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'content-length': body.length,
          authorization: `Bearer ${token}`,
        },
      },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString('utf8'), ms: performance.now() - t0 }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

function quantile(sorted, q) {
  if (sorted.length === 0) return null;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i];
}

function latencySummary(ms) {
  const s = Float64Array.from(ms).sort();
  return { count: s.length, p50: quantile(s, 0.5), p90: quantile(s, 0.9), p99: quantile(s, 0.99), max: s.length ? s[s.length - 1] : null };
}

function makeAgent(concurrency) {
  return new http.Agent({ keepAlive: true, maxSockets: concurrency, maxFreeSockets: concurrency, scheduling: 'fifo' });
}

function targetsOf(urls) {
  return urls.map((u) => new URL('/v1/reports', u));
}

/** Counts what came back that was not a 200, by status (or transport error code). */
function failureCounter() {
  const failures = {};
  return {
    failures,
    add(key) {
      failures[key] = (failures[key] || 0) + 1;
    },
  };
}

async function closed(o) {
  const agent = makeAgent(o.concurrency);
  const targets = targetsOf(o.urls);
  const maker = new BatchMaker(o);
  const fails = failureCounter();
  const start = performance.now();
  const from = start + o.warmupMs;
  const until = from + o.durationMs;
  let accepted = 0;
  let duplicates = 0;
  let batches = 0;
  const latencies = [];
  let turn = 0;
  async function worker() {
    while (performance.now() < until) {
      const { body } = maker.next();
      const target = targets[turn++ % targets.length];
      try {
        const sentAt = performance.now();
        const r = await post(agent, target, o.token, body);
        const done = performance.now();
        if (r.status !== 200) {
          fails.add(String(r.status));
          continue;
        }
        if (sentAt >= from && done <= until) {
          const ack = JSON.parse(r.body);
          accepted += ack.accepted;
          duplicates += ack.duplicates;
          batches += 1;
          latencies.push(r.ms);
        }
      } catch (err) {
        fails.add(err.code || err.message);
        await new Promise((res) => setTimeout(res, 10));
      }
    }
  }
  await Promise.all(Array.from({ length: o.concurrency }, worker));
  agent.destroy();
  // Only requests sent and answered inside the window count: the rate is
  // an under-estimate by at most one request per worker.
  const seconds = o.durationMs / 1000;
  return { mode: 'closed', concurrency: o.concurrency, seconds, batches, accepted, duplicates, reportsPerSecond: accepted / seconds, latency: latencySummary(latencies), failures: fails.failures };
}

async function open(o) {
  // Enough sockets that the sender never waits for one below saturation.
  const agent = makeAgent(o.maxSockets || 256);
  const targets = targetsOf(o.urls);
  const maker = new BatchMaker(o);
  const fails = failureCounter();
  const total = Math.round((o.rate * o.durationMs) / 1000);
  const interval = 1000 / o.rate;
  const bodies = Array.from({ length: total }, () => maker.next().body);
  const latencies = [];
  let accepted = 0;
  let inFlight = 0;
  let maxInFlight = 0;
  let lateSends = 0;
  const pending = [];
  const start = performance.now() + 50;
  let i = 0;
  await new Promise((resolve) => {
    function tick() {
      const now = performance.now();
      while (i < total && start + i * interval <= now) {
        const due = start + i * interval;
        if (now - due > 5) lateSends += 1;
        const body = bodies[i];
        bodies[i] = null;
        const target = targets[i % targets.length];
        i += 1;
        inFlight += 1;
        maxInFlight = Math.max(maxInFlight, inFlight);
        pending.push(
          post(agent, target, o.token, body).then(
            (r) => {
              inFlight -= 1;
              latencies.push(performance.now() - due);
              if (r.status === 200) accepted += JSON.parse(r.body).accepted;
              else fails.add(String(r.status));
            },
            (err) => {
              inFlight -= 1;
              fails.add(err.code || err.message);
            },
          ),
        );
      }
      if (i < total) setTimeout(tick, Math.max(0, Math.min(interval, start + i * interval - performance.now())));
      else resolve();
    }
    setTimeout(tick, 50);
  });
  await Promise.all(pending);
  agent.destroy();
  return {
    mode: 'open',
    batchesPerSecond: o.rate,
    reportsPerSecond: o.rate * o.batchSize,
    seconds: o.durationMs / 1000,
    sent: total,
    accepted,
    maxInFlight,
    lateSends,
    latency: latencySummary(latencies),
    failures: fails.failures,
  };
}

async function durable(o, stopped) {
  const agent = makeAgent(o.concurrency);
  const targets = targetsOf(o.urls);
  const maker = new BatchMaker(o);
  const fails = failureCounter();
  const ackStream = fs.createWriteStream(o.ackFile);
  let sentReports = 0;
  let ackedReports = 0;
  let ackedBatches = 0;
  let retriedBatches = 0;
  let duplicatesAcked = 0;
  let turn = 0;
  async function worker() {
    while (!stopped.value) {
      const batch = maker.next();
      sentReports += batch.ids.length;
      let attempts = 0;
      // A batch is retried, ids unchanged, until some collector acknowledges it.
      for (;;) {
        attempts += 1;
        const target = targets[turn++ % targets.length];
        try {
          const r = await post(agent, target, o.token, batch.body);
          if (r.status === 200) {
            const ack = JSON.parse(r.body);
            duplicatesAcked += ack.duplicates;
            ackedReports += batch.ids.length;
            ackedBatches += 1;
            if (attempts > 1) retriedBatches += 1;
            ackStream.write(`${batch.ids.join('\n')}\n`);
            break;
          }
          fails.add(String(r.status));
        } catch (err) {
          fails.add(err.code || err.message);
        }
        await new Promise((res) => setTimeout(res, 20 + Math.random() * 30));
      }
    }
  }
  await Promise.all(Array.from({ length: o.concurrency }, worker));
  agent.destroy();
  await new Promise((res) => ackStream.end(res));
  return { mode: 'durable', concurrency: o.concurrency, sentReports, ackedReports, ackedBatches, retriedBatches, duplicatesAcked, failures: fails.failures };
}

if (require.main === module) {
  const stopped = { value: false };
  process.on('message', async (m) => {
    if (m.cmd === 'stop') {
      stopped.value = true;
      return;
    }
    if (m.cmd !== 'run') return;
    const o = { batchSize: 100, patch: 'bench-patch', version: 1, agentVersion: '0.1.0', ...m.options };
    try {
      const fn = { closed, open, durable }[o.mode];
      if (!fn) throw new Error(`unknown mode ${o.mode}`);
      const result = await fn(o, stopped);
      process.send({ ok: true, result }, () => process.exit(0));
    } catch (err) {
      process.send({ ok: false, error: String(err && err.stack ? err.stack : err) }, () => process.exit(1));
    }
  });
}

module.exports = { BatchMaker };
