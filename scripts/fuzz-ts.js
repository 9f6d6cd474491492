#!/usr/bin/env node
'use strict';
/**
 * Fuzzes what libFuzzer cannot reach because it is TypeScript: the patch
 * file framing (lib/patch/patch_file.ts: decodeHeader, PatchFile.open, verify),
 * the manifest (lib/patch/strict_json.ts + lib/patch/manifest.ts with Ajv) and the key
 * files (lib/patch/keys.ts).
 *
 *   node scripts/fuzz-ts.js [SECONDS] [--seed N]    (npm run fuzz:ts -- [SECONDS])
 *   node scripts/fuzz-ts.js --replay KIND FILE      re-runs one saved input
 *
 * Inputs are valid headers, manifests, signed patch files and key files,
 * mutated by byte flips, interesting bytes, inserts, deletions,
 * truncations, duplications, splices and a dictionary of JSON and framing
 * tokens, plus structure-aware edits of the manifest (a field replaced by a
 * value of another type or an edge value, removed, added, duplicated) and
 * random JSON documents. Checks:
 *  - every failure is a RevpatchError whose code is one the call may give
 *    (E_FORMAT/E_UNSUPPORTED for the header; E_MANIFEST for the manifest;
 *    E_FORMAT/E_UNSUPPORTED/E_SIGNATURE/E_MANIFEST for a patch file; E_KEY
 *    for a key file), with a message; never another exception;
 *  - a header that decodes re-encodes to the same bytes;
 *  - a manifest that validates re-encodes (encodeManifest) to a manifest
 *    that parses to the same value, and has as many chunk digests as chunks;
 *  - a patch file that verifies has exactly the header, manifest and
 *    signature bytes that were signed;
 *  - differential: parseStrictJson agrees with JSON.parse: it accepts
 *    nothing JSON.parse refuses, refuses what JSON.parse accepts only for
 *    its documented reasons (duplicate keys, depth, unsafe integers,
 *    overflowing numbers, unpaired surrogates), and otherwise returns the
 *    same value; a well-formed string and its UTF-8 bytes parse the same.
 * Failing inputs are saved to native/fuzz/crashes/ts-<kind>-<hash>.bin.
 *
 * The engine is `runFuzz(lib, options)`, so test/fuzz_manifest.test.ts runs
 * a short bounded pass over lib/ directly; run as a script it uses dist/.
 */
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

// ------------------------------------------------------------ randomness

/** xorshift128+ over two 32-bit halves' worth of state; deterministic per seed. */
function makeRandom(seed) {
  let a = (seed >>> 0) ^ 0x9e3779b9;
  let b = Math.imul(seed >>> 0, 0x85ebca6b) ^ 0xc2b2ae35;
  const next = () => {
    a ^= a << 11;
    a ^= a >>> 8;
    a ^= b ^ (b >>> 19);
    const t = a;
    a = b;
    b = t;
    return (a + b) >>> 0;
  };
  for (let i = 0; i < 16; i++) next();
  const r = {
    u32: next,
    below: (n) => (n <= 0 ? 0 : next() % n),
    chance: (p) => next() / 4294967296 < p,
    pick: (list) => list[next() % list.length],
    bytes: (n) => {
      const out = Buffer.alloc(n);
      for (let i = 0; i < n; i++) out[i] = next() & 0xff;
      return out;
    },
  };
  return r;
}

// ------------------------------------------------------------ mutation

