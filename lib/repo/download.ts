/**
 * Downloads over HTTP(S) that an attacker between device and server cannot
 * use to exhaust the device (TUF's endless-data and slow-retrieval attacks),
 * and that survive flaky networks:
 *
 * - the expected length and SHA-256 come from verified metadata; a body
 *   longer than announced is cut off at the first excess byte (E_TOO_LARGE),
 *   a shorter one is resumed, the hash is checked over the whole file;
 * - a partial file is continued with `Range` (and `If-Range` with the
 *   ETag seen before, kept beside the file in DEST.etag), so a file that
 *   changed on the server is fetched whole again instead of spliced;
 * - retries with exponential backoff and full jitter;
 * - a connect timeout (until the response headers), a read timeout (longest
 *   silence), and a minimum transfer rate averaged over a window
 *   (E_SLOW_RETRIEVAL), so a trickling server cannot hold the device;
 * - an optional bandwidth cap, progress events, AbortSignal (E_ABORTED).
 *
 * The destination is written strictly in order and fsynced every few MiB, so
 * `onWritten` can feed a consumer that reads the growing file (the streaming
 * install), and a crash keeps a resumable prefix. A failed attempt keeps the
 * partial file for the next one; data that failed a check is deleted.
 */
import * as crypto from 'node:crypto';
import { promises as fs } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import * as http from 'node:http';
import * as https from 'node:https';
import { writeAll } from '../engine/atomic';
import { RevpatchError, toRevpatchError, type ErrorCode } from '../engine/errors';
import type { DownloadOptions, DownloadResult, TransportOptions } from './types';

const DEFAULTS = {
  retries: 5,
  backoffMs: 500,
  maxBackoffMs: 30_000,
  connectTimeoutMs: 10_000,
  readTimeoutMs: 15_000,
  minBytesPerSecond: 1024,
  rateWindowMs: 10_000,
  syncEveryBytes: 8 * 1024 * 1024,
};

/** An HTTP status the server answered with, kept for callers that branch on it (404 ends a root walk). */
export class HttpStatusError extends RevpatchError {
  constructor(
    readonly status: number,
    url: string,
  ) {
    super(status === 404 ? 'E_NOT_FOUND' : 'E_NETWORK', `GET ${url}: HTTP ${status}`);
  }
}

const RETRYABLE: ReadonlySet<ErrorCode> = new Set<ErrorCode>(['E_NETWORK', 'E_SLOW_RETRIEVAL', 'E_LENGTH_MISMATCH']);

/** A hash mismatch of a file continued from an earlier prefix: worth one fetch from the start. */
class SplicedHashError extends RevpatchError {
  constructor(message: string) {
    super('E_HASH_MISMATCH', message);
  }
}

function retryable(err: RevpatchError): boolean {
  if (err instanceof SplicedHashError) return true;
  if (err instanceof HttpStatusError) return err.status >= 500 || err.status === 408 || err.status === 429;
  return RETRYABLE.has(err.code);
}

function abortError(): RevpatchError {
  return new RevpatchError('E_ABORTED', 'the download was aborted');
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortError());
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(abortError());
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Full jitter: uniform in [0, min(cap, base * 2^attempt)). */
export function backoffDelay(attempt: number, baseMs: number, capMs: number, random: () => number = Math.random): number {
  return Math.floor(random() * Math.min(capMs, baseMs * 2 ** attempt));
}

function networkError(err: unknown, url: string): RevpatchError {
  if (err instanceof RevpatchError) return err;
  const code = (err as NodeJS.ErrnoException)?.code ?? '';
  return new RevpatchError('E_NETWORK', `GET ${url}: ${code ? `${code} ` : ''}${(err as Error)?.message ?? err}`, { cause: err });
}

interface Attempt {
  url: string;
  /** Bytes already held; asked for with Range when > 0. */
  from: number;
  ifRange?: string;
  options: Required<Pick<DownloadOptions, 'connectTimeoutMs' | 'readTimeoutMs' | 'minBytesPerSecond' | 'rateWindowMs'>> &
    Pick<DownloadOptions, 'maxBytesPerSecond' | 'signal' | 'userAgent'>;
  /** Called with each body chunk; returns when it has been consumed. */
  onResponse(status: number, headers: http.IncomingHttpHeaders): void;
  onChunk(chunk: Buffer): Promise<void>;
}

/**
 * One HTTP GET with the connect/read timeouts, the rate floor and the cap
 * enforced; resolves when the body ended, rejects with a coded error.
 */
