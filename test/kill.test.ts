/**
 * Real crashes: a child process runs the lifecycle in a loop and is
 * SIGKILLed at a random moment, REVPATCH_KILLS times (300 by default;
 * `npm run soak` runs thousands). After each kill the device must open, its
 * booted view must read exactly the base or exactly the patched image, a
 * boot must succeed and leave the same guarantee, and an exported image must
 * be complete (old or new, never a mix).
 */
import t from 'tap';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import * as crypto from 'node:crypto';
import { spawn } from 'node:child_process';
import { Device } from '../lib/device/device';
import { writeKeyPair } from '../lib/patch/keys';
import { createPatch } from '../lib/publisher/create';
import * as engine from '../lib/engine/engine';
import { addonBuilt, BLOCK, stampedImage, tempDir } from './helpers';

const KILLS = Number(process.env.REVPATCH_KILLS ?? 300);
const CHILD = path.join(__dirname, 'fixtures', 'kill_child.js');

function runAndKill(args: string[], delayMs: number): Promise<{ killed: boolean; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CHILD, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    let killed = false;
    child.stderr!.on('data', (d) => (stderr += d));
    child.stdout!.once('data', () => {
      setTimeout(() => {
        killed = child.kill('SIGKILL');
      }, delayMs);
    });
    child.once('exit', () => resolve({ killed, stderr }));
  });
}

async function copyDir(from: string, to: string): Promise<void> {
  await fs.cp(from, to, { recursive: true });
}

if (!addonBuilt()) {
  t.skip('native addon not built (npm run build)', () => {});
} else {
  t.test(`${KILLS} SIGKILLs during install, boot, remove and export leave all-old or all-new`, async (t) => {
    const dir = await tempDir(t);
    const blocks = 2048; // 8 MiB: long enough to be killed mid-write
    const base = stampedImage(blocks, 'base');
    const next = Buffer.from(base);
    for (let i = 0; i < blocks; i += 3) crypto.randomBytes(BLOCK).copy(next, i * BLOCK);
    const basePath = path.join(dir, 'base.img');
    await fs.writeFile(basePath, base);
    await fs.writeFile(path.join(dir, 'next.img'), next);
    const keys = await writeKeyPair(path.join(dir, 'keys'));
    const patch = path.join(dir, 'p.rvp');
    await createPatch({ from: basePath, to: path.join(dir, 'next.img'), keyPath: keys.secretKeyPath, id: 'p', out: patch });
    const template = path.join(dir, 'template');
    const device = await Device.init(template, { volume: basePath, trust: keys.publicKeyPath });
    const baseDigest = device.config.baseDigest;
    const nextDigest = (await engine.hashImage(path.join(dir, 'next.img'), BLOCK)).digest;

    // How long one loop takes here, to spread the kills over it.
    const probe = path.join(dir, 'probe');
    await copyDir(template, probe);
    const span = await new Promise<number>((resolve, reject) => {
      const child = spawn(process.execPath, [CHILD, probe, patch, path.join(dir, 'probe.img')], { stdio: ['ignore', 'pipe', 'inherit'] });
      let ready = 0;
      child.stdout!.on('data', (d: Buffer) => {
        const text = d.toString();
        if (text.includes('ready') && !ready) ready = Date.now();
        if (text.includes('loop')) {
          child.kill('SIGKILL');
          resolve(Date.now() - ready);
        }
      });
      child.once('exit', (code) => code !== null && reject(new Error(`probe exited with ${code}`)));
    });
    t.comment(`one lifecycle loop takes ${span} ms here; kills are spread over it`);

    const seen = { old: 0, new: 0, exportOld: 0, exportNew: 0, noExport: 0 };
    const check = async (i: number): Promise<boolean> => {
      const state = path.join(dir, `s${i}`);
      const out = path.join(dir, `out${i}.img`);
      await copyDir(template, state);
      const delay = Math.floor(Math.random() * 2 * span);
      const { killed, stderr } = await runAndKill([state, patch, out], delay);
      if (!killed) {
        t.fail(`kill ${i}: the child ended by itself: ${stderr}`);
        return false;
      }
      const d = await Device.open(state, { lockWaitMs: 2000 });
      const before = (await engine.viewInfo(d.bootedView())).digest;
      if (before !== baseDigest && before !== nextDigest) {
        t.fail(`kill ${i} at ${delay} ms: booted view is neither old nor new`);
        return false;
      }
      seen[before === baseDigest ? 'old' : 'new']++;
      await d.boot();
      const exported = path.join(dir, `check${i}.img`);
      await d.export(exported);
      const bytes = await fs.readFile(exported);
      if (!bytes.equals(base) && !bytes.equals(next)) {
        t.fail(`kill ${i} at ${delay} ms: export after boot is neither old nor new`);
        return false;
      }
      const live = d.list().filter((p) => ['trial', 'active', 'pending-removal'].includes(p.state));
      if ((live.length > 0) !== bytes.equals(next)) {
        t.fail(`kill ${i} at ${delay} ms: the record and the view disagree`);
        return false;
      }
      const left = await fs.readFile(out).catch(() => null);
      if (left === null) seen.noExport++;
      else if (left.equals(base)) seen.exportOld++;
      else if (left.equals(next)) seen.exportNew++;
      else {
        t.fail(`kill ${i} at ${delay} ms: an interrupted export left a torn image`);
        return false;
      }
      await Promise.all([state, out, exported].map((p) => fs.rm(p, { recursive: true, force: true })));
      return true;
    };

    let passed = 0;
    const workers = 2;
    let next_i = 0;
    await Promise.all(
      Array.from({ length: workers }, async () => {
        while (next_i < KILLS) {
          const i = next_i++;
          if (await check(i)) passed++;
        }
      }),
    );
    t.equal(passed, KILLS, `${passed} of ${KILLS} kill points recovered to all-old or all-new`);
    t.comment(`booted view after kill: ${seen.old} old, ${seen.new} new; interrupted export file: ${seen.exportOld} old, ${seen.exportNew} new, ${seen.noExport} not yet written`);
    t.ok(seen.old > 0 && seen.new > 0, 'kills landed on both sides of the commit points');
  });
}