const JSON_TOKENS = [
  '{', '}', '[', ']', ',', ':', '"', '\\', 'null', 'true', 'false', '0', '-0', '-', '1.5', '1e309', '-1e309',
  '1e-400', '9007199254740991', '9007199254740992', '9007199254740993', '-9007199254740993', '1E2', '01', '.5',
  '1.', '+1', 'NaN', 'Infinity', '"\\u0000"', '"\\ud800"', '"\\udc00"', '"\\ud83d\\ude00"', '"\\uD83D"', '"\\x41"',
  '"__proto__"', '"constructor"', '"prototype"', ' ', '\t', '\n', '\r', '\u00a0', '\ufeff', '\u2028', '/*', '*/',
  '//', "'", '"format"', '"id"', '"version"', '"payload"', '"chunks"', '"chunkSize"', '"size"', '"digest"',
  '"blockSize"', '"parent"', '"expires"', '"created"', '"keyId"', '"operations"', '"REPLACE"',
  '"2024-02-29T00:00:00Z"', '"2023-02-29T00:00:00Z"', '"1990-12-31T23:59:60Z"', '"2024-01-01T00:00:00+24:00"',
  '"2024-01-01t00:00:00z"', `"${'0'.repeat(64)}"`, `"${'A'.repeat(64)}"`, '"0123456789abcdef"', '[]', '{}',
  '[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[', '"\u00e9"', '"\u{1f600}"',
];
const INTERESTING_BYTES = [0x00, 0x01, 0x7f, 0x80, 0xff, 0xfe, 0xc0, 0xc1, 0xed, 0xf4, 0xf5, 0x22, 0x5c, 0x7b, 0x7d];
const FRAMING_TOKENS = [
  Buffer.from('RVPATCH\0', 'latin1'),
  u32(0), u32(1), u32(2), u32(63), u32(64), u32(65), u32(4 * 1024 * 1024), u32(4 * 1024 * 1024 + 1), u32(0xffffffff),
  u64(0n), u64(2n ** 53n - 1n), u64(2n ** 53n), u64(2n ** 64n - 1n), u64(2n ** 63n),
];

function u32(v) {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v >>> 0);
  return b;
}
function u64(v) {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(v);
  return b;
}

/** One random byte-level mutation of `input` (never modified in place). */
function mutateOnce(r, input, others, tokens) {
  const n = input.length;
  const at = r.below(n + 1);
  switch (r.below(11)) {
    case 0: {
      if (n === 0) return Buffer.from([r.u32() & 0xff]);
      const out = Buffer.from(input);
      out[r.below(n)] ^= 1 << r.below(8);
      return out;
    }
    case 1: {
      if (n === 0) return input;
      const out = Buffer.from(input);
      out[r.below(n)] = r.pick(INTERESTING_BYTES);
      return out;
    }
    case 2:
      return Buffer.concat([input.subarray(0, at), r.bytes(1 + r.below(8)), input.subarray(at)]);
    case 3: {
      const end = Math.min(n, at + 1 + r.below(16));
      return Buffer.concat([input.subarray(0, at), input.subarray(end)]);
    }
    case 4:
      return input.subarray(0, r.below(n + 1));
    case 5: {
      const from = r.below(n + 1);
      const piece = input.subarray(from, Math.min(n, from + 1 + r.below(32)));
      return Buffer.concat([input.subarray(0, at), piece, input.subarray(at)]);
    }
    case 6: {
      const other = r.pick(others);
      return Buffer.concat([input.subarray(0, at), other.subarray(r.below(other.length + 1))]);
    }
    case 7:
    case 8: {
      const token = toBuffer(r.pick(tokens));
      return Buffer.concat([input.subarray(0, at), token, input.subarray(at)]);
    }
    case 9: {
      const token = toBuffer(r.pick(tokens));
      return Buffer.concat([input.subarray(0, at), token, input.subarray(Math.min(n, at + token.length))]);
    }
    default: {
      // A decimal number in the text nudged to an edge.
      const text = input.toString('latin1');
      const numbers = [...text.matchAll(/-?\d+/g)];
      if (numbers.length === 0) return input;
      const m = r.pick(numbers);
      const edge = r.pick(['0', '-1', '1', '511', '512', '65535', '65536', '16777217', '4294967296',
        '70368744177665', '9007199254740992', '1e3', String(Number(m[0]) + 1), String(Number(m[0]) - 1)]);
      return Buffer.from(text.slice(0, m.index) + edge + text.slice(m.index + m[0].length), 'latin1');
    }
  }
}

function toBuffer(token) {
  return Buffer.isBuffer(token) ? token : Buffer.from(token, 'utf8');
}

function havoc(r, input, others, tokens) {
  let out = input;
  const rounds = 1 + r.below(r.chance(0.2) ? 16 : 4);
  for (let i = 0; i < rounds; i++) out = mutateOnce(r, out, others, tokens);
  return out;
}

// ------------------------------------------------------------ valid inputs

