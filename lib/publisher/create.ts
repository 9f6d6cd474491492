/**
 * The publisher's `create`: turns image `from` into image `to` as a signed
 * patch file.
 *
 * The engine compares the images and writes the payload of operations to a
 * temporary file beside `out`; the manifest is built from what the engine
 * reports and checked against the same schema devices use; header and
 * manifest are signed; then header, manifest, signature and the payload are
 * written to another temporary file that is fsynced and renamed to `out`
 * (lib/engine/atomic.ts). The payload temporary is removed whatever happens, and
 * `out` is either the complete new patch or untouched.
 *
 * Memory: `maxMemory` bounds the peak RSS of the process. A fixed allowance
 * (PROCESS_ALLOWANCE: what `revpatch create` takes as a Node process,
 * with headroom) is kept for the process; the engine gets the rest as its
 * budget (native/engine/generator/generator.h), and refuses with
 * E_INVALID_ARGUMENT, before writing anything, when that is too small. The
 * allowance is a constant, not the process's RSS at the time, because the
 * budget decides the matching and so the payload's bytes: the same inputs
 * and settings give the same patch in any process. An embedding process
 * that holds more than the allowance itself counts the difference.
 */
import { promises as fs } from 'node:fs';
import * as engine from '../engine/engine';
import { RevpatchError, toRevpatchError } from '../engine/errors';
import { copyRange, temporaryPathBeside, writeAll, writeAtomic } from '../engine/atomic';
import { readSecretKey } from '../patch/keys';
import { requiresOf } from '../patch/requires';
import {
  encodeManifest,
  ID_PATTERN,
  isDateTime,
  MANIFEST_FORMAT,
  MANIFEST_FORMAT_REQUIRES,
  MAX_BLOCK_SIZE,
  MAX_CHUNK_SIZE,
  MAX_TITLE_LENGTH,
  MAX_VERSION,
  MIN_BLOCK_SIZE,
  MIN_CHUNK_SIZE,
  OPERATION_TYPES,
  parseManifest,
  SEVERITIES,
  type Manifest,
  type Severity,
} from '../patch/manifest';
import { encodeSignedHead } from '../patch/patch_file';

export const DEFAULT_BLOCK_SIZE = 4096;
export const DEFAULT_CHUNK_SIZE = 1024 * 1024;
export const DEFAULT_MAX_MEMORY = 2 ** 30;
/** Below this no image pair can be generated (Node alone takes about half). */
export const MIN_MAX_MEMORY = 128 * 2 ** 20;
export const MAX_THREADS = 256;
/** The part of maxMemory kept for the process itself (Node, the CLI, headroom). */
export const PROCESS_ALLOWANCE = 96 * 2 ** 20;

export interface CreateOptions {
  /** The image the patch applies to. */
  from: string;
  /** The image the patch produces. */
  to: string;
  /** Publisher secret key file (revpatch.key). */
  keyPath: string;
  id: string;
  /** The patch file to write (replaced atomically if it exists). */
  out: string;
  /** Id of the patch this one stacks on; null or absent: the base. */
  parent?: string | null;
  /** Default: the id. */
  title?: string;
  /** Default 1. */
  version?: number;
  /** Default "high". */
  severity?: Severity;
  /** Default 4096; a power of two in 512..1 MiB. */
  blockSize?: number;
  /** Default 1 MiB; 64 KiB..16 MiB. */
  chunkSize?: number;
  /** Date or RFC 3339 date-time after which devices refuse the patch; default never. */
  expires?: Date | string | null;
  /** Default true. */
  removable?: boolean;
  /** Peak RSS of the process while creating, in bytes; default 1 GiB, at least MIN_MAX_MEMORY. */
  maxMemory?: number;
  /** Threads encoding regions; 0 or absent: one per core. Never changes the patch. */
  threads?: number;
  /** progress(target bytes examined, target size) while the payload is generated. */
  onProgress?: engine.Progress;
}

export interface CreateResult {
  manifest: Manifest;
  path: string;
  /** Size of the patch file in bytes. */
  size: number;
}

interface Checked {
  parent: string | null;
  title: string;
  version: number;
  severity: Severity;
  blockSize: number;
  chunkSize: number;
  expires: string | null;
  removable: boolean;
  maxMemory: number;
  threads: number;
}

function invalid(message: string): never {
  throw new RevpatchError('E_INVALID_ARGUMENT', message);
}

