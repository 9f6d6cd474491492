/**
 * The fleet store on PostgreSQL (pg 8): for fleets that outgrow one
 * machine, where several collector processes share one database. All of
 * this backend's SQL lives in this file, parameterized only.
 *
 * Durability. Every method is one transaction on a pooled connection; the
 * sessions ask for `synchronous_commit=on`, so COMMIT returns only once the
 * WAL is flushed, and an acknowledged report survives a crash of the
 * database server too (given its `fsync=on`).
 *
 * Bulk insert. `insertReports` sends all reports of a group of batches as
 * column arrays: one `INSERT … SELECT FROM unnest(…) ON CONFLICT DO NOTHING
 * RETURNING id` stores the new ones, a second statement records the
 * (patch, version, outcome, device) rows `counts` reads. Both insert in key
 * order, so concurrent collectors always take row locks in the same order
 * and cannot deadlock one another; a deadlock or serialization failure the
 * server reports anyway is retried, since the transaction left nothing.
 *
 * The compare-and-set of `decide` is `UPDATE plans … WHERE revision = $n`
 * inside the transaction: a concurrent decider waits for the row lock, then
 * re-reads the row, sees the new revision and updates nothing.
 *
 * Leadership. The controller leads while it holds a session-level advisory
 * lock on a connection of its own, outside the pool. The server releases it
 * when that session ends, so a process that dies (SIGKILL, power) hands
 * leadership over at once, with no lease to wait out. Every `tryLead` of a
 * leader proves its session still lives with a round trip; when the
 * connection drops, `tryLead` says false until the lock is taken again on a
 * fresh connection. A failure to reach the server is "not leading", never
 * an exception. `leaseMs` and `now` have no use here.
 */
import { Client, Pool, types as pgTypes, type ClientConfig, type PoolClient } from 'pg';
import { RevpatchError, type ErrorCode } from '../engine/errors';
import { OUTCOMES, ZERO_COUNTS, type BatchAck, type OutcomeCounts, type StoredReport } from '../report/format';
import { seriesOf } from './series';
import {
  DECISION_ACTIONS,
  ROLLOUT_STATES,
  type DecisionPage,
  type DecisionPageQuery,
  type DecisionRecord,
  type FleetStore,
  type OutcomeBucket,
  type PlanRecord,
  type TokenRecord,
} from './types';

export interface PostgresStoreOptions {
  /** Connections in the work pool (default 10). */
  poolSize?: number;
}

/** Advisory lock keys: 'revpatch' in ASCII, and the next one for migrations. */
const LEADER_LOCK = BigInt('0x7265767061746368').toString();
const MIGRATION_LOCK = (BigInt('0x7265767061746368') + 1n).toString();

const quoted = (values: readonly string[]): string => values.map((v) => `'${v}'`).join(', ');

/**
 * Numbered migrations, applied in order at open under an advisory lock (so
 * collectors starting together do not race) and recorded in
 * schema_migrations. Never edit one that has shipped; add the next.
 */
