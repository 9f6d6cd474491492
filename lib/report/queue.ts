/**
 * The device's durable, bounded queue of reports waiting for the collector
 * (STATE/report/queue.ndjson). One file: a header line with the persisted
 * counters, then one report per line, oldest first.
 *
 * - **Cheap to append.** `append` is synchronous: one write(2) of one line
 *   to a file opened for appending, no fsync, a few microseconds. That is
 *   what a device transition pays for reporting (DESIGN.md invariant 10).
 *   A write that returned is in the page cache, so a crash of the process
 *   loses nothing. A power cut can lose what was appended since the last
 *   `sync`, which the Reporter runs about a second after appends and before
 *   every send. Reports are made after a transition's commit point, so a
 *   lost one never claims something that did not happen; the commit record
 *   stays the truth, and the reports are its summary for the vendor.
 * - **Bounded in bytes.** The reports kept weigh at most `maxBytes`; when a
 *   new one does not fit, the oldest go (the newest say most about the
 *   patch now) and `dropped` counts them. The file itself also holds the
 *   lines acknowledged or dropped since the last compaction; it is
 *   compacted in the background once it passes 1.5 × maxBytes and never
 *   grows past 2 × maxBytes plus its header line: an append that would
 *   take it further (a burst faster than compaction) stays in memory until
 *   the compaction already under way writes it.
 * - **Crash-safe compaction.** After an acknowledged send (`remove`) the
 *   file is rewritten with what is left: temporary file, fsync, rename,
 *   fsync of the directory (lib/engine/atomic.ts). Reports appended while
 *   the temporary file was written follow in the same tick as the rename.
 *   A crash before the rename leaves the old file, whose reports are sent
 *   again and stored once by the collector (each has its own id).
 *   Its temporary file, if a crash left one, is deleted at the next open.
 * - **Torn tails.** After a crash the last line may be cut short; open
 *   ignores it and truncates the file to the last whole line, so the next
 *   append starts a line of its own. A whole line that is not a report
 *   (bit rot) is skipped and counted as dropped, and the file is rewritten
 *   without it.
 * - **One owner.** The queue holds STATE/report/lock (lib/engine/lock.ts)
 *   while it is open, since a compaction by one owner would discard what
 *   another appended; a second open fails with E_BUSY.
 * - **Counted drops survive restarts**: `dropped` (the bound) and
 *   `rejected` (batches the collector refused for good) live in the header.
 *   Reports dropped from memory but not yet compacted away are still in the
 *   file; a reopen applies the bound again and counts them then, once.
 */
import { openSync, closeSync, fdatasync, renameSync, writeSync, promises as fs } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import * as path from 'node:path';
import { syncDirectory, syncFile, temporaryPathBeside, writeAll } from '../engine/atomic';
import { RevpatchError, toRevpatchError } from '../engine/errors';
import { StateLock } from '../engine/lock';
import { OUTCOMES, type DeviceReport } from './format';

export const QUEUE_FILE = 'queue.ndjson';
/** About 3,000 reports: weeks of outcomes for a device that is offline. */
export const DEFAULT_QUEUE_BYTES = 1024 * 1024;
export const MIN_QUEUE_BYTES = 4096;
const HEADER_KIND = 'revpatch-report-queue';

export interface QueuedReport {
  /** Position in this queue, increasing; not persisted. */
  seq: number;
  report: DeviceReport;
}

interface Entry extends QueuedReport {
  line: Buffer;
}

export interface QueueCounters {
  /** Reports dropped unsent to keep the bound (or unreadable on disk). */
  dropped: number;
  /** Reports in batches the collector refused for good (a 4xx other than 401/403). */
  rejected: number;
}

export interface QueueOptions {
  maxBytes?: number;
  /** Called with errors of background compactions (they never throw into append). */
  onError?: (err: RevpatchError) => void;
}

const HEX32 = /^[0-9a-f]{32}$/;
const HEX64 = /^[0-9a-f]{64}$/;

