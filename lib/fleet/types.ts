/**
 * The fleet service's data model (DESIGN.md, "Fleet"; docs/fleet.md): what
 * a device reports, what the collector stores, what a rollout plan says and
 * what the controller decides. Every module of lib/fleet/ and the device's
 * report client (lib/report/) build on these types only; the wire format of
 * reports is lib/report/format.ts.
 *
 * Two APIs, kept apart: devices POST report batches with an enrollment
 * token (the device API); operators read status and act with an operator
 * token (the operator API). They share no handler and no token.
 */
import type { BatchAck, OutcomeCounts, StoredReport } from '../report/format';

// -------------------------------------------------------------------- plans

/** Where a patch's rollout stands (DESIGN.md, "fleet status"). */
export const ROLLOUT_STATES = ['planned', 'rolling', 'halted', 'complete', 'recalled'] as const;
export type RolloutState = (typeof ROLLOUT_STATES)[number];

/** What the operator asked for (`revpatch fleet plan`). */
export interface RolloutPlan {
  patch: string;
  version: number;
  /** Rollout percentages, strictly increasing, each in (0, 100]; the last is where the rollout completes. */
  stages: number[];
  /** Seconds a stage must run before the next. */
  soakSeconds: number;
  /** Devices with a verdict (confirmed or failed) a stage needs before it may advance. */
  minReports: number;
  /** Failure rate (percent, 0..100) above which the rollout halts, with confidence (docs/fleet.md). */
  maxFailurePct: number;
  /** A halt also recalls the patch. */
  autoRecall: boolean;
}

/** A plan with where it stands; `revision` changes with every decision (compare-and-set). */
export interface PlanRecord extends RolloutPlan {
  state: RolloutState;
  /** Index into `stages` of the current stage; -1 before the first. */
  stage: number;
  /** The rollout percentage published now. */
  rollout: number;
  /** When the current stage started (server clock, ms); null before the first. */
  stageStartedAt: number | null;
  /** The published halted flag. */
  halted: boolean;
  revision: number;
  createdAt: number;
  updatedAt: number;
}

// ---------------------------------------------------------------- decisions

export const DECISION_ACTIONS = ['start', 'advance', 'halt', 'recall', 'complete', 'resume', 'hold'] as const;
export type DecisionAction = (typeof DECISION_ACTIONS)[number];

/** The numbers a decision was made from, stored with it. */
export interface DecisionInputs {
  counts: OutcomeCounts;
  /** The counts of devices whose verdict arrived in the current stage. */
  stageCounts: OutcomeCounts;
  /** failed / (confirmed + failed) over the counts the rule used, 0 when none. */
  failureRate: number;
  /** Wilson score interval of that rate at the rule's confidence. */
  wilsonLower: number;
  wilsonUpper: number;
  /** Seconds the current stage has run. */
  soakedSeconds: number;
  /** Devices enrolled (the exposure bound, docs/fleet.md "Threat model"), or null if unknown. */
  enrolledDevices: number | null;
}

/**
 * A decision, recorded with its numbers before it is published (DESIGN.md
 * invariant 10). `appliedAt` is set once the repository carries it; a new
 * leader finishes any decision still unapplied.
 */
export interface DecisionRecord {
  /** Assigned by the store, increasing. */
  seq: number;
  patch: string;
  version: number;
  at: number;
  action: DecisionAction;
  /** Stable kebab-case reason (e.g. 'failure-rate-above-threshold'). */
  code: string;
  reason: string;
  by: 'controller' | 'operator';
  fromRollout: number;
  toRollout: number;
  stage: number;
  inputs: DecisionInputs | null;
  appliedAt: number | null;
}

export interface DecisionPageQuery {
  /** Only decisions with a smaller seq (the page after one ending at `before`). */
  before?: number;
  limit: number;
  /** Leave out holds: only decisions that changed the plan. */
  changesOnly?: boolean;
}

export interface DecisionPage {
  decisions: DecisionRecord[];
  total: number;
}

/** New verdicts in one interval of an outcome series. */
export interface OutcomeBucket {
  confirmed: number;
  failed: number;
}

// ------------------------------------------------------------------- tokens

/** Device tokens may only POST reports; operator tokens may only use the operator API. */
export type TokenKind = 'device' | 'operator';