const MIGRATIONS: readonly { version: number; name: string; sql: string }[] = [
  {
    version: 1,
    name: 'reports, device outcomes, plans, decisions, tokens',
    sql: `
      CREATE TABLE reports (
        id text NOT NULL PRIMARY KEY,
        patch text NOT NULL,
        version bigint NOT NULL,
        outcome text NOT NULL CHECK (outcome IN (${quoted(OUTCOMES)})),
        code text,
        boot_attempts integer NOT NULL CHECK (boot_attempts >= 0),
        agent_version text NOT NULL,
        device_time text NOT NULL,
        pseudonym text NOT NULL,
        received_at bigint NOT NULL
      );

      CREATE TABLE device_outcomes (
        patch text NOT NULL,
        version bigint NOT NULL,
        outcome text NOT NULL,
        pseudonym text NOT NULL,
        first_received_at bigint NOT NULL,
        PRIMARY KEY (patch, version, outcome, pseudonym)
      );

      CREATE TABLE plans (
        patch text NOT NULL,
        version bigint NOT NULL,
        stages jsonb NOT NULL,
        soak_seconds double precision NOT NULL,
        min_reports integer NOT NULL,
        max_failure_pct double precision NOT NULL,
        auto_recall boolean NOT NULL,
        state text NOT NULL CHECK (state IN (${quoted(ROLLOUT_STATES)})),
        stage integer NOT NULL,
        rollout double precision NOT NULL,
        stage_started_at bigint,
        halted boolean NOT NULL,
        revision bigint NOT NULL,
        created_at bigint NOT NULL,
        updated_at bigint NOT NULL,
        PRIMARY KEY (patch, version)
      );

      CREATE TABLE decisions (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        patch text NOT NULL,
        version bigint NOT NULL,
        at bigint NOT NULL,
        action text NOT NULL CHECK (action IN (${quoted(DECISION_ACTIONS)})),
        code text NOT NULL,
        reason text NOT NULL,
        by text NOT NULL CHECK (by IN ('controller', 'operator')),
        from_rollout double precision NOT NULL,
        to_rollout double precision NOT NULL,
        stage integer NOT NULL,
        inputs jsonb,
        applied_at bigint
      );
      CREATE INDEX decisions_by_patch ON decisions (patch, version, seq);
      CREATE INDEX decisions_unapplied ON decisions (seq) WHERE applied_at IS NULL;

      CREATE TABLE tokens (
        hash text PRIMARY KEY,
        kind text NOT NULL CHECK (kind IN ('device', 'operator')),
        devices integer NOT NULL CHECK (devices >= 0),
        created_at bigint NOT NULL,
        revoked boolean NOT NULL
      );
    `,
  },
];

/** The newest schema this code knows. */
export const POSTGRES_SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1].version;

const REPORT_COLUMNS = 'id, patch, version, outcome, code, boot_attempts, agent_version, device_time, pseudonym, received_at';
const PLAN_VALUES = `$1, $2, $3::jsonb, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15`;

