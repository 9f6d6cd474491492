/**
 * The patch manifest: what a patch is, what it applies to, what it makes and
 * how its payload is cut into hashed chunks. It is signed together with the
 * file header (lib/patch/patch_file.ts), and carries the payload digest and every
 * chunk digest, so the signature covers the whole patch.
 *
 * A manifest is accepted only if it parses with the strict JSON parser (no
 * duplicate keys), matches the JSON schema below exactly (no unknown
 * properties anywhere), and passes the cross-field checks the schema cannot
 * express (`checkConsistency`). Every refusal is E_MANIFEST.
 */
import type { ErrorObject } from 'ajv';
import type { OperationStats, OperationType } from '../engine/engine';
import { RevpatchError } from '../engine/errors';
import { validate as matchesSchema } from './manifest_validator';
import { parseStrictJson } from './strict_json';

export const MANIFEST_FORMAT = 1;
/**
 * The format of a manifest with `requires`: written only when the payload
 * needs more of the device than format 1 patches ever did (delta versions
 * above 3, zstd recipes, deflate streams); a patch that needs nothing new
 * stays format 1, byte for byte.
 */
export const MANIFEST_FORMAT_REQUIRES = 2;
/** Delta versions every format 1 device decodes; `requires` names only later ones. */
export const BASE_DELTA_VERSION = 3;
export const ZSTD_VERSION_PATTERN = /^[1-9][0-9]?\.[0-9]{1,2}\.[0-9]{1,2}$/;
/** Largest manifest, in bytes; the header's manifest length is bounded by it too. */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
/** Largest source or target image: 64 TiB. */
export const MAX_IMAGE_SIZE = 2 ** 46;
export const MIN_BLOCK_SIZE = 512;
export const MAX_BLOCK_SIZE = 1024 * 1024;
export const MIN_CHUNK_SIZE = 64 * 1024;
export const MAX_CHUNK_SIZE = 16 * 1024 * 1024;
export const MAX_VERSION = 2 ** 31 - 1;
export const MAX_TITLE_LENGTH = 200;
export const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
export const KEY_ID_PATTERN = /^[0-9a-f]{16}$/;
export const DIGEST_PATTERN = /^[0-9a-f]{64}$/;
export const SEVERITIES = ['low', 'moderate', 'high', 'critical'] as const;
export const OPERATION_TYPES: readonly OperationType[] = ['REPLACE', 'REPLACE_BROTLI', 'ZERO', 'COPY', 'DIFF'];

export type Severity = (typeof SEVERITIES)[number];

export interface ImageRef {
  /** Bytes. */
  size: number;
  /** View digest, lowercase hex (native/engine/merkle.h). */
  digest: string;
}

export interface PayloadRef {
  size: number;
  /** SHA-256 of the whole payload, lowercase hex. */
  digest: string;
  /** Every chunk but the last is this long. */
  chunkSize: number;
  /** SHA-256 of each chunk, lowercase hex; ceil(size / chunkSize) of them. */
  chunks: string[];
}

/**
 * What a device needs to apply the payload, beyond format 1 (checked before
 * any write: lib/patch/requires.ts). Every field is optional; at least one
 * is present.
 */
export interface Requires {
  /** DIFF delta versions above 3 the payload uses, sorted, e.g. [5]. */
  deltaVersions?: number[];
  /** The libzstd version its zstd recipes name ("1.5.4"): only that version rebuilds them. */
  zstd?: string;
  /** It expands or rebuilds deflate streams. */
  deflate?: true;
}

export interface Manifest {
  format: 1 | 2;
  /** Format 2 only (and there required). */
  requires?: Requires;
  id: string;
  version: number;
  title: string;
  severity: Severity;
  /** The id of the patch beneath this one, or null when it applies to the base. */
  parent: string | null;
  blockSize: number;
  source: ImageRef;
  target: ImageRef;
  /** Operations in the payload; the engine refuses a payload with another count. */
  operationCount: number;
  /** Target blocks the layer will hold. */
  changedBlocks: number;
  /** Per-type summary written by `create`, informational (see checkConsistency). */
  operations: Record<OperationType, OperationStats>;
  payload: PayloadRef;
  removable: boolean;
  /** RFC 3339 date-time. */
  created: string;
  /** RFC 3339 date-time, or null for never. */
  expires: string | null;
  /** The signing key's id (lib/patch/keys.ts). */
  keyId: string;
}

const ID_SOURCE = ID_PATTERN.source;
const DIGEST_SOURCE = DIGEST_PATTERN.source;
const DATE_TIME = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?([Zz]|[+-](\d{2}):(\d{2}))$/;
const DATE_TIME_SOURCE = DATE_TIME.source;
const COUNT = { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER } as const;

const imageSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['size', 'digest'],
  properties: {
    size: { type: 'integer', minimum: 0, maximum: MAX_IMAGE_SIZE },
    digest: { type: 'string', pattern: DIGEST_SOURCE },
  },
} as const;

const operationSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['count', 'targetBlocks', 'dataBytes'],
  properties: { count: COUNT, targetBlocks: COUNT, dataBytes: COUNT },
} as const;

/**
 * The JSON schema of format 1 (draft-07, as Ajv reads it). Not typed with
 * Ajv's JSONSchemaType, which cannot express a nullable string with a pattern.
 */
export const manifestSchema = {
  type: 'object',
  additionalProperties: false,
  required: [
    'format', 'id', 'version', 'title', 'severity', 'parent', 'blockSize', 'source', 'target',
    'operationCount', 'changedBlocks', 'operations', 'payload', 'removable', 'created', 'expires', 'keyId',
  ],
  properties: {
    format: { type: 'integer', enum: [MANIFEST_FORMAT, MANIFEST_FORMAT_REQUIRES] },
    requires: {
      type: 'object',
      additionalProperties: false,
      minProperties: 1,
      properties: {
        deltaVersions: {
          type: 'array',
          minItems: 1,
          maxItems: 16,
          uniqueItems: true,
          items: { type: 'integer', minimum: BASE_DELTA_VERSION + 1, maximum: 255 },
        },
        zstd: { type: 'string', pattern: ZSTD_VERSION_PATTERN.source },
        deflate: { type: 'boolean', const: true },
      },
    },
    id: { type: 'string', pattern: ID_SOURCE },
    version: { type: 'integer', minimum: 1, maximum: MAX_VERSION },
    title: { type: 'string', maxLength: MAX_TITLE_LENGTH },
    severity: { type: 'string', enum: [...SEVERITIES] },
    parent: { type: 'string', pattern: ID_SOURCE, nullable: true },
    blockSize: { type: 'integer', enum: powersOfTwo(MIN_BLOCK_SIZE, MAX_BLOCK_SIZE) },
    source: imageSchema,
    target: imageSchema,
    operationCount: COUNT,
    changedBlocks: COUNT,
    operations: {
      type: 'object',
      additionalProperties: false,
      required: [...OPERATION_TYPES],
      properties: {
        REPLACE: operationSchema,
        REPLACE_BROTLI: operationSchema,
        ZERO: operationSchema,
        COPY: operationSchema,
        DIFF: operationSchema,
      },
    },
    payload: {
      type: 'object',
      additionalProperties: false,
      required: ['size', 'digest', 'chunkSize', 'chunks'],
      properties: {
        size: COUNT,
        digest: { type: 'string', pattern: DIGEST_SOURCE },
        chunkSize: { type: 'integer', minimum: MIN_CHUNK_SIZE, maximum: MAX_CHUNK_SIZE },
        chunks: { type: 'array', items: { type: 'string', pattern: DIGEST_SOURCE } },
      },
    },
    removable: { type: 'boolean' },
    created: { type: 'string', pattern: DATE_TIME_SOURCE },
    expires: { type: 'string', pattern: DATE_TIME_SOURCE, nullable: true },
    keyId: { type: 'string', pattern: KEY_ID_PATTERN.source },
  },
} as const;

function powersOfTwo(from: number, to: number): number[] {
  const out: number[] = [];
  for (let n = from; n <= to; n *= 2) out.push(n);
  return out;
}


/** RFC 3339 date-time with a calendar check (leap seconds refused). */
export function isDateTime(value: string): boolean {
  const m = DATE_TIME.exec(value);
  if (!m) return false;
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number) as [number, number, number, number, number, number];
  if (month < 1 || month > 12 || day < 1 || hour > 23 || minute > 59 || second > 59) return false;
  const daysInMonth = new Date(Date.UTC(year, month, 0)).getUTCDate();
  if (day > daysInMonth) return false;
  if (m[9] !== undefined && (Number(m[9]) > 23 || Number(m[10]) > 59)) return false;
  return !Number.isNaN(Date.parse(value));
}

function describe(errors: ErrorObject[] | null | undefined): string {
  const e = errors?.[0];
  if (!e) return 'does not match the schema';
  const where = e.instancePath === '' ? 'the manifest' : e.instancePath;
  const extra = (e.params as { additionalProperty?: string }).additionalProperty;
  return extra !== undefined ? `${where} has the unknown property ${JSON.stringify(extra)}` : `${where} ${e.message}`;
}

/**
 * Checks a decoded value against the schema and the cross-field rules and
 * returns it typed, or throws E_MANIFEST naming the first problem.
 */
export function validateManifest(value: unknown): Manifest {
  // The schema compiled ahead of time (lib/patch/manifest_validator.ts).
  const validate = matchesSchema as ((data: unknown) => boolean) & { errors?: ErrorObject[] | null };
  if (!validate(value)) {
    throw new RevpatchError('E_MANIFEST', `invalid manifest: ${describe(validate.errors)}`);
  }
  const manifest = value as Manifest;
  checkConsistency(manifest);
  return manifest;
}

