/**
 * The publisher side of the repository (DESIGN.md, "Trust"): TUF metadata
 * made with @tufjs/models over a directory any static HTTP server can serve.
 * Layout and custom fields: lib/repo/types.ts; user guide: docs/repository.md.
 *
 * Every change writes, in this order and each file atomically (lib/engine/atomic.ts):
 * the new patch file, N.targets.json, N.snapshot.json, and last
 * timestamp.json — the one file a client reads first, so it is the commit
 * point: a reader sees the repository before or after the change, and a
 * crash in between leaves only unreferenced new files.
 *
 * One process at a time changes a repository: every change holds the lock
 * on its directory (lib/engine/lock.ts, DIR/lock) and re-reads the metadata under
 * it, so it builds on what the previous change committed; a second
 * publisher gets E_BUSY, or waits up to lockWaitMs. Reading (open,
 * patches, `repo serve`) takes no lock.
 */
import * as crypto from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { Metadata, MetaFile, Root, Snapshot, TargetFile, Targets, Timestamp, MetadataKind } from '@tufjs/models';
import { copyFileAtomic, writeFileAtomic } from '../engine/atomic';
import { RevpatchError, toRevpatchError } from '../engine/errors';
import { encodePublicKey, encodeSecretKey, generateKeyPair } from '../patch/keys';
import { StateLock } from '../engine/lock';
import { PatchFile } from '../patch/patch_file';
import { loadTufKey, readAnyPublicKey, signerOf, type TufKey } from './keys';
import {
  DEFAULT_EXPIRY,
  ROLE_NAMES,
  type ExpiryPeriods,
  type PatchCustom,
  type PatchUpdate,
  type PublishOptions,
  type PublishResult,
  type RepoInitOptions,
  type RepoPatch,
  type RoleName,
  type RotateKeyOptions,
  type RotateKeyResult,
} from './types';

export const SPEC_VERSION = '1.0.31';
export const METADATA_DIR = 'metadata';
export const TARGETS_DIR = 'targets';
export const KEYS_DIR = 'keys';
export const CONFIG_FILE = 'repo.json';
export const PUBLISHER_KEY_FILE = 'publisher.pub';
/** Patch targets live under this prefix; nothing else is a patch. */
export const PATCH_TARGET_PREFIX = 'patches/';
const TARGET_NAME = /^patches\/[A-Za-z0-9][A-Za-z0-9._-]{0,127}-v[0-9]{1,10}\.rvp$/;

interface RepoConfig {
  format: 1;
  expiry: ExpiryPeriods;
  /** Secret key file per role, relative to the repository or absolute. */
  keys: Record<RoleName, string>;
}

type Clock = () => Date;

/** What repo.json and the current metadata say, as read from disk. */
interface RepoFiles {
  config: RepoConfig;
  root: Metadata<Root>;
  targets: Metadata<Targets>;
  snapshot: Metadata<Snapshot>;
  timestamp: Metadata<Timestamp>;
}

/** Whether `name` is a target name this repository could have written (no traversal, no oddities). */
export function isSafePatchTarget(name: string): boolean {
  return TARGET_NAME.test(name) && !name.includes('..');
}

export function patchTargetName(id: string, version: number): string {
  return `${PATCH_TARGET_PREFIX}${id}-v${version}.rvp`;
}