const hex = (seed) => crypto.createHash('sha256').update(String(seed)).digest('hex');

function sampleManifest(r, keyId) {
  const blockSize = r.pick([512, 4096, 65536]);
  const chunkSize = r.pick([65536, 65536, 65536, 1048576]);
  const payloadSize = r.pick([0, 100, chunkSize, chunkSize + 1, 3 * chunkSize + 5]);
  const chunks = [];
  for (let i = 0; i < Math.ceil(payloadSize / chunkSize); i++) chunks.push(hex(`chunk${i}`));
  const targetSize = r.pick([0, 1, blockSize * 10, 1 << 20]);
  const targetBlocks = Math.ceil(targetSize / blockSize);
  const stats = () => ({ count: r.below(3), targetBlocks: Math.min(r.below(2), targetBlocks), dataBytes: r.below(1000) });
  return {
    format: 1,
    id: r.pick(['fix-1', 'a', 'security.2024-05_b']),
    version: r.pick([1, 2, 2147483647]),
    title: r.pick(['', 'Sample fix', 'ünïcödé 😀']),
    severity: r.pick(['low', 'moderate', 'high', 'critical']),
    parent: r.pick([null, 'base-1']),
    blockSize,
    source: { size: r.pick([0, 1 << 20]), digest: hex('source') },
    target: { size: targetSize, digest: hex('target') },
    operationCount: payloadSize === 0 ? 0 : r.below(5),
    changedBlocks: Math.min(r.below(5), targetBlocks),
    operations: {
      REPLACE: stats(), REPLACE_BROTLI: stats(), ZERO: stats(), COPY: stats(), DIFF: stats(),
    },
    payload: { size: payloadSize, digest: hex('payload'), chunkSize, chunks },
    removable: r.chance(0.5),
    created: '2024-05-01T12:00:00.000Z',
    expires: r.pick([null, '2030-01-01T00:00:00Z']),
    keyId,
  };
}

const EDGE_VALUES = [
  null, true, false, 0, -0, -1, 1, 0.5, 1e21, 2 ** 53, 2 ** 53 + 2, -(2 ** 53), 2 ** 46, 2 ** 46 + 1, 511, 512, 1023,
  65535, 65536, 16777216, 16777217, 2147483648, '', ' ', 'x', '-', '.a', 'a'.repeat(129), 'a'.repeat(201), hex(1),
  hex(1).toUpperCase(), hex(1).slice(1), '0123456789abcdef', '0123456789ABCDEF', '2024-02-30T00:00:00Z',
  '2024-01-01T00:00:00Z', '2020-01-01T00:00:00Z', '1970-01-01T00:00:00.123456789Z', '2024-01-01 00:00:00Z',
  [], [hex(2)], {}, { size: 0, digest: hex(3) }, ['REPLACE'],
];

/** A structure-aware edit of a manifest object: returns JSON text. */
function editManifest(r, manifest) {
  const m = JSON.parse(JSON.stringify(manifest));
  const holders = [];
  const walk = (v, depth) => {
    if (v && typeof v === 'object') {
      holders.push(v);
      if (depth < 4) for (const k of Object.keys(v)) walk(v[k], depth + 1);
    }
  };
  walk(m, 0);
  const edits = 1 + r.below(3);
  let duplicate = null;
  for (let i = 0; i < edits; i++) {
    const holder = r.pick(holders);
    const keys = Object.keys(holder);
    const key = Array.isArray(holder) ? r.below(holder.length + 1) : r.pick(keys.length ? keys : ['x']);
    switch (r.below(5)) {
      case 0:
        if (Array.isArray(holder)) holder.splice(Number(key), 1);
        else delete holder[key];
        break;
      case 1:
        if (!Array.isArray(holder)) holder[r.pick(['extra', '__proto__', 'constructor', 'Format', 'id '])] = r.pick(EDGE_VALUES);
        else holder.push(r.pick(EDGE_VALUES));
        break;
      case 2:
        if (!Array.isArray(holder)) duplicate = key;
        break;
      default:
        holder[key] = r.pick(EDGE_VALUES);
    }
  }
  let text = JSON.stringify(m, null, r.chance(0.2) ? r.pick([1, 2, '\t']) : undefined);
  if (duplicate !== null && typeof duplicate === 'string') {
    // The same key twice in one object: JSON.parse keeps the last.
    const needle = `"${duplicate}":`;
    const at = text.indexOf(needle);
    if (at >= 0) text = `${text.slice(0, at)}"${duplicate}":${JSON.stringify(r.pick(EDGE_VALUES))},${text.slice(at)}`;
  }
  return text;
}

