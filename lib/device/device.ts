/**
 * The device lifecycle (DESIGN.md, Lifecycle on a device):
 *
 *   install -> staged --boot--> trial --confirm--> active
 *   trial not confirmed within maxBootAttempts boots --boot--> failed
 *   remove -> pending-removal --boot--> removed  (staged: removed at once)
 *
 * Every transition is one write of the commit record; files are created
 * before it (a layer is sealed before the record names it) and deleted after
 * it (a layer is unlinked only once no record names it), so a crash between
 * leaves at worst an unreferenced file, which the next mutating call
 * collects. The base volume is only ever opened for reading.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import * as engine from '../engine/engine';
import { RevpatchError, toRevpatchError } from '../engine/errors';
import { StateLock, LOCK_FILE } from '../engine/lock';
import { assertNotServed } from './serve_lease';
import { readPublicKey } from '../patch/keys';
import { PatchFile } from '../patch/patch_file';
import { checkRequires } from '../patch/requires';
import { copyFileAtomic } from '../engine/atomic';
import { AuditTrail } from './audit';
import { fingerprintChanges, takeFingerprint } from './base_fingerprint';
import {
  DEFAULT_MAX_BOOT_ATTEMPTS,
  DEFAULT_MAX_EARLY_BOOTS,
  BOOTED_STATES,
  BaseFingerprint,
  NEXT_BOOT_STATES,
  DeviceConfig,
  DeviceRecord,
  PatchRecord,
  PatchState,
  decodeRecord,
  encodeRecord,
  parentKey,
} from './record';

export const COMMIT_FILE = 'commit.rec';
export const BASE_TREE_FILE = 'base.tree';
export const TRUST_FILE = 'trust.pub';
export const LAYER_DIR = 'layers';
/** Beside an unsealed layer: how far its install got (native/engine/checkpoint.h). */
export const CHECKPOINT_SUFFIX = '.checkpoint';

export interface InitOptions {
  volume: string;
  trust: string;
  blockSize?: number;
  maxBootAttempts?: number;
  maxEarlyBoots?: number;
  liveImage?: string | null;
  repository?: { url: string; root: string } | null;
  onProgress?: engine.Progress;
}

export interface InstallOptions {
  onProgress?: engine.Progress;
  /** Check free space before writing (default true); tests turn it off to hit ENOSPC mid-write. */
  spaceCheck?: boolean;
  /** Told how the apply went: whether it resumed, and what this run wrote. */
  onApplied?: (result: engine.ApplyResult) => void;
  /** Injectable clock for expiry checks. */
  now?: Date;
  /**
   * Install in the background: the engine threads applying the patch lower
   * their CPU and I/O priority (engine.ApplyParams.background). The agent's
   * default is on, the CLI's off.
   */
  background?: boolean;
}

export interface BootReport {
  activated: string[];
  removed: string[];
  failed: string[];
  trial: string[];
  collected: string[];
  viewDigest: string;
  liveImage: string | null;
}

export interface DeviceStatus {
  stateDir: string;
  volume: string;
  blockSize: number;
  baseDigest: string;
  /**
   * What differs in the base volume's fingerprint since init or the last
   * clean verify ([] if nothing): when not empty the digests below are the
   * record's, not checked against the base's bytes, and boot refuses with
   * E_BASE_CHANGED until `revpatch verify` passes.
   */
  baseChanges: string[];
  bootedDigest: string;
  nextBootDigest: string;
  restartRequired: boolean;
  boots: number;
  generation: number;
  patches: PatchRecord[];
}

/** Where a corrupt read was found, as the audit trail names it. */
export type CorruptReadSource = 'read' | 'export' | 'verify';

/** A bad block as the device reports it: the layer by file name, null for the base. */
export interface BadBlock {
  block: number;
  layer: string | null;
  detail: string;
}

export interface VerifyReport {
  /** Every block checked matched its leaf hash. */
  ok: boolean;
  /** Blocks checked (the booted view's, plus the base's when it had changed). */
  blocks: number;
  bad: number;
  baseBad: number;
  layerBad: number;
  /** The first bad blocks (at most maxListed). */
  badBlocks: BadBlock[];
  viewDigest: string;
  /** The base's fingerprint differed from the record's ([] if not). */
  baseChanges: string[];
  /** The current fingerprint was recorded, so boot proceeds again. */
  fingerprintRecorded: boolean;
}

