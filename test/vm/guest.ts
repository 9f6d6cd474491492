/**
 * What a guest of the VM boot tests is (test/vm/, docs/integration.md): a
 * kernel, an initramfs (initramfs.ts) and a root volume (volume.ts; the
 * sample one in sample_guest.ts), booted by harness.ts under QEMU.
 *
 * Everything is built at test time from installed Debian packages and
 * nothing from the network: Debian's cloud kernel
 * (/boot/vmlinuz-*-cloud-amd64; virtio_pci and virtio_blk are modules, ext4
 * is built in), busybox-static, e2fsprogs.
 *
 * The guest speaks to the host only over the serial console, in lines the
 * harness reads; a marker may follow other output on its line:
 *
 *   REVPATCH-INITRAMFS <text>    the initramfs hands over ("switching…") or gave up ("failed: why")
 *   REVPATCH-REACHED             the volume's init started; the health check is next
 *   REVPATCH-SEES <key>=<value>  what the guest read from its volume
 *   REVPATCH-HEALTHY             the health check passed
 *   REVPATCH-UNHEALTHY <reason>  the health check failed, and why
 *
 * then it powers off (`poweroff -f`). Integrators bring their own volume
 * and init; only the markers are the contract.
 */
import { existsSync, readdirSync } from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';

export const MARKER = {
  initramfs: 'REVPATCH-INITRAMFS',
  reached: 'REVPATCH-REACHED',
  sees: 'REVPATCH-SEES',
  healthy: 'REVPATCH-HEALTHY',
  unhealthy: 'REVPATCH-UNHEALTHY',
} as const;

/** The modules the root disk needs: virtio over PCI, and the block driver. */
export const ROOT_DISK_MODULES = ['virtio_pci', 'virtio_blk'];

export const BUSYBOX = '/bin/busybox';
export const QEMU = 'qemu-system-x86_64';

export interface Kernel {
  /** Path of the kernel image (bzImage). */
  image: string;
  /** `uname -r` of it: the folder under /lib/modules. */
  version: string;
  modulesDir: string;
}

/** The newest installed Debian cloud kernel with its modules, or null. */
export function findCloudKernel(boot = '/boot', modules = '/lib/modules'): Kernel | null {
  if (!existsSync(boot)) return null;
  const versions = readdirSync(boot)
    .map((name) => /^vmlinuz-(.+-cloud-amd64)$/.exec(name)?.[1])
    .filter((v): v is string => v !== undefined && existsSync(path.join(modules, v, 'modules.dep')))
    .sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
  const version = versions[versions.length - 1];
  if (!version) return null;
  return { image: path.join(boot, `vmlinuz-${version}`), version, modulesDir: path.join(modules, version) };
}

function onPath(tool: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }).status === 0;
}

/**
 * What the VM tests need that this machine lacks, each with the Debian
 * package that provides it; empty when everything is there.
 */
export function missingPrerequisites(): { what: string; pkg: string }[] {
  const missing: { what: string; pkg: string }[] = [];
  if (!onPath(QEMU)) missing.push({ what: QEMU, pkg: 'qemu-system-x86' });
  if (!findCloudKernel()) missing.push({ what: '/boot/vmlinuz-*-cloud-amd64 with its modules', pkg: 'linux-image-cloud-amd64' });
  const bb = spawnSync('file', ['-L', BUSYBOX], { encoding: 'utf8' });
  if (!existsSync(BUSYBOX) || (bb.status === 0 && !/statically linked|static-pie/.test(bb.stdout))) {
    missing.push({ what: `a statically linked ${BUSYBOX}`, pkg: 'busybox-static' });
  }
  if (!onPath('mkfs.ext4') || !onPath('debugfs')) missing.push({ what: 'mkfs.ext4 and debugfs', pkg: 'e2fsprogs' });
  if (!onPath('nbdkit')) missing.push({ what: 'nbdkit', pkg: 'nbdkit' });
  return missing;
}

/** How to install what missingPrerequisites() names. */
export function installHint(missing: { pkg: string }[]): string {
  return `apt-get install ${[...new Set(missing.map((m) => m.pkg))].join(' ')}`;
}


/** What harness.ts boots: the kernel and an initramfs for it. */
export interface GuestArtifacts {
  kernel: Kernel;
  initramfs: string;
}
