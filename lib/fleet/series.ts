/**
 * The outcome series of a patch version as the stores return it
 * (FleetStore.outcomeSeries): rows of (outcome, bucket index, devices) from
 * either backend's GROUP BY, folded into a fixed number of intervals. An
 * index below 0 (a verdict before the series starts) joins the first
 * interval, one past the end the last, so the series always sums to the
 * version's counts.
 */
import type { OutcomeBucket } from './types';

/** Most intervals a series may have: what a chart can show, and the bound of its answer. */
export const MAX_SERIES_BUCKETS = 500;

export function seriesOf(rows: readonly Record<string, unknown>[], buckets: number): OutcomeBucket[] {
  const n = Math.max(1, Math.min(MAX_SERIES_BUCKETS, Math.floor(buckets)));
  const out: OutcomeBucket[] = Array.from({ length: n }, () => ({ confirmed: 0, failed: 0 }));
  for (const row of rows) {
    const at = Math.max(0, Math.min(n - 1, Math.floor(Number(row.bucket))));
    const devices = Number(row.n);
    if (row.outcome === 'confirmed') out[at].confirmed += devices;
    else if (row.outcome === 'rolled-back') out[at].failed += devices;
  }
  return out;
}
