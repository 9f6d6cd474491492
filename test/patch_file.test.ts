import * as crypto from 'node:crypto';
import { promises as fs, read as readFd } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t, { type Test as Tap } from 'tap';
import { RevpatchError } from '../lib/engine/errors';
import { generateKeyPair, type SecretKey } from '../lib/patch/keys';
import { encodeManifest, MAX_MANIFEST_BYTES, type Manifest } from '../lib/patch/manifest';
import {
  decodeHeader,
  encodeHeader,
  encodeSignedHead,
  HEADER_SIZE,
  PATCH_MAGIC,
  PatchFile,
  SIGNATURE_SIZE,
} from '../lib/patch/patch_file';

const CHUNK = 65536;
const sha256 = (data: Uint8Array | string): string => crypto.createHash('sha256').update(data).digest('hex');

function manifestFor(payload: Buffer, key: SecretKey, overrides: Partial<Manifest> = {}): Manifest {
  const chunks: string[] = [];
  for (let off = 0; off < payload.length; off += CHUNK) chunks.push(sha256(payload.subarray(off, off + CHUNK)));
  const zero = { count: 0, targetBlocks: 0, dataBytes: 0 };
  return {
    format: 1,
    id: 'fix-1',
    version: 1,
    title: 'Fix one',
    severity: 'critical',
    parent: null,
    blockSize: 4096,
    source: { size: 8 << 20, digest: sha256('source view') },
    target: { size: 8 << 20, digest: sha256('target view') },
    operationCount: 2,
    changedBlocks: 10,
    operations: {
      REPLACE: { count: 1, targetBlocks: 6, dataBytes: payload.length },
      REPLACE_BROTLI: { ...zero },
      ZERO: { ...zero },
      COPY: { count: 1, targetBlocks: 4, dataBytes: 0 },
      DIFF: { ...zero },
    },
    payload: { size: payload.length, digest: sha256(payload), chunkSize: CHUNK, chunks },
    removable: true,
    created: '2024-05-01T12:00:00.000Z',
    expires: null,
    keyId: key.keyId,
    ...overrides,
  };
}

/** A complete patch file with arbitrary manifest bytes, signed by `key`. */
async function signedFile(manifestBytes: Uint8Array, payload: Buffer, key: SecretKey): Promise<Buffer> {
  return Buffer.concat([await encodeSignedHead(manifestBytes, payload.length, key.secretKey), payload]);
}

async function samplePatch(key: SecretKey, payload: Buffer, overrides: Partial<Manifest> = {}): Promise<Buffer> {
  return signedFile(encodeManifest(manifestFor(payload, key, overrides)), payload, key);
}

/** A positional read from a raw descriptor, as the engine does it. */
function pread(fd: number, length: number, position: number): Promise<{ read: Buffer; bytesRead: number }> {
  const read = Buffer.alloc(length);
  return new Promise((resolve, reject) =>
    readFd(fd, read, 0, length, position, (err, bytesRead) => (err ? reject(err) : resolve({ read, bytesRead }))),
  );
}

