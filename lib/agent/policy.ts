/**
 * The agent's policy (DESIGN.md, Lifecycle; docs/agent.md): whether to take
 * a patch the repository offers, whether there is room for it, and when the
 * restart that activates or removes patches may happen.
 *
 * Every rule is a pure function of its inputs — settings, the device's
 * facts, the clock passed in — and returns a Decision, never a boolean, so
 * the agent can log and audit why it did or did not act, and a host can show
 * the user the reason. Nothing here reads the disk, the network or the time.
 */
import * as crypto from 'node:crypto';
import { RevpatchError } from '../engine/errors';

/** What a rule decided and why; `code` is stable, `reason` is for people. */
export interface Decision<A extends string = string> {
  action: A;
  /** A stable, machine-readable reason (kebab-case). */
  code: string;
  reason: string;
}

function decide<A extends string>(action: A, code: string, reason: string): Decision<A> {
  return { action, code, reason };
}

// ---------------------------------------------------------------------------
// Auto-install: the "Security Responses & System Files" switch.

export interface AutoInstallSettings {
  /** On: patches are downloaded and staged in the background. Off: the user is told and installs by hand. */
  autoInstall: boolean;
}

/** On: install. Off: only tell the host a patch is available (`revpatch install ID` by hand). */
export function autoInstallDecision(settings: AutoInstallSettings): Decision<'install' | 'notify'> {
  return settings.autoInstall
    ? decide('install', 'auto-install-on', 'automatic installation is on')
    : decide('notify', 'auto-install-off', 'automatic installation is off: the patch is offered to the user');
}

// ---------------------------------------------------------------------------
// Maintenance window: local-time ranges in which a restart may happen.

/** "HH:MM" to "HH:MM", local time. An end at or before the start crosses midnight; equal ends mean all day. */
export interface TimeRange {
  start: string;
  end: string;
}

function minutesOf(hhmm: string): number {
  const m = /^([01]\d|2[0-3]):([0-5]\d)$/.exec(hhmm);
  if (!m) throw new RevpatchError('E_INVALID_ARGUMENT', `time ${JSON.stringify(hhmm)} is not HH:MM (00:00 to 23:59)`);
  return Number(m[1]) * 60 + Number(m[2]);
}

/** Parses "22:00-05:30" (the CLI's and config file's spelling). */
export function parseTimeRange(text: string): TimeRange {
  const m = /^\s*(\d\d:\d\d)\s*-\s*(\d\d:\d\d)\s*$/.exec(text);
  if (!m) throw new RevpatchError('E_INVALID_ARGUMENT', `maintenance window ${JSON.stringify(text)} is not HH:MM-HH:MM`);
  const range = { start: m[1], end: m[2] };
  minutesOf(range.start);
  minutesOf(range.end);
  return range;
}

function inRange(minute: number, range: TimeRange): boolean {
  const start = minutesOf(range.start);
  const end = minutesOf(range.end);
  if (start === end) return true;
  return start < end ? minute >= start && minute < end : minute >= start || minute < end;
}

/**
 * Whether `now` (in the host's local time zone) lies in one of `windows`.
 * No windows at all means no restriction. `nextStart` is the next local
 * time a window opens, when outside all of them.
 */
export function maintenanceWindowDecision(
  now: Date,
  windows: readonly TimeRange[],
): Decision<'inside' | 'outside'> & { nextStart: Date | null } {
  if (windows.length === 0) {
    return { ...decide('inside', 'no-window', 'no maintenance window is set: any time will do'), nextStart: null };
  }
  const minute = now.getHours() * 60 + now.getMinutes();
  const open = windows.find((w) => inRange(minute, w));
  if (open) {
    return { ...decide('inside', 'in-window', `inside the maintenance window ${open.start}-${open.end}`), nextStart: null };
  }
  let best: Date | null = null;
  for (const w of windows) {
    const start = minutesOf(w.start);
    const candidate = new Date(now.getFullYear(), now.getMonth(), now.getDate(), Math.floor(start / 60), start % 60, 0, 0);
    if (candidate.getTime() <= now.getTime()) candidate.setDate(candidate.getDate() + 1);
    if (!best || candidate < best) best = candidate;
  }
  const list = windows.map((w) => `${w.start}-${w.end}`).join(', ');
  return { ...decide('outside', 'outside-window', `outside the maintenance window (${list})`), nextStart: best };
}

