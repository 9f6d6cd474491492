/**
 * The agent's persisted settings (lib/agent/settings_file.ts): the
 * automatic-install switch set through one agent is honoured by the next
 * check of any agent on the state directory; a damaged file is ignored,
 * never a reason to stop patching.
 */
import t from 'tap';
import { promises as fs } from 'node:fs';
import { readPersistedSettings, settingsPath, writePersistedSettings } from '../lib/agent/settings_file';
import { addonBuilt } from './helpers';
import { makeWorld } from './agent_fixture';

if (!addonBuilt()) {
  t.skip('native addon not built (npm run build)', () => {});
} else {
  t.test('the switch set off is honoured at the next check of another agent, and on again stages the patch', async (t) => {
    const w = await makeWorld(t, { publish: ['fix-1'] });
    const page = await w.agent();
    t.equal(await page.autoInstall(), true, 'on by default');
    await page.setAutoInstall(false);
    t.same(await readPersistedSettings(w.state), { autoInstall: false });

    const daemon = await w.agent({ settings: { autoInstall: true } });
    const off = await daemon.checkOnce();
    t.same(off.staged, []);
    t.same(off.available, ['fix-1'], 'offered, not installed');
    t.same(daemon.lastCheck()?.report.available, ['fix-1']);

    await page.setAutoInstall(true);
    t.same((await daemon.checkOnce()).staged, ['fix-1'], 'on again: the next check installs');
  });

  t.test('a damaged settings file is ignored and the agent keeps its own switch', async (t) => {
    const w = await makeWorld(t, { publish: ['fix-1'] });
    await writePersistedSettings(w.state, { autoInstall: false });
    await fs.writeFile(settingsPath(w.state), '{"format":1,"autoInstall":"no"}');
    await t.rejects(readPersistedSettings(w.state), { code: 'E_CORRUPT' });
    const agent = await w.agent({ settings: { autoInstall: true } });
    t.same((await agent.checkOnce()).staged, ['fix-1']);
    await fs.writeFile(settingsPath(w.state), 'not json');
    await t.rejects(readPersistedSettings(w.state), { code: 'E_CORRUPT' });
  });

  t.test('the restart notice counts the deferral left', async (t) => {
    const w = await makeWorld(t, { publish: ['fix-1'] });
    const agent = await w.agent({ settings: { deferral: { maxCount: 2, maxDurationMs: 3600_000 } } });
    t.match(await agent.restartNotice(), { pending: false, patches: [] });
    await agent.checkOnce();
    const notice = await agent.restartNotice();
    t.match(notice, { pending: true, patches: ['fix-1'], deferrals: 0, deferralsLeft: 2, decision: { action: 'may-defer' } });
    t.equal(Date.parse(notice.deadline!) - w.clock.now.getTime(), 3600_000, 'deferring ends an hour after the restart was first asked for');
  });
}
