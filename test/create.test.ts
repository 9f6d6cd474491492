import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import t, { type Test as Tap } from 'tap';
import { createPatch, type CreateOptions } from '../lib/publisher/create';
import * as engine from '../lib/engine/engine';
import { RevpatchError } from '../lib/engine/errors';
import { inspectPatch } from '../lib/patch/inspect';
import { readPublicKey, writeKeyPair } from '../lib/patch/keys';
import { OPERATION_TYPES } from '../lib/patch/manifest';
import { PatchFile } from '../lib/patch/patch_file';
import { ADDON, addonBuilt, BLOCK, stampedImage, tempDir } from './helpers';

const SKIP_NO_ADDON = addonBuilt() ? false : `needs the native addon (${ADDON}); run \`npm run build\` first`;

async function rejectsWith(t: Tap, promise: Promise<unknown>, code: string, name?: string): Promise<void> {
  let caught: unknown;
  try {
    await promise;
  } catch (err) {
    caught = err;
  }
  const got = caught instanceof RevpatchError ? caught.code : caught === undefined ? 'no error' : String(caught);
  t.equal(got, code, name ?? `rejects with ${code}`);
}

interface Fixture {
  dir: string;
  from: string;
  to: string;
  keyPath: string;
  publicKeyPath: string;
  keyId: string;
  out: string;
}

/** A 256-block base and a target with replaced, zeroed, moved and appended blocks. */
async function fixture(t: Tap): Promise<Fixture> {
  const dir = await tempDir(t, 'revpatch-create-');
  const base = stampedImage(256);
  const target = Buffer.concat([base, stampedImage(8, 'appended')]);
  stampedImage(3, 'fixed').copy(target, 10 * BLOCK);
  target.fill(0, 40 * BLOCK, 44 * BLOCK);
  base.copy(target, 100 * BLOCK, 200 * BLOCK, 202 * BLOCK);
  target.write('one changed byte', 150 * BLOCK + 7);
  const from = path.join(dir, 'base.img');
  const to = path.join(dir, 'target.img');
  await fs.writeFile(from, base);
  await fs.writeFile(to, target);
  const keys = await writeKeyPair(path.join(dir, 'keys'));
  return {
    dir,
    from,
    to,
    keyPath: keys.secretKeyPath,
    publicKeyPath: keys.publicKeyPath,
    keyId: keys.keyId,
    out: path.join(dir, 'out', 'fix-1.rvp'),
  };
}

t.test('createPatch refuses bad arguments before doing any work', async (t) => {
  const f = await fixture(t);
  const ok: CreateOptions = { from: f.from, to: f.to, keyPath: f.keyPath, id: 'fix-1', out: f.out };
  const bad: Array<[string, Record<string, unknown>]> = [
    ['empty from', { from: '' }],
    ['to not a string', { to: 5 }],
    ['id with a slash', { id: 'a/b' }],
    ['id too long', { id: 'x'.repeat(129) }],
    ['parent not an id', { parent: '../base' }],
    ['parent is the patch itself', { parent: 'fix-1' }],
    ['title of 201 characters', { title: 't'.repeat(201) }],
    ['version 0', { version: 0 }],
    ['version 2^31', { version: 2 ** 31 }],
    ['version 1.5', { version: 1.5 }],
    ['unknown severity', { severity: 'urgent' }],
    ['block size 1000', { blockSize: 1000 }],
    ['block size 256', { blockSize: 256 }],
    ['block size 2 MiB', { blockSize: 2 << 20 }],
    ['chunk size 4 KiB', { chunkSize: 4096 }],
    ['chunk size 32 MiB', { chunkSize: 32 << 20 }],
    ['expires not a date', { expires: 'next tuesday' }],
    ['expires in the past', { expires: '2001-01-01T00:00:00Z' }],
    ['expires an invalid Date', { expires: new Date('nope') }],
    ['onProgress not a function', { onProgress: 'yes' }],
  ];
  for (const [name, change] of bad) {
    await rejectsWith(t, createPatch({ ...ok, ...change } as CreateOptions), 'E_INVALID_ARGUMENT', name);
  }
  await rejectsWith(t, createPatch({ ...ok, keyPath: f.publicKeyPath }), 'E_KEY', 'a public key as the signing key');
  await rejectsWith(t, createPatch({ ...ok, keyPath: path.join(f.dir, 'none.key') }), 'E_KEY', 'a missing key');
  await t.rejects(fs.stat(path.dirname(f.out)), { code: 'ENOENT' }, 'nothing was written');
});