function expiresAt(now: Date, seconds: number): string {
  // TUF wants whole seconds with a Z suffix.
  return new Date(Math.floor(now.getTime() / 1000) * 1000 + seconds * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function serialize(md: Metadata<Root | Targets | Snapshot | Timestamp>): Buffer {
  return Buffer.from(`${JSON.stringify(md.toJSON(), null, 1)}\n`, 'utf8');
}

function metaFileOf(version: number, bytes: Buffer): MetaFile {
  return new MetaFile({
    version,
    length: bytes.byteLength,
    hashes: { sha256: crypto.createHash('sha256').update(bytes).digest('hex') },
  });
}

async function readJson(file: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    const e = toRevpatchError(err);
    if (e.code === 'E_NOT_FOUND') throw new RevpatchError('E_NOT_FOUND', `${file} is missing: not a revpatch repository?`);
    throw e;
  }
  try {
    return JSON.parse(text) as Record<string, unknown>;
  } catch (err) {
    throw new RevpatchError('E_REPO_METADATA', `${file} is not valid JSON: ${(err as Error).message}`);
  }
}

async function exists(file: string): Promise<boolean> {
  return fs.lstat(file).then(
    () => true,
    () => false,
  );
}

/** Reads repo.json and the metadata the timestamp names (the last commit). */
async function readRepository(root: string): Promise<RepoFiles> {
  const config = (await readJson(path.join(root, CONFIG_FILE))) as unknown as RepoConfig;
  if (config.format !== 1 || !config.keys || !config.expiry) {
    throw new RevpatchError('E_REPO_METADATA', `${path.join(root, CONFIG_FILE)} has an unknown shape`);
  }
  const meta = path.join(root, METADATA_DIR);
  const rootMd = Metadata.fromJSON(MetadataKind.Root, (await readJson(path.join(meta, 'root.json'))) as never);
  const timestamp = Metadata.fromJSON(MetadataKind.Timestamp, (await readJson(path.join(meta, 'timestamp.json'))) as never);
  const sv = timestamp.signed.snapshotMeta.version;
  const snapshot = Metadata.fromJSON(MetadataKind.Snapshot, (await readJson(path.join(meta, `${sv}.snapshot.json`))) as never);
  const tv = snapshot.signed.meta['targets.json']?.version;
  if (!tv) throw new RevpatchError('E_REPO_METADATA', `snapshot ${sv} names no targets metadata`);
  const targets = Metadata.fromJSON(MetadataKind.Targets, (await readJson(path.join(meta, `${tv}.targets.json`))) as never);
  return { config, root: rootMd, targets, snapshot, timestamp };
}

/** Parses a duration: a number of seconds, or with a unit s, m, h, d. */
export function parseDuration(text: string): number {
  const m = /^(\d+)([smhd]?)$/.exec(text.trim());
  if (!m) throw new RevpatchError('E_INVALID_ARGUMENT', `${JSON.stringify(text)} is not a duration like 3600, 90m, 12h or 30d`);
  const unit = { '': 1, s: 1, m: 60, h: 3600, d: 86400 }[m[2] as '' | 's' | 'm' | 'h' | 'd'];
  const seconds = Number(m[1]) * unit;
  if (seconds < 1 || seconds > 20 * 365 * 86400) {
    throw new RevpatchError('E_INVALID_ARGUMENT', `expiry period ${text} is outside 1 second .. 20 years`);
  }
  return seconds;
}

/** The repository on disk, loaded for one change. */
export class Repository {
  private constructor(
    readonly dir: string,
    private config: RepoConfig,
    private root: Metadata<Root>,
    private targets: Metadata<Targets>,
    private snapshot: Metadata<Snapshot>,
    private timestamp: Metadata<Timestamp>,
    private readonly now: Clock,
    private readonly lockWaitMs: number,
  ) {}

  private get metadataDir(): string {
    return path.join(this.dir, METADATA_DIR);
  }

  /** Creates a repository in `dir` (refused with E_EXISTS if one is there). */
  static async init(dir: string, options: RepoInitOptions): Promise<Repository> {
    const root = path.resolve(dir);
    const now = options.now ?? (() => new Date());
    const lockWaitMs = options.lockWaitMs ?? 0;
    const expiry: ExpiryPeriods = { ...DEFAULT_EXPIRY, ...options.expiry };
    for (const role of ROLE_NAMES) {
      if (!Number.isInteger(expiry[role]) || expiry[role] < 1) {
        throw new RevpatchError('E_INVALID_ARGUMENT', `the ${role} expiry must be a positive number of seconds`);
      }
    }
    const publisher = await readAnyPublicKey(options.publisherKey);
    try {
      await fs.mkdir(root, { recursive: true });
    } catch (err) {
      throw toRevpatchError(err);
    }
    const lock = await StateLock.acquire(root, lockWaitMs);
    try {
      if (await exists(path.join(root, CONFIG_FILE))) {
        throw new RevpatchError('E_EXISTS', `${root} already holds a repository`);
      }
      try {
        await fs.mkdir(path.join(root, KEYS_DIR), { recursive: true, mode: 0o700 });
        await fs.mkdir(path.join(root, METADATA_DIR), { recursive: true });
        await fs.mkdir(path.join(root, TARGETS_DIR, 'patches'), { recursive: true });
      } catch (err) {
        throw toRevpatchError(err);
      }
      const keyFiles = {} as Record<RoleName, string>;
      for (const role of ROLE_NAMES) {
        const given = options.roleKeys?.[role];
        keyFiles[role] = given ? path.resolve(given) : await newRoleKey(root, role);
      }
      await writeFileAtomic(path.join(root, KEYS_DIR, PUBLISHER_KEY_FILE), encodePublicKey(publisher));
      const config: RepoConfig = { format: 1, expiry, keys: keyFiles };
      const keys = await loadRoleKeys(root, config);
      const at = now();
      const rootSigned = new Root({ version: 1, specVersion: SPEC_VERSION, expires: expiresAt(at, expiry.root), consistentSnapshot: true });
      for (const role of ROLE_NAMES) rootSigned.addKey(keys[role].key, role);
      const rootMd = new Metadata(rootSigned);
      rootMd.sign(signerOf(keys.root));
      const empty = (v: number) => ({ version: v, specVersion: SPEC_VERSION });
      const targets = new Metadata(new Targets({ ...empty(1), expires: expiresAt(at, expiry.targets) }));
      const snapshot = new Metadata(new Snapshot({ ...empty(1), expires: expiresAt(at, expiry.snapshot) }));
      const timestamp = new Metadata(new Timestamp({ ...empty(1), expires: expiresAt(at, expiry.timestamp) }));
      const repo = new Repository(root, config, rootMd, targets, snapshot, timestamp, now, lockWaitMs);
      await repo.writeRoot();
      await repo.commitTargets(keys, true);
      await writeFileAtomic(path.join(root, CONFIG_FILE), `${JSON.stringify(config, null, 2)}\n`);
      return repo;
    } finally {
      await lock.release();
    }
  }

  /**
   * Opens the repository in `dir`. Its changes wait up to `lockWaitMs`
   * (default 0) for another process's change to finish, then fail with E_BUSY.
   */
  static async open(dir: string, options: { now?: Clock; lockWaitMs?: number } = {}): Promise<Repository> {
    const root = path.resolve(dir);
    const f = await readRepository(root);
    const now = options.now ?? (() => new Date());
    return new Repository(root, f.config, f.root, f.targets, f.snapshot, f.timestamp, now, options.lockWaitMs ?? 0);
  }

  /**
   * Runs `fn` as the one writer of the repository: takes the lock on its
   * directory, re-reads the metadata (another process may have committed
   * since open), then runs the change.
   */
  private async mutate<T>(fn: () => Promise<T>): Promise<T> {
    const lock = await StateLock.acquire(this.dir, this.lockWaitMs);
    try {
      const f = await readRepository(this.dir);
      this.config = f.config;
      this.root = f.root;
      this.targets = f.targets;
      this.snapshot = f.snapshot;
      this.timestamp = f.timestamp;
      return await fn();
    } finally {
      await lock.release();
    }
  }

  get rootVersion(): number {
    return this.root.signed.version;
  }

  /** The patches the current targets metadata lists. */
  patches(): RepoPatch[] {
    return Object.values(this.targets.signed.targets).map((t) => repoPatchOf(t));
  }

  /**
   * Adds a signed patch file (verified with the repository's publisher key)
   * as target `patches/<id>-v<version>.rvp`, then refreshes targets,
   * snapshot and timestamp. Publishing the identical file again only updates
   * its rollout (a halted patch stays halted); another file under the same
   * id and version is E_EXISTS.
   */
  async publish(file: string, options: PublishOptions = {}): Promise<PublishResult> {
    const rollout = options.rollout ?? 100;
    if (!Number.isFinite(rollout) || rollout < 0 || rollout > 100) {
      throw new RevpatchError('E_INVALID_ARGUMENT', `rollout must be a percentage from 0 to 100, not ${rollout}`);
    }
    const publisher = await readAnyPublicKey(path.join(this.dir, KEYS_DIR, PUBLISHER_KEY_FILE));
    const patch = await PatchFile.open(file);
    let custom: PatchCustom;
    let sha256: string;
    try {
      const manifest = patch.verify(publisher.publicKey);
      sha256 = await hashFile(file, patch.fileSize);
      custom = {
        id: manifest.id,
        parent: manifest.parent,
        version: manifest.version,
        rollout,
        recalled: false,
        halted: false,
        severity: manifest.severity,
        title: manifest.title,
        size: patch.fileSize,
        payloadDigest: manifest.payload.digest,
        sourceDigest: manifest.source.digest,
        publishedAt: this.now().toISOString(),
      };
    } finally {
      await patch.close();
    }
    // Verified and hashed above; the lock is held for the change itself.
    return this.mutate(async () => {
      const name = patchTargetName(custom.id, custom.version);
      const existing = this.targets.signed.targets[name];
      if (existing && existing.hashes.sha256 !== sha256) {
        throw new RevpatchError('E_EXISTS', `${name} is already published with other bytes; publish a new version`);
      }
      if (existing && (existing.custom.revpatch as PatchCustom | undefined)?.recalled) {
        throw new RevpatchError('E_STATE', `${name} was recalled; publish a new version instead`);
      }
      if (existing) custom.halted = (existing.custom.revpatch as PatchCustom | undefined)?.halted === true;
      // Consistent snapshots: the file is stored under its hash, never overwritten.
      const stored = path.join(this.dir, TARGETS_DIR, hashPrefixed(name, sha256));
      if (!(await exists(stored))) await copyFileAtomic(file, stored, { overwrite: false, mode: 0o644 });
      this.targets.signed.targets[name] = new TargetFile({
        path: name,
        length: custom.size,
        hashes: { sha256 },
        unrecognizedFields: { custom: { revpatch: custom } as never },
      });
      await this.commitTargets(await loadRoleKeys(this.dir, this.config));
      return {
        patch: repoPatchOf(this.targets.signed.targets[name]),
        targetsVersion: this.targets.signed.version,
        snapshotVersion: this.snapshot.signed.version,
        timestampVersion: this.timestamp.signed.version,
      };
    });
  }

  /** Marks every published version of `id` recalled (E_UNKNOWN_PATCH if none). */
  async recall(id: string): Promise<RepoPatch[]> {
    return this.mutate(async () => {
      const hits = Object.values(this.targets.signed.targets).filter(
        (t) => (t.custom.revpatch as PatchCustom | undefined)?.id === id,
      );
      if (hits.length === 0) throw new RevpatchError('E_UNKNOWN_PATCH', `the repository has no patch ${id}`);
      for (const t of hits) {
        const custom = { ...(t.custom.revpatch as PatchCustom), recalled: true, publishedAt: this.now().toISOString() };
        this.targets.signed.targets[t.path] = new TargetFile({
          path: t.path,
          length: t.length,
          hashes: t.hashes,
          unrecognizedFields: { custom: { revpatch: custom } as never },
        });
      }
      await this.commitTargets(await loadRoleKeys(this.dir, this.config));
      return hits.map((t) => repoPatchOf(this.targets.signed.targets[t.path]));
    });
  }

  /**
   * Changes the signed rollout, halted and recalled flags of one published
   * patch version (the fleet controller's and operator's hand), then
   * re-signs targets, snapshot and timestamp, under the lock like every
   * change. `change` may be a function of the patch as currently published,
   * called under the lock, so a caller can compute the change from state
   * that must not move meanwhile. A change that changes nothing writes
   * nothing. E_UNKNOWN_PATCH if the version is not published; E_STATE if it
   * was recalled (a recall is final) and the change would alter it;
   * E_INVALID_ARGUMENT for a bad value, before anything is read.
   */
  async update(
    id: string,
    version: number,
    change: PatchUpdate | ((current: RepoPatch) => PatchUpdate | Promise<PatchUpdate>),
  ): Promise<RepoPatch> {
    if (typeof id !== 'string' || !Number.isSafeInteger(version) || version < 0) {
      throw new RevpatchError('E_INVALID_ARGUMENT', `${String(id)} version ${String(version)} is not a patch version`);
    }
    if (typeof change !== 'function') checkUpdate(change);
    return this.mutate(async () => {
      const name = patchTargetName(id, version);
      const target = isSafePatchTarget(name) ? this.targets.signed.targets[name] : undefined;
      if (!target) throw new RevpatchError('E_UNKNOWN_PATCH', `the repository has no patch ${id} version ${version}`);
      const current = repoPatchOf(target);
      const wanted = typeof change === 'function' ? await change(current) : change;
      checkUpdate(wanted);
      const next = {
        rollout: wanted.rollout ?? current.rollout,
        halted: wanted.halted ?? current.halted,
        recalled: wanted.recalled ?? current.recalled,
      };
      if (next.rollout === current.rollout && next.halted === current.halted && next.recalled === current.recalled) return current;
      if (current.recalled) throw new RevpatchError('E_STATE', `${id} version ${version} was recalled; it cannot change`);
      const custom: PatchCustom = { ...(target.custom.revpatch as PatchCustom), ...next, publishedAt: this.now().toISOString() };
      this.targets.signed.targets[name] = new TargetFile({
        path: target.path,
        length: target.length,
        hashes: target.hashes,
        unrecognizedFields: { custom: { revpatch: custom } as never },
      });
      await this.commitTargets(await loadRoleKeys(this.dir, this.config));
      return repoPatchOf(this.targets.signed.targets[name]);
    });
  }

  /** Sets the rollout percentage of a published patch version (see update). */
  async setRollout(id: string, version: number, rollout: number): Promise<RepoPatch> {
    return this.update(id, version, { rollout });
  }

  /** Sets or clears the halted flag of a published patch version (see update). */
  async setHalted(id: string, version: number, halted: boolean): Promise<RepoPatch> {
    return this.update(id, version, { halted });
  }

  /** Re-signs snapshot and timestamp with fresh expiry (run more often than the timestamp expires). */
  async refresh(): Promise<void> {
    await this.mutate(async () => {
      await this.commitSnapshot(await loadRoleKeys(this.dir, this.config));
    });
  }

  /**
   * Replaces the key of `role` by a new one: the new root (version + 1)
   * names it and is signed by the old root keys and, for the root role, also
   * by the new one, so a client that trusts the old root follows the chain.
   * The role's metadata is then re-signed with its new key.
   */
  async rotateKey(options: RotateKeyOptions): Promise<RotateKeyResult> {
    const { role } = options;
    if (!ROLE_NAMES.includes(role)) {
      throw new RevpatchError('E_INVALID_ARGUMENT', `role must be one of ${ROLE_NAMES.join(', ')}`);
    }
    return this.mutate(async () => {
      const oldKeys = await loadRoleKeys(this.dir, this.config);
      const newFile = options.newKey ? path.resolve(options.newKey) : await newRoleKey(this.dir, role);
      const fresh = await loadTufKey(path.resolve(this.dir, newFile));
      const oldKeyId = oldKeys[role].key.keyID;
      if (fresh.key.keyID === oldKeyId) throw new RevpatchError('E_INVALID_ARGUMENT', `the new ${role} key is the current one`);
      const at = (options.now ?? this.now)();
      const previous = this.root.signed;
      const nextRoot = new Root({
        version: previous.version + 1,
        specVersion: SPEC_VERSION,
        expires: expiresAt(at, this.config.expiry.root),
        consistentSnapshot: true,
      });
      const keys = { ...oldKeys, [role]: fresh };
      for (const r of ROLE_NAMES) nextRoot.addKey(keys[r].key, r);
      const md = new Metadata(nextRoot);
      md.sign(signerOf(oldKeys.root));
      if (role === 'root') md.sign(signerOf(fresh));
      this.root = md;
      await this.writeRoot();
      this.config = { ...this.config, keys: { ...this.config.keys, [role]: newFile } };
      await writeFileAtomic(path.join(this.dir, CONFIG_FILE), `${JSON.stringify(this.config, null, 2)}\n`);
      if (role === 'targets') await this.commitTargets(keys);
      else if (role === 'snapshot' || role === 'timestamp') await this.commitSnapshot(keys);
      return { role, oldKeyId, newKeyId: fresh.key.keyID, rootVersion: md.signed.version };
    });
  }

  private async writeRoot(): Promise<void> {
    const bytes = serialize(this.root);
    await writeFileAtomic(path.join(this.metadataDir, `${this.root.signed.version}.root.json`), bytes);
    await writeFileAtomic(path.join(this.metadataDir, 'root.json'), bytes);
  }

  /** New targets version (version 1 when `initial`), then snapshot and timestamp. */
  private async commitTargets(keys: Record<RoleName, TufKey>, initial = false): Promise<void> {
    const at = this.now();
    const t = this.targets.signed;
    this.targets = new Metadata(
      new Targets({
        version: initial ? 1 : t.version + 1,
        specVersion: SPEC_VERSION,
        expires: expiresAt(at, this.config.expiry.targets),
        targets: t.targets,
      }),
    );
    this.targets.sign(signerOf(keys.targets));
    await writeFileAtomic(path.join(this.metadataDir, `${this.targets.signed.version}.targets.json`), serialize(this.targets));
    await this.commitSnapshot(keys, initial);
  }

  private async commitSnapshot(keys: Record<RoleName, TufKey>, initial = false): Promise<void> {
    const at = this.now();
    const targetsBytes = serialize(this.targets);
    this.snapshot = new Metadata(
      new Snapshot({
        version: initial ? 1 : this.snapshot.signed.version + 1,
        specVersion: SPEC_VERSION,
        expires: expiresAt(at, this.config.expiry.snapshot),
        meta: { 'targets.json': metaFileOf(this.targets.signed.version, targetsBytes) },
      }),
    );
    this.snapshot.sign(signerOf(keys.snapshot));
    const snapshotBytes = serialize(this.snapshot);
    await writeFileAtomic(path.join(this.metadataDir, `${this.snapshot.signed.version}.snapshot.json`), snapshotBytes);
    this.timestamp = new Metadata(
      new Timestamp({
        version: initial ? 1 : this.timestamp.signed.version + 1,
        specVersion: SPEC_VERSION,
        expires: expiresAt(at, this.config.expiry.timestamp),
        snapshotMeta: metaFileOf(this.snapshot.signed.version, snapshotBytes),
      }),
    );
    this.timestamp.sign(signerOf(keys.timestamp));
    await writeFileAtomic(path.join(this.metadataDir, 'timestamp.json'), serialize(this.timestamp));
  }
}

function checkUpdate(change: PatchUpdate): void {
  if (typeof change !== 'object' || change === null) throw new RevpatchError('E_INVALID_ARGUMENT', 'a patch update must be an object');
  const { rollout, halted, recalled } = change;
  if (rollout !== undefined && (typeof rollout !== 'number' || !Number.isFinite(rollout) || rollout < 0 || rollout > 100)) {
    throw new RevpatchError('E_INVALID_ARGUMENT', `rollout must be a percentage from 0 to 100, not ${String(rollout)}`);
  }
  if (halted !== undefined && typeof halted !== 'boolean') throw new RevpatchError('E_INVALID_ARGUMENT', 'halted must be true or false');
  if (recalled !== undefined && recalled !== true) throw new RevpatchError('E_INVALID_ARGUMENT', 'recalled can only be set, never cleared');
}

function hashPrefixed(name: string, sha256: string): string {
  const dir = path.posix.dirname(name);
  return path.join(dir, `${sha256}.${path.posix.basename(name)}`);
}

async function hashFile(file: string, expectedSize: number): Promise<string> {
  const hash = crypto.createHash('sha256');
  const handle = await fs.open(file, 'r');
  try {
    const buffer = Buffer.allocUnsafe(1024 * 1024);
    let total = 0;
    for (;;) {
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, total);
      if (bytesRead === 0) break;
      hash.update(buffer.subarray(0, bytesRead));
      total += bytesRead;
    }
    if (total !== expectedSize) throw new RevpatchError('E_FORMAT', `${file} changed size while being published`);
  } finally {
    await handle.close();
  }
  return hash.digest('hex');
}