function checkOptions(o: CreateOptions, created: string): Checked {
  if (typeof o !== 'object' || o === null) invalid('createPatch needs an options object');
  for (const name of ['from', 'to', 'keyPath', 'out'] as const) {
    if (typeof o[name] !== 'string' || o[name].length === 0) invalid(`${name} must be a non-empty path`);
  }
  if (typeof o.id !== 'string' || !ID_PATTERN.test(o.id)) {
    invalid(`id ${JSON.stringify(o.id)} must match ${ID_PATTERN.source}`);
  }
  const parent = o.parent ?? null;
  if (parent !== null && (typeof parent !== 'string' || !ID_PATTERN.test(parent))) {
    invalid(`parent ${JSON.stringify(parent)} must match ${ID_PATTERN.source}`);
  }
  if (parent === o.id) invalid(`a patch cannot be its own parent (${o.id})`);
  const title = o.title ?? o.id;
  if (typeof title !== 'string' || title.length > MAX_TITLE_LENGTH) {
    invalid(`title must be a string of at most ${MAX_TITLE_LENGTH} characters`);
  }
  const version = o.version ?? 1;
  if (!Number.isInteger(version) || version < 1 || version > MAX_VERSION) {
    invalid(`version must be an integer in 1..${MAX_VERSION}`);
  }
  const severity = o.severity ?? 'high';
  if (!SEVERITIES.includes(severity)) invalid(`severity must be one of ${SEVERITIES.join(', ')}`);
  const blockSize = o.blockSize ?? DEFAULT_BLOCK_SIZE;
  if (!Number.isInteger(blockSize) || blockSize < MIN_BLOCK_SIZE || blockSize > MAX_BLOCK_SIZE || (blockSize & (blockSize - 1)) !== 0) {
    invalid(`blockSize must be a power of two in ${MIN_BLOCK_SIZE}..${MAX_BLOCK_SIZE}`);
  }
  const chunkSize = o.chunkSize ?? DEFAULT_CHUNK_SIZE;
  if (!Number.isInteger(chunkSize) || chunkSize < MIN_CHUNK_SIZE || chunkSize > MAX_CHUNK_SIZE) {
    invalid(`chunkSize must be an integer in ${MIN_CHUNK_SIZE}..${MAX_CHUNK_SIZE}`);
  }
  let expires: string | null = null;
  if (o.expires instanceof Date) {
    if (Number.isNaN(o.expires.getTime())) invalid('expires is an invalid Date');
    expires = o.expires.toISOString();
  } else if (typeof o.expires === 'string') {
    if (!isDateTime(o.expires)) invalid(`expires ${JSON.stringify(o.expires)} is not an RFC 3339 date-time`);
    expires = new Date(o.expires).toISOString();
  } else if (o.expires !== undefined && o.expires !== null) {
    invalid('expires must be a Date, an RFC 3339 date-time or null');
  }
  if (expires !== null && Date.parse(expires) <= Date.parse(created)) invalid(`expires ${expires} is not in the future`);
  const removable = o.removable ?? true;
  if (typeof removable !== 'boolean') invalid('removable must be a boolean');
  if (o.onProgress !== undefined && typeof o.onProgress !== 'function') invalid('onProgress must be a function');
  const maxMemory = o.maxMemory ?? DEFAULT_MAX_MEMORY;
  if (!Number.isSafeInteger(maxMemory) || maxMemory < MIN_MAX_MEMORY) {
    invalid(`maxMemory must be a whole number of bytes, at least ${MIN_MAX_MEMORY} (128 MiB)`);
  }
  const threads = o.threads ?? 0;
  if (!Number.isInteger(threads) || threads < 0 || threads > MAX_THREADS) invalid(`threads must be an integer in 0..${MAX_THREADS}`);
  return { parent, title, version, severity, blockSize, chunkSize, expires, removable, maxMemory, threads };
}

/** The engine's per-type statistics, exactly the types the manifest lists. */
function operationStats(stats: engine.PayloadStats): Manifest['operations'] {
  const out = {} as Manifest['operations'];
  for (const type of OPERATION_TYPES) {
    const s = stats.byType[type];
    if (!s) throw new RevpatchError('E_UNKNOWN', `the engine reported no statistics for ${type} operations`);
    out[type] = { count: s.count, targetBlocks: s.targetBlocks, dataBytes: s.dataBytes };
  }
  return out;
}

/** Makes a signed patch file at `options.out`. */
export async function createPatch(options: CreateOptions): Promise<CreateResult> {
  const created = new Date().toISOString();
  const c = checkOptions(options, created);
  // Read the key first: a bad key should fail before minutes of diffing.
  const key = await readSecretKey(options.keyPath);
  const payloadPath = temporaryPathBeside(options.out, 'payload');
  try {
    const generated = await engine.generatePayload(
      options.from,
      options.to,
      payloadPath,
      { blockSize: c.blockSize, chunkSize: c.chunkSize, memoryBudget: c.maxMemory - PROCESS_ALLOWANCE, threads: c.threads },
      options.onProgress,
    );
    const requires = requiresOf(generated);
    const manifest: Manifest = {
      format: requires === undefined ? MANIFEST_FORMAT : MANIFEST_FORMAT_REQUIRES,
      ...(requires === undefined ? {} : { requires }),
      id: options.id,
      version: c.version,
      title: c.title,
      severity: c.severity,
      parent: c.parent,
      blockSize: c.blockSize,
      source: { size: generated.sourceSize, digest: generated.sourceDigest },
      target: { size: generated.targetSize, digest: generated.targetDigest },
      operationCount: generated.operationCount,
      changedBlocks: generated.changedBlocks,
      operations: operationStats(generated.stats),
      payload: {
        size: generated.payloadSize,
        digest: generated.payloadDigest,
        chunkSize: c.chunkSize,
        chunks: [...generated.chunkDigests],
      },
      removable: c.removable,
      created,
      expires: c.expires,
      keyId: key.keyId,
    };
    const manifestBytes = encodeManifest(manifest);
    const head = await encodeSignedHead(manifestBytes, generated.payloadSize, key.secretKey);
    await writeAtomic(options.out, async (handle) => {
      await writeAll(handle, head, 0);
      const payload = await fs.open(payloadPath, 'r');
      try {
        const size = (await payload.stat()).size;
        if (size !== generated.payloadSize) {
          throw new RevpatchError('E_CORRUPT', `the generated payload is ${size} bytes, the engine reported ${generated.payloadSize}`);
        }
        const copied = await copyRange(payload, 0, size, handle, head.byteLength);
        if (copied !== size) throw new RevpatchError('E_IO', `payload copy stopped after ${copied} of ${size} bytes`);
      } finally {
        await payload.close();
      }
    });
    return {
      manifest: parseManifest(manifestBytes),
      path: options.out,
      size: head.byteLength + generated.payloadSize,
    };
  } catch (err) {
    throw toRevpatchError(err);
  } finally {
    await fs.rm(payloadPath, { force: true }).catch(() => undefined);
  }
}
