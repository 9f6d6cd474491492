/**
 * bench/executables.js judges issue 17's six targets from its measured
 * pairs: a missing figure is "not measured", a revpatch patch or install
 * that failed is a miss, never a gap.
 */
import t from 'tap';
import * as path from 'node:path';
import { ROOT } from './helpers';

interface Target { target: string; measured: string; ok: boolean | null }
// eslint-disable-next-line @typescript-eslint/no-require-imports
const X = require(path.join(ROOT, 'bench', 'executables.js')) as {
  PAIRS: { name: string; kind: string; old: { spec: string }; new: { spec: string } }[];
  evaluate(r: { pairs: unknown[] }): Target[];
  section(r: unknown): string;
};

type Sizes = Partial<Record<'bsdiff' | 'hdiffz -m' | 'zstd' | 'xdelta3', number | null>>;

function pair(name: string, opts: {
  kind?: string; newSize?: number; rp?: number | null; checked?: boolean; failed?: string | null;
  sizes?: Sizes; flags?: Record<string, unknown>; installs?: Record<string, number | null>;
}) {
  const sizes: Sizes = opts.sizes ?? { bsdiff: 1000, 'hdiffz -m': 900, zstd: 2000, xdelta3: 3000 };
  const installs: Record<string, { seconds: number | null; runs: number; failed?: string }> = {};
  for (const [k, v] of Object.entries(opts.installs ?? {})) installs[k] = v === null ? { seconds: null, runs: 0, failed: 'it broke' } : { seconds: v, runs: 3 };
  return {
    name, kind: opts.kind ?? 'executable', toolchain: 'Go', format: 'ELF x86-64',
    flags: { lld100: false, tenMB: false, linuxArm64: null, darwinArm64: null, ...opts.flags },
    source: { old: 'a@1 bin/a', new: 'a@2 bin/a' },
    oldSize: opts.newSize ?? 10_000_000, newSize: opts.newSize ?? 10_000_000, oldSha256: 'x', newSha256: 'y',
    revpatch: { patchSize: opts.rp === undefined ? 500 : opts.rp, create: { seconds: 1, peakRss: 1 }, checked: opts.checked ?? true, failed: opts.failed ?? null, format: 1, requires: null },
    others: Object.entries(sizes).map(([tool, size]) => (size === null
      ? { tool, patchSize: null, skipped: 'not installed (Debian package x)' }
      : { tool, patchSize: size, create: { seconds: 1, peakRss: 1 }, thisRun: true, checked: true, skipped: null })),
    installs,
  };
}

const byName = (targets: Target[], start: string) => {
  const found = targets.find((x) => x.target.startsWith(start));
  if (!found) throw new Error(`no target starting ${start}`);
  return found;
};

t.test('the pairs cover every toolchain and wrapping the issue names', async (t) => {
  const names = X.PAIRS.map((p) => p.name).join('\n');
  for (const want of ['linux-x64', 'linux-arm64', 'darwin-arm64', 'win32-x64', 'biome linux-x64', 'next-swc', 'libvips', 'node linux-x64', 'zstd -19 frame', '.tgz']) {
    t.ok(names.includes(want), `a pair for ${want}`);
  }
  t.ok(X.PAIRS.some((p) => p.kind === 'wrapped'), 'wrapped pairs');
});

t.test('size targets: met, missed, and not measured when the reference tool did not run', async (t) => {
  const met = X.evaluate({ pairs: [pair('a', { rp: 800, sizes: { bsdiff: 1000, 'hdiffz -m': 900 } })] });
  t.equal(byName(met, 'patch size, every executable').ok, true, '800 ≤ 0.9 × 900');
  const missed = X.evaluate({ pairs: [pair('a', { rp: 820, sizes: { bsdiff: 1000, 'hdiffz -m': 900 } })] });
  t.equal(byName(missed, 'patch size, every executable').ok, false, '820 > 0.9 × 900');
  t.match(byName(missed, 'patch size, every executable').measured, /a: 0\.911× hdiffz -m/);
  const absent = X.evaluate({ pairs: [pair('a', { sizes: { bsdiff: 1000, 'hdiffz -m': null } })] });
  t.equal(byName(absent, 'patch size, every executable').ok, null);
  t.match(byName(absent, 'patch size, every executable').measured, /hdiffz -m: not installed/);
  const none = X.evaluate({ pairs: [] });
  t.equal(byName(none, 'patch size, every executable').ok, null, 'no pair: not measured');
});

