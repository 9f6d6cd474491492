/**
 * The restart story in a real virtual machine (`npm run test:vm`, also a
 * stage of .ci/run; not part of `npm test`, whose glob is *.test.ts).
 *
 * Each scenario is a device: a base ext4 volume, patches made from edited
 * copies of it, and real guest boots through the device's startup sequence
 * (harness.ts: boot, serve the view, QEMU, reached, confirm, power off).
 * The budgets are small (2 attempts, 2 early boots) to keep boots few; each
 * guest boot's duration is reported as a comment.
 *
 * Where QEMU, the cloud kernel or busybox-static is missing the test skips
 * with the install command; under CI (the CI variable, set by .ci/run) a
 * missing part is a failure.
 */
import t, { type Test } from 'tap';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { addonBuilt, runCli } from '../helpers';
import { nbdkitPluginPath } from '../../lib/device/serve_view';
import { findCloudKernel, installHint, missingPrerequisites, type GuestArtifacts } from './guest';
import { buildBootFiles, moduleLoadOrder } from './initramfs';
import { buildVolume, editVolume } from './volume';
import { writeSampleGuestTree } from './sample_guest';
import { exportedFileServer, runBootCycle, serveViewServer, type BootCycle, type DiskServer } from './harness';

const BASE_VERSION = '118.0.1';
const GOOD_VERSION = '119.0.0';
const BROKEN_VERSION = '118.0.2';
const MAX_BOOT_ATTEMPTS = 2;
const MAX_EARLY_BOOTS = 2;
/** A normal boot here takes a few seconds under TCG; a hang is cut off at this. */
const HANG_TIMEOUT_MS = 30_000;

const missing = missingPrerequisites();
const useExport = process.env.REVPATCH_VM_DISK === 'export';
if (!addonBuilt()) missing.push({ what: 'the native addon (npm run build)', pkg: '' });
else if (!useExport && !nbdkitPluginPath()) {
  missing.push({ what: 'the revpatch nbdkit plugin (build/Release/revpatch_nbdkit.so; npm run build after installing)', pkg: 'nbdkit-plugin-dev' });
}
const inCi = Boolean(process.env.CI);

/**
 * The disk server: `revpatch serve-view` unless REVPATCH_VM_DISK=export
 * (the exported image behind nbdkit's `file` plugin).
 */
function diskServer(): DiskServer {
  return useExport ? exportedFileServer() : serveViewServer();
}

if (missing.length > 0) {
  const reason =
    `VM boot scenarios need ${missing.map((m) => m.what).join(', ')}` +
    (missing.some((m) => m.pkg) ? ` (${installHint(missing.filter((m) => m.pkg))})` : '');
  if (inCi) t.fail(reason);
  else t.skip(reason, () => {});
} else {
  scenarios();
}

