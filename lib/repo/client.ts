/**
 * The device side of the repository: tuf-js's Updater runs the TUF client
 * workflow (root chain, timestamp, snapshot, targets; rollback, freeze,
 * mix-and-match and threshold checks), over lib/repo/download.ts as its
 * transport, so metadata fetches have the same timeouts, rate floor and
 * length caps as patch downloads.
 *
 * Persistence. tuf-js writes each verified metadata file with a plain
 * writeFileSync, which a crash can leave torn; a torn root.json would leave
 * the device with no trusted root at all. So the Updater's persist step is
 * replaced (per instance) by one that only records the verified bytes, and
 * after the refresh they are written with lib/engine/atomic.ts (temp file, fsync,
 * rename, directory fsync), root first, timestamp last. Deferring is safe:
 * within one refresh tuf-js reads each local file before it would persist
 * that file, and what it verified is in memory. The hook is checked at open,
 * so a tuf-js that renames it fails loudly (E_UNSUPPORTED) rather than
 * silently writing non-atomically.
 *
 * Reference time. tuf-js fixes its reference time when the Updater is made;
 * a fresh Updater per refresh gets `now()` from the injectable clock, which
 * the freeze tests move past an expiry.
 *
 * Files: STATE/tuf/root.json (+ timestamp, snapshot, targets). The user's
 * root (given at `revpatch init --root`) is copied there at first use.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { Updater, type Fetcher } from 'tuf-js';
import { Metadata, MetadataKind, type TargetFile } from '@tufjs/models';
import { writeFileAtomic } from '../engine/atomic';
import { download, fetchBytes, HttpStatusError } from './download';
import { RevpatchError, toRevpatchError, type ErrorCode } from '../engine/errors';
import { repoPatchOf } from './publisher';
import type {
  DownloadResult,
  PatchDownloadOptions,
  RepoPatch,
  RepositoryClientApi,
  RepositoryClientOptions,
  RoleName,
} from './types';

export const TUF_DIR = 'tuf';
const PERSIST_ORDER = ['root', 'timestamp', 'snapshot', 'targets'];
const DEFAULT_MAX_BYTES: Record<RoleName, number> = {
  root: 512 * 1024,
  timestamp: 16 * 1024,
  snapshot: 2 * 1024 * 1024,
  targets: 5 * 1024 * 1024,
};

// tuf-js's error classes: its Updater branches on DownloadHTTPError (a 404
// ends the walk over newer root versions), so the transport must raise it.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const tufErrors = require('tuf-js/dist/error') as {
  DownloadHTTPError: new (message: string, statusCode: number) => Error;
};

interface UpdaterInternals {
  persistMetadata(name: string, bytes: Buffer): void;
  trustedSet: {
    referenceTime: Date;
    targets?: { signed: { targets: Record<string, TargetFile> } };
  };
}

/** The tuf-js Fetcher over lib/repo/download.ts; remembers the last coded error for mapping. */
class TransportFetcher implements Fetcher {
  lastError: RevpatchError | null = null;

  constructor(private readonly options: RepositoryClientOptions['transport']) {}

  async downloadBytes(url: string, maxLength: number): Promise<Buffer> {
    try {
      return await fetchBytes(url, maxLength, this.options ?? {});
    } catch (err) {
      const e = toRevpatchError(err);
      if (e instanceof HttpStatusError) {
        if (e.status !== 404 && e.status !== 403) this.lastError = e;
        throw new tufErrors.DownloadHTTPError(e.message, e.status);
      }
      this.lastError = e;
      throw e;
    }
  }

  async downloadFile<T>(url: string, maxLength: number, handler: (file: string) => Promise<T>): Promise<T> {
    const bytes = await this.downloadBytes(url, maxLength);
    const dir = await fs.mkdtemp(path.join((await import('node:os')).tmpdir(), 'revpatch-tuf-'));
    const file = path.join(dir, 'download');
    try {
      await fs.writeFile(file, bytes);
      return await handler(file);
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  }
}

/** A stable code for what tuf-js threw (it wraps some errors into messages). */
export function mapTufError(err: unknown, transport: RevpatchError | null): RevpatchError {
  if (err instanceof RevpatchError) return err;
  const message = String((err as Error)?.message ?? err);
  if (transport && message.includes(transport.message)) return transport;
  const code: ErrorCode = /is expired/.test(message)
    ? 'E_REPO_EXPIRED'
    : /less than current version|Expected version \d+, got/.test(message)
      ? 'E_REPO_ROLLBACK'
      : /was signed by \d+\/\d+ keys|multiple signatures found for keyid|signature/i.test(message)
        ? 'E_REPO_SIGNATURE'
        : /Max length reached/.test(message)
          ? 'E_TOO_LARGE'
          : transport && /Unable to load|DownloadHTTPError|HTTP/.test(message)
            ? transport.code
            : 'E_REPO_METADATA';
  return new RevpatchError(code, `repository metadata refused: ${message}`, { cause: err });
}

export class RepositoryClient implements RepositoryClientApi {
  private targets: Record<string, TargetFile> | null = null;

  private constructor(
    readonly tufDir: string,
    private readonly options: RepositoryClientOptions,
  ) {}

