/**
 * `npm start`: the whole device story on an embedded default, no arguments.
 * It makes a sample base image and a patched one in a work folder, a
 * publisher key pair and a signed patch, sets a device up over the base,
 * then installs, restarts, confirms, removes and restarts again, printing
 * each step with its time and the booted view's digest, and checks that
 * the exported image equals the target after activation and the base after
 * removal.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import * as crypto from 'node:crypto';
import { Device } from './device';
import { writeKeyPair } from './keys';
import { createPatch } from './create';
import * as engine from './engine';
import { toRevpatchError } from './errors';

const BLOCK = 4096;
const IMAGE_BYTES = 32 * 1024 * 1024;

/** Deterministic bytes, so every run shows the same digests. */
function stream(seed: string, size: number): Buffer {
  const out = Buffer.alloc(size);
  let counter = 0;
  for (let off = 0; off < size; off += 32) {
    crypto.createHash('sha256').update(`${seed}:${counter++}`).digest().copy(out, off);
  }
  return out;
}

/** A base image: "code" regions of random bytes, text tables, zero gaps. */
export function sampleBase(): Buffer {
  const image = Buffer.alloc(IMAGE_BYTES);
  stream('code', 12 * 1024 * 1024).copy(image, 0);
  const table = Buffer.from('revpatch sample configuration table entry;'.repeat(40000));
  table.copy(image, 16 * 1024 * 1024);
  stream('data', 8 * 1024 * 1024).copy(image, 22 * 1024 * 1024);
  return image;
}

/** The patched image: a few rewritten blocks, an edit that shifts bytes, moved and zeroed blocks, growth. */
export function samplePatched(base: Buffer): Buffer {
  const image = Buffer.alloc(IMAGE_BYTES + 64 * 1024);
  base.copy(image);
  stream('fix-1', 3 * BLOCK).copy(image, 100 * BLOCK);
  image.write('security fix: bounds check added ', 2 * 1024 * 1024 + 123);
  const shifted = Buffer.concat([Buffer.from('INSERTED'), base.subarray(5 * 1024 * 1024, 5 * 1024 * 1024 + 16 * BLOCK)]);
  shifted.copy(image, 5 * 1024 * 1024, 0, 16 * BLOCK);
  base.copy(image, 30 * 1024 * 1024, 1 * 1024 * 1024, 1 * 1024 * 1024 + 8 * BLOCK);
  image.fill(0, 22 * 1024 * 1024, 22 * 1024 * 1024 + 4 * BLOCK);
  image.write('v2', 16 * 1024 * 1024 + 40);
  stream('new-tail', 64 * 1024).copy(image, IMAGE_BYTES);
  return image;
}

export async function runWalkthrough(workDir: string, log: (line: string) => void = console.log): Promise<void> {
  const dir = path.resolve(workDir);
  await fs.rm(dir, { recursive: true, force: true });
  await fs.mkdir(dir, { recursive: true });
  const basePath = path.join(dir, 'base.img');
  const targetPath = path.join(dir, 'patched.img');
  const patchPath = path.join(dir, 'fix-1.rvp');
  const stateDir = path.join(dir, 'state');
  const exported = path.join(dir, 'exported.img');
  let device: Device | undefined;

  const step = async <T>(title: string, fn: () => Promise<T>, describe?: (value: T) => string): Promise<T> => {
    const started = process.hrtime.bigint();
    const value = await fn();
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    const digest = device ? (await engine.viewInfo(device.bootedView())).digest.slice(0, 16) : '-'.repeat(16);
    log(`${title.padEnd(44)} ${ms.toFixed(1).padStart(8)} ms   view ${digest}${describe ? `   ${describe(value)}` : ''}`);
    return value;
  };
  const sameAs = async (file: string): Promise<boolean> => {
    await device!.export(exported);
    const [a, b] = await Promise.all([fs.readFile(exported), fs.readFile(file)]);
    return a.equals(b);
  };

  log(`revpatch walkthrough in ${dir}\n`);
  const base = sampleBase();
  await step('make sample images (32 MiB base)', async () => {
    await fs.writeFile(basePath, base);
    await fs.writeFile(targetPath, samplePatched(base));
  });
  const keys = await step('publisher: keygen', () => writeKeyPair(path.join(dir, 'keys')), (k) => `key ${k.keyId}`);
  const created = await step(
    'publisher: create signed patch fix-1',
    () => createPatch({ from: basePath, to: targetPath, keyPath: keys.secretKeyPath, id: 'fix-1', out: patchPath, title: 'Sample security fix' }),
    (r) => `${r.size} bytes, ${r.manifest.operationCount} ops`,
  );
  device = await step('device: init (hash the base once)', () =>
    Device.init(stateDir, { volume: basePath, trust: keys.publicKeyPath }),
  );
  await step('device: install fix-1', () => device!.install(patchPath), (p) => `state ${p.state}`);
  await step('device: restart (boot)', () => device!.boot(), (r) => `trial: ${r.trial.join(', ')}`);
  await step('device: health check passed (confirm)', () => device!.confirm(), (ids) => `active: ${ids.join(', ')}`);
  const patched = await step('device: export equals the patched image', () => sameAs(targetPath), (ok) => (ok ? 'yes' : 'NO'));
  await step('device: remove fix-1', () => device!.remove('fix-1'), (ps) => `state ${ps[0]?.state}`);
  await step('device: restart (boot)', () => device!.boot(), (r) => `removed: ${r.removed.join(', ')}`);
  const restored = await step('device: export equals the base image', () => sameAs(basePath), (ok) => (ok ? 'yes' : 'NO'));
  log(`\npatch ${created.size} bytes for a ${IMAGE_BYTES / (1024 * 1024)} MiB image; state in ${stateDir}`);
  if (!patched || !restored) throw new Error('the exported image did not match');
}

if (require.main === module) {
  const workDir = process.argv[2] ?? path.join(process.cwd(), 'revpatch-demo');
  runWalkthrough(workDir).catch((err) => {
    const e = toRevpatchError(err);
    process.stderr.write(`error ${e.code}: ${e.message}\n`);
    process.exitCode = 1;
  });
}
