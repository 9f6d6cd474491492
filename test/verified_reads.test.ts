/**
 * Never serve wrong bytes (issue 14, part 0): a base changed in place is
 * refused at boot (E_BASE_CHANGED), every read of a changed block fails
 * (E_CORRUPT, with a `corrupt-read` line in the audit trail), `revpatch
 * verify` finds it and is the way out once the base is right again, and a
 * reflink export says it did not read the base.
 */
import t, { type Test } from 'tap';
import { promises as fs, existsSync } from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { Device } from '../lib/device/device';
import * as engine from '../lib/engine/engine';
import { addonBuilt, BLOCK, CliResult, ROOT, runCli, snapshot, stampedImage, tempDir } from './helpers';

const built = addonBuilt() && existsSync(path.join(ROOT, 'dist', 'cli', 'cli_verify.js'));

const expectError = (t: Test, r: CliResult, code: string, exit = 1) => {
  t.equal(r.code, exit, `exit ${exit}: ${r.stderr}`);
  t.match(r.stderr, new RegExp(`^error ${code}: .+`, 'm'), `stderr says error ${code}`);
};

interface Setup {
  dir: string;
  state: string;
  volume: string;
  base: Buffer;
  next: Buffer;
  cli: (...args: string[]) => CliResult;
}

/** A device with patch fix-1 (blocks 7..9 changed) installed, booted and confirmed, in `root`. */
async function activeDevice(t: Test, root?: string): Promise<Setup> {
  const dir = root ?? (await tempDir(t));
  const state = path.join(dir, 'state');
  const volume = path.join(dir, 'base.img');
  const base = stampedImage(64, 'base');
  const next = Buffer.from(base);
  stampedImage(3, 'fix').copy(next, 7 * BLOCK);
  await fs.writeFile(volume, base);
  // Whole milliseconds, which fs.utimes can put back exactly.
  const when = new Date(Date.UTC(2026, 0, 1));
  await fs.utimes(volume, when, when);
  await fs.writeFile(path.join(dir, 'next.img'), next);
  const cli = (...args: string[]) => runCli(['--state', state, ...args]);
  const ok = (r: CliResult) => t.equal(r.code, 0, r.stderr);
  ok(runCli(['keygen', '--out', path.join(dir, 'keys')]));
  ok(runCli(['create', '--from', volume, '--to', path.join(dir, 'next.img'), '--key', path.join(dir, 'keys', 'revpatch.key'),
    '--id', 'fix-1', '--out', path.join(dir, 'fix.rvp')]));
  ok(cli('init', '--volume', volume, '--trust', path.join(dir, 'keys', 'revpatch.pub')));
  ok(cli('install', path.join(dir, 'fix.rvp')));
  ok(cli('boot'));
  ok(cli('confirm'));
  return { dir, state, volume, base, next, cli };
}

/** Changes one byte of `file` in place (same size), then puts its mtime back as it was. */
async function flipByte(file: string, offset: number, keepMtime = true): Promise<void> {
  const before = await fs.stat(file);
  const handle = await fs.open(file, 'r+');
  try {
    const byte = Buffer.alloc(1);
    await handle.read(byte, 0, 1, offset);
    byte[0] ^= 0x20;
    await handle.write(byte, 0, 1, offset);
    await handle.sync();
  } finally {
    await handle.close();
  }
  if (keepMtime) await fs.utimes(file, before.atime, before.mtime);
}

async function auditLines(state: string): Promise<Array<Record<string, unknown>>> {
  const text = await fs.readFile(path.join(state, 'audit.ndjson'), 'utf8').catch(() => '');
  return text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
}

