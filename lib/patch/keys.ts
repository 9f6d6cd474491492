/**
 * Publisher key files. A key pair is two small JSON files:
 *
 *   revpatch.key (mode 0600)
 *     {"type":"revpatch-ed25519-secret","keyId":"<16 hex>","secretKey":"<base64, 64 bytes>"}
 *   revpatch.pub
 *     {"type":"revpatch-ed25519-public","keyId":"<16 hex>","publicKey":"<base64, 32 bytes>"}
 *
 * The secret key is libsodium's 64-byte form (seed || public key). The key
 * id is the first 16 hex digits of SHA-256 of the 32-byte public key; a
 * manifest names the key that signed it by this id.
 *
 * Reading is strict: every problem with a key file, including a missing or
 * unreadable file, is E_KEY with a message that names the file and what is
 * wrong. A secret key must reproduce its own public key from its seed, and
 * the key id must match the key.
 */
import * as crypto from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { writeFileAtomic } from '../engine/atomic';
import { RevpatchError, toRevpatchError } from '../engine/errors';
import { KEY_ID_PATTERN } from './manifest';
import { derivePublicKey, generateSigningKeyPair, PUBLIC_KEY_BYTES, SECRET_KEY_BYTES } from './signing';
import { parseStrictJson } from './strict_json';

export const SECRET_KEY_TYPE = 'revpatch-ed25519-secret';
export const PUBLIC_KEY_TYPE = 'revpatch-ed25519-public';
export const SECRET_KEY_FILE = 'revpatch.key';
export const PUBLIC_KEY_FILE = 'revpatch.pub';
/** Key files are a few hundred bytes; anything far larger is not one. */
const MAX_KEY_FILE_BYTES = 16 * 1024;

export interface PublicKey {
  keyId: string;
  publicKey: Uint8Array;
}

export interface SecretKey extends PublicKey {
  /** seed || public key. */
  secretKey: Uint8Array;
}

export interface KeyPairPaths {
  keyId: string;
  secretKeyPath: string;
  publicKeyPath: string;
}

/** First 16 hex digits of SHA-256 of the public key. */
export function keyIdOf(publicKey: Uint8Array): string {
  if (publicKey.byteLength !== PUBLIC_KEY_BYTES) {
    throw new RevpatchError('E_INVALID_ARGUMENT', `an Ed25519 public key must be ${PUBLIC_KEY_BYTES} bytes`);
  }
  return crypto.createHash('sha256').update(publicKey).digest('hex').slice(0, 16);
}

export async function generateKeyPair(): Promise<SecretKey> {
  const { publicKey, secretKey } = await generateSigningKeyPair();
  return { keyId: keyIdOf(publicKey), publicKey, secretKey };
}

export function encodeSecretKey(key: SecretKey): string {
  return `${JSON.stringify({
    type: SECRET_KEY_TYPE,
    keyId: key.keyId,
    secretKey: Buffer.from(key.secretKey).toString('base64'),
  })}\n`;
}

export function encodePublicKey(key: PublicKey): string {
  return `${JSON.stringify({
    type: PUBLIC_KEY_TYPE,
    keyId: key.keyId,
    publicKey: Buffer.from(key.publicKey).toString('base64'),
  })}\n`;
}

/**
 * Writes `dir/revpatch.key` (0600) and `dir/revpatch.pub`, creating `dir`
 * if needed. Refuses with E_EXISTS if either file is already there, so a
 * key is never replaced by accident; a new pair is generated unless given.
 */
export async function writeKeyPair(dir: string, key?: SecretKey): Promise<KeyPairPaths> {
  const pair = key ?? (await generateKeyPair());
  const secretKeyPath = path.resolve(dir, SECRET_KEY_FILE);
  const publicKeyPath = path.resolve(dir, PUBLIC_KEY_FILE);
  try {
    await fs.mkdir(path.resolve(dir), { recursive: true });
  } catch (err) {
    throw toRevpatchError(err);
  }
  for (const file of [secretKeyPath, publicKeyPath]) {
    if (await exists(file)) throw new RevpatchError('E_EXISTS', `${file} already exists; not replacing a key`);
  }
  await writeFileAtomic(secretKeyPath, encodeSecretKey(pair), { mode: 0o600, overwrite: false });
  try {
    await writeFileAtomic(publicKeyPath, encodePublicKey(pair), { mode: 0o644, overwrite: false });
  } catch (err) {
    await fs.rm(secretKeyPath, { force: true }).catch(() => undefined);
    throw err;
  }
  return { keyId: pair.keyId, secretKeyPath, publicKeyPath };
}

