/**
 * The fleet dashboard's markup (docs/fleet.md, "The dashboard"): pure
 * functions from the dashboard API's JSON to HTML strings, shared by the
 * server, which renders the first page with the data in it (a first paint
 * needs no script round trip), and the page script
 * (lib/fleet/web/dashboard.page.ts), which renders the updates with the
 * same functions. No Node or DOM import: it is compiled by tsc for the
 * server and bundled by esbuild for the browser.
 *
 * Everything taken from data is escaped (`esc`); no markup carries a style
 * attribute or an inline handler, so the page runs under a CSP without
 * 'unsafe-inline'. Bars are SVG rects whose widths are attributes.
 */
import type { OutcomeCounts } from '../report/format';
import type { DecisionRecord, PlanRecord } from './types';

/** One plan as the dashboard API lists it (GET /api/patches). */
export interface PatchSummary {
  plan: PlanRecord;
  counts: OutcomeCounts;
  stageCounts: OutcomeCounts;
  /** failed / (confirmed + failed) over every device of the version, 0 when none. */
  failureRate: number;
}

/** A page of plans (GET /api/patches). */
export interface PatchPage {
  total: number;
  offset: number;
  limit: number;
  patches: PatchSummary[];
}

/** A page of one plan's decisions, newest first (GET /api/patches/:id/:version/decisions). */
export interface DecisionLogPage {
  total: number;
  decisions: DecisionRecord[];
  /** The `before` of the next (older) page, or null at the oldest. */
  next: number | null;
}

/** The chart's data (GET /api/patches/:id/:version/series): cumulative devices per interval end. */
export interface PatchSeries {
  from: number;
  stepMs: number;
  /** Interval end times (ms). */
  times: number[];
  confirmed: number[];
  failed: number[];
  /** Failure rate in percent at each time (null before any verdict). */
  failurePct: (number | null)[];
  thresholdPct: number;
  /** The decisions that changed the plan (newest MAX_MARKS), oldest first. */
  marks: Array<{ seq: number; at: number; action: string; code: string; toRollout: number }>;
}

/** The outcomes shown in bars and legends, in order, with their labels. */
export const OUTCOME_PARTS: ReadonlyArray<{ key: keyof OutcomeCounts; label: string }> = [
  { key: 'confirmed', label: 'confirmed' },
  { key: 'failed', label: 'rolled back' },
  { key: 'trial', label: 'in trial' },
  { key: 'staged', label: 'staged' },
  { key: 'refused', label: 'refused' },
  { key: 'removed', label: 'removed' },
  { key: 'recalled', label: 'recalled' },
];

