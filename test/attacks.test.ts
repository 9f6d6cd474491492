/**
 * The attacks of the TUF specification ("The update framework: threats"),
 * each against a real agent: a repository made with the publisher, served
 * on loopback by a server that answers some paths with tampered bytes. In
 * every case the agent refuses with a stable code, and the device's state
 * directory (commit record, layers, trusted metadata, the agent's own
 * memory) is byte for byte what it was; only agent.log and audit.ndjson,
 * which record the refusal, grow.
 */
import t, { type Test } from 'tap';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import * as crypto from 'node:crypto';
import { Metadata, MetadataKind } from '@tufjs/models';
import { generateKeyPair } from '../lib/patch/keys';
import { loadTufKey, signerOf, tufKeyOf, type TufKey } from '../lib/repo/keys';
import type { RoleName } from '../lib/repo/types';
import { AuditTrail } from '../lib/agent/log';
import { decodeHeader } from '../lib/patch/patch_file';
import type { Agent, CheckReport } from '../lib/agent/agent';
import { addonBuilt } from './helpers';
import { makeWorld, type World } from './agent_fixture';

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const KIND: Record<RoleName, MetadataKind> = {
  root: MetadataKind.Root,
  targets: MetadataKind.Targets,
  snapshot: MetadataKind.Snapshot,
  timestamp: MetadataKind.Timestamp,
};

async function roleKeys(w: World): Promise<Record<RoleName, TufKey>> {
  const config = JSON.parse(await fs.readFile(path.join(w.repoDir, 'repo.json'), 'utf8')) as { keys: Record<RoleName, string> };
  const out = {} as Record<RoleName, TufKey>;
  for (const role of Object.keys(config.keys) as RoleName[]) out[role] = await loadTufKey(path.resolve(w.repoDir, config.keys[role]));
  return out;
}

async function freshKey(): Promise<TufKey> {
  const secret = await generateKeyPair();
  return { key: tufKeyOf(secret.publicKey), secret };
}

async function readMeta(w: World, name: string): Promise<Json> {
  return JSON.parse(await fs.readFile(path.join(w.repoDir, 'metadata', name), 'utf8')) as Json;
}

/** Signs `signed` as role metadata with `keys` (an attacker holding them, or not). */
function sign(role: RoleName, signed: Json, keys: TufKey[]): Json {
  const md = Metadata.fromJSON(KIND[role] as MetadataKind.Targets, { signed, signatures: [] } as never);
  for (const k of keys) md.sign(signerOf(k));
  return md.toJSON() as Json;
}

const bytesOf = (json: Json) => Buffer.from(`${JSON.stringify(json)}\n`);

const metaFile = (version: number, bytes: Buffer) => ({
  version,
  length: bytes.length,
  hashes: { sha256: crypto.createHash('sha256').update(bytes).digest('hex') },
});

/** The current metadata of the repository, as the genuine server has it. */
async function current(w: World) {
  const timestamp = await readMeta(w, 'timestamp.json');
  const sv = timestamp.signed.meta['snapshot.json'].version as number;
  const snapshot = await readMeta(w, `${sv}.snapshot.json`);
  const tv = snapshot.signed.meta['targets.json'].version as number;
  const targets = await readMeta(w, `${tv}.targets.json`);
  return { timestamp, snapshot, targets, sv, tv };
}

/**
 * New targets (edited), snapshot and timestamp, each one version up and
 * signed with the given keys; returns the responses to serve instead.
 */
async function forge(
  w: World,
  edit: (targets: Json) => void,
  signers: Partial<Record<'targets' | 'snapshot' | 'timestamp', TufKey[]>> = {},
): Promise<Map<string, Buffer>> {
  const keys = await roleKeys(w);
  const cur = await current(w);
  const targetsSigned = structuredClone(cur.targets.signed);
  targetsSigned.version = cur.tv + 1;
  edit(targetsSigned);
  const targets = bytesOf(sign('targets', targetsSigned, signers.targets ?? [keys.targets]));
  const snapshotSigned = structuredClone(cur.snapshot.signed);
  snapshotSigned.version = cur.sv + 1;
  snapshotSigned.meta['targets.json'] = metaFile(cur.tv + 1, targets);
  const snapshot = bytesOf(sign('snapshot', snapshotSigned, signers.snapshot ?? [keys.snapshot]));
  const timestampSigned = structuredClone(cur.timestamp.signed);
  timestampSigned.version += 1;
  timestampSigned.meta['snapshot.json'] = metaFile(cur.sv + 1, snapshot);
  const timestamp = bytesOf(sign('timestamp', timestampSigned, signers.timestamp ?? [keys.timestamp]));
  return new Map([
    [`/metadata/${cur.tv + 1}.targets.json`, targets],
    [`/metadata/${cur.sv + 1}.snapshot.json`, snapshot],
    ['/metadata/timestamp.json', timestamp],
  ]);
}

