/**
 * The operator's fleet dashboard (docs/fleet.md, "The dashboard"), served by
 * `revpatch fleet serve` at `/` beside the JSON API (FleetServer's `web`
 * routes). Server-rendered HTML with the first page of plans in it, and a
 * thin page script (lib/fleet/web/dashboard.page.ts, bundled into
 * dist/web/dashboard.js) that draws the chart, pages the lists, asks for
 * confirmation and polls for changes.
 *
 *   GET  /                                   the page: login form, or the dashboard
 *   GET  /web/dashboard.js|.css              the bundled script and styles
 *   POST /api/login       {"token": …}       an operator token → session cookie, {csrf}
 *   POST /api/logout                         ends the session
 *   GET  /api/patches?offset&limit&state&q   a page of plans with their counts
 *   GET  /api/patches/:id/:version           one plan with its counts
 *   GET  /api/patches/:id/:version/decisions?before&limit&changes
 *   GET  /api/patches/:id/:version/series?buckets
 *   POST /api/patches/:id/:version/halt|resume|advance|recall
 *
 * Security. The server has already checked Host (DNS rebinding) and a
 * present Origin. Logging in takes an operator token (the same tokens as the
 * Bearer API, checked the same way: lib/fleet/tokens.ts) in a JSON body — a
 * cross-site form cannot send one without a CORS preflight, which this
 * server never grants — and sets a session cookie `HttpOnly;
 * SameSite=Strict; Path=/` holding 32 random bytes. The server keeps only
 * the session id's SHA-256 with the token's hash (a session dies with the
 * token: a revoked token's sessions are refused at their next request) and
 * a CSRF token of 32 random bytes, rendered into the page. Every
 * state-changing request (POST) needs the session and the CSRF token in
 * `X-CSRF-Token`, compared in constant time. Sessions live in this process's
 * memory: a restart logs everyone out. The page's CSP allows scripts and
 * styles from this origin only (no inline script or style attribute) and
 * `connect-src 'self'`. The /v1 API still takes a Bearer header only; the
 * cookie opens nothing there.
 *
 * Scale: every list is paged by the API with a bounded `limit` (plans 100,
 * decisions 200, series 500 intervals), so no answer grows with the fleet.
 *
 * Refusals: no or unknown session E_AUTH (401); a device token at login
 * E_FORBIDDEN (403); a missing or wrong CSRF token E_FORBIDDEN (403); bad
 * query or body E_INVALID_ARGUMENT (400); each in the server's stable shape
 * and changing nothing.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { promises as fs } from 'node:fs';
import type * as http from 'node:http';
import * as path from 'node:path';
import { RevpatchError, toRevpatchError } from '../engine/errors';
import { ID_PATTERN, MAX_VERSION } from '../patch/manifest';
import {
  allowedActions,
  decisionRows,
  esc,
  outcomeBar,
  pagerText,
  patchRows,
  stageText,
  stateBadge,
  countsText,
  pct,
  type DecisionLogPage,
  type PatchPage,
  type PatchSeries,
  type PatchSummary,
} from './dashboard_view';
import { MAX_SERIES_BUCKETS } from './series';
import { HttpError, OPERATOR_ACTIONS, readBody, requireJson, type FleetOperator, type FleetWebRoutes, type OperatorAction } from './server';
import { authenticate } from './tokens';
import { ROLLOUT_STATES, type FleetStore, type PlanRecord } from './types';

export const SESSION_COOKIE = 'revpatch_fleet_session';
export const CSRF_HEADER = 'x-csrf-token';
/** A session ends this long after login (ms). */
export const SESSION_TTL_MS = 8 * 3600_000;
/** Sessions kept at most; the oldest goes first. */
export const MAX_SESSIONS = 1000;
export const MAX_PATCH_PAGE = 100;
export const MAX_DECISION_PAGE = 200;
/** Decisions marked on the chart at most (the newest that changed the plan). */
export const MAX_MARKS = 200;
/** Default and bounds of the page's polling interval (ms). */
export const DEFAULT_POLL_MS = 2000;

const DEFAULT_PATCH_PAGE = 25;
const DEFAULT_DECISION_PAGE = 50;
const DEFAULT_BUCKETS = 60;
const MAX_LOGIN_BODY = 1024;

/** The page's policy: nothing inline, nothing from elsewhere, no framing. */
export const PAGE_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
  "form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/** The static files of the page (bundled by scripts/build-web.js), by the path they are served at. */
