/**
 * Tests that need real filesystems: the reflink export on a loop-mounted XFS,
 * and a disk that fills up while a layer is written. Both need root and loop
 * devices; where the machine has neither they are skipped with the reason.
 */
import t from 'tap';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import * as crypto from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { Device } from '../lib/device/device';
import { writeKeyPair } from '../lib/patch/keys';
import { createPatch } from '../lib/publisher/create';
import * as engine from '../lib/engine/engine';
import { addonBuilt, snapshot, stampedImage, tempDir, BLOCK } from './helpers';

const run = (cmd: string, args: string[]) => spawnSync(cmd, args, { encoding: 'utf8' });
const have = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;

/** Formats `image` with `mkfs` and loop-mounts it on `mnt`; a reason string when it cannot. */
async function loopMount(t: { teardown(fn: () => unknown): void }, image: string, size: number, mkfs: string[], mnt: string): Promise<string | null> {
  if (process.getuid?.() !== 0) return 'not root: loop mounts need root';
  if (!have(mkfs[0])) return `${mkfs[0]} is not installed`;
  await fs.writeFile(image, Buffer.alloc(0));
  await fs.truncate(image, size);
  const made = run(mkfs[0], [...mkfs.slice(1), image]);
  if (made.status !== 0) return `${mkfs[0]} failed: ${made.stderr.trim()}`;
  await fs.mkdir(mnt, { recursive: true });
  const mounted = run('mount', ['-o', 'loop', image, mnt]);
  if (mounted.status !== 0) return `loop mount failed: ${mounted.stderr.trim()}`;
  t.teardown(() => {
    run('umount', [mnt]);
  });
  return null;
}

if (!addonBuilt()) {
  t.skip('native addon not built (npm run build)', () => {});
} else {
  t.test('export reflinks the base on XFS and writes only the changed blocks', async (t) => {
    const dir = await tempDir(t);
    const mnt = path.join(dir, 'xfs');
    const why = await loopMount(t, path.join(dir, 'xfs.img'), 512 * 1024 * 1024, ['mkfs.xfs', '-q', '-f', '-m', 'reflink=1'], mnt);
    if (why) {
      t.skip(`reflink test skipped: ${why}`, () => {});
      return;
    }
    const blocks = 4096;
    const base = stampedImage(blocks, 'base');
    const next = Buffer.from(base);
    stampedImage(5, 'fix').copy(next, 1000 * BLOCK);
    await fs.writeFile(path.join(mnt, 'base.img'), base);
    await fs.writeFile(path.join(mnt, 'next.img'), next);
    const keys = await writeKeyPair(path.join(mnt, 'keys'));
    await createPatch({ from: path.join(mnt, 'base.img'), to: path.join(mnt, 'next.img'), keyPath: keys.secretKeyPath, id: 'x', out: path.join(mnt, 'x.rvp') });
    const device = await Device.init(path.join(mnt, 'state'), { volume: path.join(mnt, 'base.img'), trust: keys.publicKeyPath });
    await device.install(path.join(mnt, 'x.rvp'));
    await device.boot();
    const result = await device.export(path.join(mnt, 'out.img'), { mode: 'reflink' });
    t.equal(result.reflinked, true, 'the base was cloned');
    t.equal(result.bytesWritten, 5 * BLOCK, 'only the five changed blocks were written');
    t.ok((await fs.readFile(path.join(mnt, 'out.img'))).equals(next), 'the reflinked export reads the target');
    t.ok((await fs.readFile(path.join(mnt, 'base.img'))).equals(base), 'the base is untouched');
    const copied = await device.export(path.join(mnt, 'copy.img'), { mode: 'copy' });
    t.equal(copied.reflinked, false);
    t.ok((await fs.readFile(path.join(mnt, 'copy.img'))).equals(next));
  });

  t.test('reflink export where the filesystem cannot clone fails with E_UNSUPPORTED, auto falls back', async (t) => {
    const dir = await tempDir(t);
    const mnt = path.join(dir, 'ext4');
    const why = await loopMount(t, path.join(dir, 'ext4.img'), 64 * 1024 * 1024, ['mkfs.ext4', '-q', '-F'], mnt);
    if (why) {
      t.skip(`skipped: ${why}`, () => {});
      return;
    }
    const base = stampedImage(64, 'base');
    await fs.writeFile(path.join(mnt, 'base.img'), base);
    const keys = await writeKeyPair(path.join(mnt, 'keys'));
    const device = await Device.init(path.join(mnt, 'state'), { volume: path.join(mnt, 'base.img'), trust: keys.publicKeyPath });
    await t.rejects(device.export(path.join(mnt, 'out.img'), { mode: 'reflink' }), { code: 'E_UNSUPPORTED' });
    t.same((await fs.readdir(mnt)).sort(), ['base.img', 'keys', 'lost+found', 'state'], 'no temporary file left');
    const result = await device.export(path.join(mnt, 'out.img'));
    t.equal(result.reflinked, false);
    t.ok((await fs.readFile(path.join(mnt, 'out.img'))).equals(base));
  });

  t.test('the disk filling up while the layer is written fails with E_NO_SPACE and changes nothing', async (t) => {
    const dir = await tempDir(t);
    const mnt = path.join(dir, 'small');
    const why = await loopMount(t, path.join(dir, 'small.img'), 8 * 1024 * 1024, ['mkfs.ext4', '-q', '-F', '-m', '0'], mnt);
    if (why) {
      t.skip(`skipped: ${why}`, () => {});
      return;
    }
    // The base lives outside the small filesystem; only the state is on it.
    const blocks = 4096; // 16 MiB of incompressible data: its layer cannot fit in 8 MiB.
    const base = stampedImage(blocks, 'base');
    const next = crypto.randomBytes(blocks * BLOCK);
    await fs.writeFile(path.join(dir, 'base.img'), base);
    await fs.writeFile(path.join(dir, 'next.img'), next);
    const keys = await writeKeyPair(path.join(dir, 'keys'));
    const patch = path.join(dir, 'big.rvp');
    await createPatch({ from: path.join(dir, 'base.img'), to: path.join(dir, 'next.img'), keyPath: keys.secretKeyPath, id: 'big', out: patch });
    const state = path.join(mnt, 'state');
    const device = await Device.init(state, { volume: path.join(dir, 'base.img'), trust: keys.publicKeyPath });
    const before = await snapshot(state);
    await t.rejects(device.install(patch), { code: 'E_NO_SPACE' }, 'refused up front by the free-space check');
    t.same(await snapshot(state), before, 'state unchanged');
    await t.rejects(device.install(patch, { spaceCheck: false }), { code: 'E_NO_SPACE' }, 'ENOSPC while writing the layer');
    t.same(await snapshot(state), before, 'state unchanged after ENOSPC mid-write');
    t.equal((await engine.viewInfo(device.nextBootView())).digest, device.config.baseDigest);
  });
}
