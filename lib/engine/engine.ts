/**
 * The one module that loads the native addon. Everything above talks to the
 * engine through these typed functions; each returns a Promise and runs off
 * the main thread, and each failure is a RevpatchError with the engine's
 * stable code.
 */
import * as path from 'node:path';
import { RevpatchError, toRevpatchError } from './errors';

/** Where a view's bytes come from: the base, its tree file, layers bottom to top. */
export interface ViewSpec {
  base: string;
  baseTree: string;
  layers: string[];
}

export interface ImageDigest {
  /** View digest (hex SHA-256, see native/engine/merkle.h). */
  digest: string;
  size: number;
}

export interface ViewInfo extends ImageDigest {
  blockSize: number;
  layerCount: number;
}

export interface ApplyParams {
  /** An open descriptor of the patch file; read with pread only. */
  fd: number;
  payloadOffset: number;
  payloadSize: number;
  chunkSize: number;
  chunkDigests: string[];
  payloadDigest: string;
  operationCount: number;
  blockSize: number;
  targetSize: number;
  sourceDigest: string;
  targetDigest: string;
  /** Created by the engine; removed again on failure. */
  layerPath: string;
  /**
   * Where the apply saves its progress so that an interrupted install
   * resumes (native/engine/checkpoint.h); none if absent.
   */
  checkpointPath?: string;
  /** Payload bytes between checkpoints (default 8 MiB). */
  checkpointIntervalBytes?: number;
  /**
   * Streaming install: the patch file is still being written; the engine
   * waits on this feed before reading bytes beyond what it was supplied.
   */
  feed?: Feed;
  /**
   * Background install: the engine threads doing the apply run at the
   * lowest CPU and I/O priority (nice 19 and the idle I/O class on Linux,
   * throttled I/O and the background QoS class on macOS;
   * native/engine/priority.h). Default false.
   */
  background?: boolean;
}

/** Tells a running apply how much of a growing patch file is written (native/addon/feed.h). */
export interface Feed {
  /** The first `bytes` bytes of the file are written (never decreases). */
  supply(bytes: number): void;
  /** The file is complete; reads beyond what was supplied fail. */
  end(): void;
  /** The download failed: a waiting apply stops with E_IO. */
  fail(message: string): void;
  readonly available: number;
}

export interface ApplyResult {
  viewDigest: string;
  blocksWritten: number;
  layerBytes: number;
  operations: number;
  /** Continued from a checkpoint (or found the layer already sealed). */
  resumed: boolean;
  resumedFromOperation: number;
  payloadBytesReadThisRun: number;
  blocksWrittenThisRun: number;
  /** With `background`: whether the threads could be lowered (best effort; false elsewhere). */
  lowered: boolean;
}

export interface OperationStats {
  count: number;
  targetBlocks: number;
  dataBytes: number;
}

export type OperationType = 'REPLACE' | 'REPLACE_BROTLI' | 'ZERO' | 'COPY' | 'DIFF';

export interface PayloadStats {
  operations: number;
  byType: Record<OperationType, OperationStats>;
}

export interface GenerateOptions {
  blockSize: number;
  chunkSize: number;
  /** Bytes the engine may use at its peak (default 1 GiB); part of what makes the payload. */
  memoryBudget?: number;
  /** Region encoders; 0 or absent: one per core. Never changes the payload. */
  threads?: number;
}

export interface GenerateResult {
  sourceSize: number;
  targetSize: number;
  sourceDigest: string;
  targetDigest: string;
  payloadSize: number;
  payloadDigest: string;
  chunkDigests: string[];
  operationCount: number;
  changedBlocks: number;
  stats: PayloadStats;
  /** How the payload was made: whole-source matching or streaming windows. */
  wholeSource: boolean;
  /** Highest delta version among the DIFF ops (0: none); 4 needs address-map references. */
  maxDeltaVersion: number;
  regionBytes: number;
  windowBytes: number;
  threads: number;
}

