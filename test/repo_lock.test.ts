/**
 * One publisher at a time: every change of a repository holds the lock on
 * its directory. A second publisher gets E_BUSY and changes nothing (or
 * waits when told to), a lock left by a killed publisher is taken over, and
 * publishers racing on one repository leave one valid chain of metadata.
 */
import { existsSync, promises as fs, watch } from 'node:fs';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import t, { type Test as Tap } from 'tap';
import { StateLock } from '../lib/engine/lock';
import { RepositoryClient } from '../lib/repo/client';
import { Repository } from '../lib/repo/publisher';
import { serveRepository } from '../lib/repo/serve';
import { addonBuilt, ADDON, CLI, exited, holdLock, ROOT, runCli, snapshot, tempDir } from './helpers';
import { rejectsWith, repoFixture, type RepoFixture } from './repo_fixture';

const SKIP = addonBuilt() ? false : `needs the native addon (${ADDON})`;
/** The tests with another process holding the lock run it from dist/ (holdLock) and the CLI. */
const SKIP_DIST = SKIP || (existsSync(path.join(ROOT, 'dist', 'engine', 'lock.js')) ? false : 'dist/ not built (npx tsc -p .)');

/** The repository's files and their digests, without the lock file itself. */
async function files(repoDir: string): Promise<Record<string, string>> {
  const all = await snapshot(repoDir);
  delete all['lock'];
  return all;
}

/** The patches a TUF client sees after a full refresh: the metadata is a valid chain. */
async function verifiedPatches(t: Tap, f: RepoFixture): Promise<string[]> {
  const server = await serveRepository(f.repoDir, { port: 0 });
  t.teardown(() => server.close());
  const client = await RepositoryClient.open(await tempDir(t, 'revpatch-state-'), {
    url: server.url,
    rootPath: path.join(f.repoDir, 'metadata', '1.root.json'),
    transport: { retries: 0 },
  });
  await client.refresh();
  return (await client.patches()).map((p) => p.target);
}

t.test('while another publisher holds the lock every change is E_BUSY and the repository stays byte for byte the same', { skip: SKIP }, async (t) => {
  const f = await repoFixture(t);
  await f.repo.publish(f.patch1);
  const other = await Repository.open(f.repoDir);
  const held = await StateLock.acquire(f.repoDir);
  t.teardown(() => held.release());
  const before = await files(f.repoDir);
  const changes: Array<[string, () => Promise<unknown>]> = [
    ['publish', () => other.publish(f.patch2)],
    ['recall', () => other.recall('fix-1')],
    ['refresh', () => other.refresh()],
    ['rotate-key', () => other.rotateKey({ role: 'timestamp' })],
    ['init', () => Repository.init(f.repoDir, { publisherKey: f.pubPath })],
  ];
  for (const [name, change] of changes) {
    const err = await rejectsWith(t, change(), 'E_BUSY', `${name} is refused`);
    t.match(err?.message, new RegExp(`pid ${process.pid}\\) is changing ${f.repoDir}`));
  }
  t.same(await files(f.repoDir), before, 'nothing changed');
  await held.release();
  const published = await other.publish(f.patch2);
  t.equal(published.targetsVersion, 3, 'once free, the change builds on the last commit');
  t.same(await verifiedPatches(t, f), ['patches/fix-1-v1.rvp', 'patches/fix-2-v2.rvp']);
});

t.test('a change made through another handle since open is built upon, not overwritten', { skip: SKIP }, async (t) => {
  const f = await repoFixture(t);
  const a = await Repository.open(f.repoDir);
  const b = await Repository.open(f.repoDir);
  t.equal((await a.publish(f.patch1)).targetsVersion, 2);
  const second = await b.publish(f.patch2);
  t.equal(second.targetsVersion, 3, 'b re-read the metadata a committed');
  t.equal(second.timestampVersion, 3);
  t.same(b.patches().map((p) => p.id), ['fix-1', 'fix-2']);
  t.same(await verifiedPatches(t, f), ['patches/fix-1-v1.rvp', 'patches/fix-2-v2.rvp']);
});

