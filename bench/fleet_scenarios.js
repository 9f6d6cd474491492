#!/usr/bin/env node
'use strict';
/**
 * The fleet rollout scenarios of issue 13's targets table: a simulated
 * fleet (lib/bench/simulate.ts: the real collector, controller, repository
 * client, report client and agent policy on a simulated clock) meets a
 * patch that breaks 5 % of devices, one that breaks every device, and a good
 * one with background failures; then Eclipse hawkBit's default thresholds on
 * the same fleets. Writes bench/fleet-results.json and its own section of
 * bench/RESULTS.md (between the `fleet-scenarios` markers; bench/sections.js).
 * Runs over dist/ (build first: `npx tsc -p tsconfig.json`).
 *
 *   node bench/fleet_scenarios.js [--quick]
 *
 *   FLEET_DEVICES=N  simulated devices (default 100,000; 20,000 with --quick)
 *   FLEET_SEEDS=N    seeds of each revpatch scenario (default 20; 3 with --quick)
 *   BENCH_QUICK=1    same as --quick: a smoke run, not figures to quote
 *
 * Every scenario runs each seed in turn in this process; a seed's run is one
 * simulateFleet call (its wall time is in the results).
 */
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const { replaceSection } = require('./sections.js');

const ROOT = path.resolve(__dirname, '..');
const { simulateFleet } = require(path.join(ROOT, 'dist', 'bench', 'simulate.js'));
const { DEFAULT_PLAN } = require(path.join(ROOT, 'dist', 'fleet', 'decision.js'));

const QUICK = process.env.BENCH_QUICK === '1' || process.argv.includes('--quick');
const DEVICES = Number(process.env.FLEET_DEVICES || (QUICK ? 20_000 : 100_000));
const SEEDS = Number(process.env.FLEET_SEEDS || (QUICK ? 3 : 20));
for (const [name, v, max] of [['FLEET_DEVICES', DEVICES, 10_000_000], ['FLEET_SEEDS', SEEDS, 1000]]) {
  if (!Number.isInteger(v) || v < 1 || v > max) {
    console.error(`${name} must be a whole number from 1 to ${max}, not ${v}`);
    process.exit(2);
  }
}
const RESULTS_MD = path.join(__dirname, 'RESULTS.md');
const RESULTS_JSON = path.join(__dirname, 'fleet-results.json');
const SECTION = 'fleet-scenarios';

/**
 * The scenarios of the targets table. A bad patch's run goes on until every
 * device that took it has its verdict (`settle`), so installed and hurt are
 * final; a good patch's ends when the rollout completes (every device then
 * takes it: what counts is that it got there without a halt). hawkBit runs
 * the first seed of each.
 */
const SCENARIOS = [
  { name: 'fail-5', title: 'patch fails on 5 % of devices (0.5 % background)', failPct: 5, noisePct: 0.5, settle: true },
  { name: 'fail-all', title: 'patch fails on every device', failPct: 100, noisePct: 0.5, settle: true },
  { name: 'good', title: 'good patch (0.5 % background)', failPct: 0, noisePct: 0.5, settle: false },
];
const HAWKBIT_SEEDS = 1;
/**
 * The controller ticks (and devices re-read the repository) every 5
 * simulated minutes: rollouts move over hours, and each tick costs a TUF
 * refresh and a controller round of real time.
 */
const TICK_SECONDS = 300;

const started = Date.now();
const notes = [];

function log(message) {
  const s = ((Date.now() - started) / 1000).toFixed(0).padStart(5);
  process.stdout.write(`[${s} s] ${message}\n`);
}

const pctOf = (n) => `${((100 * n) / DEVICES).toFixed(n * 1000 < DEVICES ? 3 : 2)} %`;
const int = (n) => n.toLocaleString('en-US');
const hours = (s) => (s === null ? '—' : s < 3600 ? `${(s / 60).toFixed(0)} min` : `${(s / 3600).toFixed(1)} h`);
const max = (xs) => xs.reduce((a, b) => Math.max(a, b), -Infinity);
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? null : s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/** A run without its decision list (kept for the first seed only, to keep the file readable). */
function slim(r, keepDecisions) {
  return keepDecisions ? r : { ...r, decisions: r.decisions.filter((d) => d.action !== 'hold') };
}

