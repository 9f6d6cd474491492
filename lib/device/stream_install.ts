/**
 * Streaming install: the patch is applied while it downloads, so the time to
 * `staged` is about max(download, apply) rather than their sum.
 *
 * The download writes the patch file strictly in order into
 * STATE/downloads/. As soon as header, manifest and signature have arrived,
 * the file is opened once (PatchFile, the one descriptor the engine will
 * read: what is verified is what is applied), its signature is checked
 * with the device's trusted key, and the signed manifest must be the patch
 * the TUF metadata announced: id, version, parent, payload and source
 * digests (a valid patch served under another name is refused:
 * E_REPO_METADATA). Then Device.installPatchFile starts; the engine's
 * payload reader waits on a native Feed (native/addon/feed.h) for every
 * chunk not yet written, and checks each chunk's digest as always.
 *
 * The last byte is withheld from the engine until the download has checked
 * the whole file's length and TUF hash, so nothing is committed from a file
 * TUF did not vouch for. A failed download fails the feed: the apply stops
 * and, as every failed apply does, deletes its unsealed layer
 * (native/engine/apply.h), so the device is unchanged. The partial file
 * stays for the next attempt, which resumes it, when a retry can get past
 * the failure (the network, a slow server, an abort, a busy device, a full
 * disk); bytes that can never become this install are deleted. When the
 * download and a check here both fail, the download's verdict on the whole
 * file (hash, excess length) is the one reported.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { Device, TRUST_FILE } from './device';
import * as engine from '../engine/engine';
import { RevpatchError, toRevpatchError, type ErrorCode } from '../engine/errors';
import { readPublicKey } from '../patch/keys';
import type { Manifest } from '../patch/manifest';
import { decodeHeader, HEADER_SIZE, PatchFile } from '../patch/patch_file';
import type { PatchRecord } from './record';
import type { DownloadResult, PatchDownloadOptions, RepoPatch, StreamInstallOptions } from '../repo/types';

export const DOWNLOAD_DIR = 'downloads';

/** What the streaming install needs from the repository client. */
export interface PatchSource {
  download(patch: RepoPatch, dest: string, options?: PatchDownloadOptions): Promise<DownloadResult>;
}

/** Failures a later attempt can get past; after any other the partial download is deleted. */
const RESUMABLE: ReadonlySet<ErrorCode> = new Set<ErrorCode>(['E_NETWORK', 'E_SLOW_RETRIEVAL', 'E_ABORTED', 'E_BUSY', 'E_NO_SPACE']);
/** Download failures after which lib/repo/download.ts has discarded the file's bytes. */
const DISCARDED: ReadonlySet<ErrorCode> = new Set<ErrorCode>(['E_HASH_MISMATCH', 'E_TOO_LARGE']);

/** Path of a patch's download in the state directory. */
export function downloadPath(stateDir: string, patch: RepoPatch): string {
  return path.join(stateDir, DOWNLOAD_DIR, `${patch.id}-v${patch.version}.rvp`);
}

/**
 * Deletes what STATE/downloads/ holds for patches other than `wanted`: the
 * partial downloads of patches that were recalled, superseded, withdrawn
 * from the repository or installed since, which no later check resumes.
 * A kept partial download is only worth its space while a check may still
 * finish it. Returns the names deleted. A folder that does not exist holds
 * nothing to delete.
 */
export async function pruneDownloads(stateDir: string, wanted: readonly RepoPatch[]): Promise<string[]> {
  const dir = path.join(stateDir, DOWNLOAD_DIR);
  const keep = new Set<string>();
  for (const patch of wanted) {
    const name = path.basename(downloadPath(stateDir, patch));
    keep.add(name);
    keep.add(`${name}.etag`);
  }
  let names: string[];
  try {
    names = await fs.readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw toRevpatchError(err);
  }
  const deleted: string[] = [];
  for (const name of names.sort()) {
    if (keep.has(name)) continue;
    try {
      await fs.rm(path.join(dir, name), { force: true, recursive: true });
    } catch (err) {
      throw toRevpatchError(err);
    }
    deleted.push(name);
  }
  return deleted;
}

/**
 * The signed manifest must say what the signed repository metadata says
 * (id, version, parent, payload and source digests); otherwise the target
 * is another patch than the one announced (wrong software), and it is
 * refused with E_REPO_METADATA before a byte is applied.
 */
export function checkManifestMatches(manifest: Manifest, patch: RepoPatch): void {
  const wrong: string[] = [];
  if (manifest.id !== patch.id) wrong.push(`id ${manifest.id}`);
  if (manifest.version !== patch.version) wrong.push(`version ${manifest.version}`);
  if (manifest.parent !== patch.parent) wrong.push(`parent ${manifest.parent ?? 'base'}`);
  if (patch.payloadDigest && manifest.payload.digest !== patch.payloadDigest) wrong.push('another payload');
  if (patch.sourceDigest && manifest.source.digest !== patch.sourceDigest) wrong.push('another source view');
  if (wrong.length > 0) {
    throw new RevpatchError(
      'E_REPO_METADATA',
      `target ${patch.target} holds ${wrong.join(', ')}, not ${patch.id} v${patch.version} for ${patch.parent ?? 'the base'}`,
    );
  }
}