async function newRoleKey(repoDir: string, role: RoleName): Promise<string> {
  const pair = await generateKeyPair();
  const rel = path.join(KEYS_DIR, `${role}.${pair.keyId}.key`);
  await writeFileAtomic(path.join(repoDir, rel), encodeSecretKey(pair), { mode: 0o600, overwrite: false });
  return rel;
}

async function loadRoleKeys(repoDir: string, config: RepoConfig): Promise<Record<RoleName, TufKey>> {
  const out = {} as Record<RoleName, TufKey>;
  for (const role of ROLE_NAMES) out[role] = await loadTufKey(path.resolve(repoDir, config.keys[role]));
  return out;
}

/** A target of the verified targets metadata as a RepoPatch; E_REPO_METADATA if its custom field is unusable. */
export function repoPatchOf(target: TargetFile): RepoPatch {
  const c = (target.custom as { revpatch?: unknown }).revpatch as Partial<PatchCustom> | undefined;
  const bad = (why: string): never => {
    throw new RevpatchError('E_REPO_METADATA', `target ${target.path}: ${why}`);
  };
  if (!isSafePatchTarget(target.path)) {
    throw new RevpatchError('E_UNSAFE_TARGET', `target name ${JSON.stringify(target.path)} is not a safe patch name`);
  }
  if (!c || typeof c !== 'object') bad('no revpatch custom field');
  const p = c as PatchCustom;
  if (typeof p.id !== 'string' || typeof p.version !== 'number' || !Number.isInteger(p.version)) bad('bad id or version');
  if (target.path !== patchTargetName(p.id, p.version)) bad(`its name does not match id ${p.id} version ${p.version}`);
  if (p.parent !== null && typeof p.parent !== 'string') bad('bad parent');
  if (typeof p.rollout !== 'number' || !(p.rollout >= 0 && p.rollout <= 100)) bad('bad rollout');
  if (typeof p.recalled !== 'boolean') bad('bad recalled flag');
  if (p.halted !== undefined && typeof p.halted !== 'boolean') bad('bad halted flag');
  if (p.size !== target.length) bad(`custom size ${p.size} is not the target length ${target.length}`);
  const sha256 = target.hashes.sha256;
  if (typeof sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(sha256)) bad('no sha256 hash');
  return {
    id: p.id,
    parent: p.parent,
    version: p.version,
    rollout: p.rollout,
    recalled: p.recalled,
    halted: p.halted === true,
    severity: String(p.severity ?? ''),
    title: String(p.title ?? ''),
    size: p.size,
    payloadDigest: String(p.payloadDigest ?? ''),
    sourceDigest: String(p.sourceDigest ?? ''),
    publishedAt: String(p.publishedAt ?? ''),
    target: target.path,
    length: target.length,
    sha256,
  };
}

