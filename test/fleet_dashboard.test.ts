/**
 * The fleet dashboard in a real Chromium (test/fixtures/browser.ts): log in,
 * watch a rollout advance as device reports arrive through the real
 * collector and the real controller ticks on a fake clock, see it halt when
 * the bad reports arrive, press Recall, confirm in the dialog, and see the
 * state change — and the repository re-signed with the recall. axe-core
 * finds no serious or critical violation; first paint is reported, not
 * asserted. A second test loads the page over 1,000 plans and 100,000
 * decisions and pages both lists. The screenshot in the README comes from
 * here (docs/images/fleet-dashboard.png, refreshed with
 * REVPATCH_UPDATE_SCREENSHOTS=1).
 */
import t from 'tap';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Page } from 'playwright-core';
import { openStore } from '../lib/fleet/store';
import { hashToken } from '../lib/fleet/tokens';
import { Repository } from '../lib/repo/publisher';
import { addonBuilt, ROOT } from './helpers';
import { axeViolations, firstPaintMs, screenshotPath, startBrowser } from './fixtures/browser';
import { dashboardWorld, seedScale } from './fixtures/dashboard';

const SCREENSHOT = screenshotPath('fleet-dashboard.png', os.tmpdir());
const built = async () => fs.access(path.join(ROOT, 'dist', 'web', 'dashboard.js')).then(() => true, () => false);

/** Waits until the text of `selector` matches `pattern` (the page polls every 250 ms here). */
async function waitText(page: Page, selector: string, pattern: RegExp, timeout = 15_000): Promise<string> {
  try {
    await page.waitForFunction(
      ([sel, src, flags]) => new RegExp(src, flags).test(document.querySelector(sel)?.textContent ?? ''),
      [selector, pattern.source, pattern.flags] as const,
      { timeout, polling: 100 },
    );
  } catch (err) {
    const text = await page.locator(selector).first().textContent().catch(() => null);
    throw new Error(`${selector} never matched ${pattern}: it says ${JSON.stringify(text)} (${String(err)})`);
  }
  return (await page.locator(selector).first().textContent()) ?? '';
}

/**
 * Console errors (CSP refusals among them) and failed loads of anything but
 * the API (whose refusals the test provokes): the page must run under its
 * policy without any.
 */
function watchConsole(page: Page): string[] {
  const problems: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) problems.push(m.text());
  });
  page.on('response', (r) => {
    if (r.status() >= 400 && !new URL(r.url()).pathname.startsWith('/api/')) problems.push(`${r.status()} ${r.url()}`);
  });
  page.on('pageerror', (err) => problems.push(err.message));
  return problems;
}

