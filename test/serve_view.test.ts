/**
 * `serve-view`: the booted view as a read-only NBD export through nbdkit and
 * the revpatch plugin, checked with real clients (nbdcopy, qemu-img,
 * nbdinfo, nbdfuse + a read-only loop mount + e2fsck), and the serve lease
 * that makes `boot` refuse while the view is served.
 */
import t, { type Test } from 'tap';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { Device } from '../lib/device/device';
import { nbdkitPluginPath, startViewServer, type ViewServer } from '../lib/device/serve_view';
import { SERVE_LEASE_FILE } from '../lib/device/serve_lease';
import { writeKeyPair } from '../lib/patch/keys';
import { createPatch } from '../lib/publisher/create';
import { RevpatchError } from '../lib/engine/errors';
import { BLOCK, CLI, addonBuilt, exited, runCli, snapshot, stampedImage, tempDir } from './helpers';

const BLOCKS = 256;

function have(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
}

function run(cmd: string, args: string[]) {
  return spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
}

function mustRun(t: Test, cmd: string, args: string[]): string {
  const r = run(cmd, args);
  if (r.status !== 0) t.fail(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr}`);
  return r.stdout;
}

const missing = !addonBuilt()
  ? 'the addon is not built'
  : nbdkitPluginPath() === null
    ? 'the nbdkit plugin is not built (nbdkit-plugin.h missing at build time)'
    : ['nbdkit', 'nbdcopy', 'nbdinfo'].find((c) => !have(c)) ?? null;
if (missing) t.plan(0, `cannot serve: ${missing}`);

interface Fixture {
  dir: string;
  state: string;
  base: Buffer;
  v1: Buffer;
  v2: Buffer;
  patches: { fix1: string; fix2: string };
}

/** base -> v1 (fix-1: changed blocks 10..13, zeroed 50..59) -> v2 (fix-2, stacked: blocks 30..32). */
async function fixture(t: Test): Promise<Fixture> {
  const dir = await tempDir(t, 'revpatch-serve-');
  const base = stampedImage(BLOCKS, 'base');
  const v1 = Buffer.from(base);
  stampedImage(4, 'v1').copy(v1, 10 * BLOCK);
  v1.fill(0, 50 * BLOCK, 60 * BLOCK);
  const v2 = Buffer.from(v1);
  stampedImage(3, 'v2').copy(v2, 30 * BLOCK);
  const files: Record<string, string> = {};
  for (const [name, data] of Object.entries({ base, v1, v2 })) {
    files[name] = path.join(dir, `${name}.img`);
    await fs.writeFile(files[name], data);
  }
  const keys = await writeKeyPair(path.join(dir, 'keys'));
  const fix1 = path.join(dir, 'fix-1.rvp');
  const fix2 = path.join(dir, 'fix-2.rvp');
  await createPatch({ from: files.base, to: files.v1, keyPath: keys.secretKeyPath, id: 'fix-1', out: fix1, blockSize: BLOCK });
  await createPatch({ from: files.v1, to: files.v2, keyPath: keys.secretKeyPath, id: 'fix-2', out: fix2, blockSize: BLOCK, parent: 'fix-1' });
  const state = path.join(dir, 'state');
  await Device.init(state, { volume: files.base, trust: keys.publicKeyPath, blockSize: BLOCK });
  const device = await Device.open(state);
  await device.install(fix1);
  await device.boot();
  return { dir, state, base, v1, v2, patches: { fix1, fix2 } };
}

async function serve(t: Test, state: string, options: Parameters<typeof startViewServer>[1] = {}): Promise<ViewServer> {
  const server = await startViewServer(state, options);
  t.teardown(() => server.close());
  return server;
}

async function exportImage(f: Fixture): Promise<Buffer> {
  const out = path.join(f.dir, `export-${Date.now()}.img`);
  await (await Device.open(f.state)).export(out, { mode: 'copy' });
  const data = await fs.readFile(out);
  await fs.rm(out);
  return data;
}

async function nbdcopy(t: Test, f: Fixture, uri: string, extra: string[] = []): Promise<Buffer> {
  const out = path.join(f.dir, `nbdcopy-${Date.now()}-${Math.random().toString(16).slice(2)}.img`);
  mustRun(t, 'nbdcopy', [...extra, uri, out]);
  const data = await fs.readFile(out);
  await fs.rm(out);
  return data;
}

/** The child's first stdout line. */
function firstLine(child: ChildProcess): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const nl = out.indexOf('\n');
      if (nl >= 0) resolve(out.slice(0, nl));
    });
    child.once('exit', (code) => reject(new Error(`exited ${code} before serving: ${err}`)));
  });
}

function spawnCli(t: Test, args: string[]): ChildProcess {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited(child);
  });
  return child;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function waitGone(pid: number): Promise<void> {
  for (let i = 0; i < 500 && pidAlive(pid); i++) await new Promise((r) => setTimeout(r, 20));
}

/** The corrupt-read lines of the state directory's audit trail. */
async function auditLines(state: string): Promise<Array<Record<string, unknown>>> {
  const text = await fs.readFile(path.join(state, 'audit.ndjson'), 'utf8').catch(() => '');
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((e) => e.event === 'corrupt-read');
}

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

t.test('nbdcopy of the export equals `revpatch export` byte for byte, over one and four connections', async (t) => {
  const f = await fixture(t);
  const server = await serve(t, f.state);
  const exportedImage = await exportImage(f);
  t.ok(exportedImage.equals(f.v1), 'export holds the patched image');
  t.match(server.uri, /^nbd\+unix:\/\/\/\?socket=/);
  t.equal(server.socket, path.join(f.state, 'view.sock'));
  t.equal(server.digest, (await (await Device.open(f.state)).status()).bootedDigest);
  t.ok((await nbdcopy(t, f, server.uri)).equals(exportedImage), 'one connection');
  const multi = await nbdcopy(t, f, server.uri, ['--connections=4', '--requests=16', '--request-size=8192']);
  t.ok(multi.equals(exportedImage), 'four connections, many small requests in flight');
  const info = JSON.parse(mustRun(t, 'nbdinfo', ['--json', server.uri])) as { exports: Array<Record<string, unknown>> };
  t.equal(info.exports[0]['is_read_only'], true, 'read-only export');
  t.equal(info.exports[0]['can_multi_conn'], true, 'multi-connection');
  t.equal(info.exports[0]['export-size'], f.v1.length);
});

t.test('qemu-img convert of the export equals the exported image', { skip: !have('qemu-img') && 'qemu-img missing' }, async (t) => {
  const f = await fixture(t);
  const server = await serve(t, f.state);
  const out = path.join(f.dir, 'qemu.img');
  mustRun(t, 'qemu-img', ['convert', '-f', 'raw', '-O', 'raw', server.uri, out]);
  t.ok((await fs.readFile(out)).equals(await exportImage(f)));
});

t.test('block status reports the zeroed region as a zero hole and the rest as data', async (t) => {
  const f = await fixture(t);
  const server = await serve(t, f.state);
  const map = JSON.parse(mustRun(t, 'nbdinfo', ['--map', '--json', server.uri])) as Array<{ offset: number; length: number; type: number }>;
  const zero = map.filter((e) => (e.type & 2) !== 0);
  t.same(
    zero.map((e) => [e.offset, e.length, e.type]),
    [[50 * BLOCK, 10 * BLOCK, 3]],
    'blocks 50..59 (zero entries of the layer) are hole + zero',
  );
  t.equal(map.reduce((n, e) => n + e.length, 0), f.v1.length, 'the map covers the whole view');
});

t.test('a hole in the base is a zero hole only where the tree says the block is zeros', async (t) => {
  const dir = await tempDir(t, 'revpatch-serve-sparse-');
  const image = path.join(dir, 'sparse.img');
  // 64 blocks: data in block 0 and 63, a hole between.
  const fh = await fs.open(image, 'w');
  await fh.write(stampedImage(1, 'first'), 0, BLOCK, 0);
  await fh.write(stampedImage(1, 'last'), 0, BLOCK, 63 * BLOCK);
  await fh.close();
  const keys = await writeKeyPair(path.join(dir, 'keys'));
  const state = path.join(dir, 'state');
  await Device.init(state, { volume: image, trust: keys.publicKeyPath, blockSize: BLOCK });
  await (await Device.open(state)).boot();
  const server = await serve(t, state);
  const map = JSON.parse(mustRun(t, 'nbdinfo', ['--map', '--json', server.uri])) as Array<{ offset: number; length: number; type: number }>;
  const holes = map.filter((e) => e.type === 3).map((e) => [e.offset, e.length]);
  if (holes.length === 0) {
    t.comment('this filesystem reports no holes (no SEEK_HOLE): everything is data');
    t.ok(map.every((e) => e.type === 0));
  } else {
    t.same(holes, [[BLOCK, 62 * BLOCK]], 'blocks 1..62 are a zero hole');
  }
  const copy = path.join(dir, 'copy.img');
  mustRun(t, 'nbdcopy', [server.uri, copy]);
  t.ok((await fs.readFile(copy)).equals(await fs.readFile(image)), 'the copy skips the hole and is still exact');
  if (holes.length === 0 || !have('fallocate')) return;
  // The base loses block 0's data (a hole punched behind revpatch's back):
  // the tree still expects data there, so it is not reported as zeros.
  mustRun(t, 'fallocate', ['--punch-hole', '--offset', '0', '--length', String(BLOCK), image]);
  const after = JSON.parse(mustRun(t, 'nbdinfo', ['--map', '--json', server.uri])) as Array<{ offset: number; length: number; type: number }>;
  t.same(
    after.filter((e) => e.type === 3).map((e) => [e.offset, e.length]),
    [[BLOCK, 62 * BLOCK]],
    'a punched block whose tree leaf is data is still reported as data',
  );
  t.equal(after[0].offset, 0);
  t.equal(after[0].type, 0);
  // And reading it fails its check: an I/O error, never the zeros.
  const broken = run('nbdcopy', [server.uri, path.join(dir, 'broken.img')]);
  t.not(broken.status, 0, 'the read of the punched block fails');
  const audit = await auditLines(state);
  t.match(audit, [{ event: 'corrupt-read', source: 'nbd', block: 0, layer: null }]);
});

const cannotMount =
  process.getuid?.() !== 0
    ? 'not root: loop mounts need root'
    : (['nbdfuse', 'mkfs.ext4', 'e2fsck', 'fusermount3'].map((c) => (have(c) ? null : `${c} missing`)).find((c) => c) ?? null);

t.test('an ext4 volume served through nbdfuse mounts read-only, checks clean and shows the patched file', { skip: cannotMount ?? false }, async (t) => {
  const dir = await tempDir(t, 'revpatch-serve-ext4-');
  const content = path.join(dir, 'content');
  await fs.mkdir(content);
  await fs.writeFile(path.join(content, 'version.txt'), 'browser 1.0 (vulnerable)\n');
  await fs.writeFile(path.join(content, 'other.txt'), 'unchanged\n'.repeat(1000));
  const base = path.join(dir, 'base.img');
  mustRun(t, 'mkfs.ext4', ['-q', '-F', '-b', '4096', '-E', 'lazy_itable_init=0,lazy_journal_init=0', '-d', content, base, '16M']);
  // The patched volume: the same filesystem with the file rewritten in place.
  const v1 = path.join(dir, 'v1.img');
  await fs.copyFile(base, v1);
  const mnt = path.join(dir, 'mnt');
  await fs.mkdir(mnt);
  mustRun(t, 'mount', ['-o', 'loop', v1, mnt]);
  await fs.writeFile(path.join(mnt, 'version.txt'), 'browser 1.1 (patched)\n');
  mustRun(t, 'umount', [mnt]);

  const keys = await writeKeyPair(path.join(dir, 'keys'));
  const patch = path.join(dir, 'fix.rvp');
  await createPatch({ from: base, to: v1, keyPath: keys.secretKeyPath, id: 'fix', out: patch, blockSize: 4096 });
  const state = path.join(dir, 'state');
  await Device.init(state, { volume: base, trust: keys.publicKeyPath, blockSize: 4096 });
  const device = await Device.open(state);
  await device.install(patch);
  await device.boot();
  const server = await serve(t, state);

  const fuse = path.join(dir, 'fuse');
  await fs.mkdir(fuse);
  const nbdfuse = spawn('nbdfuse', ['-r', path.join(fuse, 'view'), server.uri], { stdio: ['ignore', 'ignore', 'pipe'] });
  let fuseErr = '';
  nbdfuse.stderr!.on('data', (d: Buffer) => (fuseErr += d.toString()));
  t.teardown(async () => {
    run('fusermount3', ['-u', fuse]);
    if (nbdfuse.exitCode === null) nbdfuse.kill('SIGTERM');
    await exited(nbdfuse);
  });
  const file = path.join(fuse, 'view');
  for (let i = 0; i < 500 && !existsSync(file); i++) await new Promise((r) => setTimeout(r, 20));
  t.ok(existsSync(file), `nbdfuse exposes the view as a file ${fuseErr}`);
  t.equal((await fs.stat(file)).size, (await fs.stat(v1)).size);
  t.ok((await fs.readFile(file)).equals(await fs.readFile(v1)), 'the file holds the patched volume');

  const fsck = run('e2fsck', ['-fn', file]);
  t.equal(fsck.status, 0, `e2fsck -fn is clean: ${fsck.stdout}${fsck.stderr}`);
  const ro = path.join(dir, 'ro');
  await fs.mkdir(ro);
  const mounted = run('mount', ['-o', 'loop,ro', file, ro]);
  t.equal(mounted.status, 0, `loop mount read-only: ${mounted.stderr}`);
  if (mounted.status !== 0) return;
  t.teardown(() => run('umount', [ro]));
  t.equal(await fs.readFile(path.join(ro, 'version.txt'), 'utf8'), 'browser 1.1 (patched)\n', 'the changed file shows the patch');
  t.equal(await fs.readFile(path.join(ro, 'other.txt'), 'utf8'), 'unchanged\n'.repeat(1000), 'an unchanged file reads from the base');
  t.equal(run('umount', [ro]).status, 0);
});

t.test('boot refuses with E_BUSY while the view is served, changes nothing, and works after close', async (t) => {
  const f = await fixture(t);
  // The socket outside the state directory, so the snapshot reads only files.
  const server = await serve(t, f.state, { socket: path.join(f.dir, 'view.sock') });
  const before = await snapshot(f.state);
  await t.rejects((await Device.open(f.state)).boot(), {
    code: 'E_BUSY',
    message: new RegExp(`served at ${server.uri.replace(/[?+/.]/g, '\\$&')} by pid ${process.pid}, nbdkit pid ${server.pid}.*kill -TERM ${process.pid}`),
  });
  t.same(await snapshot(f.state), before, 'the refused boot changed nothing');
  const cli = runCli(['--state', f.state, 'boot']);
  t.equal(cli.code, 1);
  t.match(cli.stderr, /^error E_BUSY: the booted view is being served/);
  await t.rejects(startViewServer(f.state, { socket: path.join(f.dir, 'second.sock') }), { code: 'E_BUSY' }, 'one export at a time');

  await server.close();
  t.notOk(existsSync(path.join(f.state, SERVE_LEASE_FILE)), 'close removes the lease');
  t.notOk(existsSync(path.join(f.dir, 'view.sock')), 'and the socket');
  t.notOk(pidAlive(server.pid), 'and nbdkit is gone');
  const report = await (await Device.open(f.state)).boot();
  t.same(report.trial, ['fix-1']);
});

t.test('the export is the booted view: a staged patch appears only after boot and a new export', async (t) => {
  const f = await fixture(t);
  const first = await serve(t, f.state);
  await (await Device.open(f.state)).install(f.patches.fix2);
  t.ok((await nbdcopy(t, f, first.uri)).equals(f.v1), 'the staged patch is not served');
  await first.close();
  await (await Device.open(f.state)).boot();
  const second = await serve(t, f.state);
  t.not(second.digest, first.digest);
  t.ok((await nbdcopy(t, f, second.uri)).equals(f.v2), 'after boot, a new export serves it');
});

t.test('a killed serve-view leaves a stale lease that does not block boot', async (t) => {
  const f = await fixture(t);
  const child = spawnCli(t, ['--state', f.state, '--json', 'serve-view']);
  const ready = JSON.parse(await firstLine(child)) as { uri: string; pid: number; digest: string; socket: string; port: null };
  t.equal(ready.socket, path.join(f.state, 'view.sock'));
  t.equal(ready.port, null);
  t.ok(existsSync(path.join(f.state, SERVE_LEASE_FILE)));
  child.kill('SIGKILL');
  await exited(child);
  await waitGone(ready.pid); // nbdkit follows its parent (--exit-with-parent)
  t.notOk(pidAlive(ready.pid), 'nbdkit stopped with its parent');
  t.ok(existsSync(path.join(f.state, SERVE_LEASE_FILE)), 'the lease is left behind');
  const report = await (await Device.open(f.state)).boot();
  t.same(report.trial, ['fix-1'], 'boot goes ahead past the stale lease');
  const again = await serve(t, f.state);
  t.ok((await nbdcopy(t, f, again.uri)).equals(f.v1), 'a new export replaces the stale lease and the stale socket');
});

t.test('when nbdkit dies on its own the lease goes with it', async (t) => {
  const f = await fixture(t);
  const server = await serve(t, f.state);
  process.kill(server.pid, 'SIGKILL');
  await server.exited;
  t.notOk(existsSync(path.join(f.state, SERVE_LEASE_FILE)));
  await (await Device.open(f.state)).boot();
});

t.test('serve-view on the command line: ready line, SIGTERM stops it with exit 0 and no lease', async (t) => {
  const f = await fixture(t);
  const child = spawnCli(t, ['--state', f.state, 'serve-view']);
  const line = await firstLine(child);
  t.equal(line, `serving nbd+unix:///?socket=${path.join(f.state, 'view.sock')}`);
  t.ok((await nbdcopy(t, f, line.slice('serving '.length))).equals(f.v1));
  const code = new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  child.kill('SIGTERM');
  t.equal(await code, 0);
  t.notOk(existsSync(path.join(f.state, SERVE_LEASE_FILE)));
  t.notOk(existsSync(path.join(f.state, 'view.sock')));

  const sigint = spawnCli(t, ['--state', f.state, 'serve-view', '--socket', path.join(f.dir, 'other.sock')]);
  t.match(await firstLine(sigint), /^serving nbd\+unix:\/\/\/\?socket=.*other\.sock$/);
  const code2 = new Promise<number | null>((resolve) => sigint.once('exit', (c) => resolve(c)));
  sigint.kill('SIGINT');
  t.equal(await code2, 0, 'SIGINT too');
});

