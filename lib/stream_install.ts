/**
 * Streaming install: the patch is applied while it downloads, so the time to
 * `staged` is about max(download, apply) rather than their sum.
 *
 * The download writes the patch file strictly in order into
 * STATE/downloads/. As soon as header, manifest and signature have arrived,
 * the file is opened once (PatchFile, the one descriptor the engine will
 * read: what is verified is what is applied), its signature is checked
 * with the device's trusted key, and the signed id, version and parent must
 * be the ones the TUF metadata announced (a valid patch served under another
 * name is refused: E_REPO_METADATA). Then Device.install starts; the engine's
 * payload reader waits on a native Feed (native/addon/feed.h) for every
 * chunk not yet written, and checks each chunk's digest as always.
 *
 * The last byte is withheld from the engine until the download has checked
 * the whole file's length and TUF hash, so nothing is committed from a file
 * TUF did not vouch for. A failed download fails the feed: the apply stops
 * with its checkpoint kept, the partial file stays for the next attempt
 * (both resume), and the device record is unchanged.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { Device, TRUST_FILE } from './device';
import * as engine from './engine';
import { RevpatchError, toRevpatchError } from './errors';
import { readPublicKey } from './keys';
import { decodeHeader, HEADER_SIZE, PatchFile } from './patch_file';
import type { PatchRecord } from './record';
import type { DownloadResult, PatchDownloadOptions, RepoPatch, StreamInstallOptions } from './repo/types';

export const DOWNLOAD_DIR = 'downloads';

/** What the streaming install needs from the repository client. */
export interface PatchSource {
  download(patch: RepoPatch, dest: string, options?: PatchDownloadOptions): Promise<DownloadResult>;
}

/** Path of a patch's download in the state directory. */
export function downloadPath(stateDir: string, patch: RepoPatch): string {
  return path.join(stateDir, DOWNLOAD_DIR, `${patch.id}-v${patch.version}.rvp`);
}

/**
 * Downloads `patch` from `source` and installs it as it arrives. Resolves
 * with the staged record; on failure the device record is unchanged and the
 * partial download and apply checkpoint are kept for a resume.
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
  let downloadError: RevpatchError | null = null;
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
    const manifest = opened.verify(trust.publicKey);
    if (manifest.id !== patch.id || manifest.version !== patch.version || manifest.parent !== patch.parent) {
      throw new RevpatchError(
        'E_REPO_METADATA',
        `${patch.target} holds patch ${manifest.id} v${manifest.version} (parent ${manifest.parent ?? 'base'}), ` +
          `not ${patch.id} v${patch.version} (parent ${patch.parent ?? 'base'}) as the repository says`,
      );
    }
    let record: PatchRecord;
    try {
      record = await device.installPatchFile(opened, {
        onProgress: options.onApplyProgress,
        now: options.now,
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
    controller.abort();
    feed.fail('the install stopped');
    await downloading.catch(() => undefined);
    const e = toRevpatchError(err);
    if (e.code === 'E_SIGNATURE' || e.code === 'E_FORMAT' || e.code === 'E_REPO_METADATA' || e.code === 'E_LENGTH_MISMATCH') {
      // Bytes that can never become a valid install are not kept for a resume.
      await fs.rm(dest, { force: true }).catch(() => undefined);
      await fs.rm(`${dest}.etag`, { force: true }).catch(() => undefined);
    }
    throw e;
  } finally {
    if (opened) await opened.close().catch(() => undefined);
  }
}