const SQL = {
  migrationLock: `SELECT pg_advisory_xact_lock($1::bigint)`,
  migrationsTable: `CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY, name text NOT NULL, applied_at bigint NOT NULL)`,
  appliedVersion: `SELECT coalesce(max(version), 0)::integer AS v FROM schema_migrations`,
  recordMigration: `INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)`,

  insertReports: `INSERT INTO reports (${REPORT_COLUMNS})
    SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::integer[],
                         $7::text[], $8::text[], $9::text[], $10::bigint[]) AS r(${REPORT_COLUMNS})
    ORDER BY id
    ON CONFLICT (id) DO NOTHING
    RETURNING id`,
  // Keeps the earliest receive time should reports arrive out of order.
  insertDeviceOutcomes: `INSERT INTO device_outcomes (patch, version, outcome, pseudonym, first_received_at)
    SELECT patch, version, outcome, pseudonym, min(received_at)
    FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bigint[]) AS d(patch, version, outcome, pseudonym, received_at)
    GROUP BY patch, version, outcome, pseudonym
    ORDER BY patch, version, outcome, pseudonym
    ON CONFLICT (patch, version, outcome, pseudonym) DO UPDATE
      SET first_received_at = excluded.first_received_at
      WHERE excluded.first_received_at < device_outcomes.first_received_at`,
  // A device counts as confirmed only if it never reported a rollback of the version.
  counts: `SELECT d.outcome, count(*) AS n FROM device_outcomes d
    WHERE d.patch = $1 AND d.version = $2 AND d.first_received_at >= $3
      AND (d.outcome <> 'confirmed' OR NOT EXISTS (
        SELECT 1 FROM device_outcomes r
        WHERE r.patch = d.patch AND r.version = d.version AND r.outcome = 'rolled-back' AND r.pseudonym = d.pseudonym))
    GROUP BY d.outcome`,
  reportCount: `SELECT count(*) AS n FROM reports`,

  addToken: `INSERT INTO tokens (hash, kind, devices, created_at, revoked) VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (hash) DO NOTHING RETURNING hash`,
  findToken: `SELECT * FROM tokens WHERE hash = $1`,
  revokeToken: `UPDATE tokens SET revoked = true WHERE hash = $1 AND NOT revoked`,
  enrolledDevices: `SELECT coalesce(sum(devices), 0) AS n FROM tokens WHERE kind = 'device' AND NOT revoked`,

  // Replaces a finished plan only; its revision count continues, so a
  // decision computed against the old plan can never apply to the new one.
  createPlan: `INSERT INTO plans (patch, version, stages, soak_seconds, min_reports, max_failure_pct, auto_recall,
      state, stage, rollout, stage_started_at, halted, revision, created_at, updated_at)
    VALUES (${PLAN_VALUES})
    ON CONFLICT (patch, version) DO UPDATE SET
      stages = excluded.stages, soak_seconds = excluded.soak_seconds, min_reports = excluded.min_reports,
      max_failure_pct = excluded.max_failure_pct, auto_recall = excluded.auto_recall, state = excluded.state,
      stage = excluded.stage, rollout = excluded.rollout, stage_started_at = excluded.stage_started_at,
      halted = excluded.halted, revision = greatest(excluded.revision, plans.revision + 1),
      created_at = excluded.created_at, updated_at = excluded.updated_at
    WHERE plans.state IN ('recalled', 'complete')
    RETURNING revision`,
  getPlan: `SELECT * FROM plans WHERE patch = $1 AND version = $2`,
  latestPlan: `SELECT * FROM plans WHERE patch = $1 ORDER BY version DESC LIMIT 1`,
  listPlans: `SELECT * FROM plans ORDER BY patch, version`,
  // The compare-and-set: only the writer that saw the current revision wins.
  casPlan: `UPDATE plans SET stages = $1::jsonb, soak_seconds = $2, min_reports = $3, max_failure_pct = $4, auto_recall = $5,
      state = $6, stage = $7, rollout = $8, stage_started_at = $9, halted = $10, revision = revision + 1, updated_at = $11
    WHERE patch = $12 AND version = $13 AND revision = $14
    RETURNING revision`,
  insertDecision: `INSERT INTO decisions (patch, version, at, action, code, reason, by, from_rollout, to_rollout, stage, inputs, applied_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, $12) RETURNING seq`,
  markApplied: `UPDATE decisions SET applied_at = coalesce(applied_at, $1) WHERE seq = $2`,
  unapplied: `SELECT * FROM decisions WHERE applied_at IS NULL ORDER BY seq`,
  decisionsOfPatch: `SELECT * FROM decisions WHERE patch = $1 ORDER BY seq`,
  decisionsOfVersion: `SELECT * FROM decisions WHERE patch = $1 AND version = $2 ORDER BY seq`,
  decisionPage: `SELECT * FROM decisions WHERE patch = $1 AND version = $2 AND seq < $4 AND (NOT $3 OR action <> 'hold')
    ORDER BY seq DESC LIMIT $5`,
  decisionTotal: `SELECT count(*)::bigint AS n FROM decisions WHERE patch = $1 AND version = $2 AND (NOT $3 OR action <> 'hold')`,
  outcomeSeries: `SELECT d.outcome, floor((d.first_received_at - $3)::double precision / $4) AS bucket, count(*) AS n FROM device_outcomes d
    WHERE d.patch = $1 AND d.version = $2 AND d.outcome IN ('confirmed', 'rolled-back')
      AND (d.outcome <> 'confirmed' OR NOT EXISTS (
        SELECT 1 FROM device_outcomes r
        WHERE r.patch = d.patch AND r.version = d.version AND r.outcome = 'rolled-back' AND r.pseudonym = d.pseudonym))
    GROUP BY d.outcome, bucket`,

  tryLock: `SELECT pg_try_advisory_lock($1::bigint) AS ok`,
  alive: `SELECT 1`,
  unlock: `SELECT pg_advisory_unlock($1::bigint)`,
} as const;

