/**
 * The guest's initramfs (cpio newc, gzip), built at test time: busybox-static,
 * the root disk's kernel modules with their dependencies in the order
 * modules.dep gives (decompressed, since busybox insmod loads plain .ko
 * files), and an /init that mounts the root disk read-only and switch_roots
 * into the volume's /sbin/init. It stays small (about 1 MiB) so a boot under
 * TCG takes seconds.
 */
import { promises as fs, readFileSync } from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { spawnSync } from 'node:child_process';
import { BUSYBOX, MARKER, ROOT_DISK_MODULES, findCloudKernel, type GuestArtifacts, type Kernel } from './guest';

/**
 * The modules to load for `wanted`, dependencies first, as paths relative
 * to the modules folder, read from its modules.dep (`mod.ko: dep.ko …`).
 */
export async function moduleLoadOrder(modulesDir: string, wanted: readonly string[]): Promise<string[]> {
  const deps = new Map<string, string[]>();
  const byName = new Map<string, string>();
  for (const line of (await fs.readFile(path.join(modulesDir, 'modules.dep'), 'utf8')).split('\n')) {
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    const mod = line.slice(0, colon).trim();
    deps.set(mod, line.slice(colon + 1).trim().split(/\s+/).filter(Boolean));
    byName.set(moduleName(mod), mod);
  }
  const order: string[] = [];
  const visiting = new Set<string>();
  const visit = (mod: string): void => {
    if (order.includes(mod)) return;
    if (visiting.has(mod)) throw new Error(`modules.dep: dependency cycle at ${mod}`);
    visiting.add(mod);
    for (const dep of deps.get(mod) ?? []) visit(dep);
    visiting.delete(mod);
    order.push(mod);
  };
  for (const name of wanted) {
    const mod = byName.get(name.replace(/-/g, '_'));
    if (!mod) throw new Error(`module ${name} is not in ${modulesDir}/modules.dep (built into the kernel?)`);
    visit(mod);
  }
  return order;
}

/** `kernel/drivers/block/virtio_blk.ko.xz` → `virtio_blk`. */
function moduleName(rel: string): string {
  return path.basename(rel).replace(/\.ko(\.(xz|zst|gz))?$/, '').replace(/-/g, '_');
}

/** A module's bytes, decompressed: busybox insmod loads plain .ko files. */
function moduleBytes(file: string): Buffer {
  if (file.endsWith('.ko')) return readFileSync(file);
  if (file.endsWith('.ko.gz')) return zlib.gunzipSync(readFileSync(file));
  const tool = file.endsWith('.ko.xz') ? 'xz' : file.endsWith('.ko.zst') ? 'zstd' : null;
  if (!tool) throw new Error(`unknown module format: ${file}`);
  const r = spawnSync(tool, ['-dc', file], { maxBuffer: 256 * 1024 * 1024 });
  if (r.status !== 0) throw new Error(`${tool} -dc ${file} exited ${r.status}: ${r.stderr}`);
  return r.stdout;
}

/**
 * A cpio "newc" archive of `entries` (directories, files and symlinks;
 * owner root, mtime 0 so the archive depends only on its contents).
 */
export function cpioNewc(entries: CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  const pad4 = (n: number) => Buffer.alloc((4 - (n % 4)) % 4);
  const hex = (n: number) => n.toString(16).padStart(8, '0');
  const add = (name: string, mode: number, data: Buffer) => {
    const nameBytes = Buffer.from(name + '\0');
    const header = Buffer.from(
      '070701' +
        [ino++, mode, 0, 0, 1, 0, data.length, 0, 0, 0, 0, nameBytes.length, 0].map(hex).join(''),
      'ascii',
    );
    parts.push(header, nameBytes, pad4(header.length + nameBytes.length), data, pad4(data.length));
  };
  for (const e of entries) {
    if (e.type === 'dir') add(e.path, 0o040755, Buffer.alloc(0));
    else if (e.type === 'symlink') add(e.path, 0o120777, Buffer.from(e.target));
    else add(e.path, 0o100000 | (e.mode ?? 0o644), e.data);
  }
  add('TRAILER!!!', 0, Buffer.alloc(0));
  return Buffer.concat(parts);
}

export type CpioEntry =
  | { type: 'dir'; path: string }
  | { type: 'file'; path: string; data: Buffer; mode?: number }
  | { type: 'symlink'; path: string; target: string };

/**
 * The initramfs /init: mount /proc, /sys, /dev; load the root disk's
 * modules; wait for /dev/vda; mount it read-only; move the mounts over and
 * switch_root into the volume's /sbin/init. Any failure says why on the
 * console and powers off, so the boot ends without reaching the check.
 */
export function initramfsInit(modules: readonly string[], rootDevice = '/dev/vda'): string {
  return `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
fail() { echo "${MARKER.initramfs} failed: $*"; poweroff -f; }
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in ${modules.map((m) => '/lib/modules/' + path.basename(m).replace(/\.ko(\..*)?$/, '.ko')).join(' ')}; do
  insmod "$m" || fail "insmod $m"
done
n=0
while [ ! -b ${rootDevice} ]; do
  n=$((n + 1)); [ $n -gt 200 ] && fail "no ${rootDevice} after 10 s"
  usleep 50000
done
mount -t ext4 -o ro ${rootDevice} /newroot || fail "mount ${rootDevice}"
[ -x /newroot/sbin/init ] || fail "no /sbin/init on ${rootDevice}"
for d in dev proc sys; do mount --move /$d /newroot/$d || fail "move /$d"; done
echo "${MARKER.initramfs} switching to the volume"
exec switch_root /newroot /sbin/init
`;
}

/** Builds the initramfs for `kernel` into `out` (gzip-compressed cpio newc). */
export async function buildInitramfs(kernel: Kernel, out: string, modules: readonly string[] = ROOT_DISK_MODULES): Promise<string> {
  const order = await moduleLoadOrder(kernel.modulesDir, modules);
  const entries: CpioEntry[] = ['bin', 'dev', 'proc', 'sys', 'newroot', 'lib', 'lib/modules'].map((p) => ({ type: 'dir', path: p }));
  entries.push({ type: 'file', path: 'bin/busybox', data: await fs.readFile(BUSYBOX), mode: 0o755 });
  entries.push({ type: 'symlink', path: 'bin/sh', target: 'busybox' });
  for (const rel of order) {
    const name = path.basename(rel).replace(/\.ko(\..*)?$/, '.ko');
    entries.push({ type: 'file', path: `lib/modules/${name}`, data: moduleBytes(path.join(kernel.modulesDir, rel)) });
  }
  entries.push({ type: 'file', path: 'init', data: Buffer.from(initramfsInit(order)), mode: 0o755 });
  await fs.writeFile(out, zlib.gzipSync(cpioNewc(entries), { level: 6 }));
  return out;
}

/** The kernel and an initramfs for it, built into `dir`. */
export async function buildBootFiles(dir: string, kernel: Kernel | null = findCloudKernel()): Promise<GuestArtifacts> {
  if (!kernel) throw new Error('no Debian cloud kernel installed (apt-get install linux-image-cloud-amd64)');
  await fs.mkdir(dir, { recursive: true });
  const initramfs = await buildInitramfs(kernel, path.join(dir, `initramfs-${kernel.version}.cpio.gz`));
  return { kernel, initramfs };
}

