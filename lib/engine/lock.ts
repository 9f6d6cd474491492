/**
 * One writer at a time per directory: a device's state directory, or a
 * repository the publisher changes. The lock is a file created with link(2)
 * holding the owner's pid and a token of its own; a lock whose owner no
 * longer runs is stale and is taken over, so a killed process never blocks
 * the device or the repository forever. After a crash the boot sequence and
 * the agent may both find the stale lock at once: the takeover moves it
 * aside with rename(2) and checks it is the stale one (takeOver), and a
 * release removes the lock only if it is still its own, so neither can
 * delete the lock the other has just taken.
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
  private constructor(
    private readonly file: string,
    /** What this acquire wrote: its pid and a token no other acquire has. */
    private readonly content: string,
  ) {}

  /** Takes the lock or fails with E_BUSY, waiting up to `waitMs` for it. */
  static async acquire(dir: string, waitMs = 0): Promise<StateLock> {
    const file = path.join(dir, LOCK_FILE);
    const deadline = Date.now() + waitMs;
    for (;;) {
      // link(2) publishes the lock with its pid already inside, so no
      // reader ever sees an empty lock file and mistakes it for stale. The
      // claim's name and content are unique even among the acquires of one
      // process, so a lock file names exactly one acquire.
      const token = crypto.randomBytes(8).toString('hex');
      const content = `${process.pid} ${token}\n`;
      const claim = `${file}.${process.pid}.${token}.tmp`;
      await fs.writeFile(claim, content, { mode: 0o644 });
      try {
        await fs.link(claim, file);
        return new StateLock(file, content);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      } finally {
        await fs.rm(claim, { force: true });
      }
      let seen: string;
      try {
        seen = await fs.readFile(file, 'utf8');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // released meanwhile
        throw err;
      }
      const owner = Number.parseInt(seen, 10);
      if (!alive(owner) && owner !== process.pid) {
        await takeOver(file, seen);
        continue;
      }
      if (Date.now() >= deadline) {
        throw new RevpatchError('E_BUSY', `another revpatch process (pid ${owner}) is changing ${dir}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  /** Removes the lock if it is still this acquire's (it always is, unless a takeover misjudged it). */
  async release(): Promise<void> {
    const now = await fs.readFile(this.file, 'utf8').catch(() => null);
    if (now === this.content) await fs.rm(this.file, { force: true });
  }
}

/**
 * Removes the stale lock whose content was `stale`, and nothing else. Two
 * processes may judge the same lock stale at once; removing by name, the
 * slower one could delete the lock the faster one has just taken. So the
 * lock is moved aside with rename(2), which moves exactly one file, and
 * checked there: if it is not the stale one, another acquire took over
 * first and its live lock is linked back at once.
 */
async function takeOver(file: string, stale: string): Promise<void> {
  const aside = `${file}.${process.pid}.${crypto.randomBytes(8).toString('hex')}.stale`;
  try {
    await fs.rename(file, aside);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return; // released or taken over already
    throw err;
  }
  try {
    const moved = await fs.readFile(aside, 'utf8').catch(() => '');
    if (moved !== stale) {
      // Someone's live lock: put it back. EEXIST means a third acquire took
      // the free name in the instant it was away; both then believe they
      // hold it (a three-way race on a stale lock; not handled).
      await fs.link(aside, file).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'EEXIST') throw err;
      });
    }
  } finally {
    await fs.rm(aside, { force: true });
  }
}