/** Serves `overrides` (path → bytes) instead of the repository's files. */
function serve(w: World, overrides: Map<string, Buffer>): void {
  w.server.intercept = (_req, res, urlPath) => {
    const body = overrides.get(urlPath);
    if (!body) return false;
    res.writeHead(200, { 'Content-Length': body.length }).end(body);
    return true;
  };
}

/** A world whose device has fix-1 active and trusts the repository's current metadata. */
async function baseline(t: Parameters<typeof makeWorld>[0], options: Parameters<typeof makeWorld>[1] = {}) {
  const w = await makeWorld(t, { publish: ['fix-1'], ...options });
  const agent = await w.agent();
  const first = await agent.checkOnce();
  if (first.staged.join() !== 'fix-1') throw new Error(`baseline did not stage fix-1: ${JSON.stringify(first)}`);
  await (await w.device()).boot();
  await agent.startup();
  return { w, agent };
}

/**
 * Runs a check expected to be refused with `code` (thrown by the refresh
 * or reported for a patch) and checks the state directory did not change.
 */
async function refused(
  t: Test,
  w: World,
  agent: Agent,
  code: string,
  options: { allowChanged?: string[] } = {},
): Promise<CheckReport | null> {
  const before = await w.stateSnapshot({ without: options.allowChanged });
  let report: CheckReport | null = null;
  let thrown: { code?: string } | null = null;
  try {
    report = await agent.checkOnce();
  } catch (err) {
    thrown = err as { code?: string };
  }
  const got = thrown?.code ?? report?.refused[0]?.code ?? `nothing refused: ${JSON.stringify(report)}`;
  t.equal(got, code, `refused with ${code}`);
  t.same(report?.staged ?? [], [], 'nothing staged');
  t.same(await w.stateSnapshot({ without: options.allowChanged }), before, 'the state directory is unchanged');
  const last = (await AuditTrail.forState(w.state).read()).at(-1);
  t.equal(last?.event, 'refused', 'the refusal is in the audit trail');
  t.equal(last?.code, code);
  return report;
}

