/**
 * The fleet dashboard's HTTP side (lib/fleet/dashboard.ts) without a
 * browser: login and sessions, the CSRF token, Host and Origin, the page's
 * security headers, the paged API, and that every refusal changes nothing
 * (the plan, its decisions and the signed repository are compared before
 * and after).
 */
import t, { type Test } from 'tap';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { CSRF_HEADER, Dashboard, MAX_DECISION_PAGE, MAX_PATCH_PAGE, PAGE_CSP, SESSION_COOKIE } from '../lib/fleet/dashboard';
import { FleetServer } from '../lib/fleet/server';
import { openStore } from '../lib/fleet/store';
import { hashToken } from '../lib/fleet/tokens';
import { Repository } from '../lib/repo/publisher';
import { addonBuilt, tempDir } from './helpers';
import { call, type Answer } from './fleet_fixture';
import { dashboardWorld, seedScale, type DashboardWorld } from './fixtures/dashboard';
import { fleetCli, startFleetService } from './fixtures/fleet_service';
import { repoFixture } from './repo_fixture';

const skip = addonBuilt() ? false : 'the addon is not built';

function refused(t: Test, answer: Answer, status: number, code: string, what: string): void {
  t.equal(answer.status, status, `${what}: HTTP ${status}`);
  t.equal(answer.json?.error?.code, code, `${what}: ${code}`);
  t.type(answer.json?.error?.message, 'string', `${what}: a message`);
  t.notOk(answer.headers['set-cookie'], `${what}: no cookie set`);
}

/** What a refusal must leave as it was: the plan, its decisions, the signed repository. */
async function snapshotOf(w: DashboardWorld) {
  const plan = await w.store.latestPlan('fix-1');
  const decisions = (await w.store.decisions('fix-1')).length;
  const signed = (await Repository.open(w.f.repoDir)).patches().find((p) => p.id === 'fix-1');
  const dir = path.join(w.f.repoDir, 'metadata');
  const metadata: Record<string, string> = {};
  for (const name of (await fs.readdir(dir)).sort()) metadata[name] = await fs.readFile(path.join(dir, name), 'utf8');
  return { plan, decisions, signed, metadata };
}