function cli(stateDir: string, args: string[]): unknown {
  const r = runCli(['--state', stateDir, '--json', ...args]);
  if (r.code !== 0) throw new Error(`revpatch ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

function patchState(stateDir: string, id: string): { state: string; reason?: string } {
  const list = cli(stateDir, ['list']) as { id: string; state: string; reason?: string }[];
  const p = list.filter((x) => x.id === id).pop();
  if (!p) throw new Error(`no patch ${id} in ${stateDir}`);
  return p;
}

function scenarios(): void {
  let work = '';
  let guest: GuestArtifacts;
  let base = '';
  const patches: Record<'good' | 'bad' | 'panic' | 'hang', string> = { good: '', bad: '', panic: '', hang: '' };
  let key = '';
  let trust = '';
  const server = diskServer();

  t.before(async () => {
    work = await fs.mkdtemp(path.join(process.env.TMPDIR ?? '/tmp', 'revpatch-vm-'));
    guest = await buildBootFiles(path.join(work, 'boot'));
    const tree = path.join(work, 'tree');
    await writeSampleGuestTree(tree, { browserVersion: BASE_VERSION, brokenVersions: [BROKEN_VERSION] });
    base = buildVolume(tree, path.join(work, 'base.img'));
    const keys = cli(work, ['keygen', '--out', path.join(work, 'keys')]) as { secretKeyPath: string; publicKeyPath: string };
    key = keys.secretKeyPath;
    trust = keys.publicKeyPath;
    const variants: Record<keyof typeof patches, Record<string, { content: string; mode?: number }>> = {
      good: { '/etc/browser/version': { content: GOOD_VERSION + '\n' } },
      bad: { '/etc/browser/version': { content: BROKEN_VERSION + '\n' } },
      // An init that exits: the kernel panics ("Attempted to kill init"),
      // panic=-1 reboots and -no-reboot ends QEMU, before the check.
      panic: { '/sbin/init': { content: '#!/bin/sh\necho "the new init gives up"\nexit 1\n', mode: 0o755 } },
      // An init that never reaches the check: the harness's timeout ends it.
      hang: { '/sbin/init': { content: '#!/bin/sh\necho "the new init waits forever"\nwhile :; do sleep 60; done\n', mode: 0o755 } },
    };
    for (const [name, files] of Object.entries(variants) as [keyof typeof patches, (typeof variants)['good']][]) {
      const image = await editVolume(base, path.join(work, `${name}.img`), files, work);
      patches[name] = path.join(work, `${name}.patch`);
      cli(work, ['create', '--from', base, '--to', image, '--key', key, '--id', `fix-${name}`, '--version', '2', '--out', patches[name]]);
    }
  });
  t.teardown(() => (work ? fs.rm(work, { recursive: true, force: true }) : undefined));

  let devices = 0;
  async function device(maxEarlyBoots = MAX_EARLY_BOOTS): Promise<string> {
    const state = path.join(work, `state-${++devices}`);
    cli(state, [
      'init', '--volume', base, '--trust', trust,
      '--max-boot-attempts', String(MAX_BOOT_ATTEMPTS), '--max-early-boots', String(maxEarlyBoots),
    ]);
    return state;
  }

  async function bootOnce(tt: Test, state: string, label: string, timeoutMs?: number): Promise<BootCycle> {
    const cycle = await runBootCycle({ stateDir: state, guest, workDir: work, diskServer: server, timeoutMs });
    tt.comment(
      `${label}: guest boot ${(cycle.guestMs / 1000).toFixed(1)} s` +
        (cycle.reachedMs !== null ? ` (reached at ${(cycle.reachedMs / 1000).toFixed(1)} s)` : '') +
        `, whole cycle ${(cycle.cycleMs / 1000).toFixed(1)} s, ended by ${cycle.ended}` +
        `${cycle.health ? `, ${cycle.health}` : ''} [${server.name}]`,
    );
    return cycle;
  }

  /** Asserts the guest booted the base and found it healthy. */
  function assertBaseHealthy(tt: Test, cycle: BootCycle): void {
    tt.equal(cycle.sees['/etc/browser/version'], BASE_VERSION, 'the guest sees the base version', { console: cycle.console });
    tt.equal(cycle.health, 'healthy', 'the website accepts the base version', { console: cycle.console });
    tt.equal(cycle.ended, 'poweroff', 'the guest powered itself off');
  }

  t.test('the root disk modules load after what they depend on, read from modules.dep', async (t) => {
    const kernel = findCloudKernel()!;
    const order = (await moduleLoadOrder(kernel.modulesDir, ['virtio_pci', 'virtio_blk'])).map((m) => path.basename(m));
    t.ok(order.indexOf('virtio.ko') < order.indexOf('virtio_pci.ko'), 'virtio before virtio_pci');
    t.ok(order.indexOf('virtio_ring.ko') < order.indexOf('virtio_blk.ko'), 'virtio_ring before virtio_blk');
    t.equal(new Set(order).size, order.length, 'each module once');
    await t.rejects(moduleLoadOrder(kernel.modulesDir, ['no_such_module']), /not in .*modules\.dep/);
  });

  t.test('a disk the initramfs cannot mount ends the boot before the check, with its reason', async (t) => {
    const blank = path.join(work, 'blank.img');
    await fs.writeFile(blank, Buffer.alloc(4 << 20));
    const state = path.join(work, 'state-blank');
    cli(state, ['init', '--volume', blank, '--trust', trust]);
    const cycle = await bootOnce(t, state, 'a blank disk');
    t.equal(cycle.initramfsFailure, 'mount /dev/vda', 'the initramfs says what failed', { console: cycle.console });
    t.notOk(cycle.reached, 'never reached');
    t.equal(cycle.health, null, 'no verdict');
    t.equal(cycle.ended, 'poweroff', 'the initramfs powered off');
  });

  let goodDevice = '';
  t.test('a good patch is activated by boot, the guest sees its file, reports healthy, and confirm makes it active', async (t) => {
    const state = await device();
    goodDevice = state;
    const before = await bootOnce(t, state, 'base before any patch');
    assertBaseHealthy(t, before);
    t.same(before.reachedPatches, [], 'no trial patch to mark reached');

    cli(state, ['install', patches.good]);
    const cycle = await bootOnce(t, state, 'good patch, first boot');
    t.same(cycle.boot.activated, ['fix-good'], 'boot turned the staged patch into a trial');
    t.equal(cycle.sees['/etc/browser/version'], GOOD_VERSION, 'the guest reads the patched file through the view', { console: cycle.console });
    t.ok(cycle.reached, 'the guest reached its health check');
    t.same(cycle.reachedPatches, ['fix-good'], 'reached marked the trial patch');
    t.equal(cycle.health, 'healthy', 'the website accepts the new version', { console: cycle.console });
    t.same(cycle.confirmed, ['fix-good'], 'confirm ran');
    t.equal(patchState(state, 'fix-good').state, 'active');
  });

  t.test('a user removal: remove, restart, the guest sees the base', async (t) => {
    if (!goodDevice || patchState(goodDevice, 'fix-good').state !== 'active') {
      t.fail('needs the device of the good-patch scenario with fix-good active');
      return;
    }
    cli(goodDevice, ['remove', 'fix-good']);
    t.equal(patchState(goodDevice, 'fix-good').state, 'pending-removal', 'nothing changes before the restart');
    const cycle = await bootOnce(t, goodDevice, 'after removal');
    t.same(cycle.boot.removed, ['fix-good'], 'boot dropped the patch');
    assertBaseHealthy(t, cycle);
    t.equal(patchState(goodDevice, 'fix-good').state, 'removed');
  });

  t.test('a patch the website refuses is never confirmed and is rolled back after the attempt budget', async (t) => {
    const state = await device();
    cli(state, ['install', patches.bad]);
    for (let attempt = 1; attempt <= MAX_BOOT_ATTEMPTS; attempt++) {
      const cycle = await bootOnce(t, state, `bad patch, attempt ${attempt}`);
      if (attempt === 1) t.same(cycle.boot.activated, ['fix-bad']);
      t.same(cycle.boot.failed, [], `attempt ${attempt} still runs the patch`);
      t.equal(cycle.sees['/etc/browser/version'], BROKEN_VERSION, 'the guest runs the patched version', { console: cycle.console });
      t.ok(cycle.reached, 'the guest reached its health check');
      t.equal(cycle.health, 'unhealthy', 'the website refuses it', { console: cycle.console });
      t.match(cycle.reason, new RegExp(`browser ${BROKEN_VERSION.replace(/\./g, '\\.')} is known to break`), 'with the website\'s reason');
      t.same(cycle.confirmed, [], 'nothing confirmed');
      t.equal(patchState(state, 'fix-bad').state, 'trial');
    }
    const after = await bootOnce(t, state, 'bad patch, next boot');
    t.same(after.boot.failed, ['fix-bad'], 'boot rolled the patch back');
    assertBaseHealthy(t, after);
    const p = patchState(state, 'fix-bad');
    t.equal(p.state, 'failed');
    t.match(p.reason, /not confirmed within 2 boots that reached the health check/);
  });

  t.test('a patch that panics the kernel never reaches the check, and the early-boot budget rolls it back', async (t) => {
    const state = await device();
    cli(state, ['install', patches.panic]);
    for (let boot = 1; boot <= MAX_EARLY_BOOTS; boot++) {
      const cycle = await bootOnce(t, state, `panicking patch, boot ${boot}`);
      t.equal(cycle.ended, 'panic', 'the kernel panicked', { console: cycle.console });
      t.match(cycle.console, /Attempted to kill init/);
      t.notOk(cycle.reached, 'the guest never reached its check');
      t.same(cycle.reachedPatches, []);
      t.same(cycle.confirmed, []);
      t.equal(patchState(state, 'fix-panic').state, 'trial');
    }
    const after = await bootOnce(t, state, 'panicking patch, next boot');
    t.same(after.boot.failed, ['fix-panic'], 'boot rolled the patch back');
    assertBaseHealthy(t, after);
    const p = patchState(state, 'fix-panic');
    t.equal(p.state, 'failed');
    t.match(p.reason, /2 boots ended before the health check/);
  });

  t.test('a guest that hangs before its check is cut off by the timeout and counts as an early boot', async (t) => {
    // A budget of one early boot: each hang costs the whole timeout.
    const state = await device(1);
    cli(state, ['install', patches.hang]);
    const cycle = await bootOnce(t, state, 'hanging patch', HANG_TIMEOUT_MS);
    t.equal(cycle.ended, 'timeout', 'the harness killed QEMU', { console: cycle.console });
    t.match(cycle.console, /the new init waits forever/, 'the patched init ran');
    t.notOk(cycle.reached, 'the guest never reached its check');
    t.equal(patchState(state, 'fix-hang').state, 'trial');
    const after = await bootOnce(t, state, 'hanging patch, next boot');
    t.same(after.boot.failed, ['fix-hang'], 'boot rolled the patch back');
    assertBaseHealthy(t, after);
    const p = patchState(state, 'fix-hang');
    t.equal(p.state, 'failed');
    t.match(p.reason, /1 boots ended before the health check/);
  });
}
