#!/usr/bin/env node
'use strict';
/**
 * The whole device lifecycle through the CLI (dist/cli.js main, in this one
 * process) and so through every addon entry point it uses, on a ~1 MiB
 * image: keygen, create, inspect, init, install, boot, confirm, export,
 * remove, boot, export. scripts/valgrind.sh runs it under memcheck; it also
 * runs on its own: node scripts/valgrind-lifecycle.js [WORKDIR].
 * Exits 0 only if every command succeeded and both exports are the exact
 * target and base images.
 */
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const BLOCK = 4096;
const SIZE = 1 << 20;

function stream(seed, size) {
  const out = Buffer.alloc(size);
  for (let off = 0, i = 0; off < size; off += 32, i++) {
    crypto.createHash('sha256').update(`${seed}:${i}`).digest().copy(out, off);
  }
  return out;
}

/** Rewritten blocks, a small edit, a shifted run, a moved block, zeros, growth. */
function patched(base) {
  const image = Buffer.alloc(SIZE + 16 * BLOCK);
  base.copy(image);
  stream('fix', 3 * BLOCK).copy(image, 10 * BLOCK);
  image.write('bounds check added', 40 * BLOCK + 123);
  Buffer.concat([Buffer.from('INSERTED'), base.subarray(80 * BLOCK, 96 * BLOCK)]).copy(image, 80 * BLOCK, 0, 16 * BLOCK);
  base.copy(image, 200 * BLOCK, 5 * BLOCK, 6 * BLOCK);
  image.fill(0, 220 * BLOCK, 224 * BLOCK);
  stream('tail', 16 * BLOCK).copy(image, SIZE);
  return image;
}

async function run() {
  const { main } = require(path.join(__dirname, '..', 'dist', 'cli', 'cli.js'));
  const dir = process.argv[2] ?? fs.mkdtempSync(path.join(os.tmpdir(), 'revpatch-valgrind-'));
  fs.mkdirSync(dir, { recursive: true });
  const state = path.join(dir, 'state');
  const cli = async (...args) => {
    const started = Date.now();
    const code = await main(['--state', state, ...args]);
    console.log(`revpatch ${args.join(' ')}: exit ${code} (${Date.now() - started} ms)`);
    if (code !== 0) throw new Error(`revpatch ${args[0]} failed with exit ${code}`);
  };
  const same = (a, b) => fs.readFileSync(a).equals(fs.readFileSync(b));

  const base = stream('base', SIZE);
  fs.writeFileSync(path.join(dir, 'base.img'), base);
  fs.writeFileSync(path.join(dir, 'target.img'), patched(base));
  const file = (name) => path.join(dir, name);

  await cli('keygen', '--out', file('keys'));
  await cli('create', '--from', file('base.img'), '--to', file('target.img'), '--key', file('keys/revpatch.key'),
    '--id', 'fix-1', '--out', file('fix-1.rvp'), '--title', 'valgrind lifecycle');
  await cli('inspect', file('fix-1.rvp'), '--trust', file('keys/revpatch.pub'));
  await cli('init', '--volume', file('base.img'), '--trust', file('keys/revpatch.pub'));
  await cli('install', file('fix-1.rvp'));
  await cli('boot');
  await cli('confirm');
  await cli('export', '--out', file('patched-export.img'));
  if (!same(file('patched-export.img'), file('target.img'))) throw new Error('the export is not the target image');
  await cli('remove', 'fix-1');
  await cli('boot');
  await cli('export', '--out', file('base-export.img'));
  if (!same(file('base-export.img'), file('base.img'))) throw new Error('the export after removal is not the base');
  if (process.argv[2] === undefined) fs.rmSync(dir, { recursive: true, force: true });
  console.log('lifecycle ok');
}

run().catch((err) => {
  console.error(err && err.stack ? err.stack : String(err));
  process.exitCode = 1;
});
