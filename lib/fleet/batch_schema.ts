/**
 * The edge check of a report batch (POST /v1/reports; lib/report/format.ts):
 * the bytes a device sent are parsed and checked against one JSON schema,
 * compiled once, before any other code sees them. Every field is typed and
 * bounded and no unknown property passes, so what reaches the store is
 * exactly a ReportBatch.
 *
 * Refusals, each a RevpatchError with a stable code:
 * - not JSON, not an object, a field missing, mistyped or out of bounds,
 *   no reports: E_INVALID_ARGUMENT;
 * - a `format` other than REPORT_FORMAT: E_UNSUPPORTED (a newer agent; it
 *   may keep its reports until the collector is upgraded);
 * - more than MAX_BATCH_REPORTS reports: E_TOO_LARGE.
 * A batch is taken or refused whole.
 */
import Ajv, { type ErrorObject } from 'ajv';
import { RevpatchError } from '../engine/errors';
import { ID_PATTERN, MAX_VERSION } from '../patch/manifest';
import { MAX_BATCH_REPORTS, OUTCOMES, REPORT_FORMAT, type ReportBatch } from '../report/format';

/** Longest `code` (a stable error code, a rollback reason, 'user' or 'recall'). */
export const MAX_CODE_LENGTH = 64;
/** Longest `agentVersion`. */
export const MAX_AGENT_VERSION_LENGTH = 64;
/** Largest `bootAttempts` a device can report. */
export const MAX_BOOT_ATTEMPTS = 1000;

const DATE_TIME_SHAPE = '^\\d{4}-\\d{2}-\\d{2}[Tt]\\d{2}:\\d{2}:\\d{2}(\\.\\d{1,9})?([Zz]|[+-]\\d{2}:\\d{2})$';

const reportSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['id', 'patch', 'version', 'outcome', 'code', 'bootAttempts', 'agentVersion', 'time', 'pseudonym'],
  properties: {
    id: { type: 'string', pattern: '^[0-9a-f]{32}$' },
    patch: { type: 'string', pattern: ID_PATTERN.source },
    version: { type: 'integer', minimum: 1, maximum: MAX_VERSION },
    outcome: { type: 'string', enum: [...OUTCOMES] },
    code: { type: 'string', nullable: true, pattern: `^[A-Za-z0-9][A-Za-z0-9_.-]{0,${MAX_CODE_LENGTH - 1}}$` },
    bootAttempts: { type: 'integer', minimum: 0, maximum: MAX_BOOT_ATTEMPTS },
    agentVersion: { type: 'string', pattern: `^[0-9A-Za-z][0-9A-Za-z.+_-]{0,${MAX_AGENT_VERSION_LENGTH - 1}}$` },
    time: { type: 'string', maxLength: 40, pattern: DATE_TIME_SHAPE },
    pseudonym: { type: 'string', pattern: '^[0-9a-f]{64}$' },
  },
} as const;

/** The schema of a batch of the current format (draft-07, as Ajv reads it). */
export const reportBatchSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['format', 'reports'],
  properties: {
    format: { type: 'integer', const: REPORT_FORMAT },
    reports: { type: 'array', minItems: 1, items: reportSchema },
  },
} as const;

const validateBatch = new Ajv({ strict: true, allErrors: false }).compile(reportBatchSchema);

function describe(errors: ErrorObject[] | null | undefined): string {
  const e = errors?.[0];
  if (!e) return 'does not match the schema';
  const where = e.instancePath === '' ? 'the batch' : e.instancePath;
  const extra = (e.params as { additionalProperty?: string }).additionalProperty;
  return extra !== undefined ? `${where} has the unknown property ${JSON.stringify(extra)}` : `${where} ${e.message}`;
}

/**
 * Parses and checks a batch body (UTF-8 JSON) and returns it typed, or
 * throws E_INVALID_ARGUMENT, E_UNSUPPORTED or E_TOO_LARGE naming the first
 * problem.
 */
export function parseReportBatch(body: Buffer | string): ReportBatch {
  let value: unknown;
  try {
    value = JSON.parse(typeof body === 'string' ? body : body.toString('utf8'));
  } catch (err) {
    throw new RevpatchError('E_INVALID_ARGUMENT', `the batch is not JSON: ${(err as Error).message}`);
  }
  return checkReportBatch(value);
}

/** Checks an already decoded batch; see parseReportBatch. */
export function checkReportBatch(value: unknown): ReportBatch {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new RevpatchError('E_INVALID_ARGUMENT', 'the batch must be a JSON object');
  }
  const { format, reports } = value as { format?: unknown; reports?: unknown };
  if (format !== undefined && format !== REPORT_FORMAT) {
    throw new RevpatchError('E_UNSUPPORTED', `report format ${JSON.stringify(format)} is not supported (this collector reads ${REPORT_FORMAT})`);
  }
  if (Array.isArray(reports) && reports.length > MAX_BATCH_REPORTS) {
    throw new RevpatchError('E_TOO_LARGE', `${reports.length} reports in one batch; at most ${MAX_BATCH_REPORTS}`);
  }
  if (!validateBatch(value)) {
    throw new RevpatchError('E_INVALID_ARGUMENT', `invalid report batch: ${describe(validateBatch.errors)}`);
  }
  const batch = value as ReportBatch;
  for (let i = 0; i < batch.reports.length; i++) {
    if (!isCalendarTime(batch.reports[i].time)) {
      throw new RevpatchError('E_INVALID_ARGUMENT', `invalid report batch: /reports/${i}/time is not a date-time`);
    }
  }
  return batch;
}

const DAYS_IN_MONTH = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

/**
 * The calendar check of a time the schema found shaped like RFC 3339
 * (YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)): month, day (February 29 only in a
 * leap year), hour, minute, second (no leap second) and offset in range.
 * Reads the digits in place: it runs for every report of every batch.
 */
export function isCalendarTime(s: string): boolean {
  const num = (at: number, len: number): number => {
    let n = 0;
    for (let i = at; i < at + len; i++) n = n * 10 + (s.charCodeAt(i) - 48);
    return n;
  };
  const year = num(0, 4);
  const month = num(5, 2);
  const day = num(8, 2);
  if (month < 1 || month > 12 || day < 1 || day > DAYS_IN_MONTH[month - 1]) return false;
  if (month === 2 && day === 29 && !(year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0))) return false;
  if (num(11, 2) > 23 || num(14, 2) > 59 || num(17, 2) > 59) return false;
  const zone = s.charCodeAt(s.length - 1) === 90 || s.charCodeAt(s.length - 1) === 122 ? -1 : s.length - 6;
  return zone < 0 || (num(zone + 1, 2) <= 23 && num(zone + 4, 2) <= 59);
}