/**
 * A random JSON document, valid unless mutated afterwards; sets
 * `facts.duplicate` when some object got the same key twice (compared
 * after unescaping, so "a" and "\u0061" are the same key).
 */
function randomJson(r, depth = 0, facts = {}) {
  const kind = depth > 6 ? r.below(4) : r.below(7);
  switch (kind) {
    case 0:
      return r.pick(['null', 'true', 'false']);
    case 1:
      return r.pick(['0', '-0', '1', '-1', '0.5', '1e5', '1E-5', '-2.5e+10', '123456789', '9007199254740991',
        '9007199254740993', '1e308', '1e309', '5e-324', '2e-400', '100000000000000000000', '1.0', '0e0']);
    case 2:
    case 3: {
      const parts = [];
      const count = r.below(6);
      for (let i = 0; i < count; i++) {
        parts.push(r.pick(['a', 'é', '😀', ' ', '\\n', '\\"', '\\\\', '\\/', '\\u0041', '\\u00e9', '\\ud83d\\ude00',
          '\\ud800', '\\udfff', '\\u0000', '\\b\\f\\r\\t', '\u2028', 'key']));
      }
      return `"${parts.join('')}"`;
    }
    case 4:
    case 5: {
      const count = r.below(5);
      const keys = [];
      const seen = new Set();
      for (let i = 0; i < count; i++) {
        const key = r.chance(0.15) && keys.length ? r.pick(keys) : r.pick(['"a"', '"b"', '"__proto__"', '"1"', '"0"',
          '"é"', '"\\u0061"', '"constructor"', '""', `"k${r.below(100)}"`]);
        if (seen.has(JSON.parse(key))) facts.duplicate = true;
        seen.add(JSON.parse(key));
        keys.push(key);
      }
      const ws = () => r.pick(['', '', ' ', '\n', '\t', '\r\n  ']);
      return `{${keys.map((k) => `${ws()}${k}${ws()}:${ws()}${randomJson(r, depth + 1, facts)}${ws()}`).join(',')}}`;
    }
    default: {
      const count = r.below(5);
      const items = [];
      for (let i = 0; i < count; i++) items.push(randomJson(r, depth + 1, facts));
      return `[${items.join(r.pick([',', ', ', ' ,\n']))}]`;
    }
  }
}

// ------------------------------------------------------------ checks

class FuzzFailure extends Error {}

function deepEqual(a, b) {
  if (typeof a !== typeof b) return false;
  if (typeof a === 'number') return Object.is(a, b);
  if (a === null || b === null || typeof a !== 'object') return a === b;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  if (ka.length !== kb.length) return false;
  for (let i = 0; i < ka.length; i++) {
    if (ka[i] !== kb[i]) return false;
    if (!Object.prototype.hasOwnProperty.call(b, ka[i])) return false;
    if (!deepEqual(a[ka[i]], b[ka[i]])) return false;
  }
  return true;
}

/** Runs `fn`; a throw must be a RevpatchError with one of `codes`. */
function expectCodes(lib, codes, fn, stats) {
  try {
    const value = fn();
    stats.ok++;
    return { value };
  } catch (err) {
    checkError(lib, codes, err, stats);
    return { error: err };
  }
}

async function expectCodesAsync(lib, codes, fn, stats) {
  try {
    const value = await fn();
    stats.ok++;
    return { value };
  } catch (err) {
    checkError(lib, codes, err, stats);
    return { error: err };
  }
}