async function runScenario(scenario, rule, seeds) {
  const runs = [];
  for (let seed = 1; seed <= seeds; seed++) {
    const r = await simulateFleet({ devices: DEVICES, failPct: scenario.failPct, noisePct: scenario.noisePct, seed, rule, settle: scenario.settle, tickSeconds: TICK_SECONDS });
    log(
      `${scenario.name} ${rule} seed ${seed}: ${r.state} at ${r.finalRollout} %, stages ${r.stagesReached.join('/')}, ` +
        `installed ${int(r.installed)}, hurt ${int(r.hurt)}, halt after ${hours(r.timeToHaltSeconds)}, ` +
        `${int(r.reportsIngested)} reports, ${hours(r.simulatedSeconds)} simulated in ${r.wallSeconds.toFixed(1)} s`,
    );
    if (r.timedOut) notes.push(`${scenario.name} (${rule}, seed ${seed}) stopped at the simulated time cap before it settled`);
    runs.push(slim(r, seed === 1));
  }
  return { name: scenario.name, title: scenario.title, rule, failPct: scenario.failPct, noisePct: scenario.noisePct, settle: scenario.settle, runs };
}

function haltStage(run) {
  const halt = run.decisions.find((d) => d.action === 'halt' || d.action === 'recall');
  return halt ? halt.fromRollout : null;
}

/** The issue's targets, each with the measured figure and whether it is met. */
function evaluate(r) {
  const find = (name, rule) => r.scenarios.find((s) => s.name === name && s.rule === rule);
  const targets = [];
  const f5 = find('fail-5', 'revpatch');
  if (f5) {
    const bad = f5.runs.filter((x) => !(x.halted && x.installed <= DEVICES * 0.01 && x.hurt <= DEVICES * 0.001));
    const halted = f5.runs.filter((x) => x.halted).length;
    targets.push({
      target: 'a patch that fails the health check on 5 % of devices: halted automatically; ≤ 1 % of the fleet installed it; ≤ 0.1 % hurt',
      measured:
        `halted in ${halted} of ${f5.runs.length} seeds; installed median ${pctOf(median(f5.runs.map((x) => x.installed)))}, ` +
        `worst ${pctOf(max(f5.runs.map((x) => x.installed)))}; hurt median ${pctOf(median(f5.runs.map((x) => x.hurt)))}, ` +
        `worst ${pctOf(max(f5.runs.map((x) => x.hurt)))}; halted after ${hours(median(f5.runs.filter((x) => x.halted).map((x) => x.timeToHaltSeconds)))} (median)` +
        (bad.length ? `; missed on seed${bad.length > 1 ? 's' : ''} ${bad.map((x) => x.seed).join(', ')}` : ''),
      ok: bad.length === 0,
    });
  }
  const fa = find('fail-all', 'revpatch');
  if (fa) {
    const first = DEFAULT_PLAN.stages[0];
    const bad = fa.runs.filter((x) => !(x.halted && haltStage(x) === first && x.stagesReached.length === 1 && x.installed <= DEVICES * 0.002));
    targets.push({
      target: 'a patch that fails on every device: halted within the first stage; ≤ 0.2 % of the fleet installed it',
      measured:
        `halted in stage 1 (${first} %) in ${fa.runs.length - fa.runs.filter((x) => !(x.halted && haltStage(x) === first)).length} of ${fa.runs.length} seeds; ` +
        `installed median ${pctOf(median(fa.runs.map((x) => x.installed)))}, worst ${pctOf(max(fa.runs.map((x) => x.installed)))}; ` +
        `halted after ${hours(median(fa.runs.filter((x) => x.halted).map((x) => x.timeToHaltSeconds)))} (median)` +
        (bad.length ? `; missed on seed${bad.length > 1 ? 's' : ''} ${bad.map((x) => x.seed).join(', ')}` : ''),
      ok: bad.length === 0,
    });
  }
  const good = find('good', 'revpatch');
  if (good) {
    const ok = good.runs.filter((x) => !x.halted && x.finalRollout === 100 && x.state === 'complete');
    targets.push({
      target: `a good patch, with 0.5 % background failures: reaches 100 % with no halt in ${SEEDS} of ${SEEDS} seeds`,
      measured:
        `${ok.length} of ${good.runs.length} seeds complete at 100 % without a halt; completed after ${hours(median(ok.map((x) => x.timeToCompleteSeconds)))} (median), ` +
        `${hours(max(ok.map((x) => x.timeToCompleteSeconds)))} at most` +
        (ok.length < good.runs.length
          ? `; not on seed${good.runs.length - ok.length > 1 ? 's' : ''} ${good.runs.filter((x) => !ok.includes(x)).map((x) => `${x.seed} (${x.state} at ${x.finalRollout} %)`).join(', ')}`
          : ''),
      ok: ok.length === good.runs.length && good.runs.length === SEEDS,
    });
  }
  const h5 = find('fail-5', 'hawkbit');
  if (h5 && f5) {
    const h = h5.runs[0];
    const p = f5.runs[0];
    targets.push({
      target: "hawkBit's default thresholds on the same scenarios: shown side by side (how far the 5 % patch spreads)",
      measured:
        `seed 1, hawkBit: ${h.halted ? 'halted' : 'not halted'}, rollout ${h.finalRollout} %, installed ${pctOf(h.installed)}, hurt ${int(h.hurt)} (${pctOf(h.hurt)}); ` +
        `revpatch: ${p.halted ? 'halted' : 'not halted'} at ${p.finalRollout} %, installed ${pctOf(p.installed)}, hurt ${int(p.hurt)} (${pctOf(p.hurt)}) — table below`,
      ok: true,
    });
  }
  return targets;
}

