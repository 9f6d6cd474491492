/**
 * Guest volumes: ext4 images made from a folder with `mkfs.ext4 -d` and
 * edited copies of them made with debugfs, both without a mount, so the
 * tests need no loop device and a patch changes only the edited files'
 * blocks and their metadata.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';

function run(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  if (r.error) throw new Error(`${cmd}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr.trim()}`);
  return r.stdout;
}

/**
 * An ext4 image of `dir`, `sizeMiB` large, made with `mkfs.ext4 -d` (no
 * mount), owned by root, with a fixed UUID and directory hash seed.
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