t.test('logging in takes an operator token and sets a strict, HttpOnly session cookie', { skip }, async (t) => {
  const w = await dashboardWorld(t);
  const before = await snapshotOf(w);

  const wrong = await w.login(`rpo_${'A'.repeat(43)}`);
  refused(t, wrong.answer, 401, 'E_AUTH', 'a wrong token');
  refused(t, (await w.login('')).answer, 401, 'E_AUTH', 'an empty token');
  refused(t, (await w.login(w.device)).answer, 403, 'E_FORBIDDEN', 'a device token');
  refused(t, await call(w.url, '/api/login', { method: 'POST', body: 'token=x', headers: { 'Content-Type': 'application/x-www-form-urlencoded' } }), 415, 'E_UNSUPPORTED', 'a form post');
  refused(t, await call(w.url, '/api/login', { method: 'POST', body: { nope: 1 } }), 400, 'E_INVALID_ARGUMENT', 'no token field');
  refused(t, await call(w.url, '/api/login', { method: 'GET' }), 405, 'E_UNSUPPORTED', 'GET /api/login');
  t.equal(w.dashboard.sessionCount, 0, 'no refused login made a session');

  const ok = await w.login(w.operator);
  t.equal(ok.answer.status, 200);
  t.match(ok.csrf, /^[A-Za-z0-9_-]{43}$/, 'a CSRF token');
  const set = ok.answer.headers['set-cookie']?.[0] ?? '';
  t.match(set, new RegExp(`^${SESSION_COOKIE}=[A-Za-z0-9_-]{43};`));
  t.match(set, /; HttpOnly/);
  t.match(set, /; SameSite=Strict/);
  t.match(set, /; Path=\//);
  t.equal(w.dashboard.sessionCount, 1);

  const page = await call(w.url, '/', { headers: { Cookie: ok.cookie! } });
  t.equal(page.status, 200);
  t.match(page.headers['content-type'], /^text\/html/);
  t.equal(page.headers['content-security-policy'], PAGE_CSP);
  t.match(PAGE_CSP, /script-src 'self'/);
  t.notMatch(PAGE_CSP, /unsafe/);
  t.match(page.text, `<meta name="revpatch-csrf" content="${ok.csrf}">`, 'the page carries the session\'s CSRF token');
  t.match(page.text, 'fix-1', 'the first page of plans is rendered by the server');
  t.notMatch(page.text, /<script(?![^>]*\ssrc=)[^>]*>/, 'no inline script');
  t.notMatch(page.text, /\sstyle=|\son[a-z]+=/i, 'no style attributes or inline handlers');

  const login = await call(w.url, '/');
  t.match(login.text, 'id="login-form"', 'without a session, / is the login form');
  t.notMatch(login.text, 'revpatch-csrf');
  t.same(await snapshotOf(w), before, 'logging in changed nothing else');
});

t.test('an action needs the session, its CSRF token, this Host and this Origin; each refusal changes nothing', { skip }, async (t) => {
  const w = await dashboardWorld(t);
  const { cookie, csrf } = await w.login(w.operator);
  const before = await snapshotOf(w);
  t.match(before.plan, { state: 'rolling' });
  const halt = (headers: Record<string, string | undefined>) => call(w.url, '/api/patches/fix-1/1/halt', { method: 'POST', headers });

  refused(t, await halt({ Cookie: cookie!, [CSRF_HEADER]: undefined }), 403, 'E_FORBIDDEN', 'a missing CSRF token');
  refused(t, await halt({ Cookie: cookie!, [CSRF_HEADER]: 'x'.repeat(43) }), 403, 'E_FORBIDDEN', 'a wrong CSRF token');
  refused(t, await halt({ [CSRF_HEADER]: csrf! }), 401, 'E_AUTH', 'no session');
  refused(t, await halt({ Cookie: `${SESSION_COOKIE}=${'B'.repeat(43)}`, [CSRF_HEADER]: csrf! }), 401, 'E_AUTH', 'an unknown session');
  refused(t, await halt({ Authorization: `Bearer ${w.operator}`, [CSRF_HEADER]: csrf! }), 401, 'E_AUTH', 'a Bearer token instead of a session');
  refused(t, await halt({ Cookie: cookie!, [CSRF_HEADER]: csrf!, Origin: 'http://evil.example' }), 403, 'E_FORBIDDEN', 'a foreign Origin');
  refused(t, await halt({ Cookie: cookie!, [CSRF_HEADER]: csrf!, Origin: 'null' }), 403, 'E_FORBIDDEN', 'an opaque Origin');
  refused(t, await halt({ Cookie: cookie!, [CSRF_HEADER]: csrf!, Host: `evil.example:${w.server.port}` }), 403, 'E_FORBIDDEN', 'a rebinding Host');
  refused(t, await call(w.url, '/', { headers: { Cookie: cookie!, Host: 'evil.example' } }), 403, 'E_FORBIDDEN', 'the page under a foreign Host');
  refused(
    t,
    await call(w.url, '/api/patches/fix-1/1/halt', { method: 'POST', headers: { Cookie: cookie!, [CSRF_HEADER]: csrf!, 'Content-Type': 'text/plain' }, body: 'x' }),
    415,
    'E_UNSUPPORTED',
    'a text body',
  );
  refused(t, await call(w.url, '/api/patches/fix-1/1/halt', { headers: { Cookie: cookie! } }), 405, 'E_UNSUPPORTED', 'GET on an action');
  t.same(await snapshotOf(w), before, 'nothing changed: plan, decisions, repository');

  // The cookie opens nothing on the Bearer API.
  const v1 = await call(w.url, '/v1/patches/fix-1/halt', { method: 'POST', headers: { Cookie: cookie!, [CSRF_HEADER]: csrf! } });
  refused(t, v1, 401, 'E_AUTH', 'the session cookie on /v1');
  t.same(await snapshotOf(w), before, 'still nothing changed');

  const own = await halt({ Cookie: cookie!, [CSRF_HEADER]: csrf!, Origin: w.url });
  t.equal(own.status, 200, 'the same request with the session, CSRF token and own Origin is carried out');
  t.match(own.json, { published: true, plan: { state: 'halted' }, decision: { action: 'halt', by: 'operator' } });
  t.equal((await Repository.open(w.f.repoDir)).patches().find((p) => p.id === 'fix-1')?.halted, true, 'the repository was re-signed with the halt');

  const again = await halt({ Cookie: cookie!, [CSRF_HEADER]: csrf! });
  refused(t, again, 409, 'E_STATE', 'halting a halted rollout');
});

t.test('logout needs the CSRF token and ends the session; a revoked token ends its sessions', { skip }, async (t) => {
  const w = await dashboardWorld(t);
  const a = await w.login(w.operator);
  refused(t, await call(w.url, '/api/logout', { method: 'POST', headers: { Cookie: a.cookie! } }), 403, 'E_FORBIDDEN', 'logout without CSRF');
  t.equal((await call(w.url, '/api/patches', { headers: { Cookie: a.cookie! } })).status, 200, 'the session still works');
  const out = await call(w.url, '/api/logout', { method: 'POST', headers: { Cookie: a.cookie!, [CSRF_HEADER]: a.csrf! } });
  t.equal(out.status, 200);
  t.match(out.headers['set-cookie']?.[0], /Max-Age=0/);
  refused(t, await call(w.url, '/api/patches', { headers: { Cookie: a.cookie! } }), 401, 'E_AUTH', 'after logout');

  const b = await w.login(w.operator);
  t.equal((await call(w.url, '/api/patches', { headers: { Cookie: b.cookie! } })).status, 200);
  t.ok(await w.store.revokeToken(hashToken(w.operator)));
  refused(t, await call(w.url, '/api/patches', { headers: { Cookie: b.cookie! } }), 401, 'E_AUTH', 'a revoked token\'s session');
  refused(t, (await w.login(w.operator)).answer, 401, 'E_AUTH', 'a revoked token at login');
});

t.test('the page script and styles are served from this origin; an unbuilt page says how to build it', { skip }, async (t) => {
  const w = await dashboardWorld(t, { plan: false });
  const js = await call(w.url, '/web/dashboard.js');
  if (js.status === 503) {
    t.fail('dist/web/dashboard.js is not built: npx tsc -p tsconfig.json && node scripts/build-web.js');
    return;
  }
  t.equal(js.status, 200);
  t.match(js.headers['content-type'], /^text\/javascript/);
  t.equal((await call(w.url, '/web/dashboard.css')).status, 200);
  refused(t, await call(w.url, '/web/../package.json'), 404, 'E_NOT_FOUND', 'a path outside the page');
  refused(t, await call(w.url, '/web/other.js'), 404, 'E_NOT_FOUND', 'an unknown asset');

  const empty = await tempDir(t);
  const server = await FleetServer.start({ store: w.store, web: new Dashboard({ store: w.store, webDir: empty }) });
  t.teardown(() => server.close());
  refused(t, await call(server.url, '/web/dashboard.js'), 503, 'E_UNSUPPORTED', 'an unbuilt page');
  t.throws(() => new Dashboard({ store: w.store, pollMs: 10 }), { code: 'E_INVALID_ARGUMENT' });
});

t.test('the dashboard API pages 1,000 plans and 100,000 decisions with bounded answers', { skip }, async (t) => {
  // An in-memory SQLite store: the same schema and queries, without an fsync per seeded decision.
  const w = await dashboardWorld(t, { store: await openStore('sqlite::memory:') });
  const seconds = await seedScale(w);
  t.comment(`seeded 1,000 plans and 100,000 decisions in ${seconds.toFixed(1)} s`);
  const plan = (await w.store.latestPlan('fix-1'))!;
  await w.report(30, 'confirmed');
  await w.report(5, 'rolled-back');
  const { cookie } = await w.login(w.operator);
  const get = (p: string) => call(w.url, p, { headers: { Cookie: cookie! } });

  const first = await get('/api/patches');
  t.equal(first.status, 200);
  t.equal(first.json.total, 1000);
  t.equal(first.json.patches.length, 25, 'the default page');
  t.ok(first.text.length < 40_000, `a page of plans is bounded (${first.text.length} bytes)`);
  const big = await get(`/api/patches?limit=${MAX_PATCH_PAGE}&offset=950`);
  t.equal(big.json.patches.length, 50, 'the last page holds what is left');
  t.ok(big.text.length < 150_000, `the largest page is bounded (${big.text.length} bytes)`);
  refused(t, await get(`/api/patches?limit=${MAX_PATCH_PAGE + 1}`), 400, 'E_INVALID_ARGUMENT', 'a page larger than the bound');
  refused(t, await get('/api/patches?offset=-1'), 400, 'E_INVALID_ARGUMENT', 'a negative offset');
  refused(t, await get('/api/patches?state=sideways'), 400, 'E_INVALID_ARGUMENT', 'an unknown state');
  t.equal((await get('/api/patches?q=sec-08')).json.total, 100, 'the id filter');
  t.equal((await get('/api/patches?state=recalled')).json.total, 0, 'the state filter');

  const log = await get('/api/patches/fix-1/1/decisions');
  t.equal(log.json.total, 100_001, 'the start and the seeded decisions');
  t.equal(log.json.decisions.length, 50);
  t.ok(log.text.length < 60_000, `a page of the log is bounded (${log.text.length} bytes)`);
  const seqs: number[] = log.json.decisions.map((d: { seq: number }) => d.seq);
  t.same(seqs, [...seqs].sort((a, b) => b - a), 'newest first');
  const older = await get(`/api/patches/fix-1/1/decisions?before=${log.json.next}&limit=${MAX_DECISION_PAGE}`);
  t.equal(older.json.decisions.length, MAX_DECISION_PAGE);
  t.ok(older.json.decisions[0].seq < seqs[seqs.length - 1], 'the next page starts below the last one');
  refused(t, await get(`/api/patches/fix-1/1/decisions?limit=${MAX_DECISION_PAGE + 1}`), 400, 'E_INVALID_ARGUMENT', 'a log page larger than the bound');
  const changes = await get('/api/patches/fix-1/1/decisions?changes=1&limit=200');
  t.equal(changes.json.total, 101, 'only the decisions that changed the plan');
  t.ok(changes.json.decisions.every((d: { action: string }) => d.action !== 'hold'));
  const oldest = await get('/api/patches/fix-1/1/decisions?before=3&limit=200');
  t.same(oldest.json.decisions.map((d: { seq: number }) => d.seq), [2, 1]);
  t.equal(oldest.json.next, null, 'the oldest page says there is no next');

  w.clock.now = plan.createdAt + 100_000 * 1000;
  refused(t, await get('/api/patches'), 401, 'E_AUTH', 'a session older than its lifetime');
  const again = await w.login(w.operator);
  const get2 = (p: string) => call(w.url, p, { headers: { Cookie: again.cookie! } });
  const series = await get2('/api/patches/fix-1/1/series?buckets=100');
  t.equal(series.status, 200, series.text.slice(0, 300));
  t.equal(series.json.times.length, 100);
  t.equal(series.json.confirmed.at(-1), 30, 'the series ends at the confirmed count');
  t.equal(series.json.failed.at(-1), 5, 'and at the rolled-back count');
  t.equal(series.json.thresholdPct, 20);
  t.ok(series.json.marks.length <= 200, 'marks are bounded');
  t.ok(series.text.length < 60_000, `the series is bounded (${series.text.length} bytes)`);
  refused(t, await get2('/api/patches/fix-1/1/series?buckets=501'), 400, 'E_INVALID_ARGUMENT', 'too many intervals');
  refused(t, await get2('/api/patches/fix-9/1'), 404, 'E_UNKNOWN_PATCH', 'a patch without a plan');
  refused(t, await get2('/api/patches/..%2F/1'), 400, 'E_INVALID_ARGUMENT', 'a bad patch id');
  refused(t, await get2('/api/patches/fix-1/0'), 400, 'E_INVALID_ARGUMENT', 'version 0');

  const pageStarted = process.hrtime.bigint();
  const page = await get2('/');
  t.comment(`GET / over 1,000 plans: ${(Number(process.hrtime.bigint() - pageStarted) / 1e6).toFixed(1)} ms, ${page.text.length} bytes`);
  for (const p of ['/api/patches', '/api/patches/fix-1/1/decisions', '/api/patches/fix-1/1/series']) {
    const started = process.hrtime.bigint();
    const answer = await get2(p);
    t.comment(`GET ${p}: ${(Number(process.hrtime.bigint() - started) / 1e6).toFixed(1)} ms, ${answer.text.length} bytes`);
  }
  t.equal(page.status, 200);
  t.ok(page.text.length < 60_000, `the page itself is bounded (${page.text.length} bytes)`);
  t.match(page.text, '1–25 of 1000');
});

t.test('revpatch fleet serve serves the dashboard, and an operator token from fleet enroll logs in', { skip }, async (t) => {
  const f = await repoFixture(t);
  const db = `sqlite:${path.join(f.dir, 'fleet.db')}`;
  const tokenFile = path.join(f.dir, 'operator.token');
  const enrolled = await fleetCli(['fleet', 'enroll', '--operator', '--out', tokenFile, '--db', db]);
  t.equal(enrolled.code, 0, enrolled.stderr);
  const service = await startFleetService(t, { repo: f.repoDir, db, tickSeconds: 1 });
  t.match(service.output(), /dashboard: http:\/\/127\.0\.0\.1:\d+\/ \(log in with an operator token/, 'serve says where the dashboard is');
  const login = await call(service.url, '/');
  t.equal(login.status, 200);
  t.match(login.text, 'id="login-form"');
  t.equal(login.headers['content-security-policy'], PAGE_CSP);
  t.equal((await call(service.url, '/web/dashboard.js')).status, 200, 'the bundled script is served');
  const token = (await fs.readFile(tokenFile, 'utf8')).trim();
  const ok = await call(service.url, '/api/login', { method: 'POST', body: { token } });
  t.equal(ok.status, 200);
  const cookie = (ok.headers['set-cookie']?.[0] ?? '').split(';')[0];
  t.match((await call(service.url, '/api/patches', { headers: { Cookie: cookie } })).json, { total: 0, patches: [] });
  refused(t, await call(service.url, '/api/login', { method: 'POST', body: { token }, headers: { Origin: 'http://evil.example' } }), 403, 'E_FORBIDDEN', 'a login from a foreign Origin');
});
