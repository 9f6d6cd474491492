#!/usr/bin/env node
// Writes the golden files of test/fixtures/golden/ (test/golden_format.test.ts
// decodes them): a base image and its tree file, a target image, a signed
// patch from one to the other with a record of every operation type (encoded
// here, not by the generator, so the choice of records never changes), the
// sealed layer the engine makes of it, and a commit record at generation 2.
//
// Run it only on purpose, after bumping a format version: the golden files are
// the proof that files written by earlier releases still read. Deterministic:
// a fixed key seed, fixed timestamps and fixed image contents, so the same
// engine and the same Node (whose Brotli compresses two records) write the
// same bytes. Needs the addon and dist/ (npm run build).
//   node scripts/make-golden.js [outdir]
'use strict';
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const zlib = require('node:zlib');

const root = path.resolve(__dirname, '..');
const dist = (m) => require(path.join(root, 'dist', m));
const engine = dist('engine/engine.js');
const { encodeManifest, MANIFEST_FORMAT, OPERATION_TYPES } = dist('patch/manifest.js');
const { encodeSignedHead, PatchFile, PATCH_FORMAT_VERSION } = dist('patch/patch_file.js');
const { keyIdOf, encodePublicKey } = dist('patch/keys.js');
const sodium = require('libsodium-wrappers');

const BLOCK = 4096;
const CHUNK = 64 * 1024;
const BASE_BLOCKS = 16;
const KEY_SEED = Buffer.alloc(32, 0x5a); // never a real key: the golden key is public
const CREATED = '2026-01-01T00:00:00.000Z';
const PATCH_ID = 'golden-1';
const COMMIT_BODIES = ['{"golden":1,"patches":[]}', '{"golden":2,"patches":["golden-1"]}'];

/** Deterministic pseudo-random bytes (SHA-256 in counter mode). */
function stream(tag, size) {
  const out = Buffer.alloc(size);
  for (let i = 0, off = 0; off < size; ++i, off += 32) {
    crypto.createHash('sha256').update(`${tag}:${i}`).digest().copy(out, off);
  }
  return out;
}

function images() {
  const base = stream('base', BASE_BLOCKS * BLOCK);
  const target = Buffer.alloc(BASE_BLOCKS * BLOCK + 2 * BLOCK + 1000);
  base.copy(target);
  const block = (b, i) => b.subarray(i * BLOCK, (i + 1) * BLOCK);
  // DIFF: a few bytes changed in an incompressible block.
  for (const at of [17, 1000, 3001]) block(target, 3)[at] ^= 0xff;
  block(target, 5).fill(0); // ZERO
  block(base, 1).copy(block(target, 7)); // COPY from elsewhere
  stream('new', BLOCK).copy(block(target, 9)); // REPLACE (incompressible)
  Buffer.from('revpatch golden block '.repeat(200)).copy(block(target, 11)); // REPLACE_BROTLI
  stream('grown', 2 * BLOCK + 1000).copy(target, BASE_BLOCKS * BLOCK); // growth, partial last block
  return { base, target };
}

const sha256 = (data) => crypto.createHash('sha256').update(data).digest('hex');
const TYPES = { REPLACE: 1, REPLACE_BROTLI: 2, ZERO: 3, COPY: 4, DIFF: 5 };

/**
 * The engine's own delta (DIFF data) from `from` to `to`, one block each:
 * the generator's payload for that one-block pair, which must be a single
 * DIFF record.
 */
