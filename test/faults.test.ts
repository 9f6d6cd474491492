/**
 * Fail the Nth I/O call, for every N (SQLite's I/O-error and crash tests):
 * install, boot (activation), confirm, remove + boot and export each run
 * under EIO, ENOSPC, a short write, a power cut and a torn power cut at every
 * I/O call they make. After each, the commit record must open, the view
 * must read exactly the old or exactly the new bytes, an error must carry a
 * stable code, and the next operation must succeed.
 */
import t, { type Test } from 'tap';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { Device } from '../lib/device/device';
import { writeKeyPair } from '../lib/patch/keys';
import { createPatch } from '../lib/publisher/create';
import * as engine from '../lib/engine/engine';
import { sweepFaults, FaultOutcome } from '../lib/engine/testing';
import { addonBuilt, BLOCK, stampedImage, tempDir } from './helpers';

if (!addonBuilt()) {
  t.skip('native addon not built (npm run build)', () => {});
} else {
  t.test('every I/O call of every transition, under every fault', async (t) => {
    const dir = await tempDir(t);
    const base = stampedImage(48, 'base');
    const next = Buffer.from(base);
    stampedImage(6, 'fix').copy(next, 5 * BLOCK);
    next.fill(0, 30 * BLOCK, 32 * BLOCK);
    base.copy(next, 40 * BLOCK, 0, 2 * BLOCK);
    const basePath = path.join(dir, 'base.img');
    await fs.writeFile(basePath, base);
    await fs.writeFile(path.join(dir, 'next.img'), next);
    const keys = await writeKeyPair(path.join(dir, 'keys'));
    const patch = path.join(dir, 'p.rvp');
    await createPatch({ from: basePath, to: path.join(dir, 'next.img'), keyPath: keys.secretKeyPath, id: 'p', out: patch });

    // Templates: the state before each transition.
    const templates: Record<string, string> = {};
    const make = async (name: string, steps: (d: Device) => Promise<void>) => {
      templates[name] = path.join(dir, `template-${name}`);
      const d = await Device.init(templates[name], { volume: basePath, trust: keys.publicKeyPath });
      await steps(d);
    };
    await make('fresh', async () => undefined);
    await make('staged', async (d) => {
      await d.install(patch);
    });
    await make('trial', async (d) => {
      await d.install(patch);
      await d.boot();
      await d.reached();
    });
    await make('active', async (d) => {
      await d.install(patch);
      await d.boot();
      await d.confirm();
    });

    let serial = 0;
    const copyOf = async (name: string) => {
      const state = path.join(dir, `run-${++serial}`);
      await fs.cp(templates[name], state, { recursive: true });
      return state;
    };
    const bootedBytes = async (d: Device) => engine.readView(d.bootedView(), 0, next.length + BLOCK);
    const which = (bytes: Buffer) => (bytes.equals(base) ? 'old' : bytes.equals(next) ? 'new' : 'torn');
    const stateOf = (d: Device) => d.list().find((p) => p.id === 'p' && p.state !== 'removed')?.state ?? 'none';
    const expectCoded = (t: Tap, outcome: FaultOutcome, label: string) => {
      if (outcome.error) t.not(outcome.error.code, 'E_UNKNOWN', `${label}: error has a stable code (${outcome.error.code})`);
    };
    type Tap = Test;

    const figures: string[] = [];
    const sweep = async (name: string, template: string, run: (state: string) => Promise<unknown>, check: (state: string, label: string) => Promise<void>) => {
      const result = await sweepFaults<string>({
        setup: () => copyOf(template),
        run,
        check: async (state, outcome, mode, n) => {
          const label = `${name}, ${mode} at call ${n}`;
          expectCoded(t, outcome, label);
          await check(state, label);
          await fs.rm(state, { recursive: true, force: true });
        },
      });
      figures.push(`${name}: ${result.calls} I/O calls, ${result.runs} faulted runs`);
      t.ok(result.calls > 3, `${name} makes ${result.calls} I/O calls`);
    };

    await sweep('install', 'fresh', async (s) => (await Device.open(s)).install(patch), async (s, label) => {
      const d = await Device.open(s);
      t.equal(which(await bootedBytes(d)), 'old', `${label}: the running view is untouched`);
      const nextBoot = await engine.readView(d.nextBootView(), 0, next.length + BLOCK);
      const staged = stateOf(d) === 'staged';
      t.equal(which(nextBoot), staged ? 'new' : 'old', `${label}: next-boot view is ${staged ? 'new' : 'old'} and agrees with the record`);
      if (!staged) await d.install(patch);
      await d.boot();
      t.equal(which(await bootedBytes(d)), 'new', `${label}: installs and boots afterwards`);
    });

    await sweep('boot', 'staged', async (s) => (await Device.open(s)).boot(), async (s, label) => {
      const d = await Device.open(s);
      const state = stateOf(d);
      t.equal(which(await bootedBytes(d)), state === 'trial' ? 'new' : 'old', `${label}: view agrees with the record (${state})`);
      await d.boot();
      t.equal(which(await bootedBytes(d)), 'new', `${label}: the next boot activates it`);
    });

    await sweep('confirm', 'trial', async (s) => (await Device.open(s)).confirm(), async (s, label) => {
      const d = await Device.open(s);
      t.ok(['trial', 'active'].includes(stateOf(d)), `${label}: trial or active`);
      t.equal(which(await bootedBytes(d)), 'new', `${label}: view is the patched one`);
      await d.confirm();
      t.equal(stateOf(d), 'active', `${label}: the next confirm succeeds`);
    });

    await sweep(
      'remove + boot',
      'active',
      async (s) => {
        const d = await Device.open(s);
        await d.remove('p');
        await d.boot();
      },
      async (s, label) => {
        const d = await Device.open(s);
        const state = stateOf(d);
        t.equal(which(await bootedBytes(d)), state === 'none' ? 'old' : 'new', `${label}: view agrees with the record (${state})`);
        if (state === 'active') await d.remove('p');
        await d.boot();
        t.equal(which(await bootedBytes(d)), 'old', `${label}: the base is back after the next boot`);
      },
    );

    const out = path.join(dir, 'exported.img');
    await sweep(
      'export',
      'active',
      async (s) => {
        await fs.writeFile(out, base);
        await (await Device.open(s)).export(out);
      },
      async (s, label) => {
        const bytes = await fs.readFile(out);
        t.ok(bytes.equals(base) || bytes.equals(next), `${label}: the image is the old file or the complete new one`);
        await (await Device.open(s)).export(out);
        t.ok((await fs.readFile(out)).equals(next), `${label}: the next export succeeds`);
      },
    );
    t.comment(figures.join('; '));
  });
}
