// A patch of an x86-64 executable whose code moved, through the CLI: the
// generator predicts the moved calls and pointers (delta version 3), and a
// device installs it exactly, placing the delta's buffers by the op's
// extents. The executable sits at a block boundary inside a larger volume,
// as a file does in an image.
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import * as engine from '../lib/engine/engine';
import { addonBuilt, ADDON, BLOCK, runCli, stampedImage, tempDir } from './helpers';

const SKIP_NO_ADDON = addonBuilt() ? false : `needs the native addon (${ADDON}); run \`npm run build\` first`;

/** Deterministic 32-bit values (xorshift). */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

/**
 * A toy executable of `blocks` blocks: an ELF64 x86-64 header with a code
 * segment over the first half and a data segment over the second; code of
 * filler and calls to 64-byte-aligned places, data of pointers to them.
 * `growth` bytes inserted at `growAt` move everything after it, and the
 * calls and pointers follow.
 */
function toyExecutable(blocks: number, growAt: number, growth: number): Buffer {
  const size = blocks * BLOCK;
  const half = size / 2;
  const base = 0x400000;
  // Only code moves: the data segment stays at `half`.
  const moved = (at: number) => (at >= growAt && at < half ? at + growth : at);
  const out = Buffer.alloc(size, 0x90);
  const next = rng(7); // code and data draw apart, so both versions draw alike
  const nextData = rng(11);
  let o = 256; // after the headers
  let grown = false;
  for (let i = 256; o < half; ) {
    if (!grown && i >= growAt) {
      o += growth;
      grown = true;
    }
    if (next() % 6 === 0 && o + 5 <= half) {
      const callee = (next() % (size / 64)) * 64;
      out[o] = 0xe8;
      out.writeInt32LE(moved(callee) - (o + 5), o + 1);
      o += 5;
      i += 5;
    } else {
      out[o] = 0x90 + (next() % 8);
      o += 1;
      i += 1;
    }
  }
  for (let p = half; p + 8 <= size; p += 8) {
    out.writeBigUInt64LE(BigInt(base + moved((nextData() % (size / 64)) * 64)), p);
  }
  out.fill(0, 0, 256);
  Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]).copy(out, 0);
  out.writeUInt16LE(62, 18); // x86-64
  out.writeBigUInt64LE(64n, 32); // program headers
  out.writeUInt16LE(56, 54);
  out.writeUInt16LE(2, 56);
  const load = (i: number, flags: number, offset: number, filesz: number) => {
    const p = 64 + 56 * i;
    out.writeUInt32LE(1, p); // PT_LOAD
    out.writeUInt32LE(flags, p + 4);
    out.writeBigUInt64LE(BigInt(offset), p + 8);
    out.writeBigUInt64LE(BigInt(base + offset), p + 16);
    out.writeBigUInt64LE(BigInt(filesz), p + 32);
    out.writeBigUInt64LE(BigInt(filesz), p + 40);
  };
  load(0, 5, 0, half); // R E
  load(1, 4, half, half); // R
  return out;
}

t.test('a moved executable is patched small and installed exactly', { skip: SKIP_NO_ADDON }, async (t) => {
  const dir = await tempDir(t, 'revpatch-exe-');
  const keys = path.join(dir, 'keys');
  t.equal(runCli(['keygen', '--out', keys]).code, 0);
  const volume = (exe: Buffer) => Buffer.concat([stampedImage(3), exe, stampedImage(2, 'tail')]);
  const oldExe = toyExecutable(64, 20 * BLOCK + 100, 0);
  const newExe = toyExecutable(64, 20 * BLOCK + 100, 40);
  const sizes: number[] = [];
  for (const elf of [true, false]) {
    const from = volume(oldExe);
    const to = volume(newExe);
    if (!elf) {
      // Without the ELF magic nothing is predicted: the same bytes cost more.
      from[3 * BLOCK] = 0;
      to[3 * BLOCK] = 0;
    }
    const tag = elf ? 'elf' : 'plain';
    const [a, b, patch, state] = ['a.img', 'b.img', 'p.rvp', 'state'].map((f) => path.join(dir, `${tag}-${f}`));
    await fs.writeFile(a, from);
    await fs.writeFile(b, to);
    const create = runCli(['create', '--from', a, '--to', b, '--key', path.join(keys, 'revpatch.key'), '--id', tag, '--out', patch]);
    t.equal(create.code, 0, create.stderr);
    sizes.push((await fs.stat(patch)).size);
    t.equal(runCli(['--state', state, 'init', '--volume', a, '--trust', path.join(keys, 'revpatch.pub')]).code, 0);
    const install = runCli(['--state', state, 'install', patch]);
    t.equal(install.code, 0, install.stderr);
    const boot = runCli(['--state', state, '--json', 'boot']);
    t.equal(boot.code, 0, boot.stderr);
    const want = await engine.hashImage(b, BLOCK);
    t.equal((JSON.parse(boot.stdout) as { viewDigest: string }).viewDigest, want.digest, `${tag}: the view is the target`);
  }
  t.ok(sizes[0] * 3 < sizes[1], `predicted ${sizes[0]} bytes, plain ${sizes[1]}`);
});
