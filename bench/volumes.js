'use strict';
/**
 * Synthetic volume pairs: deterministic, sparse where the content is zero.
 *
 * A volume is cut into 1 MiB extents; about a quarter of them hold data (the
 * rest stay holes, as free space does on a real disk image), so a 4 GiB
 * volume costs 1 GiB of disk per image. Data blocks are 1 KiB of
 * keystream followed by 3 KiB of 16-letter text, roughly what a mix of
 * binaries and text compresses like. The new volume is the old one with
 * `changedFraction` of all blocks changed in place, in runs of 1 to 16 blocks
 * inside data extents: half of the runs are edits (a few bytes of each block
 * rewritten, as a rebuilt binary's relocated addresses are), half new data.
 * Everything derives from AES-128-CTR keystreams with fixed keys, so every
 * run and every machine builds the same bytes.
 */
const crypto = require('node:crypto');
const fs = require('node:fs');

const BLOCK = 4096;
const EXTENT_BLOCKS = 256;

function keystream(seed, bytes) {
  const key = crypto.createHash('sha256').update(`revpatch-bench:${seed}`).digest().subarray(0, 16);
  const cipher = crypto.createCipheriv('aes-128-ctr', key, Buffer.alloc(16));
  return cipher.update(Buffer.alloc(bytes));
}

/** Deterministic integers in [0, n) from a seed. */
function integers(seed) {
  let pool = Buffer.alloc(0);
  let at = 0;
  let counter = 0;
  return (n) => {
    if (at + 4 > pool.length) {
      pool = keystream(`${seed}:${counter++}`, 1 << 16);
      at = 0;
    }
    const v = pool.readUInt32LE(at);
    at += 4;
    return v % n;
  };
}

function isDataExtent(index) {
  const h = crypto.createHash('sha256').update(`extent:${index}`).digest();
  return index === 0 || h[0] % 4 === 0;
}

/** One data extent's bytes (EXTENT_BLOCKS blocks). */
function extentData(seed, index) {
  const buf = keystream(`${seed}:extent:${index}`, EXTENT_BLOCKS * BLOCK);
  for (let b = 0; b < EXTENT_BLOCKS; b++) {
    const start = b * BLOCK + 1024;
    const end = (b + 1) * BLOCK;
    for (let i = start; i < end; i++) buf[i] = 0x61 + (buf[i] & 15);
  }
  return buf;
}

async function writeAt(fd, buf, position) {
  let done = 0;
  while (done < buf.length) {
    const { bytesWritten } = await fd.write(buf, done, buf.length - done, position + done);
    done += bytesWritten;
  }
}

/**
 * Writes old and new volumes of `size` bytes (a multiple of 1 MiB).
 * Returns { changedBlocks, dataExtents }.
 */
async function makeVolumePair(oldPath, newPath, size, changedFraction = 0.04, seed = 'volume') {
  const extents = size / (EXTENT_BLOCKS * BLOCK);
  if (!Number.isInteger(extents) || extents < 1) throw new Error(`volume size ${size} is not a whole number of MiB`);
  const data = [];
  for (let e = 0; e < extents; e++) if (isDataExtent(e)) data.push(e);
  const totalBlocks = size / BLOCK;
  const target = Math.round(totalBlocks * changedFraction);
  // Choose the changed runs first: extent -> list of [startBlock, count, kind].
  const next = integers(`${seed}:changes`);
  const runs = new Map();
  const taken = new Set();
  let changed = 0;
  let guard = 0;
  while (changed < target && guard++ < target * 20) {
    const e = data[next(data.length)];
    const count = Math.min(1 + next(16), target - changed);
    const start = next(EXTENT_BLOCKS - count + 1);
    let clash = false;
    for (let b = start; b < start + count; b++) if (taken.has(e * EXTENT_BLOCKS + b)) clash = true;
    if (clash) continue;
    for (let b = start; b < start + count; b++) taken.add(e * EXTENT_BLOCKS + b);
    if (!runs.has(e)) runs.set(e, []);
    runs.get(e).push([start, count, next(2) === 0 ? 'edit' : 'new']);
    changed += count;
  }
  const oldFd = await fs.promises.open(oldPath, 'w');
  const newFd = await fs.promises.open(newPath, 'w');
  try {
    await oldFd.truncate(size);
    await newFd.truncate(size);
    let fresh = 0;
    for (const e of data) {
      const buf = extentData(seed, e);
      await writeAt(oldFd, buf, e * EXTENT_BLOCKS * BLOCK);
      for (const [start, count, kind] of runs.get(e) ?? []) {
        const region = buf.subarray(start * BLOCK, (start + count) * BLOCK);
        if (kind === 'new') {
          const fresh_ = keystream(`${seed}:new:${fresh++}`, region.length);
          for (let b = 0; b < count; b++) {
            for (let i = b * BLOCK + 1024; i < (b + 1) * BLOCK; i++) fresh_[i] = 0x61 + (fresh_[i] & 15);
          }
          fresh_.copy(region);
        } else {
          for (let b = 0; b < count; b++) {
            for (let k = 0; k < 12; k++) {
              const at = b * BLOCK + next(BLOCK - 4);
              region.writeUInt32LE(next(0xffffffff), at);
            }
          }
        }
      }
      await writeAt(newFd, buf, e * EXTENT_BLOCKS * BLOCK);
    }
  } finally {
    await oldFd.close();
    await newFd.close();
  }
  return { changedBlocks: changed, dataExtents: data.length, extents };
}

/**
 * A copy of `from` with `blocks` consecutive blocks at `atBlock` replaced
 * by fresh data: the fixed small patch of the scaling measurements.
 */
async function makeSmallChange(from, to, atBlock, blocks, seed = 'small') {
  await fs.promises.copyFile(from, to);
  const { execFileSync } = require('node:child_process');
  // copyFile may fill holes; re-copy sparsely where cp is available.
  try {
    execFileSync('cp', ['--sparse=always', from, to]);
  } catch {
    /* keep the plain copy */
  }
  const fd = await fs.promises.open(to, 'r+');
  try {
    await writeAt(fd, keystream(seed, blocks * BLOCK), atBlock * BLOCK);
  } finally {
    await fd.close();
  }
}

module.exports = { BLOCK, makeVolumePair, makeSmallChange, keystream };
