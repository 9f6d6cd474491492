/**
 * The device's end of the report protocol (lib/report/format.ts; DESIGN.md,
 * "Fleet"): how a report is made and how a batch reaches the collector.
 *
 * - `pseudonymOf` names the device per patch: an HMAC of the patch id under
 *   a random secret kept in the state directory, so the collector can count
 *   distinct devices per patch but cannot link one device across patches.
 *   Nothing else in a report names the device; the agent's rollout id is
 *   never sent.
 * - `newReport` gives each report its own random id, which the collector
 *   stores once: a batch retried after a lost answer is counted once.
 * - `postBatch` is one POST of one batch, nothing more. Retry, backoff and
 *   the queue live in the Reporter (lib/report/reporter.ts). Its errors say
 *   what a retry can fix: E_NETWORK (connection, timeout, 5xx, 429) is worth
 *   retrying; E_AUTH (401) and E_FORBIDDEN (403) concern the token, not the
 *   batch; any other 4xx is the collector's verdict on the batch, with the
 *   collector's own stable code, and sending it again cannot help.
 */
import * as crypto from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import * as path from 'node:path';
import { RevpatchError, isErrorCode, type ErrorCode } from '../engine/errors';
import { OUTCOMES, REPORT_FORMAT, type BatchAck, type DeviceReport, type Outcome, type ReportBatch } from './format';

/** Domain separation: the secret could one day key other HMACs; this one only ever names a device for a patch. */
const PSEUDONYM_DOMAIN = 'revpatch report pseudonym v1\0';

/** The device's pseudonym for one patch: 64 lowercase hex. */
export function pseudonymOf(secret: Buffer, patchId: string): string {
  if (!Buffer.isBuffer(secret) || secret.length < 16) {
    throw new RevpatchError('E_INVALID_ARGUMENT', 'the report secret must be at least 16 bytes');
  }
  return crypto.createHmac('sha256', secret).update(PSEUDONYM_DOMAIN).update(patchId, 'utf8').digest('hex');
}

let cachedVersion: string | null = null;