function now(): string {
  return new Date().toISOString();
}

function setState(patch: PatchRecord, state: PatchState, reason?: string): void {
  patch.state = state;
  patch.stateChangedAt = now();
  if (reason !== undefined) patch.reason = reason;
}

/** Live patches whose layers form the given view, bottom to top. */
function stack(record: DeviceRecord, states: readonly PatchState[]): PatchRecord[] {
  return record.patches.filter((p) => states.includes(p.state) && p.layer !== null);
}

export interface OpenOptions {
  /**
   * How long a change waits for another process that holds the state
   * directory's lock before failing with E_BUSY (default 0: at once).
   */
  lockWaitMs?: number;
}

export class Device {
  private constructor(
    readonly stateDir: string,
    private record: DeviceRecord,
    private generation: number,
    private readonly lockWaitMs = 0,
  ) {}

  get config(): DeviceConfig {
    return this.record.device;
  }

  get patches(): readonly PatchRecord[] {
    return this.record.patches;
  }

  private file(name: string): string {
    return path.join(this.stateDir, name);
  }

  private layerPath(name: string): string {
    return path.join(this.stateDir, LAYER_DIR, name);
  }

  view(states: readonly PatchState[]): engine.ViewSpec {
    return {
      base: this.config.volume,
      baseTree: this.file(BASE_TREE_FILE),
      layers: stack(this.record, states).map((p) => this.layerPath(p.layer as string)),
    };
  }

  /** The view the running system booted with. */
  bootedView(): engine.ViewSpec {
    return this.view(BOOTED_STATES);
  }

  /** The view the system will see after the next restart. */
  nextBootView(): engine.ViewSpec {
    return this.view(NEXT_BOOT_STATES);
  }

  /** Sets a device up: hashes the base once and writes the first record. */
  static async init(stateDir: string, options: InitOptions & OpenOptions): Promise<Device> {
    const dir = path.resolve(stateDir);
    const volume = path.resolve(options.volume);
    const blockSize = options.blockSize ?? 4096;
    const maxBootAttempts = options.maxBootAttempts ?? DEFAULT_MAX_BOOT_ATTEMPTS;
    const maxEarlyBoots = options.maxEarlyBoots ?? DEFAULT_MAX_EARLY_BOOTS;
    for (const [name, value] of [['max boot attempts', maxBootAttempts], ['max early boots', maxEarlyBoots]] as const) {
      if (!Number.isInteger(value) || value < 1 || value > 100) {
        throw new RevpatchError('E_INVALID_ARGUMENT', `${name} must be an integer from 1 to 100`);
      }
    }
    const stat = await fs.stat(volume).catch((err) => {
      throw toRevpatchError(err);
    });
    if (!stat.isFile() && !stat.isBlockDevice()) {
      throw new RevpatchError('E_INVALID_ARGUMENT', `${volume} is not a file or block device`);
    }
    const trust = await readPublicKey(options.trust);
    await fs.mkdir(dir, { recursive: true });
    if (await exists(path.join(dir, COMMIT_FILE))) {
      throw new RevpatchError('E_EXISTS', `${dir} already holds a device; use another --state or remove it`);
    }
    const lock = await StateLock.acquire(dir, options.lockWaitMs ?? 0);
    try {
      await fs.mkdir(path.join(dir, LAYER_DIR), { recursive: true });
      // Taken before hashing: a change during the hash moves it, so the
      // first boot refuses rather than trust a tree of other bytes.
      const baseFingerprint = await takeFingerprint(volume);
      const base = await engine.buildBaseTree(volume, blockSize, path.join(dir, BASE_TREE_FILE));
      await copyFileAtomic(options.trust, path.join(dir, TRUST_FILE));
      const record: DeviceRecord = {
        format: 1,
        device: {
          volume,
          baseFingerprint,
          blockSize,
          baseSize: base.size,
          baseDigest: base.digest,
          trustKeyId: trust.keyId,
          maxBootAttempts,
          maxEarlyBoots,
          liveImage: options.liveImage ? path.resolve(options.liveImage) : null,
          repository: options.repository ?? null,
        },
        patches: [],
        versionFloor: {},
        boots: 0,
      };
      const generation = await engine.writeCommitRecord(path.join(dir, COMMIT_FILE), 0, encodeRecord(record));
      return new Device(dir, record, generation, options.lockWaitMs ?? 0);
    } finally {
      await lock.release();
    }
  }

