/**
 * A 64 GiB volume (sparse, so it costs no disk): byte offsets past 2^32 and
 * 2^36, a patch that writes near the end and grows the volume, and the O(1)
 * fit check. The patch is built by hand because making one from two 64 GiB
 * images would read 128 GiB.
 */
import t from 'tap';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { Device } from '../lib/device/device';
import { writeKeyPair, readSecretKey } from '../lib/patch/keys';
import { encodeManifest, Manifest } from '../lib/patch/manifest';
import { encodeSignedHead } from '../lib/patch/patch_file';
import * as engine from '../lib/engine/engine';
import { addonBuilt, BLOCK, stampedImage, tempDir } from './helpers';
import { TYPES, payloadOf, sha } from './payload_builder';

const GiB = 1024 ** 3;
const SIZE = 64 * GiB;

async function writeAt(file: string, offset: number, data: Buffer): Promise<void> {
  const handle = await fs.open(file, 'r+');
  try {
    await handle.write(data, 0, data.length, offset);
  } finally {
    await handle.close();
  }
}

if (!addonBuilt()) {
  t.skip('native addon not built (npm run build)', () => {});
} else {
  t.test('a 64 GiB volume takes a patch that writes past 2^32 bytes and grows it', async (t) => {
    const dir = await tempDir(t);
    const base = path.join(dir, 'base.img');
    const target = path.join(dir, 'target.img');
    await fs.writeFile(base, Buffer.alloc(0));
    await fs.truncate(base, SIZE);
    const marks = [0, 5 * GiB + 3 * BLOCK, 40 * GiB, SIZE - BLOCK];
    for (const [i, off] of marks.entries()) await writeAt(base, off, stampedImage(1, `base-${i}`));

    // The target: two blocks rewritten past 2^32 and 2^35 bytes, one near the end, and 8 KiB more.
    const writes: Array<[number, Buffer]> = [
      [5 * GiB + 3 * BLOCK, stampedImage(1, 'fix-a')],
      [40 * GiB, stampedImage(1, 'fix-b')],
      [SIZE - BLOCK, stampedImage(1, 'fix-c')],
      [SIZE, stampedImage(2, 'grown')],
    ];
    await fs.writeFile(target, Buffer.alloc(0));
    await fs.truncate(target, SIZE + 2 * BLOCK);
    for (const [i, off] of marks.entries()) await writeAt(target, off, stampedImage(1, `base-${i}`));
    for (const [off, data] of writes) await writeAt(target, off, data);
    const source = await engine.hashImage(base, BLOCK);
    const wanted = await engine.hashImage(target, BLOCK);
    t.equal(source.size, SIZE);
    t.equal(wanted.size, SIZE + 2 * BLOCK);

    const ops = writes.map(([off, data]) => ({ type: TYPES.REPLACE, dst: [[off / BLOCK, data.length / BLOCK] as [number, number]], data, dstHash: sha(data) }));
    const { payload, fields } = payloadOf(ops);
    const keys = await writeKeyPair(path.join(dir, 'keys'));
    const secret = await readSecretKey(keys.secretKeyPath);
    const none = { count: 0, targetBlocks: 0, dataBytes: 0 };
    const manifest: Manifest = {
      format: 1,
      id: 'big-fix',
      version: 1,
      title: 'fix on a 64 GiB volume',
      severity: 'high',
      parent: null,
      blockSize: BLOCK,
      source: { size: source.size, digest: source.digest },
      target: { size: wanted.size, digest: wanted.digest },
      operationCount: ops.length,
      changedBlocks: 5,
      operations: { REPLACE: { count: 4, targetBlocks: 5, dataBytes: 5 * BLOCK }, REPLACE_BROTLI: none, ZERO: none, COPY: none, DIFF: none },
      payload: fields,
      removable: true,
      created: new Date().toISOString(),
      expires: null,
      keyId: keys.keyId,
    };
    const file = path.join(dir, 'big.rvp');
    await fs.writeFile(file, Buffer.concat([await encodeSignedHead(encodeManifest(manifest), payload.length, secret.secretKey), payload]));

    const device = await Device.init(path.join(dir, 'state'), { volume: base, trust: keys.publicKeyPath });
    t.equal(device.config.baseDigest, source.digest);
    await device.install(file);
    await device.boot();
    const view = device.bootedView();
    const info = await engine.viewInfo(view);
    t.equal(info.size, SIZE + 2 * BLOCK, 'the view grew');
    t.equal(info.digest, wanted.digest, 'the view digest is the target digest');
    for (const [off, data] of writes) {
      t.ok((await engine.readView(view, off, data.length)).equals(data), `bytes at ${off} are the patched ones`);
    }
    t.ok((await engine.readView(view, 0, BLOCK)).equals(stampedImage(1, 'base-0')), 'untouched block 0 reads from the base');
    t.ok((await engine.readView(view, 5 * GiB + 2 * BLOCK, BLOCK)).equals(Buffer.alloc(BLOCK)), 'a hole next to a patched block reads zeros');
    await device.remove('big-fix');
    await device.boot();
    t.equal((await engine.viewInfo(device.bootedView())).digest, source.digest, 'removed: the base again');
  });
}
