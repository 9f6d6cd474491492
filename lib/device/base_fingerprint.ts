/**
 * The base volume's fingerprint: size, device and inode, modification and
 * change times, from one stat call.
 *
 * Why: every read of the view is checked against the tree (E_CORRUPT), but
 * a base changed in place is better refused before it is booted than found
 * block by block. Writing to a file moves its mtime and ctime; replacing it
 * changes its inode; restoring the mtime (touch -d, utimes) still moves the
 * ctime, which no unprivileged call can set. Not a content check: a change
 * that keeps all of these (a raw write to the disk below the filesystem, or
 * bit rot) is caught by the verified reads and by `revpatch verify`.
 * A block device's size and times say little about its content; for one,
 * the fingerprint catches a replaced device node and nothing more.
 */
import { promises as fs } from 'node:fs';
import { toRevpatchError } from '../engine/errors';
import type { BaseFingerprint } from './record';

export async function takeFingerprint(volume: string): Promise<BaseFingerprint> {
  const st = await fs.stat(volume, { bigint: true }).catch((err) => {
    throw toRevpatchError(err);
  });
  return {
    size: Number(st.size),
    dev: st.dev.toString(),
    ino: st.ino.toString(),
    mtimeNs: st.mtimeNs.toString(),
    ctimeNs: st.ctimeNs.toString(),
  };
}

/** What differs between the recorded fingerprint and the current one ([] if nothing). */
export function fingerprintChanges(recorded: BaseFingerprint, current: BaseFingerprint): string[] {
  const changes: string[] = [];
  if (recorded.size !== current.size) changes.push(`size ${recorded.size} -> ${current.size}`);
  if (recorded.dev !== current.dev || recorded.ino !== current.ino) changes.push('inode');
  if (recorded.mtimeNs !== current.mtimeNs) changes.push('modification time');
  if (recorded.ctimeNs !== current.ctimeNs) changes.push('change time');
  return changes;
}
