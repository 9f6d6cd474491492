/**
 * Sizes and counts on the command line. A size is a number of bytes, whole
 * or with a binary suffix K, M, G or T (1024-based; `KiB`-style and `B`
 * endings accepted, any case), as in `--max-memory 512M` or `--max-rate
 * 1.5M`; a fraction is rounded down to whole bytes. Anything else, a
 * negative number or more than 2^53 - 1 bytes is E_INVALID_ARGUMENT naming
 * the flag, thrown before anything runs.
 */
import { RevpatchError } from '../engine/errors';

const UNITS: Record<string, number> = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 };

export function parseByteSize(flag: string, text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?$/i.exec(text.trim());
  if (!m) {
    throw new RevpatchError('E_INVALID_ARGUMENT', `${flag} must be a size in bytes, optionally with K, M, G or T (e.g. 65536, 512K, 2M or 1G), not ${JSON.stringify(text)}`);
  }
  const n = Math.floor(Number(m[1]) * UNITS[m[2].toUpperCase()]);
  if (!Number.isSafeInteger(n)) throw new RevpatchError('E_INVALID_ARGUMENT', `${flag} ${text} is too large`);
  return n;
}

/** A whole number in [min, max], as E_INVALID_ARGUMENT naming the flag otherwise. */
export function parseCount(flag: string, text: string, min: number, max: number): number {
  if (!/^\d+$/.test(text.trim()) || Number(text) < min || Number(text) > max) {
    throw new RevpatchError('E_INVALID_ARGUMENT', `${flag} must be a whole number from ${min} to ${max}, not ${JSON.stringify(text)}`);
  }
  return Number(text);
}
