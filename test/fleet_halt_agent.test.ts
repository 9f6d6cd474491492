import t from 'tap';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { haltDecision } from '../lib/agent/policy';
import { Repository, repoPatchOf } from '../lib/repo/publisher';
import { TargetFile } from '@tufjs/models';
import { addonBuilt } from './helpers';
import { exported, makeWorld } from './agent_fixture';
import { rejectsWith, repoFixture } from './repo_fixture';

t.test('the halt rule: a halted patch is skipped unless the device holds it', async (t) => {
  const offered = { id: 'fix-1', version: 1, halted: true };
  t.equal(haltDecision({ ...offered, halted: false }, []).action, 'continue');
  const skip = haltDecision(offered, []);
  t.equal(skip.action, 'skip');
  t.equal(skip.code, 'halted');
  for (const state of ['staged', 'trial', 'active']) {
    const keep = haltDecision(offered, [{ id: 'fix-1', version: 1, parent: null, state }]);
    t.equal(keep.action, 'keep', state);
    t.equal(keep.code, 'halted-kept');
  }
  t.equal(haltDecision(offered, [{ id: 'fix-1', version: 1, parent: null, state: 'removed' }]).action, 'skip', 'a removed patch is not held');
  t.equal(haltDecision(offered, [{ id: 'other', version: 1, parent: null, state: 'active' }]).action, 'skip');
});

t.test('the repository signs the halted flag and the rollout of one patch version', async (t) => {
  const f = await repoFixture(t);
  await f.repo.publish(f.patch1, { rollout: 100 });
  const before = await Repository.open(f.repoDir);
  t.equal(before.patches()[0].halted, false, 'published patches are not halted');
  const tsBefore = JSON.parse(await fs.readFile(path.join(f.repoDir, 'metadata', 'timestamp.json'), 'utf8')).signed.version;

  const halted = await f.repo.setHalted('fix-1', 1, true);
  t.equal(halted.halted, true);
  t.equal(halted.rollout, 100);
  const rolled = await f.repo.setRollout('fix-1', 1, 5);
  t.equal(rolled.rollout, 5);
  t.equal(rolled.halted, true, 'the other flag stays');
  const reread = (await Repository.open(f.repoDir)).patches()[0];
  t.equal(reread.halted, true);
  t.equal(reread.rollout, 5);
  const tsAfter = JSON.parse(await fs.readFile(path.join(f.repoDir, 'metadata', 'timestamp.json'), 'utf8')).signed.version;
  t.equal(tsAfter, tsBefore + 2, 'each change re-signs the timestamp');

  const same = await f.repo.setRollout('fix-1', 1, 5);
  t.equal(same.rollout, 5);
  const tsSame = JSON.parse(await fs.readFile(path.join(f.repoDir, 'metadata', 'timestamp.json'), 'utf8')).signed.version;
  t.equal(tsSame, tsAfter, 'a change that changes nothing writes nothing');

  await f.repo.publish(f.patch1, { rollout: 50 });
  const republished = (await Repository.open(f.repoDir)).patches()[0];
  t.equal(republished.rollout, 50, 'repo publish still sets the rollout');
  t.equal(republished.halted, true, 'publishing the same file again does not lift a halt');
});

t.test('changing an unknown, recalled or badly given patch is refused and changes nothing', async (t) => {
  const f = await repoFixture(t);
  await f.repo.publish(f.patch1, { rollout: 10 });
  const ts = async () => JSON.parse(await fs.readFile(path.join(f.repoDir, 'metadata', 'timestamp.json'), 'utf8')).signed.version;
  const start = await ts();
  await rejectsWith(t, f.repo.setRollout('nope', 1, 5), 'E_UNKNOWN_PATCH');
  await rejectsWith(t, f.repo.setHalted('fix-1', 2, true), 'E_UNKNOWN_PATCH', 'an unpublished version');
  await rejectsWith(t, f.repo.setRollout('fix-1', 1, 101), 'E_INVALID_ARGUMENT');
  await rejectsWith(t, f.repo.setRollout('fix-1', 1, NaN), 'E_INVALID_ARGUMENT');
  await rejectsWith(t, f.repo.update('fix-1', 1, { recalled: false }), 'E_INVALID_ARGUMENT', 'a recall cannot be undone');
  await rejectsWith(t, f.repo.setHalted('fix-1', 1, 'yes' as unknown as boolean), 'E_INVALID_ARGUMENT');
  t.equal(await ts(), start, 'nothing was written');
  await f.repo.update('fix-1', 1, { recalled: true, halted: true });
  const recalled = await ts();
  await rejectsWith(t, f.repo.setRollout('fix-1', 1, 50), 'E_STATE');
  await rejectsWith(t, f.repo.setHalted('fix-1', 1, false), 'E_STATE');
  t.equal((await f.repo.setHalted('fix-1', 1, true)).recalled, true, 'asking for what a recalled patch already is is no change');
  t.equal(await ts(), recalled, 'nothing was written');
  const p = (await Repository.open(f.repoDir)).patches()[0];
  t.same([p.rollout, p.halted, p.recalled], [10, true, true]);
});