function runAttempt(a: Attempt): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const { options } = a;
    if (options.signal?.aborted) return reject(abortError());
    let target: URL;
    try {
      target = new URL(a.url);
    } catch {
      return reject(new RevpatchError('E_INVALID_ARGUMENT', `${a.url} is not a URL`));
    }
    if (target.protocol !== 'http:' && target.protocol !== 'https:') {
      return reject(new RevpatchError('E_INVALID_ARGUMENT', `${a.url}: only http and https are supported`));
    }
    const headers: http.OutgoingHttpHeaders = { 'Accept-Encoding': 'identity' };
    if (options.userAgent) headers['User-Agent'] = options.userAgent;
    if (a.from > 0) {
      headers.Range = `bytes=${a.from}-`;
      if (a.ifRange) headers['If-Range'] = a.ifRange;
    }
    const lib = target.protocol === 'https:' ? https : http;
    let settled = false;
    let response: http.IncomingMessage | undefined;
    // The chunk being handed to onChunk, if any. A failure (a cut
    // connection, a timeout, an abort) can arrive while it is being
    // written; the attempt is failed only once that write is over, so the
    // caller's count of bytes held never changes after the attempt ended
    // (the next attempt asks for the range from that count).
    let inFlight: Promise<void> | undefined;
    const timers: NodeJS.Timeout[] = [];
    const finish = (err?: unknown) => {
      if (settled) return;
      settled = true;
      for (const t of timers) clearTimeout(t), clearInterval(t);
      options.signal?.removeEventListener('abort', onAbort);
      if (err) {
        request.destroy();
        response?.destroy();
        const failed = networkError(err, a.url);
        void (inFlight ?? Promise.resolve()).catch(() => undefined).then(() => reject(failed));
      } else {
        resolve();
      }
    };
    const onAbort = () => finish(abortError());
    options.signal?.addEventListener('abort', onAbort, { once: true });
    const request = lib.get(target, { headers, agent: false });
    timers.push(
      setTimeout(
        () =>
          finish(new RevpatchError('E_SLOW_RETRIEVAL', `GET ${a.url}: no response within ${options.connectTimeoutMs} ms`)),
        options.connectTimeoutMs,
      ),
    );
    request.on('error', (err) => finish(err));
    request.on('response', (res) => {
      response = res;
      clearTimeout(timers[0]);
      try {
        a.onResponse(res.statusCode ?? 0, res.headers);
      } catch (err) {
        finish(err);
        return;
      }
      // Watchdog: silence longer than the read timeout, or fewer bytes than
      // the rate floor over the last window (time spent paused by the
      // bandwidth cap does not count against the server).
      const started = Date.now();
      let lastData = started;
      let pausedMs = 0;
      let capped = false;
      const samples: Array<[number, number]> = [[started, 0]];
      let received = 0;
      const tick = Math.max(50, Math.min(1000, Math.floor(Math.min(options.readTimeoutMs, options.rateWindowMs) / 4)));
      const watchdog = setInterval(() => {
        const now = Date.now();
        if (!capped && now - lastData > options.readTimeoutMs) {
          finish(new RevpatchError('E_SLOW_RETRIEVAL', `GET ${a.url}: no data for ${options.readTimeoutMs} ms`));
          return;
        }
        samples.push([now - pausedMs, received]);
        const windowStart = now - pausedMs - options.rateWindowMs;
        while (samples.length > 1 && samples[1][0] <= windowStart) samples.shift();
        if (options.minBytesPerSecond > 0 && now - pausedMs - started >= options.rateWindowMs) {
          const [t0, b0] = samples[0];
          const rate = ((received - b0) * 1000) / Math.max(1, now - pausedMs - t0);
          if (rate < options.minBytesPerSecond) {
            finish(
              new RevpatchError(
                'E_SLOW_RETRIEVAL',
                `GET ${a.url}: ${Math.round(rate)} bytes/s over ${options.rateWindowMs} ms, below the floor of ${options.minBytesPerSecond}`,
              ),
            );
          }
        }
      }, tick);
      timers.push(watchdog);
      res.on('error', (err) => finish(err));
      res.on('aborted', () => finish(new RevpatchError('E_NETWORK', `GET ${a.url}: the connection was cut mid-body`)));
      void (async () => {
        try {
          for await (const chunk of res as AsyncIterable<Buffer>) {
            if (settled) return;
            lastData = Date.now();
            received += chunk.byteLength;
            inFlight = a.onChunk(chunk);
            await inFlight;
            inFlight = undefined;
            const cap = options.maxBytesPerSecond;
            if (cap && cap > 0) {
              const due = started + (received * 1000) / cap;
              const wait = due - Date.now();
              if (wait > 0) {
                capped = true;
                await sleep(wait, options.signal).catch(() => undefined);
                capped = false;
                pausedMs += wait;
                lastData = Date.now();
              }
            }
          }
          if (!res.complete) throw new RevpatchError('E_NETWORK', `GET ${a.url}: the connection was cut mid-body`);
          finish();
        } catch (err) {
          finish(err);
        }
      })();
    });
  });
}

