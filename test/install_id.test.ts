/**
 * `revpatch install ID` through the command line against a real repository
 * (test/agent_fixture.ts): the offered patch is fetched, verified and
 * staged as the agent would, every refusal has its own code and leaves the
 * state directory as it was, and a forced rollout is in the audit trail.
 */
import t from 'tap';
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { Device } from '../lib/device/device';
import { AuditTrail } from '../lib/agent/log';
import { addonBuilt, ROOT, runCliAsync, snapshot } from './helpers';
import { makeWorld, type World } from './agent_fixture';

const cli = (w: World, ...args: string[]) => runCliAsync(['--state', w.state, ...args]);

/** The state directory without the agent's log and audit trail (which a refusal appends to). */
const stateOf = (w: World) => w.stateSnapshot();

const built = existsSync(path.join(ROOT, 'dist', 'cli', 'cli.js'));

if (!addonBuilt() || !built) {
  t.skip('native addon or dist/ not built (npm run build)', () => {});
} else {
  t.test('the patch agent --once offers with automatic installation off is installed by its id', async (t) => {
    const w = await makeWorld(t, { publish: ['fix-1', 'fix-2'] });
    const offered = await cli(w, 'agent', '--once', '--no-auto-install');
    t.equal(offered.code, 0, offered.stderr);
    t.match(offered.stdout, /available fix-1 \(automatic installation is off: revpatch install fix-1\)/);
    t.same((await w.device()).list(), [], 'nothing installed yet');

    const first = await cli(w, '--json', 'install', 'fix-1');
    t.equal(first.code, 0, first.stderr);
    t.match(JSON.parse(first.stdout), { id: 'fix-1', state: 'staged', version: 1 });
    t.ok(w.server.requests.some((r) => /^\/targets\/.*fix-1-v1\.rvp$/.test(r)), 'fetched from the repository');

    const second = await cli(w, 'install', 'fix-2');
    t.equal(second.code, 0, second.stderr);
    t.match(second.stdout, /staged fix-2 v1 from the repository/);
    const list = JSON.parse((await cli(w, 'list', '--json')).stdout) as Array<{ id: string; state: string }>;
    t.same(list.map((p) => [p.id, p.state]), [['fix-1', 'staged'], ['fix-2', 'staged']], 'revpatch list agrees');

    const audit = await AuditTrail.forState(w.state).read();
    const staged = audit.filter((e) => e.event === 'staged');
    t.same(staged.map((e) => [e.patch, e.by]), [['fix-1', 'user'], ['fix-2', 'user']], 'the trail says a user asked for each');
    t.notOk(staged.some((e) => e.forcedRollout), 'no rollout was forced');

    const again = await cli(w, 'install', 'fix-1');
    t.equal(again.code, 1);
    t.match(again.stderr, /^error E_EXISTS: fix-1 is already installed/m, 'an installed patch is not installed twice');
  });

  t.test('an id the repository does not offer is refused with E_NOT_OFFERED and changes nothing', async (t) => {
    const w = await makeWorld(t, { publish: ['fix-1'] });
    await cli(w, 'agent', '--once', '--no-auto-install');
    const before = await stateOf(w);
    const r = await cli(w, 'install', 'fix-9');
    t.equal(r.code, 1);
    t.match(r.stderr, /^error E_NOT_OFFERED: the repository offers no patch with id fix-9/m);
    t.same(await stateOf(w), before);
  });

  t.test('a recalled patch is refused with E_RECALLED and changes nothing', async (t) => {
    const w = await makeWorld(t, { publish: ['fix-1'] });
    await w.repo.recall('fix-1');
    await cli(w, 'agent', '--once', '--no-auto-install');
    const before = await stateOf(w);
    const r = await cli(w, 'install', 'fix-1');
    t.equal(r.code, 1);
    t.match(r.stderr, /^error E_RECALLED: fix-1 v1 was recalled/m);
    t.same(await stateOf(w), before);
    t.notOk(w.server.requests.some((p) => p.includes('fix-1-v1.rvp')), 'nothing downloaded');
  });

  t.test('a halted patch is refused with E_HALTED and changes nothing', async (t) => {
    const w = await makeWorld(t, { publish: ['fix-1'] });
    await w.repo.setHalted('fix-1', 1, true);
    await cli(w, 'agent', '--once', '--no-auto-install');
    const before = await stateOf(w);
    const r = await cli(w, 'install', 'fix-1');
    t.equal(r.code, 1);
    t.match(r.stderr, /^error E_HALTED: fix-1 v1 is halted by the vendor/m);
    t.same(await stateOf(w), before);
  });

  t.test('a device without a repository refuses an id with E_NO_REPOSITORY and changes nothing', async (t) => {
    const w = await makeWorld(t, { publish: ['fix-1'] });
    const state = path.join(w.dir, 'plain-state');
    await Device.init(state, { volume: w.files.base, trust: w.pub, blockSize: 4096 });
    const before = await snapshot(state);
    const r = await runCliAsync(['--state', state, 'install', 'fix-1']);
    t.equal(r.code, 1);
    t.match(r.stderr, /^error E_NO_REPOSITORY: /m);
    t.same(await snapshot(state), before);
    const file = await runCliAsync(['--state', state, 'install', w.files['fix-1']]);
    t.equal(file.code, 0, 'a path that exists is still a file install');
    t.match(file.stdout, /staged fix-1 v1; it takes effect/);
  });

  t.test('outside the rollout E_OUTSIDE_ROLLOUT; --force-rollout installs it and the audit trail records it', async (t) => {
    const w = await makeWorld(t, { publish: ['fix-1'], rollout: 0 });
    await cli(w, 'agent', '--once', '--no-auto-install');
    const before = await stateOf(w);
    const r = await cli(w, 'install', 'fix-1');
    t.equal(r.code, 1);
    t.match(r.stderr, /^error E_OUTSIDE_ROLLOUT: bucket \d+ is outside the 0% rollout.*--force-rollout/m);
    t.same(await stateOf(w), before);
    t.notOk(w.server.requests.some((p) => p.includes('fix-1-v1.rvp')), 'nothing downloaded');

    const forced = await cli(w, 'install', 'fix-1', '--force-rollout');
    t.equal(forced.code, 0, forced.stderr);
    t.equal((await w.device()).list()[0].state, 'staged');
    const audit = await AuditTrail.forState(w.state).read();
    t.match(audit.find((e) => e.event === 'staged'), { patch: 'fix-1', by: 'user', forcedRollout: true, rollout: 0 });
    t.match(audit.find((e) => e.event === 'install-refused'), { patch: 'fix-1', code: 'E_OUTSIDE_ROLLOUT' }, 'the refusal is in the trail too');
  });

  t.test('a patch whose parent is not installed is refused with E_PARENT_MISSING and changes nothing', async (t) => {
    const w = await makeWorld(t, { publish: ['fix-1', 'fix-2'] });
    await cli(w, 'agent', '--once', '--no-auto-install');
    const before = await stateOf(w);
    const r = await cli(w, 'install', 'fix-2');
    t.equal(r.code, 1);
    t.match(r.stderr, /^error E_PARENT_MISSING: fix-2 needs fix-1/m);
    t.same(await stateOf(w), before);
  });

  t.test('a missing path that is not an id is still a missing file; install flags need an id', async (t) => {
    const w = await makeWorld(t, { publish: ['fix-1'] });
    const missing = await cli(w, 'install', './nowhere/fix-1.rvp');
    t.equal(missing.code, 1);
    t.match(missing.stderr, /^error E_NOT_FOUND: /m);
    const flag = await cli(w, 'install', w.files['fix-1'], '--force-rollout');
    t.equal(flag.code, 2, 'a usage error');
    t.same((await w.device()).list(), []);
  });
}