t.test('serve-view --port listens on 127.0.0.1 only and reports a port in use', async (t) => {
  const f = await fixture(t);
  const port = await freePort();
  // The options after the command, as DESIGN.md writes it.
  const child = spawnCli(t, ['serve-view', '--port', String(port), '--state', f.state, '--json']);
  const ready = JSON.parse(await firstLine(child)) as { uri: string; port: number; socket: null; digest: string; pid: number };
  t.same({ uri: ready.uri, port: ready.port, socket: ready.socket }, { uri: `nbd://127.0.0.1:${port}`, port, socket: null });
  t.ok((await nbdcopy(t, f, ready.uri)).equals(f.v1));
  const ss = run('ss', ['-Hltn', `sport = :${port}`]);
  if (ss.status === 0) t.match(ss.stdout.trim(), /^LISTEN\s+\d+\s+\d+\s+127\.0\.0\.1:/, 'bound to loopback only');
  const code = new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  child.kill('SIGTERM');
  t.equal(await code, 0);

  const blocker = net.createServer();
  await new Promise<void>((resolve) => blocker.listen(port, '127.0.0.1', resolve));
  t.teardown(() => new Promise((resolve) => blocker.close(resolve)));
  const busy = runCli(['--state', f.state, 'serve-view', '--port', String(port)]);
  t.equal(busy.code, 1);
  t.match(busy.stderr, new RegExp(`^error E_BUSY: port ${port} on 127\\.0\\.0\\.1 is already in use`));
  t.notOk(existsSync(path.join(f.state, SERVE_LEASE_FILE)), 'a failed start leaves no lease');
});