function withDefaults(options: TransportOptions & Pick<DownloadOptions, 'signal'>) {
  const o = {
    retries: options.retries ?? DEFAULTS.retries,
    backoffMs: options.backoffMs ?? DEFAULTS.backoffMs,
    maxBackoffMs: options.maxBackoffMs ?? DEFAULTS.maxBackoffMs,
    connectTimeoutMs: options.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs,
    readTimeoutMs: options.readTimeoutMs ?? DEFAULTS.readTimeoutMs,
    minBytesPerSecond: options.minBytesPerSecond ?? DEFAULTS.minBytesPerSecond,
    rateWindowMs: options.rateWindowMs ?? DEFAULTS.rateWindowMs,
    maxBytesPerSecond: options.maxBytesPerSecond,
    signal: options.signal,
    userAgent: options.userAgent ?? 'revpatch',
  };
  for (const [name, value] of Object.entries(o)) {
    if (typeof value === 'number' && (!Number.isFinite(value) || value < 0)) {
      throw new RevpatchError('E_INVALID_ARGUMENT', `${name} must be a non-negative number`);
    }
  }
  if (o.maxBytesPerSecond !== undefined && o.maxBytesPerSecond > 0 && o.maxBytesPerSecond < o.minBytesPerSecond) {
    throw new RevpatchError('E_INVALID_ARGUMENT', 'the bandwidth cap is below the minimum transfer rate');
  }
  return o;
}

/** Runs `attempt` with retries, backoff and jitter; non-retryable errors end at once. */
async function withRetries<T>(
  o: ReturnType<typeof withDefaults>,
  attempt: (n: number) => Promise<T>,
): Promise<T> {
  for (let n = 0; ; n++) {
    try {
      return await attempt(n);
    } catch (err) {
      const e = toRevpatchError(err);
      if (o.signal?.aborted) throw abortError();
      if (n >= o.retries || !retryable(e)) throw e;
      await sleep(backoffDelay(n, o.backoffMs, o.maxBackoffMs), o.signal);
    }
  }
}

/**
 * Fetches a small resource (TUF metadata) into memory; more than
 * `maxLength` bytes is E_TOO_LARGE at the first excess byte.
 */
export async function fetchBytes(
  url: string,
  maxLength: number,
  options: TransportOptions & { signal?: AbortSignal } = {},
): Promise<Buffer> {
  const o = withDefaults(options);
  return withRetries(o, async () => {
    const parts: Buffer[] = [];
    let total = 0;
    await runAttempt({
      url,
      from: 0,
      options: o,
      onResponse(status, headers) {
        if (status !== 200) throw new HttpStatusError(status, url);
        const announced = Number(headers['content-length']);
        if (Number.isFinite(announced) && announced > maxLength) {
          throw new RevpatchError('E_TOO_LARGE', `GET ${url}: ${announced} bytes announced, at most ${maxLength} accepted`);
        }
      },
      async onChunk(chunk) {
        total += chunk.byteLength;
        if (total > maxLength) throw new RevpatchError('E_TOO_LARGE', `GET ${url}: more than ${maxLength} bytes`);
        parts.push(chunk);
      },
    });
    return Buffer.concat(parts, total);
  });
}

async function readEtag(file: string): Promise<string | undefined> {
  const text = await fs.readFile(file, 'utf8').catch(() => '');
  return /^"[\x21\x23-\x7e]{1,200}"$/.test(text.trim()) ? text.trim() : undefined;
}

/** Feeds the first `length` bytes of `handle` to `hash`. */
async function hashPrefix(handle: FileHandle, length: number, hash: crypto.Hash): Promise<void> {
  const buffer = Buffer.allocUnsafe(1024 * 1024);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await handle.read(buffer, 0, Math.min(buffer.length, length - done), done);
    if (bytesRead === 0) throw new RevpatchError('E_IO', 'the partial download shrank while being read');
    hash.update(buffer.subarray(0, bytesRead));
    done += bytesRead;
  }
}

/**
 * Downloads `url` into `dest`, continuing a partial file there; resolves once
 * the file has exactly `expectedLength` bytes with the right hash and is
 * fsynced.
 */