export type ExportMode = 'auto' | 'copy' | 'reflink';

export interface ExportResult {
  reflinked: boolean;
  /**
   * Every base block in the image was read and checked against the base
   * tree. False for a reflink export: the clone shares the base's blocks
   * without reading them (a scrub, `revpatch verify`, checks them).
   */
  baseVerified: boolean;
  bytesWritten: number;
  size: number;
}

/**
 * A block that failed its hash check: `layer` is the index of the layer it
 * came from (0 = bottom of the view's layers), -1 for the base.
 */
export interface CorruptRead {
  block: number;
  layer: number;
  detail: string;
}

export interface ScrubResult {
  /** Blocks checked: the view's block count. */
  blocks: number;
  bad: number;
  baseBad: number;
  layerBad: number;
  /** The first bad blocks, by block number (at most maxListed). */
  badBlocks: CorruptRead[];
}

/**
 * The blocks behind an E_CORRUPT from readView or exportView (the first
 * few), or [] for any other error.
 */
export function corruptReadsOf(err: unknown): CorruptRead[] {
  const reads = (err as { corruptReads?: unknown } | null)?.corruptReads;
  if (!Array.isArray(reads)) {
    const cause = (err as { cause?: unknown } | null)?.cause;
    return cause && cause !== err ? corruptReadsOf(cause) : [];
  }
  return reads as CorruptRead[];
}

export interface LayerInfo {
  blockSize: number;
  targetSize: number;
  viewDigest: string;
  blocks: number;
}

export interface CommitRecord {
  generation: number;
  body: string;
}

export type Progress = (done: number, total: number) => void;

/** See native/engine/fault_injection.h and docs/durability.md. */
export type FaultMode = 'none' | 'eio' | 'enospc' | 'short-write' | 'power-loss' | 'power-loss-torn';

export interface FaultPlan {
  mode: FaultMode;
  /** 1-based number of the engine I/O call that fails; ignored for 'none'. */
  failAt: number;
  /** Seeds short-write lengths and torn sectors. */
  seed?: number;
}

export interface FaultStatus {
  /** Engine I/O calls since the plan was set. */
  calls: number;
  triggered: boolean;
  mode: FaultMode;
  failAt: number;
}

/** A view opened once for many reads (openView). */
export interface OpenView {
  /** As readView, on the view opened once; concurrent reads run in parallel. */
  read(offset: number, length: number): Promise<Buffer>;
  /** Reads in flight finish; later reads fail with E_INVALID_ARGUMENT. */
  close(): void;
}

interface ViewHandle {
  open(view: ViewSpec, verify: boolean): Promise<void>;
  read(offset: number, length: number): Promise<Buffer>;
  close(): void;
}

interface Addon {
  Feed: new () => Feed;
  ViewHandle: new () => ViewHandle;
  hashImage(file: string, blockSize: number, treePath: string): Promise<ImageDigest>;
  viewInfo(view: ViewSpec): Promise<ViewInfo>;
  readView(view: ViewSpec, offset: number, length: number, verify?: boolean): Promise<Buffer>;
  scrubView(view: ViewSpec, maxListed: number, progress?: Progress): Promise<ScrubResult>;
  applyPatch(view: ViewSpec, params: ApplyParams, progress?: Progress): Promise<ApplyResult>;
  scanPayload(params: ApplyParams): Promise<PayloadStats>;
  generatePayload(
    source: string,
    target: string,
    payloadPath: string,
    options: GenerateOptions,
    progress?: Progress,
  ): Promise<GenerateResult>;
  exportView(view: ViewSpec, out: string, mode: ExportMode, progress?: Progress): Promise<ExportResult>;
  layerInfo(file: string): Promise<LayerInfo>;
  verifyLayer(file: string): Promise<LayerInfo>;
  isSealedLayer(file: string): Promise<boolean>;
  readCommitRecord(file: string): Promise<CommitRecord>;
  writeCommitRecord(file: string, expectedGeneration: number, body: string): Promise<number>;
  syncFile(file: string): Promise<void>;
  syncDirectory(dir: string): Promise<void>;
  freeSpace(dir: string): Promise<number>;
  removeFile(file: string): Promise<void>;
  setFaultPlan(plan: FaultPlan): void;
  clearFaultPlan(): void;
  faultStatus(): FaultStatus;
  recoverFromPowerLoss(): Promise<void>;
}

