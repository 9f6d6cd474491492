/**
 * The SQLite store folds device outcomes from the reports in sorted runs
 * (lib/fleet/store_sqlite.ts, "Counting"): insertReports folds once
 * FOLD_REPORTS reports wait, counts folds the rest first. Whatever the
 * folds' boundaries, counts must equal what every stored report says.
 */
import t, { type Test } from 'tap';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { openStore } from '../lib/fleet/store';
import { FOLD_REPORTS } from '../lib/fleet/store_sqlite';
import type { FleetStore } from '../lib/fleet/types';
import { ZERO_COUNTS, type StoredReport } from '../lib/report/format';
import { tempDir } from './helpers';

let nextId = 0;
function report(over: Partial<StoredReport> = {}): StoredReport {
  nextId++;
  return {
    id: nextId.toString(16).padStart(32, '0'),
    patch: 'p',
    version: 1,
    outcome: 'confirmed',
    code: null,
    bootAttempts: 0,
    agentVersion: '0.1.0',
    time: '2026-01-01T00:00:00.000Z',
    pseudonym: device(1),
    receivedAt: 1000,
    ...over,
  };
}
const device = (n: number): string => n.toString(16).padStart(64, '0');

async function fileStore(t: Test): Promise<{ store: FleetStore; file: string }> {
  const file = path.join(await tempDir(t, 'revpatch-fold-'), 'fleet.db');
  const store = await openStore(`sqlite:${file}`);
  t.teardown(() => store.close());
  return { store, file };
}

function foldedUpTo(file: string): number {
  const db = new Database(file, { readonly: true });
  try {
    return (db.prepare('SELECT up_to FROM outcomes_folded').get() as { up_to: number }).up_to;
  } finally {
    db.close();
  }
}

t.test('counts include reports stored since the last fold', async (t) => {
  const { store, file } = await fileStore(t);
  await store.insertReports([[report({ pseudonym: device(1) }), report({ pseudonym: device(2), outcome: 'staged' })]]);
  t.equal(foldedUpTo(file), 0, 'two reports do not make insertReports fold');
  t.same(await store.counts('p', 1), { ...ZERO_COUNTS, confirmed: 1, staged: 1 });
  await store.insertReports([[report({ pseudonym: device(3) })], [report({ pseudonym: device(1) })]]);
  t.same(await store.counts('p', 1), { ...ZERO_COUNTS, confirmed: 2, staged: 1 }, 'the same device confirming twice counts once');
  t.equal(foldedUpTo(file), 4, 'counts folded every stored report');
});

t.test('a rollback folded after the confirmation still un-counts the device', async (t) => {
  const { store } = await fileStore(t);
  await store.insertReports([[report({ pseudonym: device(7) }), report({ pseudonym: device(8) })]]);
  t.same(await store.counts('p', 1), { ...ZERO_COUNTS, confirmed: 2 });
  await store.insertReports([[report({ pseudonym: device(7), outcome: 'rolled-back', code: 'health-check-failed', receivedAt: 2000 })]]);
  t.same(await store.counts('p', 1), { ...ZERO_COUNTS, confirmed: 1, failed: 1 });
});

t.test('the earliest receive time of a device outcome is kept across folds', async (t) => {
  const { store } = await fileStore(t);
  await store.insertReports([[report({ pseudonym: device(1), receivedAt: 5000 })]]);
  t.same(await store.counts('p', 1, 4000), { ...ZERO_COUNTS, confirmed: 1 });
  // The same outcome of the same device arriving later with an earlier server time (another collector's clock).
  await store.insertReports([[report({ pseudonym: device(1), receivedAt: 3000 })]]);
  t.same(await store.counts('p', 1, 4000), { ...ZERO_COUNTS }, 'first received at 3000 now, before `since`');
  t.same(await store.counts('p', 1, 3000), { ...ZERO_COUNTS, confirmed: 1 });
});

t.test('insertReports folds once FOLD_REPORTS reports wait, and the counts agree', async (t) => {
  const { store, file } = await fileStore(t);
  const per = 1000;
  const batches: StoredReport[][] = [];
  // Devices 0..n-1 each stage, then confirm; one in ten rolls back instead.
  const devices = Math.ceil((FOLD_REPORTS + per) / 2);
  let batch: StoredReport[] = [];
  for (let d = 0; d < devices; d++) {
    batch.push(report({ pseudonym: device(d), outcome: 'staged' }));
    batch.push(d % 10 === 0 ? report({ pseudonym: device(d), outcome: 'rolled-back', code: 'boot-loop' }) : report({ pseudonym: device(d) }));
    if (batch.length >= per) {
      batches.push(batch);
      batch = [];
    }
  }
  if (batch.length > 0) batches.push(batch);
  let stored = 0;
  for (const b of batches) {
    await store.insertReports([b]);
    stored += b.length;
    if (stored < FOLD_REPORTS) t.equal(foldedUpTo(file), 0, `nothing folded at ${stored} reports`);
  }
  const folded = foldedUpTo(file);
  t.ok(folded >= FOLD_REPORTS && folded <= stored, `insertReports folded ${folded} of ${stored} reports`);
  const failed = Math.ceil(devices / 10);
  t.same(await store.counts('p', 1), { ...ZERO_COUNTS, staged: devices, confirmed: devices - failed, failed });
  t.equal(foldedUpTo(file), stored);
  t.equal(await store.reportCount(), stored);
});

t.test('a group that fails leaves the fold mark where it was', async (t) => {
  const { store, file } = await fileStore(t);
  await store.insertReports([[report({ pseudonym: device(1) })]]);
  await store.counts('p', 1);
  const before = foldedUpTo(file);
  const bad = report({ pseudonym: device(2) }) as unknown as Record<string, unknown>;
  bad.outcome = 'exploded';
  await t.rejects(store.insertReports([[report({ pseudonym: device(3) })], [bad as unknown as StoredReport]]), { code: 'E_INVALID_ARGUMENT' });
  t.equal(foldedUpTo(file), before);
  t.same(await store.counts('p', 1), { ...ZERO_COUNTS, confirmed: 1 }, 'nothing of the failed group is counted');
});
