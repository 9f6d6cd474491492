#!/usr/bin/env node
'use strict';
/**
 * `npm run bench:fleet` (and the fleet part of `npm run bench`): the fleet
 * service's benchmark steps, each a script of its own that replaces only its
 * section of bench/RESULTS.md (bench/sections.js):
 *
 *   bench/fleet_scenarios.js  rollout scenarios on a simulated fleet (section fleet-scenarios)
 *   bench/fleet_ingest.js     collector ingest, SIGKILL, device-side cost (section fleet-ingest)
 *
 * A step that is not there is skipped with a note; a step that fails does
 * not stop the next, and the exit code is that of the first failure.
 * Arguments (e.g. --quick) are passed on to every step. Runs over dist/.
 */
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const STEPS = ['fleet_scenarios.js', 'fleet_ingest.js'];

let status = 0;
for (const step of STEPS) {
  const file = path.join(__dirname, step);
  if (!fs.existsSync(file)) {
    process.stdout.write(`bench/${step} is not there: skipped\n`);
    continue;
  }
  process.stdout.write(`== bench/${step}\n`);
  const r = spawnSync(process.execPath, [file, ...process.argv.slice(2)], { stdio: 'inherit' });
  const code = r.status ?? 1;
  if (code !== 0) {
    process.stdout.write(`bench/${step} failed (${r.signal ?? `exit ${code}`})\n`);
    if (status === 0) status = code;
  }
}
process.exit(status);
