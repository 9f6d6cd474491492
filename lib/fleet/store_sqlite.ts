/**
 * The fleet store on SQLite (better-sqlite3): the embedded default, one
 * file beside nothing else, so `npm start` and the tests need no server.
 * All of this backend's SQL lives in this file, parameterized only.
 *
 * Durability. The journal is WAL with `synchronous=FULL`: every commit
 * fsyncs the WAL before it returns, so a report the collector acknowledged
 * survives a power loss, not only a crash of the process (NORMAL would only
 * survive the latter). WAL also lets readers (`fleet status`) run beside
 * the collector's writer. Every method is one transaction; writers take
 * the write lock up front (BEGIN IMMEDIATE) so two processes never deadlock
 * upgrading a read lock, and wait up to `busyTimeoutMs` for each other.
 * The WAL is checkpointed less often than SQLite's default (see `open`).
 *
 * Group commit. `insertReports` stores several batches in one transaction,
 * so one fsync covers all of them; a report is stored once per id (ON
 * CONFLICT DO NOTHING), and each batch learns how many of its reports were
 * new. If any report breaks a constraint, the whole group is rolled back
 * and nothing of it is stored: the server validates batches before
 * grouping them.
 *
 * Counting. Besides the raw reports, `device_outcomes` keeps one row per
 * (patch, version, outcome, device pseudonym) with the first time it was
 * received; `counts` is a GROUP BY over its primary key, so it costs one
 * row per device, not per report. It is folded from the reports in sorted
 * runs rather than row by row: pseudonyms are random, so a row-by-row
 * upsert dirties about one index page per report and every commit writes
 * them all to the WAL, which halved the ingest rate. `insertReports` folds
 * once FOLD_REPORTS reports wait, in the transaction of the group that
 * tips it over, so a fold commits or rolls back with reports; `counts`
 * (a write transaction for this reason) first folds whatever waits, so it
 * always counts every stored report. `outcomes_folded` marks the last
 * report (rowid) folded; rowids only grow, since reports are never
 * deleted.
 *
 * Insert cost is mostly the two random-order indexes every new report
 * enters (its id; its device's outcome). Ids and pseudonyms, hex on the
 * wire, are keyed there as the bytes they spell (`hexKey`), which halves
 * those indexes and made inserts about a third cheaper in CPU.
 *
 * Leadership. SQLite has no session locks that die with a process, so the
 * controller leads by a lease row (owner, expires_at): `tryLead` takes it in
 * a write transaction when it is free, expired or already the caller's, and
 * renews it; a leader that stops renewing (killed, hung) is replaced once
 * its lease has run out. Times are the callers' clocks (ms).
 *
 * better-sqlite3 is synchronous: each call holds the event loop for the
 * length of one transaction (microseconds to an fsync). That is the price of
 * an embedded database without a thread pool; PostgreSQL has none of it.
 */
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { RevpatchError, type ErrorCode } from '../engine/errors';
import { OUTCOMES, ZERO_COUNTS, type BatchAck, type OutcomeCounts, type StoredReport } from '../report/format';
import { seriesOf } from './series';
import {
  DECISION_ACTIONS,
  ROLLOUT_STATES,
  type DecisionPage,
  type DecisionPageQuery,
  type DecisionRecord,
  type OutcomeBucket,
  type FleetStore,
  type PlanRecord,
  type TokenRecord,
} from './types';

export interface SqliteStoreOptions {
  /** How long a write waits for another process's transaction, ms (default 5000). */
  busyTimeoutMs?: number;
}

const quoted = (values: readonly string[]): string => values.map((v) => `'${v}'`).join(', ');

/**
 * Numbered migrations, applied in order at open and recorded in
 * schema_migrations. Never edit one that has shipped; add the next.
 * (The IN lists are built from the shared constants, never from input.)
 */