// ---------------------------------------------------------------------------
// User deferral: the user may put a restart off, but not for ever.

export interface DeferralLimit {
  /** Times the user may defer one pending restart; undefined: no count limit. */
  maxCount?: number;
  /** How long after the restart was first asked for deferring stops; undefined: no time limit. */
  maxDurationMs?: number;
}

export interface DeferralState {
  /** Times the user has deferred the pending restart. */
  count: number;
  /** When the agent first asked for this restart (ISO), or null if it has not yet. */
  firstRequestedAt: string | null;
}

/** May the user defer the pending restart once more? */
export function deferralDecision(
  state: DeferralState,
  limit: DeferralLimit,
  now: Date,
): Decision<'may-defer' | 'exhausted'> {
  if (limit.maxCount !== undefined && state.count >= limit.maxCount) {
    return decide('exhausted', 'deferral-count', `the restart was deferred ${state.count} times, the limit is ${limit.maxCount}`);
  }
  if (limit.maxDurationMs !== undefined && state.firstRequestedAt !== null) {
    const since = now.getTime() - Date.parse(state.firstRequestedAt);
    if (since >= limit.maxDurationMs) {
      return decide(
        'exhausted',
        'deferral-time',
        `the restart has been pending ${Math.floor(since / 60000)} min, the limit is ${Math.floor(limit.maxDurationMs / 60000)} min`,
      );
    }
  }
  const left =
    limit.maxCount !== undefined ? `${limit.maxCount - state.count} deferrals left` : 'no deferral count limit';
  return decide('may-defer', 'deferral-allowed', `the user may defer (${left})`);
}

export interface RestartInput {
  /** The device has staged patches or pending removals. */
  restartPending: boolean;
  now: Date;
  windows: readonly TimeRange[];
  deferral: DeferralState;
  limit: DeferralLimit;
  /** Restarts wait for mains power. */
  onBattery: boolean;
  /** Restarts wait until the device is idle. */
  idle: boolean;
}

/**
 * When to ask the host for the restart that activates staged patches or
 * drops removed ones: inside a maintenance window while idle and on mains
 * power, or at once (forced) once the user has used up the deferrals.
 */
export function restartDecision(input: RestartInput): Decision<'none' | 'wait' | 'request' | 'force'> & {
  nextStart: Date | null;
} {
  if (!input.restartPending) return { ...decide('none', 'no-restart-needed', 'nothing waits for a restart'), nextStart: null };
  const deferral = deferralDecision(input.deferral, input.limit, input.now);
  if (deferral.action === 'exhausted') {
    return { ...decide('force', deferral.code, `${deferral.reason}: restart now`), nextStart: null };
  }
  const window = maintenanceWindowDecision(input.now, input.windows);
  if (window.action === 'outside') return { ...decide('wait', window.code, window.reason), nextStart: window.nextStart };
  if (input.onBattery) return { ...decide('wait', 'on-battery', 'the device runs on battery'), nextStart: null };
  if (!input.idle) return { ...decide('wait', 'not-idle', 'the device is in use'), nextStart: null };
  return { ...decide('request', window.code, `${window.reason}, idle, on mains power`), nextStart: null };
}

// ---------------------------------------------------------------------------
// Compatibility: a patch applies on top of exactly the view it was made for.

export interface InstalledPatch {
  id: string;
  state: string;
  version: number;
  parent: string | null;
  reason?: string;
}

export interface OfferedPatch {
  id: string;
  parent: string | null;
  version: number;
  /** The view digest the patch was made for (signed metadata); checked when the device's is given. */
  sourceDigest?: string;
}

/** States whose layer is in the next-boot view, bottom to top (record.ts NEXT_BOOT_STATES). */
const NEXT_BOOT = new Set(['staged', 'trial', 'active']);

/**
 * `installed` is the device's record in install order. The patch fits when
 * its parent is the top of the next-boot stack (null: the stack is empty).
 * A patch the device has ever held — installed, removed by the user,
 * recalled, failed — is never taken again. With `nextBootDigest` (the
 * device's next-boot view digest) the patch's source digest must equal it
 * too, so a patch for the same parent id built from other bytes is skipped
 * before a byte is downloaded.
 */