if (!addonBuilt()) {
  t.skip('native addon not built (npm run build)', () => {});
} else {
  // ------------------------------------------------------------- rollback

  t.test('rollback: an older timestamp than the trusted one is refused (E_REPO_ROLLBACK)', async (t) => {
    const { w, agent } = await baseline(t);
    const old = await fs.readFile(path.join(w.repoDir, 'metadata', 'timestamp.json'));
    await w.repo.publish(w.files['fix-2']);
    await agent.checkOnce(); // trusts the newer timestamp, stages fix-2
    serve(w, new Map([['/metadata/timestamp.json', old]]));
    await refused(t, w, agent, 'E_REPO_ROLLBACK');
  });

  t.test('rollback: a timestamp naming an older snapshot is refused (E_REPO_ROLLBACK), even signed by the timestamp key', async (t) => {
    const { w, agent } = await baseline(t);
    const before = await current(w);
    await w.repo.publish(w.files['fix-2']);
    await agent.checkOnce();
    const keys = await roleKeys(w);
    const now = await current(w);
    const ts = structuredClone(now.timestamp.signed);
    ts.version += 1;
    ts.meta['snapshot.json'] = metaFile(before.sv, await fs.readFile(path.join(w.repoDir, 'metadata', `${before.sv}.snapshot.json`)));
    serve(w, new Map([['/metadata/timestamp.json', bytesOf(sign('timestamp', ts, [keys.timestamp]))]]));
    await refused(t, w, agent, 'E_REPO_ROLLBACK');
  });

  t.test('rollback: a snapshot naming an older targets version is refused (E_REPO_ROLLBACK), even with snapshot and timestamp keys', async (t) => {
    const { w, agent } = await baseline(t);
    const older = await current(w);
    await w.repo.publish(w.files['fix-2']);
    await agent.checkOnce();
    const keys = await roleKeys(w);
    const now = await current(w);
    const oldTargets = await fs.readFile(path.join(w.repoDir, 'metadata', `${older.tv}.targets.json`));
    const snap = structuredClone(now.snapshot.signed);
    snap.version += 1;
    snap.meta['targets.json'] = metaFile(older.tv, oldTargets);
    const snapshot = bytesOf(sign('snapshot', snap, [keys.snapshot]));
    const ts = structuredClone(now.timestamp.signed);
    ts.version += 1;
    ts.meta['snapshot.json'] = metaFile(snap.version, snapshot);
    serve(
      w,
      new Map([
        ['/metadata/timestamp.json', bytesOf(sign('timestamp', ts, [keys.timestamp]))],
        [`/metadata/${snap.version}.snapshot.json`, snapshot],
      ]),
    );
    // The new timestamp verified (the spec persists it before the snapshot fails).
    await refused(t, w, agent, 'E_REPO_ROLLBACK', { allowChanged: ['tuf/timestamp.json'] });
  });

  t.test('rollback: an old root served as the next root version is refused (E_REPO_ROLLBACK)', async (t) => {
    const { w, agent } = await baseline(t);
    const root1 = await fs.readFile(path.join(w.repoDir, 'metadata', '1.root.json'));
    serve(w, new Map([['/metadata/2.root.json', root1]]));
    await refused(t, w, agent, 'E_REPO_ROLLBACK');
  });

  t.test('mix-and-match: targets whose version is not the one the snapshot names are refused (E_REPO_METADATA)', async (t) => {
    const { w, agent } = await baseline(t);
    await w.repo.publish(w.files['fix-2']);
    await agent.checkOnce();
    const trusted = (await current(w)).tv;
    const overrides = await forge(w, (targets) => {
      targets.version = trusted - 1;
    });
    // forge names the file by the next version; a lower-versioned body is served there.
    serve(w, overrides);
    await refused(t, w, agent, 'E_REPO_METADATA', { allowChanged: ['tuf/timestamp.json', 'tuf/snapshot.json'] });
  });

  // --------------------------------------------------------------- freeze

  t.test('freeze: metadata past its expiry is refused (E_REPO_EXPIRED) with the clock moved on', async (t) => {
    const { w, agent } = await baseline(t);
    w.clock.now = new Date(w.clock.now.getTime() + 2 * 86400 * 1000); // the timestamp lives 1 day
    await refused(t, w, agent, 'E_REPO_EXPIRED');
  });

  t.test('freeze: a repository re-signed long ago and replayed is refused (E_REPO_EXPIRED)', async (t) => {
    const { w, agent } = await baseline(t);
    const keys = await roleKeys(w);
    const cur = await current(w);
    const ts = structuredClone(cur.timestamp.signed);
    ts.version += 1;
    ts.expires = new Date(w.clock.now.getTime() - 60_000).toISOString().replace(/\.\d{3}Z$/, 'Z');
    serve(w, new Map([['/metadata/timestamp.json', bytesOf(sign('timestamp', ts, [keys.timestamp]))]]));
    await refused(t, w, agent, 'E_REPO_EXPIRED', { allowChanged: ['tuf/timestamp.json'] });
  });

  // ------------------------------------------------ arbitrary installation

  t.test('arbitrary installation: targets signed by an unknown key are refused (E_REPO_SIGNATURE)', async (t) => {
    const { w, agent } = await baseline(t);
    const intruder = await freshKey();
    const overrides = await forge(w, () => undefined, { targets: [intruder] });
    serve(w, overrides);
    await refused(t, w, agent, 'E_REPO_SIGNATURE', { allowChanged: ['tuf/timestamp.json', 'tuf/snapshot.json'] });
  });

  t.test('arbitrary installation: a timestamp signed by an unknown key is refused (E_REPO_SIGNATURE)', async (t) => {
    const { w, agent } = await baseline(t);
    const cur = await current(w);
    const ts = structuredClone(cur.timestamp.signed);
    ts.version += 1;
    serve(w, new Map([['/metadata/timestamp.json', bytesOf(sign('timestamp', ts, [await freshKey()]))]]));
    await refused(t, w, agent, 'E_REPO_SIGNATURE');
  });

  /** Root v2 (signed by the genuine root key) requiring 2 of 2 targets keys. */
  async function thresholdTwo(w: World) {
    const keys = await roleKeys(w);
    const second = await freshKey();
    const root = await readMeta(w, 'root.json');
    const signed = structuredClone(root.signed);
    signed.version = 2;
    signed.keys[second.key.keyID] = second.key.toJSON();
    signed.roles.targets = { keyids: [keys.targets.key.keyID, second.key.keyID], threshold: 2 };
    const root2 = bytesOf(sign('root', signed, [keys.root]));
    return { keys, second, root2 };
  }

  t.test('arbitrary installation: targets signed by 1 of the 2 keys the root requires are refused (E_REPO_SIGNATURE)', async (t) => {
    const { w, agent } = await baseline(t);
    const { keys, root2 } = await thresholdTwo(w);
    const overrides = await forge(w, () => undefined, { targets: [keys.targets] });
    overrides.set('/metadata/2.root.json', root2);
    serve(w, overrides);
    await refused(t, w, agent, 'E_REPO_SIGNATURE', { allowChanged: ['tuf/root.json', 'tuf/timestamp.json', 'tuf/snapshot.json'] });
  });

  t.test('arbitrary installation: one key signing twice does not count as two (E_REPO_SIGNATURE)', async (t) => {
    const { w, agent } = await baseline(t);
    const { keys, root2 } = await thresholdTwo(w);
    const overrides = await forge(w, () => undefined, { targets: [keys.targets] });
    const name = [...overrides.keys()].find((k) => k.endsWith('.targets.json'))!;
    const targets = JSON.parse(overrides.get(name)!.toString('utf8')) as Json;
    targets.signatures = [targets.signatures[0], { ...targets.signatures[0] }];
    const doubled = bytesOf(targets);
    // Re-forge snapshot and timestamp over the doubled targets bytes.
    const cur = await current(w);
    const snap = structuredClone(cur.snapshot.signed);
    snap.version += 1;
    snap.meta['targets.json'] = metaFile(cur.tv + 1, doubled);
    const snapshot = bytesOf(sign('snapshot', snap, [keys.snapshot]));
    const ts = structuredClone(cur.timestamp.signed);
    ts.version += 1;
    ts.meta['snapshot.json'] = metaFile(snap.version, snapshot);
    serve(
      w,
      new Map([
        ['/metadata/2.root.json', root2],
        [name, doubled],
        [`/metadata/${snap.version}.snapshot.json`, snapshot],
        ['/metadata/timestamp.json', bytesOf(sign('timestamp', ts, [keys.timestamp]))],
      ]),
    );
    await refused(t, w, agent, 'E_REPO_SIGNATURE', { allowChanged: ['tuf/root.json', 'tuf/timestamp.json', 'tuf/snapshot.json'] });
  });

  // ----------------------------------------------------- mix-and-match

  t.test('mix-and-match: an older targets file served under the version the snapshot names is refused', async (t) => {
    const { w, agent } = await baseline(t);
    const older = await current(w);
    await w.repo.publish(w.files['fix-2']);
    const now = await current(w);
    const oldTargets = await fs.readFile(path.join(w.repoDir, 'metadata', `${older.tv}.targets.json`));
    serve(w, new Map([[`/metadata/${now.tv}.targets.json`, oldTargets]]));
    // timestamp and snapshot are genuine and newer, so they are trusted; the mixed-in targets is not.
    await refused(t, w, agent, 'E_REPO_METADATA', { allowChanged: ['tuf/timestamp.json', 'tuf/snapshot.json'] });
  });

  t.test('mix-and-match: an older snapshot served under the version the timestamp names is refused', async (t) => {
    const { w, agent } = await baseline(t);
    const older = await current(w);
    await w.repo.publish(w.files['fix-2']);
    const now = await current(w);
    const oldSnapshot = await fs.readFile(path.join(w.repoDir, 'metadata', `${older.sv}.snapshot.json`));
    serve(w, new Map([[`/metadata/${now.sv}.snapshot.json`, oldSnapshot]]));
    await refused(t, w, agent, 'E_REPO_METADATA', { allowChanged: ['tuf/timestamp.json'] });
  });

  // -------------------------------------------------------- endless data

  t.test('endless data: an oversized timestamp is cut off (E_TOO_LARGE)', async (t) => {
    const { w, agent } = await baseline(t);
    serve(w, new Map([['/metadata/timestamp.json', Buffer.alloc(4 * 1024 * 1024, 0x20)]]));
    await refused(t, w, agent, 'E_TOO_LARGE');
  });

  t.test('endless data: an endless chunked timestamp body is cut off (E_TOO_LARGE)', async (t) => {
    const { w, agent } = await baseline(t);
    let sent = 0;
    w.server.intercept = (_req, res, urlPath) => {
      if (urlPath !== '/metadata/timestamp.json') return false;
      res.writeHead(200, { 'Content-Type': 'application/json' }); // no length: chunked
      const chunk = Buffer.alloc(64 * 1024, 0x20);
      const pump = () => {
        while (!res.destroyed && res.write(chunk)) sent += chunk.length;
        if (!res.destroyed) res.once('drain', pump);
      };
      res.on('close', () => undefined);
      pump();
      return true;
    };
    await refused(t, w, agent, 'E_TOO_LARGE');
    t.ok(sent < 64 * 1024 * 1024, `the client stopped reading (${sent} bytes sent)`);
  });

  t.test('endless data: a patch longer than its signed length is cut off (E_TOO_LARGE)', async (t) => {
    const { w, agent } = await baseline(t);
    const published = await w.repo.publish(w.files['fix-2']);
    const genuine = await fs.readFile(w.files['fix-2']);
    w.server.intercept = (_req, res, urlPath) => {
      if (!urlPath.startsWith('/targets/') || !urlPath.endsWith(published.patch.target.split('/')[1])) return false;
      res.writeHead(200, {}); // chunked: the genuine bytes, then more for ever
      res.write(genuine);
      const more = Buffer.alloc(64 * 1024, 0x41);
      const pump = () => {
        while (!res.destroyed && res.write(more));
        if (!res.destroyed) res.once('drain', pump);
      };
      pump();
      return true;
    };
    const report = await refused(t, w, agent, 'E_TOO_LARGE', { allowChanged: ['tuf/'] });
    t.equal(report?.refused[0].id, 'fix-2');
    t.same(await fs.readdir(path.join(w.state, 'downloads')), [], 'the refused download is deleted');
  });

  // ------------------------------------------------------ slow retrieval

  t.test('slow retrieval: a server trickling a patch is dropped (E_SLOW_RETRIEVAL)', async (t) => {
    const w = await makeWorld(t, { publish: ['fix-1'] });
    const agent = await w.agent({}, { transport: { retries: 0, minBytesPerSecond: 4096, rateWindowMs: 400, readTimeoutMs: 5000, connectTimeoutMs: 2000 } });
    await agent.checkOnce(); // trusted metadata, fix-1 staged
    await (await w.device()).boot();
    await agent.startup();
    const published = await w.repo.publish(w.files['fix-2']);
    const genuine = await fs.readFile(w.files['fix-2']);
    const timers = new Set<NodeJS.Timeout>();
    t.teardown(() => timers.forEach((x) => clearInterval(x)));
    w.server.intercept = (_req, res, urlPath) => {
      if (!urlPath.endsWith(published.patch.target.split('/')[1])) return false;
      res.writeHead(200, { 'Content-Length': genuine.length });
      let at = 0;
      const timer = setInterval(() => {
        if (res.destroyed || at >= genuine.length) return clearInterval(timer);
        res.write(genuine.subarray(at, at + 16));
        at += 16;
      }, 50);
      timers.add(timer);
      return true;
    };
    // A partial download is kept for resumption; everything else is unchanged.
    await refused(t, w, agent, 'E_SLOW_RETRIEVAL', { allowChanged: ['tuf/', 'downloads/'] });
  });

  t.test('slow retrieval: a server that never answers the metadata request is dropped', async (t) => {
    const { w } = await baseline(t);
    const agent = await w.agent({}, { transport: { retries: 0, connectTimeoutMs: 300, readTimeoutMs: 300 } });
    w.server.intercept = (_req, _res, urlPath) => urlPath === '/metadata/timestamp.json'; // hold the request open
    await refused(t, w, agent, 'E_SLOW_RETRIEVAL');
  });

  // ------------------------------------------------------- wrong software

  t.test('wrong software: another valid patch served in place of the one named is refused from its header (E_LENGTH_MISMATCH)', async (t) => {
    const { w, agent } = await baseline(t);
    const published = await w.repo.publish(w.files['fix-2']);
    const wrong = await fs.readFile(w.files['fix-1']);
    const padded = Buffer.concat([wrong, Buffer.alloc(Math.max(0, published.patch.length - wrong.length))]).subarray(0, published.patch.length);
    w.server.intercept = (_req, res, urlPath) => {
      if (!urlPath.endsWith(published.patch.target.split('/')[1])) return false;
      // All but the last byte, and the response stays open: only the header can refuse it.
      res.writeHead(200, { 'Content-Length': padded.length });
      res.write(padded.subarray(0, padded.length - 1));
      return true;
    };
    const report = await refused(t, w, agent, 'E_LENGTH_MISMATCH', { allowChanged: ['tuf/'] });
    t.equal(report?.refused[0].id, 'fix-2');
    t.same(await fs.readdir(path.join(w.state, 'downloads')), [], 'the refused download is deleted');
  });

  t.test('wrong software: the named patch with a payload byte changed is refused by its hash (E_HASH_MISMATCH)', async (t) => {
    const { w, agent } = await baseline(t);
    const published = await w.repo.publish(w.files['fix-2']);
    const tampered = await fs.readFile(w.files['fix-2']);
    const header = decodeHeader(tampered);
    tampered[header.payloadOffset + Math.floor(header.payloadLength / 2)] ^= 0xff;
    w.server.intercept = (_req, res, urlPath) => {
      if (!urlPath.endsWith(published.patch.target.split('/')[1])) return false;
      res.writeHead(200, { 'Content-Length': tampered.length }).end(tampered);
      return true;
    };
    const report = await refused(t, w, agent, 'E_HASH_MISMATCH', { allowChanged: ['tuf/'] });
    t.equal(report?.refused[0].id, 'fix-2');
    t.same(await fs.readdir(path.join(w.state, 'downloads')), [], 'the refused download is deleted');
  });

  t.test('wrong software: signed metadata naming fix-2 for a file that is fix-1 is refused (E_REPO_METADATA)', async (t) => {
    const { w, agent } = await baseline(t);
    const published = await w.repo.publish(w.files['fix-2']);
    let fix1Hash = '';
    const overrides = await forge(w, (targets) => {
      const entry = targets.targets[published.patch.target];
      const fix1 = Object.values(targets.targets as Record<string, Json>).find((x) => x.custom.revpatch.id === 'fix-1')!;
      entry.length = fix1.length;
      entry.hashes = fix1.hashes;
      entry.custom.revpatch.size = fix1.length;
      fix1Hash = fix1.hashes.sha256;
    });
    // The attacker also puts the file where the forged hash says it is.
    overrides.set(`/targets/patches/${fix1Hash}.fix-2-v1.rvp`, await fs.readFile(w.files['fix-1']));
    serve(w, overrides);
    const report = await refused(t, w, agent, 'E_REPO_METADATA', { allowChanged: ['tuf/'] });
    t.match(report?.refused[0].message, /holds id fix-1/);
  });

  t.test('wrong software: a patch presented as for the base but made for fix-1 is refused (E_REPO_METADATA)', async (t) => {
    const w = await makeWorld(t, { publish: ['fix-1'] });
    const agent = await w.agent();
    await w.repo.publish(w.files['fix-2']);
    const device = await w.device();
    const base = device.config.baseDigest;
    const overrides = await forge(w, (targets) => {
      delete targets.targets['patches/fix-1-v1.rvp'];
      const entry = targets.targets['patches/fix-2-v1.rvp'];
      entry.custom.revpatch.parent = null;
      entry.custom.revpatch.sourceDigest = base;
    });
    serve(w, overrides);
    // First contact: nothing is trusted yet beyond the root.
    const before = await w.stateSnapshot({ without: ['tuf/', 'agent/', 'downloads/'] });
    const report = await agent.checkOnce();
    t.equal(report.refused[0]?.code, 'E_REPO_METADATA');
    t.match(report.refused[0]?.message, /parent fix-1/);
    t.same(report.staged, []);
    t.same(await w.stateSnapshot({ without: ['tuf/', 'agent/', 'downloads/'] }), before, 'the device is unchanged');
    t.same(await fs.readdir(path.join(w.state, 'downloads')), [], 'and nothing is kept of the download');
  });

  // ------------------------------------------------------ recalled replay

  t.test('replay of a recalled patch: the metadata from before the recall is refused (E_REPO_ROLLBACK)', async (t) => {
    const { w, agent } = await baseline(t);
    const keep = await current(w);
    const oldFiles = new Map<string, Buffer>([
      ['/metadata/timestamp.json', await fs.readFile(path.join(w.repoDir, 'metadata', 'timestamp.json'))],
      [`/metadata/${keep.sv}.snapshot.json`, await fs.readFile(path.join(w.repoDir, 'metadata', `${keep.sv}.snapshot.json`))],
      [`/metadata/${keep.tv}.targets.json`, await fs.readFile(path.join(w.repoDir, 'metadata', `${keep.tv}.targets.json`))],
    ]);
    await w.repo.recall('fix-1');
    await agent.checkOnce();
    await (await w.device()).boot();
    await agent.startup();
    t.equal((await w.device()).list()[0].state, 'removed');
    serve(w, oldFiles);
    await refused(t, w, agent, 'E_REPO_ROLLBACK');
  });

  t.test('replay of a recalled patch: metadata that un-recalls it (targets key compromised) does not reinstall it', async (t) => {
    const { w, agent } = await baseline(t);
    await w.repo.recall('fix-1');
    await agent.checkOnce();
    await (await w.device()).boot();
    await agent.startup();
    serve(
      w,
      await forge(w, (targets) => {
        targets.targets['patches/fix-1-v1.rvp'].custom.revpatch.recalled = false;
      }),
    );
    const before = await w.stateSnapshot({ without: ['tuf/'] });
    const report = await agent.checkOnce();
    t.same(report.staged, []);
    t.same(report.skipped.map((s) => [s.id, s.code]), [['fix-1', 'held-before']]);
    t.same(await w.stateSnapshot({ without: ['tuf/'] }), before);
  });

  // ------------------------------------------------------ path traversal

  for (const evil of ['patches/../../state/commit.rec', '../../../../tmp/revpatch-evil-v1.rvp', 'patches/%2e%2e/x-v1.rvp', '/etc/passwd']) {
    t.test(`path traversal: a target named ${JSON.stringify(evil)} is refused (E_UNSAFE_TARGET)`, async (t) => {
      const { w, agent } = await baseline(t);
      const overrides = await forge(w, (targets) => {
        const entry = structuredClone(targets.targets['patches/fix-1-v1.rvp']);
        targets.targets[evil] = entry;
      });
      serve(w, overrides);
      await refused(t, w, agent, 'E_UNSAFE_TARGET', { allowChanged: ['tuf/'] });
      t.notOk(w.server.requests.some((r) => r.includes('..') || r.includes('passwd')), 'nothing was fetched by that name');
    });
  }

  // ---------------------------------------- fast-forward, then key rotation

  t.test('fast-forward then key rotation: a rotated timestamp key recovers the device and the old key is refused', async (t) => {
    const { w, agent } = await baseline(t);
    const keys = await roleKeys(w);
    const cur = await current(w);
    // The attacker holds the timestamp key and fast-forwards the version.
    const ffSigned = structuredClone(cur.timestamp.signed);
    ffSigned.version = 2 ** 30;
    const fastForward = bytesOf(sign('timestamp', ffSigned, [keys.timestamp]));
    serve(w, new Map([['/metadata/timestamp.json', fastForward]]));
    await agent.checkOnce();
    w.server.intercept = null;
    // The vendor publishes: the genuine, lower timestamp now looks like a rollback.
    await w.repo.publish(w.files['fix-2']);
    await refused(t, w, agent, 'E_REPO_ROLLBACK');
    // The vendor rotates the timestamp key (root v2): the fast-forwarded timestamp no longer verifies.
    await w.repo.rotateKey({ role: 'timestamp' });
    const recovered = await agent.checkOnce();
    t.same(recovered.staged, ['fix-2'], 'the device recovered and took the new patch');
    // The attacker's old key is now refused.
    const ts = structuredClone((await current(w)).timestamp.signed);
    ts.version = 2 ** 30 + 1;
    serve(w, new Map([['/metadata/timestamp.json', bytesOf(sign('timestamp', ts, [keys.timestamp]))]]));
    await refused(t, w, agent, 'E_REPO_SIGNATURE');
  });
}
