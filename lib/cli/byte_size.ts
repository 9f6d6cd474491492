/**
 * Byte counts on the command line: a whole number of bytes, or a number
 * with a binary suffix (`K` = 1024, `M`, `G`; an optional `iB`/`B` after
 * it, any case), as in `--max-rate 2M`. Anything else, a negative number
 * or more than 2^53 - 1 bytes is E_INVALID_ARGUMENT naming the flag, thrown
 * before anything runs.
 */
import { RevpatchError } from '../engine/errors';

const UNITS: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 };

export function parseByteSize(text: string, flag: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmg]?)(?:i?b)?\s*$/i.exec(text);
  const value = m ? Math.floor(Number(m[1]) * UNITS[m[2].toLowerCase()]) : NaN;
  if (!m || !Number.isSafeInteger(value)) {
    throw new RevpatchError('E_INVALID_ARGUMENT', `${flag} ${JSON.stringify(text)}: expected bytes, e.g. 65536, 512K, 2M or 1G`);
  }
  return value;
}
