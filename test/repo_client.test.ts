import * as crypto from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import t, { type Test } from 'tap';
import { Metadata, MetadataKind, MetaFile } from '@tufjs/models';
import { writeKeyPair } from '../lib/patch/keys';
import { RepositoryClient } from '../lib/repo/client';
import { loadTufKey, signerOf } from '../lib/repo/keys';
import { serveRepository } from '../lib/repo/serve';
import { addonBuilt, ADDON, tempDir } from './helpers';
import { rejectsWith, repoFixture, type RepoFixture } from './repo_fixture';

const SKIP = addonBuilt() ? false : `needs the native addon (${ADDON})`;
const DAY = 86400 * 1000;
const FAST = { retries: 0, connectTimeoutMs: 20_000, readTimeoutMs: 20_000, minBytesPerSecond: 0 };

async function json(file: string): Promise<any> {
  return JSON.parse(await fs.readFile(file, 'utf8'));
}

async function served(t: Tap, f: RepoFixture) {
  const server = await serveRepository(f.repoDir, { port: 0 });
  t.teardown(() => server.close());
  return server.url;
}
type Tap = Test;

async function client(t: Tap, f: RepoFixture, url: string, now?: () => Date) {
  const state = await tempDir(t, 'revpatch-state-');
  const c = await RepositoryClient.open(state, {
    url,
    rootPath: path.join(f.repoDir, 'metadata', '1.root.json'),
    now,
    transport: FAST,
  });
  return { state, c };
}

/**
 * Writes a new targets version changed by `mutate`, signed by `signWith`
 * (default the targets key), and a matching snapshot and timestamp: what a
 * publisher (or one who stole a key) could serve.
 */
async function forgeTargets(f: RepoFixture, mutate: (signed: any) => void, signWith?: string) {
  const meta = path.join(f.repoDir, 'metadata');
  const config = await json(path.join(f.repoDir, 'repo.json'));
  const key = async (role: string) => loadTufKey(path.resolve(f.repoDir, config.keys[role]));
  const ts = await json(path.join(meta, 'timestamp.json'));
  const snap = await json(path.join(meta, `${ts.signed.meta['snapshot.json'].version}.snapshot.json`));
  const tv = snap.signed.meta['targets.json'].version;
  const targets = await json(path.join(meta, `${tv}.targets.json`));
  targets.signed.version = tv + 1;
  mutate(targets.signed);
  const tmd = Metadata.fromJSON(MetadataKind.Targets, { signed: targets.signed, signatures: [] });
  tmd.sign(signerOf(signWith ? await loadTufKey(signWith) : await key('targets')));
  const tbytes = Buffer.from(JSON.stringify(tmd.toJSON()));
  await fs.writeFile(path.join(meta, `${tv + 1}.targets.json`), tbytes);
  const sv = snap.signed.version + 1;
  const smd = Metadata.fromJSON(MetadataKind.Snapshot, { signed: { ...snap.signed, version: sv }, signatures: [] });
  smd.signed.meta['targets.json'] = new MetaFile({
    version: tv + 1,
    length: tbytes.length,
    hashes: { sha256: crypto.createHash('sha256').update(tbytes).digest('hex') },
  });
  smd.sign(signerOf(await key('snapshot')));
  const sbytes = Buffer.from(JSON.stringify(smd.toJSON()));
  await fs.writeFile(path.join(meta, `${sv}.snapshot.json`), sbytes);
  const tsmd = Metadata.fromJSON(MetadataKind.Timestamp, { signed: { ...ts.signed, version: ts.signed.version + 1 }, signatures: [] });
  (tsmd.signed as any).snapshotMeta = new MetaFile({
    version: sv,
    length: sbytes.length,
    hashes: { sha256: crypto.createHash('sha256').update(sbytes).digest('hex') },
  });
  tsmd.sign(signerOf(await key('timestamp')));
  await fs.writeFile(path.join(meta, 'timestamp.json'), JSON.stringify(tsmd.toJSON()));
}

t.test('refresh lists the published patches from verified custom fields and persists metadata', { skip: SKIP }, async (t) => {
  const f = await repoFixture(t);
  await f.repo.publish(f.patch1, { rollout: 40 });
  await f.repo.publish(f.patch2);
  const url = await served(t, f);
  const { state, c } = await client(t, f, url);
  await c.refresh();
  const patches = await c.patches();
  t.same(patches.map((p) => `${p.id}@${p.version}`), ['fix-1@1', 'fix-2@2']);
  t.match(patches[0], { rollout: 40, recalled: false, parent: null });
  t.match(patches[1], { parent: 'fix-1' });
  const names = (await fs.readdir(path.join(state, 'tuf'))).sort();
  t.same(names, ['root.json', 'snapshot.json', 'targets.json', 'timestamp.json'], 'no temporary files left behind');
  const ts = await json(path.join(state, 'tuf', 'timestamp.json'));
  t.equal(ts.signed.version, 3);
  await f.repo.recall('fix-1');
  await c.refresh();
  t.equal((await c.patches())[0].recalled, true, 'a recall arrives with the next refresh');
});

