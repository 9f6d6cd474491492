/**
 * The fleet simulation (lib/bench/simulate.ts) against the real collector,
 * controller, repository and report client: a small fleet where a bad patch
 * is halted and a good one completes, the same seed giving the same run,
 * and options refused before anything starts. Speed is the benchmark's
 * business (bench/fleet_scenarios.js), never asserted here.
 */
import t from 'tap';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import { simulateFleet, type SimulateOptions, type SimulationResult } from '../lib/bench/simulate';
import { RevpatchError } from '../lib/engine/errors';
import { EventQueue } from '../lib/bench/event_queue';
import { seedOf, unit } from '../lib/bench/sim_random';

/** A 2,000-device fleet: stage 1 % is 20 devices, so a stage needs 10 verdicts rather than 100. */
const SMALL: SimulateOptions = { devices: 2000, minReports: 10, soakSeconds: 600, tickSeconds: 300, maxSimSeconds: 7 * 86400 };

/** The result without what depends on the machine (wall-clock time). */
function outcome(r: SimulationResult): Omit<SimulationResult, 'wallSeconds' | 'loopWallSeconds'> {
  const { wallSeconds: _w, loopWallSeconds: _l, ...rest } = r;
  return rest;
}

t.test('the event queue pops events in time order, ties by payload, across growth', async (t) => {
  const q = new EventQueue(4);
  const pushed: [number, number][] = [];
  for (let i = 0; i < 5000; i++) {
    const time = Math.floor(unit(seedOf('queue'), i, 0) * 1000);
    const payload = Math.floor(unit(seedOf('queue'), i, 1) * 50);
    q.push(time, payload);
    pushed.push([time, payload]);
  }
  pushed.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  const popped: [number, number][] = [];
  while (q.size > 0) {
    const time = q.peekTime();
    popped.push([time, q.pop()]);
  }
  t.same(popped, pushed);
  t.equal(q.peekTime(), Infinity, 'an empty queue has no next time');
});

t.test('draws depend only on seed, device and draw number', async (t) => {
  t.equal(unit(5, 10, 3), unit(5, 10, 3));
  t.not(unit(5, 10, 3), unit(5, 10, 4));
  t.not(unit(5, 10, 3), unit(6, 10, 3));
  t.not(seedOf('a'), seedOf('b'));
  let sum = 0;
  let below = 0;
  let outside = 0;
  for (let i = 0; i < 20000; i++) {
    const u = unit(seedOf(1), i, 0);
    if (!(u >= 0 && u < 1)) outside += 1;
    sum += u;
    if (u < 0.05) below += 1;
  }
  t.equal(outside, 0, 'every draw in [0, 1)');
  t.ok(Math.abs(sum / 20000 - 0.5) < 0.01, `mean ${sum / 20000}`);
  t.ok(below > 850 && below < 1150, `${below} of 20,000 draws below 0.05`);
});

t.test('a patch that fails on every device is halted within its first stage', async (t) => {
  const r = await simulateFleet({ ...SMALL, failPct: 100, noisePct: 0, seed: 7 });
  t.equal(r.halted, true, 'the controller halted it');
  t.equal(r.timedOut, false, 'the run settled');
  t.equal(r.stalled, false);
  t.same(r.stagesReached, [1], 'it never left the first stage');
  t.equal(r.finalRollout, 1);
  const halt = r.decisions.find((d) => d.action === 'halt');
  t.ok(halt, 'the halt is recorded with its reason');
  t.equal(halt!.code, 'failure-rate-above-threshold');
  t.ok(halt!.failed! >= 3, 'with the failures it was made on');
  t.ok(r.timeToHaltSeconds !== null && r.timeToHaltSeconds > 0);
  t.ok(r.installed > 0 && r.installed <= 40, `only the first stage's devices installed it (${r.installed})`);
  t.equal(r.hurt, r.booted, 'every device that booted it was hurt');
  t.equal(r.rolledBack, r.hurt, 'and rolled it back');
  t.equal(r.confirmed, 0);
  t.equal(r.reportsIngested, r.reportsSent, 'the collector stored every report sent');
  t.ok(r.reportsSent >= r.installed + r.rolledBack, 'staged and rolled-back reports at least');
});

