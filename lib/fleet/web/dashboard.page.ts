/**
 * The fleet dashboard's page script (lib/fleet/dashboard.ts serves the page;
 * docs/fleet.md, "The dashboard"). The server renders the page with the
 * first plans in it; this script logs in, pages the plan list and the
 * decision log through the dashboard API, draws the chart (uPlot), asks for
 * confirmation before an action (a modal <dialog>) and shows what the API
 * answered, errors with their codes.
 *
 * Live: it polls. Every few seconds (the server says how often, in a meta
 * tag) it re-reads the page of plans in view and the selected plan (its
 * summary, series and the log page in view), skipping a round while the
 * tab is hidden or a request is in flight. Each answer is bounded by the
 * API's page sizes, so a poll costs the same with 1,000 plans as with 3.
 */
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import './dashboard.css';
import {
  allowedActions,
  countsText,
  decisionRows,
  esc,
  outcomeBar,
  pagerText,
  patchRows,
  pct,
  stageText,
  stateBadge,
  type DecisionLogPage,
  type PatchPage,
  type PatchSeries,
  type PatchSummary,
} from '../dashboard_view';

const PATCH_PAGE = 25;
const LOG_PAGE = 50;

function meta(name: string): string {
  return document.querySelector<HTMLMetaElement>(`meta[name="${name}"]`)?.content ?? '';
}

function $(id: string): HTMLElement {
  const el = document.getElementById(id);
  if (!el) throw new Error(`the page has no #${id}`);
  return el;
}

interface ApiError {
  status: number;
  code: string;
  message: string;
}

class ApiFailure extends Error {
  constructor(readonly error: ApiError) {
    super(`${error.code}: ${error.message}`);
  }
}

async function api<T>(url: string, init: { method?: string; body?: unknown; csrf?: string } = {}): Promise<T> {
  const headers: Record<string, string> = { Accept: 'application/json' };
  if (init.body !== undefined) headers['Content-Type'] = 'application/json';
  if (init.csrf) headers['X-CSRF-Token'] = init.csrf;
  let res: Response;
  try {
    res = await fetch(url, {
      method: init.method ?? 'GET',
      headers,
      body: init.body === undefined ? undefined : JSON.stringify(init.body),
      credentials: 'same-origin',
      cache: 'no-store',
    });
  } catch (err) {
    throw new ApiFailure({ status: 0, code: 'E_NETWORK', message: `the service did not answer (${String(err)})` });
  }
  const text = await res.text();
  let value: unknown = null;
  try {
    value = JSON.parse(text);
  } catch {
    value = null;
  }
  if (!res.ok) {
    const e = (value as { error?: { code?: string; message?: string } } | null)?.error;
    throw new ApiFailure({ status: res.status, code: e?.code ?? `HTTP ${res.status}`, message: e?.message ?? text.slice(0, 200) });
  }
  return value as T;
}

// ------------------------------------------------------------------ login

function startLogin(): void {
  const form = $('login-form') as HTMLFormElement;
  const result = $('login-result');
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const token = ($('token') as HTMLInputElement).value;
    result.textContent = 'Checking…';
    api<{ csrf: string }>('/api/login', { method: 'POST', body: { token } })
      .then(() => window.location.assign('/'))
      .catch((err: unknown) => {
        result.textContent = err instanceof ApiFailure ? `Refused: ${err.error.code}: ${err.error.message}` : String(err);
        ($('token') as HTMLInputElement).select();
      });
  });
}

// -------------------------------------------------------------- dashboard

interface State {
  csrf: string;
  offset: number;
  q: string;
  state: string;
  selected: string | null;
  /** The `before` of each log page shown so far; the last is the one in view (undefined: the newest). */
  logPages: (number | undefined)[];
  logChanges: boolean;
  busy: boolean;
  chart: uPlot | null;
  series: PatchSeries | null;
}