export function esc(value: unknown): string {
  return String(value).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

export function pct(rate: number): string {
  return `${(rate * 100).toFixed(rate > 0 && rate < 0.001 ? 2 : 1)}%`;
}

export function time(ms: number | null): string {
  if (ms === null) return '—';
  return new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

/** "stage 2 of 3 · 50%" (or "not started"). */
export function stageText(plan: PlanRecord): string {
  if (plan.stage < 0) return `not started · ${plan.rollout}%`;
  return `stage ${plan.stage + 1} of ${plan.stages.length} · ${plan.rollout}%`;
}

export function countsText(counts: OutcomeCounts): string {
  const parts = OUTCOME_PARTS.filter((p) => counts[p.key] > 0).map((p) => `${counts[p.key]} ${p.label}`);
  return parts.length === 0 ? 'no reports yet' : parts.join(', ');
}

/** The stacked bar of a plan's outcome counts: an SVG image whose text alternative lists the counts. */
export function outcomeBar(counts: OutcomeCounts, width = 200): string {
  const total = OUTCOME_PARTS.reduce((n, p) => n + counts[p.key], 0);
  let x = 0;
  const rects: string[] = [];
  if (total > 0) {
    for (const p of OUTCOME_PARTS) {
      const n = counts[p.key];
      if (n === 0) continue;
      const w = (n / total) * width;
      rects.push(`<rect class="o-${p.key}" x="${x.toFixed(2)}" y="0" width="${w.toFixed(2)}" height="12"></rect>`);
      x += w;
    }
  }
  return (
    `<svg class="bar" viewBox="0 0 ${width} 12" width="${width}" height="12" role="img" aria-label="${esc(countsText(counts))}">` +
    `<rect class="o-none" x="0" y="0" width="${width}" height="12"></rect>${rects.join('')}</svg>`
  );
}

export function stateBadge(state: string): string {
  return `<span class="state s-${esc(state)}">${esc(state)}</span>`;
}

/** The rows of the patch table; each patch name is a link that selects it. */
export function patchRows(page: PatchPage, selected: string | null): string {
  if (page.patches.length === 0) return '<tr><td colspan="6">No rollout plans yet (revpatch fleet plan ID).</td></tr>';
  return page.patches
    .map((s) => {
      const key = `${s.plan.patch}/${s.plan.version}`;
      const current = key === selected ? ' aria-current="true"' : '';
      return (
        `<tr${current ? ' class="selected"' : ''}>` +
        `<th scope="row"><a href="#${esc(encodeURIComponent(s.plan.patch))}/${s.plan.version}" data-key="${esc(key)}"${current}>${esc(s.plan.patch)}</a></th>` +
        `<td>${s.plan.version}</td>` +
        `<td>${stateBadge(s.plan.state)}</td>` +
        `<td>${esc(stageText(s.plan))}</td>` +
        `<td>${outcomeBar(s.counts, 160)}</td>` +
        `<td>${pct(s.failureRate)} <span class="muted">of ${s.plan.maxFailurePct}%</span></td>` +
        '</tr>'
      );
    })
    .join('');
}

export function pagerText(offset: number, shown: number, total: number): string {
  if (total === 0) return 'none';
  return `${offset + 1}–${offset + shown} of ${total}`;
}

function numbers(d: DecisionRecord): string {
  const i = d.inputs;
  if (!i) return '—';
  const parts = [
    `${i.counts.confirmed} confirmed, ${i.counts.failed} rolled back`,
    `stage: ${i.stageCounts.confirmed} / ${i.stageCounts.failed}`,
    `failure ${pct(i.failureRate)} (Wilson ${pct(i.wilsonLower)}–${pct(i.wilsonUpper)})`,
    `soaked ${Math.round(i.soakedSeconds)} s`,
  ];
  if (i.enrolledDevices !== null) parts.push(`${i.enrolledDevices} enrolled`);
  return parts.join('; ');
}

/** The rows of the decision log (newest first, as the API pages it). */
export function decisionRows(decisions: readonly DecisionRecord[]): string {
  if (decisions.length === 0) return '<tr><td colspan="6">No decisions.</td></tr>';
  return decisions
    .map(
      (d) =>
        `<tr><td>${d.seq}</td><td><time datetime="${new Date(d.at).toISOString()}">${esc(time(d.at))}</time></td>` +
        `<td><span class="act a-${esc(d.action)}">${esc(d.action)}</span> <span class="muted">by ${esc(d.by)}</span></td>` +
        `<td>${d.fromRollout}% → ${d.toRollout}%</td>` +
        `<td><code>${esc(d.code)}</code><br>${esc(d.reason)}</td>` +
        `<td class="nums">${esc(numbers(d))}${d.appliedAt === null && d.action !== 'hold' ? ' <strong>(not yet published)</strong>' : ''}</td></tr>`,
    )
    .join('');
}

/** Which operator actions a plan's state allows (the controller refuses the others with E_STATE). */
export function allowedActions(state: string): Record<'halt' | 'resume' | 'advance' | 'recall', boolean> {
  const live = state === 'planned' || state === 'rolling';
  return { halt: live, resume: state === 'halted', advance: live, recall: state !== 'recalled' };
}