t.test('a good patch reaches every stage and every device', async (t) => {
  const r = await simulateFleet({ ...SMALL, failPct: 0, noisePct: 0, seed: 3 });
  t.equal(r.halted, false);
  t.equal(r.state, 'complete');
  t.equal(r.finalRollout, 100);
  t.same(r.stagesReached, [1, 5, 25, 100]);
  t.same(
    r.decisions.filter((d) => d.action !== 'hold').map((d) => d.action),
    ['start', 'advance', 'advance', 'advance', 'complete'],
  );
  t.equal(r.timeToHaltSeconds, null);
  t.ok(r.timeToCompleteSeconds !== null && r.timeToCompleteSeconds > 0);
  t.equal(r.installed, 2000, 'after completion every device took it');
  t.equal(r.confirmed, 2000);
  t.equal(r.hurt, 0);
  t.equal(r.rolledBack, 0);
  // staged, trial and confirmed from every device.
  t.equal(r.reportsSent, 3 * 2000);
  t.equal(r.reportsIngested, 3 * 2000);
  t.ok(r.batches >= r.reportsSent / 100, 'no batch holds more than 100 reports');
});

t.test('a patch failing on part of the fleet is halted early, and auto-recall takes it back from every device', async (t) => {
  const r = await simulateFleet({ ...SMALL, devices: 4000, minReports: 20, failPct: 30, noisePct: 0.5, autoRecall: true, seed: 11 });
  t.equal(r.recalled, true, 'halted and recalled');
  t.equal(r.halted, true);
  t.ok(r.stagesReached.length <= 2, `stages reached: ${r.stagesReached.join(', ')}`);
  t.ok(r.installed < 4000 * 0.1, `installed ${r.installed}`);
  t.ok(r.recalledOnDevices > 0, 'devices holding it removed it');
  t.equal(r.recalledOnDevices, r.installed - r.rolledBack, 'every device that kept it removed it');
});

t.test('the same seed gives the same run; another seed another fleet', async (t) => {
  const options: SimulateOptions = { ...SMALL, failPct: 30, noisePct: 1, seed: 'repeat' };
  const a = await simulateFleet(options);
  t.equal(a.timedOut, false);
  t.ok(a.decisions.length >= 2 && a.reportsSent > 0, 'a run with decisions and reports to compare');
  const b = await simulateFleet(options);
  t.same(outcome(b), outcome(a));
  const c = await simulateFleet({ ...options, seed: 'another' });
  t.not(c.breakingDevices === a.breakingDevices && c.events === a.events, true, 'a different seed draws a different fleet');
});

t.test('a fleet too small for the plan stops where the rollout stalls instead of running to the time limit', async (t) => {
  // Stage 1 % of 1,000 devices is about 10 devices: never the 400 verdicts the default plan wants.
  const r = await simulateFleet({ devices: 1000, failPct: 0, noisePct: 0, seed: 5, tickSeconds: 300 });
  t.equal(r.stalled, true);
  t.equal(r.timedOut, false);
  t.equal(r.state, 'rolling');
  t.same(r.stagesReached, [1]);
  t.equal(r.confirmed, r.installed, 'every device in the stage has its verdict');
  t.ok(r.simulatedSeconds < 3 * 86400, `stopped after ${r.simulatedSeconds} simulated seconds`);
  const last = r.decisions.at(-1)!;
  t.equal(last.action, 'hold');
  t.equal(last.code, 'awaiting-reports', 'the last decision says why it waits');
});

t.test('bad options are refused with E_INVALID_ARGUMENT before anything starts', async (t) => {
  const before = (await fs.readdir(os.tmpdir())).filter((n) => n.startsWith('revpatch-simulate-')).length;
  const bad: [string, SimulateOptions][] = [
    ['no devices', { devices: 0 }],
    ['a fraction of a device', { devices: 10.5 }],
    ['a failure rate above 100 %', { failPct: 101 }],
    ['a negative noise rate', { noisePct: -1 }],
    ['a rate that is not a number', { failPct: Number.NaN }],
    ['an unknown rule', { rule: 'fastest' as never }],
    ['stages that go down', { stages: [5, 1] }],
    ['a zero stage', { stages: [0, 100] }],
    ['no minimum of reports', { minReports: 0 }],
    ['a negative soak', { soakSeconds: -1 }],
    ['an empty seed', { seed: '' }],
    ['a fractional seed', { seed: 1.5 }],
    ['a zero tick', { tickSeconds: 0 }],
    ['no simulated time', { maxSimSeconds: 0 }],
    ['a restart delay backwards', { restartDelaySeconds: [7200, 60] }],
    ['a batch larger than the collector takes', { batchSize: 1001 }],
    ['a database that is not SQLite', { db: 'postgres://localhost/x' }],
    ['settle that is not a boolean', { settle: 'yes' as never }],
  ];
  for (const [what, options] of bad) {
    await t.rejects(simulateFleet({ devices: 100, ...options }), { code: 'E_INVALID_ARGUMENT' }, what);
  }
  await t.rejects(simulateFleet(null as never), RevpatchError);
  const after = (await fs.readdir(os.tmpdir())).filter((n) => n.startsWith('revpatch-simulate-')).length;
  t.equal(after, before, 'no work directory was made');
});
