/**
 * Group commit of report batches: the batches that arrive while a store
 * write is in flight are gathered into the next single
 * `store.insertReports(batches)` call, one transaction and one fsync for
 * all of them. A device is answered only after the commit that holds its
 * batch resolved (acknowledged means durable); a failed commit fails every
 * batch in it, and the store's transaction guarantees none of them was
 * stored, so each device simply retries.
 *
 * If the store refuses the data itself (a constraint: E_INVALID_ARGUMENT,
 * E_TOO_LARGE), each batch of the group is committed alone, so one bad
 * batch fails only itself.
 *
 * The first batch after an idle spell waits one turn of the event loop
 * (setImmediate), so that the batches parsed in the same I/O phase share
 * its commit even when the store works synchronously (better-sqlite3).
 */
import { RevpatchError, toRevpatchError } from '../engine/errors';
import type { BatchAck, StoredReport } from '../report/format';
import type { FleetStore } from './types';

/** Codes of a store that refused the data itself (a constraint), not the moment: retrying the same batch cannot help. */
const REFUSALS: ReadonlySet<string> = new Set(['E_INVALID_ARGUMENT', 'E_TOO_LARGE']);

/** Reports in one commit at most; more wait for the next one. */
export const MAX_GROUP_REPORTS = 20_000;

interface Pending {
  reports: readonly StoredReport[];
  resolve(ack: BatchAck): void;
  reject(err: RevpatchError): void;
}

export interface CommitStats {
  commits: number;
  batches: number;
  reports: number;
  failedCommits: number;
}

export class GroupCommitter {
  private queue: Pending[] = [];
  private queuedReportCount = 0;
  private busy = false;
  private idleWaiters: (() => void)[] = [];
  readonly stats: CommitStats = { commits: 0, batches: 0, reports: 0, failedCommits: 0 };

  constructor(
    private readonly store: FleetStore,
    private readonly maxGroupReports = MAX_GROUP_REPORTS,
  ) {}

  /** Resolves once `reports` are durably stored (or found stored earlier); rejects if their commit failed. */
  submit(reports: readonly StoredReport[]): Promise<BatchAck> {
    return new Promise<BatchAck>((resolve, reject) => {
      this.queue.push({ reports, resolve, reject });
      this.queuedReportCount += reports.length;
      this.schedule();
    });
  }

  /** Batches waiting for a commit (not counting the one in flight). */
  get queued(): number {
    return this.queue.length;
  }

  /** Reports waiting for a commit (not counting the one in flight). */
  get queuedReports(): number {
    return this.queuedReportCount;
  }

  /** Resolves when nothing is queued or in flight. */
  drain(): Promise<void> {
    if (!this.busy && this.queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private schedule(): void {
    if (this.busy) return;
    this.busy = true;
    setImmediate(() => void this.commitNext());
  }

  private async commitNext(): Promise<void> {
    const group = this.takeGroup();
    try {
      this.settle(group, await this.insert(group));
    } catch (err) {
      this.stats.failedCommits++;
      const error = toRevpatchError(err);
      if (group.length > 1 && REFUSALS.has(error.code)) {
        // The store refused a report of one batch: commit each alone, so the
        // others are not held hostage by it (and retried forever with it).
        for (const p of group) {
          try {
            this.settle([p], await this.insert([p]));
          } catch (each) {
            this.stats.failedCommits++;
            p.reject(toRevpatchError(each));
          }
        }
      } else {
        for (const p of group) p.reject(error);
      }
    }
    if (this.queue.length > 0) {
      setImmediate(() => void this.commitNext());
      return;
    }
    this.busy = false;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }

  private async insert(group: readonly Pending[]): Promise<BatchAck[]> {
    const acks = await this.store.insertReports(group.map((p) => p.reports));
    if (acks.length !== group.length) {
      throw new RevpatchError('E_UNKNOWN', `the store answered ${acks.length} batches of ${group.length}`);
    }
    return acks;
  }

  private settle(group: readonly Pending[], acks: readonly BatchAck[]): void {
    this.stats.commits++;
    this.stats.batches += group.length;
    for (let i = 0; i < group.length; i++) {
      this.stats.reports += acks[i].accepted;
      group[i].resolve(acks[i]);
    }
  }

  private takeGroup(): Pending[] {
    let n = 0;
    let reports = 0;
    while (n < this.queue.length && (n === 0 || reports + this.queue[n].reports.length <= this.maxGroupReports)) {
      reports += this.queue[n].reports.length;
      n++;
    }
    this.queuedReportCount -= reports;
    return this.queue.splice(0, n);
  }
}