function scenarioRow(s) {
  const runs = s.runs;
  const one = runs.length === 1;
  const range = (xs, fmt) => (one ? fmt(xs[0]) : `${fmt(median(xs))} (worst ${fmt(max(xs))})`);
  const halted = runs.filter((x) => x.halted).length;
  const complete = runs.filter((x) => x.state === 'complete').length;
  const stages = [...new Set(runs.map((x) => x.stagesReached.join(' → ')))].join('; ');
  const haltTimes = runs.filter((x) => x.timeToHaltSeconds !== null).map((x) => x.timeToHaltSeconds);
  return [
    s.title,
    s.rule === 'hawkbit' ? 'hawkBit defaults' : 'revpatch',
    String(runs.length),
    one ? (runs[0].halted ? `halted${runs[0].recalled ? ', recalled' : ''}` : runs[0].state) : `${halted} halted, ${complete} complete`,
    stages,
    range(runs.map((x) => x.installed), (n) => `${int(Math.round(n))} (${pctOf(n)})`),
    range(runs.map((x) => x.hurt), (n) => `${int(Math.round(n))} (${pctOf(n)})`),
    haltTimes.length ? (one ? hours(haltTimes[0]) : hours(median(haltTimes))) : '—',
    range(runs.map((x) => x.reportsIngested), (n) => int(Math.round(n))),
    range(runs.map((x) => x.wallSeconds), (n) => `${n.toFixed(1)} s`),
  ];
}

function table(header, rows) {
  const esc = (c) => String(c).replace(/\|/g, '\\|');
  return [`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.map(esc).join(' | ')} |`)].join('\n');
}

function render(r) {
  const L = [];
  L.push('## Fleet: rollout scenarios');
  L.push('');
  L.push(
    `Generated by \`node bench/fleet_scenarios.js\`${r.quick ? ' --quick (**smoke run: a smaller fleet and fewer seeds, not figures to quote**)' : ''} on ${r.date} ` +
      `in ${(r.elapsed / 60).toFixed(1)} minutes. Do not edit by hand: run it again. Raw figures: [fleet-results.json](fleet-results.json).`,
  );
  L.push('');
  L.push(`Machine: ${r.machine.cpu}, ${r.machine.cores} cores, Node ${r.machine.node}; 1-minute load average ${r.load.start} at the start, ${r.load.end} at the end (a shared machine).`);
  L.push('');
  L.push('| target | measured | met |');
  L.push('|---|---|---|');
  for (const t of r.targets) L.push(`| ${t.target} | ${t.measured} | ${t.ok ? '**met**' : '**not met**'} |`);
  L.push('');
  L.push('### Side by side');
  L.push('');
  L.push(
    table(
      ['scenario', 'rule', 'seeds', 'outcome', 'stages reached (%)', 'installed', 'hurt', 'time to halt', 'reports ingested', 'wall time per run'],
      r.scenarios.map(scenarioRow),
    ),
  );
  L.push('');
  L.push('Several seeds: median, and the worst seed in brackets. *installed*: devices that staged the patch; *hurt*: devices the patch itself broke (they booted it and rolled it back because of it; background failures are not counted). Times are simulated.');
  L.push('');
  const first = r.scenarios.find((s) => s.name === 'fail-5' && s.rule === 'revpatch');
  if (first) {
    L.push('Decisions of the 5 % patch, seed 1 (revpatch):');
    L.push('');
    for (const d of first.runs[0].decisions) L.push(`- ${hours(d.atSeconds)}: **${d.action}** (${d.code}) ${d.reason}`);
    L.push('');
  }
  L.push('### How');
  L.push('');
  L.push(
    `- ${int(DEVICES)} simulated devices per run (\`simulateFleet\`, lib/bench/simulate.ts) on a simulated clock, against the real collector (\`FleetServer\` on 127.0.0.1, SQLite in memory, its clock the simulated one) and the real rollout controller, ticked every ${r.options.tickSeconds} simulated seconds with the chosen rule. ` +
      'The controller publishes through the real publisher into a temporary TUF repository (one small signed patch, published at rollout 0), served on loopback and read each tick through the real repository client with the simulated time as its reference time; every device decides on that verified copy with the agent\'s own policy code (recall, halt flag, compatibility, rollout bucket).',
  );
  L.push(
    `- Devices check every ${hours(r.options.checkIntervalSeconds)} ± ${r.options.checkJitterPct} %, stage the patch at once, restart ${hours(r.options.restartDelaySeconds[0])} to ${hours(r.options.restartDelaySeconds[1])} later (log-uniform), report \`trial\`, then \`confirmed\` or, after ${r.options.maxBootAttempts} boot attempts, \`rolled-back\` (a quarter of the patch's failures are boot loops, which never get to report a trial). ` +
      'Reports go in batches of 100 through the real report client (`postBatch`) with an enrollment token; success is counted only on `confirmed`.',
  );
  L.push(
    `- Plan: the defaults of \`revpatch fleet plan\` — stages ${DEFAULT_PLAN.stages.join(', ')} %, soak ${DEFAULT_PLAN.soakSeconds} s, ${DEFAULT_PLAN.minReports} verdicts per stage, maximum failure rate ${DEFAULT_PLAN.maxFailurePct} %, auto-recall ${DEFAULT_PLAN.autoRecall ? 'on' : 'off'}. ` +
      "hawkBit's defaults: groups as the stages, the next group at 50 % success counted at install (`staged`), a pause at 50 % install errors; rollbacks after the restart are not seen.",
  );
  L.push(
    '- A bad patch\'s run ends when it is settled: halted (or recalled) and every device that took it has its verdict, or complete and every device has checked since — so *installed* and *hurt* are final. A good patch\'s run ends at its completion (*installed* is then the devices that had taken it by that time; every device takes it afterwards). ' +
      'The same seed draws the same fleet (which devices the patch breaks, when each checks and restarts) under both rules.',
  );
  if (r.notes.length) {
    L.push('');
    L.push('Notes:');
    L.push('');
    for (const n of r.notes) L.push(`- ${n}`);
  }
  return L.join('\n');
}