/**
 * Downloads `patch` from `source` and installs it as it arrives. Resolves
 * with the staged record; on failure the device is unchanged, and the
 * partial download is kept for a resume when a retry can get past the
 * failure.
 */
export async function installFromDownload(
  device: Device,
  source: PatchSource,
  patch: RepoPatch,
  options: StreamInstallOptions = {},
): Promise<PatchRecord> {
  const dest = downloadPath(device.stateDir, patch);
  try {
    await fs.mkdir(path.dirname(dest), { recursive: true });
  } catch (err) {
    throw toRevpatchError(err);
  }
  const feed = engine.createFeed();
  const length = patch.length;
  let written = 0;
  let wake: (() => void) | null = null;
  const controller = new AbortController();
  const signal = options.signal ? AbortSignal.any([options.signal, controller.signal]) : controller.signal;
  // Assigned in a callback, which TypeScript's narrowing does not see.
  let downloadError = null as RevpatchError | null;
  const downloading = source
    .download(patch, dest, {
      ...options,
      signal,
      onWritten: (bytes) => {
        written = bytes;
        // The last byte waits for the TUF hash check of the whole file.
        feed.supply(Math.min(bytes, length - 1));
        options.onWritten?.(bytes);
        wake?.();
      },
    })
    .then(
      (result) => {
        feed.supply(length);
        feed.end();
        wake?.();
        return result;
      },
      (err) => {
        downloadError = toRevpatchError(err);
        feed.fail(downloadError.message);
        wake?.();
        throw downloadError;
      },
    );
  downloading.catch(() => undefined);
  const waitFor = async (bytes: number) => {
    while (written < bytes && !downloadError) {
      await new Promise<void>((resolve) => {
        wake = resolve;
      });
      wake = null;
    }
    if (written < bytes) throw downloadError ?? new RevpatchError('E_LENGTH_MISMATCH', 'the download ended early');
  };

  let opened: PatchFile | null = null;
  try {
    // Only the fixed-size, bounds-checked header is read before the signature check.
    await waitFor(Math.min(HEADER_SIZE, length));
    const head = Buffer.alloc(HEADER_SIZE);
    const handle = await fs.open(dest, 'r');
    try {
      await handle.read(head, 0, HEADER_SIZE, 0);
    } finally {
      await handle.close();
    }
    const header = decodeHeader(head);
    if (header.payloadOffset + header.payloadLength !== length) {
      throw new RevpatchError(
        'E_LENGTH_MISMATCH',
        `${patch.target}: the patch header says ${header.payloadOffset + header.payloadLength} bytes, the repository ${length}`,
      );
    }
    await waitFor(header.payloadOffset);
    opened = await PatchFile.openGrowing(dest, length);
    const trust = await readPublicKey(path.join(device.stateDir, TRUST_FILE));
    checkManifestMatches(opened.verify(trust.publicKey), patch);
    let record: PatchRecord;
    try {
      record = await device.installPatchFile(opened, {
        onProgress: options.onApplyProgress,
        now: options.now,
        background: options.background,
        applyExtras: { feed },
      });
    } catch (err) {
      // If the download fails too, its failure is the cause: the engine only
      // saw the feed fail, or the file being fetched again under it (a retry
      // after a hash mismatch). Let it settle before choosing.
      const code = toRevpatchError(err).code;
      if (code === 'E_IO' || code === 'E_CORRUPT' || code === 'E_HASH_MISMATCH') {
        await downloading.catch(() => undefined);
      }
      if (downloadError) throw downloadError;
      throw err;
    }
    await downloading;
    await opened.close();
    opened = null;
    await engine.removeFile(dest);
    return record;
  } catch (err) {
    // Once every byte is written only the download's hash check is left: it
    // is let finish, as an abort would hide its verdict.
    if (written < length) controller.abort();
    feed.fail('the install stopped');
    await downloading.catch(() => undefined);
    // A download that found the file is not the one TUF signed has deleted
    // its bytes, perhaps while they were being checked here: its verdict
    // comes first.
    const e = downloadError && DISCARDED.has(downloadError.code) ? downloadError : toRevpatchError(err);
    if (!RESUMABLE.has(e.code)) {
      await fs.rm(dest, { force: true }).catch(() => undefined);
      await fs.rm(`${dest}.etag`, { force: true }).catch(() => undefined);
    }
    throw e;
  } finally {
    if (opened) await opened.close().catch(() => undefined);
  }
}