t.test('two publishes at once with lockWaitMs: the second waits for the first and the metadata stays one valid chain', { skip: SKIP }, async (t) => {
  const f = await repoFixture(t);
  const [a, b] = await Promise.all([
    Repository.open(f.repoDir, { lockWaitMs: 30_000 }),
    Repository.open(f.repoDir, { lockWaitMs: 30_000 }),
  ]);
  const results = await Promise.all([a.publish(f.patch1), b.publish(f.patch2)]);
  t.same(results.map((r) => r.targetsVersion).sort(), [2, 3]);
  t.same(results.map((r) => r.timestampVersion).sort(), [2, 3]);
  t.same(await verifiedPatches(t, f), ['patches/fix-1-v1.rvp', 'patches/fix-2-v2.rvp']);
});

t.test('two publishes at once without waiting: each lands whole or is E_BUSY, and the metadata lists exactly those that landed', { skip: SKIP }, async (t) => {
  const f = await repoFixture(t);
  const [a, b] = await Promise.all([Repository.open(f.repoDir), Repository.open(f.repoDir)]);
  const settled = await Promise.allSettled([a.publish(f.patch1), b.publish(f.patch2)]);
  const landed: string[] = [];
  for (const s of settled) {
    if (s.status === 'fulfilled') landed.push(s.value.patch.target);
    else t.equal((s.reason as { code?: string }).code, 'E_BUSY', 'the only failure is E_BUSY');
  }
  t.ok(landed.length >= 1, `${landed.length} of 2 landed`);
  t.same(await verifiedPatches(t, f), landed.sort());
});

t.test('a lock left by a killed publisher is taken over', { skip: SKIP_DIST }, async (t) => {
  const f = await repoFixture(t);
  const holder = await holdLock(f.repoDir, 60_000);
  holder.kill('SIGKILL');
  await exited(holder);
  t.ok(await fs.stat(path.join(f.repoDir, 'lock')), 'the dead publisher left its lock file');
  t.equal((await f.repo.publish(f.patch1)).targetsVersion, 2);
  t.notOk(await fs.stat(path.join(f.repoDir, 'lock')).catch(() => null), 'and it is gone after use');
});

t.test('revpatch repo publish: E_BUSY while another publisher holds the lock, and with --wait it waits until the lock is free', { skip: SKIP_DIST }, async (t) => {
  const f = await repoFixture(t);
  const holder = await holdLock(f.repoDir, 600_000);
  t.teardown(() => holder.kill('SIGKILL'));
  const before = await files(f.repoDir);
  const busy = runCli(['repo', 'publish', f.repoDir, f.patch1]);
  t.equal(busy.code, 1);
  t.match(busy.stderr, new RegExp(`^error E_BUSY: another revpatch process \\(pid ${holder.pid}\\)`, 'm'));
  t.same(await files(f.repoDir), before, 'nothing changed');

  // The waiting publisher claims the lock again and again; after its second
  // claim the holder dies, and the next claim takes the stale lock over.
  const claims = new Set<string>();
  let cli: ReturnType<typeof spawn> | null = null;
  const waiting = new Promise<void>((resolve) => {
    const watcher = watch(f.repoDir, (_event, name) => {
      if (cli && name?.startsWith(`lock.${cli.pid}.`)) claims.add(name);
      if (claims.size >= 2) {
        watcher.close();
        resolve();
      }
    });
    t.teardown(() => watcher.close());
  });
  cli = spawn(process.execPath, [CLI, '--wait', '600', '--json', 'repo', 'publish', f.repoDir, f.patch1], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  cli.stdout!.on('data', (d) => (stdout += d));
  cli.stderr!.on('data', (d) => (stderr += d));
  const done = new Promise<number | null>((resolve) => cli!.once('exit', (code) => resolve(code)));
  const first = await Promise.race([waiting.then(() => 'waiting'), done.then(() => 'exited')]);
  t.equal(first, 'waiting', `the publisher waits for the lock (${stderr.trim()})`);
  holder.kill('SIGKILL');
  t.equal(await done, 0, stderr);
  t.equal(JSON.parse(stdout).targetsVersion, 2);
});
