/**
 * What the agent feeds with outcomes (DESIGN.md, "Fleet"; invariant 10: a
 * report never blocks or delays a transition). `record` makes the report
 * and appends it to the durable queue (lib/report/queue.ts) synchronously,
 * in microseconds, and never throws: a failure is logged and the report is
 * lost, never the transition. Everything else happens in the background.
 *
 * The sender sends the oldest reports in batches of at most 100, one batch
 * in flight. After a failure a retry can fix (E_NETWORK: the collector is
 * down, hangs past the timeout, answers 5xx or 429) it waits a random time
 * between 0 and min(maxMs, baseMs × 2^(failures−1)) ("full jitter", so a
 * fleet that lost its collector does not come back in step) and sends the
 * same reports again, with the same ids, which the collector stores once.
 * A refused token (E_AUTH, E_FORBIDDEN) is waited out the same way: the
 * reports are fine and stay queued, bounded, until an operator fixes the
 * enrollment. Any other 4xx is the collector's verdict on the batch itself:
 * the batch is dropped and counted (`rejected`), so one bad batch never
 * blocks the queue.
 *
 * The queue is fsynced about a second after appends and before every send,
 * off the transition path. `flush` sends what it can within a bounded time
 * and never throws; `agent --once` and tests use it.
 */
import type { RevpatchError } from '../engine/errors';
import { toRevpatchError } from '../engine/errors';
import { DEFAULT_POST_TIMEOUT_MS, isRetryable, newReport, postBatch, pseudonymOf } from './client';
import { readReportConfig, readSecret, reportDir, type ReportConfig } from './config';
import type { Outcome } from './format';
import { ReportQueue } from './queue';

/** The subset of a pino logger the reporter writes to. */
export interface ReportLogger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
}

const quiet: ReportLogger = { debug: () => undefined, info: () => undefined, warn: () => undefined };

export const MAX_REPORTS_PER_BATCH = 100;

export interface ReporterOptions {
  logger?: ReportLogger;
  /** The queue's bound in bytes (default 1 MiB). */
  maxQueueBytes?: number;
  /** Reports per batch, 1 to 100 (default 100). */
  batchSize?: number;
  /** Backoff after the first failure and its ceiling (defaults 2 s and 30 min). */
  backoff?: { baseMs: number; maxMs: number };
  /** Per request (default 10 s). */
  timeoutMs?: number;
  /** Delay from an append to the queue's fsync (default 1 s). */
  syncDelayMs?: number;
  /** [0, 1) for the jitter; default Math.random. */
  random?: () => number;
  now?: () => Date;
}

export interface RecordFields {
  patch: string;
  version: number;
  outcome: Outcome;
  code?: string | null;
  bootAttempts?: number;
}

export interface ReporterStats {
  /** Reports waiting in the queue. */
  queued: number;
  queuedBytes: number;
  /** Dropped to keep the queue's bound (persisted). */
  dropped: number;
  /** Dropped with batches the collector refused for good (persisted). */
  rejected: number;
  /** Acknowledged by the collector since this reporter opened. */
  sent: number;
  /** The code of the last failed send, if the last send failed. */
  lastError: string | null;
}

export interface FlushResult {
  sent: number;
  remaining: number;
  /** Why reports remain, if they do: the code of the last failure, or E_ABORTED at the deadline. */
  error: string | null;
}

type Round = 'empty' | 'sent' | 'rejected' | 'retry' | 'aborted';

export class Reporter {
  readonly config: ReportConfig;
  readonly queue: ReportQueue;
  private readonly secret: Buffer;
  private readonly log: ReportLogger;
  private readonly batchSize: number;
  private readonly backoff: { baseMs: number; maxMs: number };
  private readonly timeoutMs: number;
  private readonly syncDelayMs: number;
  private readonly random: () => number;
  private readonly now: () => Date;
  private readonly pseudonyms = new Map<string, string>();
  private sentCount = 0;
  private lastError: string | null = null;
  private syncTimer: NodeJS.Timeout | null = null;
  private wake: (() => void) | null = null;
  private loop: { controller: AbortController; done: Promise<void> } | null = null;
  /** One batch in flight at a time, from the loop or from flush. */
  private sending: Promise<unknown> = Promise.resolve();

