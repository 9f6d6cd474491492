import * as crypto from 'node:crypto';
import { promises as fs } from 'node:fs';
import t, { type Test as Tap } from 'tap';
import { RevpatchError } from '../lib/engine/errors';
import {
  manifestSchema,
  encodeManifest,
  MAX_IMAGE_SIZE,
  MAX_MANIFEST_BYTES,
  parseManifest,
  validateManifest,
  type Manifest,
} from '../lib/patch/manifest';
import { parseStrictJson } from '../lib/patch/strict_json';

const hex = (seed: string): string => crypto.createHash('sha256').update(seed).digest('hex');

function sampleManifest(): Manifest {
  const zero = { count: 0, targetBlocks: 0, dataBytes: 0 };
  return {
    format: 1,
    id: 'fix-2024.01_a',
    version: 3,
    title: 'Sample fix',
    severity: 'high',
    parent: null,
    blockSize: 4096,
    source: { size: 1 << 20, digest: hex('source') },
    target: { size: 1 << 20, digest: hex('target') },
    operationCount: 3,
    changedBlocks: 5,
    operations: {
      REPLACE: { count: 1, targetBlocks: 2, dataBytes: 8192 },
      REPLACE_BROTLI: { ...zero },
      ZERO: { count: 1, targetBlocks: 2, dataBytes: 0 },
      COPY: { count: 1, targetBlocks: 1, dataBytes: 0 },
      DIFF: { ...zero },
    },
    payload: { size: 3 * 65536 + 5, digest: hex('payload'), chunkSize: 65536, chunks: [hex('0'), hex('1'), hex('2'), hex('3')] },
    removable: true,
    created: '2024-05-01T12:00:00.000Z',
    expires: null,
    keyId: '0123456789abcdef',
  };
}

function clone(m: Manifest): Manifest {
  return JSON.parse(JSON.stringify(m)) as Manifest;
}

function rejectsWith(t: Tap, fn: () => unknown, code: string, name?: string): void {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  const got = caught instanceof RevpatchError ? caught.code : caught === undefined ? 'no error' : String(caught);
  t.equal(got, code, name ?? `throws ${code}`);
}

t.test('strict JSON parses what JSON.parse parses, the same way', async (t) => {
  const docs = [
    '{}',
    '[]',
    ' {"a":1,"b":[true,false,null],"c":{"d":"e"}} ',
    '"\\u00e9\\ud83d\\ude00 \\n\\t\\"\\\\\\/"',
    '-0.5e+3',
    '0',
    '[1.25,-3,4E2,1e-7]',
    '{"ü":"ünïcödé 😀"}',
    '123456789012345',
  ];
  for (const doc of docs) t.same(parseStrictJson(doc), JSON.parse(doc), doc);
  t.same(parseStrictJson(Buffer.from(docs[7]!, 'utf8')), JSON.parse(docs[7]!));
});

t.test('strict JSON refuses a duplicate key at any depth and names it', async (t) => {
  const cases: Array<[string, string]> = [
    ['{"a":1,"a":2}', '"a"'],
    ['{"x":{"inner":1,"inner":1}}', '"inner"'],
    ['[{"k":1},{"k":1,"k":2}]', '"k"'],
    ['{"a":{"b":{"c":{"id":"x","id":"y"}}}}', '"id"'],
    ['{"\\u0061":1,"a":2}', '"a"'],
  ];
  for (const [doc, name] of cases) {
    rejectsWith(t, () => parseStrictJson(doc), 'E_MANIFEST', doc);
    t.throws(() => parseStrictJson(doc), { message: new RegExp(`duplicate key ${name}`) });
  }
});

t.test('strict JSON refuses everything that is not JSON', async (t) => {
  const bad = [
    '',
    '   ',
    '{"a":1} x',
    '{"a":1}{}',
    '{"a":1} // comment',
    '/* c */ {}',
    '{"a":NaN}',
    '{"a":Infinity}',
    '{"a":-Infinity}',
    "{'a':1}",
    '{"a":1,}',
    '[1,2,]',
    '{a:1}',
    '01',
    '-',
    '1.',
    '.5',
    '+1',
    '0x10',
    '"tab\there"',
    '"unterminated',
    '"\\x41"',
    '"\\u12"',
    '"\\ud800"',
    '"\\udc00x"',
    '"\\ud800\\u0041"',
    '1e400',
    '9007199254740993',
    '-9007199254740993',
    'tru',
    'nul',
    '\ufeff{}',
    '{"a" 1}',
    '[1 2]',
  ];
  for (const doc of bad) rejectsWith(t, () => parseStrictJson(doc), 'E_MANIFEST', JSON.stringify(doc));
  rejectsWith(t, () => parseStrictJson(Buffer.from([0x22, 0xff, 0x22])), 'E_MANIFEST');
  rejectsWith(t, () => parseStrictJson(Buffer.from([0x22, 0xed, 0xa0, 0x80, 0x22])), 'E_MANIFEST');
  rejectsWith(t, () => parseStrictJson('"a\ud800b"'), 'E_MANIFEST');
});

