import * as crypto from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t, { type Test as Tap } from 'tap';
import { copyFileAtomic, writeAtomic, writeFileAtomic } from '../lib/engine/atomic';
import { RevpatchError } from '../lib/engine/errors';
import {
  encodePublicKey,
  encodeSecretKey,
  generateKeyPair,
  keyIdOf,
  PUBLIC_KEY_FILE,
  readPublicKey,
  readSecretKey,
  SECRET_KEY_FILE,
  writeKeyPair,
} from '../lib/patch/keys';
import { sign, verify } from '../lib/patch/signing';

async function tempDir(t: Tap): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'revpatch-keys-'));
  t.teardown(() => fs.rm(dir, { recursive: true, force: true }));
  return dir;
}

async function rejectsWith(t: Tap, promise: Promise<unknown>, code: string, name?: string): Promise<void> {
  let caught: unknown;
  try {
    await promise;
  } catch (err) {
    caught = err;
  }
  const got = caught instanceof RevpatchError ? caught.code : caught === undefined ? 'no error' : String(caught);
  t.equal(got, code, name ?? `rejects with ${code}`);
}

t.test('keygen writes a 0600 secret key and a public key that read back and sign', async (t) => {
  const dir = path.join(await tempDir(t), 'nested', 'keys');
  const paths = await writeKeyPair(dir);
  t.equal(paths.secretKeyPath, path.join(dir, SECRET_KEY_FILE));
  t.equal(paths.publicKeyPath, path.join(dir, PUBLIC_KEY_FILE));
  if (process.platform !== 'win32') {
    t.equal((await fs.stat(paths.secretKeyPath)).mode & 0o777, 0o600, 'secret key is owner-only');
  }
  const secret = await readSecretKey(paths.secretKeyPath);
  const pub = await readPublicKey(paths.publicKeyPath);
  t.equal(secret.keyId, paths.keyId);
  t.equal(pub.keyId, paths.keyId);
  t.same(Buffer.from(secret.publicKey), Buffer.from(pub.publicKey));
  t.equal(pub.keyId, crypto.createHash('sha256').update(pub.publicKey).digest('hex').slice(0, 16));
  const message = Buffer.from('header||manifest');
  const signature = await sign(message, secret.secretKey);
  t.ok(await verify(message, signature, pub.publicKey), 'signature verifies');
  t.notOk(await verify(Buffer.from('header||manifesT'), signature, pub.publicKey), 'other message does not');
  const json = JSON.parse(await fs.readFile(paths.publicKeyPath, 'utf8'));
  t.same(Object.keys(json), ['type', 'keyId', 'publicKey']);
  t.equal(json.type, 'revpatch-ed25519-public');
  const leftovers = (await fs.readdir(dir)).filter((f) => f.startsWith('.'));
  t.same(leftovers, [], 'no temporary files are left behind');
});

t.test('keygen refuses to replace an existing key and leaves it untouched', async (t) => {
  const dir = await tempDir(t);
  const first = await writeKeyPair(dir);
  const before = await fs.readFile(first.secretKeyPath);
  await rejectsWith(t, writeKeyPair(dir), 'E_EXISTS');
  t.same(await fs.readFile(first.secretKeyPath), before);

  const onlyPub = await tempDir(t);
  await fs.writeFile(path.join(onlyPub, PUBLIC_KEY_FILE), 'keep me');
  await rejectsWith(t, writeKeyPair(onlyPub), 'E_EXISTS', 'an existing public key alone is enough to refuse');
  t.same(await fs.readdir(onlyPub), [PUBLIC_KEY_FILE], 'no secret key was written');
});