const ASSETS: Readonly<Record<string, { file: string; type: string }>> = {
  '/web/dashboard.js': { file: 'dashboard.js', type: 'text/javascript; charset=utf-8' },
  '/web/dashboard.css': { file: 'dashboard.css', type: 'text/css; charset=utf-8' },
};

export interface DashboardOptions {
  store: FleetStore;
  /** The actions; without it they answer 503 E_STATE, as the API's do. */
  operator?: FleetOperator;
  /** Server clock, ms (session expiry, the series' end). */
  clock?: () => number;
  /** Where the bundled page lives; default dist/web beside this module. */
  webDir?: string;
  /** How often the page polls for changes, ms (default 2000, at least 250). */
  pollMs?: number;
}

interface Session {
  csrf: string;
  tokenHash: string;
  expiresAt: number;
}

export class Dashboard implements FleetWebRoutes {
  private readonly store: FleetStore;
  private readonly clock: () => number;
  private readonly webDir: string;
  private readonly pollMs: number;
  /** By the SHA-256 of the session id: the id itself is kept by the browser only. */
  private readonly sessions = new Map<string, Session>();

  constructor(private readonly options: DashboardOptions) {
    if (!options || typeof options.store !== 'object' || options.store === null) {
      throw new RevpatchError('E_INVALID_ARGUMENT', 'the dashboard needs a store');
    }
    this.store = options.store;
    this.clock = options.clock ?? Date.now;
    this.webDir = options.webDir ?? path.join(__dirname, '..', 'web');
    const poll = options.pollMs ?? DEFAULT_POLL_MS;
    if (!Number.isFinite(poll) || poll < 250) throw new RevpatchError('E_INVALID_ARGUMENT', `pollMs ${poll} must be at least 250`);
    this.pollMs = Math.floor(poll);
  }

  /** Sessions alive now (for tests: a refused login makes none). */
  get sessionCount(): number {
    this.expire();
    return this.sessions.size;
  }

  claims(p: string): boolean {
    return p === '/' || p in ASSETS || p.startsWith('/api/');
  }

  async handle(req: http.IncomingMessage, res: http.ServerResponse, p: string): Promise<void> {
    const method = req.method ?? 'GET';
    const query = new URL(req.url ?? '/', 'http://x').searchParams;
    if (p === '/' || p in ASSETS) {
      allow(method, ['GET'], p);
      return p === '/' ? this.page(req, res) : this.asset(res, ASSETS[p]);
    }
    if (p === '/api/login') {
      allow(method, ['POST'], p);
      return this.login(req, res);
    }
    if (p === '/api/logout') {
      allow(method, ['POST'], p);
      const { id } = await this.session(req, true);
      this.sessions.delete(id);
      res.setHeader('Set-Cookie', `${SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0`);
      return sendJson(res, 200, { ok: true });
    }
    if (p === '/api/patches') {
      allow(method, ['GET'], p);
      await this.session(req, false);
      return sendJson(res, 200, await this.patchPage(query));
    }
    const m = /^\/api\/patches\/([^/]+)\/([^/]+)(?:\/([^/]+))?$/.exec(p);
    if (!m) throw new RevpatchError('E_NOT_FOUND', `no such resource: ${p.slice(0, 200)}`);
    const [, rawId, rawVersion, sub] = m;
    const isAction = sub !== undefined && (OPERATOR_ACTIONS as readonly string[]).includes(sub);
    if (sub !== undefined && !isAction && sub !== 'decisions' && sub !== 'series') {
      throw new RevpatchError('E_NOT_FOUND', `no such resource: ${p.slice(0, 200)}`);
    }
    allow(method, isAction ? ['POST'] : ['GET'], p);
    await this.session(req, isAction);
    const id = decodeURIComponentSafe(rawId);
    if (!ID_PATTERN.test(id)) throw new RevpatchError('E_INVALID_ARGUMENT', `${JSON.stringify(id.slice(0, 200))} is not a patch id`);
    const version = intParam(rawVersion, 'version', 1, MAX_VERSION);
    if (isAction) return this.act(req, res, id, version, sub as OperatorAction);
    const plan = await this.store.getPlan(id, version);
    if (!plan) throw new RevpatchError('E_UNKNOWN_PATCH', `${id} v${version} has no rollout plan`);
    if (sub === undefined) return sendJson(res, 200, await this.summary(plan));
    if (sub === 'decisions') return sendJson(res, 200, await this.decisionPage(plan, query));
    return sendJson(res, 200, await this.series(plan, query));
  }