function startDashboard(): void {
  const s: State = {
    csrf: meta('revpatch-csrf'),
    offset: 0,
    q: '',
    state: '',
    selected: $('detail-h').dataset.key || null,
    logPages: [undefined],
    logChanges: false,
    busy: false,
    chart: null,
    series: null,
  };
  const fromHash = keyOfHash();
  if (fromHash) s.selected = fromHash;
  const pollMs = Math.max(250, Number(meta('revpatch-poll-ms')) || 2000);

  $('logout').addEventListener('click', () => {
    api('/api/logout', { method: 'POST', csrf: s.csrf }).finally(() => window.location.assign('/'));
  });
  $('patches-prev').addEventListener('click', () => {
    s.offset = Math.max(0, s.offset - PATCH_PAGE);
    void refreshList(s);
  });
  $('patches-next').addEventListener('click', () => {
    s.offset += PATCH_PAGE;
    void refreshList(s);
  });
  const filter = $('filter') as HTMLFormElement;
  const applyFilter = () => {
    s.q = ($('q') as HTMLInputElement).value.trim();
    s.state = ($('state') as HTMLSelectElement).value;
    s.offset = 0;
    void refreshList(s);
  };
  filter.addEventListener('submit', (ev) => {
    ev.preventDefault();
    applyFilter();
  });
  $('q').addEventListener('input', applyFilter);
  $('state').addEventListener('change', applyFilter);
  window.addEventListener('hashchange', () => {
    const key = keyOfHash();
    if (key && key !== s.selected) select(s, key);
  });
  $('log-older').addEventListener('click', () => {
    const next = Number($('log-older').dataset.before);
    if (next > 0) {
      s.logPages.push(next);
      void refreshLog(s);
    }
  });
  $('log-newer').addEventListener('click', () => {
    if (s.logPages.length > 1) s.logPages.pop();
    void refreshLog(s);
  });
  $('log-changes').addEventListener('change', () => {
    s.logChanges = ($('log-changes') as HTMLInputElement).checked;
    s.logPages = [undefined];
    void refreshLog(s);
  });
  for (const button of document.querySelectorAll<HTMLButtonElement>('button[data-action]')) {
    button.addEventListener('click', () => void confirmAndAct(s, button.dataset.action as string, button));
  }
  window.addEventListener('resize', () => sizeChart(s));

  if (s.selected) void refreshDetail(s, true);
  const tick = () => {
    if (document.visibilityState === 'visible' && !s.busy) {
      s.busy = true;
      Promise.all([refreshList(s), s.selected ? refreshDetail(s, false) : Promise.resolve()])
        .then(() => setLive(true))
        .catch((err: unknown) => {
          setLive(false, err);
        })
        .finally(() => {
          s.busy = false;
        });
    }
    window.setTimeout(tick, pollMs);
  };
  window.setTimeout(tick, pollMs);
}

function keyOfHash(): string | null {
  const m = /^#([^/]+)\/(\d+)$/.exec(window.location.hash);
  return m ? `${decodeURIComponent(m[1])}/${m[2]}` : null;
}

function setLive(ok: boolean, err?: unknown): void {
  const live = $('live');
  if (ok) {
    live.textContent = `live · updated ${new Date().toLocaleTimeString()}`;
    live.classList.remove('stale');
    return;
  }
  live.classList.add('stale');
  if (err instanceof ApiFailure && err.error.code === 'E_AUTH') {
    live.textContent = 'session ended: reload to log in again';
  } else {
    live.textContent = `not updating: ${err instanceof ApiFailure ? `${err.error.code}: ${err.error.message}` : String(err)}`;
  }
}

function select(s: State, key: string): void {
  s.selected = key;
  s.logPages = [undefined];
  s.series = null;
  $('action-result').textContent = '';
  for (const a of document.querySelectorAll<HTMLAnchorElement>('#patch-rows a[data-key]')) {
    const on = a.dataset.key === key;
    if (on) a.setAttribute('aria-current', 'true');
    else a.removeAttribute('aria-current');
    a.closest('tr')?.classList.toggle('selected', on);
  }
  void refreshDetail(s, true);
}

function planUrl(key: string): string {
  const slash = key.lastIndexOf('/');
  return `/api/patches/${encodeURIComponent(key.slice(0, slash))}/${key.slice(slash + 1)}`;
}

async function refreshList(s: State): Promise<void> {
  const params = new URLSearchParams({ offset: String(s.offset), limit: String(PATCH_PAGE) });
  if (s.q) params.set('q', s.q);
  if (s.state) params.set('state', s.state);
  const page = await api<PatchPage>(`/api/patches?${params.toString()}`);
  if (page.offset > 0 && page.patches.length === 0 && page.total > 0) {
    s.offset = Math.max(0, page.total - PATCH_PAGE);
    return refreshList(s);
  }
  const rows = $('patch-rows');
  const html = patchRows(page, s.selected);
  if (rows.dataset.html !== html) {
    rows.innerHTML = html;
    rows.dataset.html = html;
  }
  $('patches-range').textContent = pagerText(page.offset, page.patches.length, page.total);
  ($('patches-prev') as HTMLButtonElement).disabled = page.offset === 0;
  ($('patches-next') as HTMLButtonElement).disabled = page.offset + page.patches.length >= page.total;
  if (!s.selected && page.patches[0]) select(s, `${page.patches[0].plan.patch}/${page.patches[0].plan.version}`);
}

