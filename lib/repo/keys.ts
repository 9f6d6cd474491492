/**
 * Ed25519 keys as TUF sees them: the revpatch key files (lib/patch/keys.ts) turned
 * into @tufjs/models Keys (keyid = SHA-256 of the canonical JSON of the
 * public key, as the TUF specification has it) and signers for Metadata.sign.
 */
import * as crypto from 'node:crypto';
import { Key, Signature } from '@tufjs/models';
import { RevpatchError } from '../engine/errors';
import { readPublicKey, readSecretKey, type PublicKey, type SecretKey } from '../patch/keys';
import { ready as signingReady, signSync } from '../patch/signing';

export interface TufKey {
  key: Key;
  secret: SecretKey;
}

/**
 * Canonical JSON (sorted keys, no whitespace) of the key object; the public
 * key form is fixed, so this small encoder covers it exactly.
 */
function canonicalKeyJson(publicHex: string): string {
  return `{"keytype":"ed25519","keyval":{"public":"${publicHex}"},"scheme":"ed25519"}`;
}

export function tufKeyOf(publicKey: Uint8Array): Key {
  const hex = Buffer.from(publicKey).toString('hex');
  const keyID = crypto.createHash('sha256').update(canonicalKeyJson(hex)).digest('hex');
  return new Key({ keyID, keyType: 'ed25519', scheme: 'ed25519', keyVal: { public: hex } });
}

export async function loadTufKey(file: string): Promise<TufKey> {
  const secret = await readSecretKey(file);
  return { key: tufKeyOf(secret.publicKey), secret };
}

/** The signer Metadata.sign expects. */
export function signerOf(tufKey: TufKey): (data: Buffer) => Signature {
  return (data: Buffer) =>
    new Signature({ keyID: tufKey.key.keyID, sig: Buffer.from(signSync(data, tufKey.secret.secretKey)).toString('hex') });
}

/** A public key from a revpatch.pub or (its public half) a revpatch.key file. */
export async function readAnyPublicKey(file: string): Promise<PublicKey> {
  await signingReady();
  try {
    return await readPublicKey(file);
  } catch (first) {
    try {
      const secret = await readSecretKey(file);
      return { keyId: secret.keyId, publicKey: secret.publicKey };
    } catch {
      if (first instanceof RevpatchError) throw first;
      throw new RevpatchError('E_KEY', `${file} is neither a revpatch public nor secret key`);
    }
  }
}
