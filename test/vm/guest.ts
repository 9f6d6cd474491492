/**
 * The guest of the VM boot tests, built at test time from installed Debian
 * packages and nothing from the network:
 *
 * - the kernel: Debian's cloud kernel (/boot/vmlinuz-*-cloud-amd64), whose
 *   virtio_pci and virtio_blk are modules and ext4 is built in;
 * - an initramfs (cpio newc, gzip) with busybox-static, those modules and
 *   their dependencies (read from modules.dep), and an /init that mounts
 *   the root disk read-only and switch_roots into the volume's /sbin/init;
 * - a guest volume: an ext4 image made with `mkfs.ext4 -d` (no mount),
 *   holding busybox, an init, a "browser" service whose configuration is
 *   /etc/browser/version, and a "website" that accepts or refuses that
 *   version (it refuses the versions in /srv/site/broken-versions).
 *
 * The guest speaks to the host only over the serial console, in lines the
 * harness (harness.ts) reads; each marker starts a line:
 *
 *   REVPATCH-INITRAMFS <text>    the initramfs is about to hand over (or failed)
 *   REVPATCH-REACHED             the volume's init started; the health check is next
 *   REVPATCH-SEES <key>=<value>  what the guest read from its volume
 *   REVPATCH-HEALTHY             the health check passed
 *   REVPATCH-UNHEALTHY <reason>  the health check failed, and why
 *
 * then it powers off (`poweroff -f`). Integrators bring their own volume
 * and init; only the markers are the contract.
 */
import { promises as fs, existsSync, readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
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

function run(cmd: string, args: string[], options: { input?: string } = {}): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', input: options.input, maxBuffer: 64 * 1024 * 1024 });
  if (r.error) throw new Error(`${cmd}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr.trim()}`);
  return r.stdout;
}

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
  n=$((n + 1)); [ $n -gt 100 ] && fail "no ${rootDevice}"
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

/**
 * The sample guest's volume tree in `dir`: busybox, /sbin/init, the
 * browser's configuration and the website. The init marks REACHED, prints
 * what it sees, starts the website (busybox httpd on 127.0.0.1 with a CGI
 * check), asks it with the browser's version as User-Agent, prints the
 * verdict and powers off.
 */
export async function writeSampleGuestTree(dir: string, options: { browserVersion: string; brokenVersions: string[] }): Promise<void> {
  const put = async (rel: string, content: string | Buffer, mode = 0o644) => {
    const file = path.join(dir, rel);
    await fs.mkdir(path.dirname(file), { recursive: true });
    await fs.writeFile(file, content);
    await fs.chmod(file, mode);
  };
  for (const d of ['dev', 'proc', 'sys', 'tmp']) await fs.mkdir(path.join(dir, d), { recursive: true });
  await put('bin/busybox', await fs.readFile(BUSYBOX), 0o755);
  await fs.symlink('busybox', path.join(dir, 'bin/sh'));
  await put('sbin/init', sampleInit(), 0o755);
  await put('etc/browser/version', options.browserVersion + '\n');
  await put('srv/site/index.html', '<h1>the website</h1>\n');
  await put('srv/site/broken-versions', options.brokenVersions.map((v) => v + '\n').join(''));
  await put('srv/site/cgi-bin/check', sampleSiteCheck(), 0o755);
}

/** The sample volume's /sbin/init (PID 1 after switch_root). */
export function sampleInit(): string {
  return `#!/bin/sh
export PATH=/bin
echo "${MARKER.reached}"
version=$(cat /etc/browser/version)
echo "${MARKER.sees} /etc/browser/version=$version"
ifconfig lo 127.0.0.1 up
httpd -p 127.0.0.1:8080 -h /srv/site
n=0
until answer=$(wget -q -O - -U "Browser/$version" http://127.0.0.1:8080/cgi-bin/check 2>&1); do
  n=$((n + 1))
  if [ $n -gt 20 ]; then answer="REFUSED the website did not answer: $answer"; break; fi
  usleep 100000
done
case "$answer" in
  OK*) echo "${MARKER.healthy}" ;;
  *) echo "${MARKER.unhealthy} $answer" ;;
esac
sync
poweroff -f
`;
}

/** The website's check: refuses the browser versions it knows are broken. */
export function sampleSiteCheck(): string {
  return `#!/bin/sh
export PATH=/bin
version=\${HTTP_USER_AGENT#Browser/}
printf 'Content-Type: text/plain\\r\\n\\r\\n'
if [ -z "$version" ] || [ "$version" = "$HTTP_USER_AGENT" ]; then
  echo "REFUSED no browser version in the request"
elif grep -qxF "$version" /srv/site/broken-versions; then
  echo "REFUSED browser $version is known to break this site"
else
  echo "OK browser $version"
fi
`;
}

/**
 * An ext4 image of `dir`, `sizeMiB` large, made with `mkfs.ext4 -d` (no
 * mount), with a fixed UUID so rebuilding the same tree gives the same
 * layout.
 */
export function buildVolume(dir: string, out: string, sizeMiB = 16): string {
  run('mkfs.ext4', [
    '-q', '-F', '-b', '4096', '-L', 'guest', '-U', '6f0c9c3e-0b1e-4d5e-9a57-2b3c4d5e6f70',
    '-E', 'root_owner=0:0,hash_seed=0b9c2f1e-3d4a-4b5c-8d6e-7f8091a2b3c4',
    '-d', dir, out, `${sizeMiB}M`,
  ]);
  return out;
}

/**
 * A copy of volume `base` at `out` with files replaced, as a vendor's fix
 * changes a few files: each `files` entry is written with debugfs (no
 * mount), so only the blocks of those files and their metadata change.
 */
export async function editVolume(
  base: string,
  out: string,
  files: Record<string, { content: string | Buffer; mode?: number }>,
  scratch: string,
): Promise<string> {
  await fs.copyFile(base, out);
  const commands: string[] = [];
  let i = 0;
  for (const [target, { content, mode }] of Object.entries(files)) {
    const src = path.join(scratch, `edit-${i++}`);
    await fs.writeFile(src, content);
    commands.push(`rm ${target}`, `write ${src} ${target}`);
    commands.push(`set_inode_field ${target} mode 0${(0o100000 | (mode ?? 0o644)).toString(8)}`);
  }
  const r = spawnSync('debugfs', ['-w', '-f', '-', out], { encoding: 'utf8', input: commands.join('\n') + '\n' });
  if (r.status !== 0) throw new Error(`debugfs exited ${r.status}: ${r.stderr}`);
  // debugfs reports a failed command on stderr but still exits 0.
  const errors = r.stderr.split('\n').filter((l) => l.trim() && !/^debugfs \d/.test(l));
  if (errors.length) throw new Error(`debugfs: ${errors.join('; ')}`);
  const fsck = spawnSync('e2fsck', ['-fn', out], { encoding: 'utf8' });
  if (fsck.status !== 0) throw new Error(`e2fsck after edit: ${fsck.stdout}${fsck.stderr}`);
  return out;
}

export interface GuestArtifacts {
  kernel: Kernel;
  initramfs: string;
}

/** The kernel and an initramfs for it, built into `dir` (reused if present). */
export async function buildBootFiles(dir: string, kernel: Kernel | null = findCloudKernel()): Promise<GuestArtifacts> {
  if (!kernel) throw new Error('no Debian cloud kernel installed (apt-get install linux-image-cloud-amd64)');
  await fs.mkdir(dir, { recursive: true });
  const initramfs = await buildInitramfs(kernel, path.join(dir, `initramfs-${kernel.version}.cpio.gz`));
  return { kernel, initramfs };
}