if (!built) {
  t.skip('CLI not built (npm run build)', () => {});
} else {
  t.test('a base byte changed in place: boot refuses, reads and export fail, verify finds it', async (t) => {
    const s = await activeDevice(t);
    const bootedDigest = JSON.parse(s.cli('status', '--json').stdout).bootedDigest as string;
    const mtimeBefore = (await fs.stat(s.volume, { bigint: true })).mtimeNs;
    await flipByte(s.volume, 20 * BLOCK + 5);
    t.equal((await fs.stat(s.volume, { bigint: true })).mtimeNs, mtimeBefore, 'the mtime was put back: only ctime tells');
    t.equal((await fs.stat(s.volume)).size, s.base.length, 'same size');

    // boot: refused before anything is committed or collected (a stray
    // layer no record names, which a boot would delete, stays).
    await fs.writeFile(path.join(s.state, 'layers', 'stray.layer'), 'unsealed');
    const before = await snapshot(s.state);
    const refused = s.cli('boot');
    expectError(t, refused, 'E_BASE_CHANGED');
    t.match(refused.stderr, /change time/, 'says what changed');
    t.match(refused.stderr, /revpatch verify/, 'names the way out: verify');
    t.match(refused.stderr, /revpatch init/, 'or init again');
    t.same(await snapshot(s.state), before, 'the state directory is exactly as before');
    const record = await engine.readCommitRecord(path.join(s.state, 'commit.rec'));
    t.equal(JSON.parse(record.body).boots, 1, 'no boot was counted');

    // status does not pretend the bytes match.
    const status = JSON.parse(s.cli('status', '--json').stdout);
    t.same(status.baseChanges, ['change time'], 'status reports the changed base');
    t.equal(status.bootedDigest, bootedDigest, 'the digest is the record\'s');
    t.match(s.cli('status').stdout, /base volume changed since it was recorded.*not checked against its bytes; run `revpatch verify`/);

    // export (copy): fails, the old image stays, no temp file is left.
    const out = path.join(s.dir, 'out.img');
    await fs.writeFile(out, 'old image');
    const exported = s.cli('export', '--out', out, '--mode', 'copy');
    expectError(t, exported, 'E_CORRUPT');
    t.match(exported.stderr, /block 20 of the base/);
    t.equal(await fs.readFile(out, 'utf8'), 'old image', 'the old image is untouched');
    t.same((await fs.readdir(s.dir)).filter((n) => n.includes('.tmp')), [], 'no temp file left');

    // Library reads: the changed block fails, the others read.
    const device = await Device.open(s.state);
    await t.rejects(device.read(20 * BLOCK, BLOCK), { code: 'E_CORRUPT' });
    await t.rejects(engine.readView(device.bootedView(), 19 * BLOCK, 2 * BLOCK), { code: 'E_CORRUPT' });
    t.ok((await device.read(7 * BLOCK, 3 * BLOCK)).equals(s.next.subarray(7 * BLOCK, 10 * BLOCK)), 'patched blocks read');
    t.ok((await device.read(21 * BLOCK, BLOCK)).equals(s.base.subarray(21 * BLOCK, 22 * BLOCK)), 'other base blocks read');
    const unchecked = await engine.readView(device.bootedView(), 20 * BLOCK, BLOCK, { verify: false });
    t.not(unchecked.equals(s.base.subarray(20 * BLOCK, 21 * BLOCK)), true, 'unverified, the changed byte would be served');

    // verify: exit 1, JSON with the bad block, nothing recorded.
    const verified = s.cli('verify', '--json');
    expectError(t, verified, 'E_CORRUPT');
    const report = JSON.parse(verified.stdout);
    t.match(report, { ok: false, bad: 1, baseBad: 1, layerBad: 0, fingerprintRecorded: false });
    t.equal(report.blocks, 128, 'the booted view and, the base having changed, the whole base');
    t.same(report.badBlocks.map((b: { block: number; layer: string | null }) => [b.block, b.layer]), [[20, null]]);
    expectError(t, s.cli('boot'), 'E_BASE_CHANGED');

    const audit = (await auditLines(s.state)).filter((l) => l.event === 'corrupt-read');
    t.same([...new Set(audit.map((l) => l.source))].sort(), ['export', 'read', 'verify'], 'each reader left an audit line');
    for (const line of audit) {
      t.match(line, { block: 20, layer: null, detail: /block 20 of the base/ });
      t.ok(!Number.isNaN(Date.parse(line.time as string)), 'an ISO time');
    }

    // The base put right: verify passes, records it, boot proceeds.
    await flipByte(s.volume, 20 * BLOCK + 5);
    const clean = s.cli('verify', '--json');
    t.equal(clean.code, 0, clean.stderr);
    t.match(JSON.parse(clean.stdout), { ok: true, bad: 0, badBlocks: [], fingerprintRecorded: true });
    t.equal(s.cli('boot').code, 0, 'boot proceeds after a clean verify');
    t.same(JSON.parse(s.cli('status', '--json').stdout).baseChanges, []);
  });

  t.test('a harmless touch: verify is the way out, and a clean verify with nothing changed records nothing', async (t) => {
    const s = await activeDevice(t);
    let r = s.cli('verify', '--json');
    t.equal(r.code, 0, r.stderr);
    t.match(JSON.parse(r.stdout), { ok: true, blocks: 64, baseChanges: [], fingerprintRecorded: false });
    const later = new Date(Date.now() + 60_000);
    await fs.utimes(s.volume, later, later);
    expectError(t, s.cli('boot'), 'E_BASE_CHANGED');
    r = s.cli('verify');
    t.equal(r.code, 0, r.stderr);
    t.match(r.stdout, /every block matches the tree/);
    t.match(r.stdout, /recorded the base volume as it is now; boot proceeds/);
    t.equal(s.cli('boot').code, 0);
  });

  t.test('a base that changed size: boot and verify both refuse with E_BASE_CHANGED', async (t) => {
    const s = await activeDevice(t);
    await fs.appendFile(s.volume, Buffer.alloc(BLOCK, 1));
    const before = await snapshot(s.state);
    expectError(t, s.cli('boot'), 'E_BASE_CHANGED');
    const r = s.cli('verify');
    expectError(t, r, 'E_BASE_CHANGED');
    t.match(r.stderr, /put the original base back, or set the device up again with `revpatch init`/);
    t.same(await snapshot(s.state), before, 'nothing recorded');
  });

  t.test('a changed layer block fails reads naming the layer, and verify counts it', async (t) => {
    const s = await activeDevice(t);
    const layers = (await fs.readdir(path.join(s.state, 'layers'))).filter((n) => n.endsWith('.layer'));
    t.equal(layers.length, 1);
    // The first data block follows the one-block header.
    await flipByte(path.join(s.state, 'layers', layers[0]), BLOCK + 100);
    const device = await Device.open(s.state);
    await t.rejects(device.read(0, 64 * BLOCK), { code: 'E_CORRUPT' });
    const r = s.cli('verify', '--json');
    expectError(t, r, 'E_CORRUPT');
    const report = JSON.parse(r.stdout);
    t.match(report, { ok: false, bad: 1, baseBad: 0, layerBad: 1 });
    t.equal(report.badBlocks[0].layer, layers[0]);
    const audit = (await auditLines(s.state)).filter((l) => l.event === 'corrupt-read');
    t.ok(audit.some((l) => l.source === 'read' && l.layer === layers[0]), 'the read left a line naming the layer');
    t.ok(audit.some((l) => l.source === 'verify' && l.layer === layers[0]));
  });

  t.test('an open view serves parallel reads, each verified, and refuses reads once closed', async (t) => {
    const s = await activeDevice(t);
    await flipByte(s.volume, 40 * BLOCK + 1);
    const device = await Device.open(s.state);
    const view = await engine.openView(device.bootedView());
    const reads = [];
    for (let i = 0; i < 64; i++) reads.push(view.read(i * BLOCK, BLOCK).then((b) => ({ i, b }), (e) => ({ i, e })));
    for (const r of await Promise.all(reads)) {
      if (r.i === 40) {
        t.match((r as { e: unknown }).e, { code: 'E_CORRUPT' }, 'the changed block fails');
        t.match(engine.corruptReadsOf((r as { e: unknown }).e), [{ block: 40, layer: -1 }]);
      } else {
        t.ok((r as { b: Buffer }).b.equals(s.next.subarray(r.i * BLOCK, (r.i + 1) * BLOCK)), `block ${r.i}`);
      }
    }
    const unchecked = await engine.openView(device.bootedView(), { verify: false });
    t.equal((await unchecked.read(40 * BLOCK, BLOCK)).length, BLOCK, 'unverified, it would be served');
    unchecked.close();
    view.close();
    await t.rejects(view.read(0, BLOCK), { code: 'E_INVALID_ARGUMENT' });
    await t.rejects(engine.openView({ base: s.volume, baseTree: path.join(s.state, 'missing.tree'), layers: [] }), { code: 'E_NOT_FOUND' });
  });

  t.test('a record without a fingerprint gets one at its next boot', async (t) => {
    const s = await activeDevice(t);
    const file = path.join(s.state, 'commit.rec');
    const old = await engine.readCommitRecord(file);
    const body = JSON.parse(old.body);
    delete body.device.baseFingerprint;
    await engine.writeCommitRecord(file, old.generation, JSON.stringify(body));
    t.same(JSON.parse(s.cli('status', '--json').stdout).baseChanges, [], 'nothing to compare yet');
    t.equal(s.cli('boot').code, 0);
    const now = JSON.parse((await engine.readCommitRecord(file)).body);
    t.match(now.device.baseFingerprint, { size: 64 * BLOCK, ino: /^\d+$/, ctimeNs: /^\d+$/ });
    await fs.utimes(s.volume, new Date(0), new Date(0));
    expectError(t, s.cli('boot'), 'E_BASE_CHANGED');
  });

  t.test('verify: bad flags and a missing device', async (t) => {
    const dir = await tempDir(t);
    t.equal(runCli(['verify', '--bogus']).code, 2, 'unknown option');
    t.equal(runCli(['verify', 'extra']).code, 2, 'no arguments');
    expectError(t, runCli(['--state', path.join(dir, 'none'), 'verify']), 'E_NOT_INITIALIZED');
    const help = runCli(['verify', '--help']);
    t.equal(help.code, 0);
    t.match(help.stdout, /scrub/);
  });

  t.test('a reflink export on XFS says the base was not read', async (t) => {
    const have = spawnSync('sh', ['-c', 'command -v mkfs.xfs']).status === 0;
    if (process.getuid?.() !== 0 || !have) {
      t.skip('needs root and mkfs.xfs for a loop mount', () => {});
      return;
    }
    const dir = await tempDir(t);
    const image = path.join(dir, 'xfs.img');
    const mnt = path.join(dir, 'xfs');
    await fs.writeFile(image, Buffer.alloc(0));
    await fs.truncate(image, 320 * 1024 * 1024);
    t.equal(spawnSync('mkfs.xfs', ['-q', '-f', '-m', 'reflink=1', image]).status, 0, 'mkfs.xfs');
    await fs.mkdir(mnt);
    const mounted = spawnSync('mount', ['-o', 'loop', image, mnt], { encoding: 'utf8' });
    if (mounted.status !== 0) {
      t.skip(`loop mount failed: ${mounted.stderr.trim()}`, () => {});
      return;
    }
    t.teardown(() => {
      spawnSync('umount', [mnt]);
    });
    const s = await activeDevice(t, mnt);
    let r = s.cli('export', '--out', path.join(mnt, 'out.img'), '--mode', 'reflink', '--json');
    t.equal(r.code, 0, r.stderr);
    t.match(JSON.parse(r.stdout), { reflinked: true, baseVerified: false });
    r = s.cli('export', '--out', path.join(mnt, 'out.img'), '--mode', 'reflink');
    t.match(r.stdout, /the base was cloned, not read.*run `revpatch verify`/);
    r = s.cli('export', '--out', path.join(mnt, 'copy.img'), '--mode', 'copy', '--json');
    t.match(JSON.parse(r.stdout), { reflinked: false, baseVerified: true });
    t.ok((await fs.readFile(path.join(mnt, 'copy.img'))).equals(s.next));
    // A changed base block the reflink does not read: the export succeeds
    // (and says it did not check), the scrub finds it.
    await flipByte(s.volume, 30 * BLOCK);
    r = s.cli('export', '--out', path.join(mnt, 'out2.img'), '--mode', 'reflink', '--json');
    t.equal(r.code, 0, r.stderr);
    t.equal(JSON.parse(r.stdout).baseVerified, false);
    expectError(t, s.cli('verify'), 'E_CORRUPT');
  });
}
