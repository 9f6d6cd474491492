#!/usr/bin/env node
'use strict';
const { main } = require('../dist/cli/cli.js');

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`error E_UNKNOWN: ${err && err.stack ? err.stack : err}\n`);
    process.exitCode = 1;
  },
);