const MIGRATIONS: readonly { version: number; name: string; sql: string }[] = [
  {
    version: 1,
    name: 'reports, device outcomes, plans, decisions, tokens, leader lease',
    sql: `
      CREATE TABLE reports (
        id ANY NOT NULL PRIMARY KEY CHECK (typeof(id) IN ('blob', 'text')),
        patch TEXT NOT NULL,
        version INTEGER NOT NULL,
        outcome TEXT NOT NULL CHECK (outcome IN (${quoted(OUTCOMES)})),
        code TEXT,
        boot_attempts INTEGER NOT NULL CHECK (boot_attempts >= 0),
        agent_version TEXT NOT NULL,
        device_time TEXT NOT NULL,
        pseudonym TEXT NOT NULL,
        received_at INTEGER NOT NULL
      ) STRICT;

      CREATE TABLE device_outcomes (
        patch TEXT NOT NULL,
        version INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        pseudonym ANY NOT NULL CHECK (typeof(pseudonym) IN ('blob', 'text')),
        first_received_at INTEGER NOT NULL,
        PRIMARY KEY (patch, version, outcome, pseudonym)
      ) STRICT, WITHOUT ROWID;

      CREATE TABLE plans (
        patch TEXT NOT NULL,
        version INTEGER NOT NULL,
        stages TEXT NOT NULL CHECK (json_valid(stages)),
        soak_seconds REAL NOT NULL,
        min_reports INTEGER NOT NULL,
        max_failure_pct REAL NOT NULL,
        auto_recall INTEGER NOT NULL CHECK (auto_recall IN (0, 1)),
        state TEXT NOT NULL CHECK (state IN (${quoted(ROLLOUT_STATES)})),
        stage INTEGER NOT NULL,
        rollout REAL NOT NULL,
        stage_started_at INTEGER,
        halted INTEGER NOT NULL CHECK (halted IN (0, 1)),
        revision INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (patch, version)
      ) STRICT;

      CREATE TABLE decisions (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        patch TEXT NOT NULL,
        version INTEGER NOT NULL,
        at INTEGER NOT NULL,
        action TEXT NOT NULL CHECK (action IN (${quoted(DECISION_ACTIONS)})),
        code TEXT NOT NULL,
        reason TEXT NOT NULL,
        by TEXT NOT NULL CHECK (by IN ('controller', 'operator')),
        from_rollout REAL NOT NULL,
        to_rollout REAL NOT NULL,
        stage INTEGER NOT NULL,
        inputs TEXT CHECK (inputs IS NULL OR json_valid(inputs)),
        applied_at INTEGER
      ) STRICT;
      CREATE INDEX decisions_by_patch ON decisions (patch, version, seq);
      CREATE INDEX decisions_unapplied ON decisions (seq) WHERE applied_at IS NULL;

      CREATE TABLE tokens (
        hash TEXT NOT NULL PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('device', 'operator')),
        devices INTEGER NOT NULL CHECK (devices >= 0),
        created_at INTEGER NOT NULL,
        revoked INTEGER NOT NULL CHECK (revoked IN (0, 1))
      ) STRICT;

      CREATE TABLE leader (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        owner TEXT NOT NULL,
        expires_at INTEGER NOT NULL
      ) STRICT;

      -- The last report (rowid) folded into device_outcomes.
      CREATE TABLE outcomes_folded (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        up_to INTEGER NOT NULL
      ) STRICT;
      INSERT INTO outcomes_folded (id, up_to) VALUES (1, 0);
    `,
  },
];

/**
 * Reports stored but not yet folded into device_outcomes that make
 * insertReports fold them (in the same transaction); counts folds the rest.
 */
export const FOLD_REPORTS = 20_000;

/** The newest schema this code knows. */
export const SQLITE_SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1].version;