  // ------------------------------------------------------------- sessions

  private async login(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    requireJson(req, false);
    const body = await readBody(req, MAX_LOGIN_BODY);
    let token: unknown;
    try {
      token = (JSON.parse(body.toString('utf8')) as { token?: unknown })?.token;
    } catch {
      throw new RevpatchError('E_INVALID_ARGUMENT', 'the body is not JSON');
    }
    if (typeof token !== 'string') throw new RevpatchError('E_INVALID_ARGUMENT', 'the body must be {"token": "rpo_…"}');
    let tokenHash: string;
    try {
      tokenHash = (await authenticate(this.store, `Bearer ${token.trim()}`, 'operator')).hash;
    } catch (err) {
      const e = toRevpatchError(err);
      if (e.code === 'E_AUTH') throw new HttpError(401, 'E_AUTH', 'that is not a valid operator token');
      throw e;
    }
    this.expire();
    while (this.sessions.size >= MAX_SESSIONS) this.sessions.delete(this.sessions.keys().next().value as string);
    const id = randomBytes(32).toString('base64url');
    const csrf = randomBytes(32).toString('base64url');
    this.sessions.set(sha256(id), { csrf, tokenHash, expiresAt: this.clock() + SESSION_TTL_MS });
    res.setHeader('Set-Cookie', `${SESSION_COOKIE}=${id}; HttpOnly; SameSite=Strict; Path=/; Max-Age=${SESSION_TTL_MS / 1000}`);
    sendJson(res, 200, { csrf });
  }

  /** The request's live session; with `csrf`, its CSRF token must come too. */
  private async session(req: http.IncomingMessage, csrf: boolean): Promise<{ id: string; session: Session }> {
    const found = this.lookup(req);
    if (!found) throw new HttpError(401, 'E_AUTH', 'log in with an operator token first');
    if (csrf) {
      const given = req.headers[CSRF_HEADER];
      if (typeof given !== 'string' || !sameText(given, found.session.csrf)) {
        throw new RevpatchError('E_FORBIDDEN', 'a state-changing request needs the session\'s CSRF token in X-CSRF-Token');
      }
    }
    // The session lives only as long as its token.
    const token = await this.store.findToken(found.session.tokenHash);
    if (!token || token.revoked || token.kind !== 'operator') {
      this.sessions.delete(found.id);
      throw new HttpError(401, 'E_AUTH', 'the operator token of this session was revoked; log in again');
    }
    return found;
  }

  private lookup(req: http.IncomingMessage): { id: string; session: Session } | null {
    const raw = cookie(req.headers.cookie, SESSION_COOKIE);
    if (raw === null || !/^[A-Za-z0-9_-]{43}$/.test(raw)) return null;
    const id = sha256(raw);
    const session = this.sessions.get(id);
    if (!session) return null;
    if (session.expiresAt <= this.clock()) {
      this.sessions.delete(id);
      return null;
    }
    return { id, session };
  }

  private expire(): void {
    const now = this.clock();
    for (const [id, s] of this.sessions) if (s.expiresAt <= now) this.sessions.delete(id);
  }

  // ----------------------------------------------------------------- data

  private async summary(plan: PlanRecord): Promise<PatchSummary> {
    const counts = await this.store.counts(plan.patch, plan.version);
    const stageCounts =
      plan.stageStartedAt === null
        ? { staged: 0, refused: 0, trial: 0, confirmed: 0, failed: 0, removed: 0, recalled: 0 }
        : await this.store.counts(plan.patch, plan.version, plan.stageStartedAt);
    const verdicts = counts.confirmed + counts.failed;
    return { plan, counts, stageCounts, failureRate: verdicts === 0 ? 0 : counts.failed / verdicts };
  }

