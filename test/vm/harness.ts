/**
 * One device boot cycle with a real guest, run the way a device's startup
 * sequence runs (docs/integration.md):
 *
 *   1. `revpatch boot`  (activates, removes, rolls back; counts the attempt)
 *   2. serve the booted view as an NBD export on a Unix socket
 *   3. start QEMU (TCG) with the root disk on `nbd+unix://…` and a
 *      throwaway write overlay (`snapshot=on`)
 *   4. `revpatch reached` when the guest prints REVPATCH-REACHED
 *   5. `revpatch confirm` when it prints REVPATCH-HEALTHY
 *   6. the guest powers off; the harness kills QEMU if it has not ended
 *      within the timeout (a hang is a boot that ended early)
 *   7. stop the server
 *
 * revpatch runs as its CLI (bin/revpatch.js), as on a device. How the view
 * is served is a DiskServer, so a test can swap in another (an exported
 * image behind nbdkit's `file` plugin, say). Nothing here knows the sample
 * guest: any kernel, initramfs and volume that print the markers of
 * guest.ts work.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import * as net from 'node:net';
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { MARKER, QEMU, type GuestArtifacts } from './guest';

export const ROOT = path.resolve(__dirname, '..', '..');

/** How to run revpatch: the command and the arguments before the subcommand. */
export const REVPATCH_CLI: readonly string[] = [process.execPath, path.join(ROOT, 'bin', 'revpatch.js')];

/** A served disk: the URI QEMU opens, and how to stop serving it. */
export interface ServedDisk {
  uri: string;
  close(): Promise<void>;
}

/** Serves the booted view of a state directory on a Unix socket. */
export interface DiskServer {
  readonly name: string;
  serve(stateDir: string, socket: string): Promise<ServedDisk>;
}

/** Runs revpatch with the global options first; resolves with its JSON output. */
export function revpatch(stateDir: string, args: string[], cli: readonly string[] = REVPATCH_CLI): Promise<unknown> {
  return new Promise((resolve, reject) => {
    execFile(cli[0], [...cli.slice(1), '--state', stateDir, '--json', ...args], { maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) {
        reject(new Error(`revpatch ${args.join(' ')} failed (${err.code ?? err.signal}): ${stderr.trim() || stdout.trim()}`));
        return;
      }
      try {
        resolve(JSON.parse(stdout));
      } catch {
        reject(new Error(`revpatch ${args.join(' ')}: output is not JSON: ${stdout.slice(0, 200)}`));
      }
    });
  });
}

/** Resolves when `child` has exited (at once if it already has). */
function exited(child: ChildProcess): Promise<void> {
  return new Promise((resolve) =>
    child.exitCode !== null || child.signalCode !== null ? resolve() : child.once('exit', () => resolve()),
  );
}

/** SIGTERM, then SIGKILL if the process has not ended within `graceMs`. */
async function stop(child: ChildProcess, graceMs = 5000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited(child);
  clearTimeout(timer);
}

/**
 * Starts a long-running server and resolves once a line of its stdout
 * passes `ready` (which returns the URI), or rejects when it exits first
 * or `timeoutMs` passes.
 */
function startServer(cmd: string, args: string[], ready: (line: string) => string | null, timeoutMs = 20000): Promise<ServedDisk> {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  return new Promise((resolve, reject) => {
    let buffered = '';
    const fail = (why: string) => {
      clearTimeout(timer);
      void stop(child).then(() => reject(new Error(`${path.basename(cmd)} ${args.join(' ')}: ${why}${stderr ? `: ${stderr.trim()}` : ''}`)));
    };
    const timer = setTimeout(() => fail(`not ready within ${timeoutMs} ms`), timeoutMs);
    child.once('error', (err) => fail(err.message));
    child.once('exit', (code, signal) => fail(`exited (${code ?? signal}) before serving`));
    child.stdout!.setEncoding('utf8').on('data', (s: string) => {
      buffered += s;
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl).trim();
        buffered = buffered.slice(nl + 1);
        const uri = ready(line);
        if (uri === null) continue;
        clearTimeout(timer);
        child.removeAllListeners('exit');
        resolve({ uri, close: () => stop(child) });
        return;
      }
    });
  });
}

/** Resolves when a client can connect to the Unix socket `socket`. */
function accepts(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect(socket);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}

/**
 * Starts nbdkit in the foreground and resolves once its socket accepts
 * connections (nbdkit 1.32 has no option that prints when it is ready).
 */
