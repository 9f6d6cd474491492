/**
 * The values `revpatch fleet …` takes, checked at the edge (STYLE.md,
 * "validate at the edge, once"): listen addresses, stage lists,
 * percentages, counts and durations. Each parser is a commander argument
 * parser: a malformed value is an InvalidArgumentError, which the command
 * line turns into a usage error (exit 2) before anything is opened.
 *
 * `sqliteFileOf` and `insideDirectory` back the one check that needs the
 * file system: a SQLite database must not live inside the repository
 * directory, because a web server publishes that directory as it is.
 */
import { InvalidArgumentError } from 'commander';
import { realpathSync } from 'node:fs';
import * as path from 'node:path';
import { MAX_STAGES } from '../fleet/decision';
import { ID_PATTERN } from '../patch/manifest';

/** Where `fleet serve` listens unless told: loopback only, a port of its own. */
export const DEFAULT_FLEET_HOST = '127.0.0.1';
export const DEFAULT_FLEET_PORT = 8470;

export interface ListenAddress {
  host: string;
  port: number;
}

const HOSTNAME = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const IPV6 = /^[0-9A-Fa-f:.]+$/;

/** `HOST:PORT`, `[IPv6]:PORT` or `:PORT` (loopback); port 0 takes any free one. */
export function parseListen(value: string): ListenAddress {
  const m = /^(?:\[([^\]]*)\]|([^:[\]]*)):(\d{1,5})$/.exec(value);
  if (!m) throw new InvalidArgumentError('--listen must be HOST:PORT (e.g. 127.0.0.1:8470, [::1]:8470)');
  const port = Number(m[3]);
  if (port > 65535) throw new InvalidArgumentError('--listen port must be from 0 to 65535');
  if (m[1] !== undefined) {
    if (!IPV6.test(m[1]) || !m[1].includes(':')) throw new InvalidArgumentError(`--listen: ${JSON.stringify(m[1])} is not an IPv6 address`);
    return { host: m[1], port };
  }
  const host = m[2] === '' ? DEFAULT_FLEET_HOST : m[2];
  if (!IPV4.test(host) && !(HOSTNAME.test(host) && !/^[\d.]+$/.test(host))) {
    throw new InvalidArgumentError(`--listen: ${JSON.stringify(host)} is not a host name or IPv4 address`);
  }
  return { host, port };
}

/** A name the Host header may carry besides the listen address: `name`, `name:port` or `[IPv6]:port`. */
export function parseAllowHost(value: string): string {
  const m = /^(\[[0-9A-Fa-f:.]+\]|[^:[\]]+)(?::(\d{1,5}))?$/.exec(value);
  const host = m?.[1] ?? '';
  const okHost = host.startsWith('[') ? host.includes(':') : IPV4.test(host) || (HOSTNAME.test(host) && !/^[\d.]+$/.test(host));
  if (!m || !okHost || (m[2] !== undefined && Number(m[2]) > 65535)) {
    throw new InvalidArgumentError(`--allow-host: ${JSON.stringify(value)} is not NAME or NAME:PORT`);
  }
  return value.toLowerCase();
}

/** True for addresses only this machine can reach. */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}

/** `1,5,25,100`: percentages strictly increasing, each in (0, 100]. */
export function parseStages(value: string): number[] {
  const parts = value.split(',').map((s) => s.trim());
  if (parts.length === 0 || parts.some((p) => !/^\d+(\.\d+)?$/.test(p))) {
    throw new InvalidArgumentError('--stages must be percentages separated by commas, e.g. 1,5,25,100');
  }
  const stages = parts.map(Number);
  if (parts.length > MAX_STAGES) throw new InvalidArgumentError(`--stages: at most ${MAX_STAGES} stages`);
  for (const [i, s] of stages.entries()) {
    if (!(s > 0 && s <= 100)) throw new InvalidArgumentError(`--stages: ${parts[i]} is not in (0, 100]`);
    if (Math.round(s * 100) !== s * 100) throw new InvalidArgumentError(`--stages: ${parts[i]} has more than two decimals`);
    if (i > 0 && s <= stages[i - 1]) throw new InvalidArgumentError(`--stages must increase strictly (${parts[i - 1]} then ${parts[i]})`);
  }
  return stages;
}

/** A number from `min` to `max` (decimals allowed). */
export function decimal(flag: string, min: number, max: number, { minExclusive = false, maxExclusive = false } = {}) {
  return (value: string): number => {
    const n = Number(value);
    const ok =
      /^\d+(\.\d+)?$/.test(value.trim()) &&
      Number.isFinite(n) &&
      (minExclusive ? n > min : n >= min) &&
      (maxExclusive ? n < max : n <= max);
    if (!ok) {
      const lo = minExclusive ? `above ${min}` : `from ${min}`;
      const hi = maxExclusive ? `below ${max}` : `to ${max}`;
      throw new InvalidArgumentError(`${flag} must be a number ${lo} ${hi}`);
    }
    return n;
  };
}

/** A whole number from `min` to `max`. */
export function whole(flag: string, min: number, max: number) {
  return (value: string): number => {
    if (!/^\d+$/.test(value.trim())) throw new InvalidArgumentError(`${flag} must be a whole number`);
    const n = Number(value);
    if (!Number.isSafeInteger(n) || n < min || n > max) throw new InvalidArgumentError(`${flag} must be from ${min} to ${max}`);
    return n;
  };
}

/** A patch id as the repository spells it (the manifest's id rule). */
export function patchId(value: string): string {
  if (!ID_PATTERN.test(value)) {
    throw new InvalidArgumentError('ID must be letters, digits, ".", "_" or "-" (at most 128), starting with a letter or digit');
  }
  return value;
}

/** The file of a `sqlite:PATH` URL, resolved against the working directory; null for other URLs and `:memory:`. */
export function sqliteFileOf(url: string): string | null {
  if (!url.startsWith('sqlite:')) return null;
  const file = url.slice('sqlite:'.length);
  if (file === '' || file === ':memory:') return null;
  return path.resolve(file);
}

/** The real path of `p`, or of its nearest existing ancestor joined with the rest. */
function realish(p: string): string {
  const rest: string[] = [];
  let cur = path.resolve(p);
  for (;;) {
    try {
      return path.join(realpathSync(cur), ...rest.reverse());
    } catch {
      const parent = path.dirname(cur);
      if (parent === cur) return path.join(cur, ...rest.reverse());
      rest.push(path.basename(cur));
      cur = parent;
    }
  }
}

/** Whether `file` is `dir` or lies below it, symbolic links resolved. */
export function insideDirectory(file: string, dir: string): boolean {
  const f = realish(file);
  const d = realish(dir);
  const rel = path.relative(d, f);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}