/** Whether a parsed line is a whole report (loaded lines are checked before they are sent again). */
export function isDeviceReport(value: unknown): value is DeviceReport {
  const r = value as Partial<DeviceReport> | null;
  return (
    typeof r === 'object' &&
    r !== null &&
    typeof r.id === 'string' &&
    HEX32.test(r.id) &&
    typeof r.patch === 'string' &&
    r.patch.length > 0 &&
    Number.isSafeInteger(r.version) &&
    OUTCOMES.includes(r.outcome as never) &&
    (r.code === null || typeof r.code === 'string') &&
    Number.isSafeInteger(r.bootAttempts) &&
    typeof r.agentVersion === 'string' &&
    typeof r.time === 'string' &&
    typeof r.pseudonym === 'string' &&
    HEX64.test(r.pseudonym)
  );
}

export class ReportQueue {
  readonly file: string;
  readonly maxBytes: number;
  private entries: Entry[] = [];
  private liveBytes = 0;
  private size = 0;
  private nextSeq = 0;
  private counters: QueueCounters;
  private fd: number;
  private readonly lock: StateLock;
  private unsynced = false;
  private closed = false;
  /** Compactions and syncs run one at a time, in order. */
  private chain: Promise<unknown> = Promise.resolve();
  private compactionQueued = false;
  private readonly onError: (err: RevpatchError) => void;

  private constructor(
    file: string,
    maxBytes: number,
    fd: number,
    lock: StateLock,
    counters: QueueCounters,
    onError: (err: RevpatchError) => void,
  ) {
    this.file = file;
    this.lock = lock;
    this.maxBytes = maxBytes;
    this.fd = fd;
    this.counters = counters;
    this.onError = onError;
  }