  /** Prepares STATE/tuf (copying the user's root at first use); nothing is fetched yet. */
  static async open(stateDir: string, options: RepositoryClientOptions): Promise<RepositoryClient> {
    if (typeof (Updater.prototype as unknown as Partial<UpdaterInternals>).persistMetadata !== 'function') {
      throw new RevpatchError('E_UNSUPPORTED', 'this tuf-js has no persistMetadata step to make atomic; pin tuf-js ^5');
    }
    let base: URL;
    try {
      base = new URL(options.url);
    } catch {
      throw new RevpatchError('E_INVALID_ARGUMENT', `${options.url} is not a URL`);
    }
    if (base.protocol !== 'http:' && base.protocol !== 'https:') {
      throw new RevpatchError('E_INVALID_ARGUMENT', `${options.url}: only http and https repositories are supported`);
    }
    const dir = path.join(path.resolve(stateDir), TUF_DIR);
    try {
      await fs.mkdir(dir, { recursive: true });
    } catch (err) {
      throw toRevpatchError(err);
    }
    const trusted = path.join(dir, 'root.json');
    const have = await fs.stat(trusted).then(
      () => true,
      () => false,
    );
    if (!have) {
      let bytes: Buffer;
      try {
        bytes = await fs.readFile(options.rootPath);
      } catch (err) {
        throw toRevpatchError(err);
      }
      if (bytes.byteLength > (options.maxMetadataBytes?.root ?? DEFAULT_MAX_BYTES.root)) {
        throw new RevpatchError('E_TOO_LARGE', `${options.rootPath} is larger than a root metadata file may be`);
      }
      try {
        // The check tuf-js makes of a trusted root: signed by its own threshold of keys.
        const root = Metadata.fromJSON(MetadataKind.Root, JSON.parse(bytes.toString('utf8')));
        root.verifyDelegate('root', root);
      } catch (err) {
        throw mapTufError(err, null);
      }
      await writeFileAtomic(trusted, bytes);
    }
    return new RepositoryClient(dir, options);
  }

  private baseUrl(): string {
    return this.options.url.replace(/\/+$/, '');
  }

  async refresh(): Promise<void> {
    const fetcher = new TransportFetcher(this.options.transport);
    const max = { ...DEFAULT_MAX_BYTES, ...this.options.maxMetadataBytes };
    let updater: Updater;
    try {
      updater = new Updater({
        metadataDir: this.tufDir,
        metadataBaseUrl: `${this.baseUrl()}/metadata`,
        targetBaseUrl: `${this.baseUrl()}/targets`,
        fetcher,
        config: {
          rootMaxLength: max.root,
          timestampMaxLength: max.timestamp,
          snapshotMaxLength: max.snapshot,
          targetsMaxLength: max.targets,
          prefixTargetsWithHash: true,
        },
      });
    } catch (err) {
      throw mapTufError(err, null);
    }
    const internals = updater as unknown as UpdaterInternals;
    internals.trustedSet.referenceTime = (this.options.now ?? (() => new Date()))();
    const pending = new Map<string, Buffer>();
    internals.persistMetadata = (name: string, bytes: Buffer) => {
      pending.set(name, Buffer.from(bytes));
    };
    let failure: unknown = null;
    try {
      await updater.refresh();
    } catch (err) {
      failure = err;
    }
    // What verified is kept even when a later step failed (a newer root or
    // timestamp protects against rollback from then on).
    const names = [...pending.keys()].sort((a, b) => PERSIST_ORDER.indexOf(a) - PERSIST_ORDER.indexOf(b));
    for (const name of names) {
      if (!PERSIST_ORDER.includes(name)) continue;
      await writeFileAtomic(path.join(this.tufDir, `${name}.json`), pending.get(name) as Buffer);
    }
    if (failure) {
      this.targets = null;
      throw mapTufError(failure, fetcher.lastError);
    }
    this.targets = internals.trustedSet.targets?.signed.targets ?? {};
  }

  async patches(): Promise<RepoPatch[]> {
    if (!this.targets) await this.refresh();
    return Object.values(this.targets as Record<string, TargetFile>)
      .map((t) => repoPatchOf(t))
      .sort((a, b) => (a.id === b.id ? a.version - b.version : a.id < b.id ? -1 : 1));
  }

  targetUrl(patch: RepoPatch): string {
    const dir = path.posix.dirname(patch.target);
    return `${this.baseUrl()}/targets/${dir}/${patch.sha256}.${path.posix.basename(patch.target)}`;
  }

  /**
   * Downloads `patch` to `dest` (resuming a partial file there). The length
   * and hash are those of the verified metadata, looked up again by target
   * name, never taken from the argument.
   */
  async download(patch: RepoPatch, dest: string, options: PatchDownloadOptions = {}): Promise<DownloadResult> {
    if (!this.targets) await this.refresh();
    const info = (this.targets as Record<string, TargetFile>)[patch.target];
    if (!info) throw new RevpatchError('E_UNKNOWN_PATCH', `the repository does not offer ${patch.target}`);
    const verified = repoPatchOf(info);
    return download(this.targetUrl(verified), dest, {
      ...this.options.transport,
      ...options,
      expectedLength: verified.length,
      sha256: verified.sha256,
    });
  }
}