t.test('download fetches the hash-prefixed target and checks length and hash', { skip: SKIP }, async (t) => {
  const f = await repoFixture(t);
  const { patch } = await f.repo.publish(f.patch1);
  const url = await served(t, f);
  const { state, c } = await client(t, f, url);
  const [p] = await c.patches();
  const dest = path.join(state, 'fix-1.rvp');
  const r = await c.download(p, dest);
  t.equal(r.bytes, patch.length);
  t.same(await fs.readFile(dest), await fs.readFile(f.patch1));
  // The caller's description is not trusted: only the verified metadata's length and hash count.
  const lie = { ...p, length: p.length + 100, sha256: '0'.repeat(64) };
  const again = await c.download(lie, path.join(state, 'again.rvp'));
  t.equal(again.bytes, patch.length);
  await rejectsWith(t, c.download({ ...p, target: 'patches/other-v1.rvp' }, path.join(state, 'x')), 'E_UNKNOWN_PATCH');
});

t.test('a tampered target on the server is refused with E_HASH_MISMATCH and not kept', { skip: SKIP }, async (t) => {
  const f = await repoFixture(t);
  const { patch } = await f.repo.publish(f.patch1);
  const stored = path.join(f.repoDir, 'targets', 'patches', `${patch.sha256}.fix-1-v1.rvp`);
  const bytes = await fs.readFile(stored);
  bytes[bytes.length - 1] ^= 1;
  await fs.writeFile(stored, bytes);
  const url = await served(t, f);
  const { state, c } = await client(t, f, url);
  const [p] = await c.patches();
  const dest = path.join(state, 'p.rvp');
  await rejectsWith(t, c.download(p, dest), 'E_HASH_MISMATCH');
  t.equal((await fs.stat(dest)).size, 0, 'the bad bytes are discarded');
});

t.test('a target larger than announced is cut off with E_TOO_LARGE', { skip: SKIP }, async (t) => {
  const f = await repoFixture(t);
  const { patch } = await f.repo.publish(f.patch1);
  const stored = path.join(f.repoDir, 'targets', 'patches', `${patch.sha256}.fix-1-v1.rvp`);
  await fs.appendFile(stored, Buffer.alloc(4096, 7));
  const url = await served(t, f);
  const { state, c } = await client(t, f, url);
  const [p] = await c.patches();
  await rejectsWith(t, c.download(p, path.join(state, 'p.rvp')), 'E_TOO_LARGE');
});

t.test('freeze: expired timestamp metadata is refused with E_REPO_EXPIRED (injected clock)', { skip: SKIP }, async (t) => {
  const f = await repoFixture(t);
  await f.repo.publish(f.patch1);
  const url = await served(t, f);
  let now = new Date();
  const { state, c } = await client(t, f, url, () => now);
  await c.refresh();
  const before = await fs.readFile(path.join(state, 'tuf', 'timestamp.json'));
  now = new Date(Date.now() + 2 * DAY); // the timestamp lives one day
  await rejectsWith(t, c.refresh(), 'E_REPO_EXPIRED');
  t.same(await fs.readFile(path.join(state, 'tuf', 'timestamp.json')), before, 'trusted metadata unchanged');
  now = new Date(Date.now() + 400 * DAY);
  await rejectsWith(t, c.refresh(), 'E_REPO_EXPIRED', 'an expired root too');
});

t.test('rollback: an older timestamp than the trusted one is refused with E_REPO_ROLLBACK', { skip: SKIP }, async (t) => {
  const f = await repoFixture(t);
  await f.repo.publish(f.patch1);
  const old = await fs.readFile(path.join(f.repoDir, 'metadata', 'timestamp.json'));
  await f.repo.publish(f.patch2);
  const url = await served(t, f);
  const { c } = await client(t, f, url);
  await c.refresh();
  await fs.writeFile(path.join(f.repoDir, 'metadata', 'timestamp.json'), old);
  await rejectsWith(t, c.refresh(), 'E_REPO_ROLLBACK');
});