  /** Reads the newest valid commit record of `stateDir`. */
  static async open(stateDir: string, options: OpenOptions = {}): Promise<Device> {
    const dir = path.resolve(stateDir);
    let state: engine.CommitRecord;
    try {
      state = await engine.readCommitRecord(path.join(dir, COMMIT_FILE));
    } catch (err) {
      const e = toRevpatchError(err);
      if (e.code === 'E_NOT_FOUND') {
        throw new RevpatchError('E_NOT_INITIALIZED', `${dir} holds no device; run \`revpatch init\` first`);
      }
      throw e;
    }
    return new Device(dir, decodeRecord(state.body), state.generation, options.lockWaitMs ?? 0);
  }

  /**
   * Runs `fn` as the one writer of this state directory: takes the lock,
   * re-reads the record (another process may have committed since open),
   * collects garbage, then runs the transition.
   */
  private async mutate<T>(fn: () => Promise<T>, precheck?: () => Promise<void>): Promise<T> {
    const lock = await StateLock.acquire(this.stateDir, this.lockWaitMs);
    try {
      const state = await engine.readCommitRecord(this.file(COMMIT_FILE));
      this.record = decodeRecord(state.body);
      this.generation = state.generation;
      // A refusal that must leave every file as it was comes before the collection.
      await precheck?.();
      await this.collectGarbage();
      return await fn();
    } finally {
      await lock.release();
    }
  }

  /** The single commit point of every transition. */
  private async commit(next: DeviceRecord): Promise<void> {
    this.generation = await engine.writeCommitRecord(this.file(COMMIT_FILE), this.generation, encodeRecord(next));
    this.record = next;
  }

  private cloneRecord(): DeviceRecord {
    return JSON.parse(encodeRecord(this.record)) as DeviceRecord;
  }

  /**
   * Deletes layer files no live record names: layers of removed or failed
   * patches whose unlink did not happen before a crash, and unsealed layers
   * of interrupted installs — except the newest one that has a checkpoint,
   * which the next install of the same patch resumes (docs/durability.md).
   * Returns the names it removed.
   */
  private async collectGarbage(): Promise<string[]> {
    const live = new Set(
      this.record.patches
        .filter((p) => p.state !== 'removed' && p.state !== 'failed' && p.layer !== null)
        .map((p) => p.layer as string),
    );
    const dir = path.join(this.stateDir, LAYER_DIR);
    const names = await fs.readdir(dir).catch(() => [] as string[]);
    let resumable: string | null = null;
    let newest = -1;
    for (const name of names) {
      if (!name.endsWith(CHECKPOINT_SUFFIX)) continue;
      const layer = name.slice(0, -CHECKPOINT_SUFFIX.length);
      if (live.has(layer) || !names.includes(layer)) continue;
      const mtime = (await fs.stat(path.join(dir, name)).catch(() => null))?.mtimeMs ?? -1;
      if (mtime > newest) {
        newest = mtime;
        resumable = layer;
      }
    }
    const keep = new Set(live);
    if (resumable) {
      keep.add(resumable);
      keep.add(resumable + CHECKPOINT_SUFFIX);
    }
    const removed: string[] = [];
    for (const name of names) {
      if (keep.has(name)) continue;
      await engine.removeFile(path.join(dir, name));
      removed.push(name);
    }
    for (const name of await fs.readdir(this.stateDir)) {
      if (name.includes('.tmp') && !name.startsWith(LOCK_FILE)) {
        await engine.removeFile(path.join(this.stateDir, name));
        removed.push(name);
      }
    }
    return removed;
  }

  /**
   * Verifies `patchPath` and applies it into a new sealed layer on top of the
   * next-boot view; the patch is `staged` and nothing the running system
   * sees changes until `boot`.
   */
  async install(patchPath: string, options: InstallOptions = {}): Promise<PatchRecord> {
    const patch = await PatchFile.open(patchPath);
    try {
      return await this.installPatchFile(patch, options);
    } finally {
      await patch.close();
    }
  }