async function refreshDetail(s: State, full: boolean): Promise<void> {
  const key = s.selected;
  if (!key) return;
  const url = planUrl(key);
  const [summary, series] = await Promise.all([
    api<PatchSummary>(url),
    api<PatchSeries>(`${url}/series?buckets=${Math.max(20, Math.min(120, Math.floor(($('chart').clientWidth || 600) / 8)))}`),
  ]);
  if (s.selected !== key) return;
  renderSummary(summary);
  renderChart(s, series);
  // The log follows along only on its newest page; an older page stays as the reader left it.
  if (full || s.logPages.length === 1) await refreshLog(s);
}

function renderSummary(summary: PatchSummary): void {
  const { plan } = summary;
  $('detail').hidden = false;
  const h = $('detail-h');
  h.textContent = `${plan.patch} v${plan.version}`;
  h.dataset.key = `${plan.patch}/${plan.version}`;
  setHtml('d-state', stateBadge(plan.state));
  $('d-stage').textContent = stageText(plan);
  $('d-plan').textContent =
    `stages ${plan.stages.join(', ')}%, soak ${plan.soakSeconds} s, ${plan.minReports} verdicts a stage, ` +
    `halt above ${plan.maxFailurePct}%${plan.autoRecall ? ', auto-recall' : ''}`;
  setHtml('d-bar', outcomeBar(summary.counts, 480));
  setHtml('d-counts', `${esc(countsText(summary.counts))}; failure rate <span id="d-rate">${pct(summary.failureRate)}</span>`);
  const allowed = allowedActions(plan.state) as Record<string, boolean>;
  for (const button of document.querySelectorAll<HTMLButtonElement>('button[data-action]')) {
    button.disabled = !allowed[button.dataset.action as string];
  }
}

function setHtml(id: string, html: string): void {
  const el = $(id);
  if (el.dataset.html !== html) {
    el.innerHTML = html;
    el.dataset.html = html;
  }
}

async function refreshLog(s: State): Promise<void> {
  const key = s.selected;
  if (!key) return;
  const before = s.logPages[s.logPages.length - 1];
  const params = new URLSearchParams({ limit: String(LOG_PAGE) });
  if (before !== undefined) params.set('before', String(before));
  if (s.logChanges) params.set('changes', '1');
  const page = await api<DecisionLogPage>(`${planUrl(key)}/decisions?${params.toString()}`);
  if (s.selected !== key) return;
  setHtml('log-rows', decisionRows(page.decisions));
  const first = (s.logPages.length - 1) * LOG_PAGE;
  $('log-range').textContent = pagerText(first, page.decisions.length, page.total) + ' (newest first)';
  ($('log-newer') as HTMLButtonElement).disabled = s.logPages.length === 1;
  const older = $('log-older') as HTMLButtonElement;
  older.disabled = page.next === null;
  older.dataset.before = page.next === null ? '' : String(page.next);
}

// ------------------------------------------------------------------ chart

const MARK_COLOURS: Record<string, string> = {
  start: '#1d4ed8',
  advance: '#1d4ed8',
  resume: '#1d4ed8',
  complete: '#15803d',
  halt: '#b45309',
  recall: '#b91c1c',
};

