/**
 * What `revpatch fleet status` shows (DESIGN.md, "Fleet"; docs/fleet.md):
 * per rollout plan, its state, stage and published rollout, the devices per
 * outcome, the failure rate, what the controller's rule would decide now
 * and why, and every decision recorded with its reason and numbers.
 *
 * Read from the store only: the counts and decisions are the ones the
 * controller decides from, and "next" is the controller's own pure rule
 * (lib/fleet/decision.ts decideRollout) applied to them at `now`, so status
 * needs neither the repository nor a running service. The JSON form is the
 * contract of `fleet status --json` and of the operator API's list.
 */
import { decideRollout } from '../fleet/decision';
import type { DecisionAction, DecisionRecord, FleetStore, PlanRecord } from '../fleet/types';
import { ZERO_COUNTS, type OutcomeCounts } from '../report/format';

export interface FleetStatusEntry {
  id: string;
  version: number;
  state: PlanRecord['state'];
  /** 1-based stage number; 0 before the first. */
  stage: number;
  stages: number[];
  /** The rollout percentage published now. */
  rollout: number;
  halted: boolean;
  /** Distinct devices per outcome, over every stage. */
  counts: OutcomeCounts;
  /** failed / (confirmed + failed) over every stage, 0..1; 0 when no device has a verdict. */
  failureRate: number;
  /** The current stage as the rule sees it: verdicts since it began (confirmations capped by the exposure bound). */
  current: {
    counts: OutcomeCounts;
    failureRate: number;
    wilsonLower: number;
    wilsonUpper: number;
    soakedSeconds: number;
  };
  /** What the rule would decide now (a running controller acts on it at its next tick). */
  next: { action: DecisionAction; code: string; reason: string };
  /** Devices the unrevoked enrollment tokens stand for; null when none says. */
  enrolledDevices: number | null;
  plan: { soakSeconds: number; minReports: number; maxFailurePct: number; autoRecall: boolean };
  decisions: Array<Omit<DecisionRecord, 'at' | 'appliedAt'> & { at: string; appliedAt: string | null }>;
  createdAt: string;
  updatedAt: string;
}

export function failureRate(counts: OutcomeCounts): number {
  const verdicts = counts.confirmed + counts.failed;
  return verdicts === 0 ? 0 : counts.failed / verdicts;
}

const iso = (ms: number) => new Date(ms).toISOString();

/** Every plan (or those of patch `only`), oldest first. */
export async function fleetStatus(store: FleetStore, only?: string, now: number = Date.now()): Promise<FleetStatusEntry[]> {
  const plans = (await store.listPlans()).filter((p) => only === undefined || p.patch === only);
  plans.sort((a, b) => a.createdAt - b.createdAt || a.patch.localeCompare(b.patch) || a.version - b.version);
  const enrolled = await store.enrolledDevices();
  const enrolledDevices = enrolled > 0 ? enrolled : null;
  const out: FleetStatusEntry[] = [];
  for (const p of plans) {
    const counts = await store.counts(p.patch, p.version);
    const stageCounts = p.stageStartedAt === null ? { ...ZERO_COUNTS } : await store.counts(p.patch, p.version, p.stageStartedAt);
    const view = decideRollout({ plan: p, counts, stageCounts, now, enrolledDevices });
    const decisions = await store.decisions(p.patch, p.version);
    out.push({
      id: p.patch,
      version: p.version,
      state: p.state,
      stage: p.stage + 1,
      stages: p.stages,
      rollout: p.rollout,
      halted: p.halted,
      counts,
      failureRate: failureRate(counts),
      current: {
        counts: stageCounts,
        failureRate: view.inputs.failureRate,
        wilsonLower: view.inputs.wilsonLower,
        wilsonUpper: view.inputs.wilsonUpper,
        soakedSeconds: view.inputs.soakedSeconds,
      },
      next: { action: view.action, code: view.code, reason: view.reason },
      enrolledDevices,
      plan: { soakSeconds: p.soakSeconds, minReports: p.minReports, maxFailurePct: p.maxFailurePct, autoRecall: p.autoRecall },
      decisions: decisions.map((d) => ({ ...d, at: iso(d.at), appliedAt: d.appliedAt === null ? null : iso(d.appliedAt) })),
      createdAt: iso(p.createdAt),
      updatedAt: iso(p.updatedAt),
    });
  }
  return out;
}

const pct = (x: number) => `${(x * 100).toFixed(x > 0 && x < 0.001 ? 3 : 1)}%`;

function countsLine(c: OutcomeCounts): string {
  return `staged ${c.staged}, trial ${c.trial}, confirmed ${c.confirmed}, failed ${c.failed}, refused ${c.refused}, removed ${c.removed}, recalled ${c.recalled}`;
}

/** The text form: a block per plan, its decisions oldest first. */
export function statusText(entries: readonly FleetStatusEntry[]): string {
  if (entries.length === 0) return 'no rollout planned (revpatch fleet plan ID --repo DIR)';
  const lines: string[] = [];
  for (const e of entries) {
    const c = e.current;
    const stage = e.stage === 0 ? 'not started' : `stage ${e.stage}/${e.stages.length}`;
    lines.push(
      `${e.id} v${e.version}  ${e.state.toUpperCase()}  ${stage} of ${e.stages.join(', ')}%  rollout ${e.rollout}%${e.halted ? '  halted' : ''}`,
      `  devices:    ${countsLine(e.counts)}`,
      `  failure rate ${pct(e.failureRate)}; this stage ${pct(c.failureRate)} of ${c.counts.confirmed + c.counts.failed} verdicts (99.5% Wilson ${pct(c.wilsonLower)}–${pct(c.wilsonUpper)}), soaked ${c.soakedSeconds} s`,
      `  plan: halt above ${e.plan.maxFailurePct}%, ${e.plan.minReports} verdicts and ${e.plan.soakSeconds} s a stage${e.plan.autoRecall ? ', auto-recall' : ''}; ${e.enrolledDevices === null ? 'enrolled devices unknown' : `${e.enrolledDevices} devices enrolled`}`,
    );
    if (e.state === 'rolling' || e.state === 'planned') lines.push(`  next: ${e.next.action} (${e.next.code}): ${e.next.reason}`);
    lines.push('  decisions:');
    for (const d of e.decisions) {
      const pending = d.appliedAt === null ? '  [recorded, not yet published]' : '';
      lines.push(`    ${d.at}  ${d.action.padEnd(8)} ${`${d.fromRollout}% → ${d.toRollout}%`.padEnd(12)} ${d.by.padEnd(10)} ${d.code}: ${d.reason}${pending}`);
    }
  }
  return lines.join('\n');
}
