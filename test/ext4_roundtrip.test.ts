import t from 'tap';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { Device } from '../lib/device/device';
import { writeKeyPair } from '../lib/patch/keys';
import { createPatch } from '../lib/publisher/create';
import { addonBuilt, tempDir } from './helpers';

const have = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;

if (!addonBuilt()) {
  t.skip('native addon not built (npm run build)', () => {});
} else if (!have('mke2fs') || !have('e2fsck')) {
  t.skip('mke2fs/e2fsck not installed (apt-get install e2fsprogs)', () => {});
} else {
  const mkfs = (tree: string, image: string) => {
    const r = spawnSync('mke2fs', ['-q', '-F', '-t', 'ext4', '-b', '4096', '-U', '6b1c8f0e-6a43-4d4e-9d0a-3c2f8e1a7b55',
      '-E', 'hash_seed=2f6a4c1e-0d3b-4f59-8e7a-1b2c3d4e5f60', '-d', tree, image, '24M'], {
      encoding: 'utf8',
      env: { ...process.env, E2FSPROGS_FAKE_TIME: '1700000000' },
    });
    if (r.status !== 0) throw new Error(`mke2fs failed: ${r.stderr}`);
  };
  const fsck = (image: string) => spawnSync('e2fsck', ['-fn', image], { encoding: 'utf8' });

  t.test('a real ext4 image pair: patched export is the target and clean, removal gives the base back', async (t) => {
    const dir = await tempDir(t);
    const tree1 = path.join(dir, 'tree1');
    const tree2 = path.join(dir, 'tree2');
    for (const tree of [tree1, tree2]) {
      await fs.mkdir(path.join(tree, 'usr', 'lib', 'pkg'), { recursive: true });
      await fs.mkdir(path.join(tree, 'etc'), { recursive: true });
      await fs.writeFile(path.join(tree, 'etc', 'os-release'), 'NAME=sample\nVERSION=1\n');
      for (let i = 0; i < 40; i++) {
        await fs.writeFile(path.join(tree, 'usr', 'lib', `lib${i}.so`), Buffer.alloc(64 * 1024, `library ${i} `));
      }
    }
    await fs.writeFile(path.join(tree2, 'usr', 'lib', 'lib7.so'), Buffer.alloc(64 * 1024, 'library 7 patched '));
    await fs.writeFile(path.join(tree2, 'usr', 'lib', 'pkg', 'fix.conf'), 'mitigation=on\n');
    await fs.writeFile(path.join(tree2, 'etc', 'os-release'), 'NAME=sample\nVERSION=1 (a)\n');
    const base = path.join(dir, 'base.img');
    const target = path.join(dir, 'target.img');
    mkfs(tree1, base);
    mkfs(tree2, target);
    t.equal(fsck(target).status, 0, 'the target itself is clean');

    const keys = await writeKeyPair(path.join(dir, 'keys'));
    const patch = path.join(dir, 'fix.rvp');
    const created = await createPatch({ from: base, to: target, keyPath: keys.secretKeyPath, id: 'ext4-fix', out: patch });
    t.ok(created.size < (await fs.stat(target)).size / 4, `patch (${created.size} bytes) is much smaller than the image`);

    const device = await Device.init(path.join(dir, 'state'), { volume: base, trust: keys.publicKeyPath });
    await device.install(patch);
    await device.boot();
    await device.confirm();
    const exported = path.join(dir, 'exported.img');
    await device.export(exported);
    t.ok((await fs.readFile(exported)).equals(await fs.readFile(target)), 'exported image equals the target byte for byte');
    const check = fsck(exported);
    t.equal(check.status, 0, `e2fsck -fn is clean: ${check.stdout}${check.stderr}`);

    await device.remove('ext4-fix');
    await device.boot();
    await device.export(exported);
    t.ok((await fs.readFile(exported)).equals(await fs.readFile(base)), 'after remove + restart the export equals the base');
  });
}
