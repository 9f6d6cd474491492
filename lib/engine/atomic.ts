/**
 * Durable file replacement: every file revpatch writes that must survive a
 * crash goes through here. The bytes go to a temporary name in the target's
 * directory, are fsynced (F_FULLFSYNC on macOS, through the engine), the
 * temporary is renamed over the target, and the directory is fsynced so the
 * rename itself is durable. After a crash the target holds the old bytes or
 * the new ones, never a mix; a failure removes the temporary file.
 *
 * When the native addon cannot be loaded (tools that run without it, tests)
 * the fsyncs fall back to Node's fsync. An fsync that fails is never retried
 * (DESIGN.md invariant 8): the error is thrown and the write is abandoned.
 */
import * as crypto from 'node:crypto';
import { promises as fs } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import * as path from 'node:path';
import * as engine from './engine';
import { RevpatchError, toRevpatchError } from './errors';

export interface AtomicWriteOptions {
  /** File mode of the result; applied to the temporary file before any byte is written. */
  mode?: number;
  /**
   * false: refuse (E_EXISTS) if the target exists, atomically, by linking
   * the temporary file to the target instead of renaming it. Default true.
   */
  overwrite?: boolean;
}

const COPY_CHUNK = 1024 * 1024;

let addonMissing = false;

async function withEngine(native: () => Promise<void>, fallback: () => Promise<void>): Promise<void> {
  if (!addonMissing) {
    try {
      await native();
      return;
    } catch (err) {
      if ((err as { code?: unknown }).code !== 'E_ADDON') throw err;
      addonMissing = true;
    }
  }
  await fallback();
}

/** fsync of a file by path (engine.syncFile, else Node's fsync). */
export async function syncFile(file: string): Promise<void> {
  await withEngine(
    () => engine.syncFile(file),
    async () => {
      const handle = await fs.open(file, 'r');
      try {
        await handle.sync();
      } finally {
        await handle.close();
      }
    },
  );
}

/** fsync of a directory, making renames and unlinks in it durable. */
export async function syncDirectory(dir: string): Promise<void> {
  await withEngine(
    () => engine.syncDirectory(dir),
    async () => {
      if (process.platform === 'win32') return; // directories cannot be opened for fsync there
      const handle = await fs.open(dir, 'r');
      try {
        await handle.sync();
      } finally {
        await handle.close();
      }
    },
  );
}

/** A fresh temporary name beside `file`, hidden and unique to this call. */
export function temporaryPathBeside(file: string, suffix = 'tmp'): string {
  const resolved = path.resolve(file);
  const nonce = crypto.randomBytes(6).toString('hex');
  return path.join(path.dirname(resolved), `.${path.basename(resolved)}.${process.pid}.${nonce}.${suffix}`);
}

/**
 * Creates `file` atomically with the bytes `fill` writes into the handle of
 * the temporary file (positional writes are fine; the handle is closed here).
 */
export async function writeAtomic(
  file: string,
  fill: (handle: FileHandle) => Promise<void>,
  options: AtomicWriteOptions = {},
): Promise<void> {
  const target = path.resolve(file);
  const dir = path.dirname(target);
  const temp = temporaryPathBeside(target);
  let handle: FileHandle | undefined;
  let placed = false;
  try {
    handle = await fs.open(temp, 'wx', options.mode ?? 0o666);
    if (options.mode !== undefined) await handle.chmod(options.mode);
    await fill(handle);
    await handle.close();
    handle = undefined;
    await syncFile(temp);
    if (options.overwrite === false) {
      await placeWithoutOverwrite(temp, target);
    } else {
      await fs.rename(temp, target);
    }
    placed = true;
    await syncDirectory(dir);
  } catch (err) {
    if (handle) await handle.close().catch(() => undefined);
    if (!placed) await fs.rm(temp, { force: true }).catch(() => undefined);
    throw toRevpatchError(err);
  }
}

/**
 * link(2) fails with EEXIST instead of replacing, which makes "create only if
 * absent" atomic. On filesystems without hard links it falls back to a check
 * followed by a rename.
 */
async function placeWithoutOverwrite(temp: string, target: string): Promise<void> {
  try {
    await fs.link(temp, target);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') throw new RevpatchError('E_EXISTS', `${target} already exists`, { cause: err });
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'ENOSYS') throw err;
    if (await exists(target)) throw new RevpatchError('E_EXISTS', `${target} already exists`);
    await fs.rename(temp, target);
    return;
  }
  await fs.unlink(temp);
}

async function exists(file: string): Promise<boolean> {
  try {
    await fs.lstat(file);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

/** Replaces (or creates) `file` with `data`, atomically and durably. */
export async function writeFileAtomic(
  file: string,
  data: Uint8Array | string,
  options: AtomicWriteOptions = {},
): Promise<void> {
  const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  await writeAtomic(file, (handle) => writeAll(handle, bytes, 0), options);
}

/** Copies `from` to `to` atomically and durably, streaming in 1 MiB pieces. */
export async function copyFileAtomic(from: string, to: string, options: AtomicWriteOptions = {}): Promise<void> {
  let source: FileHandle;
  try {
    source = await fs.open(from, 'r');
  } catch (err) {
    throw toRevpatchError(err);
  }
  try {
    await writeAtomic(
      to,
      async (handle) => {
        await copyRange(source, 0, Infinity, handle, 0);
      },
      options,
    );
  } finally {
    await source.close().catch(() => undefined);
  }
}

/** Writes all of `bytes` at `position`, looping over short writes. */
export async function writeAll(handle: FileHandle, bytes: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < bytes.byteLength) {
    const { bytesWritten } = await handle.write(bytes, done, bytes.byteLength - done, position + done);
    if (bytesWritten <= 0) throw new RevpatchError('E_IO', 'write made no progress');
    done += bytesWritten;
  }
}

/**
 * Copies up to `length` bytes (Infinity: to the end) from `source` at
 * `sourcePosition` to `target` at `targetPosition`; returns the bytes copied.
 */
export async function copyRange(
  source: FileHandle,
  sourcePosition: number,
  length: number,
  target: FileHandle,
  targetPosition: number,
): Promise<number> {
  const buffer = Buffer.allocUnsafe(COPY_CHUNK);
  let copied = 0;
  while (copied < length) {
    const want = Math.min(COPY_CHUNK, length - copied);
    const { bytesRead } = await source.read(buffer, 0, want, sourcePosition + copied);
    if (bytesRead === 0) break;
    await writeAll(target, buffer.subarray(0, bytesRead), targetPosition + copied);
    copied += bytesRead;
  }
  return copied;
}