t.test('create, open, verify and inspect a patch round trip', { skip: SKIP_NO_ADDON }, async (t) => {
  const f = await fixture(t);
  await fs.mkdir(path.dirname(f.out));
  const progress: Array<[number, number]> = [];
  const result = await createPatch({
    from: f.from,
    to: f.to,
    keyPath: f.keyPath,
    id: 'fix-1',
    out: f.out,
    chunkSize: 65536,
    onProgress: (done, total) => progress.push([done, total]),
  });
  t.equal(result.path, f.out);
  t.equal((await fs.stat(f.out)).size, result.size);
  t.same(await fs.readdir(path.dirname(f.out)), ['fix-1.rvp'], 'no temporary payload or patch file is left');
  t.ok(progress.length > 0, 'progress was reported');

  const m = result.manifest;
  t.match(m, {
    format: 1,
    id: 'fix-1',
    title: 'fix-1',
    version: 1,
    severity: 'high',
    parent: null,
    blockSize: BLOCK,
    removable: true,
    expires: null,
    keyId: f.keyId,
  });
  const source = await engine.hashImage(f.from, BLOCK);
  const target = await engine.hashImage(f.to, BLOCK);
  t.same(m.source, { size: source.size, digest: source.digest });
  t.same(m.target, { size: target.size, digest: target.digest });
  t.ok(m.operationCount > 0);
  t.equal(m.payload.chunks.length, Math.ceil(m.payload.size / 65536));

  const patch = await PatchFile.open(f.out);
  t.teardown(() => patch.close());
  const trust = await readPublicKey(f.publicKeyPath);
  t.same(patch.verify(trust), m, 'the file verifies and holds the returned manifest');

  const checked = await inspectPatch(f.out, f.publicKeyPath);
  t.equal(checked.signature, 'valid');
  t.equal(checked.payload, 'valid');
  t.same(checked.manifest, m);
  t.equal(checked.stats?.operations, m.operationCount);
  for (const type of OPERATION_TYPES) t.same(checked.stats?.byType[type], m.operations[type], `${type} statistics`);
  t.same(checked.sizes, {
    file: result.size,
    header: 64,
    manifest: patch.header.manifestLength,
    signature: 64,
    payload: m.payload.size,
  });

  const unchecked = await inspectPatch(f.out);
  t.equal(unchecked.signature, 'unchecked');
  t.equal(unchecked.payload, 'unchecked');
  t.equal(unchecked.stats, undefined);
  t.same(unchecked.manifest, m);
});

t.test('create honours the optional fields', { skip: SKIP_NO_ADDON }, async (t) => {
  const f = await fixture(t);
  await fs.mkdir(path.dirname(f.out));
  const expires = new Date(Date.now() + 86_400_000);
  const { manifest } = await createPatch({
    from: f.from,
    to: f.to,
    keyPath: f.keyPath,
    id: 'fix-2',
    out: f.out,
    parent: 'fix-1',
    title: 'Second fix',
    version: 7,
    severity: 'low',
    blockSize: 1024,
    expires,
  });
  t.match(manifest, { parent: 'fix-1', title: 'Second fix', version: 7, severity: 'low', blockSize: 1024 });
  t.equal(manifest.expires, expires.toISOString());
  t.equal(manifest.payload.chunkSize, 1 << 20);
});

t.test('inspect with another key is E_SIGNATURE', { skip: SKIP_NO_ADDON }, async (t) => {
  const f = await fixture(t);
  await fs.mkdir(path.dirname(f.out));
  await createPatch({ from: f.from, to: f.to, keyPath: f.keyPath, id: 'fix-1', out: f.out });
  const other = await writeKeyPair(path.join(f.dir, 'other-keys'));
  await rejectsWith(t, inspectPatch(f.out, other.publicKeyPath), 'E_SIGNATURE');
});

t.test('a flipped payload byte is E_HASH_MISMATCH when the payload is scanned', { skip: SKIP_NO_ADDON }, async (t) => {
  const f = await fixture(t);
  await fs.mkdir(path.dirname(f.out));
  const { manifest, size } = await createPatch({
    from: f.from,
    to: f.to,
    keyPath: f.keyPath,
    id: 'fix-1',
    out: f.out,
  });
  const bytes = await fs.readFile(f.out);
  const payloadOffset = size - manifest.payload.size;
  for (const at of [payloadOffset, payloadOffset + Math.floor(manifest.payload.size / 2), size - 1]) {
    const damaged = Buffer.from(bytes);
    damaged[at]! ^= 0x01;
    const file = path.join(f.dir, `damaged-${at}.rvp`);
    await fs.writeFile(file, damaged);
    t.equal((await inspectPatch(file)).signature, 'unchecked', 'the container itself still opens');
    await rejectsWith(t, inspectPatch(file, f.publicKeyPath), 'E_HASH_MISMATCH', `payload byte ${at - payloadOffset}`);
  }
});

t.test('a failed create leaves an existing patch file untouched and no temporary files', { skip: SKIP_NO_ADDON }, async (t) => {
  const f = await fixture(t);
  const outDir = path.dirname(f.out);
  await fs.mkdir(outDir);
  await fs.writeFile(f.out, 'previous patch');
  await rejectsWith(
    t,
    createPatch({ from: path.join(f.dir, 'missing.img'), to: f.to, keyPath: f.keyPath, id: 'fix-1', out: f.out }),
    'E_NOT_FOUND',
  );
  t.equal(await fs.readFile(f.out, 'utf8'), 'previous patch');
  t.same(await fs.readdir(outDir), ['fix-1.rvp']);
  const { size } = await createPatch({ from: f.from, to: f.to, keyPath: f.keyPath, id: 'fix-1', out: f.out });
  t.equal((await fs.stat(f.out)).size, size, 'a successful create replaces it');
  t.same(await fs.readdir(outDir), ['fix-1.rvp']);
});