async function delta(from, to) {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'revpatch-golden-'));
  try {
    const [a, b, out] = ['from', 'to', 'payload'].map((f) => path.join(work, f));
    fs.writeFileSync(a, from);
    fs.writeFileSync(b, to);
    const g = await engine.generatePayload(a, b, out, { blockSize: BLOCK, chunkSize: CHUNK });
    const bytes = fs.readFileSync(out);
    if (g.operationCount !== 1 || bytes[0] !== TYPES.DIFF) {
      throw new Error('the generator made no single DIFF record of the changed block: adjust the images');
    }
    const extents = bytes.readUInt32LE(4) + bytes.readUInt32LE(8);
    return bytes.subarray(88 + 16 * extents);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

/**
 * The payload, record by record (one of each type, and a REPLACE of the grown
 * tail), encoded by hand so that it does not depend on the generator's
 * choices: docs/on-disk-format.md, "Operation record".
 */
async function payloadOf(base, target) {
  const padded = Buffer.alloc(Math.ceil(target.length / BLOCK) * BLOCK);
  target.copy(padded);
  const blocks = (image, start, count) => image.subarray(start * BLOCK, (start + count) * BLOCK);
  const ops = [
    { type: 'DIFF', src: [3, 1], dst: [3, 1], data: await delta(blocks(base, 3, 1), blocks(padded, 3, 1)) },
    { type: 'ZERO', dst: [5, 1] },
    { type: 'COPY', src: [1, 1], dst: [7, 1] },
    { type: 'REPLACE', dst: [9, 1], data: blocks(padded, 9, 1) },
    { type: 'REPLACE_BROTLI', dst: [11, 1], data: zlib.brotliCompressSync(blocks(padded, 11, 1)) },
    { type: 'REPLACE', dst: [16, 3], data: blocks(padded, 16, 3) },
  ];
  const stats = {};
  for (const type of OPERATION_TYPES) stats[type] = { count: 0, targetBlocks: 0, dataBytes: 0 };
  const records = ops.map((op) => {
    const data = op.data || Buffer.alloc(0);
    const header = Buffer.alloc(88);
    header.writeUInt8(TYPES[op.type], 0);
    header.writeUInt32LE(op.src ? 1 : 0, 4);
    header.writeUInt32LE(1, 8);
    header.writeBigUInt64LE(BigInt(data.length), 16);
    if (op.src) crypto.createHash('sha256').update(blocks(base, ...op.src)).digest().copy(header, 24);
    crypto.createHash('sha256').update(blocks(padded, ...op.dst)).digest().copy(header, 56);
    const extents = Buffer.alloc(16 * (op.src ? 2 : 1));
    [...(op.src ? [op.src] : []), op.dst].forEach(([start, count], i) => {
      extents.writeBigUInt64LE(BigInt(start), 16 * i);
      extents.writeBigUInt64LE(BigInt(count), 16 * i + 8);
    });
    const s = stats[op.type];
    s.count += 1;
    s.targetBlocks += op.dst[1];
    s.dataBytes += data.length;
    return Buffer.concat([header, extents, data]);
  });
  const changedBlocks = ops.reduce((n, op) => n + op.dst[1], 0);
  return { ops, stats, changedBlocks, bytes: Buffer.concat(records) };
}

async function main() {
  const out = path.resolve(process.argv[2] || path.join(root, 'test', 'fixtures', 'golden'));
  fs.mkdirSync(out, { recursive: true });
    await sodium.ready;
    const pair = sodium.crypto_sign_seed_keypair(KEY_SEED);
    const key = { keyId: keyIdOf(pair.publicKey), publicKey: pair.publicKey, secretKey: pair.privateKey };
    fs.writeFileSync(path.join(out, 'revpatch.pub'), encodePublicKey(key));

    const { base, target } = images();
    const basePath = path.join(out, 'base.img');
    const targetPath = path.join(out, 'target.img');
    fs.writeFileSync(basePath, base);
    fs.writeFileSync(targetPath, target);
    const treePath = path.join(out, 'base.tree');
    fs.rmSync(treePath, { force: true });
    const baseDigest = await engine.buildBaseTree(basePath, BLOCK, treePath);
    const targetDigest = await engine.hashImage(targetPath, BLOCK);

    const payload = await payloadOf(base, target);
    const chunks = [];
    for (let off = 0; off < payload.bytes.length; off += CHUNK) chunks.push(sha256(payload.bytes.subarray(off, off + CHUNK)));
    const manifest = {
      format: MANIFEST_FORMAT,
      id: PATCH_ID,
      version: 1,
      title: 'Golden patch',
      severity: 'high',
      parent: null,
      blockSize: BLOCK,
      source: { size: base.length, digest: baseDigest.digest },
      target: { size: target.length, digest: targetDigest.digest },
      operationCount: payload.ops.length,
      changedBlocks: payload.changedBlocks,
      operations: payload.stats,
      payload: { size: payload.bytes.length, digest: sha256(payload.bytes), chunkSize: CHUNK, chunks },
      removable: true,
      created: CREATED,
      expires: null,
      keyId: key.keyId,
    };
    const head = await encodeSignedHead(encodeManifest(manifest), payload.bytes.length, key.secretKey);
    const patchPath = path.join(out, 'patch.rvp');
    fs.writeFileSync(patchPath, Buffer.concat([head, payload.bytes]));

    const layerPath = path.join(out, 'patch.layer');
    fs.rmSync(layerPath, { force: true });
    const patch = await PatchFile.open(patchPath);
    let applied;
    try {
      patch.verify(key.publicKey);
      applied = await engine.applyPatch({ base: basePath, baseTree: treePath, layers: [] }, patch.applyParams(layerPath));
    } finally {
      await patch.close();
    }
    if (applied.viewDigest !== targetDigest.digest) throw new Error('the golden layer does not give the target digest');
    const layer = await engine.verifyLayer(layerPath);

    const commitPath = path.join(out, 'commit.record');
    fs.rmSync(commitPath, { force: true });
    let generation = 0;
    for (const body of COMMIT_BODIES) generation = await engine.writeCommitRecord(commitPath, generation, body);

    const sha = (f) => crypto.createHash('sha256').update(fs.readFileSync(path.join(out, f))).digest('hex');
    const files = ['base.img', 'base.tree', 'target.img', 'patch.rvp', 'patch.layer', 'commit.record', 'revpatch.pub'];
    const expected = {
      note: 'written by scripts/make-golden.js; regenerate only together with a format version bump',
      formats: { patch: PATCH_FORMAT_VERSION, manifest: MANIFEST_FORMAT },
      blockSize: BLOCK,
      base: { size: base.length, digest: baseDigest.digest },
      target: { size: target.length, digest: targetDigest.digest },
      patch: { id: PATCH_ID, keyId: key.keyId, operationCount: payload.ops.length, operations: payload.stats },
      layer: { blocks: layer.blocks, targetSize: layer.targetSize, viewDigest: layer.viewDigest },
      commit: { generation, body: COMMIT_BODIES[COMMIT_BODIES.length - 1] },
      sha256: Object.fromEntries(files.map((f) => [f, sha(f)])),
    };
    fs.writeFileSync(path.join(out, 'expected.json'), JSON.stringify(expected, null, 2) + '\n');
    console.log(`golden files written to ${path.relative(process.cwd(), out) || '.'}`);
}

main().catch((err) => {
  console.error(`make-golden: ${err.code ? err.code + ': ' : ''}${err.message}`);
  process.exit(1);
});