t.test('strict JSON accepts nesting of 32 and refuses 33', async (t) => {
  const nest = (n: number): string => '['.repeat(n) + ']'.repeat(n);
  t.doesNotThrow(() => parseStrictJson(nest(32)));
  rejectsWith(t, () => parseStrictJson(nest(33)), 'E_MANIFEST');
  const objects = (n: number): string => '{"a":'.repeat(n - 1) + '{}' + '}'.repeat(n - 1);
  t.doesNotThrow(() => parseStrictJson(objects(32)));
  rejectsWith(t, () => parseStrictJson(objects(33)), 'E_MANIFEST');
  rejectsWith(t, () => parseStrictJson(nest(100000)), 'E_MANIFEST');
});

t.test('strict JSON refuses input beyond its byte bound', async (t) => {
  const doc = JSON.stringify({ s: 'x'.repeat(100) });
  t.doesNotThrow(() => parseStrictJson(doc, { maxBytes: doc.length }));
  rejectsWith(t, () => parseStrictJson(doc, { maxBytes: doc.length - 1 }), 'E_MANIFEST');
  rejectsWith(t, () => parseStrictJson(Buffer.alloc(MAX_MANIFEST_BYTES + 1, 0x20)), 'E_MANIFEST');
});

t.test('a "__proto__" key is plain data and changes no prototype', async (t) => {
  const value = parseStrictJson('{"__proto__":{"polluted":true},"a":1}') as Record<string, unknown>;
  t.equal(Object.getPrototypeOf(value), Object.prototype);
  t.ok(Object.prototype.hasOwnProperty.call(value, '__proto__'));
  t.equal((value as { polluted?: unknown }).polluted, undefined);
  t.equal(({} as { polluted?: unknown }).polluted, undefined);
  rejectsWith(t, () => parseStrictJson('{"__proto__":1,"__proto__":2}'), 'E_MANIFEST');
});

t.test('a valid manifest validates, encodes deterministically and parses back', async (t) => {
  const m = sampleManifest();
  t.same(validateManifest(clone(m)), m);
  const bytes = encodeManifest(m);
  t.same(parseManifest(bytes), m);
  const shuffled = Object.fromEntries(Object.entries(clone(m)).reverse()) as unknown as Manifest;
  t.same(encodeManifest(shuffled), bytes, 'key order does not depend on the input object');
  const withParent = { ...clone(m), parent: 'base-build.1', expires: '2030-01-01T00:00:00+02:00' };
  t.same(validateManifest(withParent), withParent);
  const empty = clone(m);
  empty.payload = { size: 0, digest: hex(''), chunkSize: 65536, chunks: [] };
  empty.operationCount = 0;
  empty.changedBlocks = 0;
  for (const s of Object.values(empty.operations)) Object.assign(s, { count: 0, targetBlocks: 0, dataBytes: 0 });
  t.doesNotThrow(() => validateManifest(empty), 'an empty payload with no operations is valid');
});