  /**
   * install() from a PatchFile the caller opened and keeps (it is not
   * closed here): the streaming install passes one still being downloaded,
   * with the engine feed in `applyExtras`.
   */
  async installPatchFile(
    patch: PatchFile,
    options: InstallOptions & { applyExtras?: Pick<engine.ApplyParams, 'feed'> } = {},
  ): Promise<PatchRecord> {
    const trust = await readPublicKey(this.file(TRUST_FILE));
    const manifest = await patch.verify(trust.publicKey);
    // A patch this engine cannot apply (delta versions, a zstd recipe of
    // another libzstd) is refused before the state is touched.
    checkRequires(manifest, engine.capabilities());
    return await this.mutate(async () => {
      const record = this.record;
      const config = record.device;
      if (manifest.blockSize !== config.blockSize) {
        throw new RevpatchError(
          'E_BASE_MISMATCH',
          `patch uses ${manifest.blockSize}-byte blocks, this device ${config.blockSize}`,
        );
      }
      const clock = options.now ?? new Date();
      if (manifest.expires !== null && Date.parse(manifest.expires) <= clock.getTime()) {
        throw new RevpatchError('E_EXPIRED', `patch ${manifest.id} expired at ${manifest.expires}`);
      }
      const live = record.patches.filter((p) => p.state !== 'removed' && p.state !== 'failed');
      if (live.some((p) => p.id === manifest.id)) {
        throw new RevpatchError('E_EXISTS', `patch ${manifest.id} is already installed`);
      }
      const key = parentKey(manifest.parent);
      const floor = record.versionFloor[key] ?? 0;
      const newerSibling = live.find((p) => parentKey(p.parent) === key && p.version > manifest.version);
      if (manifest.version < floor || newerSibling) {
        throw new RevpatchError(
          'E_ROLLBACK',
          `patch ${manifest.id} version ${manifest.version} is older than version ` +
            `${newerSibling ? newerSibling.version : floor} already installed for ${key}`,
        );
      }
      const next = stack(record, NEXT_BOOT_STATES);
      if (manifest.parent !== null && !next.some((p) => p.id === manifest.parent)) {
        throw new RevpatchError('E_PARENT_MISSING', `patch ${manifest.id} needs ${manifest.parent} installed first`);
      }
      const top = next.length > 0 ? next[next.length - 1] : null;
      const below = top ? top.targetDigest : config.baseDigest;
      if (manifest.source.digest !== below) {
        const on = top ? `patch ${top.id}` : 'the base';
        throw new RevpatchError(
          'E_BASE_MISMATCH',
          `patch ${manifest.id} was made for another view than ${on} (source digest ${manifest.source.digest.slice(0, 16)}…, device ${below.slice(0, 16)}…)`,
        );
      }
      if (options.spaceCheck !== false) {
        const need = manifest.changedBlocks * (config.blockSize + 48) + 1024 * 1024;
        const free = await engine.freeSpace(path.join(this.stateDir, LAYER_DIR));
        if (free < need) {
          throw new RevpatchError('E_NO_SPACE', `installing ${manifest.id} needs about ${need} bytes, ${free} are free`);
        }
      }
      // The same name on every attempt, so an interrupted install resumes.
      const layer = `${manifest.id}.${manifest.payload.digest.slice(0, 16)}.layer`;
      const layerPath = this.layerPath(layer);
      const applied = await engine.applyPatch(
        this.nextBootView(),
        {
          ...patch.applyParams(layerPath),
          checkpointPath: layerPath + CHECKPOINT_SUFFIX,
          background: options.background === true,
          ...options.applyExtras,
        },
        options.onProgress,
      );
      options.onApplied?.(applied);
      const updated = this.cloneRecord();
      const entry: PatchRecord = {
        id: manifest.id,
        version: manifest.version,
        parent: manifest.parent,
        title: manifest.title,
        severity: manifest.severity,
        state: 'staged',
        layer,
        sourceDigest: manifest.source.digest,
        targetDigest: manifest.target.digest,
        targetSize: manifest.target.size,
        removable: manifest.removable,
        installedAt: now(),
        stateChangedAt: now(),
        bootAttempts: 0,
        earlyBoots: 0,
        attemptReached: false,
      };
      updated.patches.push(entry);
      // If the commit fails the layer stays: a failed fsync leaves it
      // unknown whether the record naming it landed, and a layer no record
      // names is collected by the next transition anyway.
      await this.commit(updated);
      return entry;
    });
  }