  /** Opens (or creates) the queue in `dir`, ignoring a torn last line; E_BUSY if another owner has it open. */
  static async open(dir: string, options: QueueOptions = {}): Promise<ReportQueue> {
    const maxBytes = options.maxBytes ?? DEFAULT_QUEUE_BYTES;
    if (!Number.isSafeInteger(maxBytes) || maxBytes < MIN_QUEUE_BYTES) {
      throw new RevpatchError('E_INVALID_ARGUMENT', `the report queue bound must be an integer of at least ${MIN_QUEUE_BYTES} bytes`);
    }
    const file = path.join(path.resolve(dir), QUEUE_FILE);
    let lock: StateLock | undefined;
    let fd: number | undefined;
    let queue: ReportQueue | undefined;
    try {
      await fs.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
      lock = await StateLock.acquire(path.dirname(file));
      await removeStaleTemporaries(file);
      const data = await fs.readFile(file).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') return null;
        throw err;
      });
      const loaded = data ? parseQueue(data) : { counters: { dropped: 0, rejected: 0 }, reports: [], validBytes: 0, rewrite: true };
      if (data && loaded.validBytes < data.length && !loaded.rewrite) await fs.truncate(file, loaded.validBytes);
      fd = openSync(file, 'a', 0o600);
      queue = new ReportQueue(file, maxBytes, fd, lock, { ...loaded.counters }, options.onError ?? (() => undefined));
      queue.size = data ? loaded.validBytes : 0;
      for (const report of loaded.reports) queue.push(report);
      const droppedNow = queue.counters.dropped !== loaded.counters.dropped;
      if (loaded.rewrite || droppedNow || queue.needsCompaction()) await queue.compact();
      return queue;
    } catch (err) {
      if (queue) {
        await queue.close().catch(() => undefined);
      } else {
        if (fd !== undefined) closeSync(fd);
        await lock?.release().catch(() => undefined);
      }
      throw toRevpatchError(err);
    }
  }

  /** Reports waiting. */
  get length(): number {
    return this.entries.length;
  }

  /** Bytes of the reports waiting (the bounded figure). */
  get bytes(): number {
    return this.liveBytes;
  }

  /** Bytes of the file, including lines not yet compacted away. */
  get fileBytes(): number {
    return this.size;
  }

  get dropped(): number {
    return this.counters.dropped;
  }

  get rejected(): number {
    return this.counters.rejected;
  }

  /**
   * Adds a report, dropping the oldest ones if it would not fit. One
   * write(2), no fsync; throws (E_IO, E_NO_SPACE) if the write fails, with
   * the report still queued in memory.
   */
  append(report: DeviceReport): void {
    if (this.closed) throw new RevpatchError('E_STATE', 'the report queue is closed');
    const entry = this.push(report);
    if (!entry) return;
    if (this.size + entry.line.length > 2 * this.maxBytes) {
      // The compaction under way (or queued) writes it: it is live and newer than any snapshot taken.
      this.compactSoon();
      return;
    }
    try {
      writeFully(this.fd, entry.line);
    } catch (err) {
      throw toRevpatchError(err);
    }
    this.size += entry.line.length;
    this.unsynced = true;
    if (this.needsCompaction()) this.compactSoon();
  }

  /** The oldest `max` reports, in order. */
  peek(max: number): QueuedReport[] {
    return this.entries.slice(0, max).map(({ seq, report }) => ({ seq, report }));
  }

  /**
   * Forgets the reports `seqs` (acknowledged, or refused for good when
   * `rejected`) and compacts the file. Those already dropped by the bound
   * are not counted twice.
   */
  async remove(seqs: readonly number[], options: { rejected?: boolean } = {}): Promise<void> {
    const gone = new Set(seqs);
    let removed = 0;
    this.entries = this.entries.filter((e) => {
      if (!gone.has(e.seq)) return true;
      this.liveBytes -= e.line.length;
      removed += 1;
      return false;
    });
    if (options.rejected) this.counters.rejected += removed;
    if (removed > 0) await this.compact();
  }

  /** fdatasync of what was appended since the last sync. */
  sync(): Promise<void> {
    return this.serial(async () => {
      if (!this.unsynced || this.closed) return;
      this.unsynced = false;
      await new Promise<void>((resolve, reject) => {
        // The fd is only replaced inside this chain, so it is still ours.
        fdatasync(this.fd, (err) => (err ? reject(err) : resolve()));
      }).catch((err) => {
        this.unsynced = true;
        throw toRevpatchError(err);
      });
    });
  }

  /** Rewrites the file with the header and the reports waiting (see the header comment). */
  compact(): Promise<void> {
    return this.serial(() => this.rewrite());
  }

  async close(): Promise<void> {
    await this.chain.catch(() => undefined);
    if (this.closed) return;
    this.closed = true;
    closeSync(this.fd);
    await this.lock.release();
  }

  // ------------------------------------------------------------ internals

  private push(report: DeviceReport): Entry | null {
    const line = Buffer.from(`${JSON.stringify(report)}\n`, 'utf8');
    if (line.length > this.maxBytes) {
      this.counters.dropped += 1;
      return null;
    }
    while (this.liveBytes + line.length > this.maxBytes && this.entries.length > 0) {
      const oldest = this.entries.shift()!;
      this.liveBytes -= oldest.line.length;
      this.counters.dropped += 1;
    }
    const entry: Entry = { seq: this.nextSeq++, report, line };
    this.entries.push(entry);
    this.liveBytes += line.length;
    return entry;
  }

  private needsCompaction(): boolean {
    return this.size > 1.5 * this.maxBytes;
  }

  private compactSoon(): void {
    if (this.compactionQueued) return;
    this.compactionQueued = true;
    this.compact()
      .catch((err) => this.onError(toRevpatchError(err)))
      .finally(() => {
        this.compactionQueued = false;
      });
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.chain.then(fn, fn);
    this.chain = result.catch(() => undefined);
    return result;
  }

  private async rewrite(): Promise<void> {
    if (this.closed) return;
    const upTo = this.nextSeq;
    const header = Buffer.from(`${JSON.stringify({ kind: HEADER_KIND, format: 1, ...this.counters })}\n`, 'utf8');
    const body = Buffer.concat([header, ...this.entries.map((e) => e.line)]);
    const temp = temporaryPathBeside(this.file);
    let handle: FileHandle | undefined;
    try {
      handle = await fs.open(temp, 'wx', 0o600);
      await writeAll(handle, body, 0);
      await handle.close();
      handle = undefined;
      await syncFile(temp);
      // From the rename to the new descriptor nothing else runs: an append
      // in between would go to the old, unlinked file.
      renameSync(temp, this.file);
      const fd = openSync(this.file, 'a', 0o600);
      let size = body.length;
      for (const e of this.entries) {
        if (e.seq < upTo) continue;
        writeFully(fd, e.line);
        size += e.line.length;
      }
      const old = this.fd;
      this.fd = fd;
      this.size = size;
      this.unsynced = this.entries.some((e) => e.seq >= upTo);
      closeSync(old);
    } catch (err) {
      if (handle) await handle.close().catch(() => undefined);
      await fs.rm(temp, { force: true }).catch(() => undefined);
      throw toRevpatchError(err);
    }
    await syncDirectory(path.dirname(this.file));
  }
}