t.test('metadata written before the halted flag reads as not halted; a bad flag is refused', async (t) => {
  const custom = {
    id: 'fix-1', parent: null, version: 1, rollout: 100, recalled: false, severity: 'high', title: 't', size: 10,
    payloadDigest: 'a', sourceDigest: 'b', publishedAt: '2026-01-01T00:00:00.000Z',
  };
  const target = (c: object) =>
    new TargetFile({ path: 'patches/fix-1-v1.rvp', length: 10, hashes: { sha256: 'a'.repeat(64) }, unrecognizedFields: { custom: { revpatch: c } as never } });
  t.equal(repoPatchOf(target(custom)).halted, false);
  t.equal(repoPatchOf(target({ ...custom, halted: true })).halted, true);
  t.throws(() => repoPatchOf(target({ ...custom, halted: 'yes' })), { code: 'E_REPO_METADATA' });
});

if (!addonBuilt()) {
  t.skip('native addon not built (npm run build)', () => {});
} else {
  t.test('the agent skips a halted patch it does not hold, and takes it once the halt is lifted', async (t) => {
    const w = await makeWorld(t, { publish: ['fix-1'] });
    await w.repo.setHalted('fix-1', 1, true);
    const agent = await w.agent();
    const report = await agent.checkOnce();
    t.same(report.staged, []);
    t.same(report.skipped.map((s) => [s.id, s.code]), [['fix-1', 'halted']]);
    t.notOk(w.server.requests.some((r) => r.startsWith('/targets/')), 'nothing was downloaded');
    t.same((await w.device()).list(), []);
    await w.repo.setHalted('fix-1', 1, false);
    t.same((await agent.checkOnce()).staged, ['fix-1']);
  });

  t.test('a halt also keeps a patch from a device whose auto-install is off', async (t) => {
    const w = await makeWorld(t, { publish: ['fix-1'] });
    await w.repo.setHalted('fix-1', 1, true);
    const agent = await w.agent({ settings: { autoInstall: false } });
    const report = await agent.checkOnce();
    t.same(report.available, [], 'the user is not offered it');
    t.equal(report.skipped[0].code, 'halted');
  });

  t.test('a device that holds a halted patch keeps it: staged stays staged, then it boots and is confirmed', async (t) => {
    const w = await makeWorld(t, { publish: ['fix-1'] });
    const agent = await w.agent({ hooks: { healthCheck: () => true } });
    t.same((await agent.checkOnce()).staged, ['fix-1']);
    await w.repo.setHalted('fix-1', 1, true);
    const again = await agent.checkOnce();
    t.same(again.staged, []);
    t.same(again.recalled, [], 'a halt is not a recall');
    t.same((await w.device()).list().map((p) => [p.id, p.state]), [['fix-1', 'staged']], 'still staged');
    await (await w.device()).boot();
    const startup = await agent.startup();
    t.same(startup.activated, ['fix-1']);
    t.same((await w.device()).list().map((p) => p.state), ['active']);
    t.ok((await exported(w)).equals(w.bytes.v1), 'the device runs the halted patch it held');
    await agent.checkOnce();
    t.same((await w.device()).list().map((p) => p.state), ['active'], 'and keeps it at later checks');
  });
}