t.test('a revpatch patch that failed its check is a miss, not a gap', async (t) => {
  const r = X.evaluate({ pairs: [pair('a', { rp: 100, checked: false, failed: 'WRONG OUTPUT: view differs' })] });
  const t1 = byName(r, 'patch size, every executable');
  t.equal(t1.ok, false);
  t.match(t1.measured, /WRONG OUTPUT/);
});

t.test('one missed pair fails a target that others meet', async (t) => {
  const r = X.evaluate({ pairs: [
    pair('big1', { rp: 400, flags: { lld100: true } }),
    pair('big2', { rp: 600, flags: { lld100: true } }),
    pair('small', { rp: 900 }),
  ] });
  const t2 = byName(r, 'patch size, LLD-linked');
  t.equal(t2.ok, false, '600 > 0.5 × 1000');
  t.match(t2.measured, /big1: 0\.400× bsdiff/);
  t.notMatch(t2.measured, /small/, 'only the LLD pairs are judged');
});

t.test('wrapped pairs are judged against 0.2 × bsdiff', async (t) => {
  const ok = X.evaluate({ pairs: [pair('z', { kind: 'wrapped', rp: 150 })] });
  t.equal(byName(ok, 'patch size, an executable in one').ok, true);
  const no = X.evaluate({ pairs: [pair('z', { kind: 'wrapped', rp: 990 })] });
  t.equal(byName(no, 'patch size, an executable in one').ok, false);
});

t.test('darwin-arm64 is held against the linux-arm64 pair of the same program', async (t) => {
  const mk = (d: number, l: number) => X.evaluate({ pairs: [
    pair('esbuild linux-arm64', { rp: l, flags: { linuxArm64: 'esbuild' } }),
    pair('esbuild darwin-arm64', { rp: d, flags: { darwinArm64: 'esbuild' } }),
  ] });
  t.equal(byName(mk(460, 460), 'patch size, darwin-arm64').ok, true);
  t.equal(byName(mk(620, 460), 'patch size, darwin-arm64').ok, false);
  const alone = X.evaluate({ pairs: [pair('esbuild darwin-arm64', { rp: 400, flags: { darwinArm64: 'esbuild' } })] });
  t.equal(byName(alone, 'patch size, darwin-arm64').ok, null, 'without the linux pair: not measured');
});

t.test('install targets: ≥ 50 MB pairs against hpatchz, 10 MB pairs in-process against zstd -d', async (t) => {
  const r = X.evaluate({ pairs: [
    pair('big', { newSize: 100_000_000, installs: { 'revpatch install': 1.2, 'hpatchz + sync': 1.0, 'revpatch in-process': 1.0, 'zstd -d + sync': 2 } }),
    pair('ten', { flags: { tenMB: true }, installs: { 'revpatch install': 0.2, 'hpatchz + sync': 0.1, 'revpatch in-process': 0.05, 'zstd -d + sync': 0.06 } }),
  ] });
  const big = byName(r, 'install time, executables ≥ 50 MB');
  t.equal(big.ok, false, '1.2 s > 1.0 s');
  t.notMatch(big.measured, /ten/, 'the small pair is not judged there');
  t.equal(byName(r, 'install time, 10 MB').ok, true, '50 ms ≤ 60 ms');
  const broken = X.evaluate({ pairs: [pair('big', { newSize: 100_000_000, installs: { 'revpatch install': null, 'hpatchz + sync': 1.0 } })] });
  t.equal(byName(broken, 'install time, executables ≥ 50 MB').ok, false, 'a failed install is a miss');
});

t.test('the section names every target and marks figures from earlier runs', async (t) => {
  const p = pair('a', {});
  (p.others[0] as { thisRun?: boolean }).thisRun = false;
  const r = {
    pairs: [p], targets: X.evaluate({ pairs: [p] }), notes: ['a note'], finished: Date.now(), elapsed: 60, load: { start: 1, end: 2 },
    addonTime: 'now', machine: { cpuModel: 'cpu', cpus: 2, memory: 1 << 30, tools: { zstd: '1.5.4' } },
    tools: [{ name: 'bsdiff', display: 'bsdiff OLD NEW PATCH', applyDisplay: null }],
  };
  const text = X.section(r);
  t.equal(text.split('\n').filter((l) => /^\| (patch size|install time)/.test(l)).length, 6, 'six target rows');
  t.match(text, /\| 1000 \(1\.000\)\* \|/, 'the cached bsdiff figure is starred');
  t.match(text, /a note/);
});
