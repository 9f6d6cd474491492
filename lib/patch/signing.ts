/**
 * Ed25519 detached signatures over libsodium-wrappers; the only module that
 * touches libsodium. libsodium's wasm must be initialised once (`ready()`)
 * before the synchronous functions can run; the async ones do it themselves.
 * Verification is synchronous so a caller holding an opened patch file can
 * verify without yielding (PatchFile.open awaits `ready()`).
 */
import type Sodium = require('libsodium-wrappers');
import { RevpatchError } from '../engine/errors';

// A plain require, made by ready(): libsodium-wrappers fills its exports
// object only once `ready` resolves (so an interop copy of it would stay
// empty), and loading it and its wasm costs about 25 ms that the commands
// which never sign or verify (boot, confirm, list, ...) need not pay.
let sodium: typeof Sodium | undefined;

export const PUBLIC_KEY_BYTES = 32;
export const SECRET_KEY_BYTES = 64;
export const SEED_BYTES = 32;
export const SIGNATURE_BYTES = 64;

export interface Ed25519KeyPair {
  publicKey: Uint8Array;
  /** libsodium's 64-byte form: seed || public key. */
  secretKey: Uint8Array;
}

let initialised = false;

/** Initialises libsodium; cheap after the first call. */
export async function ready(): Promise<void> {
  if (initialised) return;
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const loaded = require('libsodium-wrappers') as typeof Sodium;
  await loaded.ready;
  sodium = loaded;
  initialised = true;
}

function lib(): typeof Sodium {
  if (!initialised || !sodium) {
    throw new RevpatchError('E_STATE', 'libsodium is not initialised: await signing.ready() first');
  }
  return sodium;
}

function checkLength(what: string, bytes: Uint8Array, expected: number): void {
  if (!(bytes instanceof Uint8Array) || bytes.byteLength !== expected) {
    throw new RevpatchError('E_INVALID_ARGUMENT', `${what} must be ${expected} bytes`);
  }
}

export async function generateSigningKeyPair(): Promise<Ed25519KeyPair> {
  await ready();
  const { publicKey, privateKey } = lib().crypto_sign_keypair();
  return { publicKey, secretKey: privateKey };
}

/**
 * The public key a secret key derives from its seed. Differs from the secret
 * key's last 32 bytes only if the secret key was damaged or tampered with.
 */
export async function derivePublicKey(secretKey: Uint8Array): Promise<Uint8Array> {
  checkLength('an Ed25519 secret key', secretKey, SECRET_KEY_BYTES);
  await ready();
  return lib().crypto_sign_seed_keypair(secretKey.subarray(0, SEED_BYTES)).publicKey;
}

export async function sign(message: Uint8Array, secretKey: Uint8Array): Promise<Uint8Array> {
  await ready();
  return signSync(message, secretKey);
}

export function signSync(message: Uint8Array, secretKey: Uint8Array): Uint8Array {
  checkLength('an Ed25519 secret key', secretKey, SECRET_KEY_BYTES);
  return lib().crypto_sign_detached(message, secretKey);
}

export async function verify(message: Uint8Array, signature: Uint8Array, publicKey: Uint8Array): Promise<boolean> {
  await ready();
  return verifySync(message, signature, publicKey);
}

/**
 * True only for a valid signature of `message` by `publicKey`. A signature
 * of the wrong length is simply invalid; a public key of the wrong length is
 * the caller's error (E_INVALID_ARGUMENT).
 */
export function verifySync(message: Uint8Array, signature: Uint8Array, publicKey: Uint8Array): boolean {
  checkLength('an Ed25519 public key', publicKey, PUBLIC_KEY_BYTES);
  if (!(signature instanceof Uint8Array) || signature.byteLength !== SIGNATURE_BYTES) return false;
  const s = lib();
  try {
    return s.crypto_sign_verify_detached(signature, message, publicKey);
  } catch {
    return false;
  }
}