function save(r, finished) {
  r.options = r.scenarios[0].runs[0].options;
  r.load.end = Number(os.loadavg()[0].toFixed(2));
  r.elapsed = (Date.now() - started) / 1000;
  r.finished = finished;
  r.notes = finished ? notes : [...notes, 'unfinished: the run was still going when this was written; scenarios not listed were not run yet'];
  r.targets = evaluate(r);
  fs.writeFileSync(RESULTS_JSON, `${JSON.stringify(r, null, 1)}\n`);
  const md = fs.existsSync(RESULTS_MD) ? fs.readFileSync(RESULTS_MD, 'utf8') : '# Benchmarks\n';
  fs.writeFileSync(RESULTS_MD, replaceSection(md, SECTION, render(r)));
}

async function main() {
  const r = {
    date: new Date().toISOString(),
    quick: QUICK,
    devices: DEVICES,
    seeds: SEEDS,
    machine: { cpu: os.cpus()[0]?.model ?? 'unknown', cores: os.cpus().length, node: process.version },
    load: { start: Number(os.loadavg()[0].toFixed(2)), end: null },
    options: null,
    scenarios: [],
  };
  // Each bad patch under both rules first, the good patch's seeds last; the
  // files are written after every scenario, so an interrupted run leaves
  // what it measured (named as unfinished).
  const order = [];
  for (const scenario of SCENARIOS) {
    order.push([scenario, 'revpatch', SEEDS]);
    order.push([scenario, 'hawkbit', HAWKBIT_SEEDS]);
  }
  for (const [i, [scenario, rule, seeds]] of order.entries()) {
    log(`${scenario.title}: ${rule === 'hawkbit' ? "hawkBit's default thresholds" : 'revpatch'}, ${seeds} seed${seeds > 1 ? 's' : ''}`);
    r.scenarios.push(await runScenario(scenario, rule, seeds));
    save(r, i === order.length - 1);
  }
  log(`done in ${(r.elapsed / 60).toFixed(1)} min: bench/fleet-results.json, bench/RESULTS.md (section ${SECTION})`);
  for (const t of r.targets) log(`  ${t.ok ? 'MET ' : 'MISS'} ${t.target}: ${t.measured}`);
}

if (require.main === module) {
  main().catch((err) => {
    console.error(err && err.stack ? err.stack : err);
    process.exit(1);
  });
}

module.exports = { render, evaluate };