  /** Plans, most recently changed first, filtered by state and id substring. */
  async patchPage(query: URLSearchParams): Promise<PatchPage> {
    const offset = intParam(query.get('offset') ?? '0', 'offset', 0, Number.MAX_SAFE_INTEGER);
    const limit = intParam(query.get('limit') ?? String(DEFAULT_PATCH_PAGE), 'limit', 1, MAX_PATCH_PAGE);
    const state = query.get('state');
    if (state !== null && state !== '' && !(ROLLOUT_STATES as readonly string[]).includes(state)) {
      throw new RevpatchError('E_INVALID_ARGUMENT', `state must be one of ${ROLLOUT_STATES.join(', ')}`);
    }
    const q = (query.get('q') ?? '').slice(0, 100);
    const plans = (await this.store.listPlans())
      .filter((p) => (!state || p.state === state) && (q === '' || p.patch.includes(q)))
      .sort((a, b) => b.updatedAt - a.updatedAt || a.patch.localeCompare(b.patch) || b.version - a.version);
    const patches: PatchSummary[] = [];
    for (const plan of plans.slice(offset, offset + limit)) patches.push(await this.summary(plan));
    return { total: plans.length, offset, limit, patches };
  }

  private async decisionPage(plan: PlanRecord, query: URLSearchParams): Promise<DecisionLogPage> {
    const before = query.get('before') === null ? undefined : intParam(query.get('before') as string, 'before', 1, Number.MAX_SAFE_INTEGER);
    const limit = intParam(query.get('limit') ?? String(DEFAULT_DECISION_PAGE), 'limit', 1, MAX_DECISION_PAGE);
    const changesOnly = query.get('changes') === '1';
    const page = await this.store.decisionPage(plan.patch, plan.version, { before, limit: limit + 1, changesOnly });
    const decisions = page.decisions.slice(0, limit);
    const next = page.decisions.length > limit ? decisions[decisions.length - 1].seq : null;
    return { total: page.total, decisions, next };
  }

  private async series(plan: PlanRecord, query: URLSearchParams): Promise<PatchSeries> {
    const buckets = intParam(query.get('buckets') ?? String(DEFAULT_BUCKETS), 'buckets', 2, MAX_SERIES_BUCKETS);
    const marksPage = await this.store.decisionPage(plan.patch, plan.version, { limit: MAX_MARKS, changesOnly: true });
    const marks = marksPage.decisions
      .map((d) => ({ seq: d.seq, at: d.at, action: d.action, code: d.code, toRollout: d.toRollout }))
      .reverse();
    const from = Math.min(plan.createdAt, marks[0]?.at ?? plan.createdAt);
    const to = Math.max(this.clock(), plan.updatedAt, from + buckets);
    const stepMs = Math.max(1, Math.ceil((to - from) / buckets));
    const rows = await this.store.outcomeSeries(plan.patch, plan.version, from, stepMs, buckets);
    const times: number[] = [];
    const confirmed: number[] = [];
    const failed: number[] = [];
    const failurePct: (number | null)[] = [];
    let c = 0;
    let f = 0;
    rows.forEach((r, i) => {
      c += r.confirmed;
      f += r.failed;
      times.push(from + (i + 1) * stepMs);
      confirmed.push(c);
      failed.push(f);
      failurePct.push(c + f === 0 ? null : (100 * f) / (c + f));
    });
    return { from, stepMs, times, confirmed, failed, failurePct, thresholdPct: plan.maxFailurePct, marks };
  }

  private async act(req: http.IncomingMessage, res: http.ServerResponse, id: string, version: number, action: OperatorAction): Promise<void> {
    requireJson(req, true);
    const body = await readBody(req, 1024);
    if (body.length > 0 && body.toString('utf8').trim() !== '{}') {
      throw new RevpatchError('E_INVALID_ARGUMENT', `${action} takes no body (the plan is in the path)`);
    }
    const operator = this.options.operator;
    if (!operator) throw new HttpError(503, 'E_STATE', 'this server runs no rollout controller');
    const result = await operator[action](id, version);
    sendJson(res, 200, result === undefined ? { ok: true } : result);
  }

  // ----------------------------------------------------------------- page

  private async asset(res: http.ServerResponse, asset: { file: string; type: string }): Promise<void> {
    let body: Buffer;
    try {
      body = await fs.readFile(path.join(this.webDir, asset.file));
    } catch {
      throw new HttpError(503, 'E_UNSUPPORTED', `the dashboard's ${asset.file} is not built (npm run build:ts)`);
    }
    res.writeHead(200, { 'Content-Type': asset.type, 'Content-Length': body.length });
    res.end(body);
  }