async function tempDir(t: Tap): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'revpatch-patchfile-'));
  t.teardown(() => fs.rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Opens and verifies the file at `file`; 'ok' or the stable error code. */
async function outcome(file: string, key: { publicKey: Uint8Array }): Promise<string> {
  let patch: PatchFile | undefined;
  try {
    patch = await PatchFile.open(file);
    patch.verify(key.publicKey);
    return 'ok';
  } catch (err) {
    if (err instanceof RevpatchError) return err.code;
    throw err;
  } finally {
    await patch?.close();
  }
}

async function outcomeOf(bytes: Buffer, file: string, key: { publicKey: Uint8Array }): Promise<string> {
  await fs.writeFile(file, bytes);
  return outcome(file, key);
}

t.test('patch file container', async (t) => {
  const key = await generateKeyPair();
  const stranger = await generateKeyPair();
  const payload = crypto.randomBytes(3 * CHUNK + 17);
  const good = await samplePatch(key, payload);
  const manifestLength = good.readUInt32LE(16);
  const signatureAt = HEADER_SIZE + manifestLength;
  const dir = await tempDir(t);
  const scratch = path.join(dir, 'scratch.rvp');

  t.test('a signed file opens, verifies and exposes manifest, fd and apply parameters', async (t) => {
    const file = path.join(dir, 'good.rvp');
    await fs.writeFile(file, good);
    const patch = await PatchFile.open(file);
    t.teardown(() => patch.close());
    t.equal(patch.payloadOffset, HEADER_SIZE + manifestLength + SIGNATURE_SIZE);
    t.equal(patch.payloadLength, payload.length);
    t.equal(patch.fileSize, good.length);
    t.notOk(patch.isVerified);
    const manifest = patch.verify(key.publicKey);
    t.same(manifest, manifestFor(payload, key));
    t.same(patch.manifest, manifest);
    t.ok(patch.isVerified);
    t.same(patch.verify({ keyId: key.keyId, publicKey: key.publicKey }), manifest, 'a PublicKey object works too');
    const params = patch.applyParams('/layers/fix-1.layer', 4096);
    t.same(params, {
      fd: patch.fd,
      payloadOffset: patch.payloadOffset,
      payloadSize: payload.length,
      chunkSize: CHUNK,
      chunkDigests: manifest.payload.chunks,
      payloadDigest: sha256(payload),
      operationCount: 2,
      blockSize: 4096,
      targetSize: 8 << 20,
      sourceDigest: manifest.source.digest,
      targetDigest: manifest.target.digest,
      layerPath: '/layers/fix-1.layer',
    });
    const { read, bytesRead } = await pread(patch.fd, payload.length, patch.payloadOffset);
    t.equal(bytesRead, payload.length);
    t.same(read, payload, 'the payload is at payloadOffset in the held descriptor');
    t.throws(() => patch.applyParams('/x', 512), { code: 'E_BASE_MISMATCH' }, 'a different device block size');
  });

  t.test('the manifest is not available before verify; parseUnverified does not unlock it', async (t) => {
    const file = path.join(dir, 'unverified.rvp');
    await fs.writeFile(file, good);
    const patch = await PatchFile.open(file);
    t.teardown(() => patch.close());
    t.throws(() => patch.manifest, { code: 'E_STATE' });
    t.throws(() => patch.applyParams('/x'), { code: 'E_STATE' });
    t.same(patch.parseUnverified(), manifestFor(payload, key));
    t.throws(() => patch.manifest, { code: 'E_STATE' }, 'still locked after parseUnverified');
    t.throws(() => patch.verify(stranger.publicKey), { code: 'E_SIGNATURE' });
    t.throws(() => patch.manifest, { code: 'E_STATE' }, 'still locked after a failed verify');
  });

  t.test('a flipped bit anywhere in the header is E_FORMAT, or E_UNSUPPORTED in the version', async (t) => {
    const seen: Record<string, number> = {};
    for (let i = 0; i < HEADER_SIZE; i++) {
      for (const mask of [0x01, 0x80]) {
        const bytes = Buffer.from(good);
        bytes[i]! ^= mask;
        const code = await outcomeOf(bytes, scratch, key);
        const expected = i >= 8 && i < 12 ? 'E_UNSUPPORTED' : 'E_FORMAT';
        if (code !== expected) t.equal(code, expected, `header byte ${i} ^ ${mask}`);
        seen[code] = (seen[code] ?? 0) + 1;
      }
    }
    t.same(seen, { E_FORMAT: 120, E_UNSUPPORTED: 8 });
  });

  t.test('a flipped bit anywhere in the signature is E_SIGNATURE', async (t) => {
    let checked = 0;
    for (let i = signatureAt; i < signatureAt + SIGNATURE_SIZE; i++) {
      for (const mask of [0x01, 0x80]) {
        const bytes = Buffer.from(good);
        bytes[i]! ^= mask;
        const code = await outcomeOf(bytes, scratch, key);
        if (code !== 'E_SIGNATURE') t.equal(code, 'E_SIGNATURE', `signature byte ${i - signatureAt} ^ ${mask}`);
        checked++;
      }
    }
    t.equal(checked, 128);
  });

  t.test('a flipped bit in the manifest is E_SIGNATURE, before anything parses it', async (t) => {
    const positions = new Set<number>([HEADER_SIZE, HEADER_SIZE + 1, signatureAt - 1]);
    for (let i = HEADER_SIZE; i < signatureAt; i += 7) positions.add(i);
    for (const i of positions) {
      const bytes = Buffer.from(good);
      bytes[i]! ^= 0x20;
      const code = await outcomeOf(bytes, scratch, key);
      if (code !== 'E_SIGNATURE') t.equal(code, 'E_SIGNATURE', `manifest byte ${i - HEADER_SIZE}`);
    }
    t.ok(positions.size > 100, `${positions.size} manifest positions checked`);
  });

  t.test('a flipped payload byte passes the container checks (the engine hashes the payload)', async (t) => {
    const bytes = Buffer.from(good);
    bytes[bytes.length - 1]! ^= 0xff;
    t.equal(await outcomeOf(bytes, scratch, key), 'ok');
  });

  t.test('a file truncated anywhere, or with a byte appended, is E_FORMAT', async (t) => {
    const cuts = new Set<number>();
    for (let n = 0; n <= signatureAt + SIGNATURE_SIZE + 8; n += n < 80 ? 1 : 13) cuts.add(n);
    for (let n = signatureAt - 3; n <= signatureAt + SIGNATURE_SIZE + 3; n++) cuts.add(n);
    for (let n = 0; n < 40; n++) cuts.add(Math.floor((good.length * n) / 40));
    cuts.add(good.length - 1);
    for (const n of cuts) {
      const code = await outcomeOf(good.subarray(0, n), scratch, key);
      if (code !== 'E_FORMAT') t.equal(code, 'E_FORMAT', `truncated to ${n} bytes`);
    }
    t.equal(await outcomeOf(Buffer.concat([good, Buffer.from([0])]), scratch, key), 'E_FORMAT', 'one trailing byte');
    t.ok(cuts.size > 150, `${cuts.size} truncation points checked`);
  });

  t.test('an empty file and random bytes are E_FORMAT; a missing file is E_NOT_FOUND', async (t) => {
    t.equal(await outcomeOf(Buffer.alloc(0), scratch, key), 'E_FORMAT', 'empty file');
    await t.rejects(PatchFile.open(scratch), { code: 'E_FORMAT', message: /empty/ });
    for (let i = 0; i < 200; i++) {
      const bytes = crypto.randomBytes(crypto.randomInt(1, 4096));
      const code = await outcomeOf(bytes, scratch, key);
      if (code !== 'E_FORMAT') t.equal(code, 'E_FORMAT', `random bytes #${i}`);
    }
    for (let i = 0; i < 100; i++) {
      const bytes = Buffer.concat([PATCH_MAGIC, crypto.randomBytes(crypto.randomInt(0, 4096))]);
      const code = await outcomeOf(bytes, scratch, key);
      if (code !== 'E_FORMAT' && code !== 'E_UNSUPPORTED') t.fail(`random bytes after the magic #${i}: ${code}`);
    }
    t.equal(await outcome(path.join(dir, 'does-not-exist.rvp'), key), 'E_NOT_FOUND');
    t.equal(await outcome(dir, key), 'E_FORMAT', 'a directory is not a patch file');
  });

  t.test('header lengths near 2^31, 2^32 and 2^53 are E_FORMAT', async (t) => {
    const header = (edit: (h: Buffer) => void): Buffer => {
      const bytes = Buffer.from(good);
      edit(bytes);
      return bytes;
    };
    const big = [2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 32 + 1, 2 ** 53 - 1, 2 ** 53, 2 ** 53 + 2, 2 ** 63, 2 ** 64 - 1];
    for (const v of big) {
      const value = BigInt(v);
      const asU64 = value >= 2n ** 64n ? 2n ** 64n - 1n : value;
      t.equal(
        await outcomeOf(header((h) => h.writeBigUInt64LE(asU64, 32)), scratch, key),
        'E_FORMAT',
        `payload length ${v}`,
      );
      t.equal(
        await outcomeOf(header((h) => h.writeBigUInt64LE(asU64, 24)), scratch, key),
        'E_FORMAT',
        `payload offset ${v}`,
      );
      if (v < 2 ** 32) {
        t.equal(await outcomeOf(header((h) => h.writeUInt32LE(v, 16)), scratch, key), 'E_FORMAT', `manifest length ${v}`);
        t.equal(await outcomeOf(header((h) => h.writeUInt32LE(v, 20)), scratch, key), 'E_FORMAT', `signature length ${v}`);
        t.equal(await outcomeOf(header((h) => h.writeUInt32LE(v, 12)), scratch, key), 'E_FORMAT', `header size ${v}`);
      }
    }
    const consistent = (manifestLength: number, payloadLength: bigint): Buffer => {
      const h = Buffer.from(good.subarray(0, HEADER_SIZE));
      h.writeUInt32LE(manifestLength, 16);
      h.writeBigUInt64LE(BigInt(HEADER_SIZE + manifestLength + SIGNATURE_SIZE), 24);
      h.writeBigUInt64LE(payloadLength, 32);
      return h;
    };
    t.throws(() => decodeHeader(consistent(0, 0n)), { code: 'E_FORMAT' }, 'manifest length 0');
    t.throws(() => decodeHeader(consistent(MAX_MANIFEST_BYTES + 1, 0n)), { code: 'E_FORMAT' }, 'manifest length 4 MiB + 1');
    t.doesNotThrow(() => decodeHeader(consistent(MAX_MANIFEST_BYTES, 0n)), 'manifest length 4 MiB is in bounds');
    const offset = BigInt(HEADER_SIZE + 100 + SIGNATURE_SIZE);
    t.doesNotThrow(() => decodeHeader(consistent(100, 2n ** 53n - 1n - offset)), 'offset + length = 2^53 - 1');
    t.throws(() => decodeHeader(consistent(100, 2n ** 53n - offset)), { code: 'E_FORMAT' }, 'offset + length = 2^53');
    t.throws(() => decodeHeader(consistent(100, 2n ** 64n - 1n)), { code: 'E_FORMAT' }, 'length 2^64 - 1');
    t.throws(() => decodeHeader(good.subarray(0, 63)), { code: 'E_FORMAT' });
    t.same(decodeHeader(good), {
      version: 1,
      headerSize: 64,
      manifestLength,
      signatureLength: 64,
      payloadOffset: signatureAt + SIGNATURE_SIZE,
      payloadLength: payload.length,
    });
  });

  t.test('encodeHeader refuses lengths out of bounds', async (t) => {
    t.throws(() => encodeHeader(0, 0), { code: 'E_INVALID_ARGUMENT' });
    t.throws(() => encodeHeader(MAX_MANIFEST_BYTES + 1, 0), { code: 'E_INVALID_ARGUMENT' });
    t.throws(() => encodeHeader(10, -1), { code: 'E_INVALID_ARGUMENT' });
    t.throws(() => encodeHeader(10, 2 ** 53), { code: 'E_INVALID_ARGUMENT' });
    t.equal(encodeHeader(10, 0).length, HEADER_SIZE);
  });

  t.test('a file signed by an unknown key is E_SIGNATURE', async (t) => {
    const foreign = await samplePatch(stranger, payload);
    t.equal(await outcomeOf(foreign, scratch, key), 'E_SIGNATURE');
    t.equal(await outcomeOf(foreign, scratch, stranger), 'ok', 'its own key verifies it');
  });

  t.test("a valid signature of file A glued onto file B's manifest is E_SIGNATURE", async (t) => {
    const a = good;
    const b = await samplePatch(key, payload, { id: 'fix-2', title: 'Fix two' });
    const bManifestLength = b.readUInt32LE(16);
    const bSignatureAt = HEADER_SIZE + bManifestLength;
    const aSignature = a.subarray(signatureAt, signatureAt + SIGNATURE_SIZE);
    const glued = Buffer.concat([b.subarray(0, bSignatureAt), aSignature, b.subarray(bSignatureAt + SIGNATURE_SIZE)]);
    t.equal(glued.length, b.length);
    t.equal(await outcomeOf(glued, scratch, key), 'E_SIGNATURE');
    t.equal(await outcomeOf(b, scratch, key), 'ok', 'B with its own signature verifies');
  });

  t.test('duplicate JSON keys in a correctly signed manifest are E_MANIFEST', async (t) => {
    const text = encodeManifest(manifestFor(payload, key)).toString('utf8');
    const variants = [
      text.replace('"title":"Fix one"', '"title":"Harmless","title":"Fix one"'),
      text.replace('"source":{', '"source":{"size":1,'),
      text.replace('"removable":true', '"removable":false,"removable":true'),
    ];
    for (const variant of variants) {
      t.not(variant, text);
      const file = path.join(dir, 'dup.rvp');
      await fs.writeFile(file, await signedFile(Buffer.from(variant), payload, key));
      const patch = await PatchFile.open(file);
      t.throws(() => patch.verify(key.publicKey), { code: 'E_MANIFEST', message: /duplicate key/ });
      await patch.close();
    }
  });

  t.test('a correctly signed manifest that breaks the schema or the framing rules is E_MANIFEST', async (t) => {
    const base = manifestFor(payload, key);
    const raw = (value: unknown): Buffer => Buffer.from(JSON.stringify(value));
    const cases: Array<[string, Buffer]> = [
      ['not JSON', Buffer.from('{"format":1,')],
      ['JSON with a comment', Buffer.from(`${JSON.stringify(base)} // signed`)],
      ['a JSON array', raw([base])],
      ['an unknown property', raw({ ...base, extra: true })],
      ['id with a slash', raw({ ...base, id: 'a/b' })],
      ['severity unknown', raw({ ...base, severity: 'meh' })],
      ['a chunk digest missing', raw({ ...base, payload: { ...base.payload, chunks: base.payload.chunks.slice(1) } })],
      ['parent is itself', raw({ ...base, parent: base.id })],
      ['payload size not the header payload length', raw({ ...base, payload: { ...base.payload, size: payload.length - 1 } })],
      ['keyId of another key', raw({ ...base, keyId: stranger.keyId })],
      ['nesting deeper than 32', Buffer.from(`{"x":${'['.repeat(40)}${']'.repeat(40)}}`)],
      ['invalid UTF-8', Buffer.from([0x7b, 0x22, 0xc3, 0x28, 0x22, 0x3a, 0x31, 0x7d])],
    ];
    for (const [name, manifestBytes] of cases) {
      t.equal(await outcomeOf(await signedFile(manifestBytes, payload, key), scratch, key), 'E_MANIFEST', name);
    }
  });

  t.test('replacing the file after open changes nothing that was read', async (t) => {
    const file = path.join(dir, 'swapped.rvp');
    await fs.writeFile(file, good);
    const patch = await PatchFile.open(file);
    t.teardown(() => patch.close());
    const replacementPayload = crypto.randomBytes(payload.length);
    const replacement = await samplePatch(key, replacementPayload, { id: 'evil', title: 'Replacement' });
    const other = path.join(dir, 'replacement.rvp');
    await fs.writeFile(other, replacement);
    await fs.rename(other, file);
    t.same(await fs.readFile(file), replacement, 'the path now holds another file');

    const manifest = patch.verify(key.publicKey);
    t.equal(manifest.id, 'fix-1', 'the manifest is the one opened');
    const params = patch.applyParams('/l');
    const { read, bytesRead: n } = await pread(params.fd, payload.length, params.payloadOffset);
    t.equal(n, payload.length);
    t.same(read, payload, 'the payload read through the fd is the original');
    t.equal(params.payloadDigest, sha256(payload));

    await fs.unlink(file);
    t.same(patch.verify(key.publicKey).id, 'fix-1', 'still verifies after the path is gone');
  });

  t.test('a closed patch file refuses further use; close is idempotent', async (t) => {
    const file = path.join(dir, 'closed.rvp');
    await fs.writeFile(file, good);
    const patch = await PatchFile.open(file);
    patch.verify(key.publicKey);
    await patch.close();
    await patch.close();
    t.throws(() => patch.fd, { code: 'E_STATE' });
    t.throws(() => patch.manifest, { code: 'E_STATE' });
    t.throws(() => patch.verify(key.publicKey), { code: 'E_STATE' });
    t.throws(() => patch.parseUnverified(), { code: 'E_STATE' });
  });

  t.test('an empty payload is a valid patch file', async (t) => {
    const empty = Buffer.alloc(0);
    const bytes = await samplePatch(key, empty, {
      operationCount: 0,
      changedBlocks: 0,
      operations: {
        REPLACE: { count: 0, targetBlocks: 0, dataBytes: 0 },
        REPLACE_BROTLI: { count: 0, targetBlocks: 0, dataBytes: 0 },
        ZERO: { count: 0, targetBlocks: 0, dataBytes: 0 },
        COPY: { count: 0, targetBlocks: 0, dataBytes: 0 },
        DIFF: { count: 0, targetBlocks: 0, dataBytes: 0 },
      },
    });
    t.equal(await outcomeOf(bytes, scratch, key), 'ok');
  });
});