const SQL = {
  migrationsTable: `CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL) STRICT`,
  appliedVersion: `SELECT coalesce(max(version), 0) AS v FROM schema_migrations`,
  recordMigration: `INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`,

  // ON CONFLICT, not OR IGNORE: OR IGNORE would also skip rows that break a CHECK or NOT NULL.
  insertReport: `INSERT INTO reports
    (id, patch, version, outcome, code, boot_attempts, agent_version, device_time, pseudonym, received_at)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (id) DO NOTHING`,
  lastReport: `SELECT coalesce(max(rowid), 0) AS n FROM reports`,
  foldedUpTo: `SELECT up_to FROM outcomes_folded WHERE id = 1`,
  setFolded: `UPDATE outcomes_folded SET up_to = ? WHERE id = 1`,
  // The reports after the mark, one row per device outcome, in key order;
  // keeps the earliest receive time should reports arrive out of order.
  // The pseudonym is keyed as hexKey keys it, spelt in SQL: lowercase hex
  // as its bytes, anything else as the text.
  foldOutcomes: `INSERT INTO device_outcomes (patch, version, outcome, pseudonym, first_received_at)
    SELECT patch, version, outcome,
      CASE WHEN length(pseudonym) > 0 AND length(pseudonym) % 2 = 0 AND pseudonym NOT GLOB '*[^0-9a-f]*'
        THEN unhex(pseudonym) ELSE pseudonym END,
      min(received_at)
    FROM reports
    WHERE rowid > ? AND rowid <= ?
    GROUP BY patch, version, outcome, pseudonym
    ORDER BY patch, version, outcome, pseudonym
    ON CONFLICT (patch, version, outcome, pseudonym) DO UPDATE
      SET first_received_at = excluded.first_received_at
      WHERE excluded.first_received_at < device_outcomes.first_received_at`,
  // A device counts as confirmed only if it never reported a rollback of the version.
  counts: `SELECT d.outcome AS outcome, count(*) AS n FROM device_outcomes d
    WHERE d.patch = ? AND d.version = ? AND d.first_received_at >= ?
      AND (d.outcome <> 'confirmed' OR NOT EXISTS (
        SELECT 1 FROM device_outcomes r
        WHERE r.patch = d.patch AND r.version = d.version AND r.outcome = 'rolled-back' AND r.pseudonym = d.pseudonym))
    GROUP BY d.outcome`,
  reportCount: `SELECT count(*) AS n FROM reports`,

  addToken: `INSERT INTO tokens (hash, kind, devices, created_at, revoked) VALUES (?, ?, ?, ?, ?)`,
  findToken: `SELECT * FROM tokens WHERE hash = ?`,
  revokeToken: `UPDATE tokens SET revoked = 1 WHERE hash = ? AND revoked = 0`,
  enrolledDevices: `SELECT coalesce(sum(devices), 0) AS n FROM tokens WHERE kind = 'device' AND revoked = 0`,

  // Replaces a finished plan only; its revision count continues, so a
  // decision computed against the old plan can never apply to the new one.
  createPlan: `INSERT INTO plans (patch, version, stages, soak_seconds, min_reports, max_failure_pct, auto_recall,
      state, stage, rollout, stage_started_at, halted, revision, created_at, updated_at)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (patch, version) DO UPDATE SET
      stages = excluded.stages, soak_seconds = excluded.soak_seconds, min_reports = excluded.min_reports,
      max_failure_pct = excluded.max_failure_pct, auto_recall = excluded.auto_recall, state = excluded.state,
      stage = excluded.stage, rollout = excluded.rollout, stage_started_at = excluded.stage_started_at,
      halted = excluded.halted, revision = max(excluded.revision, plans.revision + 1),
      created_at = excluded.created_at, updated_at = excluded.updated_at
    WHERE plans.state IN ('recalled', 'complete')`,
  getPlan: `SELECT * FROM plans WHERE patch = ? AND version = ?`,
  latestPlan: `SELECT * FROM plans WHERE patch = ? ORDER BY version DESC LIMIT 1`,
  listPlans: `SELECT * FROM plans ORDER BY patch, version`,
  // The compare-and-set: only the writer that saw the current revision wins.
  casPlan: `UPDATE plans SET stages = ?, soak_seconds = ?, min_reports = ?, max_failure_pct = ?, auto_recall = ?,
      state = ?, stage = ?, rollout = ?, stage_started_at = ?, halted = ?, revision = revision + 1, updated_at = ?
    WHERE patch = ? AND version = ? AND revision = ?`,
  insertDecision: `INSERT INTO decisions (patch, version, at, action, code, reason, by, from_rollout, to_rollout, stage, inputs, applied_at)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq`,
  markApplied: `UPDATE decisions SET applied_at = coalesce(applied_at, ?) WHERE seq = ?`,
  unapplied: `SELECT * FROM decisions WHERE applied_at IS NULL ORDER BY seq`,
  decisionsOfPatch: `SELECT * FROM decisions WHERE patch = ? ORDER BY seq`,
  decisionsOfVersion: `SELECT * FROM decisions WHERE patch = ? AND version = ? ORDER BY seq`,
  // Pages of the log walk the (patch, version, seq) index backwards; ?3 = 1 leaves holds out.
  decisionPage: `SELECT * FROM decisions WHERE patch = @patch AND version = @version AND seq < @before
      AND (@changes = 0 OR action <> 'hold')
    ORDER BY seq DESC LIMIT @limit`,
  decisionTotal: `SELECT count(*) AS n FROM decisions WHERE patch = @patch AND version = @version AND (@changes = 0 OR action <> 'hold')`,
  // New verdicts per interval, counted as counts() counts them (a confirmed device that later rolled back is a failure).
  outcomeSeries: `SELECT d.outcome AS outcome, (d.first_received_at - @from) / @step AS bucket, count(*) AS n FROM device_outcomes d
    WHERE d.patch = @patch AND d.version = @version AND d.outcome IN ('confirmed', 'rolled-back')
      AND (d.outcome <> 'confirmed' OR NOT EXISTS (
        SELECT 1 FROM device_outcomes r
        WHERE r.patch = d.patch AND r.version = d.version AND r.outcome = 'rolled-back' AND r.pseudonym = d.pseudonym))
    GROUP BY d.outcome, bucket`,

  leader: `SELECT owner, expires_at FROM leader WHERE id = 1`,
  takeLead: `INSERT INTO leader (id, owner, expires_at) VALUES (1, ?, ?)
    ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at`,
  resign: `DELETE FROM leader WHERE id = 1 AND owner = ?`,
} as const;