t.test('every malformed or missing key file is E_KEY', async (t) => {
  const dir = await tempDir(t);
  const pair = await generateKeyPair();
  const other = await generateKeyPair();
  const secretJson = JSON.parse(encodeSecretKey(pair));
  const publicJson = JSON.parse(encodePublicKey(pair));
  const write = async (name: string, content: string | Buffer): Promise<string> => {
    const file = path.join(dir, name);
    await fs.writeFile(file, content);
    return file;
  };
  const tamperedSecret = Buffer.from(pair.secretKey);
  tamperedSecret[40] ^= 1;
  const cases: Array<[string, 'secret' | 'public', string | Buffer | null]> = [
    ['missing file', 'secret', null],
    ['empty file', 'secret', ''],
    ['not JSON', 'public', 'not json'],
    ['JSON array', 'public', '[]'],
    ['trailing garbage', 'public', encodePublicKey(pair) + 'x'],
    ['duplicate field', 'public', encodePublicKey(pair).replace('"keyId"', `"keyId":"${pair.keyId}","keyId"`)],
    ['public key where a secret key is needed', 'secret', encodePublicKey(pair)],
    ['secret key where a public key is needed', 'public', encodeSecretKey(pair)],
    ['unknown type', 'public', JSON.stringify({ ...publicJson, type: 'ssh-ed25519' })],
    ['unknown field', 'public', JSON.stringify({ ...publicJson, comment: 'x' })],
    ['missing keyId', 'public', JSON.stringify({ type: publicJson.type, publicKey: publicJson.publicKey })],
    ['keyId of another key', 'public', JSON.stringify({ ...publicJson, keyId: other.keyId })],
    ['keyId in uppercase', 'public', JSON.stringify({ ...publicJson, keyId: pair.keyId.toUpperCase() })],
    ['public key of 31 bytes', 'public', JSON.stringify({ ...publicJson, publicKey: Buffer.alloc(31).toString('base64') })],
    ['public key not base64', 'public', JSON.stringify({ ...publicJson, publicKey: '!'.repeat(44) })],
    ['public key in non-canonical base64', 'public', JSON.stringify({ ...publicJson, publicKey: ` ${publicJson.publicKey}` })],
    ['public key as a number', 'public', JSON.stringify({ ...publicJson, publicKey: 5 })],
    ['secret key of 32 bytes', 'secret', JSON.stringify({ ...secretJson, secretKey: Buffer.from(pair.secretKey.subarray(0, 32)).toString('base64') })],
    ['secret key whose public half was altered', 'secret', JSON.stringify({ ...secretJson, secretKey: tamperedSecret.toString('base64') })],
    ['huge file', 'public', Buffer.alloc(64 * 1024, 0x20)],
  ];
  let n = 0;
  for (const [name, kind, content] of cases) {
    const file = content === null ? path.join(dir, 'absent.key') : await write(`case-${n++}`, content);
    const read = kind === 'secret' ? readSecretKey(file) : readPublicKey(file);
    await rejectsWith(t, read, 'E_KEY', name);
  }
  await rejectsWith(t, readPublicKey(dir), 'E_KEY', 'a directory');
  await t.rejects(readSecretKey(path.join(dir, 'absent.key')), { message: /does not exist/ });
});

t.test('keyIdOf is the first 16 hex digits of SHA-256 of the public key', async (t) => {
  const pk = new Uint8Array(32).fill(7);
  t.equal(keyIdOf(pk), crypto.createHash('sha256').update(pk).digest('hex').slice(0, 16));
  t.throws(() => keyIdOf(new Uint8Array(31)), { code: 'E_INVALID_ARGUMENT' });
});

t.test('writeFileAtomic replaces a file whole and leaves no temporary file', async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, 'state.json');
  await writeFileAtomic(file, 'old');
  await writeFileAtomic(file, Buffer.from('new contents'), { mode: 0o640 });
  t.equal(await fs.readFile(file, 'utf8'), 'new contents');
  if (process.platform !== 'win32') t.equal((await fs.stat(file)).mode & 0o777, 0o640);
  t.same(await fs.readdir(dir), ['state.json']);
  await rejectsWith(t, writeFileAtomic(file, 'x', { overwrite: false }), 'E_EXISTS', 'overwrite: false refuses');
  t.equal(await fs.readFile(file, 'utf8'), 'new contents');
  t.same(await fs.readdir(dir), ['state.json'], 'the refused temporary file is removed');
});

t.test('a failed atomic write removes its temporary file and keeps the old bytes', async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, 'image');
  await writeFileAtomic(file, 'original');
  const failure = new RevpatchError('E_NO_SPACE', 'disk full (simulated)');
  await rejectsWith(
    t,
    writeAtomic(file, async (handle) => {
      await handle.write(Buffer.from('partial'), 0, 7, 0);
      throw failure;
    }),
    'E_NO_SPACE',
  );
  t.equal(await fs.readFile(file, 'utf8'), 'original');
  t.same(await fs.readdir(dir), ['image']);
  await rejectsWith(t, writeFileAtomic(path.join(dir, 'missing-dir', 'f'), 'x'), 'E_NOT_FOUND');
});

t.test('copyFileAtomic copies large files exactly', async (t) => {
  const dir = await tempDir(t);
  const from = path.join(dir, 'from');
  const data = crypto.randomBytes(3 * 1024 * 1024 + 123);
  await fs.writeFile(from, data);
  await copyFileAtomic(from, path.join(dir, 'to'));
  t.same(await fs.readFile(path.join(dir, 'to')), data);
  await rejectsWith(t, copyFileAtomic(path.join(dir, 'nope'), path.join(dir, 'to2')), 'E_NOT_FOUND');
  t.same((await fs.readdir(dir)).sort(), ['from', 'to']);
});