export function compatibilityDecision(
  offered: OfferedPatch,
  installed: readonly InstalledPatch[],
  nextBootDigest?: string,
): Decision<'install' | 'skip' | 'wait'> {
  const seen = installed.filter((p) => p.id === offered.id);
  const live = seen.find((p) => p.state !== 'removed' && p.state !== 'failed');
  if (live) return decide('skip', 'installed', `${offered.id} is already installed (${live.state})`);
  if (seen.length > 0) {
    const last = seen[seen.length - 1];
    return decide('skip', 'held-before', `${offered.id} was ${last.state}${last.reason ? ` (${last.reason})` : ''}; it is not taken again`);
  }
  const stack = installed.filter((p) => NEXT_BOOT.has(p.state));
  const top = stack.length > 0 ? stack[stack.length - 1] : null;
  if (offered.parent === (top ? top.id : null)) {
    if (nextBootDigest !== undefined && offered.sourceDigest !== undefined && offered.sourceDigest !== nextBootDigest) {
      return decide(
        'skip',
        'view-mismatch',
        `${offered.id} was made for view ${offered.sourceDigest.slice(0, 16)}…, the device's next boot is ${nextBootDigest.slice(0, 16)}…`,
      );
    }
    return decide('install', 'parent-matches', `${offered.id} applies on top of ${top ? top.id : 'the base'}`);
  }
  if (offered.parent !== null && stack.some((p) => p.id === offered.parent)) {
    return decide('skip', 'parent-not-top', `${offered.id} is for ${offered.parent}, but ${top!.id} is installed on top of it`);
  }
  if (offered.parent === null) {
    return decide('skip', 'base-not-top', `${offered.id} is for the base, but ${top!.id} is installed on top of it`);
  }
  return decide('wait', 'parent-missing', `${offered.id} needs ${offered.parent}, which is not installed`);
}

// ---------------------------------------------------------------------------
// Halt: the vendor stopped the rollout (the signed `halted` target flag).

/**
 * A halted patch is taken by no device that does not hold it yet; a device
 * that holds it (staged, trial, active) keeps it, as in Google Play's halt.
 * Unlike a recall, a halt removes nothing. The agent asks before the
 * rollout rule, for patches the device does not hold.
 */
export function haltDecision(
  offered: { id: string; version: number; halted: boolean },
  installed: readonly InstalledPatch[],
): Decision<'continue' | 'skip' | 'keep'> {
  if (!offered.halted) return decide('continue', 'not-halted', `${offered.id} is not halted`);
  const held = installed.find((p) => p.id === offered.id && p.state !== 'removed' && p.state !== 'failed');
  if (held) return decide('keep', 'halted-kept', `${offered.id} is halted; the device holds it (${held.state}) and keeps it`);
  return decide('skip', 'halted', `${offered.id} v${offered.version} is halted by the vendor: not taken`);
}

// ---------------------------------------------------------------------------
// Staged rollout.

export const ROLLOUT_BUCKETS = 10000;

/**
 * The device's bucket for a patch, 0..9999: the first 8 bytes of
 * SHA-256(deviceId || 0x00 || patchId), big-endian, modulo 10000. Stable for
 * a device and a patch, independent across patches (a device is not always
 * first), and uniform enough that modulo bias (2^64 mod 10000) is nil.
 */
export function rolloutBucket(deviceId: string, patchId: string): number {
  const digest = crypto
    .createHash('sha256')
    .update(Buffer.from(deviceId, 'utf8'))
    .update(Buffer.from([0]))
    .update(Buffer.from(patchId, 'utf8'))
    .digest();
  return Number(digest.readBigUInt64BE(0) % BigInt(ROLLOUT_BUCKETS));
}

/**
 * A patch at rollout percentage P (0 to 100, steps of 0.01) reaches the
 * devices whose bucket is below P × 100; raising P only adds devices.
 */
export function rolloutDecision(deviceId: string, patchId: string, percent: number): Decision<'install' | 'skip'> {
  if (typeof percent !== 'number' || !Number.isFinite(percent) || percent < 0 || percent > 100) {
    throw new RevpatchError('E_INVALID_ARGUMENT', `rollout percentage ${String(percent)} is not from 0 to 100`);
  }
  const threshold = Math.round(percent * 100);
  const bucket = rolloutBucket(deviceId, patchId);
  return bucket < threshold
    ? decide('install', 'in-rollout', `bucket ${bucket} is inside the ${percent}% rollout (< ${threshold})`)
    : decide('skip', 'outside-rollout', `bucket ${bucket} is outside the ${percent}% rollout (< ${threshold})`);
}

