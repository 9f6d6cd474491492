import t from 'tap';
import * as crypto from 'node:crypto';
import {
  autoInstallDecision,
  compatibilityDecision,
  deferralDecision,
  estimateLayerBytes,
  maintenanceWindowDecision,
  parseTimeRange,
  recallDecision,
  restartDecision,
  rolloutBucket,
  rolloutDecision,
  spaceDecision,
  InstalledPatch,
  RestartInput,
} from '../lib/agent/policy';

/** A local time today (the policy works in the host's time zone). */
const at = (hh: number, mm = 0, day = 15) => new Date(2026, 5, day, hh, mm, 0, 0);

t.test('auto-install on installs, off only notifies, with a reason either way', async (t) => {
  const on = autoInstallDecision({ autoInstall: true });
  t.equal(on.action, 'install');
  t.equal(on.code, 'auto-install-on');
  const off = autoInstallDecision({ autoInstall: false });
  t.equal(off.action, 'notify');
  t.equal(off.code, 'auto-install-off');
  t.match(off.reason, /off/);
});

t.test('maintenance window: inside a same-day range, outside it, with the next opening', async (t) => {
  const windows = [{ start: '02:00', end: '04:30' }];
  t.equal(maintenanceWindowDecision(at(3, 15), windows).action, 'inside');
  t.equal(maintenanceWindowDecision(at(2, 0), windows).action, 'inside', 'the start minute is inside');
  t.equal(maintenanceWindowDecision(at(4, 30), windows).action, 'outside', 'the end minute is outside');
  const later = maintenanceWindowDecision(at(12, 0), windows);
  t.equal(later.action, 'outside');
  t.same(later.nextStart, at(2, 0, 16), 'after the window: it opens tomorrow');
  t.same(maintenanceWindowDecision(at(1, 0), windows).nextStart, at(2, 0), 'before the window: it opens today');
});

t.test('maintenance window crossing midnight holds late evening and early morning', async (t) => {
  const windows = [parseTimeRange('22:00-05:30')];
  t.equal(maintenanceWindowDecision(at(23, 59), windows).action, 'inside');
  t.equal(maintenanceWindowDecision(at(0, 0), windows).action, 'inside');
  t.equal(maintenanceWindowDecision(at(5, 29), windows).action, 'inside');
  t.equal(maintenanceWindowDecision(at(5, 30), windows).action, 'outside');
  const noon = maintenanceWindowDecision(at(12, 0), windows);
  t.equal(noon.action, 'outside');
  t.same(noon.nextStart, at(22, 0));
});

t.test('maintenance window: several ranges, the earliest next opening; none set means any time', async (t) => {
  const windows = [parseTimeRange('13:00-14:00'), parseTimeRange('01:00-02:00')];
  t.same(maintenanceWindowDecision(at(15, 0), windows).nextStart, at(1, 0, 16));
  t.same(maintenanceWindowDecision(at(10, 0), windows).nextStart, at(13, 0));
  const none = maintenanceWindowDecision(at(15, 0), []);
  t.equal(none.action, 'inside');
  t.equal(none.code, 'no-window');
  t.equal(maintenanceWindowDecision(at(15, 0), [parseTimeRange('00:00-00:00')]).action, 'inside', 'equal ends: all day');
});

t.test('malformed maintenance windows are refused with E_INVALID_ARGUMENT', async (t) => {
  for (const bad of ['24:00-01:00', '1:00-02:00', '01:00', '01:60-02:00', 'night', '']) {
    t.throws(() => parseTimeRange(bad), { code: 'E_INVALID_ARGUMENT' }, bad);
  }
  t.throws(() => maintenanceWindowDecision(at(1), [{ start: '25:00', end: '01:00' }]), { code: 'E_INVALID_ARGUMENT' });
});

t.test('deferral limit by count: allowed until the count is used up', async (t) => {
  const limit = { maxCount: 3 };
  t.equal(deferralDecision({ count: 0, firstRequestedAt: null }, limit, at(12)).action, 'may-defer');
  t.equal(deferralDecision({ count: 2, firstRequestedAt: at(1).toISOString() }, limit, at(12)).action, 'may-defer');
  const used = deferralDecision({ count: 3, firstRequestedAt: at(1).toISOString() }, limit, at(12));
  t.equal(used.action, 'exhausted');
  t.equal(used.code, 'deferral-count');
});

t.test('deferral limit by time: deferring stops once the restart has waited that long', async (t) => {
  const limit = { maxDurationMs: 24 * 3600 * 1000 };
  const first = at(12, 0, 15).toISOString();
  t.equal(deferralDecision({ count: 40, firstRequestedAt: first }, limit, at(11, 59, 16)).action, 'may-defer');
  const late = deferralDecision({ count: 1, firstRequestedAt: first }, limit, at(12, 0, 16));
  t.equal(late.action, 'exhausted');
  t.equal(late.code, 'deferral-time');
  t.equal(deferralDecision({ count: 0, firstRequestedAt: null }, limit, at(12)).action, 'may-defer', 'not yet asked');
  t.equal(
    deferralDecision({ count: 5, firstRequestedAt: first }, { maxCount: 5, maxDurationMs: 1e12 }, at(13)).code,
    'deferral-count',
    'with both limits the first one reached counts',
  );
});