type Row = Record<string, unknown>;
type Statements = { [K in keyof typeof SQL]: Database.Statement };

/** Maps an error of better-sqlite3 or SQLite to a stable code; constraint failures are bad input. */
function storeError(err: unknown, what: string): RevpatchError {
  if (err instanceof RevpatchError) return err;
  const code = String((err as { code?: unknown })?.code ?? '');
  const message = `${what}: ${(err as Error)?.message ?? String(err)}`;
  let mapped: ErrorCode = 'E_UNKNOWN';
  if (err instanceof TypeError || err instanceof RangeError || code.startsWith('SQLITE_CONSTRAINT') || code === 'SQLITE_MISMATCH' || code === 'SQLITE_TOOBIG') {
    mapped = code === 'SQLITE_TOOBIG' ? 'E_TOO_LARGE' : 'E_INVALID_ARGUMENT';
  } else if (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')) mapped = 'E_BUSY';
  else if (code.startsWith('SQLITE_FULL')) mapped = 'E_NO_SPACE';
  else if (code.startsWith('SQLITE_CORRUPT') || code === 'SQLITE_NOTADB') mapped = 'E_CORRUPT';
  else if (code.startsWith('SQLITE_IOERR') || code.startsWith('SQLITE_CANTOPEN') || code.startsWith('SQLITE_READONLY') || code === 'SQLITE_PERM') mapped = 'E_IO';
  return new RevpatchError(mapped, message, { cause: err });
}

const bool = (v: boolean): number => (v ? 1 : 0);

const LOWER_HEX = /^(?:[0-9a-f]{2})+$/;

/**
 * A report id or pseudonym as an index key: the bytes its lowercase hex
 * spells (16 and 32 bytes for valid ones), else the string itself. The map
 * is one-to-one, and a blob never equals a text, so uniqueness and
 * counting are as for the strings.
 */
function hexKey(value: unknown): unknown {
  return typeof value === 'string' && LOWER_HEX.test(value) ? Buffer.from(value, 'hex') : value;
}

function planFromRow(r: Row): PlanRecord {
  return {
    patch: r.patch as string,
    version: r.version as number,
    stages: JSON.parse(r.stages as string) as number[],
    soakSeconds: r.soak_seconds as number,
    minReports: r.min_reports as number,
    maxFailurePct: r.max_failure_pct as number,
    autoRecall: r.auto_recall === 1,
    state: r.state as PlanRecord['state'],
    stage: r.stage as number,
    rollout: r.rollout as number,
    stageStartedAt: (r.stage_started_at as number | null) ?? null,
    halted: r.halted === 1,
    revision: r.revision as number,
    createdAt: r.created_at as number,
    updatedAt: r.updated_at as number,
  };
}

function decisionFromRow(r: Row): DecisionRecord {
  return {
    seq: r.seq as number,
    patch: r.patch as string,
    version: r.version as number,
    at: r.at as number,
    action: r.action as DecisionRecord['action'],
    code: r.code as string,
    reason: r.reason as string,
    by: r.by as DecisionRecord['by'],
    fromRollout: r.from_rollout as number,
    toRollout: r.to_rollout as number,
    stage: r.stage as number,
    inputs: r.inputs === null ? null : (JSON.parse(r.inputs as string) as DecisionRecord['inputs']),
    appliedAt: (r.applied_at as number | null) ?? null,
  };
}

function tokenFromRow(r: Row): TokenRecord {
  return {
    hash: r.hash as string,
    kind: r.kind as TokenRecord['kind'],
    devices: r.devices as number,
    createdAt: r.created_at as number,
    revoked: r.revoked === 1,
  };
}

export class SqliteFleetStore implements FleetStore {
  readonly kind = 'sqlite' as const;
  private readonly db: Database.Database;
  private readonly sql: Statements;
  private closed = false;

  private constructor(db: Database.Database) {
    this.db = db;
    this.sql = Object.fromEntries(Object.entries(SQL).map(([k, s]) => [k, db.prepare(s)])) as Statements;
  }

  /** Opens (creating if need be) the database at `file` (or ':memory:') and brings its schema up to date. */
  static open(file: string, options: SqliteStoreOptions = {}): SqliteFleetStore {
    if (file !== ':memory:' && !existsSync(path.dirname(file))) {
      throw new RevpatchError('E_NOT_FOUND', `fleet database ${file}: the directory ${path.dirname(file)} does not exist`);
    }
    let db: Database.Database | undefined;
    try {
      db = new Database(file);
      db.pragma(`busy_timeout = ${Math.max(0, Math.floor(options.busyTimeoutMs ?? 5000))}`);
      if (file !== ':memory:') {
        const mode = db.pragma('journal_mode = WAL', { simple: true });
        if (String(mode).toLowerCase() !== 'wal') throw new RevpatchError('E_IO', `${file}: cannot switch the journal to WAL (got ${String(mode)})`);
        // Reports land at random places of the id index, so a commit dirties
        // about one page per report; checkpointing every ~40 MB instead of
        // SQLite's 4 MB copies a page hit by many commits back once.
        db.pragma('wal_autocheckpoint = 10000');
        // The id index of a million reports is ~50 MB; SQLite's 2 MB cache would reread most of it.
        db.pragma('cache_size = -65536');
        db.pragma(`journal_size_limit = ${64 * 1024 * 1024}`);
      }
      db.pragma('synchronous = FULL');
      db.pragma('foreign_keys = ON');
      migrate(db);
      return new SqliteFleetStore(db);
    } catch (err) {
      db?.close();
      throw storeError(err, `fleet database ${file}`);
    }
  }

  private run<T>(what: string, fn: () => T, write: boolean): Promise<T> {
    if (this.closed) return Promise.reject(new RevpatchError('E_STATE', `fleet store is closed (${what})`));
    try {
      const tx = this.db.transaction(fn);
      return Promise.resolve(write ? tx.immediate() : tx.deferred());
    } catch (err) {
      return Promise.reject(storeError(err, what));
    }
  }

  insertReports(batches: readonly (readonly StoredReport[])[]): Promise<BatchAck[]> {
    return this.run(
      'insertReports',
      () => {
        const acks = batches.map((batch) => {
          let accepted = 0;
          for (const r of batch) {
            const info = this.sql.insertReport.run(
              hexKey(r.id), r.patch, r.version, r.outcome, r.code ?? null, r.bootAttempts, r.agentVersion, r.time, r.pseudonym, r.receivedAt,
            );
            if (info.changes !== 0) accepted++;
          }
          return { accepted, duplicates: batch.length - accepted };
        });
        this.fold(FOLD_REPORTS);
        return acks;
      },
      true,
    );
  }

  /**
   * Folds the reports stored since the last fold into device_outcomes when
   * there are at least `least` of them: one sorted pass, so a page of the
   * index is written once per fold rather than once per report. Runs inside
   * the caller's write transaction.
   */
  private fold(least: number): void {
    const from = (this.sql.foldedUpTo.get() as Row).up_to as number;
    const to = (this.sql.lastReport.get() as Row).n as number;
    if (to - from < Math.max(1, least)) return;
    this.sql.foldOutcomes.run(from, to);
    this.sql.setFolded.run(to);
  }

  counts(patch: string, version: number, since?: number): Promise<OutcomeCounts> {
    return this.run(
      'counts',
      () => {
        this.fold(1);
        const out: OutcomeCounts = { ...ZERO_COUNTS };
        for (const row of this.sql.counts.all(patch, version, since ?? Number.MIN_SAFE_INTEGER) as Row[]) {
          const key = row.outcome === 'rolled-back' ? 'failed' : (row.outcome as keyof OutcomeCounts);
          out[key] = row.n as number;
        }
        return out;
      },
      true,
    );
  }

  reportCount(): Promise<number> {
    return this.run('reportCount', () => (this.sql.reportCount.get() as Row).n as number, false);
  }

  addToken(token: TokenRecord): Promise<void> {
    return this.run(
      'addToken',
      () => {
        if (this.sql.findToken.get(token.hash)) throw new RevpatchError('E_EXISTS', 'a token with this hash is already stored');
        this.sql.addToken.run(token.hash, token.kind, token.devices, token.createdAt, bool(token.revoked));
      },
      true,
    );
  }

  findToken(hash: string): Promise<TokenRecord | null> {
    return this.run('findToken', () => {
      const row = this.sql.findToken.get(hash) as Row | undefined;
      return row ? tokenFromRow(row) : null;
    }, false);
  }

  revokeToken(hash: string): Promise<boolean> {
    return this.run('revokeToken', () => this.sql.revokeToken.run(hash).changes === 1, true);
  }

  enrolledDevices(): Promise<number> {
    return this.run('enrolledDevices', () => (this.sql.enrolledDevices.get() as Row).n as number, false);
  }

  createPlan(plan: PlanRecord): Promise<void> {
    return this.run(
      'createPlan',
      () => {
        const info = this.sql.createPlan.run(
          plan.patch, plan.version, JSON.stringify(plan.stages), plan.soakSeconds, plan.minReports, plan.maxFailurePct,
          bool(plan.autoRecall), plan.state, plan.stage, plan.rollout, plan.stageStartedAt, bool(plan.halted),
          plan.revision, plan.createdAt, plan.updatedAt,
        );
        if (info.changes === 0) {
          throw new RevpatchError('E_EXISTS', `${plan.patch} version ${plan.version} already has a rollout plan that is neither complete nor recalled`);
        }
      },
      true,
    );
  }

  getPlan(patch: string, version: number): Promise<PlanRecord | null> {
    return this.run('getPlan', () => {
      const row = this.sql.getPlan.get(patch, version) as Row | undefined;
      return row ? planFromRow(row) : null;
    }, false);
  }

  latestPlan(patch: string): Promise<PlanRecord | null> {
    return this.run('latestPlan', () => {
      const row = this.sql.latestPlan.get(patch) as Row | undefined;
      return row ? planFromRow(row) : null;
    }, false);
  }

  listPlans(): Promise<PlanRecord[]> {
    return this.run('listPlans', () => (this.sql.listPlans.all() as Row[]).map(planFromRow), false);
  }

  decide(expectedRevision: number, next: PlanRecord, decision: Omit<DecisionRecord, 'seq'>): Promise<DecisionRecord | null> {
    if (decision.patch !== next.patch || decision.version !== next.version) {
      return Promise.reject(new RevpatchError('E_INVALID_ARGUMENT', `a decision on ${decision.patch} ${decision.version} cannot change the plan of ${next.patch} ${next.version}`));
    }
    return this.run(
      'decide',
      () => {
        const info = this.sql.casPlan.run(
          JSON.stringify(next.stages), next.soakSeconds, next.minReports, next.maxFailurePct, bool(next.autoRecall),
          next.state, next.stage, next.rollout, next.stageStartedAt, bool(next.halted), next.updatedAt,
          next.patch, next.version, expectedRevision,
        );
        if (info.changes === 0) return null;
        const row = this.sql.insertDecision.get(
          decision.patch, decision.version, decision.at, decision.action, decision.code, decision.reason, decision.by,
          decision.fromRollout, decision.toRollout, decision.stage,
          decision.inputs === null ? null : JSON.stringify(decision.inputs), decision.appliedAt,
        ) as Row;
        return { ...decision, seq: row.seq as number };
      },
      true,
    );
  }

  markApplied(seq: number, at: number): Promise<void> {
    return this.run(
      'markApplied',
      () => {
        if (this.sql.markApplied.run(at, seq).changes === 0) throw new RevpatchError('E_NOT_FOUND', `no decision ${seq}`);
      },
      true,
    );
  }

  unappliedDecisions(): Promise<DecisionRecord[]> {
    return this.run('unappliedDecisions', () => (this.sql.unapplied.all() as Row[]).map(decisionFromRow), false);
  }

  decisions(patch: string, version?: number): Promise<DecisionRecord[]> {
    return this.run(
      'decisions',
      () =>
        ((version === undefined ? this.sql.decisionsOfPatch.all(patch) : this.sql.decisionsOfVersion.all(patch, version)) as Row[]).map(
          decisionFromRow,
        ),
      false,
    );
  }

  decisionPage(patch: string, version: number, query: DecisionPageQuery): Promise<DecisionPage> {
    const changes = query.changesOnly ? 1 : 0;
    return this.run(
      'decisionPage',
      () => ({
        decisions: (
          this.sql.decisionPage.all({ patch, version, changes, before: query.before ?? Number.MAX_SAFE_INTEGER, limit: Math.max(0, query.limit) }) as Row[]
        ).map(decisionFromRow),
        total: (this.sql.decisionTotal.get({ patch, version, changes }) as Row).n as number,
      }),
      false,
    );
  }

  outcomeSeries(patch: string, version: number, from: number, stepMs: number, buckets: number): Promise<OutcomeBucket[]> {
    return this.run(
      'outcomeSeries',
      () => {
        this.fold(1);
        return seriesOf(
          this.sql.outcomeSeries.all({ patch, version, from: Math.floor(from), step: Math.max(1, Math.floor(stepMs)) }) as Row[],
          buckets,
        );
      },
      true,
    );
  }

  tryLead(owner: string, leaseMs: number, now: number): Promise<boolean> {
    if (!owner || !(leaseMs > 0)) return Promise.reject(new RevpatchError('E_INVALID_ARGUMENT', 'tryLead needs an owner and a positive lease'));
    return this.run(
      'tryLead',
      () => {
        const lease = this.sql.leader.get() as Row | undefined;
        if (lease && lease.owner !== owner && (lease.expires_at as number) > now) return false;
        this.sql.takeLead.run(owner, Math.floor(now + leaseMs));
        return true;
      },
      true,
    );
  }

  resign(owner: string): Promise<void> {
    return this.run('resign', () => void this.sql.resign.run(owner), true);
  }

  close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      this.db.close();
    }
    return Promise.resolve();
  }
}

/** Applies the migrations the database lacks, in one transaction; refuses a schema newer than this code. */
function migrate(db: Database.Database): void {
  db.transaction(() => {
    db.exec(SQL.migrationsTable);
    const applied = (db.prepare(SQL.appliedVersion).get() as Row).v as number;
    if (applied > SQLITE_SCHEMA_VERSION) {
      throw new RevpatchError('E_UNSUPPORTED', `the fleet database has schema ${applied}, newer than this revpatch knows (${SQLITE_SCHEMA_VERSION}); upgrade revpatch`);
    }
    const record = db.prepare(SQL.recordMigration);
    for (const m of MIGRATIONS) {
      if (m.version <= applied) continue;
      db.exec(m.sql);
      record.run(m.version, m.name, Date.now());
    }
  }).immediate();
}