/** The revpatch version (package.json), read once. */
export function agentVersion(): string {
  if (cachedVersion === null) {
    try {
      const pkg = JSON.parse(readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8')) as { version?: unknown };
      cachedVersion = typeof pkg.version === 'string' ? pkg.version : 'unknown';
    } catch {
      cachedVersion = 'unknown';
    }
  }
  return cachedVersion;
}

export interface ReportFields {
  patch: string;
  version: number;
  outcome: Outcome;
  /** See DeviceReport.code; default null. */
  code?: string | null;
  /** Default 0. */
  bootAttempts?: number;
  pseudonym: string;
  /** Default now. */
  time?: Date | string;
}

/** A report with a fresh random id and this agent's version. */
export function newReport(fields: ReportFields): DeviceReport {
  if (!OUTCOMES.includes(fields.outcome)) throw new RevpatchError('E_INVALID_ARGUMENT', `unknown outcome ${String(fields.outcome)}`);
  const time = fields.time === undefined ? new Date() : fields.time;
  return {
    id: crypto.randomBytes(16).toString('hex'),
    patch: fields.patch,
    version: fields.version,
    outcome: fields.outcome,
    code: fields.code ?? null,
    bootAttempts: fields.bootAttempts ?? 0,
    agentVersion: agentVersion(),
    time: typeof time === 'string' ? time : time.toISOString(),
    pseudonym: fields.pseudonym,
  };
}

export interface PostOptions {
  signal?: AbortSignal;
  /** The whole request, connect to last byte of the answer (default 10 s). */
  timeoutMs?: number;
}

/** Answers larger than this are not the collector's. */
const MAX_ANSWER_BYTES = 64 * 1024;
export const DEFAULT_POST_TIMEOUT_MS = 10_000;

/** Whether sending the same batch again may succeed. */
export function isRetryable(err: unknown): boolean {
  return (err as { code?: unknown })?.code === 'E_NETWORK';
}

/**
 * One POST of `reports` to `${url}/v1/reports`. Resolves with the
 * collector's acknowledgement, which it sends only once the batch is
 * stored durably.
 */
export function postBatch(url: string, token: string, reports: readonly DeviceReport[], options: PostOptions = {}): Promise<BatchAck> {
  let endpoint: URL;
  try {
    endpoint = new URL(`${url.replace(/\/+$/, '')}/v1/reports`);
  } catch (err) {
    return Promise.reject(new RevpatchError('E_INVALID_ARGUMENT', `bad collector URL ${url}`, { cause: err }));
  }
  if (endpoint.protocol !== 'http:' && endpoint.protocol !== 'https:') {
    return Promise.reject(new RevpatchError('E_INVALID_ARGUMENT', `the collector URL must be http or https, not ${endpoint.protocol}`));
  }
  const batch: ReportBatch = { format: REPORT_FORMAT, reports: [...reports] };
  const body = Buffer.from(JSON.stringify(batch), 'utf8');
  const timeoutMs = options.timeoutMs ?? DEFAULT_POST_TIMEOUT_MS;
  const { signal } = options;
  return new Promise<BatchAck>((resolve, reject) => {
    if (signal?.aborted) {
      reject(new RevpatchError('E_ABORTED', 'report sending aborted'));
      return;
    }
    let settled = false;
    const finish = (err: RevpatchError | null, ack?: BatchAck) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      if (err) {
        request.destroy();
        reject(err);
      } else {
        resolve(ack!);
      }
    };
    const onAbort = () => finish(new RevpatchError('E_ABORTED', 'report sending aborted'));
    const timer = setTimeout(
      () => finish(new RevpatchError('E_NETWORK', `the collector did not answer within ${timeoutMs} ms`)),
      timeoutMs,
    );
    timer.unref?.();
    signal?.addEventListener('abort', onAbort, { once: true });
    const transport = endpoint.protocol === 'https:' ? https : http;
    const request = transport.request(
      endpoint,
      {
        method: 'POST',
        agent: false,
        headers: {
          Authorization: `Bearer ${token}`,
          'Content-Type': 'application/json',
          'Content-Length': body.length,
          Accept: 'application/json',
        },
      },
      (response) => {
        const chunks: Buffer[] = [];
        let size = 0;
        response.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_ANSWER_BYTES) {
            finish(new RevpatchError('E_NETWORK', `the collector's answer exceeds ${MAX_ANSWER_BYTES} bytes`));
            return;
          }
          chunks.push(chunk);
        });
        response.on('error', (err) => finish(new RevpatchError('E_NETWORK', `reading the collector's answer: ${err.message}`, { cause: err })));
        response.on('end', () => {
          const status = response.statusCode ?? 0;
          const text = Buffer.concat(chunks).toString('utf8');
          if (status === 200) {
            const ack = parseAck(text);
            if (ack) finish(null, ack);
            else finish(new RevpatchError('E_NETWORK', 'the collector answered 200 without an acknowledgement'));
            return;
          }
          finish(statusError(status, text));
        });
      },
    );
    request.on('error', (err) => finish(new RevpatchError('E_NETWORK', `sending reports to ${endpoint.origin}: ${err.message}`, { cause: err })));
    request.end(body);
  });
}

function parseAck(text: string): BatchAck | null {
  try {
    const value = JSON.parse(text) as Partial<BatchAck>;
    const count = (n: unknown) => typeof n === 'number' && Number.isInteger(n) && n >= 0;
    if (value && count(value.accepted) && count(value.duplicates)) return { accepted: value.accepted!, duplicates: value.duplicates! };
  } catch {
    // fall through: not an acknowledgement
  }
  return null;
}

/** The collector's `{error: {code, message}}`, if its answer is one. */
function serverError(text: string): { code: string | null; message: string | null } {
  try {
    const value = JSON.parse(text) as { error?: { code?: unknown; message?: unknown } };
    const code = typeof value?.error?.code === 'string' ? value.error.code : null;
    const message = typeof value?.error?.message === 'string' ? value.error.message : null;
    return { code, message };
  } catch {
    return { code: null, message: null };
  }
}

function statusError(status: number, text: string): RevpatchError {
  const { code, message } = serverError(text);
  const said = message ? `: ${message}` : '';
  if (status >= 500 || status === 429 || status === 408) return new RevpatchError('E_NETWORK', `the collector answered ${status}${said}`);
  if (status === 401) return new RevpatchError('E_AUTH', `the collector refused the report token (401)${said}`);
  if (status === 403) return new RevpatchError('E_FORBIDDEN', `the collector forbids this request (403)${said}`);
  if (status >= 400) {
    let stable: ErrorCode = status === 413 ? 'E_TOO_LARGE' : 'E_INVALID_ARGUMENT';
    // E_NETWORK from the server would make a permanent refusal look retryable.
    if (isErrorCode(code) && code !== 'E_NETWORK') stable = code;
    return new RevpatchError(stable, `the collector refused the batch (${status})${said}`);
  }
  return new RevpatchError('E_NETWORK', `the collector answered ${status}${said}`);
}
