'use strict';
/**
 * The device-side cost of reporting, for bench/fleet_ingest.js.
 *
 * What a transition pays: the agent calls `Reporter.record()` synchronously
 * after the transition's commit (lib/agent/agent.ts, lib/report/reporter.ts)
 * and waits for nothing else; the queue's fsync and every send happen later,
 * off the transition's path. So the time a transition gains is the time of
 * record(): the pseudonym (an HMAC, cached per patch), the report (a random
 * id), one JSON line and one write(2) to the queue file. It is measured
 * here call by call on a real state directory set up as `init --report`
 * leaves it, with the sender stopped (a collector that is down costs the
 * transition nothing either way), over a fresh queue each round.
 *
 * The bound: a queue with a small configured bound is overfilled several
 * times over; the reports kept (bytes), the largest file size seen while
 * appending, the file after the background compaction settled and after a
 * reopen, and the reports counted as dropped.
 */
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..');
const DIST = path.join(ROOT, 'dist');

const OUTCOMES = ['staged', 'trial', 'confirmed'];

function quantile(sorted, q) {
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i];
}

async function reportingStateDir(label) {
  const { configureReporting } = require(path.join(DIST, 'report', 'config.js'));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `revpatch-bench-${label}-`));
  const tokenFile = path.join(dir, 'token');
  fs.writeFileSync(tokenFile, `rpd_${'A'.repeat(43)}\n`);
  const state = path.join(dir, 'state');
  // Port 9 (discard) on loopback: nothing listens; the sender is never started anyway.
  await configureReporting(state, { url: 'http://127.0.0.1:9', tokenFile });
  return { dir, state };
}