t.test('serve-view refuses bad flags with a usage error (exit 2)', async (t) => {
  const f = await fixture(t);
  const before = await snapshot(f.state);
  for (const args of [
    ['--socket', path.join(f.dir, 'a.sock'), '--port', '10809'],
    ['--port', 'abc'],
    ['--port', '0'],
    ['--port', '70000'],
    ['--port'],
    ['--bogus'],
    ['extra-argument'],
  ]) {
    const r = runCli(['--state', f.state, 'serve-view', ...args]);
    t.equal(r.code, 2, `serve-view ${args.join(' ')}: ${r.stderr.split('\n')[0]}`);
  }
  t.same(await snapshot(f.state), before, 'nothing written');
  await t.rejects(startViewServer(f.state, { socket: 'a', port: 1 }), { code: 'E_INVALID_ARGUMENT' });
  await t.rejects(startViewServer(f.state, { port: 0 }), { code: 'E_INVALID_ARGUMENT' });
});

t.test('missing nbdkit or plugin fails with E_UNSUPPORTED and the install commands', async (t) => {
  const f = await fixture(t);
  const before = await snapshot(f.state);
  const err = await startViewServer(f.state, { nbdkit: path.join(f.dir, 'no', 'nbdkit') }).catch((e: unknown) => e);
  t.ok(err instanceof RevpatchError);
  t.equal((err as RevpatchError).code, 'E_UNSUPPORTED');
  t.match((err as Error).message, /apt-get install nbdkit nbdkit-plugin-dev/);
  t.match((err as Error).message, /brew install nbdkit/);
  t.match((err as Error).message, /revpatch export/);

  const noPath = runCli(['--state', f.state, 'serve-view'], { PATH: path.join(f.dir, 'empty') });
  t.equal(noPath.code, 1);
  t.match(noPath.stderr, /^error E_UNSUPPORTED: nbdkit is not installed/);
  const noPlugin = runCli(['--state', f.state, 'serve-view'], { REVPATCH_NBDKIT_PLUGIN: path.join(f.dir, 'none.so') });
  t.equal(noPlugin.code, 1);
  t.match(noPlugin.stderr, /^error E_UNSUPPORTED: the revpatch nbdkit plugin/);
  t.same(await snapshot(f.state), before, 'nothing written, no lease');
});