  constructor(config: ReportConfig, secret: Buffer, queue: ReportQueue, options: ReporterOptions = {}) {
    this.config = config;
    this.secret = secret;
    this.queue = queue;
    this.log = options.logger ?? quiet;
    this.batchSize = Math.max(1, Math.min(MAX_REPORTS_PER_BATCH, Math.floor(options.batchSize ?? MAX_REPORTS_PER_BATCH)));
    this.backoff = options.backoff ?? { baseMs: 2000, maxMs: 30 * 60 * 1000 };
    this.timeoutMs = options.timeoutMs ?? DEFAULT_POST_TIMEOUT_MS;
    this.syncDelayMs = options.syncDelayMs ?? 1000;
    this.random = options.random ?? Math.random;
    this.now = options.now ?? (() => new Date());
  }

  /**
   * The reporter of a state directory set up with `init --report`, or null
   * when it does not report. Throws (E_CORRUPT, E_KEY, E_IO) if the setup
   * is damaged; the agent then runs without reporting.
   */
  static async open(stateDir: string, options: ReporterOptions = {}): Promise<Reporter | null> {
    const config = await readReportConfig(stateDir);
    if (!config) return null;
    const dir = reportDir(stateDir);
    const secret = await readSecret(dir);
    const log = options.logger ?? quiet;
    const queue = await ReportQueue.open(dir, {
      maxBytes: options.maxQueueBytes,
      onError: (err) => log.warn({ code: err.code, err: err.message }, 'report queue compaction failed'),
    });
    return new Reporter(config, secret, queue, options);
  }

  /**
   * Queues one outcome. Never throws and never waits: the caller is a
   * transition that already committed.
   */
  record(fields: RecordFields): void {
    try {
      let pseudonym = this.pseudonyms.get(fields.patch);
      if (pseudonym === undefined) {
        pseudonym = pseudonymOf(this.secret, fields.patch);
        this.pseudonyms.set(fields.patch, pseudonym);
      }
      const report = newReport({ ...fields, pseudonym, time: this.now() });
      this.queue.append(report);
      this.scheduleSync();
      this.wake?.();
    } catch (err) {
      const e = toRevpatchError(err);
      this.log.warn({ code: e.code, err: e.message, patch: fields.patch, outcome: fields.outcome }, 'report not queued');
    }
  }

  stats(): ReporterStats {
    return {
      queued: this.queue.length,
      queuedBytes: this.queue.bytes,
      dropped: this.queue.dropped,
      rejected: this.queue.rejected,
      sent: this.sentCount,
      lastError: this.lastError,
    };
  }

  /** Starts the background sender (idempotent). */
  start(): void {
    if (this.loop) return;
    const controller = new AbortController();
    const done = this.run(controller.signal).catch((err) => {
      const e = toRevpatchError(err);
      this.log.warn({ code: e.code, err: e.message }, 'report sender stopped');
    });
    this.loop = { controller, done };
  }

  /** Stops the sender: a request in flight is aborted, its reports stay queued. */
  async stop(): Promise<void> {
    const loop = this.loop;
    if (!loop) return;
    this.loop = null;
    loop.controller.abort();
    this.wake?.();
    await loop.done;
  }