/** The rules that tie fields together, which a JSON schema cannot state. */
function checkConsistency(m: Manifest): void {
  const fail = (message: string): never => {
    throw new RevpatchError('E_MANIFEST', `invalid manifest: ${message}`);
  };
  if (m.parent === m.id) fail(`parent is the patch itself (${m.id})`);
  if ((m.format === MANIFEST_FORMAT_REQUIRES) !== (m.requires !== undefined)) {
    fail(m.requires === undefined ? 'format 2 without requires' : `requires in a format ${m.format} manifest`);
  }
  const versions = m.requires?.deltaVersions;
  if (versions && versions.some((v, i) => i > 0 && v <= versions[i - 1]!)) {
    fail('requires.deltaVersions is not sorted');
  }
  // The schema checks the RFC 3339 shape; the calendar is checked here.
  if (!isDateTime(m.created)) fail(`created (${m.created}) is not a date-time`);
  if (m.expires !== null && !isDateTime(m.expires)) fail(`expires (${m.expires}) is not a date-time`);

  const expectedChunks = Math.ceil(m.payload.size / m.payload.chunkSize);
  if (m.payload.chunks.length !== expectedChunks) {
    fail(
      `payload of ${m.payload.size} bytes in chunks of ${m.payload.chunkSize} needs ${expectedChunks} chunk digests, ` +
        `the manifest lists ${m.payload.chunks.length}`,
    );
  }

  // `operations` is the publisher's summary, shown by `inspect`; the engine
  // enforces `operationCount` against the payload itself, so the summary is
  // only bounded here, not required to add up.
  if (m.operationCount > 0 && m.payload.size === 0) fail(`${m.operationCount} operations in an empty payload`);

  const targetBlocks = Math.ceil(m.target.size / m.blockSize);
  if (m.changedBlocks > targetBlocks) {
    fail(`changedBlocks ${m.changedBlocks} exceeds the ${targetBlocks} blocks of the target`);
  }
  for (const type of OPERATION_TYPES) {
    if (m.operations[type].targetBlocks > targetBlocks) {
      fail(`operations.${type}.targetBlocks exceeds the ${targetBlocks} blocks of the target`);
    }
  }

  if (m.expires !== null && Date.parse(m.expires) <= Date.parse(m.created)) {
    fail(`expires (${m.expires}) is not after created (${m.created})`);
  }
}

/** Strict-parses manifest bytes and validates them (E_MANIFEST on any problem). */
export function parseManifest(bytes: Uint8Array): Manifest {
  if (bytes.byteLength === 0) throw new RevpatchError('E_MANIFEST', 'the manifest is empty');
  return validateManifest(parseStrictJson(bytes, { maxBytes: MAX_MANIFEST_BYTES }));
}

function orderedRequires(r: Requires): Requires {
  return {
    ...(r.deltaVersions === undefined ? {} : { deltaVersions: [...r.deltaVersions] }),
    ...(r.zstd === undefined ? {} : { zstd: r.zstd }),
    ...(r.deflate === undefined ? {} : { deflate: r.deflate }),
  };
}

/**
 * Validates and serializes a manifest as compact UTF-8 JSON with its keys in
 * the schema's order, so the same manifest always yields the same bytes.
 */
export function encodeManifest(manifest: Manifest): Buffer {
  const m = validateManifest(manifest);
  const operations = {} as Record<OperationType, OperationStats>;
  for (const type of OPERATION_TYPES) {
    const s = m.operations[type];
    operations[type] = { count: s.count, targetBlocks: s.targetBlocks, dataBytes: s.dataBytes };
  }
  const ordered: Manifest = {
    format: m.format,
    ...(m.requires === undefined ? {} : { requires: orderedRequires(m.requires) }),
    id: m.id,
    version: m.version,
    title: m.title,
    severity: m.severity,
    parent: m.parent,
    blockSize: m.blockSize,
    source: { size: m.source.size, digest: m.source.digest },
    target: { size: m.target.size, digest: m.target.digest },
    operationCount: m.operationCount,
    changedBlocks: m.changedBlocks,
    operations,
    payload: {
      size: m.payload.size,
      digest: m.payload.digest,
      chunkSize: m.payload.chunkSize,
      chunks: [...m.payload.chunks],
    },
    removable: m.removable,
    created: m.created,
    expires: m.expires,
    keyId: m.keyId,
  };
  const bytes = Buffer.from(JSON.stringify(ordered), 'utf8');
  if (bytes.byteLength > MAX_MANIFEST_BYTES) {
    throw new RevpatchError('E_TOO_LARGE', `the manifest is ${bytes.byteLength} bytes, more than ${MAX_MANIFEST_BYTES}`);
  }
  return bytes;
}