t.test('targets signed by an unknown key are refused with E_REPO_SIGNATURE', { skip: SKIP }, async (t) => {
  const f = await repoFixture(t);
  await f.repo.publish(f.patch1);
  const intruder = path.join(f.dir, 'intruder');
  const k = await writeKeyPair(intruder);
  await forgeTargets(f, (s) => (s.targets['patches/fix-1-v1.rvp'].custom.revpatch.rollout = 100), k.secretKeyPath);
  const url = await served(t, f);
  const { c } = await client(t, f, url);
  await rejectsWith(t, c.refresh(), 'E_REPO_SIGNATURE');
});

t.test('a target name with path traversal is refused with E_UNSAFE_TARGET', { skip: SKIP }, async (t) => {
  const f = await repoFixture(t);
  const { patch } = await f.repo.publish(f.patch1);
  await forgeTargets(f, (s) => {
    const entry = s.targets['patches/fix-1-v1.rvp'];
    s.targets['patches/../../../etc/cron.d/x-v1.rvp'] = entry;
    delete s.targets['patches/fix-1-v1.rvp'];
  });
  const url = await served(t, f);
  const { c } = await client(t, f, url);
  await c.refresh();
  await rejectsWith(t, c.patches(), 'E_UNSAFE_TARGET');
  t.ok(patch);
});

t.test('endless data: an oversized timestamp is cut off with E_TOO_LARGE', { skip: SKIP }, async (t) => {
  const f = await repoFixture(t);
  const upstream = await served(t, f);
  // A server that answers timestamp.json with an endless chunked body.
  const server = http.createServer(async (req, res) => {
    if (req.url?.endsWith('/timestamp.json')) {
      res.writeHead(200);
      const blob = Buffer.alloc(64 * 1024, 0x20);
      const pump = () => {
        while (res.write(blob));
      };
      res.on('drain', pump);
      pump();
      req.on('close', () => res.destroy());
      return;
    }
    const r = await fetch(`${upstream}${req.url}`);
    res.writeHead(r.status);
    res.end(Buffer.from(await r.arrayBuffer()));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });
  const { c } = await client(t, f, `http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  await rejectsWith(t, c.refresh(), 'E_TOO_LARGE');
});

t.test('a rotated root is followed; a root rotation with the old chain broken is refused', { skip: SKIP }, async (t) => {
  const f = await repoFixture(t);
  await f.repo.publish(f.patch1);
  const url = await served(t, f);
  const { state, c } = await client(t, f, url);
  await c.refresh();
  await f.repo.rotateKey({ role: 'root' });
  await f.repo.rotateKey({ role: 'targets' });
  await f.repo.publish(f.patch2);
  await c.refresh();
  t.equal((await json(path.join(state, 'tuf', 'root.json'))).signed.version, 3, 'the client walked the root chain');
  t.equal((await c.patches()).length, 2);
  // A 4th root signed only by a key the 3rd root does not trust.
  const meta = path.join(f.repoDir, 'metadata');
  const r3 = await json(path.join(meta, '3.root.json'));
  const k = await writeKeyPair(path.join(f.dir, 'evil'));
  const md = Metadata.fromJSON(MetadataKind.Root, { signed: { ...r3.signed, version: 4 }, signatures: [] });
  md.sign(signerOf(await loadTufKey(k.secretKeyPath)));
  await fs.writeFile(path.join(meta, '4.root.json'), JSON.stringify(md.toJSON()));
  await rejectsWith(t, c.refresh(), 'E_REPO_SIGNATURE');
  t.equal((await json(path.join(state, 'tuf', 'root.json'))).signed.version, 3, 'the trusted root stays');
});

t.test('open refuses a root that is not signed by its own keys, and bad URLs', { skip: SKIP }, async (t) => {
  const f = await repoFixture(t);
  const root = await json(path.join(f.repoDir, 'metadata', '1.root.json'));
  root.signatures[0].sig = '00'.repeat(64);
  const bad = path.join(f.dir, 'bad-root.json');
  await fs.writeFile(bad, JSON.stringify(root));
  const state = await tempDir(t);
  await rejectsWith(t, RepositoryClient.open(state, { url: 'http://127.0.0.1:1', rootPath: bad }), 'E_REPO_SIGNATURE');
  t.same(await fs.readdir(path.join(state, 'tuf')), [], 'nothing trusted');
  await rejectsWith(t, RepositoryClient.open(state, { url: 'ftp://x', rootPath: bad }), 'E_INVALID_ARGUMENT');
  const good = path.join(f.repoDir, 'metadata', '1.root.json');
  const c = await RepositoryClient.open(state, { url: 'http://127.0.0.1:1', rootPath: good, transport: FAST });
  await rejectsWith(t, c.refresh(), 'E_NETWORK', 'a refused connection is E_NETWORK');
});
