/**
 * The device record: the JSON body of the commit record
 * (native/engine/commit_record.h). It is the one place that says which
 * patches exist, in which state, and which layer file holds each, so a
 * transition is exactly one WriteCommitRecord.
 */
import { RevpatchError } from '../engine/errors';
import { parseStrictJson } from '../patch/strict_json';

export const PATCH_STATES = ['staged', 'trial', 'active', 'pending-removal', 'failed', 'removed'] as const;
export type PatchState = (typeof PATCH_STATES)[number];

export interface PatchRecord {
  id: string;
  version: number;
  parent: string | null;
  title: string;
  severity: string;
  state: PatchState;
  /** File name under layers/; null once the layer is gone. */
  layer: string | null;
  sourceDigest: string;
  targetDigest: string;
  targetSize: number;
  removable: boolean;
  installedAt: string;
  stateChangedAt: string;
  /**
   * Failed attempts: boots that reached the health check (`reached`) with
   * this patch in trial and ended without a confirm.
   */
  bootAttempts: number;
  /**
   * Boots with this patch in trial that ended before reaching the health
   * check: a power cut in early boot, or a patch that crashes the system
   * early. Counted against the larger maxEarlyBoots budget.
   */
  earlyBoots: number;
  /** The current boot's attempt has reached the health check. */
  attemptReached: boolean;
  /** Why the patch is failed or removed, when revpatch decided it. */
  reason?: string;
}

/**
 * What `stat` says of the base volume, recorded at init (lib/device/
 * base_fingerprint.ts): cheap to compare at every boot, so a base changed
 * in place is noticed before a view is booted on it. Times are whole
 * nanoseconds since the epoch, as decimal strings (beyond 2^53).
 */
export interface BaseFingerprint {
  size: number;
  dev: string;
  ino: string;
  mtimeNs: string;
  ctimeNs: string;
}

export interface DeviceConfig {
  /** Absolute path of the base volume; never written. */
  volume: string;
  /**
   * The base's fingerprint when the record last agreed with it (init, or a
   * clean `revpatch verify`). Absent in records written before it existed:
   * the next boot records one.
   */
  baseFingerprint?: BaseFingerprint;
  blockSize: number;
  baseSize: number;
  baseDigest: string;
  trustKeyId: string;
  maxBootAttempts: number;
  /** Boots ending before the health check that a trial patch may survive. */
  maxEarlyBoots: number;
  /** Where `boot` keeps an exported image of the booted view, if anywhere. */
  liveImage: string | null;
  repository: { url: string; root: string } | null;
}

export interface DeviceRecord {
  format: 1;
  device: DeviceConfig;
  /** In install order; the live ones form one chain bottom to top. */
  patches: PatchRecord[];
  /** Anti-rollback floor: highest confirmed version per parent ('base' for none). */
  versionFloor: Record<string, number>;
  boots: number;
}

export const DEFAULT_MAX_BOOT_ATTEMPTS = 3;
export const DEFAULT_MAX_EARLY_BOOTS = 10;

/** States whose layer is part of the view the running system booted with. */
export const BOOTED_STATES: readonly PatchState[] = ['trial', 'active', 'pending-removal'];
/** States whose layer will be part of the view after the next restart. */
export const NEXT_BOOT_STATES: readonly PatchState[] = ['staged', 'trial', 'active'];

export function parentKey(parent: string | null): string {
  return parent ?? 'base';
}

export function encodeRecord(record: DeviceRecord): string {
  return JSON.stringify(record);
}

export function decodeRecord(body: string): DeviceRecord {
  let value: unknown;
  try {
    value = parseStrictJson(body);
  } catch (err) {
    throw new RevpatchError('E_CORRUPT', `commit record body is not valid JSON: ${(err as Error).message}`);
  }
  const record = value as DeviceRecord;
  if (
    !record ||
    typeof record !== 'object' ||
    record.format !== 1 ||
    !record.device ||
    !Array.isArray(record.patches) ||
    typeof record.versionFloor !== 'object'
  ) {
    throw new RevpatchError('E_CORRUPT', 'commit record body has an unknown shape');
  }
  record.device.maxEarlyBoots ??= DEFAULT_MAX_EARLY_BOOTS;
  for (const patch of record.patches) {
    patch.earlyBoots ??= 0;
    patch.attemptReached ??= false;
    if (!PATCH_STATES.includes(patch.state)) {
      throw new RevpatchError('E_CORRUPT', `commit record names an unknown state ${JSON.stringify(patch.state)}`);
    }
  }
  return record;
}