function checkError(lib, codes, err, stats) {
  if (err instanceof FuzzFailure) throw err;
  if (!(err instanceof lib.errors.RevpatchError)) {
    throw new FuzzFailure(`threw a non-RevpatchError: ${err && err.stack ? err.stack : String(err)}`);
  }
  if (!codes.includes(err.code)) throw new FuzzFailure(`unexpected code ${err.code}: ${err.message}`);
  if (typeof err.message !== 'string' || err.message.length === 0) throw new FuzzFailure(`${err.code} without a message`);
  stats.codes[err.code] = (stats.codes[err.code] ?? 0) + 1;
}

const STRICT_EXTRA_REFUSALS = /duplicate key|nesting is deeper|beyond 2\^53|out of range|unpaired surrogate/;

function depthOf(v) {
  if (!v || typeof v !== 'object') return 0;
  let d = 0;
  for (const k of Object.keys(v)) d = Math.max(d, depthOf(v[k]));
  return d + 1;
}

/** parseStrictJson against JSON.parse on one text. */
function differential(lib, text, stats) {
  const { parseStrictJson } = lib.strictJson;
  let expected;
  let jsonError = null;
  try {
    expected = JSON.parse(text);
  } catch (err) {
    jsonError = err;
  }
  const strict = expectCodes(lib, ['E_MANIFEST'], () => parseStrictJson(text), stats);
  const outcome = strict.error ? strict.error.message : 'accepted';
  if (jsonError) {
    if (!strict.error) throw new FuzzFailure(`strict JSON accepted what JSON.parse refuses (${jsonError.message})`);
    stats.bothRefused++;
    return outcome;
  }
  if (strict.error) {
    const message = strict.error.message;
    if (!STRICT_EXTRA_REFUSALS.test(message)) throw new FuzzFailure(`strict JSON refused valid JSON: ${message}`);
    if (/nesting is deeper/.test(message) && depthOf(expected) <= 32) {
      throw new FuzzFailure(`strict JSON claims nesting deeper than 32, JSON.parse finds ${depthOf(expected)}`);
    }
    stats.strictOnlyRefused++;
    return outcome;
  }
  if (!deepEqual(strict.value, expected)) throw new FuzzFailure('strict JSON and JSON.parse return different values');
  if (text.isWellFormed()) {
    const bytes = expectCodes(lib, ['E_MANIFEST'], () => parseStrictJson(Buffer.from(text, 'utf8')), stats);
    if (bytes.error || !deepEqual(bytes.value, expected)) {
      throw new FuzzFailure('the UTF-8 bytes of a document parse differently from its string');
    }
  }
  stats.agreed++;
  return outcome;
}

// ------------------------------------------------------------ targets