let addon: Addon | undefined;

/** The platforms revpatch publishes prebuilt binaries for (prebuilds/). */
export const PREBUILT_PLATFORMS = ['linux-x64', 'linux-arm64', 'darwin-x64', 'darwin-arm64'];

interface NodeGypBuild {
  resolve(dir: string): string;
}

/**
 * Finds the addon as node-gyp-build does: a source build in build/Release
 * (or build/Debug) first, then prebuilds/<platform>-<arch>/ for this Node-API
 * version. Failing that, says exactly what to do.
 */
function load(): Addon {
  if (addon) return addon;
  const root = path.resolve(__dirname, '..', '..');
  const target = `${process.platform}-${process.arch}`;
  let file: string | undefined;
  let failure: string;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const nodeGypBuild = require('node-gyp-build') as NodeGypBuild;
    file = nodeGypBuild.resolve(root);
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    addon = require(file) as Addon;
    return addon;
  } catch (err) {
    failure = (err as Error).message.trim().split('\n')[0];
  }
  const lines = [`the revpatch native addon could not be loaded for ${target} (Node ${process.version}).`];
  if (file === undefined) {
    lines.push(`  ${failure}`);
    lines.push(
      PREBUILT_PLATFORMS.includes(target)
        ? `  A prebuilt binary for ${target} ships with the package: reinstall it (npm install revpatch), or build it from source as below.`
        : `  No prebuilt binary exists for ${target} (prebuilt: ${PREBUILT_PLATFORMS.join(', ')}); build it from source.`,
    );
  } else {
    lines.push(`  ${file}: ${failure}`);
    lines.push(
      file.includes(`${path.sep}build${path.sep}`)
        ? `  That is a source build: rebuild it as below, or delete ${path.join(root, 'build')} to use the prebuilt binary.`
        : '  That prebuilt binary does not fit this system (for example an older C library); build from source as below.',
    );
  }
  lines.push(
    'To build from source you need python3, make and a C++17 compiler; then run in your project:',
    '  npm rebuild revpatch --build-from-source        (in a checkout of revpatch: npm run build)',
    '  (npm 11 runs the install scripts of approved packages only: npm install-scripts approve revpatch)',
    'On Debian/Ubuntu: apt-get install python3 make g++ libbrotli-dev; on macOS: xcode-select --install && brew install brotli.',
  );
  throw new RevpatchError('E_ADDON', lines.join('\n'));
}

function callSync<T>(fn: (a: Addon) => T): T {
  const a = load();
  try {
    return fn(a);
  } catch (err) {
    throw toRevpatchError(err);
  }
}

async function call<T>(fn: (a: Addon) => Promise<T>): Promise<T> {
  const a = load();
  try {
    return await fn(a);
  } catch (err) {
    throw toRevpatchError(err);
  }
}

export const hashImage = (file: string, blockSize: number): Promise<ImageDigest> =>
  call((a) => a.hashImage(file, blockSize, ''));
/** Hashes the base once and keeps its whole Merkle tree in `treePath`. */
export const buildBaseTree = (file: string, blockSize: number, treePath: string): Promise<ImageDigest> =>
  call((a) => a.hashImage(file, blockSize, treePath));
export const viewInfo = (view: ViewSpec): Promise<ViewInfo> => call((a) => a.viewInfo(view));
/**
 * Bytes of the view, every block checked against its leaf hash: a block
 * that differs fails the read with E_CORRUPT (see corruptReadsOf), never
 * returns. `verify: false` is for benchmarks and tools that check the bytes
 * another way.
 */