  private async page(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    // A session whose token was revoked gets the login form, as one that ended does.
    const found = await this.session(req, false).catch(() => null);
    let html: string;
    if (found) {
      const first = await this.patchPage(new URLSearchParams());
      html = dashboardHtml(first, found.session.csrf, this.pollMs);
    } else {
      html = loginHtml(this.pollMs);
    }
    res.setHeader('Content-Security-Policy', PAGE_CSP);
    res.setHeader('X-Frame-Options', 'DENY');
    const body = Buffer.from(html, 'utf8');
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Content-Length': body.length });
    res.end(body);
  }
}

// ------------------------------------------------------------------- html

function shell(title: string, body: string, meta: Record<string, string>): string {
  const metas = Object.entries(meta)
    .map(([name, content]) => `<meta name="${esc(name)}" content="${esc(content)}">`)
    .join('');
  return (
    '<!doctype html><html lang="en"><head><meta charset="utf-8">' +
    '<meta name="viewport" content="width=device-width, initial-scale=1">' +
    `<title>${esc(title)}</title>${metas}<link rel="icon" href="data:,">` +
    '<link rel="stylesheet" href="/web/dashboard.css"><script src="/web/dashboard.js" defer></script></head>' +
    `<body>${body}</body></html>`
  );
}

function loginHtml(pollMs: number): string {
  return shell(
    'Log in · revpatch fleet',
    '<header class="top"><h1>revpatch fleet</h1></header>' +
      '<main id="main" class="login"><h2>Log in</h2>' +
      '<p>Paste an operator token (<code>revpatch fleet enroll --operator --out FILE</code> writes one).</p>' +
      '<form id="login-form" method="post" action="/api/login">' +
      '<label for="token">Operator token</label>' +
      '<input id="token" name="token" type="password" autocomplete="current-password" required spellcheck="false" autofocus>' +
      '<button type="submit">Log in</button></form>' +
      '<p id="login-result" role="alert" class="result"></p></main>',
    { 'revpatch-view': 'login', 'revpatch-poll-ms': String(pollMs) },
  );
}

function dashboardHtml(first: PatchPage, csrf: string, pollMs: number): string {
  const selected = first.patches[0] ?? null;
  const states = ['', ...ROLLOUT_STATES].map((s) => `<option value="${s}">${s === '' ? 'any state' : s}</option>`).join('');
  return shell(
    'revpatch fleet',
    '<a class="skip" href="#patches">Skip to the patches</a>' +
      '<header class="top"><h1>revpatch fleet</h1><span id="live" class="muted">live</span>' +
      '<button id="logout" type="button" class="quiet">Log out</button></header>' +
      '<main id="main">' +
      '<section id="patches" aria-labelledby="patches-h"><h2 id="patches-h">Patches</h2>' +
      '<form id="filter" class="filter"><label for="q">Patch id</label><input id="q" name="q" type="search" spellcheck="false">' +
      `<label for="state">State</label><select id="state" name="state">${states}</select></form>` +
      '<table class="list"><caption class="sr">Rollout plans, most recently changed first</caption>' +
      '<thead><tr><th scope="col">Patch</th><th scope="col">Version</th><th scope="col">State</th><th scope="col">Stage</th>' +
      '<th scope="col">Outcomes</th><th scope="col">Failure rate</th></tr></thead>' +
      `<tbody id="patch-rows">${patchRows(first, selected ? `${selected.plan.patch}/${selected.plan.version}` : null)}</tbody></table>` +
      '<nav class="pager" aria-label="Patch pages"><button id="patches-prev" type="button" disabled>Previous</button>' +
      `<span id="patches-range">${esc(pagerText(first.offset, first.patches.length, first.total))}</span>` +
      `<button id="patches-next" type="button"${first.total > first.patches.length ? '' : ' disabled'}>Next</button></nav></section>` +
      `<section id="detail" aria-labelledby="detail-h"${selected ? '' : ' hidden'}>${selected ? detailHtml(selected) : detailHtml(null)}</section>` +
      '</main>' +
      '<dialog id="confirm" aria-labelledby="confirm-h" aria-describedby="confirm-text"><form method="dialog">' +
      '<h2 id="confirm-h">Confirm</h2><p id="confirm-text"></p>' +
      '<div class="buttons"><button value="cancel" id="confirm-cancel">Cancel</button>' +
      '<button value="ok" id="confirm-ok" class="danger">Confirm</button></div></form></dialog>',
    { 'revpatch-view': 'dashboard', 'revpatch-csrf': csrf, 'revpatch-poll-ms': String(pollMs) },
  );
}

