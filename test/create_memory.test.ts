/**
 * `revpatch create --max-memory/--threads`: bad values are refused with
 * E_INVALID_ARGUMENT and nothing written; the thread count never changes
 * the payload; and a sparse volume larger than the budget is patched within
 * it (the child's peak RSS, from /proc via wait4's rusage as /usr/bin/time
 * reports it), the patch installing to the target's digest.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import * as path from 'node:path';
import t, { type Test } from 'tap';
import { createPatch } from '../lib/publisher/create';
import { writeKeyPair } from '../lib/patch/keys';
import { parseByteSize } from '../lib/cli/byte_size';
import { ADDON, addonBuilt, BLOCK, CLI, runCli, stampedImage, tempDir } from './helpers';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { makeVolumePair } = require('../bench/volumes.js') as {
  makeVolumePair(oldPath: string, newPath: string, size: number, changedFraction?: number, seed?: string): Promise<unknown>;
};

const SKIP_NO_ADDON = addonBuilt() ? false : `needs the native addon (${ADDON}); run \`npm run build\` first`;
const MiB = 2 ** 20;

function expectError(t: Test, r: { code: number | null; stderr: string }, code: string, name: string): void {
  t.equal(r.code, 1, `${name}: exit 1`);
  t.match(r.stderr, new RegExp(`error ${code}`), `${name}: ${code}`);
}

t.test('sizes parse with binary suffixes and refuse junk', async (t) => {
  t.equal(parseByteSize('--max-memory', '512M'), 512 * MiB);
  t.equal(parseByteSize('--max-memory', '1G'), 2 ** 30);
  t.equal(parseByteSize('--max-memory', '1GiB'), 2 ** 30);
  t.equal(parseByteSize('--max-memory', '4096'), 4096);
  t.equal(parseByteSize('--max-memory', '64k'), 65536);
  t.equal(parseByteSize('--max-memory', '1.5G'), 1.5 * 2 ** 30);
  for (const bad of ['', 'abc', '-1', '1X', '12 MBs', '1e9']) {
    t.throws(() => parseByteSize('--max-memory', bad), { code: 'E_INVALID_ARGUMENT' }, `${JSON.stringify(bad)} refused`);
  }
});

t.test('bad --max-memory and --threads values write nothing', { skip: SKIP_NO_ADDON }, async (t) => {
  const dir = await tempDir(t, 'revpatch-create-mem-');
  const keys = await writeKeyPair(path.join(dir, 'keys'));
  const base = stampedImage(64);
  const next = Buffer.from(base);
  next.write('changed', 9 * BLOCK);
  await fs.writeFile(path.join(dir, 'a.img'), base);
  await fs.writeFile(path.join(dir, 'b.img'), next);
  const out = path.join(dir, 'p.rvp');
  const create = (...extra: string[]) =>
    runCli(['create', '--from', path.join(dir, 'a.img'), '--to', path.join(dir, 'b.img'), '--key', keys.secretKeyPath, '--id', 'm-1', '--out', out, ...extra]);
  const cases: [string[], string][] = [
    [['--max-memory', 'abc'], 'not a size'],
    [['--max-memory', '-1'], 'negative'],
    [['--max-memory', '1M'], 'below the minimum'],
    [['--max-memory', '0'], 'zero'],
    [['--max-memory', '130M'], 'too small once Node is reserved'],
    [['--threads', 'many'], 'threads not a number'],
    [['--threads', '-1'], 'negative threads'],
    [['--threads', '100000'], 'too many threads'],
  ];
  for (const [flags, name] of cases) {
    expectError(t, create(...flags), 'E_INVALID_ARGUMENT', name);
    t.notOk(existsSync(out), `${name}: no patch written`);
    t.same((await fs.readdir(dir)).sort(), ['a.img', 'b.img', 'keys'], `${name}: no temporaries left`);
  }
  await t.rejects(
    createPatch({ from: path.join(dir, 'a.img'), to: path.join(dir, 'b.img'), keyPath: keys.secretKeyPath, id: 'm-1', out, maxMemory: 1.5 * 2 ** 30 + 0.5 }),
    { code: 'E_INVALID_ARGUMENT' },
    'a fractional maxMemory',
  );
  await t.rejects(
    createPatch({ from: path.join(dir, 'a.img'), to: path.join(dir, 'b.img'), keyPath: keys.secretKeyPath, id: 'm-1', out, threads: 1.5 }),
    { code: 'E_INVALID_ARGUMENT' },
    'fractional threads',
  );
  const r = create('--max-memory', '512M', '--threads', '1');
  t.equal(r.code, 0, r.stderr);
  t.ok(existsSync(out), 'good values make the patch');
});

t.test('the payload is the same for any thread count', { skip: SKIP_NO_ADDON }, async (t) => {
  const dir = await tempDir(t, 'revpatch-create-threads-');
  const keys = await writeKeyPair(path.join(dir, 'keys'));
  const from = path.join(dir, 'old.img');
  const to = path.join(dir, 'new.img');
  await makeVolumePair(from, to, 32 * MiB, 0.02, 'threads');
  const digests = new Map<number, Set<string>>();
  // This process (the test runner) takes a few hundred MiB itself: 2 GiB
  // leaves room for the whole source, 640 MiB only for streaming.
  for (const [threads, maxMemory] of [[1, 2 ** 31], [3, 2 ** 31], [2, 2 ** 31], [1, 640 * MiB], [2, 640 * MiB]]) {
    const result = await createPatch({ from, to, keyPath: keys.secretKeyPath, id: `t-${threads}`, out: path.join(dir, `t${threads}-${maxMemory}.rvp`), threads, maxMemory });
    if (!digests.has(maxMemory)) digests.set(maxMemory, new Set());
    digests.get(maxMemory)?.add(result.manifest.payload.digest);
  }
  for (const [maxMemory, set] of digests) t.equal(set.size, 1, `one payload for maxMemory ${maxMemory}, whatever the threads`);
});

const SKIP_NO_TIME = existsSync('/usr/bin/time') ? SKIP_NO_ADDON : 'needs /usr/bin/time for the child peak RSS';

t.test('a sparse volume larger than --max-memory is patched within it', { skip: SKIP_NO_TIME }, async (t) => {
  const dir = await tempDir(t, 'revpatch-create-rss-');
  const keys = await writeKeyPair(path.join(dir, 'keys'));
  const from = path.join(dir, 'old.img');
  const to = path.join(dir, 'new.img');
  // 512 MiB, a quarter of it data (128 MiB per image), 0.5 % of blocks changed.
  await makeVolumePair(from, to, 512 * MiB, 0.005, 'rss');
  const out = path.join(dir, 'v.rvp');
  const budget = 384 * MiB;
  const r = spawnSync('/usr/bin/time', ['-f', 'peak %M KB', process.execPath, CLI, '--json', 'create', '--from', from, '--to', to, '--key', keys.secretKeyPath, '--id', 'vol-1', '--out', out, '--max-memory', '384M'], {
    encoding: 'utf8',
    maxBuffer: 64 * MiB,
  });
  t.equal(r.status, 0, r.stderr);
  const peak = Number(/peak (\d+) KB/.exec(r.stderr)?.[1]) * 1024;
  t.ok(peak > 0, `peak RSS ${(peak / MiB).toFixed(1)} MiB`);
  t.ok(peak <= budget, `peak RSS ${(peak / MiB).toFixed(1)} MiB within the 384 MiB budget`);
  const manifest = JSON.parse(r.stdout).manifest;

  const state = path.join(dir, 'state');
  const cli = (...args: string[]) => runCli(['--state', state, ...args]);
  let c = cli('init', '--volume', from, '--trust', keys.publicKeyPath);
  t.equal(c.code, 0, c.stderr);
  c = cli('install', out);
  t.equal(c.code, 0, c.stderr);
  c = cli('boot');
  t.equal(c.code, 0, c.stderr);
  const status = JSON.parse(cli('status', '--json').stdout);
  t.equal(status.bootedDigest, manifest.target.digest, 'the booted view is the new volume');
});