export const readView = (
  view: ViewSpec,
  offset: number,
  length: number,
  options: { verify?: boolean } = {},
): Promise<Buffer> => call((a) => a.readView(view, offset, length, options.verify ?? true));
/**
 * Opens a view for many reads (native/addon/view_handle.h): the layers'
 * indexes are read once and the base tree's checked groups stay cached, as
 * for a long-lived reader. Reads verify unless `verify: false`.
 */
export async function openView(view: ViewSpec, options: { verify?: boolean } = {}): Promise<OpenView> {
  const handle = callSync((a) => new a.ViewHandle());
  await call(() => handle.open(view, options.verify ?? true));
  return {
    read: (offset, length) => call(() => handle.read(offset, length)),
    close: () => callSync(() => handle.close()),
  };
}
/**
 * The scrub: every block of the view read and checked, without stopping at
 * a bad one; progress is in blocks. Lists the first `maxListed` bad blocks.
 */
export const scrubView = (view: ViewSpec, maxListed = 100, progress?: Progress): Promise<ScrubResult> =>
  call((a) => a.scrubView(view, maxListed, progress));
export const applyPatch = (view: ViewSpec, params: ApplyParams, progress?: Progress): Promise<ApplyResult> =>
  call((a) => a.applyPatch(view, params, progress));
/** A new feed for a streaming apply (ApplyParams.feed). */
export const createFeed = (): Feed => callSync((a) => new a.Feed());
export const scanPayload = (params: ApplyParams): Promise<PayloadStats> => call((a) => a.scanPayload(params));
export const generatePayload = (
  source: string,
  target: string,
  payloadPath: string,
  options: GenerateOptions,
  progress?: Progress,
): Promise<GenerateResult> => call((a) => a.generatePayload(source, target, payloadPath, options, progress));
export const exportView = (
  view: ViewSpec,
  out: string,
  mode: ExportMode = 'auto',
  progress?: Progress,
): Promise<ExportResult> => call((a) => a.exportView(view, out, mode, progress));
export const layerInfo = (file: string): Promise<LayerInfo> => call((a) => a.layerInfo(file));
export const verifyLayer = (file: string): Promise<LayerInfo> => call((a) => a.verifyLayer(file));
export const isSealedLayer = (file: string): Promise<boolean> => call((a) => a.isSealedLayer(file));
export const readCommitRecord = (file: string): Promise<CommitRecord> => call((a) => a.readCommitRecord(file));
export const writeCommitRecord = (file: string, expectedGeneration: number, body: string): Promise<number> =>
  call((a) => a.writeCommitRecord(file, expectedGeneration, body));
/** fsync (F_FULLFSYNC on macOS) of a file by path. */
export const syncFile = (file: string): Promise<void> => call((a) => a.syncFile(file));
export const syncDirectory = (dir: string): Promise<void> => call((a) => a.syncDirectory(dir));
export const freeSpace = (dir: string): Promise<number> => call((a) => a.freeSpace(dir));
/** Unlinks `file` (a missing one is fine) and fsyncs its directory. */
export const removeFile = (file: string): Promise<void> => call((a) => a.removeFile(file));

/**
 * Fault injection for crash-safety tests (docs/durability.md): arms a
 * process-wide plan that fails engine I/O call `failAt` or cuts the power
 * there. Mode 'none' only counts calls. Not for production use.
 */
export const setFaultPlan = (plan: FaultPlan): void => callSync((a) => a.setFaultPlan(plan));
/** Disarms the plan; files stay as they are. */
export const clearFaultPlan = (): void => callSync((a) => a.clearFaultPlan());
export const faultStatus = (): FaultStatus => callSync((a) => a.faultStatus());
/** Rolls files back to what the simulated power cut may leave, then disarms. */
export const recoverFromPowerLoss = (): Promise<void> => call((a) => a.recoverFromPowerLoss());