/** What a queue holds, as `readQueueStats` sees it from outside. */
export interface QueueSnapshot {
  /** Reports waiting. */
  queued: number;
  queuedBytes: number;
  /** Dropped to keep the bound (persisted). */
  dropped: number;
  /** Refused for good by the collector (persisted). */
  rejected: number;
}

/**
 * The counters of the queue in `dir`, read without its lock and without
 * writing anything, so that a command can show them while an agent owns
 * the queue (ReportQueue.open would fail with E_BUSY, or take the queue
 * from under an agent about to start). Safe because the owner only ever
 * appends whole lines and replaces the file by rename: the read sees the
 * old file or the new one, at worst with a line still being appended,
 * which is ignored as a torn tail. The bound (`maxBytes`, the owner's) is
 * applied as a reopen would, so reports dropped from the owner's memory
 * but not yet compacted away count as dropped, not queued. A queue never
 * opened reads as empty.
 */
export async function readQueueStats(dir: string, options: { maxBytes?: number } = {}): Promise<QueueSnapshot> {
  const maxBytes = options.maxBytes ?? DEFAULT_QUEUE_BYTES;
  const data = await fs.readFile(path.join(path.resolve(dir), QUEUE_FILE)).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return null;
    throw toRevpatchError(err);
  });
  if (!data) return { queued: 0, queuedBytes: 0, dropped: 0, rejected: 0 };
  const loaded = parseQueue(data);
  let dropped = loaded.counters.dropped;
  const sizes: number[] = [];
  let bytes = 0;
  for (const report of loaded.reports) {
    const size = Buffer.byteLength(`${JSON.stringify(report)}\n`, 'utf8');
    if (size > maxBytes) {
      dropped += 1;
      continue;
    }
    sizes.push(size);
    bytes += size;
    while (bytes > maxBytes) {
      bytes -= sizes.shift()!;
      dropped += 1;
    }
  }
  return { queued: sizes.length, queuedBytes: bytes, dropped, rejected: loaded.counters.rejected };
}

/** Temporary files of compactions a crash interrupted (the lock is ours, so none is in use). */
async function removeStaleTemporaries(file: string): Promise<void> {
  const prefix = `.${path.basename(file)}.`;
  for (const name of await fs.readdir(path.dirname(file))) {
    if (name.startsWith(prefix) && name.endsWith('.tmp')) await fs.rm(path.join(path.dirname(file), name), { force: true });
  }
}

function writeFully(fd: number, bytes: Buffer): void {
  let done = 0;
  while (done < bytes.length) {
    const n = writeSync(fd, bytes, done, bytes.length - done);
    if (n <= 0) throw new RevpatchError('E_IO', 'write made no progress');
    done += n;
  }
}

interface Loaded {
  counters: QueueCounters;
  reports: DeviceReport[];
  /** Bytes up to the end of the last whole line. */
  validBytes: number;
  /** The file must be rewritten (bad header or a bad whole line). */
  rewrite: boolean;
}

function parseQueue(data: Buffer): Loaded {
  const counters: QueueCounters = { dropped: 0, rejected: 0 };
  const reports: DeviceReport[] = [];
  let rewrite = false;
  let start = 0;
  let first = true;
  for (;;) {
    const end = data.indexOf(0x0a, start);
    if (end < 0) break; // a torn tail, or nothing left
    const line = data.subarray(start, end).toString('utf8');
    start = end + 1;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch {
      value = undefined;
    }
    if (first) {
      first = false;
      const h = value as { kind?: unknown; format?: unknown; dropped?: unknown; rejected?: unknown } | undefined;
      if (h && h.kind === HEADER_KIND && h.format === 1) {
        counters.dropped = Number.isSafeInteger(h.dropped) && (h.dropped as number) >= 0 ? (h.dropped as number) : 0;
        counters.rejected = Number.isSafeInteger(h.rejected) && (h.rejected as number) >= 0 ? (h.rejected as number) : 0;
        continue;
      }
      rewrite = true; // no header: fall through and read the line as a report
    }
    if (isDeviceReport(value)) {
      reports.push(value);
    } else {
      counters.dropped += 1;
      rewrite = true;
    }
  }
  if (first) rewrite = true; // not even a whole header
  return { counters, reports, validBytes: start, rewrite };
}