t.test('an operator logs in, watches a rollout advance and halt, and recalls it', async (t) => {
  if (!addonBuilt()) return t.plan(0, 'the addon is not built');
  if (!(await built())) return t.fail('the page is not built: npx tsc -p tsconfig.json && node scripts/build-web.js');
  const browser = await startBrowser(t);
  if (typeof browser === 'string') return t.plan(0, browser);
  const w = await dashboardWorld(t, { pollMs: 250 });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const problems = watchConsole(page);

  // 1. Log in: a wrong token is refused on the page, the right one opens the dashboard.
  await page.goto(`${w.url}/`);
  t.comment(`first paint of the login page: ${await firstPaintMs(page)} ms`);
  t.same(await axeViolations(page), [], 'the login page: no serious or critical accessibility violation');
  await page.fill('#token', `rpo_${'x'.repeat(43)}`);
  await page.click('button[type=submit]');
  t.match(await waitText(page, '#login-result', /E_AUTH/), /Refused: E_AUTH/, 'a wrong token is refused with its code');
  t.equal(w.dashboard.sessionCount, 0, 'and makes no session');
  await page.fill('#token', w.operator);
  await Promise.all([page.waitForURL(`${w.url}/`), page.waitForSelector('#patch-rows'), page.click('button[type=submit]')]);
  const cookies = await context.cookies();
  t.match(cookies, [{ name: 'revpatch_fleet_session', httpOnly: true, sameSite: 'Strict', path: '/' }], 'the session cookie is HttpOnly and SameSite=Strict');
  t.equal(await page.evaluate(() => document.cookie), '', 'the page script cannot read it');

  await page.goto(`${w.url}/`);
  await page.waitForSelector('#patch-rows a[data-key="fix-1/1"]');
  t.comment(`first paint of the dashboard: ${await firstPaintMs(page)} ms`);
  t.match(await waitText(page, '#d-stage', /stage 1 of 3/), /stage 1 of 3 · 10%/, 'the plan starts at its first stage');
  t.match(await page.textContent('#d-state'), 'rolling');

  // 2. Devices confirm; the soak passes; the controller advances; the page follows without a reload.
  const navigations: string[] = [];
  page.on('framenavigated', (f) => {
    if (f === page.mainFrame()) navigations.push(f.url());
  });
  // Verdicts arrive over the soak, as a fleet's would.
  await w.report(5, 'staged');
  w.clock.now += 20_000;
  await w.report(3, 'confirmed');
  w.clock.now += 20_000;
  await w.report(5, 'confirmed');
  w.clock.now += 21_000;
  const ticked = await w.controller.tick();
  t.match(ticked.decisions.map((d) => d.action), ['advance'], 'the controller advanced');
  t.match(await waitText(page, '#d-stage', /stage 2 of 3/), /50%/, 'the page shows stage 2 at 50%');
  t.match(await waitText(page, '#d-counts', /8 confirmed/), /8 confirmed/, 'and the counts');
  t.match(await waitText(page, '#log-rows', /advance/), /advance/, 'the decision log shows the advance');
  t.match(await page.getAttribute('#d-bar svg', 'aria-label'), /8 confirmed/, 'the stacked bar says what it shows');

  // 3. The bad patch's reports arrive: the controller halts it; the page shows why.
  w.clock.now += 10_000;
  await w.report(2, 'confirmed');
  await w.report(4, 'rolled-back');
  w.clock.now += 10_000;
  await w.report(6, 'rolled-back');
  w.clock.now += 10_000;
  const halted = await w.controller.tick();
  t.match(halted.decisions.map((d) => d.action), ['halt'], 'the controller halted');
  await waitText(page, '#d-state', /halted/);
  t.match(await waitText(page, '#log-rows', /failure/i), /halt/, 'the log shows the halt with its reason');
  t.equal(await page.isDisabled('button[data-action=halt]'), true, 'Halt is off for a halted rollout');
  t.equal(await page.isDisabled('button[data-action=resume]'), false, 'Resume is on');
  t.same(navigations, [], 'the page changed without a reload');
  t.ok(await page.locator('#chart canvas').count(), 'the chart is drawn');

  // 4. Recall: a dialog asks; Cancel changes nothing; Confirm recalls.
  await page.click('button[data-action=recall]');
  const dialog = page.getByRole('dialog');
  t.ok(await dialog.isVisible(), 'Recall asks for confirmation in a dialog');
  t.match(await dialog.textContent(), /Recall fix-1 v1\?/);
  t.same(await axeViolations(page), [], 'the dashboard with its dialog open: no serious or critical violation');
  await page.keyboard.press('Escape');
  t.match(await waitText(page, '#action-result', /cancelled/), /cancelled/, 'Escape cancels');
  t.match(await w.store.latestPlan('fix-1'), { state: 'halted' }, 'a cancelled recall changes nothing');

  await page.click('button[data-action=recall]');
  await page.click('#confirm-ok');
  t.match(await waitText(page, '#action-result', /recall: done/), /decision \d+/, 'the page shows the API\'s answer');
  await waitText(page, '#d-state', /recalled/);
  t.match(await w.store.latestPlan('fix-1'), { state: 'recalled' }, 'the store holds the recall');
  const signed = (await Repository.open(w.f.repoDir)).patches().find((p) => p.id === 'fix-1' && p.version === 1);
  t.equal(signed?.recalled, true, 'the repository was re-signed with the recall');
  t.equal(await page.isDisabled('button[data-action=recall]'), true, 'Recall is off once recalled');

  // The API's refusal of an action the controller does not allow: resume a recalled plan with the page's session.
  const refusedAnswer = await page.evaluate(async () => {
    const csrf = document.querySelector<HTMLMetaElement>('meta[name="revpatch-csrf"]')!.content;
    const res = await fetch('/api/patches/fix-1/1/resume', { method: 'POST', headers: { 'X-CSRF-Token': csrf } });
    return { status: res.status, body: await res.json() };
  });
  t.match(refusedAnswer, { status: 409, body: { error: { code: 'E_STATE' } } });

  t.same(await axeViolations(page), [], 'the dashboard after the recall: no serious or critical violation');
  await fs.mkdir(path.dirname(SCREENSHOT), { recursive: true });
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: SCREENSHOT, fullPage: true });
  t.ok((await fs.stat(SCREENSHOT)).size > 0, `screenshot: ${SCREENSHOT}`);
  t.same(problems, [], 'no console errors or CSP refusals');
});

