/**
 * One writer at a time: a second process gets E_BUSY at once (or waits when
 * told to), a lock left by a killed process does not block, and processes
 * racing on one state directory never corrupt it.
 */
import t from 'tap';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { Device } from '../lib/device/device';
import { writeKeyPair } from '../lib/patch/keys';
import { createPatch } from '../lib/publisher/create';
import { StateLock } from '../lib/engine/lock';
import { addonBuilt, BLOCK, CLI, exited, holdLock, runCli, snapshot, stampedImage, tempDir } from './helpers';

if (!addonBuilt()) {
  t.skip('native addon not built (npm run build)', () => {});
} else {
  const setup = async (t: { teardown(fn: () => unknown): void }) => {
    const dir = await tempDir(t);
    const base = stampedImage(64, 'base');
    const next = Buffer.from(base);
    stampedImage(2, 'fix').copy(next, 9 * BLOCK);
    await fs.writeFile(path.join(dir, 'base.img'), base);
    await fs.writeFile(path.join(dir, 'next.img'), next);
    const keys = await writeKeyPair(path.join(dir, 'keys'));
    const patch = path.join(dir, 'fix.rvp');
    await createPatch({ from: path.join(dir, 'base.img'), to: path.join(dir, 'next.img'), keyPath: keys.secretKeyPath, id: 'fix', out: patch });
    const state = path.join(dir, 'state');
    await Device.init(state, { volume: path.join(dir, 'base.img'), trust: keys.publicKeyPath });
    return { dir, state, patch };
  };

  t.test('a second writer gets E_BUSY promptly and changes nothing', async (t) => {
    const { state, patch } = await setup(t);
    // The holder keeps the lock far longer than a loaded machine takes to start the CLI.
    const holder = await holdLock(state, 60_000);
    t.teardown(() => holder.kill('SIGKILL'));
    const before = await snapshot(state);
    delete before['lock'];
    const started = Date.now();
    const r = runCli(['--state', state, 'install', patch]);
    t.equal(r.code, 1);
    t.match(r.stderr, /^error E_BUSY: another revpatch process \(pid \d+\)/m);
    t.ok(Date.now() - started < 30_000, 'promptly, without waiting for the holder');
    const after = await snapshot(state);
    delete after['lock'];
    t.same(after, before, 'state unchanged');
    t.match(JSON.parse(runCli(['--state', state, 'list', '--json']).stdout), [], 'readers are not blocked');
  });

  t.test('--wait waits for the holder to finish', async (t) => {
    const { state, patch } = await setup(t);
    const holder = await holdLock(state, 800);
    t.teardown(() => holder.kill('SIGKILL'));
    const r = runCli(['--state', state, '--wait', '10', 'install', patch]);
    t.equal(r.code, 0, r.stderr);
    await exited(holder);
  });

  t.test('a lock left by a killed process does not block', async (t) => {
    const { state, patch } = await setup(t);
    const holder = await holdLock(state, 60000);
    holder.kill('SIGKILL');
    await exited(holder);
    t.ok(await fs.stat(path.join(state, 'lock')), 'the dead holder left its lock file');
    const r = runCli(['--state', state, 'install', patch]);
    t.equal(r.code, 0, r.stderr);
    t.notOk(await fs.stat(path.join(state, 'lock')).catch(() => null), 'and it is gone after use');
  });

  t.test('acquires racing within one process take turns, and each claim is their own', async (t) => {
    const dir = await tempDir(t);
    let holders = 0;
    let most = 0;
    const worker = async () => {
      for (let round = 0; round < 10; round++) {
        const lock = await StateLock.acquire(dir, 60_000);
        most = Math.max(most, ++holders);
        await new Promise((resolve) => setImmediate(resolve));
        holders--;
        await lock.release();
      }
    };
    const settled = await Promise.allSettled(Array.from({ length: 8 }, worker));
    t.same(settled.filter((s) => s.status === 'rejected').map((s) => String((s as PromiseRejectedResult).reason)), [], 'no acquire failed');
    t.equal(most, 1, 'never two holders at once');
    t.same(await fs.readdir(dir), [], 'no claim or lock file is left behind');
  });

  t.test('acquires racing to take over one stale lock: one wins at a time', async (t) => {
    // A pid that surely does not run: a child that has exited.
    const child = spawn(process.execPath, ['-e', '0']);
    await exited(child);
    const dead = child.pid!;
    for (let round = 0; round < 20; round++) {
      const dir = await tempDir(t);
      await fs.writeFile(path.join(dir, 'lock'), `${dead}\n`);
      let holders = 0;
      let most = 0;
      const worker = async () => {
        const lock = await StateLock.acquire(dir, 60_000);
        most = Math.max(most, ++holders);
        for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
        holders--;
        await lock.release();
      };
      await Promise.all(Array.from({ length: 6 }, worker));
      t.equal(most, 1, `round ${round}: never two holders at once`);
      t.same(await fs.readdir(dir), [], `round ${round}: nothing left behind`);
    }
  });

  t.test('a lock file naming no process is taken over, and a release removes only its own lock', async (t) => {
    const dir = await tempDir(t);
    await fs.writeFile(path.join(dir, 'lock'), 'not a pid\n');
    const lock = await StateLock.acquire(dir);
    t.match(await fs.readFile(path.join(dir, 'lock'), 'utf8'), new RegExp(`^${process.pid} [0-9a-f]{16}\\n$`), 'this acquire holds it');
    // Another acquire's lock in its place (as after a misjudged takeover): not removed.
    await fs.writeFile(path.join(dir, 'lock'), `${process.pid} 0000000000000000\n`);
    await lock.release();
    t.ok(await fs.stat(path.join(dir, 'lock')), 'a lock that is not this one stays');
  });

  t.test('processes racing on one state directory never corrupt it', async (t) => {
    const { state, patch } = await setup(t);
    t.equal(runCli(['--state', state, 'install', patch]).code, 0);
    const race = (args: string[]) =>
      new Promise<{ code: number | null; stderr: string }>((resolve) => {
        const child = spawn(process.execPath, [CLI, '--state', state, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
        let stderr = '';
        child.stderr!.on('data', (d) => (stderr += d));
        child.once('exit', (code) => resolve({ code, stderr }));
      });
    let busy = 0;
    for (let round = 0; round < 8; round++) {
      const results = await Promise.all([race(['boot']), race(['reached']), race(['confirm']), race(['boot'])]);
      for (const r of results) {
        if (r.code !== 0) {
          t.match(r.stderr, /^error E_BUSY/m, 'the only failure is E_BUSY');
          busy++;
        }
      }
    }
    t.comment(`${busy} of 32 racing calls were refused with E_BUSY`);
    const list = JSON.parse(runCli(['--state', state, 'list', '--json']).stdout);
    t.equal(list.length, 1);
    t.ok(['trial', 'active', 'failed'].includes(list[0].state), `consistent state: ${list[0].state}`);
    t.equal(runCli(['--state', state, 'boot']).code, 0, 'the next call works');
  });
}