t.test('serve-view on a directory without a device fails with E_NOT_INITIALIZED', async (t) => {
  const dir = await tempDir(t);
  const r = runCli(['--state', dir, 'serve-view']);
  t.equal(r.code, 1);
  t.match(r.stderr, /^error E_NOT_INITIALIZED/);
  t.same(await fs.readdir(dir), []);
});

t.test('the plugin refuses to start on a view whose digest is not the expected one', async (t) => {
  const f = await fixture(t);
  const view = (await Device.open(f.state)).bootedView();
  const args = [
    '--foreground', '--readonly', '--unix', path.join(f.dir, 'p.sock'), nbdkitPluginPath()!,
    `base=${view.base}`, `tree=${view.baseTree}`, ...view.layers.map((l) => `layer=${l}`), `state=${f.state}`,
  ];
  const wrong = run('nbdkit', [...args, `digest=${'0'.repeat(64)}`]);
  t.not(wrong.status, 0);
  t.match(wrong.stderr, /the view's digest is [0-9a-f]{64}, expected 0{64}/);
  const badHex = run('nbdkit', [...args, 'digest=xyz']);
  t.not(badHex.status, 0);
  t.match(badHex.stderr, /digest=xyz is not a 64-digit hex SHA-256/);
  const noBase = run('nbdkit', ['--foreground', '--readonly', '--unix', path.join(f.dir, 'p.sock'), nbdkitPluginPath()!, `digest=${'0'.repeat(64)}`]);
  t.not(noBase.status, 0);
  t.match(noBase.stderr, /missing parameter base=/);
  const brokenChain = run('nbdkit', [
    '--foreground', '--readonly', '--unix', path.join(f.dir, 'p.sock'), nbdkitPluginPath()!,
    `base=${view.base}`, `tree=${view.baseTree}`, `digest=${'0'.repeat(64)}`, `layer=${view.base}`,
  ]);
  t.not(brokenChain.status, 0);
  t.match(brokenChain.stderr, /cannot open the view/);
  const badVerify = run('nbdkit', [...args, `digest=${'0'.repeat(64)}`, 'verify=maybe']);
  t.not(badVerify.status, 0);
  t.match(badVerify.stderr, /verify=maybe: expected on or off/);
});

t.test('verify=off (benchmarks only) serves the same bytes without checks, and says so', async (t) => {
  const f = await fixture(t);
  const device = await Device.open(f.state);
  const view = device.bootedView();
  const sock = path.join(f.dir, 'unverified.sock');
  const child = spawn('nbdkit', [
    '--foreground', '--readonly', '--unix', sock, nbdkitPluginPath()!,
    `base=${view.base}`, `tree=${view.baseTree}`, ...view.layers.map((l) => `layer=${l}`),
    `digest=${(await device.status()).bootedDigest}`, 'verify=off',
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  t.teardown(() => child.kill('SIGKILL'));
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  for (let i = 0; i < 500 && !existsSync(sock); i++) await new Promise((r) => setTimeout(r, 20));
  const out = path.join(f.dir, 'unverified.img');
  const copy = run('nbdcopy', [`nbd+unix:///?socket=${sock}`, out]);
  t.equal(copy.status, 0, copy.stderr);
  t.ok((await fs.readFile(out)).equals(f.v1), 'the same bytes as the booted view');
  t.match(stderr, /verify=off: blocks are served without their hash checks/);
});

t.test('a block that fails its check is an I/O error to the client, named in the log and the audit trail', async (t) => {
  const f = await fixture(t);
  const child = spawnCli(t, ['--state', f.state, 'serve-view']);
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const line = await firstLine(child);
  const uri = line.slice('serving '.length);
  const layer = (await Device.open(f.state)).bootedView().layers[0];
  // One byte of the layer's first data block (after its one-block header),
  // changed in place as a failing disk would.
  const fh = await fs.open(layer, 'r+');
  const byte = Buffer.alloc(1);
  await fh.read(byte, 0, 1, BLOCK + 100);
  byte[0] ^= 0xff;
  await fh.write(byte, 0, 1, BLOCK + 100);
  await fh.close();
  const copy = run('nbdcopy', [uri, path.join(f.dir, 'broken.img')]);
  t.not(copy.status, 0, 'nbdcopy fails');
  t.notOk(existsSync(path.join(f.dir, 'broken.img')) && (await fs.readFile(path.join(f.dir, 'broken.img'))).equals(f.v1), 'no complete copy');
  const audit = await auditLines(f.state);
  t.ok(audit.length >= 1, 'at least one corrupt-read line');
  t.match(audit[0], { event: 'corrupt-read', source: 'nbd', layer: path.basename(layer), detail: String, time: /^\d{4}-\d\d-\d\dT/ });
  t.ok([10, 11, 12, 13].includes(audit[0].block as number), `the bad block is one the layer holds (${audit[0].block})`);
  await new Promise((r) => setTimeout(r, 100));
  t.match(stderr, /read of blocks? \d+(\.\.\d+)? failed: E_CORRUPT/, 'the server names the block');
});