// ---------------------------------------------------------------------------
// Free disk space, reserved before the download starts.

export interface SpaceInput {
  /** Free bytes on the state directory's filesystem. */
  freeBytes: number;
  /** Bytes other work in flight has already reserved. */
  reservedBytes: number;
  /** The patch file's length (from the repository's signed metadata). */
  patchBytes: number;
  /** The layer the install will write (see estimateLayerBytes). */
  layerBytes: number;
  /** Kept free for the rest of the system. */
  marginBytes: number;
}

export const DEFAULT_MARGIN_BYTES = 64 * 1024 * 1024;

/**
 * The smallest non-zero download cap in bytes per second: below it the
 * download's slow-retrieval floor (lib/repo/download.ts) would end every
 * download.
 */
export const MIN_RATE_CAP = 1024;

/** A download cap the agent can keep: 0 (unlimited) or a whole number ≥ MIN_RATE_CAP. */
export function isRateCap(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && (value === 0 || value >= MIN_RATE_CAP);
}

/** `value` if isRateCap, else E_INVALID_ARGUMENT naming `what`. */
export function checkRateCap(value: unknown, what = 'the download rate cap'): number {
  if (!isRateCap(value)) {
    throw new RevpatchError(
      'E_INVALID_ARGUMENT',
      `${what} must be 0 (unlimited) or a whole number of bytes per second from ${MIN_RATE_CAP}, not ${String(value)}`,
    );
  }
  return value;
}

/**
 * A layer holds each changed block plus index and hash (48 bytes), and a
 * footer; without the block count, a patch's payload can expand to at most
 * what its target blocks hold, so the patch size × 4 is taken as a bound
 * that compressed payloads rarely pass, and the install's own check
 * (E_NO_SPACE before writing) backs it.
 */
export function estimateLayerBytes(info: { patchBytes: number; changedBlocks?: number; blockSize?: number }): number {
  if (info.changedBlocks !== undefined && info.blockSize !== undefined) {
    return info.changedBlocks * (info.blockSize + 48) + 1024 * 1024;
  }
  return info.patchBytes * 4 + 1024 * 1024;
}

/** Reserve = patch + layer + margin; refuse when it does not fit. */
export function spaceDecision(input: SpaceInput): Decision<'reserve' | 'skip'> & { reserveBytes: number } {
  for (const [name, v] of Object.entries(input)) {
    if (!Number.isSafeInteger(v) || v < 0) {
      throw new RevpatchError('E_INVALID_ARGUMENT', `${name} ${String(v)} is not a byte count`);
    }
  }
  const reserveBytes = input.patchBytes + input.layerBytes + input.marginBytes;
  const available = input.freeBytes - input.reservedBytes;
  if (available < reserveBytes) {
    return {
      ...decide(
        'skip',
        'no-space',
        `needs ${reserveBytes} bytes (patch ${input.patchBytes} + layer ${input.layerBytes} + margin ${input.marginBytes}), ${Math.max(available, 0)} are available`,
      ),
      reserveBytes,
    };
  }
  return { ...decide('reserve', 'space-reserved', `reserved ${reserveBytes} bytes of ${available} available`), reserveBytes };
}

// ---------------------------------------------------------------------------
// Recall.

/**
 * The vendor recalled `patch`: a booted patch (trial or active) is marked
 * pending-removal and the device needs a restart; a staged one is dropped at
 * once (the system never ran it); anything else needs nothing.
 */
export function recallDecision(patch: InstalledPatch): Decision<'remove-at-restart' | 'remove-now' | 'none'> {
  switch (patch.state) {
    case 'trial':
    case 'active':
      return decide('remove-at-restart', 'recalled', `${patch.id} was recalled: it is removed at the next restart`);
    case 'staged':
      return decide('remove-now', 'recalled', `${patch.id} was recalled before it ran: removed now`);
    default:
      return decide('none', 'recall-nothing-to-do', `${patch.id} is ${patch.state}: nothing to remove`);
  }
}