async function exists(file: string): Promise<boolean> {
  try {
    await fs.lstat(file);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw toRevpatchError(err);
  }
}

export async function readSecretKey(file: string): Promise<SecretKey> {
  const fields = await readKeyFile(file, SECRET_KEY_TYPE, 'secretKey');
  const secretKey = decodeKeyBytes(file, 'secretKey', fields.secretKey, SECRET_KEY_BYTES);
  const publicKey = await derivePublicKey(secretKey);
  if (!Buffer.from(publicKey).equals(Buffer.from(secretKey.subarray(32)))) {
    throw keyError(file, 'the secret key is damaged: its seed does not give its public key');
  }
  checkKeyId(file, fields.keyId, publicKey);
  return { keyId: fields.keyId, publicKey, secretKey };
}

export async function readPublicKey(file: string): Promise<PublicKey> {
  const fields = await readKeyFile(file, PUBLIC_KEY_TYPE, 'publicKey');
  const publicKey = decodeKeyBytes(file, 'publicKey', fields.publicKey, PUBLIC_KEY_BYTES);
  checkKeyId(file, fields.keyId, publicKey);
  return { keyId: fields.keyId, publicKey };
}

function keyError(file: string, message: string, cause?: unknown): RevpatchError {
  return new RevpatchError('E_KEY', `key file ${file}: ${message}`, cause === undefined ? undefined : { cause });
}

async function readKeyFile(
  file: string,
  type: string,
  keyField: 'secretKey' | 'publicKey',
): Promise<{ keyId: string } & Record<string, string>> {
  let bytes: Buffer;
  try {
    const handle = await fs.open(file, 'r');
    try {
      const stat = await handle.stat();
      if (!stat.isFile()) throw keyError(file, 'is not a regular file');
      if (stat.size > MAX_KEY_FILE_BYTES) throw keyError(file, `is ${stat.size} bytes, too large for a key file`);
      bytes = await handle.readFile();
    } finally {
      await handle.close();
    }
  } catch (err) {
    if (err instanceof RevpatchError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw keyError(file, 'does not exist', err);
    throw keyError(file, `cannot be read (${code ?? (err as Error).message})`, err);
  }
  let value: unknown;
  try {
    value = parseStrictJson(bytes, { maxBytes: MAX_KEY_FILE_BYTES, maxDepth: 2 });
  } catch (err) {
    throw keyError(file, `is not a key file: ${(err as Error).message}`, err);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw keyError(file, 'is not a key file: expected a JSON object');
  }
  const record = value as Record<string, unknown>;
  if (record.type !== type) {
    const other = type === SECRET_KEY_TYPE ? PUBLIC_KEY_TYPE : SECRET_KEY_TYPE;
    throw keyError(
      file,
      record.type === other
        ? `is a ${other} key file where a ${type} key file is needed`
        : `has type ${JSON.stringify(record.type)}, expected ${JSON.stringify(type)}`,
    );
  }
  const allowed = new Set(['type', 'keyId', keyField]);
  for (const name of Object.keys(record)) {
    if (!allowed.has(name)) throw keyError(file, `has the unknown field ${JSON.stringify(name)}`);
  }
  for (const name of allowed) {
    if (typeof record[name] !== 'string') throw keyError(file, `field ${name} is missing or not a string`);
  }
  if (!KEY_ID_PATTERN.test(record.keyId as string)) throw keyError(file, 'keyId must be 16 lowercase hex digits');
  return record as { keyId: string } & Record<string, string>;
}

function decodeKeyBytes(file: string, field: string, text: string, length: number): Uint8Array {
  const bytes = Buffer.from(text, 'base64');
  // Buffer.from ignores stray characters; a round trip accepts only canonical base64.
  if (bytes.toString('base64') !== text || bytes.byteLength !== length) {
    throw keyError(file, `${field} must be ${length} bytes in base64`);
  }
  return new Uint8Array(bytes);
}

function checkKeyId(file: string, keyId: string, publicKey: Uint8Array): void {
  const actual = keyIdOf(publicKey);
  if (keyId !== actual) throw keyError(file, `keyId ${keyId} does not match the key (its id is ${actual})`);
}
