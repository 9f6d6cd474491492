/**
 * The report protocol between devices and the fleet service (DESIGN.md,
 * "Fleet"; docs/fleet.md): what a device sends in POST /v1/reports. Like
 * lib/repo/, both ends build on it: the device's report client
 * (lib/report/client.ts) and the collector (lib/fleet/). Nothing in a report
 * names the device.
 */

/** The version of the report batch format; a batch with another is refused (E_UNSUPPORTED). */
export const REPORT_FORMAT = 1;

/**
 * What happened to a patch on a device. Success is `confirmed`: the health
 * check passed after the restart, never "installed".
 */
export const OUTCOMES = ['staged', 'refused', 'trial', 'confirmed', 'rolled-back', 'removed', 'recalled'] as const;
export type Outcome = (typeof OUTCOMES)[number];

/** Why a patch was rolled back: the system never reached the health check, or failed it. */
export const ROLLBACK_CODES = ['boot-loop', 'health-check-failed'] as const;
export type RollbackCode = (typeof ROLLBACK_CODES)[number];

/** One outcome of one patch on one device. Nothing in it names the device. */
export interface DeviceReport {
  /**
   * 32 lowercase hex (128 random bits) the device draws once per report; the
   * collector stores a report once per id, so a retried or re-batched
   * report is counted once.
   */
  id: string;
  patch: string;
  version: number;
  outcome: Outcome;
  /**
   * refused: the stable error code (E_...); rolled-back: a RollbackCode;
   * removed: 'user'; recalled: 'recall'; otherwise null.
   */
  code: string | null;
  /** Failed boot attempts the patch had when this was reported. */
  bootAttempts: number;
  /** The revpatch version of the agent (package.json). */
  agentVersion: string;
  /** The device's clock when it happened (ISO 8601); informational, never trusted for decisions. */
  time: string;
  /**
   * 64 lowercase hex: HMAC-SHA256 under a random secret kept in the device's
   * state directory, of the patch id. Distinct per (device, patch): the
   * collector counts devices per patch but cannot link one across patches.
   */
  pseudonym: string;
}

/** The body of POST /v1/reports. */
export interface ReportBatch {
  format: typeof REPORT_FORMAT;
  reports: DeviceReport[];
}

/** Bounds of one batch; larger ones are refused whole (E_TOO_LARGE). */
export const MAX_BATCH_REPORTS = 1000;
export const MAX_BATCH_BYTES = 1024 * 1024;

/** The collector's answer to an accepted batch: stored durably before it is sent. */
export interface BatchAck {
  /** Reports stored now. */
  accepted: number;
  /** Reports already stored earlier (same id): counted once. */
  duplicates: number;
}

/** A report as stored: with the collector's own receive time (ms since epoch, the server clock). */
export interface StoredReport extends DeviceReport {
  receivedAt: number;
}

/**
 * Distinct devices (pseudonyms) per outcome of one patch version, counting
 * a device once per outcome. `failed` counts `rolled-back`; `confirmed`
 * counts devices that confirmed and never reported a rollback.
 */
export interface OutcomeCounts {
  staged: number;
  refused: number;
  trial: number;
  confirmed: number;
  failed: number;
  removed: number;
  recalled: number;
}

export const ZERO_COUNTS: Readonly<OutcomeCounts> = { staged: 0, refused: 0, trial: 0, confirmed: 0, failed: 0, removed: 0, recalled: 0 };