type Row = Record<string, unknown>;

/** bigint columns (times, versions, counts) as JS numbers: every value this store keeps is below 2^53. */
const TYPES = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === pgTypes.builtins.INT8 ? (v: string) => Number(v) : pgTypes.getTypeParser(oid, format)) as typeof pgTypes.getTypeParser,
};

/** Maps an error of pg or the server to a stable code; integrity and data errors are bad input. */
function storeError(err: unknown, what: string): RevpatchError {
  if (err instanceof RevpatchError) return err;
  const code = String((err as { code?: unknown })?.code ?? '');
  const message = `${what}: ${(err as Error)?.message ?? String(err)}`;
  let mapped: ErrorCode = 'E_UNKNOWN';
  if (err instanceof TypeError || err instanceof RangeError || code.startsWith('23') || code.startsWith('22')) mapped = 'E_INVALID_ARGUMENT';
  else if (code === '53100') mapped = 'E_NO_SPACE';
  else if (code === '40001' || code === '40P01' || code === '55P03') mapped = 'E_BUSY';
  else if (code.startsWith('58') || code === 'XX001' || code === 'XX002') mapped = code.startsWith('XX') ? 'E_CORRUPT' : 'E_IO';
  else if (
    /^(08|57P|28|3D)/.test(code) ||
    ['ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'EPIPE', 'ENOENT', 'EHOSTUNREACH', 'ENETUNREACH'].includes(code) ||
    /Connection terminated|timeout/i.test(message)
  ) {
    mapped = 'E_NETWORK';
  }
  return new RevpatchError(mapped, message, { cause: err });
}

const retryable = (err: unknown): boolean => ['40001', '40P01'].includes(String((err as { code?: unknown })?.code ?? ''));

function planFromRow(r: Row): PlanRecord {
  return {
    patch: r.patch as string,
    version: r.version as number,
    stages: r.stages as number[],
    soakSeconds: r.soak_seconds as number,
    minReports: r.min_reports as number,
    maxFailurePct: r.max_failure_pct as number,
    autoRecall: r.auto_recall as boolean,
    state: r.state as PlanRecord['state'],
    stage: r.stage as number,
    rollout: r.rollout as number,
    stageStartedAt: (r.stage_started_at as number | null) ?? null,
    halted: r.halted as boolean,
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
    inputs: (r.inputs as DecisionRecord['inputs']) ?? null,
    appliedAt: (r.applied_at as number | null) ?? null,
  };
}

function tokenFromRow(r: Row): TokenRecord {
  return {
    hash: r.hash as string,
    kind: r.kind as TokenRecord['kind'],
    devices: r.devices as number,
    createdAt: r.created_at as number,
    revoked: r.revoked as boolean,
  };
}

function planParams(p: PlanRecord): unknown[] {
  return [
    p.patch, p.version, JSON.stringify(p.stages), p.soakSeconds, p.minReports, p.maxFailurePct, p.autoRecall,
    p.state, p.stage, p.rollout, p.stageStartedAt, p.halted, p.revision, p.createdAt, p.updatedAt,
  ];
}

export class PostgresFleetStore implements FleetStore {
  readonly kind = 'postgres' as const;
  private readonly pool: Pool;
  private readonly config: ClientConfig;
  private closed = false;
  /** The dedicated leadership connection, kept between calls; `owner` is set while it holds the lock. */
  private leadClient: Client | null = null;
  private leadOwner: string | null = null;
  /** Leadership calls run one at a time. */
  private leadQueue: Promise<unknown> = Promise.resolve();

  private constructor(config: ClientConfig, poolSize: number) {
    this.config = config;
    this.pool = new Pool({ ...config, max: poolSize });
    // An idle connection the server closed: the pool drops it; the next call gets a fresh one.
    this.pool.on('error', () => undefined);
  }

  /** Connects to `url`, brings the schema up to date and returns the store. */
  static async open(url: string, options: PostgresStoreOptions = {}): Promise<PostgresFleetStore> {
    const config: ClientConfig = {
      connectionString: url,
      types: TYPES,
      options: '-c synchronous_commit=on',
      keepAlive: true,
      connectionTimeoutMillis: 15_000,
    };
    const store = new PostgresFleetStore(config, Math.max(1, Math.floor(options.poolSize ?? 10)));
    try {
      await store.tx('migrate', (c) => migrate(c));
      return store;
    } catch (err) {
      await store.close();
      throw err;
    }
  }

  /** Runs `fn` in one transaction on a pooled connection; retries what the server asks to retry. */
  private async tx<T>(what: string, fn: (c: PoolClient) => Promise<T>): Promise<T> {
    if (this.closed) throw new RevpatchError('E_STATE', `fleet store is closed (${what})`);
    for (let attempt = 1; ; attempt++) {
      let client: PoolClient;
      try {
        client = await this.pool.connect();
      } catch (err) {
        throw storeError(err, what);
      }
      let broken = false;
      try {
        await client.query('BEGIN');
        const out = await fn(client);
        await client.query('COMMIT');
        return out;
      } catch (err) {
        await client.query('ROLLBACK').catch(() => {
          broken = true;
        });
        if (!(retryable(err) && attempt < 5)) throw storeError(err, what);
      } finally {
        client.release(broken);
      }
    }
  }

  private async one(what: string, sql: string, params: unknown[] = []): Promise<Row[]> {
    if (this.closed) throw new RevpatchError('E_STATE', `fleet store is closed (${what})`);
    try {
      return (await this.pool.query(sql, params)).rows as Row[];
    } catch (err) {
      throw storeError(err, what);
    }
  }

  async insertReports(batches: readonly (readonly StoredReport[])[]): Promise<BatchAck[]> {
    // A report repeated within the group is a duplicate of its first occurrence; only first ones go to the server.
    const firsts = new Map<string, StoredReport>();
    for (const batch of batches) for (const r of batch) if (!firsts.has(r?.id)) firsts.set(r?.id, r);
    const unique = [...firsts.values()];
    const stored = unique.length === 0 ? new Set<string>() : await this.tx('insertReports', async (c) => {
      const col = <K extends keyof StoredReport>(k: K): unknown[] => unique.map((r) => r[k] ?? null);
      const res = await c.query(SQL.insertReports, [
        col('id'), col('patch'), col('version'), col('outcome'), col('code'), col('bootAttempts'),
        col('agentVersion'), col('time'), col('pseudonym'), col('receivedAt'),
      ]);
      const ids = new Set((res.rows as Row[]).map((row) => row.id as string));
      const fresh = unique.filter((r) => ids.has(r.id));
      if (fresh.length > 0) {
        await c.query(SQL.insertDeviceOutcomes, [
          fresh.map((r) => r.patch), fresh.map((r) => r.version), fresh.map((r) => r.outcome),
          fresh.map((r) => r.pseudonym), fresh.map((r) => r.receivedAt),
        ]);
      }
      return ids;
    });
    return batches.map((batch) => {
      let accepted = 0;
      for (const r of batch) {
        if (stored.delete(r.id)) accepted++;
      }
      return { accepted, duplicates: batch.length - accepted };
    });
  }

  async counts(patch: string, version: number, since?: number): Promise<OutcomeCounts> {
    const out: OutcomeCounts = { ...ZERO_COUNTS };
    for (const row of await this.one('counts', SQL.counts, [patch, version, since ?? Number.MIN_SAFE_INTEGER])) {
      const key = row.outcome === 'rolled-back' ? 'failed' : (row.outcome as keyof OutcomeCounts);
      out[key] = row.n as number;
    }
    return out;
  }

  async reportCount(): Promise<number> {
    return (await this.one('reportCount', SQL.reportCount))[0].n as number;
  }

  async addToken(token: TokenRecord): Promise<void> {
    const rows = await this.tx('addToken', async (c) =>
      (await c.query(SQL.addToken, [token.hash, token.kind, token.devices, token.createdAt, token.revoked])).rows,
    );
    if (rows.length === 0) throw new RevpatchError('E_EXISTS', 'a token with this hash is already stored');
  }

  async findToken(hash: string): Promise<TokenRecord | null> {
    const rows = await this.one('findToken', SQL.findToken, [hash]);
    return rows.length ? tokenFromRow(rows[0]) : null;
  }

  async revokeToken(hash: string): Promise<boolean> {
    return (await this.tx('revokeToken', (c) => c.query(SQL.revokeToken, [hash]))).rowCount === 1;
  }

  async enrolledDevices(): Promise<number> {
    return (await this.one('enrolledDevices', SQL.enrolledDevices))[0].n as number;
  }

  async createPlan(plan: PlanRecord): Promise<void> {
    const rows = await this.tx('createPlan', async (c) => (await c.query(SQL.createPlan, planParams(plan))).rows);
    if (rows.length === 0) {
      throw new RevpatchError('E_EXISTS', `${plan.patch} version ${plan.version} already has a rollout plan that is neither complete nor recalled`);
    }
  }

  async getPlan(patch: string, version: number): Promise<PlanRecord | null> {
    const rows = await this.one('getPlan', SQL.getPlan, [patch, version]);
    return rows.length ? planFromRow(rows[0]) : null;
  }

  async latestPlan(patch: string): Promise<PlanRecord | null> {
    const rows = await this.one('latestPlan', SQL.latestPlan, [patch]);
    return rows.length ? planFromRow(rows[0]) : null;
  }

  async listPlans(): Promise<PlanRecord[]> {
    return (await this.one('listPlans', SQL.listPlans)).map(planFromRow);
  }

  async decide(expectedRevision: number, next: PlanRecord, decision: Omit<DecisionRecord, 'seq'>): Promise<DecisionRecord | null> {
    if (decision.patch !== next.patch || decision.version !== next.version) {
      throw new RevpatchError('E_INVALID_ARGUMENT', `a decision on ${decision.patch} ${decision.version} cannot change the plan of ${next.patch} ${next.version}`);
    }
    return this.tx('decide', async (c) => {
      const updated = await c.query(SQL.casPlan, [
        JSON.stringify(next.stages), next.soakSeconds, next.minReports, next.maxFailurePct, next.autoRecall,
        next.state, next.stage, next.rollout, next.stageStartedAt, next.halted, next.updatedAt,
        next.patch, next.version, expectedRevision,
      ]);
      if (updated.rowCount === 0) return null;
      const inserted = await c.query(SQL.insertDecision, [
        decision.patch, decision.version, decision.at, decision.action, decision.code, decision.reason, decision.by,
        decision.fromRollout, decision.toRollout, decision.stage,
        decision.inputs === null ? null : JSON.stringify(decision.inputs), decision.appliedAt,
      ]);
      return { ...decision, seq: (inserted.rows[0] as Row).seq as number };
    });
  }

  async markApplied(seq: number, at: number): Promise<void> {
    const count = await this.tx('markApplied', async (c) => (await c.query(SQL.markApplied, [at, seq])).rowCount);
    if (count === 0) throw new RevpatchError('E_NOT_FOUND', `no decision ${seq}`);
  }

  async unappliedDecisions(): Promise<DecisionRecord[]> {
    return (await this.one('unappliedDecisions', SQL.unapplied)).map(decisionFromRow);
  }

  async decisions(patch: string, version?: number): Promise<DecisionRecord[]> {
    const rows =
      version === undefined
        ? await this.one('decisions', SQL.decisionsOfPatch, [patch])
        : await this.one('decisions', SQL.decisionsOfVersion, [patch, version]);
    return rows.map(decisionFromRow);
  }

  async decisionPage(patch: string, version: number, query: DecisionPageQuery): Promise<DecisionPage> {
    const changes = Boolean(query.changesOnly);
    const rows = await this.one('decisionPage', SQL.decisionPage, [patch, version, changes, query.before ?? Number.MAX_SAFE_INTEGER, Math.max(0, query.limit)]);
    const total = (await this.one('decisionPage', SQL.decisionTotal, [patch, version, changes]))[0].n;
    return { decisions: rows.map(decisionFromRow), total: Number(total) };
  }

  async outcomeSeries(patch: string, version: number, from: number, stepMs: number, buckets: number): Promise<OutcomeBucket[]> {
    const rows = await this.one('outcomeSeries', SQL.outcomeSeries, [patch, version, Math.floor(from), Math.max(1, Math.floor(stepMs))]);
    return seriesOf(rows, buckets);
  }

  tryLead(owner: string, _leaseMs: number, _now: number): Promise<boolean> {
    if (!owner) return Promise.reject(new RevpatchError('E_INVALID_ARGUMENT', 'tryLead needs an owner'));
    return this.serialLead(async () => {
      if (this.closed) throw new RevpatchError('E_STATE', 'fleet store is closed (tryLead)');
      if (this.leadOwner !== null && this.leadOwner !== owner) return false;
      try {
        const client = await this.leaderConnection();
        if (this.leadOwner === owner) {
          await client.query(SQL.alive);
          return this.leadClient === client;
        }
        const ok = (await client.query(SQL.tryLock, [LEADER_LOCK])).rows[0]?.ok === true;
        if (ok && this.leadClient === client) this.leadOwner = owner;
        return this.leadOwner === owner;
      } catch {
        this.dropLeaderConnection();
        return false;
      }
    });
  }

  resign(owner: string): Promise<void> {
    return this.serialLead(async () => {
      if (this.leadOwner !== owner || !this.leadClient) return;
      const client = this.leadClient;
      this.leadOwner = null;
      try {
        await client.query(SQL.unlock, [LEADER_LOCK]);
      } catch {
        // Ending the session releases the lock as well.
        this.dropLeaderConnection();
      }
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.leadQueue.catch(() => undefined);
    this.dropLeaderConnection();
    await this.pool.end().catch(() => undefined);
  }

  private serialLead<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.leadQueue.then(fn, fn);
    this.leadQueue = run.catch(() => undefined);
    return run;
  }

  private async leaderConnection(): Promise<Client> {
    if (this.leadClient) return this.leadClient;
    const client = new Client({ ...this.config, query_timeout: 10_000 });
    // A dropped session has released the lock: from here on this process does not lead.
    const lost = (): void => {
      if (this.leadClient === client) {
        this.leadClient = null;
        this.leadOwner = null;
      }
    };
    client.on('error', lost);
    client.on('end', lost);
    this.leadClient = client;
    try {
      await client.connect();
    } catch (err) {
      lost();
      throw err;
    }
    return client;
  }

  private dropLeaderConnection(): void {
    const client = this.leadClient;
    this.leadClient = null;
    this.leadOwner = null;
    client?.end().catch(() => undefined);
  }
}

/** Applies the migrations the database lacks; refuses a schema newer than this code. */
async function migrate(c: PoolClient): Promise<void> {
  await c.query(SQL.migrationLock, [MIGRATION_LOCK]);
  await c.query(SQL.migrationsTable);
  const applied = ((await c.query(SQL.appliedVersion)).rows[0] as Row).v as number;
  if (applied > POSTGRES_SCHEMA_VERSION) {
    throw new RevpatchError('E_UNSUPPORTED', `the fleet database has schema ${applied}, newer than this revpatch knows (${POSTGRES_SCHEMA_VERSION}); upgrade revpatch`);
  }
  for (const m of MIGRATIONS) {
    if (m.version <= applied) continue;
    await c.query(m.sql);
    await c.query(SQL.recordMigration, [m.version, m.name, Date.now()]);
  }
}