t.test('the page stays paged over 1,000 plans and 100,000 decisions', async (t) => {
  if (!addonBuilt()) return t.plan(0, 'the addon is not built');
  if (!(await built())) return t.fail('the page is not built: npx tsc -p tsconfig.json && node scripts/build-web.js');
  const browser = await startBrowser(t);
  if (typeof browser === 'string') return t.plan(0, browser);
  const w = await dashboardWorld(t, { store: await openStore('sqlite::memory:'), pollMs: 500 });
  t.comment(`seeded 1,000 plans and 100,000 decisions in ${(await seedScale(w)).toFixed(1)} s`);
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const problems = watchConsole(page);
  await page.goto(`${w.url}/`);
  await page.fill('#token', w.operator);
  await Promise.all([page.waitForURL(`${w.url}/`), page.waitForSelector('#patch-rows'), page.click('button[type=submit]')]);

  await page.goto(`${w.url}/#fix-1/1`);
  await page.waitForSelector('#patch-rows tr');
  t.comment(`first paint of the dashboard over 1,000 plans and 100,000 decisions: ${await firstPaintMs(page)} ms`);
  t.match(await page.textContent('#patches-range'), '1–25 of 1000');
  t.equal(await page.locator('#patch-rows tr').count(), 25, 'one page of plans in the document');
  t.match(await waitText(page, '#log-range', /of 100001/), /^1–50 of 100001/, 'the log shows its first page of 100,001');
  t.equal(await page.locator('#log-rows tr').count(), 50, 'one page of decisions in the document');

  await page.click('#patches-next');
  t.match(await waitText(page, '#patches-range', /^26–50/), '26–50 of 1000', 'Next pages the plans');
  await page.click('#log-older');
  t.match(await waitText(page, '#log-range', /^51–100/), 'of 100001', 'Older pages the log');
  await page.click('#log-newer');
  await waitText(page, '#log-range', /^1–50/);
  await page.check('#log-changes');
  t.match(await waitText(page, '#log-range', /of 101 /), /^1–50 of 101/, 'the log filtered to the decisions that changed the plan');
  await page.fill('#q', 'sec-08');
  t.match(await waitText(page, '#patches-range', /of 100$/), '1–25 of 100', 'the id filter');
  t.same(await axeViolations(page), [], 'no serious or critical violation at scale');
  t.same(problems, [], 'no console errors or CSP refusals');

  // A refusal shown with its code: the session's token is revoked while the page is open.
  await w.store.revokeToken(hashToken(w.operator));
  const before = await w.store.latestPlan('fix-1');
  await page.click('button[data-action=halt]');
  await page.click('#confirm-ok');
  t.match(await waitText(page, '#action-result', /refused/), /halt refused: E_AUTH: /, 'the refusal is shown with its code');
  t.same(await w.store.latestPlan('fix-1'), before, 'and nothing changed');
});