t.test('restart decision: waits for the window, mains power and idleness; forces once deferrals run out', async (t) => {
  const base: RestartInput = {
    restartPending: true,
    now: at(3),
    windows: [parseTimeRange('02:00-04:00')],
    deferral: { count: 0, firstRequestedAt: null },
    limit: { maxCount: 2 },
    onBattery: false,
    idle: true,
  };
  t.equal(restartDecision(base).action, 'request');
  t.equal(restartDecision({ ...base, restartPending: false }).action, 'none');
  const outside = restartDecision({ ...base, now: at(9) });
  t.equal(outside.action, 'wait');
  t.equal(outside.code, 'outside-window');
  t.same(outside.nextStart, at(2, 0, 16));
  t.equal(restartDecision({ ...base, onBattery: true }).code, 'on-battery');
  t.equal(restartDecision({ ...base, idle: false }).code, 'not-idle');
  const forced = restartDecision({ ...base, now: at(9), onBattery: true, deferral: { count: 2, firstRequestedAt: at(1).toISOString() } });
  t.equal(forced.action, 'force', 'an exhausted deferral overrides window, battery and idleness');
  t.equal(forced.code, 'deferral-count');
});

const rec = (id: string, state: string, parent: string | null, extra: Partial<InstalledPatch> = {}): InstalledPatch => ({
  id,
  state,
  parent,
  version: 1,
  ...extra,
});

t.test('compatibility: a patch for the base fits an empty stack, not one with a patch on top', async (t) => {
  t.equal(compatibilityDecision({ id: 'a', parent: null, version: 1 }, []).action, 'install');
  const covered = compatibilityDecision({ id: 'b', parent: null, version: 1 }, [rec('a', 'active', null)]);
  t.equal(covered.action, 'skip');
  t.equal(covered.code, 'base-not-top');
});

t.test('compatibility: the parent must be the top of the next-boot stack', async (t) => {
  const stack = [rec('a', 'active', null), rec('b', 'staged', 'a')];
  t.equal(compatibilityDecision({ id: 'c', parent: 'b', version: 1 }, stack).action, 'install', 'staged counts: it is in the next boot');
  const under = compatibilityDecision({ id: 'c', parent: 'a', version: 1 }, stack);
  t.equal(under.action, 'skip');
  t.equal(under.code, 'parent-not-top');
  const missing = compatibilityDecision({ id: 'd', parent: 'zzz', version: 1 }, stack);
  t.equal(missing.action, 'wait');
  t.equal(missing.code, 'parent-missing');
  const gone = [rec('a', 'active', null), rec('b', 'pending-removal', 'a')];
  t.equal(compatibilityDecision({ id: 'c', parent: 'b', version: 1 }, gone).action, 'wait', 'a parent leaving at the restart does not count');
  t.equal(compatibilityDecision({ id: 'c', parent: 'a', version: 1 }, gone).action, 'install');
});

t.test('compatibility: with the next-boot digest given, the source digest must equal it', async (t) => {
  const offered = { id: 'a', parent: null, version: 1, sourceDigest: 'aa'.repeat(32) };
  t.equal(compatibilityDecision(offered, [], 'aa'.repeat(32)).action, 'install');
  const other = compatibilityDecision(offered, [], 'bb'.repeat(32));
  t.equal(other.action, 'skip');
  t.equal(other.code, 'view-mismatch');
  t.equal(compatibilityDecision({ id: 'a', parent: null, version: 1 }, [], 'bb'.repeat(32)).action, 'install', 'no digest offered: parent id only');
});

t.test('compatibility: an installed, removed, recalled or failed id is never taken again', async (t) => {
  t.equal(compatibilityDecision({ id: 'a', parent: null, version: 1 }, [rec('a', 'trial', null)]).code, 'installed');
  const recalled = compatibilityDecision({ id: 'a', parent: null, version: 1 }, [rec('a', 'removed', null, { reason: 'recalled' })]);
  t.equal(recalled.action, 'skip');
  t.equal(recalled.code, 'held-before');
  t.match(recalled.reason, /recalled/);
  t.equal(compatibilityDecision({ id: 'a', parent: null, version: 1 }, [rec('a', 'failed', null)]).code, 'held-before');
});

