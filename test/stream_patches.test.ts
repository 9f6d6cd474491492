// Patches through compressed payloads: an image holding a zstd frame is
// patched through the frame (delta version 5), the manifest says what that
// needs (format 2, `requires`), a device installs it exactly, and a device
// whose libzstd differs from the recipe's refuses it up front with
// E_UNSUPPORTED and changes nothing. Images without frames stay format 1.
import { execFileSync, spawnSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import * as engine from '../lib/engine/engine';
import { Device } from '../lib/device/device';
import { parseManifest, validateManifest, encodeManifest, type Manifest } from '../lib/patch/manifest';
import { PatchFile } from '../lib/patch/patch_file';
import { readPublicKey } from '../lib/patch/keys';
import { addonBuilt, ADDON, BLOCK, runCli, snapshot, stampedImage, tempDir } from './helpers';

const zstdCli = spawnSync('zstd', ['--version']).status === 0;
const SKIP = !addonBuilt()
  ? `needs the native addon (${ADDON}); run \`npm run build\` first`
  : !zstdCli
    ? 'needs the zstd command line (Debian zstd)'
    : false;

/** Bytes that compress about 3:1 (random words), with `edits` scattered changes. */
function payload(size: number, edits: number): Buffer {
  let x = 2463534242;
  const next = () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
  const out = Buffer.alloc(size);
  for (let i = 0; i < size; ) {
    const w = next();
    const len = 2 + (w % 6);
    for (let k = 0; k < len && i < size; k++) out[i++] = 97 + ((w >>> (8 + k * 3)) % 16);
    if (i < size) out[i++] = 32;
  }
  for (let i = 0; i < edits; i++) out[(i * 7919 + 4096) % size] ^= 0x55;
  return out;
}

const zstd = (data: Buffer, level: number) => execFileSync('zstd', [`-${level}`, '-q', '-c'], { input: data, maxBuffer: 1 << 28 });

/** A volume: blocks, a small loader, one zstd frame, blocks. */
function volume(frame: Buffer, tag: string): Buffer {
  const loader = Buffer.from(`loader ${tag} `.repeat(40));
  return Buffer.concat([stampedImage(4), loader, frame, Buffer.alloc(BLOCK - ((loader.length + frame.length) % BLOCK)), stampedImage(2, 'tail')]);
}

async function readManifest(file: string): Promise<Manifest> {
  const patch = await PatchFile.open(file);
  try {
    return patch.parseUnverified();
  } finally {
    await patch.close();
  }
}

t.test('a zstd-wrapped payload is patched through the frame and installed exactly', { skip: SKIP }, async (t) => {
  const dir = await tempDir(t, 'revpatch-streams-');
  const keys = path.join(dir, 'keys');
  t.equal(runCli(['keygen', '--out', keys]).code, 0);
  const inner = payload(3 << 20, 30);
  const from = volume(zstd(inner, 19), 'v1');
  const to = volume(zstd(payload(3 << 20, 31), 19), 'v2');
  const [a, b, p, state] = ['a.img', 'b.img', 'p.rvp', 'state'].map((f) => path.join(dir, f));
  await fs.writeFile(a, from);
  await fs.writeFile(b, to);
  const create = runCli(['create', '--from', a, '--to', b, '--key', path.join(keys, 'revpatch.key'), '--id', 'zs', '--out', p]);
  t.equal(create.code, 0, create.stderr);
  const size = (await fs.stat(p)).size;
  t.ok(size * 20 < to.length, `patch of ${size} bytes for a ${to.length}-byte image whose frame changed`);

  const m = await readManifest(p);
  t.equal(m.format, 2);
  t.same(m.requires, { deltaVersions: [5], zstd: engine.capabilities().zstd });

  const inspect = runCli(['inspect', p]);
  t.match(inspect.stdout, /requires: {2}delta version 5, zstd \d+\.\d+\.\d+ \(its zstd stream recipes\)/);
  t.match(inspect.stdout, /this engine can apply it/);
  const json = JSON.parse(runCli(['inspect', '--json', p]).stdout) as { requires: unknown; unmet: string[] };
  t.same(json.requires, m.requires);
  t.same(json.unmet, []);

  t.equal(runCli(['--state', state, 'init', '--volume', a, '--trust', path.join(keys, 'revpatch.pub')]).code, 0);
  const install = runCli(['--state', state, 'install', p]);
  t.equal(install.code, 0, install.stderr);
  const boot = runCli(['--state', state, '--json', 'boot']);
  t.equal(boot.code, 0, boot.stderr);
  t.equal((JSON.parse(boot.stdout) as { viewDigest: string }).viewDigest, (await engine.hashImage(b, BLOCK)).digest);

  t.test('a device whose zstd differs from the recipe refuses before any write', async (t) => {
    const state2 = path.join(dir, 'state2');
    t.equal(runCli(['--state', state2, 'init', '--volume', a, '--trust', path.join(keys, 'revpatch.pub')]).code, 0);
    const device = await Device.open(state2);
    const before = await snapshot(state2);
    const real = engine.capabilities().zstd;
    const [major, minor, patch] = real.split('.').map(Number) as [number, number, number];
    engine.setZstdVersionForTesting(`${major}.${minor}.${patch === 99 ? 0 : patch + 1}`);
    try {
      t.not(engine.capabilities().zstd, real);
      await t.rejects(device.install(p), { code: 'E_UNSUPPORTED', message: /zstd/ });
      const text = runCli(['inspect', p]); // another process: the real version
      t.match(text.stdout, /this engine can apply it/);
    } finally {
      engine.setZstdVersionForTesting(null);
    }
    t.same(await snapshot(state2), before, 'the state is unchanged');
    t.equal(engine.capabilities().zstd, real);
  });
});

t.test('the engine refuses the stream op itself when the check is passed by', { skip: SKIP }, async (t) => {
  // Without the manifest check (a patch whose manifest does not say what it
  // needs), the engine still refuses the op: E_UNSUPPORTED, nothing sealed.
  const dir = await tempDir(t, 'revpatch-streams-');
  const keys = path.join(dir, 'keys');
  t.equal(runCli(['keygen', '--out', keys]).code, 0);
  const from = volume(zstd(payload(1 << 20, 3), 3), 'v1');
  const to = volume(zstd(payload(1 << 20, 4), 3), 'v2');
  const [a, b, p] = ['a.img', 'b.img', 'p.rvp'].map((f) => path.join(dir, f));
  await fs.writeFile(a, from);
  await fs.writeFile(b, to);
  t.equal(runCli(['create', '--from', a, '--to', b, '--key', path.join(keys, 'revpatch.key'), '--id', 'zs', '--out', p]).code, 0);
  const patch = await PatchFile.open(p);
  patch.verify((await readPublicKey(path.join(keys, 'revpatch.pub'))).publicKey);
  const tree = path.join(dir, 'a.tree');
  await engine.buildBaseTree(a, BLOCK, tree);
  const layer = path.join(dir, 'x.layer');
  engine.setZstdVersionForTesting('1.0.0');
  try {
    await t.rejects(
      engine.applyPatch({ base: a, baseTree: tree, layers: [] }, patch.applyParams(layer)),
      { code: 'E_UNSUPPORTED' },
    );
  } finally {
    engine.setZstdVersionForTesting(null);
    await patch.close();
  }
  await t.rejects(fs.stat(layer), { code: 'ENOENT' }, 'no layer left behind');
});

t.test('an image without compressed streams stays format 1 without requires', { skip: SKIP }, async (t) => {
  const dir = await tempDir(t, 'revpatch-streams-');
  const keys = path.join(dir, 'keys');
  t.equal(runCli(['keygen', '--out', keys]).code, 0);
  const [a, b, p] = ['a.img', 'b.img', 'p.rvp'].map((f) => path.join(dir, f));
  await fs.writeFile(a, Buffer.concat([stampedImage(8), payload(100000, 0)]));
  await fs.writeFile(b, Buffer.concat([stampedImage(8), payload(100000, 9)]));
  t.equal(runCli(['create', '--from', a, '--to', b, '--key', path.join(keys, 'revpatch.key'), '--id', 'plain', '--out', p]).code, 0);
  const m = await readManifest(p);
  t.equal(m.format, 1);
  t.notOk('requires' in m);
  t.notMatch(runCli(['inspect', p]).stdout, /requires/);
  t.equal((JSON.parse(runCli(['inspect', '--json', p]).stdout) as { requires: unknown }).requires, null);
});

t.test('requires and format go together, and requires holds only known needs', async (t) => {
  const base = JSON.parse(
    JSON.stringify({
      format: 1,
      id: 'x',
      version: 1,
      title: '',
      severity: 'low',
      parent: null,
      blockSize: 4096,
      source: { size: 0, digest: '0'.repeat(64) },
      target: { size: 0, digest: '0'.repeat(64) },
      operationCount: 0,
      changedBlocks: 0,
      operations: Object.fromEntries(
        ['REPLACE', 'REPLACE_BROTLI', 'ZERO', 'COPY', 'DIFF'].map((k) => [k, { count: 0, targetBlocks: 0, dataBytes: 0 }]),
      ),
      payload: { size: 0, digest: '0'.repeat(64), chunkSize: 1 << 20, chunks: [] },
      removable: true,
      created: '2026-01-01T00:00:00Z',
      expires: null,
      keyId: '0'.repeat(16),
    }),
  ) as Manifest;
  t.doesNotThrow(() => validateManifest(base));
  const good = { ...base, format: 2, requires: { deltaVersions: [4, 5], zstd: '1.5.4' } } as Manifest;
  t.doesNotThrow(() => validateManifest(good));
  // requires sits after format, so inspect and the signed bytes show it first
  t.match(encodeManifest(good).toString(), /^\{"format":2,"requires":\{"deltaVersions":\[4,5\],"zstd":"1.5.4"\},"id"/);
  t.same(parseManifest(encodeManifest(good)), good);
  const bad: [string, unknown][] = [
    ['format 2 without requires', { ...base, format: 2 }],
    ['requires in format 1', { ...base, requires: { zstd: '1.5.4' } }],
    ['an empty requires', { ...base, format: 2, requires: {} }],
    ['delta version 3, which every device has', { ...base, format: 2, requires: { deltaVersions: [3] } }],
    ['unsorted versions', { ...base, format: 2, requires: { deltaVersions: [5, 4] } }],
    ['a zstd version that is not one', { ...base, format: 2, requires: { zstd: 'latest' } }],
    ['deflate false', { ...base, format: 2, requires: { deflate: false } }],
    ['an unknown need', { ...base, format: 2, requires: { xz: true } }],
    ['format 3', { ...base, format: 3, requires: { zstd: '1.5.4' } }],
  ];
  for (const [what, m] of bad) t.throws(() => validateManifest(m), { code: 'E_MANIFEST' }, what);
});