export interface TokenRecord {
  /** Hex SHA-256 of the token; the token itself is never stored. */
  hash: string;
  kind: TokenKind;
  /** Devices this enrollment token stands for (the exposure bound); 0 for operator tokens. */
  devices: number;
  createdAt: number;
  revoked: boolean;
}

// -------------------------------------------------------------------- store

/**
 * Storage behind one small interface (STYLE.md, "Servers and consoles"):
 * SQLite by default (lib/fleet/store_sqlite.ts), PostgreSQL for several
 * collector processes (lib/fleet/store_postgres.ts); lib/fleet/store.ts
 * opens one from a URL. Every method is one transaction; a promise that
 * resolves means the change is durable (fsynced / committed).
 */
export interface FleetStore {
  readonly kind: 'sqlite' | 'postgres';

  /** Stores the reports of several batches in one transaction (group commit); one result per batch, in order. */
  insertReports(batches: readonly (readonly StoredReport[])[]): Promise<BatchAck[]>;
  /** Distinct devices per outcome for a patch version; with `since`, only verdicts received at or after it. */
  counts(patch: string, version: number, since?: number): Promise<OutcomeCounts>;
  /** Reports stored in all (for tests and status). */
  reportCount(): Promise<number>;

  addToken(token: TokenRecord): Promise<void>;
  findToken(hash: string): Promise<TokenRecord | null>;
  /**
   * Marks the token with this hash revoked: its next request is E_AUTH and
   * its devices leave `enrolledDevices`. True if the token was stored and
   * not yet revoked; false (changing nothing) if it is unknown or already
   * revoked. A revocation is never undone; a device gets a new token.
   */
  revokeToken(hash: string): Promise<boolean>;
  /** Sum of `devices` over unrevoked device tokens. */
  enrolledDevices(): Promise<number>;

  /** A new plan (E_EXISTS if the version has one that is not recalled or complete). */
  createPlan(plan: PlanRecord): Promise<void>;
  getPlan(patch: string, version: number): Promise<PlanRecord | null>;
  /** The newest plan of a patch id (highest version). */
  latestPlan(patch: string): Promise<PlanRecord | null>;
  listPlans(): Promise<PlanRecord[]>;

  /**
   * Compare-and-set: if the plan's revision is still `expectedRevision`,
   * stores `next` (revision + 1) and appends `decision` in one transaction
   * and returns the decision with its seq; otherwise changes nothing and
   * returns null (another process decided first).
   */
  decide(expectedRevision: number, next: PlanRecord, decision: Omit<DecisionRecord, 'seq'>): Promise<DecisionRecord | null>;
  markApplied(seq: number, at: number): Promise<void>;
  /** Decisions recorded but not yet published, oldest first. */
  unappliedDecisions(): Promise<DecisionRecord[]>;
  /** Decisions of one patch (all versions when `version` is omitted), oldest first. */
  decisions(patch: string, version?: number): Promise<DecisionRecord[]>;
  /**
   * One page of a plan's decisions, newest first: those with `seq` below
   * `before` (all when omitted), at most `limit`; `changesOnly` leaves out
   * holds. `total` counts every decision of the plan the query selects
   * (ignoring `before`), so a reader of a long log knows its length.
   */
  decisionPage(patch: string, version: number, query: DecisionPageQuery): Promise<DecisionPage>;
  /**
   * Devices whose confirmed (and never rolled back) or rolled-back verdict
   * of a patch version first arrived in each of `buckets` intervals of
   * `stepMs` from `from` (server clock); a verdict before `from` counts in
   * the first, after the last interval in the last. Bounded by `buckets`,
   * whatever the fleet's size.
   */
  outcomeSeries(patch: string, version: number, from: number, stepMs: number, buckets: number): Promise<OutcomeBucket[]>;

  /**
   * Leadership of the controller: true while this store's process is the
   * one controller. PostgreSQL: a session advisory lock on a connection of
   * its own (released when the process dies); SQLite: a lease row renewed
   * each call, taken over once it has run out (`leaseMs`).
   */
  tryLead(owner: string, leaseMs: number, now: number): Promise<boolean>;
  resign(owner: string): Promise<void>;

  close(): Promise<void>;
}
