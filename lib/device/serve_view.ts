/**
 * The booted view as a read-only NBD export (`revpatch serve-view`,
 * docs/serve-view.md). nbdkit, the standard NBD server, runs the revpatch
 * plugin (native/nbdkit/plugin.cc), which reads through the engine's View:
 * nothing is copied, so the export is ready as soon as nbdkit listens,
 * whatever the volume's size and filesystem.
 *
 * Under the device lock this reads the booted view (base, tree, layers and
 * its digest) from the commit record and takes the serve lease
 * (serve_lease.ts), so no boot can change the view between the read and the
 * export, and boot refuses with E_BUSY while it runs. The plugin refuses to
 * start if the view it opens has another digest. nbdkit runs in the
 * foreground as a child with --exit-with-parent, on a Unix socket
 * (default `<state>/view.sock`) or a TCP port bound to 127.0.0.1 only.
 *
 * Where nbdkit or the plugin is missing, startViewServer fails with
 * E_UNSUPPORTED and says how to install it; `revpatch export` is the
 * portable way to reach the view.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { constants as fsConstants, existsSync, promises as fs } from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import * as engine from '../engine/engine';
import { RevpatchError } from '../engine/errors';
import { StateLock } from '../engine/lock';
import { Device } from './device';
import { ServeLeaseHandle } from './serve_lease';

export const VIEW_SOCKET_FILE = 'view.sock';
/** The plugin's file name, next to the addon in build/Release. */
export const PLUGIN_FILE = 'revpatch_nbdkit.so';
/** How long nbdkit may take to open the view and listen. */
const READY_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 10_000;

export interface ViewServerOptions {
  /** Unix socket to listen on (default `<state>/view.sock`). */
  socket?: string;
  /** TCP port on 127.0.0.1 instead of a socket. */
  port?: number;
  /** The nbdkit binary (default: `nbdkit` on PATH). */
  nbdkit?: string;
}

export interface ViewServer {
  /** NBD URI clients connect to (nbd+unix:///?socket=… or nbd://127.0.0.1:N). */
  uri: string;
  socket: string | null;
  port: number | null;
  /** The served (booted) view's digest. */
  digest: string;
  /** nbdkit's pid. */
  pid: number;
  /** Resolves when nbdkit has exited, whether by close() or not; the lease is then gone. */
  exited: Promise<void>;
  /** Stops nbdkit and removes the lease. Safe to call more than once. */
  close(): Promise<void>;
}

const INSTALL_HELP =
  'Install nbdkit and its plugin header, then rebuild revpatch:\n' +
  '  Debian/Ubuntu: apt-get install nbdkit nbdkit-plugin-dev && npm rebuild revpatch --build-from-source\n' +
  '  macOS:         brew install nbdkit && npm rebuild revpatch --build-from-source\n' +
  '`revpatch export` writes the booted view as an image and works everywhere.';

/**
 * The plugin file: $REVPATCH_NBDKIT_PLUGIN, else build/Release (or
 * build/Debug) of this package, where binding.gyp builds it when
 * nbdkit-plugin.h was present; null if there is none.
 */
export function nbdkitPluginPath(): string | null {
  if (process.env.REVPATCH_NBDKIT_PLUGIN) {
    return existsSync(process.env.REVPATCH_NBDKIT_PLUGIN) ? path.resolve(process.env.REVPATCH_NBDKIT_PLUGIN) : null;
  }
  const root = path.resolve(__dirname, '..', '..');
  for (const dir of ['Release', 'Debug']) {
    const file = path.join(root, 'build', dir, PLUGIN_FILE);
    if (existsSync(file)) return file;
  }
  return null;
}

/** The nbdkit binary to run: `given` if executable, else the first `nbdkit` on PATH; null if none. */
export async function findNbdkit(given?: string): Promise<string | null> {
  const executable = async (file: string) =>
    fs.access(file, fsConstants.X_OK).then(
      () => true,
      () => false,
    );
  if (given !== undefined) {
    if (given.includes(path.sep)) return (await executable(given)) ? path.resolve(given) : null;
    return findNbdkitOnPath(given, executable);
  }
  return findNbdkitOnPath('nbdkit', executable);
}

async function findNbdkitOnPath(name: string, executable: (f: string) => Promise<boolean>): Promise<string | null> {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (dir === '') continue;
    const file = path.join(dir, name);
    if (await executable(file)) return file;
  }
  return null;
}

