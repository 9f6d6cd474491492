/**
 * One writer at a time per directory: a device's state directory, or a
 * repository the publisher changes. The lock is a file created with link(2)
 * holding the owner's pid; a lock whose owner no longer runs is stale and is
 * taken over, so a killed process never blocks the device or the repository
 * forever.
 */
import * as crypto from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { RevpatchError } from './errors';

export const LOCK_FILE = 'lock';

function alive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export class StateLock {
  private constructor(private readonly file: string) {}

  /** Takes the lock or fails with E_BUSY, waiting up to `waitMs` for it. */
  static async acquire(dir: string, waitMs = 0): Promise<StateLock> {
    const file = path.join(dir, LOCK_FILE);
    const deadline = Date.now() + waitMs;
    for (;;) {
      // link(2) publishes the lock with its pid already inside, so no
      // reader ever sees an empty lock file and mistakes it for stale. The
      // claim's name is unique even among the acquires of one process.
      const claim = `${file}.${process.pid}.${crypto.randomBytes(4).toString('hex')}.tmp`;
      await fs.writeFile(claim, `${process.pid}\n`, { mode: 0o644 });
      try {
        await fs.link(claim, file);
        return new StateLock(file);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      } finally {
        await fs.rm(claim, { force: true });
      }
      const owner = Number.parseInt(await fs.readFile(file, 'utf8').catch(() => ''), 10);
      if (!alive(owner) && owner !== process.pid) {
        // Stale: its owner is gone. Remove it only if it is still that file.
        const again = Number.parseInt(await fs.readFile(file, 'utf8').catch(() => ''), 10);
        if (again === owner) await fs.rm(file, { force: true });
        continue;
      }
      if (Date.now() >= deadline) {
        throw new RevpatchError('E_BUSY', `another revpatch process (pid ${owner}) is changing ${dir}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  async release(): Promise<void> {
    await fs.rm(this.file, { force: true });
  }
}
