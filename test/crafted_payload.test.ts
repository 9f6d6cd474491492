/**
 * Patches whose signature and chunk digests are valid but whose operations
 * are hostile or wrong: the publisher's key signed them, so only the
 * engine's own checks stand between them and the layer. Each must fail with
 * a stable code and leave the state directory exactly as it was.
 */
import t from 'tap';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import * as crypto from 'node:crypto';
import { Device } from '../lib/device/device';
import { writeKeyPair, readSecretKey } from '../lib/patch/keys';
import { createPatch } from '../lib/publisher/create';
import { encodeManifest, Manifest } from '../lib/patch/manifest';
import { encodeSignedHead } from '../lib/patch/patch_file';
import * as engine from '../lib/engine/engine';
import { addonBuilt, BLOCK, snapshot, stampedImage, tempDir } from './helpers';
import { TYPES, Op, payloadOf, sha } from './payload_builder';


if (!addonBuilt()) {
  t.skip('native addon not built (npm run build)', () => {});
} else {
  t.test('signed but hostile operations are refused and change nothing', async (t) => {
    const dir = await tempDir(t);
    const blocks = 64;
    const base = stampedImage(blocks, 'base');
    const next = Buffer.from(base);
    stampedImage(1, 'new').copy(next, 3 * BLOCK);
    await fs.writeFile(path.join(dir, 'base.img'), base);
    await fs.writeFile(path.join(dir, 'next.img'), next);
    const keys = await writeKeyPair(path.join(dir, 'keys'));
    const secret = await readSecretKey(keys.secretKeyPath);
    const good = await createPatch({ from: path.join(dir, 'base.img'), to: path.join(dir, 'next.img'), keyPath: keys.secretKeyPath, id: 'good', out: path.join(dir, 'good.rvp') });
    const state = path.join(dir, 'state');
    const device = await Device.init(state, { volume: path.join(dir, 'base.img'), trust: keys.publicKeyPath });
    const before = await snapshot(state);

    const block = (i: number, image = base) => image.subarray(i * BLOCK, (i + 1) * BLOCK);
    const newBlock = block(3, next);
    const zero = (dst: Array<[number, number]>): Op => ({ type: TYPES.ZERO, dst, dstHash: sha(Buffer.alloc(dst.reduce((n, [, c]) => n + c, 0) * BLOCK)) });
    const replace = (dst: Array<[number, number]>, data: Buffer): Op => ({ type: TYPES.REPLACE, dst, data, dstHash: sha(data) });

    let counter = 0;
    const craft = async (ops: Op[], override: Partial<Manifest> = {}): Promise<string> => {
      const { payload, fields } = payloadOf(ops);
      const manifest: Manifest = {
        ...good.manifest,
        id: `crafted-${++counter}`,
        operationCount: ops.length,
        payload: fields,
        ...override,
      };
      const head = await encodeSignedHead(encodeManifest(manifest), payload.length, secret.secretKey);
      const file = path.join(dir, `${manifest.id}.rvp`);
      await fs.writeFile(file, Buffer.concat([head, payload]));
      return file;
    };

    const cases: Array<[string, Op[], string, Partial<Manifest>?]> = [
      ['a target extent past the end of the volume', [replace([[blocks, 1]], newBlock)], 'E_BAD_EXTENT'],
      ['a target extent that wraps around 2^64', [{ type: TYPES.ZERO, dst: [[0xffffffffffffffffn, 2]] }], 'E_BAD_EXTENT'],
      ['a source extent past the end of the volume', [{ type: TYPES.COPY, src: [[blocks - 1, 2]], dst: [[0, 2]] }], 'E_BAD_EXTENT'],
      ['an empty extent', [{ type: TYPES.ZERO, dst: [[5, 0]] }], 'E_BAD_EXTENT'],
      ['overlapping target extents in one operation', [{ type: TYPES.ZERO, dst: [[4, 4], [6, 2]] }], 'E_BAD_EXTENT'],
      ['two operations writing the same block', [zero([[4, 2]]), zero([[5, 1]])], 'E_BAD_EXTENT'],
      ['an absurd number of extents', [{ type: TYPES.ZERO, dst: [[1, 1]], dstCount: 0x7fffffff }], 'E_BAD_EXTENT'],
      ['a block count near 2^31', [{ type: TYPES.ZERO, dst: [[0, 0x80000000]] }], 'E_BAD_EXTENT'],
      ['a block count near 2^32', [{ type: TYPES.ZERO, dst: [[0, 0xffffffff]] }], 'E_BAD_EXTENT'],
      ['a data length near 2^31', [{ ...replace([[3, 1]], newBlock), dataLength: 0x80000000 }], 'E_TOO_LARGE'],
      ['a data length near 2^32', [{ ...replace([[3, 1]], newBlock), dataLength: 0xffffffff }], 'E_TOO_LARGE'],
      ['a data length near 2^64', [{ ...replace([[3, 1]], newBlock), dataLength: 0xfffffffffffffff0n }], 'E_TOO_LARGE'],
      ['an unknown operation type', [{ type: 9, dst: [[3, 1]] }], 'E_UNSUPPORTED'],
      ['source blocks other than the patch expects', [{ type: TYPES.COPY, src: [[0, 1]], dst: [[3, 1]], srcHash: sha(newBlock), dstHash: sha(block(0)) }], 'E_BASE_MISMATCH'],
      ['computed bytes that do not match their hash', [{ type: TYPES.COPY, src: [[0, 1]], dst: [[3, 1]], srcHash: sha(block(0)), dstHash: sha(newBlock) }], 'E_HASH_MISMATCH'],
      // A raw REPLACE's output is its chunk-checked data: its dstHash is not
      // hashed again, the signed target digest decides (engine executor.h).
      ['replaced bytes that are not the target, with a matching dstHash', [replace([[3, 1]], block(4))], 'E_HASH_MISMATCH'],
      ['more operations promised than the payload holds', [replace([[3, 1]], newBlock)], 'E_CORRUPT', { operationCount: 2 }],
      ['a result that is not the signed target view', [replace([[3, 1]], newBlock)], 'E_HASH_MISMATCH', { target: { size: base.length, digest: 'ab'.repeat(32) } }],
    ];
    for (const [name, ops, code, override] of cases) {
      const file = await craft(ops, override);
      await t.rejects(device.install(file), { code }, name);
      t.same(await snapshot(state), before, `${name}: state unchanged`);
    }
    t.equal((await engine.viewInfo(device.nextBootView())).digest, device.config.baseDigest);
    const fine = await craft([replace([[3, 1]], newBlock)], { changedBlocks: 1 });
    await device.install(fine);
    await device.boot();
    t.ok((await engine.readView(device.bootedView(), 0, base.length)).equals(next), 'the crafted but honest patch applies');
  });

  t.test('a flipped payload byte is caught before anything is written', async (t) => {
    const dir = await tempDir(t);
    const base = stampedImage(64, 'base');
    const next = Buffer.from(base);
    crypto.randomBytes(8 * BLOCK).copy(next, 16 * BLOCK);
    await fs.writeFile(path.join(dir, 'base.img'), base);
    await fs.writeFile(path.join(dir, 'next.img'), next);
    const keys = await writeKeyPair(path.join(dir, 'keys'));
    const good = path.join(dir, 'good.rvp');
    const created = await createPatch({ from: path.join(dir, 'base.img'), to: path.join(dir, 'next.img'), keyPath: keys.secretKeyPath, id: 'p', out: good });
    const state = path.join(dir, 'state');
    const device = await Device.init(state, { volume: path.join(dir, 'base.img'), trust: keys.publicKeyPath });
    const before = await snapshot(state);
    const bytes = await fs.readFile(good);
    const payloadStart = bytes.length - created.manifest.payload.size;
    const positions = new Set<number>([payloadStart, payloadStart + 1, payloadStart + 87, bytes.length - 1]);
    for (let i = 0; i < 24; i++) positions.add(payloadStart + Math.floor(Math.random() * created.manifest.payload.size));
    for (const pos of positions) {
      const bad = Buffer.from(bytes);
      bad[pos] ^= 0x40;
      const file = path.join(dir, 'bad.rvp');
      await fs.writeFile(file, bad);
      await t.rejects(device.install(file), { code: 'E_HASH_MISMATCH' }, `payload byte ${pos - payloadStart}`);
    }
    t.same(await snapshot(state), before, 'state unchanged after every flip');

    // Header, manifest and signature: refused before any payload byte is read.
    const head = new Set<number>();
    for (let i = 0; i < 64; i++) head.add(i);
    for (let i = payloadStart - 64; i < payloadStart; i++) head.add(i);
    for (let i = 64; i < payloadStart - 64; i += Math.max(1, Math.floor((payloadStart - 128) / 97))) head.add(i);
    for (const pos of head) {
      const bad = Buffer.from(bytes);
      bad[pos] ^= 0x01;
      const file = path.join(dir, 'bad.rvp');
      await fs.writeFile(file, bad);
      const err = await device.install(file).then(
        () => null,
        (e: { code?: string }) => e,
      );
      t.ok(err && ['E_FORMAT', 'E_UNSUPPORTED', 'E_SIGNATURE'].includes(err.code as string), `byte ${pos}: ${err?.code}`);
    }
    const whole = async (name: string, data: Buffer, code: string) => {
      const file = path.join(dir, `${name}.rvp`);
      await fs.writeFile(file, data);
      await t.rejects(device.install(file), { code }, name);
    };
    await whole('empty', Buffer.alloc(0), 'E_FORMAT');
    await whole('random', crypto.randomBytes(bytes.length), 'E_FORMAT');
    for (const cut of [1, 63, 64, payloadStart - 1, payloadStart + 1, bytes.length - 1]) {
      await whole(`truncated-${cut}`, bytes.subarray(0, cut), 'E_FORMAT');
    }
    const other = await writeKeyPair(path.join(dir, 'other-keys'));
    await createPatch({ from: path.join(dir, 'base.img'), to: path.join(dir, 'next.img'), keyPath: other.secretKeyPath, id: 'p', out: path.join(dir, 'foreign.rvp') });
    await t.rejects(device.install(path.join(dir, 'foreign.rvp')), { code: 'E_SIGNATURE' }, 'signed by an unknown key');
    t.same(await snapshot(state), before, 'state unchanged after every refusal');
  });
}