/** What stands at a Unix socket path that a new export wants. */
async function clearSocketPath(socket: string): Promise<void> {
  let stat;
  try {
    stat = await fs.lstat(socket);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (!stat.isSocket()) {
    throw new RevpatchError('E_EXISTS', `${socket} exists and is not a socket; choose another --socket`);
  }
  const listening = await new Promise<boolean>((resolve) => {
    const probe = net.connect(socket);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (listening) throw new RevpatchError('E_BUSY', `another server already listens on ${socket}`);
  await fs.rm(socket, { force: true }); // left by a server that was killed
}

function validPort(port: number): boolean {
  return Number.isInteger(port) && port >= 1 && port <= 65535;
}

/** Starts nbdkit on the booted view of `stateDir`; resolves once it accepts connections. */
export async function startViewServer(stateDir: string, options: ViewServerOptions = {}): Promise<ViewServer> {
  const dir = path.resolve(stateDir);
  if (options.socket !== undefined && options.port !== undefined) {
    throw new RevpatchError('E_INVALID_ARGUMENT', 'give a socket or a port, not both');
  }
  if (options.port !== undefined && !validPort(options.port)) {
    throw new RevpatchError('E_INVALID_ARGUMENT', `port must be a whole number from 1 to 65535, not ${options.port}`);
  }
  const nbdkit = await findNbdkit(options.nbdkit);
  if (nbdkit === null) {
    throw new RevpatchError('E_UNSUPPORTED', `nbdkit is not installed (${options.nbdkit ?? 'nbdkit on PATH'} not found).\n${INSTALL_HELP}`);
  }
  const plugin = nbdkitPluginPath();
  if (plugin === null) {
    throw new RevpatchError(
      'E_UNSUPPORTED',
      `the revpatch nbdkit plugin (${PLUGIN_FILE}) was not built: nbdkit-plugin.h was missing when revpatch was built.\n${INSTALL_HELP}`,
    );
  }
  await Device.open(dir); // E_NOT_INITIALIZED before anything is written
  const socket = options.port === undefined ? path.resolve(options.socket ?? path.join(dir, VIEW_SOCKET_FILE)) : null;

  // Under the device lock: the booted view and the lease, so no boot falls
  // between reading the view and serving it.
  let lease: ServeLeaseHandle;
  let view: engine.ViewSpec;
  let digest: string;
  const lock = await StateLock.acquire(dir);
  try {
    const device = await Device.open(dir);
    view = device.bootedView();
    digest = (await engine.viewInfo(view)).digest;
    lease = await ServeLeaseHandle.take(dir, digest);
  } finally {
    await lock.release();
  }

  try {
    if (socket !== null) await clearSocketPath(socket);
    const pidDir = await fs.mkdtemp(path.join(os.tmpdir(), 'revpatch-serve-'));
    const pidFile = path.join(pidDir, 'nbdkit.pid');
    const args = ['--foreground', '--exit-with-parent', '--readonly', '-P', pidFile];
    if (socket !== null) args.push('--unix', socket);
    else args.push('--ipaddr', '127.0.0.1', '--port', String(options.port));
    args.push(plugin, `base=${view.base}`, `tree=${view.baseTree}`);
    for (const layer of view.layers) args.push(`layer=${layer}`);
    args.push(`digest=${digest}`, `state=${dir}`);

    const child = spawn(nbdkit, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    // Until it serves, nbdkit's messages are kept to say why it failed;
    // after that (read errors naming their block) they pass through.
    let stderr = '';
    let serving = false;
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (s: string) => {
      if (serving) process.stderr.write(s);
      else if (stderr.length < 64 * 1024) stderr += s;
    });
    const exited = new Promise<void>((resolve) => {
      child.once('exit', () => resolve());
      child.once('error', () => resolve());
    });
    try {
      await waitReady(child, pidFile, exited, () => stderr, options.port);
    } finally {
      await fs.rm(pidDir, { recursive: true, force: true });
    }
    serving = true;
    if (stderr !== '') process.stderr.write(stderr);

    const uri = socket !== null ? `nbd+unix:///?socket=${socket}` : `nbd://127.0.0.1:${options.port}`;
    await lease.update({ server: child.pid!, uri });
    const cleanup = exited.then(async () => {
      await lease.release();
      if (socket !== null) await fs.rm(socket, { force: true });
    });
    return {
      uri,
      socket,
      port: options.port ?? null,
      digest,
      pid: child.pid!,
      exited: cleanup,
      close: async () => {
        await stop(child, exited);
        await cleanup;
      },
    };
  } catch (err) {
    await lease.release();
    throw err;
  }
}

/** Waits until nbdkit has written its pid file (it does once it listens), or fails with why it exited. */
async function waitReady(
  child: ChildProcess,
  pidFile: string,
  exited: Promise<void>,
  stderr: () => string,
  port: number | undefined,
): Promise<void> {
  let spawnError: Error | null = null;
  child.once('error', (err) => (spawnError = err));
  let done = false;
  void exited.then(() => (done = true));
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    if (spawnError !== null) {
      throw new RevpatchError('E_UNSUPPORTED', `cannot run nbdkit: ${(spawnError as Error).message}\n${INSTALL_HELP}`);
    }
    if (done) {
      const text = stderr().trim();
      if (port !== undefined && /address already in use/i.test(text)) {
        throw new RevpatchError('E_BUSY', `port ${port} on 127.0.0.1 is already in use; choose another --port`);
      }
      throw new RevpatchError('E_IO', `nbdkit exited before serving (status ${child.exitCode ?? child.signalCode}): ${text || 'no message'}`);
    }
    const pid = await fs.readFile(pidFile, 'utf8').catch(() => '');
    if (/^\d+\s*$/.test(pid)) return;
    if (Date.now() >= deadline) {
      await stop(child, exited);
      throw new RevpatchError('E_IO', `nbdkit did not start serving within ${READY_TIMEOUT_MS / 1000} s: ${stderr().trim()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

async function stop(child: ChildProcess, exited: Promise<void>): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) {
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
    await exited;
    clearTimeout(timer);
  }
  await exited;
}
