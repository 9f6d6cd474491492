/**
 * Sizes on the command line: a whole number of bytes, or one with a binary
 * suffix K, M, G or T (`512M`, `1G`; `KiB`-style and `B` endings accepted).
 * A bad value is E_INVALID_ARGUMENT naming the flag.
 */
import { RevpatchError } from '../engine/errors';

const UNITS: Record<string, number> = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 };

export function parseByteSize(flag: string, text: string): number {
  const m = /^(\d+)\s*([KMGT]?)(?:i?B)?$/i.exec(text.trim());
  if (!m) {
    throw new RevpatchError('E_INVALID_ARGUMENT', `${flag} must be a size in bytes, optionally with K, M, G or T (e.g. 512M), not ${JSON.stringify(text)}`);
  }
  const n = Number(m[1]) * UNITS[m[2].toUpperCase()];
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