export async function download(url: string, dest: string, options: DownloadOptions): Promise<DownloadResult> {
  const expected = options.expectedLength;
  if (!Number.isSafeInteger(expected) || expected < 0) {
    throw new RevpatchError('E_INVALID_ARGUMENT', 'expectedLength must be a non-negative integer');
  }
  if (options.sha256 !== undefined && !/^[0-9a-f]{64}$/.test(options.sha256)) {
    throw new RevpatchError('E_INVALID_ARGUMENT', 'sha256 must be 64 lowercase hex digits');
  }
  const o = withDefaults(options);
  const syncEvery = options.syncEveryBytes ?? DEFAULTS.syncEveryBytes;
  const etagFile = `${dest}.etag`;
  let handle: FileHandle;
  try {
    handle = await fs.open(dest, 'a+'); // never truncates what an earlier run left
    await handle.close();
    handle = await fs.open(dest, 'r+');
  } catch (err) {
    throw toRevpatchError(err);
  }
  const discard = async () => {
    await handle.truncate(0);
    await fs.rm(etagFile, { force: true });
  };
  let resumedFrom = -1;
  let attempts = 0;
  let lastProgress = 0;
  try {
    if (options.resume === false) await discard();
    let have = (await handle.stat()).size;
    if (have > expected) {
      await discard();
      have = 0;
    }
    let hash = crypto.createHash('sha256');
    await hashPrefix(handle, have, hash);
    let etag = await readEtag(etagFile);
    resumedFrom = have;
    let spliced = have > 0;
    const report = (rate: number, force = false) => {
      options.onWritten?.(have);
      const now = Date.now();
      if (options.onProgress && (force || now - lastProgress >= 100)) {
        lastProgress = now;
        options.onProgress({ received: have, total: expected, rate, attempt: attempts });
      }
    };
    report(0, true);
    const result = await withRetries(o, async () => {
      attempts += 1;
      if (have < expected) {
        let sinceSync = 0;
        const started = Date.now();
        let thisRun = 0;
        await runAttempt({
          url,
          from: have,
          ifRange: etag,
          options: o,
          onResponse: (status, headers) => {
            if (status === 416 && have > 0) {
              throw new RevpatchError('E_LENGTH_MISMATCH', `GET ${url}: the server has fewer bytes than the ${have} held`);
            }
            if (status !== 200 && status !== 206) throw new HttpStatusError(status, url);
            const announced = Number(headers['content-length']);
            let start = 0;
            if (status === 206) {
              const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(String(headers['content-range'] ?? ''));
              if (!m || Number(m[1]) !== have) {
                throw new RevpatchError('E_NETWORK', `GET ${url}: a range response that does not start at ${have}`);
              }
              start = have;
              if (m[3] !== '*' && Number(m[3]) > expected) {
                throw new RevpatchError('E_TOO_LARGE', `GET ${url}: the server has ${m[3]} bytes, ${expected} expected`);
              }
            } else if (have > 0) {
              // The server ignored the range or the file changed (If-Range): start over.
              have = 0;
              hash = crypto.createHash('sha256');
              spliced = false;
            }
            if (Number.isFinite(announced) && start + announced > expected) {
              throw new RevpatchError('E_TOO_LARGE', `GET ${url}: ${start + announced} bytes announced, ${expected} expected`);
            }
            const tag = headers.etag;
            if (typeof tag === 'string' && tag.startsWith('"')) {
              etag = tag;
            } else if (status === 200) {
              etag = undefined;
            }
          },
          onChunk: async (chunk) => {
            if (have + chunk.byteLength > expected) {
              throw new RevpatchError('E_TOO_LARGE', `GET ${url}: more than the ${expected} bytes expected`);
            }
            if (have === 0 && thisRun === 0) {
              await handle.truncate(0);
              if (etag) await fs.writeFile(etagFile, etag);
              else await fs.rm(etagFile, { force: true });
            }
            await writeAll(handle, chunk, have);
            hash.update(chunk);
            have += chunk.byteLength;
            thisRun += chunk.byteLength;
            sinceSync += chunk.byteLength;
            if (sinceSync >= syncEvery) {
              await handle.sync();
              sinceSync = 0;
            }
            report((thisRun * 1000) / Math.max(1, Date.now() - started));
          },
        });
        if (have < expected) {
          throw new RevpatchError('E_LENGTH_MISMATCH', `GET ${url}: the body ended at ${have} of ${expected} bytes`);
        }
      }
      await handle.sync();
      const digest = hash.copy().digest('hex');
      if (options.sha256 !== undefined && digest !== options.sha256) {
        const wasSpliced = spliced;
        await discard();
        have = 0;
        hash = crypto.createHash('sha256');
        etag = undefined;
        spliced = false;
        const message = `${url}: SHA-256 ${digest.slice(0, 16)}… is not the expected ${options.sha256.slice(0, 16)}…`;
        // A prefix from an earlier run may belong to another file: that one is retried from the start.
        throw wasSpliced ? new SplicedHashError(message) : new RevpatchError('E_HASH_MISMATCH', message);
      }
      report(0, true);
      return { path: dest, bytes: have, resumedFrom, attempts };
    });
    await fs.rm(etagFile, { force: true });
    return result;
  } catch (err) {
    const e = toRevpatchError(err);
    if (e.code === 'E_TOO_LARGE' || e.code === 'E_HASH_MISMATCH') {
      await discard().catch(() => undefined);
    }
    throw e;
  } finally {
    await handle.close().catch(() => undefined);
  }
}
