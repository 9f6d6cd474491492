/**
 * The serve lease: while `revpatch serve-view` exports the booted view,
 * `<state>/serve.lease` says so, and `boot` refuses with E_BUSY
 * (docs/serve-view.md). A boot would change which layers form the booted
 * view under a client that is reading it, so the export and a boot never
 * overlap: the export is stopped, the device boots, a new export starts.
 *
 * The lease names the process that owns the export (the one that removes
 * the lease when it stops) and the nbdkit process that serves it. It is live
 * while either runs; once both are gone it is stale and ignored, like a
 * StateLock whose owner died, so a killed server never blocks the device
 * (nbdkit runs with --exit-with-parent, so killing the owner stops it too).
 * A token of its own lets the owner remove exactly its own lease.
 *
 * The lease is taken and checked under the device lock (StateLock): the
 * export takes it while it reads the booted view, and boot checks it inside
 * its lock before anything is committed. It is written with rename(2), so a
 * reader never sees half a lease; it need not survive a power loss (no
 * process does).
 */
import * as crypto from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { RevpatchError } from '../engine/errors';

export const SERVE_LEASE_FILE = 'serve.lease';

export interface ServeLease {
  /** The process that owns the export (revpatch serve-view, or a library caller). */
  pid: number;
  /** The nbdkit process serving it; null until it runs. */
  server: number | null;
  token: string;
  /** Where clients connect; null until nbdkit accepts connections. */
  uri: string | null;
  /** The booted view's digest being served. */
  digest: string;
}

function alive(pid: number | null): boolean {
  if (pid === null || !Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function parse(text: string): ServeLease | null {
  try {
    const v = JSON.parse(text) as Partial<ServeLease>;
    if (!Number.isInteger(v.pid) || typeof v.token !== 'string') return null;
    return {
      pid: v.pid as number,
      server: Number.isInteger(v.server) ? (v.server as number) : null,
      token: v.token,
      uri: typeof v.uri === 'string' ? v.uri : null,
      digest: typeof v.digest === 'string' ? v.digest : '',
    };
  } catch {
    return null;
  }
}

/** The lease of `stateDir` if one is live; null if there is none or it is stale (or unreadable). */
export async function readLiveServeLease(stateDir: string): Promise<ServeLease | null> {
  let text: string;
  try {
    text = await fs.readFile(path.join(stateDir, SERVE_LEASE_FILE), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  const lease = parse(text);
  if (lease === null) return null;
  return alive(lease.pid) || alive(lease.server) ? lease : null;
}

/** E_BUSY if the booted view of `stateDir` is being served; call it under the device lock. */
export async function assertNotServed(stateDir: string, action = 'boot'): Promise<void> {
  const lease = await readLiveServeLease(stateDir);
  if (lease === null) return;
  const where = lease.uri ? ` at ${lease.uri}` : '';
  const server = lease.server !== null && lease.server !== lease.pid ? `, nbdkit pid ${lease.server}` : '';
  throw new RevpatchError(
    'E_BUSY',
    `the booted view is being served${where} by pid ${lease.pid}${server} (revpatch serve-view); ` +
      `stop it first (kill -TERM ${lease.pid}, or Ctrl-C where it runs), then ${action}`,
  );
}

/** A lease this process holds. */
export class ServeLeaseHandle {
  private released = false;

  private constructor(
    private readonly file: string,
    private lease: ServeLease,
  ) {}

  /**
   * Takes the lease for this process, or fails with E_BUSY if a live one
   * exists. The caller holds the device lock; a stale lease is replaced.
   */
  static async take(stateDir: string, digest: string): Promise<ServeLeaseHandle> {
    await assertNotServed(stateDir, 'serve it again');
    const lease: ServeLease = {
      pid: process.pid,
      server: null,
      token: crypto.randomBytes(8).toString('hex'),
      uri: null,
      digest,
    };
    const handle = new ServeLeaseHandle(path.join(stateDir, SERVE_LEASE_FILE), lease);
    await handle.write();
    return handle;
  }

  get current(): Readonly<ServeLease> {
    return this.lease;
  }

  /** Records the nbdkit process and the URI once it serves. */
  async update(fields: Partial<Pick<ServeLease, 'server' | 'uri'>>): Promise<void> {
    if (this.released) return;
    this.lease = { ...this.lease, ...fields };
    await this.write();
  }

  /** Removes the lease if it is still this handle's. Safe to call more than once. */
  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    const now = await fs.readFile(this.file, 'utf8').catch(() => null);
    if (now !== null && parse(now)?.token === this.lease.token) await fs.rm(this.file, { force: true });
  }

  private async write(): Promise<void> {
    // Not `.tmp`: a change of the device collects those (device.ts), and
    // update() runs outside the device lock.
    const tmp = `${this.file}.${process.pid}.${this.lease.token}.part`;
    try {
      await fs.writeFile(tmp, `${JSON.stringify(this.lease)}\n`, { mode: 0o644 });
      await fs.rename(tmp, this.file);
    } finally {
      await fs.rm(tmp, { force: true });
    }
  }
}