/** The detail pane; the script fills the chart and the log. */
function detailHtml(s: PatchSummary | null): string {
  const key = s ? `${s.plan.patch}/${s.plan.version}` : '';
  const allowed = allowedActions(s?.plan.state ?? 'recalled');
  const button = (a: 'halt' | 'resume' | 'advance' | 'recall', label: string) =>
    `<button type="button" class="action${a === 'recall' ? ' danger' : ''}" data-action="${a}"${allowed[a] ? '' : ' disabled'}>${label}</button>`;
  return (
    `<h2 id="detail-h" data-key="${esc(key)}">${s ? `${esc(s.plan.patch)} v${s.plan.version}` : 'No patch selected'}</h2>` +
    `<p class="facts"><span id="d-state">${s ? stateBadge(s.plan.state) : ''}</span> ` +
    `<span id="d-stage">${s ? esc(stageText(s.plan)) : ''}</span> · ` +
    `<span id="d-plan">${s ? esc(planText(s.plan)) : ''}</span></p>` +
    `<div id="d-bar">${s ? outcomeBar(s.counts, 480) : ''}</div>` +
    `<p id="d-counts">${s ? esc(countsText(s.counts)) : ''}; failure rate <span id="d-rate">${s ? pct(s.failureRate) : ''}</span></p>` +
    '<div class="actions" role="group" aria-label="Operator actions">' +
    button('halt', 'Halt') + button('resume', 'Resume') + button('advance', 'Advance') + button('recall', 'Recall') +
    '</div><p id="action-result" class="result" role="status" aria-live="polite"></p>' +
    '<figure><div id="chart" role="img" aria-label="Confirmed and rolled-back devices and the failure rate over time"></div>' +
    '<figcaption>Confirmed and rolled-back devices (left axis) and the failure rate against the plan\'s threshold (right axis, %); ' +
    'vertical lines mark where the rollout started, advanced, halted, resumed, completed or was recalled.</figcaption>' +
    '<ul id="marks" class="marks"></ul></figure>' +
    '<h3 id="log-h">Decision log</h3>' +
    '<label class="inline"><input id="log-changes" type="checkbox"> only decisions that changed the plan</label>' +
    '<table class="log" aria-labelledby="log-h"><thead><tr><th scope="col">#</th><th scope="col">When</th><th scope="col">Action</th>' +
    '<th scope="col">Rollout</th><th scope="col">Reason</th><th scope="col">Numbers</th></tr></thead>' +
    `<tbody id="log-rows">${decisionRows([])}</tbody></table>` +
    '<nav class="pager" aria-label="Decision log pages"><button id="log-newer" type="button" disabled>Newer</button>' +
    '<span id="log-range"></span><button id="log-older" type="button" disabled>Older</button></nav>'
  );
}

export function planText(plan: PlanRecord): string {
  return (
    `stages ${plan.stages.join(', ')}%, soak ${plan.soakSeconds} s, ${plan.minReports} verdicts a stage, ` +
    `halt above ${plan.maxFailurePct}%${plan.autoRecall ? ', auto-recall' : ''}`
  );
}

// ---------------------------------------------------------------- helpers

function allow(method: string, methods: readonly string[], p: string): void {
  if (!methods.includes(method)) {
    throw new HttpError(405, 'E_UNSUPPORTED', `${method} is not allowed on ${p.slice(0, 200)}`, { Allow: methods.join(', ') });
  }
}

function sendJson(res: http.ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value);
  res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

function intParam(raw: string, name: string, min: number, max: number): number {
  if (!/^\d{1,16}$/.test(raw)) throw new RevpatchError('E_INVALID_ARGUMENT', `${name} must be an integer from ${min} to ${max}`);
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new RevpatchError('E_INVALID_ARGUMENT', `${name} must be an integer from ${min} to ${max}`);
  return n;
}

function decodeURIComponentSafe(raw: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    throw new RevpatchError('E_INVALID_ARGUMENT', 'the patch id is not valid percent-encoding');
  }
}

function sha256(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}

function sameText(a: string, b: string): boolean {
  const x = Buffer.from(sha256(a), 'hex');
  const y = Buffer.from(sha256(b), 'hex');
  return timingSafeEqual(x, y);
}

/** The value of cookie `name` in a Cookie header, or null. */
export function cookie(header: string | undefined, name: string): string | null {
  if (!header) return null;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return null;
}