  /**
   * The startup sequence: drops pending removals, rolls back trial patches
   * that used up their boot attempts, turns staged patches into trial ones
   * and counts this boot against every trial patch, in one commit. Then
   * deletes the layers no record names and refreshes the live image.
   */
  async boot(): Promise<BootReport> {
    let fingerprint: BaseFingerprint;
    const precheck = async () => {
      // A running export serves the booted view: boot would change it under
      // its clients (docs/serve-view.md). E_BUSY, nothing touched.
      await assertNotServed(this.stateDir);
      fingerprint = await this.checkBaseUnchanged();
    };
    return this.mutate(async () => {
      const next = this.cloneRecord();
      next.device.baseFingerprint ??= fingerprint;
      const report: BootReport = {
        activated: [],
        removed: [],
        failed: [],
        trial: [],
        collected: [],
        viewDigest: '',
        liveImage: null,
      };
      next.boots += 1;
      const { maxBootAttempts, maxEarlyBoots } = next.device;
      let rolledBack = false;
      for (const patch of next.patches) {
        if (patch.state === 'pending-removal') {
          setState(patch, 'removed', patch.reason ?? 'removed');
          report.removed.push(patch.id);
          continue;
        }
        if (rolledBack && (patch.state === 'trial' || patch.state === 'staged' || patch.state === 'active')) {
          // Stacked on a patch that just failed: it cannot stand without it.
          setState(patch, 'failed', 'the patch beneath it was rolled back');
          report.failed.push(patch.id);
          continue;
        }
        if (patch.state === 'trial') {
          // Settle the attempt the previous boot started (docs/lifecycle.md).
          if (patch.attemptReached) patch.bootAttempts += 1;
          else patch.earlyBoots += 1;
          patch.attemptReached = false;
          const why =
            patch.bootAttempts >= maxBootAttempts
              ? `not confirmed within ${maxBootAttempts} boots that reached the health check`
              : patch.earlyBoots >= maxEarlyBoots
                ? `${maxEarlyBoots} boots ended before the health check`
                : null;
          if (why) {
            setState(patch, 'failed', why);
            report.failed.push(patch.id);
            rolledBack = true;
          } else {
            report.trial.push(patch.id);
          }
        } else if (patch.state === 'staged') {
          setState(patch, 'trial');
          patch.bootAttempts = 0;
          patch.earlyBoots = 0;
          patch.attemptReached = false;
          report.activated.push(patch.id);
          report.trial.push(patch.id);
        }
      }
      await this.commit(next);
      report.collected = await this.collectGarbage();
      const view = this.bootedView();
      report.viewDigest = (await engine.viewInfo(view)).digest;
      if (next.device.liveImage) {
        await this.audited('export', view, () => engine.exportView(view, next.device.liveImage as string, 'auto'));
        report.liveImage = next.device.liveImage;
      }
      return report;
    }, precheck);
  }

  /**
   * The system is up and its health check is about to run: from here on, a
   * boot that ends without `confirm` counts as a failed attempt of every
   * trial patch. Before it, an ended boot counts only as an early boot,
   * which a power cut can cause, so power cuts cannot burn the attempts of a
   * good patch (docs/lifecycle.md, "Counting boot attempts").
   */
  async reached(): Promise<string[]> {
    return this.mutate(async () => {
      const next = this.cloneRecord();
      const marked = next.patches.filter((p) => p.state === 'trial' && !p.attemptReached);
      for (const patch of marked) patch.attemptReached = true;
      if (marked.length > 0) await this.commit(next);
      return marked.map((p) => p.id);
    });
  }

  /** The host's health check passed: trial patches become active. */
  async confirm(): Promise<string[]> {
    return this.mutate(async () => {
      const next = this.cloneRecord();
      const confirmed: string[] = [];
      for (const patch of next.patches) {
        if (patch.state !== 'trial') continue;
        setState(patch, 'active');
        patch.bootAttempts = 0;
        patch.earlyBoots = 0;
        patch.attemptReached = false;
        const key = parentKey(patch.parent);
        next.versionFloor[key] = Math.max(next.versionFloor[key] ?? 0, patch.version);
        confirmed.push(patch.id);
      }
      if (confirmed.length > 0) await this.commit(next);
      return confirmed;
    });
  }

