/**
 * Seeded randomness for the fleet simulation (lib/bench/simulate.ts).
 *
 * Every draw is a pure function of (seed, device, draw number): a device's
 * check phase, jitter, restart delays and its fate under the patch do not
 * depend on what other devices did before it, so the same seed gives the
 * same fleet under two rollout rules, and a run repeats exactly. Never
 * Math.random.
 *
 * The mix is a 32-bit integer hash (the murmur3 finalizer over a
 * splitmix-style combination); two rounds give draws that pass as
 * independent for a simulation, and nothing here is for secrets.
 */

function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** A 32-bit seed from any string or number (FNV-1a over its text, then mixed). */
export function seedOf(seed: string | number): number {
  const text = String(seed);
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return fmix32(h >>> 0);
}

/** A uniform draw in [0, 1) for (seed, a, b). */
export function unit(seed: number, a: number, b: number): number {
  let h = fmix32((seed ^ Math.imul(a + 1, 0x9e3779b1)) >>> 0);
  h = fmix32((h ^ Math.imul(b + 1, 0x85ebca77)) >>> 0);
  h = fmix32((h + 0x27d4eb2f) >>> 0);
  return h / 4294967296;
}

/** Uniform in [lo, hi). */
export function uniform(u: number, lo: number, hi: number): number {
  return lo + (hi - lo) * u;
}

/** Log-uniform in [lo, hi) (lo > 0): as many devices wait minutes as hours. */
export function logUniform(u: number, lo: number, hi: number): number {
  return lo * Math.exp(Math.log(hi / lo) * u);
}