t.test('each schema violation is E_MANIFEST', async (t) => {
  type Mutation = [string, (m: Record<string, any>) => void];
  const mutations: Mutation[] = [
    ['unknown top-level property', (m) => (m.extra = 1)],
    ['unknown nested property', (m) => (m.source.extra = 1)],
    ['unknown operation type', (m) => (m.operations.MOVE = { count: 0, targetBlocks: 0, dataBytes: 0 })],
    ['unknown payload property', (m) => (m.payload.compression = 'none')],
    ['missing id', (m) => delete m.id],
    ['missing keyId', (m) => delete m.keyId],
    ['missing operation type', (m) => delete m.operations.DIFF],
    ['missing expires', (m) => delete m.expires],
    ['format 2', (m) => (m.format = 2)],
    ['format as a string', (m) => (m.format = '1')],
    ['id with a slash', (m) => (m.id = 'a/b')],
    ['id starting with a dot', (m) => (m.id = '.hidden')],
    ['empty id', (m) => (m.id = '')],
    ['id of 129 characters', (m) => (m.id = 'a'.repeat(129))],
    ['id with a newline', (m) => (m.id = 'abc\n')],
    ['version 0', (m) => (m.version = 0)],
    ['version 2^31', (m) => (m.version = 2 ** 31)],
    ['fractional version', (m) => (m.version = 1.5)],
    ['title of 201 characters', (m) => (m.title = 't'.repeat(201))],
    ['title not a string', (m) => (m.title = 5)],
    ['unknown severity', (m) => (m.severity = 'urgent')],
    ['parent not an id', (m) => (m.parent = '../x')],
    ['parent empty', (m) => (m.parent = '')],
    ['blockSize not a power of two', (m) => (m.blockSize = 3000)],
    ['blockSize 256', (m) => (m.blockSize = 256)],
    ['blockSize 2 MiB', (m) => (m.blockSize = 2 * 1024 * 1024)],
    ['negative source size', (m) => (m.source.size = -1)],
    ['target size beyond 64 TiB', (m) => (m.target.size = MAX_IMAGE_SIZE + 1)],
    ['target size 2^53', (m) => (m.target.size = 2 ** 53)],
    ['fractional size', (m) => (m.source.size = 1.5)],
    ['uppercase digest', (m) => (m.source.digest = m.source.digest.toUpperCase())],
    ['short digest', (m) => (m.target.digest = 'abcd')],
    ['negative operationCount', (m) => (m.operationCount = -1)],
    ['negative changedBlocks', (m) => (m.changedBlocks = -1)],
    ['operation count not an integer', (m) => (m.operations.REPLACE.count = 0.5)],
    ['chunkSize below 64 KiB', (m) => (m.payload.chunkSize = 65535)],
    ['chunkSize above 16 MiB', (m) => (m.payload.chunkSize = 16 * 1024 * 1024 + 1)],
    ['chunk digest not hex', (m) => (m.payload.chunks[0] = 'z'.repeat(64))],
    ['payload digest missing', (m) => delete m.payload.digest],
    ['removable as a string', (m) => (m.removable = 'yes')],
    ['created not a date-time', (m) => (m.created = 'yesterday')],
    ['created without a zone', (m) => (m.created = '2024-05-01T12:00:00')],
    ['created on February 30', (m) => (m.created = '2024-02-30T12:00:00Z')],
    ['expires at hour 24', (m) => (m.expires = '2030-01-01T24:00:00Z')],
    ['expires on day 0', (m) => (m.expires = '2030-01-00T12:00:00Z')],
    ['expires a number', (m) => (m.expires = 0)],
    ['keyId uppercase', (m) => (m.keyId = '0123456789ABCDEF')],
    ['keyId too short', (m) => (m.keyId = '0123')],
  ];
  for (const [name, mutate] of mutations) {
    const m = clone(sampleManifest()) as Record<string, any>;
    mutate(m);
    rejectsWith(t, () => validateManifest(m), 'E_MANIFEST', name);
  }
  rejectsWith(t, () => validateManifest(null), 'E_MANIFEST');
  rejectsWith(t, () => validateManifest([sampleManifest()]), 'E_MANIFEST');
});

t.test('cross-field rules are E_MANIFEST', async (t) => {
  type Mutation = [string, (m: Manifest) => void];
  const mutations: Mutation[] = [
    ['one chunk digest too few', (m) => m.payload.chunks.pop()],
    ['one chunk digest too many', (m) => m.payload.chunks.push(hex('extra'))],
    ['payload size needing one more chunk', (m) => (m.payload.size = 4 * 65536 + 1)],
    ['parent is the patch itself', (m) => (m.parent = m.id)],
    ['operations in an empty payload', (m) => Object.assign(m.payload, { size: 0, chunks: [] })],
    ['more changed blocks than the target has', (m) => (m.changedBlocks = (1 << 20) / 4096 + 1)],
    ['an operation targets more blocks than the target has', (m) => (m.operations.ZERO.targetBlocks = 1000)],
    ['expires before created', (m) => (m.expires = '2024-04-01T00:00:00Z')],
    ['expires equal to created', (m) => (m.expires = m.created)],
  ];
  for (const [name, mutate] of mutations) {
    const m = clone(sampleManifest());
    mutate(m);
    rejectsWith(t, () => validateManifest(m), 'E_MANIFEST', name);
  }
  t.throws(
    () => {
      const m = clone(sampleManifest());
      m.payload.chunks.pop();
      validateManifest(m);
    },
    /needs 4 chunk digests, the manifest lists 3/,
  );
});

t.test('parseManifest refuses empty bytes, duplicate keys and non-JSON', async (t) => {
  rejectsWith(t, () => parseManifest(new Uint8Array(0)), 'E_MANIFEST');
  const text = JSON.stringify(sampleManifest());
  rejectsWith(t, () => parseManifest(Buffer.from(text.replace('"title":', '"title":"x","title":'))), 'E_MANIFEST');
  rejectsWith(t, () => parseManifest(Buffer.from(text + ' null')), 'E_MANIFEST');
  t.same(parseManifest(Buffer.from(`\n ${text} \n`)), sampleManifest(), 'surrounding whitespace is fine');
});

t.test('the checked-in schema validator is the one the schema compiles to', async (t) => {
  // scripts/manifest-validator.js regenerates it; run it after changing the schema.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const generator = require('../scripts/manifest-validator.js') as { generate(schema: unknown): string; TARGET: string };
  const current = await fs.readFile(generator.TARGET, 'utf8');
  t.equal(current, generator.generate(manifestSchema), 'lib/patch/manifest_validator.ts is current');
});