  /**
   * Marks `id` and every patch stacked on it for removal at the next
   * restart; a staged patch (never booted) is removed at once.
   */
  async remove(id: string, reason = 'removed'): Promise<PatchRecord[]> {
    return this.mutate(async () => {
      const next = this.cloneRecord();
      const index = next.patches.findIndex(
        (p) => p.id === id && p.state !== 'removed' && p.state !== 'failed',
      );
      if (index < 0) throw new RevpatchError('E_UNKNOWN_PATCH', `no installed patch has id ${id}`);
      const target = next.patches[index];
      if (target.state === 'pending-removal') {
        throw new RevpatchError('E_STATE', `patch ${id} is already marked for removal at the next restart`);
      }
      if (!target.removable) throw new RevpatchError('E_STATE', `patch ${id} is not removable`);
      const changed: PatchRecord[] = [];
      for (const patch of next.patches.slice(index)) {
        if (patch.state === 'staged') {
          setState(patch, 'removed', patch === target ? reason : `stacked on ${id}`);
        } else if (patch.state === 'trial' || patch.state === 'active') {
          setState(patch, 'pending-removal', patch === target ? reason : `stacked on ${id}`);
        } else {
          continue;
        }
        changed.push(patch);
      }
      await this.commit(next);
      await this.collectGarbage();
      return changed;
    });
  }

  list(): PatchRecord[] {
    return this.record.patches.map((p) => ({ ...p }));
  }

  async status(): Promise<DeviceStatus> {
    const booted = await engine.viewInfo(this.bootedView());
    const nextBoot = await engine.viewInfo(this.nextBootView());
    const recorded = this.config.baseFingerprint;
    return {
      stateDir: this.stateDir,
      volume: this.config.volume,
      blockSize: this.config.blockSize,
      baseDigest: this.config.baseDigest,
      baseChanges: recorded ? fingerprintChanges(recorded, await takeFingerprint(this.config.volume)) : [],
      bootedDigest: booted.digest,
      nextBootDigest: nextBoot.digest,
      restartRequired: this.record.patches.some((p) => p.state === 'staged' || p.state === 'pending-removal'),
      boots: this.record.boots,
      generation: this.generation,
      patches: this.list(),
    };
  }

  /**
   * Writes the booted view out as a complete image, every block it reads
   * checked (E_CORRUPT, with a `corrupt-read` audit line, on a bad one; the
   * old image, if any, is left as it was). A reflink export does not read
   * the base: `baseVerified` is then false.
   */
  async export(
    out: string,
    options: { mode?: engine.ExportMode; onProgress?: engine.Progress } = {},
  ): Promise<engine.ExportResult> {
    const view = this.bootedView();
    return this.audited('export', view, () =>
      engine.exportView(view, path.resolve(out), options.mode ?? 'auto', options.onProgress),
    );
  }

  /** Bytes of the booted view, every block checked (E_CORRUPT and an audit line on a bad one). */
  async read(offset: number, length: number): Promise<Buffer> {
    const view = this.bootedView();
    return this.audited('read', view, () => engine.readView(view, offset, length));
  }

