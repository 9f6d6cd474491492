/**
 * Bearer tokens of the fleet service (DESIGN.md, "Fleet"; docs/fleet.md).
 *
 * Two kinds, never interchangeable: a device (enrollment) token may only
 * POST reports; an operator token may only use the operator API. A token is
 * 32 random bytes in base64url behind a prefix naming its kind (`rpd_`,
 * `rpo_`), so a token found in a log or a file says what it opens. The
 * service stores only the token's SHA-256 (a stolen database opens nothing)
 * and looks a presented token up by that hash.
 *
 * Refusals: no token, an unknown or a revoked one is E_AUTH (HTTP 401); a
 * valid token of the other API is E_FORBIDDEN (HTTP 403). Whether a token
 * exists is not told apart from whether it is well-formed, and the one
 * comparison made here runs in constant time.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { RevpatchError } from '../engine/errors';
import type { FleetStore, TokenKind, TokenRecord } from './types';

export const TOKEN_PREFIXES: Readonly<Record<TokenKind, string>> = { device: 'rpd_', operator: 'rpo_' };

/** Random bytes in a token. */
export const TOKEN_BYTES = 32;

/** What a well-formed token looks like: a known prefix and 43 base64url characters. */
const TOKEN_SHAPE = /^rp[do]_[A-Za-z0-9_-]{43}$/;

export interface MintOptions {
  /** Devices an enrollment token stands for (the exposure bound); default 1 for device tokens, always 0 for operator tokens. */
  devices?: number;
  /** The server clock, ms since epoch. */
  now: number;
}

/** Whether `token` has the shape of a token of either kind (says nothing of whether it is stored). */
export function isWellFormedToken(token: string): boolean {
  return TOKEN_SHAPE.test(token);
}

/** Hex SHA-256 of a token: the only form in which a token is stored. */
export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

/**
 * Draws a new token of `kind`, stores its hash and returns the token
 * itself, which exists nowhere else: the caller writes it out once.
 */
export async function mintToken(store: FleetStore, kind: TokenKind, options: MintOptions): Promise<string> {
  if (kind !== 'device' && kind !== 'operator') throw new RevpatchError('E_INVALID_ARGUMENT', `unknown token kind ${String(kind)}`);
  const devices = kind === 'operator' ? 0 : (options.devices ?? 1);
  if (!Number.isSafeInteger(devices) || devices < (kind === 'device' ? 1 : 0)) {
    throw new RevpatchError('E_INVALID_ARGUMENT', `devices must be a positive integer, not ${String(options.devices)}`);
  }
  if (!Number.isFinite(options.now)) throw new RevpatchError('E_INVALID_ARGUMENT', 'now must be a time in ms');
  const token = TOKEN_PREFIXES[kind] + randomBytes(TOKEN_BYTES).toString('base64url');
  await store.addToken({ hash: hashToken(token), kind, devices, createdAt: options.now, revoked: false });
  return token;
}

/** The token of an `Authorization: Bearer …` header value, or null when there is none. */
export function bearerToken(header: string | undefined): string | null {
  if (header === undefined) return null;
  const m = /^Bearer +(\S+) *$/i.exec(header);
  return m ? m[1] : null;
}

/**
 * The stored record of the token in `header` if it is a valid token of
 * `kind`. Throws E_AUTH (missing, malformed, unknown, revoked) or
 * E_FORBIDDEN (a valid token of the other kind).
 */
export async function authenticate(store: FleetStore, header: string | undefined, kind: TokenKind): Promise<TokenRecord> {
  const token = bearerToken(header);
  if (token === null) throw new RevpatchError('E_AUTH', 'a Bearer token is required');
  if (!TOKEN_SHAPE.test(token)) throw new RevpatchError('E_AUTH', 'the token is not valid');
  const hash = hashToken(token);
  const record = await store.findToken(hash);
  if (record === null || !sameHash(record.hash, hash) || record.revoked) {
    throw new RevpatchError('E_AUTH', 'the token is not valid');
  }
  if (record.kind !== kind) throw new RevpatchError('E_FORBIDDEN', `a ${record.kind} token cannot be used for the ${kind} API`);
  return record;
}

function sameHash(a: string, b: string): boolean {
  const x = Buffer.from(a, 'utf8');
  const y = Buffer.from(b, 'utf8');
  return x.length === y.length && timingSafeEqual(x, y);
}
