/**
 * The repository API (DESIGN.md, "Trust"): what the publisher writes, what a
 * device reads back through TUF, and how patch files travel. The agent and
 * policy code build on these types only; lib/repo/publisher.ts,
 * lib/repo/client.ts, lib/repo/download.ts and lib/device/stream_install.ts implement them.
 *
 * Layout of a repository directory (served as is by any static HTTP server):
 *
 *   DIR/metadata/1.root.json, 2.root.json, ...  every root version (rotation)
 *   DIR/metadata/root.json                      the newest root
 *   DIR/metadata/timestamp.json                 the only unversioned role
 *   DIR/metadata/N.snapshot.json, N.targets.json  consistent snapshots
 *   DIR/targets/patches/<sha256>.<id>-v<version>.rvp  patch files (hash-prefixed)
 *   DIR/keys/<role>.key                         role secret keys, mode 0600
 *   DIR/keys/publisher.pub                      the key patches must be signed with
 *   DIR/repo.json                               expiry periods, key files per role
 *   DIR/lock                                    while a change runs: its publisher's pid
 *
 * A device is configured with the repository's base URL; metadata is read
 * from URL/metadata/ and targets from URL/targets/.
 */

/** The four top-level TUF roles. */
export type RoleName = 'root' | 'targets' | 'snapshot' | 'timestamp';
export const ROLE_NAMES: readonly RoleName[] = ['root', 'targets', 'snapshot', 'timestamp'];

/** Expiry period of each role's metadata, in seconds. */
export type ExpiryPeriods = Record<RoleName, number>;

export const DEFAULT_EXPIRY: ExpiryPeriods = {
  root: 365 * 86400,
  targets: 90 * 86400,
  snapshot: 7 * 86400,
  timestamp: 86400,
};

/**
 * What a patch target's `custom` field carries, under the key `revpatch`
 * (signed by the targets role, so it is as trustworthy as the hashes).
 */
export interface PatchCustom {
  id: string;
  parent: string | null;
  version: number;
  /** Percentage of devices (0..100) that should take the patch; see policy. */
  rollout: number;
  recalled: boolean;
  /**
   * Halted (the fleet controller or an operator stopped the rollout): no
   * device that does not hold the patch takes it; devices that hold it keep
   * it. Metadata written before the flag existed reads as false.
   */
  halted: boolean;
  severity: string;
  title: string;
  /** Length of the patch file in bytes (also the TUF target length). */
  size: number;
  /** The payload digest from the signed manifest (hex SHA-256). */
  payloadDigest: string;
  /** Source (parent view) digest the patch applies to, from the manifest. */
  sourceDigest: string;
  /** When it was published or last changed (ISO 8601). */
  publishedAt: string;
}

/** A patch the repository offers, as a device sees it after a TUF refresh. */
export interface RepoPatch extends PatchCustom {
  /** TUF target path, `patches/<id>-v<version>.rvp`. */
  target: string;
  /** Length TUF says the file has; never more bytes are accepted. */
  length: number;
  /** Hex SHA-256 of the whole file, from the targets metadata. */
  sha256: string;
}

// ---------------------------------------------------------------- publisher

export interface RepoInitOptions {
  /** The publisher key (revpatch.key or revpatch.pub): patches must be signed with it. */
  publisherKey: string;
  /** Expiry periods in seconds; defaults DEFAULT_EXPIRY. */
  expiry?: Partial<ExpiryPeriods>;
  /**
   * Existing secret key files (revpatch.key format) for some roles; the
   * others get a fresh key each in DIR/keys/<role>.key (mode 0600). The same
   * file may be given for several roles.
   */
  roleKeys?: Partial<Record<RoleName, string>>;
  /** Injectable clock (expiry computations). */
  now?: () => Date;
  /**
   * How long this and the repository's later changes wait for another
   * process's change to finish before failing with E_BUSY (default 0).
   */
  lockWaitMs?: number;
}

export interface PublishOptions {
  /** 0..100, default 100. */
  rollout?: number;
  now?: () => Date;
}

/**
 * A change to a published patch's signed flags (Repository.update): what is
 * given changes, the rest stays. A recalled patch cannot change any more.
 */
export interface PatchUpdate {
  /** 0..100. */
  rollout?: number;
  halted?: boolean;
  /** Only true: a recall is not undone. */
  recalled?: boolean;
}

export interface PublishResult {
  patch: RepoPatch;
  /** Versions of the metadata written. */
  targetsVersion: number;
  snapshotVersion: number;
  timestampVersion: number;
}

export interface RotateKeyOptions {
  role: RoleName;
  /** Use this secret key file instead of generating one. */
  newKey?: string;
  now?: () => Date;
}

export interface RotateKeyResult {
  role: RoleName;
  oldKeyId: string;
  newKeyId: string;
  rootVersion: number;
}

// ----------------------------------------------------------------- download

/** Progress of one transfer: bytes held so far (including a resumed prefix). */
export interface DownloadProgress {
  received: number;
  total: number;
  /** Bytes per second over the last rate window. */
  rate: number;
  attempt: number;
}