/** The kinds of input; each takes (ctx, r) and returns the input it tried. */
function makeTargets(lib, ctx) {
  const { encodeHeader, decodeHeader, HEADER_SIZE } = lib.patchFile;
  const { parseManifest, encodeManifest } = lib.manifest;

  const header = (input) => {
    const view = ctx.r.chance(0.3) ? new Uint8Array(input) : input;
    const got = expectCodes(lib, ['E_FORMAT', 'E_UNSUPPORTED'], () => decodeHeader(view), ctx.stats);
    if (got.value) {
      const h = got.value;
      const again = expectCodes(lib, ['E_INVALID_ARGUMENT'], () => encodeHeader(h.manifestLength, h.payloadLength), ctx.stats);
      if (again.value && !again.value.equals(input.subarray(0, HEADER_SIZE))) {
        throw new FuzzFailure('a decoded header does not re-encode to its bytes');
      }
    }
  };

  const manifest = (input) => {
    const got = expectCodes(lib, ['E_MANIFEST'], () => parseManifest(input), ctx.stats);
    if (!got.value) return;
    const m = got.value;
    if (m.payload.chunks.length !== Math.ceil(m.payload.size / m.payload.chunkSize)) {
      throw new FuzzFailure('a valid manifest with the wrong number of chunk digests');
    }
    const encoded = encodeManifest(m);
    const again = parseManifest(encoded);
    if (!deepEqual(JSON.parse(JSON.stringify(again)), JSON.parse(JSON.stringify(m)))) {
      throw new FuzzFailure('encodeManifest does not round-trip a valid manifest');
    }
  };

  const json = (input) => differential(lib, input.toString('utf8'), ctx.stats);

  // An unmutated random document whose generator knows about duplicates.
  const jsonKnown = (input, duplicate) => {
    const outcome = differential(lib, input.toString('utf8'), ctx.stats);
    if (duplicate && outcome === 'accepted') throw new FuzzFailure('strict JSON accepted a duplicate key');
    if (!duplicate && /duplicate key/.test(outcome)) throw new FuzzFailure(`strict JSON saw a duplicate that is not there: ${outcome}`);
  };

  const jsonBytes = (input) => {
    let valid = true;
    try {
      new TextDecoder('utf-8', { fatal: true }).decode(input);
    } catch {
      valid = false;
    }
    const got = expectCodes(lib, ['E_MANIFEST'], () => lib.strictJson.parseStrictJson(input), ctx.stats);
    if (!valid && got.value !== undefined) throw new FuzzFailure('strict JSON accepted invalid UTF-8');
  };

  const patchFile = async (input, signedPrefix) => {
    const file = path.join(ctx.dir, `patch-${ctx.counter++}.rvp`);
    fs.writeFileSync(file, input);
    let patch = null;
    try {
      const opened = await expectCodesAsync(lib, ['E_FORMAT', 'E_UNSUPPORTED'], () => lib.patchFile.PatchFile.open(file), ctx.stats);
      patch = opened.value;
      if (!patch) return;
      let unverified = null;
      if (ctx.r.chance(0.3)) {
        unverified = expectCodes(lib, ['E_MANIFEST'], () => patch.parseUnverified(), ctx.stats).value;
      }
      const verified = expectCodes(lib, ['E_SIGNATURE', 'E_MANIFEST'], () => patch.verify(ctx.key.publicKey), ctx.stats);
      if (!verified.value) return;
      const signedLength = HEADER_SIZE + patch.header.manifestLength + 64;
      if (!signedPrefix || !input.subarray(0, signedLength).equals(signedPrefix.subarray(0, signedLength)) ||
          signedPrefix.length < signedLength) {
        throw new FuzzFailure('a patch file verified whose signed bytes are not the ones signed');
      }
      if (unverified && !deepEqual(unverified, verified.value)) {
        throw new FuzzFailure('parseUnverified and verify disagree');
      }
      const params = patch.applyParams(path.join(ctx.dir, 'layer'));
      if (params.payloadSize !== input.length - patch.payloadOffset || params.chunkDigests.length !== verified.value.payload.chunks.length) {
        throw new FuzzFailure('applyParams does not describe the payload');
      }
    } finally {
      if (patch) await patch.close();
      fs.rmSync(file, { force: true });
    }
  };

  const keyFile = async (input) => {
    const file = path.join(ctx.dir, `key-${ctx.counter++}.pub`);
    fs.writeFileSync(file, input);
    try {
      await expectCodesAsync(lib, ['E_KEY'], () => lib.keys.readPublicKey(file), ctx.stats);
    } finally {
      fs.rmSync(file, { force: true });
    }
  };

  return { header, manifest, json, jsonKnown, jsonBytes, patchFile, keyFile };
}

async function signedPatch(lib, ctx, manifestBytes, payloadLength) {
  const head = await lib.patchFile.encodeSignedHead(manifestBytes, payloadLength, ctx.key.secretKey);
  return Buffer.concat([head, Buffer.alloc(payloadLength, 0xa5)]);
}

/** A fixed test key, so a saved patch-file input replays. */
async function testKey(lib) {
  const seed = crypto.createHash('sha256').update('revpatch fuzz key').digest();
  const publicKey = await lib.signing.derivePublicKey(Buffer.concat([seed, Buffer.alloc(32)]));
  return { publicKey, secretKey: Buffer.concat([seed, Buffer.from(publicKey)]), keyId: lib.keys.keyIdOf(publicKey) };
}

/**
 * Fuzzes for `seconds` (or `iterations`), starting from `seed`. Returns
 * { iterations, byKind, codes, failures: [{ kind, input, message }] }.
 */