async function startNbdkit(nbdkit: string, args: string[], socket: string, timeoutMs = 20000): Promise<ServedDisk> {
  const child = spawn(nbdkit, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  let spawnError: Error | null = null;
  child.once('error', (err) => (spawnError = err));
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (spawnError || child.exitCode !== null || child.signalCode !== null || Date.now() > deadline) {
      await stop(child);
      const why = spawnError ? (spawnError as Error).message : Date.now() > deadline ? `not ready within ${timeoutMs} ms` : 'exited before serving';
      throw new Error(`${nbdkit} ${args.join(' ')}: ${why}${stderr ? `: ${stderr.trim()}` : ''}`);
    }
    if (await accepts(socket)) return { uri: `nbd+unix:///?socket=${socket}`, close: () => stop(child) };
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * The booted view served by `revpatch serve-view` (nbdkit with revpatch's
 * plugin, reading through the engine's verified View): nothing is copied.
 */
export function serveViewServer(cli: readonly string[] = REVPATCH_CLI): DiskServer {
  return {
    name: 'revpatch serve-view',
    serve: (stateDir, socket) =>
      startServer(cli[0], [...cli.slice(1), '--state', stateDir, '--json', 'serve-view', '--socket', socket], (line) => {
        if (line.startsWith('{')) return (JSON.parse(line) as { uri: string }).uri;
        const m = /^serving (\S+)/.exec(line);
        return m ? m[1] : null;
      }),
  };
}

/**
 * The booted view exported to an image (`revpatch export`, a full copy on
 * filesystems without reflinks) and served read-only by nbdkit's standard
 * `file` plugin: the portable path where serve-view is not available.
 */
export function exportedFileServer(cli: readonly string[] = REVPATCH_CLI, nbdkit = 'nbdkit'): DiskServer {
  return {
    name: 'revpatch export + nbdkit file',
    serve: async (stateDir, socket) => {
      const image = socket + '.img';
      await revpatch(stateDir, ['export', '--out', image, '--mode', 'copy'], cli);
      const served = await startNbdkit(nbdkit, ['--foreground', '--readonly', '--exit-with-parent', '--unix', socket, 'file', image], socket);
      return {
        uri: served.uri,
        close: async () => {
          await served.close();
          await fs.rm(image, { force: true });
        },
      };
    },
  };
}

export interface BootCycleOptions {
  stateDir: string;
  guest: GuestArtifacts;
  /** Where the socket (and any scratch file of the disk server) goes. */
  workDir: string;
  diskServer?: DiskServer;
  /** QEMU is killed after this long (default 90 s); the boot counts as ended early. */
  timeoutMs?: number;
  memoryMiB?: number;
  /** Extra kernel command line. */
  append?: string;
  cli?: readonly string[];
  /** Each console line as it arrives. */
  onConsoleLine?: (line: string) => void;
}

export type BootEnd = 'poweroff' | 'panic' | 'timeout' | 'exit';

export interface BootCycle {
  /** `revpatch boot --json`: activated, removed, failed, trial, viewDigest… */
  boot: { activated: string[]; removed: string[]; failed: string[]; trial: string[]; viewDigest: string };
  /** The guest printed REVPATCH-REACHED, and `revpatch reached` ran. */
  reached: boolean;
  /** Patches `reached` marked (trial patches whose attempt now counts). */
  reachedPatches: string[];
  health: 'healthy' | 'unhealthy' | null;
  /** The text after REVPATCH-UNHEALTHY. */
  reason: string | null;
  /** Patches `revpatch confirm` made active (empty if not healthy). */
  confirmed: string[];
  /** Why the initramfs gave up (REVPATCH-INITRAMFS failed: …), or null. */
  initramfsFailure: string | null;
  /** REVPATCH-SEES key=value lines. */
  sees: Record<string, string>;
  ended: BootEnd;
  qemuExit: number | null;
  console: string;
  /** From `revpatch boot` to the server stopped. */
  cycleMs: number;
  /** From QEMU's start to its exit: the guest boot. */
  guestMs: number;
  /** From QEMU's start to REVPATCH-REACHED (null if never). */
  reachedMs: number | null;
}

/** The QEMU command line for one boot of `guest` from `uri`. */
export function qemuArgs(guest: GuestArtifacts, uri: string, options: { memoryMiB?: number; append?: string } = {}): string[] {
  return [
    '-machine', 'pc,accel=tcg',
    '-m', String(options.memoryMiB ?? 256),
    '-smp', '1',
    '-nodefaults',
    '-display', 'none',
    '-serial', 'stdio',
    '-no-reboot',
    '-kernel', guest.kernel.image,
    '-initrd', guest.initramfs,
    '-append', `console=ttyS0 panic=-1 quiet loglevel=3${options.append ? ' ' + options.append : ''}`,
    '-drive', `file=${uri},format=raw,if=virtio,snapshot=on`,
  ];
}

/** One device boot cycle (see the header); throws only if the host side fails. */
export async function runBootCycle(options: BootCycleOptions): Promise<BootCycle> {
  const cli = options.cli ?? REVPATCH_CLI;
  const server = options.diskServer ?? serveViewServer(cli);
  const timeoutMs = options.timeoutMs ?? 90_000;
  const started = Date.now();
  const boot = (await revpatch(options.stateDir, ['boot'], cli)) as BootCycle['boot'];
  const socket = path.join(options.workDir, `view-${process.pid}-${started}.sock`);
  const served = await server.serve(options.stateDir, socket);
  const result: BootCycle = {
    boot,
    reached: false,
    reachedPatches: [],
    health: null,
    reason: null,
    confirmed: [],
    initramfsFailure: null,
    sees: {},
    ended: 'exit',
    qemuExit: null,
    console: '',
    cycleMs: 0,
    guestMs: 0,
    reachedMs: null,
  };
  try {
    const qemuStart = Date.now();
    const qemu = spawn(QEMU, qemuArgs(options.guest, served.uri, options), { stdio: ['ignore', 'pipe', 'pipe'] });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      qemu.kill('SIGKILL');
    }, timeoutMs);
    // reached/confirm run while the guest is up, in the order the markers came.
    let host: Promise<void> = Promise.resolve();
    let hostError: Error | null = null;
    const after = (step: () => Promise<void>) => {
      host = host.then(step).catch((err: Error) => {
        hostError ??= err;
      });
    };
    const onLine = (line: string) => {
      options.onConsoleLine?.(line);
      const at = line.indexOf('REVPATCH-');
      if (at < 0) return;
      const marker = line.slice(at);
      if (marker === MARKER.reached && !result.reached) {
        result.reached = true;
        result.reachedMs = Date.now() - qemuStart;
        after(async () => {
          result.reachedPatches = ((await revpatch(options.stateDir, ['reached'], cli)) as { reached: string[] }).reached;
        });
      } else if (marker.startsWith(MARKER.initramfs + ' failed: ')) {
        result.initramfsFailure = marker.slice(MARKER.initramfs.length + ' failed: '.length);
      } else if (marker.startsWith(MARKER.sees + ' ')) {
        const kv = marker.slice(MARKER.sees.length + 1);
        const eq = kv.indexOf('=');
        if (eq > 0) result.sees[kv.slice(0, eq)] = kv.slice(eq + 1);
      } else if (marker === MARKER.healthy && result.health === null) {
        result.health = 'healthy';
        // Healthy without reached is not a checked boot: reached first, always.
        if (result.reached) {
          after(async () => {
            result.confirmed = ((await revpatch(options.stateDir, ['confirm'], cli)) as { confirmed: string[] }).confirmed;
          });
        }
      } else if (marker.startsWith(MARKER.unhealthy) && result.health === null) {
        result.health = 'unhealthy';
        result.reason = marker.slice(MARKER.unhealthy.length).trim();
      }
    };
    let pending = '';
    const consume = (chunk: string) => {
      result.console += chunk;
      pending += chunk;
      let nl: number;
      while ((nl = pending.indexOf('\n')) >= 0) {
        onLine(pending.slice(0, nl).replace(/\r$/, ''));
        pending = pending.slice(nl + 1);
      }
    };
    qemu.stdout!.setEncoding('utf8').on('data', consume);
    let qemuStderr = '';
    qemu.stderr!.setEncoding('utf8').on('data', (s: string) => (qemuStderr += s));
    const spawnError = new Promise<Error>((resolve) => qemu.once('error', resolve));
    // 'close', not 'exit': the console's last lines may still be in the pipe at exit.
    const closed = new Promise<null>((resolve) => qemu.once('close', () => resolve(null)));
    const outcome = await Promise.race([closed, spawnError]);
    clearTimeout(timer);
    if (outcome) throw new Error(`${QEMU}: ${outcome.message}`);
    if (pending) onLine(pending);
    result.guestMs = Date.now() - qemuStart;
    result.qemuExit = qemu.exitCode;
    await host;
    if (hostError) throw hostError;
    if (timedOut) result.ended = 'timeout';
    else if (/Kernel panic/.test(result.console)) result.ended = 'panic';
    else if (/reboot: Power down/.test(result.console)) result.ended = 'poweroff';
    else result.ended = 'exit';
    if (result.ended === 'exit' && qemu.exitCode !== 0) {
      throw new Error(`${QEMU} exited ${qemu.exitCode}: ${qemuStderr.trim()}`);
    }
  } finally {
    await served.close();
  }
  result.cycleMs = Date.now() - started;
  return result;
}
