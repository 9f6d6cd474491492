import t from 'tap';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { Device } from '../lib/device/device';
import { writeKeyPair } from '../lib/patch/keys';
import { createPatch } from '../lib/publisher/create';
import * as engine from '../lib/engine/engine';
import { addonBuilt, BLOCK, snapshot, stampedImage, tempDir } from './helpers';

if (!addonBuilt()) {
  t.skip('native addon not built (npm run build)', () => {});
} else {
  const BLOCKS = 256;

  /** base -> v1 (rewrites, zeros, a moved run) -> v2 (more rewrites, grows by 8 blocks). */
  const images = () => {
    const base = stampedImage(BLOCKS, 'base');
    const v1 = Buffer.from(base);
    stampedImage(4, 'v1').copy(v1, 10 * BLOCK);
    v1.fill(0, 50 * BLOCK, 52 * BLOCK);
    base.copy(v1, 200 * BLOCK, 20 * BLOCK, 28 * BLOCK);
    v1.write('a small in-place edit', 120 * BLOCK + 77);
    const v2 = Buffer.concat([v1, stampedImage(8, 'v2-tail')]);
    stampedImage(2, 'v2').copy(v2, 30 * BLOCK);
    return { base, v1, v2 };
  };

  interface Fixture {
    dir: string;
    state: string;
    key: string;
    pub: string;
    files: Record<string, string>;
    bytes: ReturnType<typeof images>;
    device: Device;
    exported(): Promise<Buffer>;
    patch(id: string, from: string, to: string, extra?: { parent?: string; version?: number }): Promise<string>;
  }

  const setup = async (t: { teardown(fn: () => unknown): void }): Promise<Fixture> => {
    const dir = await tempDir(t);
    const bytes = images();
    const files: Record<string, string> = {};
    for (const [name, data] of Object.entries(bytes)) {
      files[name] = path.join(dir, `${name}.img`);
      await fs.writeFile(files[name], data);
    }
    const keys = await writeKeyPair(path.join(dir, 'keys'));
    const state = path.join(dir, 'state');
    const device = await Device.init(state, { volume: files.base, trust: keys.publicKeyPath });
    const fixture: Fixture = {
      dir,
      state,
      key: keys.secretKeyPath,
      pub: keys.publicKeyPath,
      files,
      bytes,
      device,
      async exported() {
        const out = path.join(dir, `export-${Date.now()}-${Math.random()}.img`);
        await device.export(out);
        const data = await fs.readFile(out);
        await fs.rm(out);
        return data;
      },
      async patch(id, from, to, extra = {}) {
        const out = path.join(dir, `${id}.rvp`);
        await createPatch({ from: files[from], to: files[to], keyPath: keys.secretKeyPath, id, out, ...extra });
        return out;
      },
    };
    return fixture;
  };

  const states = (d: Device) => Object.fromEntries(d.list().map((p) => [p.id, p.state]));

  t.test('install stages a patch and changes nothing the system sees', async (t) => {
    const f = await setup(t);
    const file = await f.patch('p1', 'base', 'v1');
    const patch = await f.device.install(file);
    t.equal(patch.state, 'staged');
    t.ok((await f.exported()).equals(f.bytes.base), 'booted view is still the base');
    const next = await engine.viewInfo(f.device.nextBootView());
    const target = await engine.hashImage(f.files.v1, BLOCK);
    t.equal(next.digest, target.digest, 'next-boot view digest is the target digest');
  });

  t.test('boot makes a staged patch trial and the view reads the target bytes', async (t) => {
    const f = await setup(t);
    await f.device.install(await f.patch('p1', 'base', 'v1'));
    const report = await f.device.boot();
    t.same(report.activated, ['p1']);
    t.same(states(f.device), { p1: 'trial' });
    t.equal(f.device.list()[0].bootAttempts, 0, 'no failed attempt yet');
    t.ok((await f.exported()).equals(f.bytes.v1), 'exported view equals the target image');
    const read = await engine.readView(f.device.bootedView(), 10 * BLOCK, 4 * BLOCK);
    t.ok(read.equals(f.bytes.v1.subarray(10 * BLOCK, 14 * BLOCK)), 'block reads go through the top layer');
  });

  t.test('confirm makes trial patches active', async (t) => {
    const f = await setup(t);
    await f.device.install(await f.patch('p1', 'base', 'v1'));
    await f.device.boot();
    t.same(await f.device.confirm(), ['p1']);
    t.same(states(f.device), { p1: 'active' });
    t.same(await f.device.confirm(), [], 'a second confirm has nothing to do');
  });

  t.test('remove then restart restores the base bytes and deletes the layer', async (t) => {
    const f = await setup(t);
    await f.device.install(await f.patch('p1', 'base', 'v1'));
    await f.device.boot();
    await f.device.confirm();
    const layer = f.device.list()[0].layer as string;
    await f.device.remove('p1');
    t.same(states(f.device), { p1: 'pending-removal' });
    t.ok((await f.exported()).equals(f.bytes.v1), 'still patched until the restart');
    const report = await f.device.boot();
    t.same(report.removed, ['p1']);
    t.same(states(f.device), { p1: 'removed' });
    t.ok((await f.exported()).equals(f.bytes.base), 'base bytes after the restart');
    t.notOk(await fs.stat(path.join(f.state, 'layers', layer)).catch(() => null), 'layer file is gone');
  });

  t.test('removing a staged patch takes it away at once', async (t) => {
    const f = await setup(t);
    await f.device.install(await f.patch('p1', 'base', 'v1'));
    await f.device.remove('p1');
    t.same(states(f.device), { p1: 'removed' });
    await f.device.boot();
    t.ok((await f.exported()).equals(f.bytes.base));
    t.same(await fs.readdir(path.join(f.state, 'layers')), []);
  });

  t.test('a trial patch not confirmed within 3 boots that reached the health check is rolled back as failed', async (t) => {
    const f = await setup(t);
    await f.device.install(await f.patch('p1', 'base', 'v1'));
    for (let boot = 1; boot <= 3; boot++) {
      await f.device.boot();
      t.same(states(f.device), { p1: 'trial' }, `boot ${boot}: still trial`);
      t.equal(f.device.list()[0].bootAttempts, boot - 1, 'attempts counted when the next boot settles them');
      t.same(await f.device.reached(), ['p1']);
    }
    const report = await f.device.boot();
    t.same(report.failed, ['p1']);
    t.same(states(f.device), { p1: 'failed' });
    t.match(f.device.list()[0].reason, /not confirmed within 3 boots/);
    t.ok((await f.exported()).equals(f.bytes.base), 'rolled back to the base');
  });

  t.test('power cuts during early boot do not burn the attempts of a good patch', async (t) => {
    const f = await setup(t);
    await f.device.install(await f.patch('p1', 'base', 'v1'));
    // Ten boots that each lose power before the health check starts.
    for (let boot = 1; boot <= 10; boot++) await f.device.boot();
    const p = f.device.list()[0];
    t.equal(p.state, 'trial', 'still on trial after 9 early power cuts');
    t.equal(p.bootAttempts, 0, 'no attempt burned');
    t.equal(p.earlyBoots, 9);
    await f.device.reached();
    t.same(await f.device.confirm(), ['p1'], 'the boot that gets through confirms it');
    t.ok((await f.exported()).equals(f.bytes.v1));
  });

  t.test('a patch that never lets the system reach its health check is rolled back', async (t) => {
    const f = await setup(t);
    await f.device.install(await f.patch('p1', 'base', 'v1'));
    for (let boot = 1; boot <= 10; boot++) await f.device.boot();
    t.same(states(f.device), { p1: 'trial' });
    const report = await f.device.boot();
    t.same(report.failed, ['p1'], 'the eleventh boot gives up on it');
    t.match(f.device.list()[0].reason, /10 boots ended before the health check/);
    t.ok((await f.exported()).equals(f.bytes.base));
  });

  t.test('the boot-attempt limits are configurable', async (t) => {
    const dir = await tempDir(t);
    const base = path.join(dir, 'base.img');
    const v1 = path.join(dir, 'v1.img');
    const { base: b, v1: one } = images();
    await fs.writeFile(base, b);
    await fs.writeFile(v1, one);
    const keys = await writeKeyPair(path.join(dir, 'keys'));
    const device = await Device.init(path.join(dir, 'state'), { volume: base, trust: keys.publicKeyPath, maxBootAttempts: 1, maxEarlyBoots: 2 });
    await createPatch({ from: base, to: v1, keyPath: keys.secretKeyPath, id: 'p1', out: path.join(dir, 'p1.rvp') });
    await device.install(path.join(dir, 'p1.rvp'));
    await device.boot();
    await device.reached();
    await device.boot();
    t.same(states(device), { p1: 'failed' }, 'one reached boot without confirm');
    await createPatch({ from: base, to: v1, keyPath: keys.secretKeyPath, id: 'p2', out: path.join(dir, 'p2.rvp') });
    await device.install(path.join(dir, 'p2.rvp'));
    await device.boot();
    await device.boot();
    t.equal(device.list()[1].state, 'trial', 'one early boot is survived');
    await device.boot();
    t.equal(device.list()[1].state, 'failed', 'the second early boot is not');
  });

  t.test('stacked patches apply in order and removing the lower one removes both', async (t) => {
    const f = await setup(t);
    await f.device.install(await f.patch('p1', 'base', 'v1'));
    await f.device.install(await f.patch('p2', 'v1', 'v2', { parent: 'p1' }));
    await f.device.boot();
    await f.device.confirm();
    t.same(states(f.device), { p1: 'active', p2: 'active' });
    t.ok((await f.exported()).equals(f.bytes.v2), 'view is v2 (grown by 8 blocks)');
    const changed = await f.device.remove('p1');
    t.same(changed.map((p) => p.id), ['p1', 'p2']);
    await f.device.boot();
    t.same(states(f.device), { p1: 'removed', p2: 'removed' });
    t.ok((await f.exported()).equals(f.bytes.base));
  });

  t.test('removing the upper patch keeps the lower one', async (t) => {
    const f = await setup(t);
    await f.device.install(await f.patch('p1', 'base', 'v1'));
    await f.device.install(await f.patch('p2', 'v1', 'v2', { parent: 'p1' }));
    await f.device.boot();
    await f.device.remove('p2');
    await f.device.boot();
    t.same(states(f.device), { p1: 'trial', p2: 'removed' });
    t.ok((await f.exported()).equals(f.bytes.v1), 'shrinks back to v1');
  });

  t.test('a failed lower patch rolls back the patches stacked on it', async (t) => {
    const f = await setup(t);
    await f.device.install(await f.patch('p1', 'base', 'v1'));
    await f.device.install(await f.patch('p2', 'v1', 'v2', { parent: 'p1' }));
    for (let i = 0; i < 4; i++) {
      await f.device.boot();
      await f.device.reached();
    }
    t.same(states(f.device), { p1: 'failed', p2: 'failed' });
    t.ok((await f.exported()).equals(f.bytes.base));
  });

  t.test('a patch can be installed while another waits for removal', async (t) => {
    const f = await setup(t);
    await f.device.install(await f.patch('p1', 'base', 'v1'));
    await f.device.boot();
    await f.device.confirm();
    await f.device.remove('p1');
    await f.device.install(await f.patch('p1b', 'base', 'v1', { version: 2 }));
    t.ok((await f.exported()).equals(f.bytes.v1), 'the booted view still has p1');
    await f.device.boot();
    t.same(states(f.device), { p1: 'removed', p1b: 'trial' });
    t.ok((await f.exported()).equals(f.bytes.v1));
  });

  t.test('anti-rollback refuses an older version for the same parent', async (t) => {
    const f = await setup(t);
    await f.device.install(await f.patch('fix-v2', 'base', 'v1', { version: 2 }));
    await f.device.boot();
    await f.device.confirm();
    await f.device.remove('fix-v2');
    await f.device.boot();
    const old = await f.patch('fix-v1', 'base', 'v1', { version: 1 });
    const before = await snapshot(f.state);
    await t.rejects(f.device.install(old), { code: 'E_ROLLBACK' });
    t.same(await snapshot(f.state), before, 'state directory unchanged');
    await f.device.install(await f.patch('fix-v2-again', 'base', 'v1', { version: 2 }));
    t.pass('the same version installs again');
  });

  t.test('refusals leave the state directory byte for byte unchanged', async (t) => {
    const f = await setup(t);
    const p2 = await f.patch('p2', 'v1', 'v2', { parent: 'p1' });
    const wrongBase = await f.patch('p-wrong', 'v1', 'v2');
    const p1 = await f.patch('p1', 'base', 'v1');
    const before = await snapshot(f.state);
    await t.rejects(f.device.install(p2), { code: 'E_PARENT_MISSING' }, 'parent not installed');
    await t.rejects(f.device.install(wrongBase), { code: 'E_BASE_MISMATCH' }, 'made for another base');
    await t.rejects(f.device.install(path.join(f.dir, 'missing.rvp')), { code: 'E_NOT_FOUND' }, 'missing file');
    await t.rejects(f.device.remove('nope'), { code: 'E_UNKNOWN_PATCH' }, 'unknown id to remove');
    t.same(await snapshot(f.state), before);
    await f.device.install(p1);
    const staged = await snapshot(f.state);
    await t.rejects(f.device.install(p1), { code: 'E_EXISTS' }, 'already installed');
    t.same(await snapshot(f.state), staged);
  });

  t.test('an unsealed layer left by an interrupted install is collected', async (t) => {
    const f = await setup(t);
    await f.device.install(await f.patch('p1', 'base', 'v1'));
    const layer = path.join(f.state, 'layers', f.device.list()[0].layer as string);
    const bytes = await fs.readFile(layer);
    const torn = path.join(f.state, 'layers', 'p2.0123456789ab.layer');
    await fs.writeFile(torn, bytes.subarray(0, Math.floor(bytes.length / 2)));
    t.equal(await engine.isSealedLayer(torn), false, 'a half-written layer is not sealed');
    t.equal(await engine.isSealedLayer(layer), true);
    const report = await f.device.boot();
    t.same(report.collected, [], 'collected before the boot transition');
    t.notOk(await fs.stat(torn).catch(() => null), 'the torn layer is gone');
    t.ok(await fs.stat(layer), 'the live layer stays');
    t.ok((await f.exported()).equals(f.bytes.v1));
  });

  t.test('a second device over a record reads the same state', async (t) => {
    const f = await setup(t);
    await f.device.install(await f.patch('p1', 'base', 'v1'));
    await f.device.boot();
    const again = await Device.open(f.state);
    t.same(states(again), { p1: 'trial' });
    await t.rejects(Device.open(path.join(f.dir, 'nothing')), { code: 'E_NOT_INITIALIZED' });
    await t.rejects(Device.init(f.state, { volume: f.files.base, trust: f.pub }), { code: 'E_EXISTS' });
  });
}