t.test('rollout bucket is SHA-256(deviceId || 0x00 || patchId)[0..8] mod 10000, and stable', async (t) => {
  const digest = crypto.createHash('sha256').update(Buffer.concat([Buffer.from('device-1'), Buffer.from([0]), Buffer.from('fix-1')])).digest();
  t.equal(rolloutBucket('device-1', 'fix-1'), Number(digest.readBigUInt64BE(0) % 10000n));
  t.equal(rolloutBucket('device-1', 'fix-1'), rolloutBucket('device-1', 'fix-1'));
  t.not(rolloutBucket('device-1', 'fix-1'), rolloutBucket('device-1', 'fix-2'), 'another patch, another bucket (for these ids)');
  t.not(rolloutBucket('ab', 'c'), rolloutBucket('a', 'bc'), 'the 0x00 separator keeps (ab, c) and (a, bc) apart');
});

t.test('rollout percentage reaches about that share of devices, and raising it only adds devices', async (t) => {
  const ids = Array.from({ length: 20000 }, (_, i) => `device-${i}`);
  for (const pct of [0, 1, 10, 50, 99.5, 100]) {
    const taken = ids.filter((id) => rolloutDecision(id, 'fix-7', pct).action === 'install').length;
    const expected = (ids.length * pct) / 100;
    // binomial: 4 standard deviations
    const slack = 4 * Math.sqrt(ids.length * (pct / 100) * (1 - pct / 100)) + 1;
    t.ok(Math.abs(taken - expected) <= slack, `${pct}%: ${taken} of ${ids.length} (expected ${expected} ± ${slack.toFixed(0)})`);
  }
  const at10 = new Set(ids.filter((id) => rolloutDecision(id, 'fix-7', 10).action === 'install'));
  const at30 = new Set(ids.filter((id) => rolloutDecision(id, 'fix-7', 30).action === 'install'));
  t.ok([...at10].every((id) => at30.has(id)), 'every device in the 10% is in the 30%');
  const other = new Set(ids.filter((id) => rolloutDecision(id, 'fix-8', 10).action === 'install'));
  const overlap = [...at10].filter((id) => other.has(id)).length;
  t.ok(overlap < at10.size * 0.2, `another patch picks other devices first (overlap ${overlap} of ${at10.size})`);
  const d = rolloutDecision('device-1', 'fix-7', 0);
  t.equal(d.action, 'skip');
  t.equal(d.code, 'outside-rollout');
});

t.test('rollout percentage outside 0..100 or not a number is refused', async (t) => {
  for (const bad of [-1, 100.01, Number.NaN, Infinity, '50' as unknown as number]) {
    t.throws(() => rolloutDecision('d', 'p', bad), { code: 'E_INVALID_ARGUMENT' }, String(bad));
  }
});

t.test('free space: reserve = patch + layer + margin, and what others reserved counts', async (t) => {
  const ok = spaceDecision({ freeBytes: 1000, reservedBytes: 0, patchBytes: 100, layerBytes: 400, marginBytes: 500 });
  t.equal(ok.action, 'reserve');
  t.equal(ok.reserveBytes, 1000);
  const short = spaceDecision({ freeBytes: 1000, reservedBytes: 1, patchBytes: 100, layerBytes: 400, marginBytes: 500 });
  t.equal(short.action, 'skip');
  t.equal(short.code, 'no-space');
  t.match(short.reason, /needs 1000 bytes.*999 are available/);
  t.equal(spaceDecision({ freeBytes: 10, reservedBytes: 50, patchBytes: 1, layerBytes: 1, marginBytes: 1 }).reason.includes('0 are available'), true);
  t.throws(() => spaceDecision({ freeBytes: -1, reservedBytes: 0, patchBytes: 1, layerBytes: 1, marginBytes: 1 }), { code: 'E_INVALID_ARGUMENT' });
  t.throws(() => spaceDecision({ freeBytes: 1.5, reservedBytes: 0, patchBytes: 1, layerBytes: 1, marginBytes: 1 }), { code: 'E_INVALID_ARGUMENT' });
});

t.test('layer estimate: exact from changed blocks, bounded from the patch size otherwise', async (t) => {
  t.equal(estimateLayerBytes({ patchBytes: 10, changedBlocks: 100, blockSize: 4096 }), 100 * (4096 + 48) + 1024 * 1024);
  t.equal(estimateLayerBytes({ patchBytes: 1000 }), 4000 + 1024 * 1024);
});

t.test('recall: a booted patch is removed at the restart, a staged one now, others need nothing', async (t) => {
  for (const state of ['trial', 'active']) {
    const d = recallDecision(rec('a', state, null));
    t.equal(d.action, 'remove-at-restart', state);
    t.equal(d.code, 'recalled');
  }
  t.equal(recallDecision(rec('a', 'staged', null)).action, 'remove-now');
  for (const state of ['pending-removal', 'removed', 'failed']) {
    t.equal(recallDecision(rec('a', state, null)).action, 'none', state);
  }
});