/** Per-call times of record(), µs; the first call of each round (pseudonym not cached yet) apart. */
async function recordCost({ rounds, calls }) {
  const { Reporter } = require(path.join(DIST, 'report', 'reporter.js'));
  const steady = [];
  const first = [];
  const roundMedians = [];
  for (let r = 0; r < rounds; r++) {
    const { dir, state } = await reportingStateDir('record');
    try {
      const reporter = await Reporter.open(state);
      const times = [];
      for (let i = 0; i < calls; i++) {
        const fields = { patch: `bench-patch-${r}`, version: 1, outcome: OUTCOMES[i % 3], bootAttempts: 0 };
        const t0 = process.hrtime.bigint();
        reporter.record(fields);
        const us = Number(process.hrtime.bigint() - t0) / 1000;
        if (i === 0) first.push(us);
        else times.push(us);
      }
      if (reporter.stats().queued !== calls) throw new Error(`record() queued ${reporter.stats().queued} of ${calls} reports`);
      await reporter.stop();
      await reporter.queue.close();
      times.sort((a, b) => a - b);
      roundMedians.push(quantile(times, 0.5));
      steady.push(...times);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
  steady.sort((a, b) => a - b);
  first.sort((a, b) => a - b);
  const control = controlTimes(rounds * calls);
  const writeControl = writeTimes(rounds * calls);
  return {
    rounds,
    callsPerRound: calls,
    medianUs: quantile(steady, 0.5),
    p99Us: quantile(steady, 0.99),
    p999Us: quantile(steady, 0.999),
    maxUs: steady[steady.length - 1],
    roundMediansUs: roundMedians,
    firstCallMedianUs: quantile(first, 0.5),
    firstCallMaxUs: first[first.length - 1],
    control,
    writeControl,
  };
}

/**
 * The same loop timing one write(2) of a report-sized line to a file
 * opened for appending beside the queue (what ReportQueue.append does,
 * without making the report): how much of record()'s tail the disk makes.
 */
function writeTimes(calls) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'revpatch-bench-write-'));
  try {
    const fd = fs.openSync(path.join(dir, 'lines'), 'a', 0o600);
    const line = Buffer.from(`${'x'.repeat(259)}\n`);
    const times = [];
    for (let i = 0; i < calls; i++) {
      const t0 = process.hrtime.bigint();
      fs.writeSync(fd, line);
      times.push(Number(process.hrtime.bigint() - t0) / 1000);
    }
    fs.closeSync(fd);
    times.sort((a, b) => a - b);
    return { calls, medianUs: quantile(times, 0.5), p99Us: quantile(times, 0.99), p999Us: quantile(times, 0.999), maxUs: times[times.length - 1] };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The same loop timing a few microseconds of pure CPU work (one report's
 * JSON): its tail is the machine's, not the reporter's (preemption on a
 * shared VM, GC), and shows how much of record()'s tail that explains.
 */
function controlTimes(calls) {
  const sample = { id: '0'.repeat(32), patch: 'bench-patch', version: 1, outcome: 'confirmed', code: null, bootAttempts: 0, agentVersion: '0.1.0', time: new Date().toISOString(), pseudonym: '0'.repeat(64) };
  const times = [];
  let sink = 0;
  for (let i = 0; i < calls; i++) {
    const t0 = process.hrtime.bigint();
    sink += Buffer.byteLength(JSON.stringify({ ...sample, version: i + 1 }));
    times.push(Number(process.hrtime.bigint() - t0) / 1000);
  }
  times.sort((a, b) => a - b);
  return { calls, sink, medianUs: quantile(times, 0.5), p99Us: quantile(times, 0.99), p999Us: quantile(times, 0.999), maxUs: times[times.length - 1] };
}

/** Overfills a queue bounded at `maxBytes` `times` times over. */
async function queueBound({ maxBytes, times }) {
  const { Reporter } = require(path.join(DIST, 'report', 'reporter.js'));
  const { dir, state } = await reportingStateDir('bound');
  try {
    const reporter = await Reporter.open(state, { maxQueueBytes: maxBytes });
    const q = reporter.queue;
    let maxFile = 0;
    let maxLive = 0;
    let appended = 0;
    let lineSize = 0;
    let target = 1;
    const recordTimes = [];
    while (appended < target) {
      const t0 = process.hrtime.bigint();
      reporter.record({ patch: 'bench-patch', version: 1, outcome: OUTCOMES[appended % 3], bootAttempts: 0 });
      recordTimes.push(Number(process.hrtime.bigint() - t0) / 1000);
      appended += 1;
      if (appended === 1) {
        lineSize = q.bytes;
        target = Math.ceil((times * maxBytes) / lineSize);
      }
      maxFile = Math.max(maxFile, fs.statSync(q.file).size);
      maxLive = Math.max(maxLive, q.bytes);
      // Let background compactions run between some appends, as they would between transitions.
      if (appended % 50 === 0) await new Promise((r) => setImmediate(r));
    }
    await q.sync();
    await q.compact();
    const settled = fs.statSync(q.file).size;
    const stats = reporter.stats();
    await reporter.stop();
    await q.close();
    const reopened = await Reporter.open(state, { maxQueueBytes: maxBytes });
    const after = { fileBytes: fs.statSync(reopened.queue.file).size, queued: reopened.stats().queued, queuedBytes: reopened.stats().queuedBytes, dropped: reopened.stats().dropped };
    await reopened.queue.close();
    recordTimes.sort((a, b) => a - b);
    return {
      maxBytes,
      appended,
      appendedBytes: appended * lineSize,
      maxQueuedBytes: maxLive,
      maxFileBytes: maxFile,
      settledFileBytes: settled,
      queued: stats.queued,
      dropped: stats.dropped,
      reopened: after,
      recordP99Us: quantile(recordTimes, 0.99),
      recordMaxUs: recordTimes[recordTimes.length - 1],
    };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function measure({ quick, log }) {
  const record = await recordCost({ rounds: quick ? 2 : 7, calls: quick ? 300 : 2000 });
  log(`record(): median ${record.medianUs.toFixed(1)} µs, p99 ${record.p99Us.toFixed(1)} µs, max ${record.maxUs.toFixed(0)} µs; first call of a patch ${record.firstCallMedianUs.toFixed(0)} µs`);
  const { DEFAULT_QUEUE_BYTES } = require(path.join(DIST, 'report', 'queue.js'));
  const bounds = [];
  for (const maxBytes of quick ? [64 * 1024] : [64 * 1024, DEFAULT_QUEUE_BYTES]) {
    const b = await queueBound({ maxBytes, times: 5 });
    log(`queue bound ${maxBytes} B: ${b.appended} reports appended (${b.appendedBytes} B); kept ${b.maxQueuedBytes} B at most; file at most ${b.maxFileBytes} B, ${b.settledFileBytes} B settled; ${b.dropped} dropped`);
    bounds.push(b);
  }
  const worst = Math.max(record.p99Us, ...bounds.map((b) => b.recordP99Us));
  const boundHeld = bounds.every((b) => b.maxQueuedBytes <= b.maxBytes && b.maxFileBytes <= 2 * b.maxBytes + 256 && b.reopened.fileBytes <= 2 * b.maxBytes + 256);
  const fmt = (us) => (us >= 1000 ? `${(us / 1000).toFixed(2)} ms` : `${us.toFixed(1)} µs`);
  const kib = (n) => `${(n / 1024).toFixed(1)} KiB`;
  const everyCall = Math.max(record.maxUs, ...bounds.map((b) => b.recordMaxUs)) <= 1000;
  let verdict = '**no**';
  if (worst <= 1000 && boundHeld) verdict = everyCall ? 'yes' : 'p99: yes; every call: **no** (see notes)';
  return {
    record,
    bounds,
    met: worst <= 1000 && boundHeld,
    verdict,
    summary: `record() median ${fmt(record.medianUs)}, p99 ${fmt(record.p99Us)} (max ${fmt(record.maxUs)}); queue bound ${bounds.map((b) => `${kib(b.maxBytes)}: file at most ${kib(b.maxFileBytes)} after ${b.appended} reports`).join('; ')}`,
    method: [
      `Device side: \`Reporter.record()\` is what a transition pays for reporting (the agent calls it after the commit and waits for nothing else; fsync and sending are later, in the background). Timed call by call with \`process.hrtime\`: ${record.rounds} rounds of ${record.callsPerRound} calls, each on a new state directory set up as \`init --report\` leaves it; the first call of a round (the patch's pseudonym, an HMAC, not cached yet) is reported apart.`,
      'Queue bound: a queue with a configured bound is fed reports until five times the bound has been appended (yielding to the event loop every 50, so background compaction runs as between transitions); the file size is taken after every append, after the compaction settles, and after a reopen.',
    ],
    table: [
      '| figure | value |',
      '|---|---|',
      `| record(), steady (${record.rounds} × ${record.callsPerRound - 1} calls) | median ${fmt(record.medianUs)}, p99 ${fmt(record.p99Us)}, p99.9 ${fmt(record.p999Us)}, max ${fmt(record.maxUs)} |`,
      `| control: the same loop timing one report's JSON.stringify (CPU only, no I/O) | median ${fmt(record.control.medianUs)}, p99 ${fmt(record.control.p99Us)}, p99.9 ${fmt(record.control.p999Us)}, max ${fmt(record.control.maxUs)} |`,
      `| control: the same loop timing one write(2) of a 260-byte line to a file opened for appending | median ${fmt(record.writeControl.medianUs)}, p99 ${fmt(record.writeControl.p99Us)}, p99.9 ${fmt(record.writeControl.p999Us)}, max ${fmt(record.writeControl.maxUs)} |`,
      `| record(), first call for a patch (${record.rounds} calls) | median ${fmt(record.firstCallMedianUs)}, max ${fmt(record.firstCallMaxUs)} |`,
      ...bounds.map(
        (b) =>
          `| queue bounded at ${b.maxBytes} B, ${b.appended} reports appended (${kib(b.appendedBytes)}) | kept ≤ ${b.maxQueuedBytes} B (${b.queued} reports), ${b.dropped} dropped and counted; file ≤ ${b.maxFileBytes} B while appending, ${b.settledFileBytes} B once compacted, ${b.reopened.fileBytes} B after reopen; record() p99 ${fmt(b.recordP99Us)}, max ${fmt(b.recordMaxUs)} while overfilling |`,
      ),
    ],
  };
}

module.exports = { measure };
