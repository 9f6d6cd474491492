/**
 * The on-disk formats are deliberate: files written by the golden generator
 * (scripts/make-golden.js, committed under test/fixtures/golden/) must keep
 * decoding to the same content. A failure here means a format changed; if
 * that was the intent, bump the format's version and regenerate the files.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import * as engine from '../lib/engine/engine';
import { readPublicKey } from '../lib/patch/keys';
import { MANIFEST_FORMAT } from '../lib/patch/manifest';
import { PATCH_FORMAT_VERSION, PatchFile } from '../lib/patch/patch_file';
import { ROOT, sha256, tempDir } from './helpers';

const GOLDEN = path.join(ROOT, 'test', 'fixtures', 'golden');
const golden = (name: string): string => path.join(GOLDEN, name);
const CHANGED = 'format changed: bump the format version and regenerate the golden files on purpose (node scripts/make-golden.js)';

interface Expected {
  formats: { patch: number; manifest: number };
  blockSize: number;
  base: { size: number; digest: string };
  target: { size: number; digest: string };
  patch: { id: string; keyId: string; operationCount: number; operations: Record<string, { count: number }> };
  layer: { blocks: number; targetSize: number; viewDigest: string };
  commit: { generation: number; body: string };
  sha256: Record<string, string>;
}

async function expected(): Promise<Expected> {
  return JSON.parse(await fs.readFile(golden('expected.json'), 'utf8')) as Expected;
}

/** Runs `decode`; any error becomes the one message that says what to do. */
async function decodes<T>(what: string, decode: () => Promise<T>): Promise<T> {
  try {
    return await decode();
  } catch (err) {
    const e = err as { code?: string; message?: string };
    throw new Error(`${what}: ${CHANGED}\n  ${e.code ?? 'Error'}: ${e.message ?? String(err)}`);
  }
}

/** `constexpr uint32_t NAME = N;` from an engine source: the version the engine writes. */
async function engineConstant(file: string, name: string): Promise<number> {
  const source = await fs.readFile(path.join(ROOT, 'native', 'engine', file), 'utf8');
  const m = new RegExp(`constexpr\\s+uint32_t\\s+${name}\\s*=\\s*(\\d+)\\s*;`).exec(source);
  if (!m) throw new Error(`${name} not found in native/engine/${file}`);
  return Number(m[1]);
}

/** The version field of each DIFF record's delta in a patch file's payload. */
function diffVersions(patch: Buffer): number[] {
  const versions: number[] = [];
  let p = 64 + patch.readUInt32LE(16) + 64;
  while (p < patch.length) {
    const extents = patch.readUInt32LE(p + 4) + patch.readUInt32LE(p + 8);
    const data = p + 88 + 16 * extents;
    if (patch[p] === 5) versions.push(patch.readUInt32LE(data + 4));
    p = data + Number(patch.readBigUInt64LE(p + 16));
  }
  return versions;
}

t.test('the golden files are the ones the generator wrote', async (t) => {
  const e = await expected();
  for (const [name, digest] of Object.entries(e.sha256)) {
    t.equal(sha256(await fs.readFile(golden(name))), digest, `${name} unchanged since make-golden.js wrote it`);
  }
});

t.test('format version constants match the golden files', async (t) => {
  const e = await expected();
  const patch = await fs.readFile(golden('patch.rvp'));
  t.equal(patch.readUInt32LE(8), PATCH_FORMAT_VERSION, `patch header version is PATCH_FORMAT_VERSION: ${CHANGED}`);
  t.equal(e.formats.patch, PATCH_FORMAT_VERSION, 'expected.json records the patch format');
  t.equal(e.formats.manifest, MANIFEST_FORMAT, `manifest format is MANIFEST_FORMAT: ${CHANGED}`);
  const manifest = JSON.parse(patch.subarray(64, 64 + patch.readUInt32LE(16)).toString('utf8')) as { format: number };
  t.equal(manifest.format, MANIFEST_FORMAT, `the golden manifest's format is MANIFEST_FORMAT: ${CHANGED}`);
  const headers: Array<[string, string, string, string]> = [
    ['base.tree', 'RVPTREE1', 'merkle.cc', 'kTreeVersion'],
    ['patch.layer', 'RVPLAYR1', 'layer_file.cc', 'kLayerVersion'],
    ['commit.record', 'RVPCOMM1', 'commit_record.cc', 'kCommitVersion'],
  ];
  for (const [file, magic, source, constant] of headers) {
    const bytes = await fs.readFile(golden(file));
    const slot = file === 'commit.record' ? 262144 : 0; // generation 2 lives in slot 0, 1 in slot 1
    t.equal(bytes.toString('latin1', 0, 8), magic, `${file} magic`);
    t.equal(bytes.readUInt32LE(8), await engineConstant(source, constant), `${file} version is ${constant}: ${CHANGED}`);
    if (slot) t.equal(bytes.readUInt32LE(slot + 8), await engineConstant(source, constant), `${file} slot 1 version`);
  }
  const versions = diffVersions(patch);
  t.ok(versions.length > 0, 'the golden patch holds a DIFF record');
  // The golden DIFF is of data with no executable in it, for which the
  // generator writes the plain version; version 3 (references predicted) is
  // written only for executables, and has its own unit tests and fuzz seeds.
  const plain = await engineConstant('diff.h', 'kPlainDiffFormatVersion');
  for (const v of versions) t.equal(v, plain, `DIFF delta version is kPlainDiffFormatVersion: ${CHANGED}`);
  t.ok(plain <= await engineConstant('diff.h', 'kDiffFormatVersion'), 'the plain version is one the decoder reads');
});

