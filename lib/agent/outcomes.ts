/**
 * Which fleet report (lib/report/format.ts) a patch's state transition
 * makes: a pure function of the state the agent saw last, the patch's
 * record now, and the device's boot limits, so the mapping is data the
 * tests can read.
 *
 * - staged → `staged`; trial → `trial`; active → `confirmed` (the health
 *   check passed after the restart: the only success the fleet counts).
 * - failed → `rolled-back` with why, read off the counters `boot` settles
 *   (lib/device/device.ts): a patch that used up its attempts that reached
 *   the health check failed it (`health-check-failed`; the agent's startup
 *   asks for a forced restart after each failed check); one that used up
 *   its early boots never got that far (`boot-loop`). A patch rolled back
 *   because the one beneath it was takes that one's code.
 * - pending-removal (or removed at once, if it was only staged) →
 *   `recalled` when the vendor recalled it (reason 'recalled'), else
 *   `removed` by the user; the same for patches stacked on it. The final
 *   removal at the next restart makes no second report.
 */
import type { PatchRecord } from '../device/record';
import type { RecordFields } from '../report/reporter';
import type { RollbackCode } from '../report/format';

export interface BootLimits {
  maxBootAttempts: number;
  maxEarlyBoots: number;
}

/** The reason Device.remove is given for a recall (lib/agent/agent.ts, handleRecall). */
export const RECALL_REASON = 'recalled';
const STACKED = /^stacked on (.+)$/;

export function outcomeOf(
  before: string | null,
  patch: PatchRecord,
  all: readonly PatchRecord[],
  limits: BootLimits,
): RecordFields | null {
  const base = { patch: patch.id, version: patch.version, bootAttempts: patch.bootAttempts };
  switch (patch.state) {
    case 'staged':
      return before === null ? { ...base, outcome: 'staged' } : null;
    case 'trial':
      return { ...base, outcome: 'trial' };
    case 'active':
      return before === 'active' ? null : { ...base, outcome: 'confirmed' };
    case 'failed':
      return { ...base, outcome: 'rolled-back', code: rollbackCode(patch, all, limits) };
    case 'pending-removal':
      return removal(patch, all, base);
    case 'removed':
      return before === 'pending-removal' ? null : removal(patch, all, base);
    default:
      return null;
  }
}

export function rollbackCode(patch: PatchRecord, all: readonly PatchRecord[], limits: BootLimits, depth = 0): RollbackCode {
  if (patch.bootAttempts >= limits.maxBootAttempts) return 'health-check-failed';
  if (patch.earlyBoots >= limits.maxEarlyBoots) return 'boot-loop';
  const beneath = patch.parent === null ? undefined : all.find((p) => p.id === patch.parent && p.state === 'failed');
  if (beneath && depth < all.length) return rollbackCode(beneath, all, limits, depth + 1);
  return 'health-check-failed';
}

function removal(patch: PatchRecord, all: readonly PatchRecord[], base: Omit<RecordFields, 'outcome'>): RecordFields {
  let reason = patch.reason;
  for (let hops = 0; hops < all.length; hops++) {
    const stacked = reason === undefined ? null : STACKED.exec(reason);
    if (!stacked) break;
    reason = all.find((p) => p.id === stacked[1] && (p.state === 'pending-removal' || p.state === 'removed'))?.reason;
  }
  return reason === RECALL_REASON ? { ...base, outcome: 'recalled', code: 'recall' } : { ...base, outcome: 'removed', code: 'user' };
}
