/** Shared fixtures for the tap tests: stamped images, temp dirs, state snapshots, the CLI. */
import { promises as fs, existsSync } from 'node:fs';
import * as path from 'node:path';
import * as os from 'node:os';
import * as crypto from 'node:crypto';
import { spawn, spawnSync, SpawnSyncReturns, type ChildProcess } from 'node:child_process';

export const ROOT = path.resolve(__dirname, '..');
export const ADDON = path.join(ROOT, 'build', 'Release', 'revpatch.node');
export const CLI = path.join(ROOT, 'bin', 'revpatch.js');
export const BLOCK = 4096;

export function addonBuilt(): boolean {
  return existsSync(ADDON);
}

export async function tempDir(t: { teardown(fn: () => unknown): void }, prefix = 'revpatch-test-'): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), prefix));
  t.teardown(() => fs.rm(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * An image whose every block is stamped with its own index (and a tag), so a
 * block that lands in the wrong place or is left untouched shows.
 */
export function stampedImage(blocks: number, tag = 'base', blockSize = BLOCK): Buffer {
  const image = Buffer.alloc(blocks * blockSize);
  for (let i = 0; i < blocks; i++) {
    const block = image.subarray(i * blockSize, (i + 1) * blockSize);
    const stamp = Buffer.from(`[${tag} block ${i}]`);
    for (let off = 0; off + stamp.length <= blockSize; off += stamp.length) stamp.copy(block, off);
  }
  return image;
}

/** Content digest of every file below `dir` (names and bytes), to prove nothing changed. */
export async function snapshot(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (d: string): Promise<void> => {
    for (const entry of await fs.readdir(d, { withFileTypes: true })) {
      const full = path.join(d, entry.name);
      if (entry.isDirectory()) {
        out[path.relative(dir, full) + '/'] = 'dir';
        await walk(full);
      } else {
        out[path.relative(dir, full)] = crypto.createHash('sha256').update(await fs.readFile(full)).digest('hex');
      }
    }
  };
  await walk(dir);
  return out;
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function runCli(args: string[], env: NodeJS.ProcessEnv = {}): CliResult {
  const r: SpawnSyncReturns<string> = spawnSync(process.execPath, [CLI, ...args], {
    encoding: 'utf8',
    env: { ...process.env, ...env },
    maxBuffer: 64 * 1024 * 1024,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The CLI in a child process without blocking this one, whose servers it talks to. */
export function runCliAsync(args: string[]): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString('utf8')));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

export function sha256(data: Buffer): string {
  return crypto.createHash('sha256').update(data).digest('hex');
}

/**
 * A child process that takes the lock of `dir` (a state directory or a
 * repository) with dist/lock.js, says so, and holds it for `holdMs`.
 */
export function holdLock(dir: string, holdMs: number): Promise<ChildProcess> {
  const script = `
    const { StateLock } = require(${JSON.stringify(path.join(ROOT, 'dist', 'engine', 'lock.js'))});
    StateLock.acquire(${JSON.stringify(dir)}).then(async (lock) => {
      process.stdout.write('locked\\n');
      await new Promise((r) => setTimeout(r, ${holdMs}));
      await lock.release();
    });`;
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    child.stdout!.once('data', () => resolve(child));
    child.once('exit', (code) => reject(new Error(`lock holder exited early (${code})`)));
  });
}

export const exited = (child: ChildProcess) =>
  new Promise<void>((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve() : child.once('exit', () => resolve())));
