/**
 * A short, bounded run of scripts/fuzz-ts.js over lib/ directly: mutated
 * patch headers, manifests, signed patch files, key files and random JSON,
 * each failure a RevpatchError with a stable code, and strict JSON agreeing
 * with JSON.parse on duplicate-free documents. `npm run fuzz:ts -- SECONDS`
 * runs the same fuzzer for longer with a fresh seed.
 */
import t from 'tap';
import * as errors from '../lib/engine/errors';
import * as keys from '../lib/patch/keys';
import * as manifest from '../lib/patch/manifest';
import * as patchFile from '../lib/patch/patch_file';
import * as signing from '../lib/patch/signing';
import * as strictJson from '../lib/patch/strict_json';

const { runFuzz } = require('../scripts/fuzz-ts.js') as {
  runFuzz: (
    lib: object,
    options: { seconds: number; seed: number },
  ) => Promise<{
    iterations: number;
    byKind: Record<string, number>;
    stats: { ok: number; agreed: number; codes: Record<string, number> };
    failures: { kind: string; input: Buffer; message: string }[];
  }>;
};

const SEED = Number(process.env.REVPATCH_FUZZ_SEED ?? 20240501);

t.test('mutated headers, manifests, patch and key files fail only with stable codes', async (t) => {
  const lib = { errors, keys, manifest, patchFile, signing, strictJson };
  const result = await runFuzz(lib, { seconds: 5, seed: SEED });
  for (const f of result.failures) {
    t.fail(`${f.kind}: ${f.message}\n  input (base64): ${f.input.toString('base64').slice(0, 2000)}`);
  }
  t.equal(result.failures.length, 0, `no failure in ${result.iterations} inputs (seed ${SEED})`);
  t.ok(result.iterations > 500, `enough inputs ran (${result.iterations})`);
  for (const kind of ['header', 'manifest', 'manifestEdit', 'json', 'jsonRandom', 'patchFile', 'patchFileResigned']) {
    t.ok((result.byKind[kind] ?? 0) > 0, `${kind} inputs ran`);
  }
  t.ok(result.stats.agreed > 50, `strict JSON and JSON.parse agreed on ${result.stats.agreed} documents`);
  for (const code of ['E_FORMAT', 'E_MANIFEST', 'E_SIGNATURE']) {
    t.ok((result.stats.codes[code] ?? 0) > 0, `${code} was reached`);
  }
});