async function runFuzz(lib, options = {}) {
  const seconds = options.seconds ?? 60;
  const seed = options.seed ?? (Date.now() >>> 0);
  const maxFailures = options.maxFailures ?? 10;
  const r = makeRandom(seed);
  await lib.signing.ready();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'revpatch-fuzz-ts-'));
  const stats = { ok: 0, codes: {}, agreed: 0, bothRefused: 0, strictOnlyRefused: 0 };
  const ctx = { r, dir, stats, counter: 0, key: await testKey(lib) };
  const targets = makeTargets(lib, ctx);
  const byKind = {};
  const failures = [];

  const manifests = [];
  for (let i = 0; i < 8; i++) manifests.push(sampleManifest(r, ctx.key.keyId));
  const manifestTexts = manifests.map((m) => lib.manifest.encodeManifest(m));
  const headers = manifestTexts.map((m, i) => lib.patchFile.encodeHeader(m.length, [0, 100, 2 ** 40][i % 3]));
  const keyFiles = [Buffer.from(lib.keys.encodePublicKey(ctx.key))];
  const jsonSeeds = [...manifestTexts, Buffer.from('{"a":[1,2,{"b":null}],"c":"\\u00e9"}'), Buffer.from('[]')];
  const signed = [];
  for (const m of manifestTexts.slice(0, 4)) signed.push(await signedPatch(lib, ctx, m, JSON.parse(m).payload.size));

  const kinds = [
    ['header', 3], ['manifest', 4], ['manifestEdit', 4], ['json', 4], ['jsonRandom', 4], ['jsonBytes', 1],
    ['patchFile', 2], ['patchFileResigned', 2], ['keyFile', 1],
  ];
  const weighted = kinds.flatMap(([k, w]) => Array(w).fill(k));
  const deadline = Date.now() + seconds * 1000;
  let iterations = 0;
  try {
    while (Date.now() < deadline && (options.iterations === undefined || iterations < options.iterations)) {
      const kind = r.pick(weighted);
      let input;
      let run;
      switch (kind) {
        case 'header':
          input = havoc(r, r.pick(headers), headers, FRAMING_TOKENS);
          run = () => targets.header(input);
          break;
        case 'manifest':
          input = havoc(r, r.pick(manifestTexts), jsonSeeds, JSON_TOKENS);
          run = () => targets.manifest(input);
          break;
        case 'manifestEdit':
          input = Buffer.from(editManifest(r, r.pick(manifests)), 'utf8');
          run = () => targets.manifest(input);
          break;
        case 'json':
          input = havoc(r, r.pick(jsonSeeds), jsonSeeds, JSON_TOKENS);
          run = () => targets.json(input);
          break;
        case 'jsonRandom': {
          const facts = { duplicate: false };
          const text = Buffer.from(randomJson(r, 0, facts));
          if (r.chance(0.3)) {
            input = havoc(r, text, jsonSeeds, JSON_TOKENS);
            run = () => targets.json(input);
          } else {
            input = text;
            run = () => targets.jsonKnown(input, facts.duplicate);
          }
          break;
        }
        case 'jsonBytes':
          input = havoc(r, r.pick(jsonSeeds), jsonSeeds, JSON_TOKENS.concat(['\xc3', '\xed\xa0\x80']));
          input = r.chance(0.5) ? Buffer.concat([input, Buffer.from([r.pick(INTERESTING_BYTES)])]) : input;
          run = () => targets.jsonBytes(input);
          break;
        case 'patchFile': {
          const original = r.pick(signed);
          input = havoc(r, original, signed, FRAMING_TOKENS.concat(JSON_TOKENS.map((t) => Buffer.from(t))));
          run = () => targets.patchFile(input, original);
          break;
        }
        case 'patchFileResigned': {
          // The manifest changed and signed again: the checks after the signature run.
          const text = r.chance(0.5)
            ? Buffer.from(editManifest(r, r.pick(manifests)), 'utf8')
            : havoc(r, r.pick(manifestTexts), jsonSeeds, JSON_TOKENS);
          if (text.length === 0 || text.length > 4 * 1024 * 1024) continue;
          // The payload the manifest describes, up to 256 KiB (files stay cheap).
          let payloadLength = 100;
          try {
            payloadLength = Math.min(1 << 18, Math.max(0, Math.floor(Number(JSON.parse(text).payload.size)) || 0));
          } catch {
            // unparseable: any length
          }
          input = await signedPatch(lib, ctx, text, payloadLength);
          const original = input;
          run = () => targets.patchFile(input, original);
          break;
        }
        default:
          input = havoc(r, r.pick(keyFiles), jsonSeeds, JSON_TOKENS);
          run = () => targets.keyFile(input);
      }
      iterations++;
      byKind[kind] = (byKind[kind] ?? 0) + 1;
      try {
        await run();
      } catch (err) {
        const message = err instanceof FuzzFailure ? err.message : `harness error: ${err && err.stack ? err.stack : err}`;
        failures.push({ kind, input, message });
        if (failures.length >= maxFailures) break;
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return { seed, iterations, byKind, stats, failures };
}

/** Re-runs one saved input of `kind` (as written by main()). */
async function replay(lib, kind, file) {
  await lib.signing.ready();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'revpatch-fuzz-ts-'));
  const stats = { ok: 0, codes: {}, agreed: 0, bothRefused: 0, strictOnlyRefused: 0 };
  const ctx = { r: makeRandom(1), dir, stats, counter: 0, key: await testKey(lib) };
  const targets = makeTargets(lib, ctx);
  const input = fs.readFileSync(file);
  try {
    const target = {
      header: targets.header, manifest: targets.manifest, manifestEdit: targets.manifest, json: targets.json,
      jsonRandom: targets.json, jsonBytes: targets.jsonBytes, keyFile: targets.keyFile,
      // The signed original is not saved: the signed-bytes check is skipped.
      patchFile: (i) => targets.patchFile(i, i), patchFileResigned: (i) => targets.patchFile(i, i),
    }[kind];
    if (!target) throw new Error(`unknown kind ${kind}`);
    await target(input);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function loadDist() {
  const dist = path.join(__dirname, '..', 'dist');
  if (!fs.existsSync(path.join(dist, 'patch', 'patch_file.js'))) {
    throw new Error('dist/ is not built: run `npm run build:ts` first');
  }
  const load = (name) => require(path.join(dist, name));
  return {
    errors: load('engine/errors.js'), strictJson: load('patch/strict_json.js'), manifest: load('patch/manifest.js'),
    patchFile: load('patch/patch_file.js'), signing: load('patch/signing.js'), keys: load('patch/keys.js'),
  };
}

async function main(argv) {
  const lib = loadDist();
  if (argv[0] === '--replay') {
    await replay(lib, argv[1], argv[2]);
    console.log('replayed without a failure');
    return 0;
  }
  let seconds = 60;
  let seed;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--seed') seed = Number(argv[++i]);
    else if (/^\d+$/.test(argv[i])) seconds = Number(argv[i]);
    else throw new Error(`usage: fuzz-ts.js [SECONDS] [--seed N] | --replay KIND FILE`);
  }
  const result = await runFuzz(lib, { seconds, seed });
  console.log(`fuzz-ts: seed ${result.seed}, ${result.iterations} inputs in ${seconds} s`);
  console.log(`  by kind: ${JSON.stringify(result.byKind)}`);
  console.log(`  accepted: ${result.stats.ok}; refused by code: ${JSON.stringify(result.stats.codes)}`);
  console.log(`  strict JSON vs JSON.parse: ${result.stats.agreed} agreed, ${result.stats.bothRefused} refused by both, ` +
    `${result.stats.strictOnlyRefused} refused by strict only (duplicates, depth, unsafe numbers, surrogates)`);
  if (result.failures.length === 0) return 0;
  const crashes = path.join(__dirname, '..', 'native', 'fuzz', 'crashes');
  fs.mkdirSync(crashes, { recursive: true });
  for (const f of result.failures) {
    const name = `ts-${f.kind}-${crypto.createHash('sha1').update(f.input).digest('hex').slice(0, 16)}.bin`;
    fs.writeFileSync(path.join(crashes, name), f.input);
    console.error(`FAILED ${f.kind}: ${f.message}\n  input native/fuzz/crashes/${name}; ` +
      `replay: node scripts/fuzz-ts.js --replay ${f.kind} native/fuzz/crashes/${name}`);
  }
  return 1;
}

module.exports = { runFuzz, replay };

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err) => {
      console.error(err && err.stack ? err.stack : String(err));
      process.exitCode = 2;
    },
  );
}