  /**
   * Sends until the queue is empty, `timeoutMs` (default 5 s) passes or
   * `signal` aborts, retrying with backoff in between. Never throws.
   */
  async flush(options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<FlushResult> {
    const deadline = new AbortController();
    const timer = setTimeout(() => deadline.abort(), options.timeoutMs ?? 5000);
    const onAbort = () => deadline.abort();
    options.signal?.addEventListener('abort', onAbort, { once: true });
    const before = this.sentCount;
    let error: string | null = null;
    const aborted = untilAborted(deadline.signal);
    try {
      let failures = 0;
      while (!deadline.signal.aborted) {
        // A send of the background loop may be in flight: wait for it no longer than the deadline.
        const round = await Promise.race([this.exclusive(() => this.sendRound(deadline.signal)), aborted]);
        if (round === 'empty') break;
        if (round === 'retry') {
          failures += 1;
          error = this.lastError;
          await sleep(this.backoffMs(failures), deadline.signal);
        } else if (round === 'aborted') {
          break;
        } else {
          failures = 0;
          error = null;
        }
      }
      await this.queue.sync().catch(() => undefined);
    } catch (err) {
      error = toRevpatchError(err).code;
    } finally {
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
    }
    const remaining = this.queue.length;
    if (remaining > 0 && error === null) error = 'E_ABORTED';
    return { sent: this.sentCount - before, remaining, error: remaining > 0 ? error : null };
  }

  /** Stops the sender, syncs and closes the queue. */
  async close(): Promise<void> {
    await this.stop();
    if (this.syncTimer) clearTimeout(this.syncTimer);
    this.syncTimer = null;
    await this.sending.catch(() => undefined);
    await this.queue.sync().catch(() => undefined);
    await this.queue.close();
  }

  /** The wait before retry number `failures` (≥ 1): full jitter over an exponential ceiling. */
  backoffMs(failures: number): number {
    const ceiling = Math.min(this.backoff.maxMs, this.backoff.baseMs * 2 ** Math.max(0, failures - 1));
    return Math.floor(this.random() * ceiling);
  }

  // ------------------------------------------------------------ internals

  private async run(signal: AbortSignal): Promise<void> {
    let failures = 0;
    while (!signal.aborted) {
      if (this.queue.length === 0) {
        await new Promise<void>((resolve) => {
          this.wake = resolve;
        });
        this.wake = null;
        continue;
      }
      const round = await this.exclusive(() => this.sendRound(signal));
      if (round === 'retry') {
        failures += 1;
        await sleep(this.backoffMs(failures), signal);
      } else {
        failures = 0;
      }
    }
  }

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.sending.then(fn, fn);
    this.sending = result.catch(() => undefined);
    return result;
  }

  private scheduleSync(): void {
    if (this.syncTimer) return;
    this.syncTimer = setTimeout(() => {
      this.syncTimer = null;
      this.queue.sync().catch((err: RevpatchError) => this.log.warn({ code: err.code, err: err.message }, 'report queue sync failed'));
    }, this.syncDelayMs);
    this.syncTimer.unref();
  }

  /** Sends the oldest batch once. */
  private async sendRound(signal: AbortSignal): Promise<Round> {
    if (signal.aborted) return 'aborted';
    const batch = this.queue.peek(this.batchSize);
    if (batch.length === 0) return 'empty';
    await this.queue.sync().catch((err: RevpatchError) => this.log.warn({ code: err.code, err: err.message }, 'report queue sync failed'));
    const seqs = batch.map((b) => b.seq);
    try {
      const ack = await postBatch(
        this.config.url,
        this.config.token,
        batch.map((b) => b.report),
        { signal, timeoutMs: this.timeoutMs },
      );
      this.sentCount += batch.length;
      this.lastError = null;
      this.log.debug({ reports: batch.length, ...ack }, 'reports sent');
      await this.forget(seqs, false);
      return 'sent';
    } catch (err) {
      const e = toRevpatchError(err);
      if (e.code === 'E_ABORTED') return 'aborted';
      this.lastError = e.code;
      if (isRetryable(e) || e.code === 'E_AUTH' || e.code === 'E_FORBIDDEN') {
        this.log.info({ code: e.code, err: e.message, queued: this.queue.length }, 'reports not sent; retrying later');
        return 'retry';
      }
      this.log.warn({ code: e.code, err: e.message, reports: batch.length }, 'the collector refused a batch of reports; dropped');
      await this.forget(seqs, true);
      return 'rejected';
    }
  }

  private async forget(seqs: number[], rejected: boolean): Promise<void> {
    try {
      await this.queue.remove(seqs, { rejected });
    } catch (err) {
      // Still forgotten in memory; the file keeps them until the next compaction, and a restart sends them again.
      const e = toRevpatchError(err);
      this.log.warn({ code: e.code, err: e.message }, 'report queue compaction failed');
    }
  }
}

function untilAborted(signal: AbortSignal): Promise<'aborted'> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve('aborted');
    else signal.addEventListener('abort', () => resolve('aborted'), { once: true });
  });
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) {
      resolve();
      return;
    }
    const timer = setTimeout(done, ms);
    timer.unref();
    function done() {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}
