/**
 * Whether and where a device reports (`revpatch init --report URL
 * --report-token FILE`): STATE/report/config.json holds the collector's URL
 * and the enrollment token, STATE/report/secret the 32 random bytes that
 * key the device's pseudonyms (lib/report/client.ts). Both are mode 0600:
 * the token lets its holder send reports, and the secret would let its
 * holder link the device's reports across patches.
 *
 * Setting reporting up validates everything before it writes anything, and
 * writes atomically: a new report directory is built under a temporary name
 * and renamed into place; an existing one keeps its secret (pseudonyms stay
 * stable) and has its config replaced atomically. A new directory comes
 * with an empty queue, so the agent's first open does not pay for its
 * creation.
 */
import * as crypto from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { syncDirectory, writeFileAtomic } from '../engine/atomic';
import { RevpatchError, toRevpatchError } from '../engine/errors';
import { ReportQueue } from './queue';

export const REPORT_DIR = 'report';
export const CONFIG_FILE = 'config.json';
export const SECRET_FILE = 'secret';
export const SECRET_BYTES = 32;

export interface ReportConfig {
  format: 1;
  /** The fleet service, without a trailing slash; reports go to `${url}/v1/reports`. */
  url: string;
  token: string;
}

export interface ReportingInput {
  url: string;
  /** A file holding the enrollment token (`revpatch fleet enroll --out FILE`). */
  tokenFile: string;
}

/** A bearer token (RFC 6750 b64token): no spaces, quotes or control characters. */
const TOKEN_SHAPE = /^[A-Za-z0-9\-._~+/]+=*$/;
const MAX_TOKEN_FILE_BYTES = 4096;

export function reportDir(stateDir: string): string {
  return path.join(path.resolve(stateDir), REPORT_DIR);
}

/** The collector URL, checked: http or https, no credentials, query or fragment. */
export function validateCollectorUrl(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new RevpatchError('E_INVALID_ARGUMENT', `--report ${JSON.stringify(url)} is not a URL`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new RevpatchError('E_INVALID_ARGUMENT', `--report must be an http or https URL, not ${parsed.protocol}`);
  }
  if (parsed.username || parsed.password || parsed.search || parsed.hash) {
    throw new RevpatchError('E_INVALID_ARGUMENT', '--report must not carry credentials, a query or a fragment');
  }
  return parsed.href.replace(/\/+$/, '');
}

/** The token in `file`: E_NOT_FOUND if it is missing, E_KEY if it is not one token. */
export async function readTokenFile(file: string): Promise<string> {
  let data: Buffer;
  try {
    const stat = await fs.stat(file);
    if (!stat.isFile()) throw new RevpatchError('E_KEY', `${file} is not a token file`);
    if (stat.size > MAX_TOKEN_FILE_BYTES) throw new RevpatchError('E_KEY', `${file} is too large to be a token file`);
    data = await fs.readFile(file);
  } catch (err) {
    const e = toRevpatchError(err);
    if (e.code === 'E_NOT_FOUND') throw new RevpatchError('E_NOT_FOUND', `token file ${file} does not exist`, { cause: err });
    throw e;
  }
  const token = data.toString('utf8').trim();
  if (token.length < 16 || !TOKEN_SHAPE.test(token)) {
    throw new RevpatchError('E_KEY', `${file} does not hold a report token`);
  }
  return token;
}

/** Validates what `init --report` was given, writing nothing. */
export async function readReportingInput(input: ReportingInput): Promise<ReportConfig> {
  const url = validateCollectorUrl(input.url);
  const token = await readTokenFile(input.tokenFile);
  return { format: 1, url, token };
}

/** Writes a validated config (and a secret, if the device has none yet) into the state directory. */
export async function writeReportConfig(stateDir: string, config: ReportConfig): Promise<void> {
  const dir = reportDir(stateDir);
  const json = `${JSON.stringify(config, null, 1)}\n`;
  try {
    if (await readSecret(dir).then(() => true, () => false)) {
      await writeFileAtomic(path.join(dir, CONFIG_FILE), json, { mode: 0o600 });
      return;
    }
    await fs.mkdir(path.dirname(dir), { recursive: true });
    const temp = await fs.mkdtemp(path.join(path.dirname(dir), `.${REPORT_DIR}.`));
    try {
      await fs.chmod(temp, 0o700);
      await writeFileAtomic(path.join(temp, SECRET_FILE), crypto.randomBytes(SECRET_BYTES), { mode: 0o600 });
      await writeFileAtomic(path.join(temp, CONFIG_FILE), json, { mode: 0o600 });
      // An empty queue now, so the agent's first open has no file to create and fsync.
      await (await ReportQueue.open(temp)).close();
      // A report directory without a secret (a queue left over) is replaced whole.
      await fs.rm(dir, { recursive: true, force: true });
      await fs.rename(temp, dir);
    } catch (err) {
      await fs.rm(temp, { recursive: true, force: true }).catch(() => undefined);
      throw err;
    }
    await syncDirectory(path.dirname(dir));
  } catch (err) {
    throw toRevpatchError(err);
  }
}

/** `revpatch init --report URL --report-token FILE`: validates, then writes config and secret. */
export async function configureReporting(stateDir: string, input: ReportingInput): Promise<ReportConfig> {
  const config = await readReportingInput(input);
  await writeReportConfig(stateDir, config);
  return config;
}

/** The config, or null when the device does not report; E_CORRUPT if it is unreadable. */
export async function readReportConfig(stateDir: string): Promise<ReportConfig | null> {
  const file = path.join(reportDir(stateDir), CONFIG_FILE);
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw toRevpatchError(err);
  }
  try {
    const value = JSON.parse(text) as Partial<ReportConfig>;
    if (value?.format !== 1 || typeof value.url !== 'string' || typeof value.token !== 'string') throw new Error('unexpected shape');
    return { format: 1, url: validateCollectorUrl(value.url), token: value.token };
  } catch (err) {
    throw new RevpatchError('E_CORRUPT', `${file} is not a report config`, { cause: err });
  }
}

/** The pseudonym secret of the report directory `dir`. */
export async function readSecret(dir: string): Promise<Buffer> {
  const file = path.join(dir, SECRET_FILE);
  let secret: Buffer;
  try {
    secret = await fs.readFile(file);
  } catch (err) {
    throw toRevpatchError(err);
  }
  if (secret.length !== SECRET_BYTES) throw new RevpatchError('E_KEY', `${file} is not a ${SECRET_BYTES}-byte secret`);
  return secret;
}