export interface DownloadOptions {
  /** Exact length the file must have; more is refused while streaming (E_TOO_LARGE). */
  expectedLength: number;
  /** Hex SHA-256 the whole file must have (E_HASH_MISMATCH). */
  sha256?: string;
  /** Attempts after the first (default 5). */
  retries?: number;
  /** First backoff delay in ms (default 500), doubled per attempt, full jitter. */
  backoffMs?: number;
  /** Cap of one backoff delay in ms (default 30000). */
  maxBackoffMs?: number;
  /** Time to connect and receive the response headers (default 10000 ms). */
  connectTimeoutMs?: number;
  /** Longest silence while reading the body (default 15000 ms). */
  readTimeoutMs?: number;
  /**
   * Slow-retrieval defence: below this many bytes per second averaged over
   * `rateWindowMs` the attempt is abandoned with E_SLOW_RETRIEVAL (default
   * 1024; 0 disables).
   */
  minBytesPerSecond?: number;
  /** Window of the minimum-rate check (default 10000 ms). */
  rateWindowMs?: number;
  /** Bandwidth cap in bytes per second (default none). */
  maxBytesPerSecond?: number;
  /** Continue a partial file at the destination (default true). */
  resume?: boolean;
  signal?: AbortSignal;
  onProgress?: (progress: DownloadProgress) => void;
  /**
   * Called with how many leading bytes of the destination are written (and
   * so readable through any descriptor of the file); the streaming install
   * feeds these to the engine. Bytes are written in order, never rewritten.
   */
  onWritten?: (bytes: number) => void;
  /** fsync the partial file every this many bytes (default 8 MiB), so a resume after a crash keeps them. */
  syncEveryBytes?: number;
  /** User-Agent header. */
  userAgent?: string;
}

export interface DownloadResult {
  path: string;
  bytes: number;
  /** Bytes that were already on disk from an earlier attempt or run. */
  resumedFrom: number;
  attempts: number;
}

// ------------------------------------------------------------------- client

/** Transport options of the client, for metadata and targets alike. */
export type TransportOptions = Partial<
  Pick<
    DownloadOptions,
    | 'retries'
    | 'backoffMs'
    | 'maxBackoffMs'
    | 'connectTimeoutMs'
    | 'readTimeoutMs'
    | 'minBytesPerSecond'
    | 'rateWindowMs'
    | 'maxBytesPerSecond'
    | 'userAgent'
  >
>;

export interface RepositoryClientOptions {
  /** Base URL of the repository (metadata under /metadata/, targets under /targets/). */
  url: string;
  /**
   * The trusted root.json the user gave at `revpatch init`; copied into
   * STATE/tuf/root.json at first use, after which the state's copy (updated
   * by rotations) is what is trusted.
   */
  rootPath: string;
  /** Reference time for expiry checks (freeze attacks); default the wall clock. */
  now?: () => Date;
  transport?: TransportOptions;
  /** Upper bounds of metadata sizes in bytes (endless data); defaults of tuf-js. */
  maxMetadataBytes?: Partial<Record<RoleName, number>>;
}

export interface PatchDownloadOptions extends Omit<DownloadOptions, 'expectedLength' | 'sha256'> {}

/**
 * The client (lib/repo/client.ts):
 *
 *   const client = await RepositoryClient.open(stateDir, { url, rootPath });
 *   await client.refresh();
 *   for (const p of await client.patches()) ...
 *   await client.download(p, file, { onProgress });
 *
 * Errors carry stable codes (lib/engine/errors.ts): E_REPO_EXPIRED (freeze),
 * E_REPO_ROLLBACK, E_REPO_SIGNATURE (unknown key, below threshold),
 * E_REPO_METADATA (bad or mixed metadata), E_TOO_LARGE (endless data),
 * E_SLOW_RETRIEVAL, E_NETWORK, E_HASH_MISMATCH, E_LENGTH_MISMATCH,
 * E_UNSAFE_TARGET (path traversal).
 */
export interface RepositoryClientApi {
  /** Runs the TUF client workflow; the verified metadata is persisted atomically. */
  refresh(): Promise<void>;
  /** Every patch target of the verified targets metadata (refreshes first if never refreshed). */
  patches(): Promise<RepoPatch[]>;
  /** Downloads a patch target to `dest` (resuming a partial file there), length and hash enforced. */
  download(patch: RepoPatch, dest: string, options?: PatchDownloadOptions): Promise<DownloadResult>;
  /** The URL a patch target is fetched from (consistent snapshot: hash-prefixed). */
  targetUrl(patch: RepoPatch): string;
}

// -------------------------------------------------------- streaming install

export interface StreamInstallOptions extends PatchDownloadOptions {
  /** Engine progress (payload bytes applied). */
  onApplyProgress?: (done: number, total: number) => void;
  now?: Date;
  /** Apply at the lowest CPU and I/O priority (Device InstallOptions.background). */
  background?: boolean;
}
