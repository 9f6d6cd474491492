/**
 * An install killed about half-way resumes from its checkpoint when the same
 * patch is installed again, writing only the rest.
 */
import t from 'tap';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import * as crypto from 'node:crypto';
import { spawn } from 'node:child_process';
import { Device } from '../lib/device/device';
import { writeKeyPair } from '../lib/patch/keys';
import { createPatch } from '../lib/publisher/create';
import type { ApplyResult } from '../lib/engine/engine';
import { addonBuilt, BLOCK, stampedImage, tempDir } from './helpers';

const CHILD = path.join(__dirname, 'fixtures', 'install_child.js');

/** Runs the install child and SIGKILLs it once its progress passes `fraction`. */
function killAt(state: string, patch: string, fraction: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CHILD, state, patch], { stdio: ['ignore', 'pipe', 'inherit'] });
    let last = 0;
    let buffered = '';
    child.stdout!.on('data', (d: Buffer) => {
      buffered += d.toString();
      const lines = buffered.split('\n');
      buffered = lines.pop() ?? '';
      for (const line of lines) {
        if (line === 'done') reject(new Error('the install finished before it could be killed'));
        const m = /^progress (.+)$/.exec(line);
        if (m) last = Number(m[1]);
        if (last >= fraction && child.exitCode === null) child.kill('SIGKILL');
      }
    });
    child.once('exit', (_code, signal) => (signal === 'SIGKILL' ? resolve(last) : reject(new Error(`child exited without being killed`))));
  });
}

if (!addonBuilt()) {
  t.skip('native addon not built (npm run build)', () => {});
} else {
  t.test('an install killed half-way resumes and writes only the rest', async (t) => {
    const dir = await tempDir(t);
    const blocks = 16384; // 64 MiB, every block changed and incompressible
    const base = stampedImage(blocks, 'base');
    const next = crypto.randomBytes(blocks * BLOCK);
    await fs.writeFile(path.join(dir, 'base.img'), base);
    await fs.writeFile(path.join(dir, 'next.img'), next);
    const keys = await writeKeyPair(path.join(dir, 'keys'));
    const patch = path.join(dir, 'big.rvp');
    await createPatch({ from: path.join(dir, 'base.img'), to: path.join(dir, 'next.img'), keyPath: keys.secretKeyPath, id: 'big', out: patch });
    const state = path.join(dir, 'state');
    await Device.init(state, { volume: path.join(dir, 'base.img'), trust: keys.publicKeyPath });

    const at = await killAt(state, patch, 0.5);
    t.ok(at >= 0.5 && at < 1, `killed at ${(at * 100).toFixed(0)}% of the payload`);
    const left = await fs.readdir(path.join(state, 'layers'));
    t.ok(left.some((n) => n.endsWith('.checkpoint')), 'the interrupted install left a checkpoint');

    const device = await Device.open(state);
    let applied: ApplyResult | undefined;
    await device.install(patch, { onApplied: (r) => (applied = r) });
    t.ok(applied, 'the apply reported its result');
    const r = applied as ApplyResult;
    t.equal(r.resumed, true, 'resumed from the checkpoint');
    t.ok(r.resumedFromOperation > 0, `resumed at operation ${r.resumedFromOperation} of ${r.operations}`);
    // Every operation of this patch replaces the same number of blocks, and
    // a checkpoint is taken at an operation boundary every 8 MiB or more.
    const perOperation = blocks / r.operations;
    t.equal(r.blocksWrittenThisRun, blocks - r.resumedFromOperation * perOperation, `the second run wrote only the ${r.blocksWrittenThisRun} blocks after the checkpoint`);
    t.ok(r.resumedFromOperation >= r.operations / 4, 'the checkpoint was at most a quarter of the payload behind the kill');
    t.equal(r.blocksWritten, blocks, 'all blocks are in the layer');
    t.same((await fs.readdir(path.join(state, 'layers'))).filter((n) => n.endsWith('.checkpoint')), [], 'the checkpoint is gone');
    await device.boot();
    const out = path.join(dir, 'out.img');
    await device.export(out);
    t.ok((await fs.readFile(out)).equals(next), 'the resumed install gives exactly the target');
  });

  t.test('a checkpoint of another patch does not survive the next install', async (t) => {
    const dir = await tempDir(t);
    const blocks = 8192;
    const base = stampedImage(blocks, 'base');
    await fs.writeFile(path.join(dir, 'base.img'), base);
    await fs.writeFile(path.join(dir, 'a.img'), crypto.randomBytes(blocks * BLOCK));
    const small = Buffer.from(base);
    stampedImage(1, 'b').copy(small, 0);
    await fs.writeFile(path.join(dir, 'b.img'), small);
    const keys = await writeKeyPair(path.join(dir, 'keys'));
    const a = path.join(dir, 'a.rvp');
    const b = path.join(dir, 'b.rvp');
    await createPatch({ from: path.join(dir, 'base.img'), to: path.join(dir, 'a.img'), keyPath: keys.secretKeyPath, id: 'a', out: a });
    await createPatch({ from: path.join(dir, 'base.img'), to: path.join(dir, 'b.img'), keyPath: keys.secretKeyPath, id: 'b', out: b });
    const state = path.join(dir, 'state');
    await Device.init(state, { volume: path.join(dir, 'base.img'), trust: keys.publicKeyPath });
    await killAt(state, a, 0.5);
    const device = await Device.open(state);
    await device.install(b);
    await device.boot();
    t.equal((await fs.readdir(path.join(state, 'layers'))).filter((n) => n.startsWith('a.')).length, 2, 'a newest interrupted install is kept for resuming');
    await device.remove('b');
    await device.boot();
    await device.install(a);
    await device.boot();
    t.same((await fs.readdir(path.join(state, 'layers'))).filter((n) => n.endsWith('.checkpoint')), [], 'resumed and cleaned up');
  });
}