function renderChart(s: State, series: PatchSeries): void {
  s.series = series;
  const data: uPlot.AlignedData = [
    series.times.map((t) => t / 1000),
    series.confirmed,
    series.failed,
    series.failurePct,
    series.times.map(() => series.thresholdPct),
  ];
  const marks = $('marks');
  const marksHtml = series.marks
    .slice(-12)
    .map((m) => `<li><span class="act a-${esc(m.action)}">${esc(m.action)}</span> at ${esc(new Date(m.at).toLocaleTimeString())} → ${m.toRollout}% <code>${esc(m.code)}</code></li>`)
    .join('');
  if (marks.dataset.html !== marksHtml) {
    marks.innerHTML = marksHtml;
    marks.dataset.html = marksHtml;
  }
  if (s.chart) {
    s.chart.setData(data);
    return;
  }
  const el = $('chart');
  el.textContent = '';
  s.chart = new uPlot(
    {
      width: chartWidth(),
      height: 260,
      scales: { x: { time: true }, pct: { range: (_u, _min, max) => [0, Math.max(10, Math.ceil((max ?? 0) * 1.1))] } },
      series: [
        {},
        { label: 'confirmed', stroke: '#15803d', width: 2 },
        { label: 'rolled back', stroke: '#b91c1c', width: 2 },
        { label: 'failure rate %', stroke: '#7c3aed', width: 2, scale: 'pct', spanGaps: true },
        { label: 'threshold %', stroke: '#6b7280', width: 1, dash: [6, 4], scale: 'pct', points: { show: false } },
      ],
      axes: [{}, { label: 'devices' }, { side: 1, scale: 'pct', label: '%', grid: { show: false } }],
      hooks: {
        draw: [
          (u: uPlot) => {
            const current = s.series;
            if (!current) return;
            const ctx = u.ctx;
            ctx.save();
            for (const m of current.marks) {
              const x = u.valToPos(m.at / 1000, 'x', true);
              if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
              ctx.strokeStyle = MARK_COLOURS[m.action] ?? '#374151';
              ctx.lineWidth = 2;
              ctx.setLineDash(m.action === 'halt' || m.action === 'recall' ? [] : [3, 3]);
              ctx.beginPath();
              ctx.moveTo(x, u.bbox.top);
              ctx.lineTo(x, u.bbox.top + u.bbox.height);
              ctx.stroke();
            }
            ctx.restore();
          },
        ],
      },
    },
    data,
    el,
  );
}

function chartWidth(): number {
  return Math.max(320, Math.min(1100, ($('detail').clientWidth || 800) - 16));
}

function sizeChart(s: State): void {
  s.chart?.setSize({ width: chartWidth(), height: 260 });
}

// ---------------------------------------------------------------- actions

const WHAT: Record<string, string> = {
  halt: 'Halt the rollout of {p}? Devices that do not hold it no longer take it.',
  resume: 'Resume the rollout of {p}? Its current stage starts over.',
  advance: 'Advance {p} to its next stage now, whatever the rule says?',
  recall: 'Recall {p}? Every device removes it at its next restart. This cannot be undone.',
};

function ask(text: string, action: string): Promise<boolean> {
  const dialog = $('confirm') as HTMLDialogElement;
  $('confirm-h').textContent = `${action[0].toUpperCase()}${action.slice(1)}?`;
  $('confirm-text').textContent = text;
  $('confirm-ok').textContent = `${action[0].toUpperCase()}${action.slice(1)}`;
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
    dialog.returnValue = '';
    dialog.showModal();
    ($('confirm-cancel') as HTMLButtonElement).focus();
  });
}

async function confirmAndAct(s: State, action: string, button: HTMLButtonElement): Promise<void> {
  const key = s.selected;
  if (!key) return;
  const name = key.replace('/', ' v');
  const result = $('action-result');
  if (!(await ask(WHAT[action].replace('{p}', name), action))) {
    result.textContent = `${action} of ${name} cancelled.`;
    button.focus();
    return;
  }
  result.className = 'result';
  result.textContent = `${action} of ${name}…`;
  try {
    const answer = await api<{ decision?: { seq: number; action: string; reason: string }; published?: boolean; error?: { code: string; message: string } | null }>(
      `${planUrl(key)}/${action}`,
      { method: 'POST', csrf: s.csrf },
    );
    const d = answer.decision;
    if (answer.published === false && answer.error) {
      result.className = 'result warn';
      result.textContent = `${action}: recorded as decision ${d?.seq ?? '?'} but not yet published: ${answer.error.code}: ${answer.error.message}`;
    } else {
      result.className = 'result ok';
      result.textContent = d ? `${action}: done (decision ${d.seq}: ${d.reason})` : `${action}: done`;
    }
  } catch (err) {
    result.className = 'result error';
    result.textContent = err instanceof ApiFailure ? `${action} refused: ${err.error.code}: ${err.error.message}` : String(err);
  }
  s.logPages = [undefined];
  await Promise.all([refreshList(s), refreshDetail(s, true)]).catch((err: unknown) => setLive(false, err));
  button.focus();
}

// ------------------------------------------------------------------- start

function start(): void {
  const view = meta('revpatch-view');
  if (view === 'login') startLogin();
  else if (view === 'dashboard') startDashboard();
}

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
else start();
