/**
 * `npm start` and the dashboard (lib/cli/walkthrough.ts, walkthrough_fleet.ts):
 * the run prints the dashboard's URL and where the operator token is while
 * its fleet part runs, opens nothing, and with `serve` (`--serve`) keeps the
 * service up after the story: a newcomer can log in with the printed token
 * and see the recalled patch and its decisions. The run without `serve`
 * ends by itself (test/agent.test.ts runs it).
 */
import t from 'tap';
import { promises as fs } from 'node:fs';
import { runWalkthrough } from '../lib/cli/walkthrough';
import { addonBuilt, tempDir } from './helpers';
import { call } from './fleet_fixture';

t.test('npm start prints the dashboard URL during its fleet part and --serve keeps it up to log in', { skip: addonBuilt() ? false : 'the addon is not built' }, async (t) => {
  const dir = await tempDir(t, 'revpatch-walkthrough-');
  const lines: string[] = [];
  let served: { url: string; tokenFile: string } | null = null;
  let during: string[] = [];
  await runWalkthrough(dir, (line) => lines.push(line), {
    serve: async (dashboard) => {
      served = dashboard;
      during = [...lines];
      const token = (await fs.readFile(dashboard.tokenFile, 'utf8')).trim();
      t.equal((await fs.stat(dashboard.tokenFile)).mode & 0o777, 0o600, 'the token file is private');
      const wrong = await call(dashboard.url, '/api/login', { method: 'POST', body: { token: `rpo_${'Z'.repeat(43)}` } });
      t.equal(wrong.json?.error?.code, 'E_AUTH', 'a wrong token is refused');
      const login = await call(dashboard.url, '/api/login', { method: 'POST', body: { token } });
      t.equal(login.status, 200, 'the printed token logs in');
      const cookie = (login.headers['set-cookie']?.[0] ?? '').split(';')[0];
      const list = await call(dashboard.url, '/api/patches', { headers: { Cookie: cookie } });
      t.match(list.json, { total: 1, patches: [{ plan: { patch: 'fix-3', state: 'recalled' } }] }, 'the dashboard shows the recalled patch');
      const log = await call(dashboard.url, '/api/patches/fix-3/1/decisions?changes=1', { headers: { Cookie: cookie } });
      t.match(log.json.decisions.map((d: { action: string }) => d.action), ['recall', 'start'], 'and its decisions, newest first');
      const page = await call(dashboard.url, '/', { headers: { Cookie: cookie } });
      t.match(page.text, 'fix-3', 'the page renders');
    },
  });
  const text = lines.join('\n');
  const dashboardLine = lines.findIndex((l) => /fleet {5}dashboard: http:\/\/127\.0\.0\.1:\d+\/ \(log in with the operator token in .*operator\.token\)/.test(l));
  const firstRound = lines.findIndex((l) => /round 1:/.test(l));
  t.ok(dashboardLine >= 0, 'the dashboard URL and how to log in are printed');
  t.ok(dashboardLine < firstRound, 'before the rollout runs');
  t.ok(served, 'the service was kept up after the story');
  t.match(during.join('\n'), /still serving: dashboard http:\/\/127\.0\.0\.1:\d+\/ .*Ctrl-C stops it/);
  t.match(text, /done {6}see docs\/fleet\.md/, 'and the run finished once serving ended');
  t.notMatch(text, /xdg-open|opening/i, 'no browser is opened');
  const after = await call(served!.url, '/v1/health').catch((err: Error) => err);
  t.ok(after instanceof Error, 'the service is closed afterwards');
});