t.test('the golden patch verifies with the golden key and covers every operation type', async (t) => {
  const e = await expected();
  const key = await readPublicKey(golden('revpatch.pub'));
  t.equal(key.keyId, e.patch.keyId);
  const patch = await PatchFile.open(golden('patch.rvp'));
  t.teardown(() => patch.close());
  const manifest = await decodes('patch.rvp', async () => patch.verify(key));
  t.equal(manifest.id, e.patch.id);
  t.same(manifest.source, e.base);
  t.same(manifest.target, e.target);
  t.equal(manifest.operationCount, e.patch.operationCount);
  for (const [type, stats] of Object.entries(manifest.operations)) {
    t.ok(stats.count > 0, `the golden patch has a ${type} record`);
  }
  const scanned = await decodes('patch.rvp payload', () => engine.scanPayload(patch.applyParams(golden('unused.layer'))));
  t.equal(scanned.operations, e.patch.operationCount, 'the engine parses every record of the payload');
});

t.test('the golden patch applies to the golden base and gives the golden target', async (t) => {
  const e = await expected();
  const dir = await tempDir(t);
  const key = await readPublicKey(golden('revpatch.pub'));
  const patch = await PatchFile.open(golden('patch.rvp'));
  t.teardown(() => patch.close());
  patch.verify(key);
  const view = { base: golden('base.img'), baseTree: golden('base.tree'), layers: [] as string[] };
  const info = await decodes('base.tree', () => engine.viewInfo(view));
  t.equal(info.digest, e.base.digest, 'the base tree file gives the base digest');
  const layer = path.join(dir, 'applied.layer');
  const applied = await decodes('patch.rvp', () => engine.applyPatch(view, patch.applyParams(layer)));
  t.equal(applied.viewDigest, e.target.digest, 'the applied view has the target digest');
  const bytes = await engine.readView({ ...view, layers: [layer] }, 0, e.target.size);
  t.ok(bytes.equals(await fs.readFile(golden('target.img'))), 'the applied view reads the target bytes');
});

t.test('the golden sealed layer opens and reads the target blocks', async (t) => {
  const e = await expected();
  const info = await decodes('patch.layer', () => engine.verifyLayer(golden('patch.layer')));
  t.same(info, { blockSize: e.blockSize, ...e.layer }, 'footer fields as written');
  const view = { base: golden('base.img'), baseTree: golden('base.tree'), layers: [golden('patch.layer')] };
  const viewInfo = await decodes('patch.layer', () => engine.viewInfo(view));
  t.equal(viewInfo.digest, e.target.digest);
  t.equal(viewInfo.layerCount, 1);
  const target = await fs.readFile(golden('target.img'));
  const bytes = await engine.readView(view, 0, e.target.size);
  t.ok(bytes.equals(target), 'base + golden layer read the target bytes');
  // Blocks the layer holds (changed, zeroed, grown) and one it does not.
  for (const block of [3, 5, 7, 11, 17, 1]) {
    const got = await engine.readView(view, block * e.blockSize, e.blockSize);
    t.ok(got.equals(target.subarray(block * e.blockSize, (block + 1) * e.blockSize)), `block ${block}`);
  }
});

t.test('the golden commit record reads its generation and body', async (t) => {
  const e = await expected();
  const record = await decodes('commit.record', () => engine.readCommitRecord(golden('commit.record')));
  t.equal(record.generation, e.commit.generation);
  t.equal(record.body, e.commit.body);
});

t.test('a golden file with one changed byte no longer decodes', async (t) => {
  // The guard itself: the decoders above would notice a changed layout.
  const dir = await tempDir(t);
  const layer = Buffer.from(await fs.readFile(golden('patch.layer')));
  layer[8] ^= 1; // the header's version
  await fs.writeFile(path.join(dir, 'bad.layer'), layer);
  await t.rejects(
    decodes('bad.layer', () => engine.verifyLayer(path.join(dir, 'bad.layer'))),
    { message: new RegExp(`^bad\\.layer: ${CHANGED.replace(/[().]/g, '\\$&')}`) },
  );
  const record = Buffer.from(await fs.readFile(golden('commit.record')));
  record[8] ^= 1; // slot 0 (generation 2): version
  record[262144 + 8] ^= 1; // slot 1 (generation 1): version
  await fs.writeFile(path.join(dir, 'bad.record'), record);
  await t.rejects(engine.readCommitRecord(path.join(dir, 'bad.record')), { code: 'E_CORRUPT' });
});