  /**
   * The scrub (`revpatch verify`): every block of the booted view checked
   * against the tree, not stopping at a bad one. If the base's fingerprint
   * changed since it was recorded (or none is recorded yet), the whole base
   * is checked too, and when
   * everything is clean the current fingerprint is recorded (under the
   * lock, and only if the base did not change while it was read), so that
   * boot proceeds again. Bad blocks are listed and written to the audit
   * trail; the report says so, it does not throw.
   */
  async verify(options: { onProgress?: engine.Progress; maxListed?: number } = {}): Promise<VerifyReport> {
    const maxListed = options.maxListed ?? 100;
    const before = await takeFingerprint(this.config.volume);
    const recorded = this.config.baseFingerprint;
    const baseChanges = recorded ? fingerprintChanges(recorded, before) : [];
    if (recorded && recorded.size !== before.size) {
      throw new RevpatchError(
        'E_BASE_CHANGED',
        `the base volume ${this.config.volume} is ${before.size} bytes, not the ${recorded.size} it was recorded with: ` +
          'no block can be checked against its tree; put the original base back, or set the device up again with `revpatch init`',
      );
    }
    const view = this.bootedView();
    const info = await engine.viewInfo(view);
    const bs = info.blockSize;
    const viewBlocks = Math.ceil(info.size / bs);
    const baseView: engine.ViewSpec = { ...view, layers: [] };
    // The fingerprint is recorded only over a base checked whole.
    const recording = baseChanges.length > 0 || !recorded;
    const baseBlocks = recording ? Math.ceil(this.config.baseSize / bs) : 0;
    const total = (viewBlocks + baseBlocks) * bs;
    const first = await engine.scrubView(view, maxListed, (done) => options.onProgress?.(done * bs, total));
    const bad = first.badBlocks.map((r) => this.badBlock(view, r));
    let { baseBad, layerBad } = first;
    if (baseBlocks > 0) {
      const base = await engine.scrubView(baseView, maxListed, (done) =>
        options.onProgress?.((viewBlocks + done) * bs, total),
      );
      // A base block the booted view reads was found bad already.
      const seen = new Set(bad.filter((b) => b.layer === null).map((b) => b.block));
      const fresh = base.badBlocks.filter((r) => !seen.has(r.block));
      bad.push(...fresh.map((r) => this.badBlock(baseView, r)));
      baseBad = Math.max(baseBad, base.baseBad);
    }
    bad.sort((a, b) => a.block - b.block);
    const badBlocks = bad.slice(0, maxListed);
    const report: VerifyReport = {
      ok: baseBad + layerBad === 0,
      blocks: viewBlocks + baseBlocks,
      bad: baseBad + layerBad,
      baseBad,
      layerBad,
      badBlocks,
      viewDigest: info.digest,
      baseChanges,
      fingerprintRecorded: false,
    };
    if (!report.ok) {
      await this.auditCorrupt('verify', badBlocks);
      return report;
    }
    if (recording) {
      await this.mutate(async () => {
        const current = await takeFingerprint(this.config.volume);
        if (fingerprintChanges(before, current).length > 0) {
          throw new RevpatchError(
            'E_BASE_CHANGED',
            `the base volume ${this.config.volume} changed while it was verified; run \`revpatch verify\` again`,
          );
        }
        const next = this.cloneRecord();
        next.device.baseFingerprint = current;
        await this.commit(next);
      });
      report.fingerprintRecorded = true;
    }
    return report;
  }

  /**
   * E_BASE_CHANGED unless the base's fingerprint is the recorded one; the
   * current fingerprint otherwise (for a record that has none yet).
   */
  private async checkBaseUnchanged(): Promise<BaseFingerprint> {
    const current = await takeFingerprint(this.config.volume);
    const recorded = this.config.baseFingerprint;
    const changes = recorded ? fingerprintChanges(recorded, current) : [];
    if (changes.length > 0) {
      throw new RevpatchError(
        'E_BASE_CHANGED',
        `the base volume ${this.config.volume} changed since it was recorded (${changes.join(', ')}); ` +
          'nothing was booted. Run `revpatch verify` to check every block against the tree ' +
          '(if all match, it records the base and boot proceeds), or set the device up again with `revpatch init`',
      );
    }
    return current;
  }

  private badBlock(view: engine.ViewSpec, r: engine.CorruptRead): BadBlock {
    return { block: r.block, layer: r.layer < 0 ? null : path.basename(view.layers[r.layer]), detail: r.detail };
  }

  /** One `corrupt-read` line per block; a trail that cannot be written is said in the error, not hidden. */
  private async auditCorrupt(source: CorruptReadSource, blocks: BadBlock[]): Promise<string | null> {
    const trail = AuditTrail.forState(this.stateDir);
    try {
      for (const b of blocks) {
        await trail.append({ event: 'corrupt-read', source, block: b.block, layer: b.layer, detail: b.detail });
      }
      return null;
    } catch (err) {
      return toRevpatchError(err).message;
    }
  }

  /** Runs a read of `view`; an E_CORRUPT from it is written to the audit trail first. */
  private async audited<T>(source: CorruptReadSource, view: engine.ViewSpec, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      const e = toRevpatchError(err);
      if (e.code !== 'E_CORRUPT') throw e;
      const reads = engine.corruptReadsOf(e).map((r) => this.badBlock(view, r));
      const failed = await this.auditCorrupt(source, reads);
      if (failed === null) throw e;
      throw new RevpatchError('E_CORRUPT', `${e.message} (audit trail not written: ${failed})`, { cause: e });
    }
  }
}

async function exists(file: string): Promise<boolean> {
  try {
    await fs.access(file);
    return true;
  } catch {
    return false;
  }
}
