/**
 * Every failure revpatch reports carries a stable `code`, so a caller can
 * `switch (err.code)`. Codes raised by the native engine arrive with the same
 * names (native/engine/status.h); this module is the one list of all of them.
 */

export const ErrorCodes = {
  /** An I/O call failed (not ENOSPC). */
  E_IO: 'E_IO',
  /** The disk filled up while writing. */
  E_NO_SPACE: 'E_NO_SPACE',
  /** A file the call needs is missing. */
  E_NOT_FOUND: 'E_NOT_FOUND',
  /** Stored bytes (layer, commit record, tree) are invalid. */
  E_CORRUPT: 'E_CORRUPT',
  /** Data does not match its digest. */
  E_HASH_MISMATCH: 'E_HASH_MISMATCH',
  /** The patch was made for other bytes than the device's current view. */
  E_BASE_MISMATCH: 'E_BASE_MISMATCH',
  /** An extent is out of range, overlapping, empty or too many. */
  E_BAD_EXTENT: 'E_BAD_EXTENT',
  /** A caller passed a bad value. */
  E_INVALID_ARGUMENT: 'E_INVALID_ARGUMENT',
  /** An unknown format version or operation type. */
  E_UNSUPPORTED: 'E_UNSUPPORTED',
  /** A length beyond revpatch's bounds. */
  E_TOO_LARGE: 'E_TOO_LARGE',
  /** A handle whose fsync failed; the transaction is abandoned. */
  E_POISONED: 'E_POISONED',
  /** Something that must be new already exists. */
  E_EXISTS: 'E_EXISTS',
  /** The patch file's framing is invalid (magic, lengths, truncation). */
  E_FORMAT: 'E_FORMAT',
  /** The signature does not verify with the trusted key. */
  E_SIGNATURE: 'E_SIGNATURE',
  /** The manifest is not valid JSON or breaks the schema. */
  E_MANIFEST: 'E_MANIFEST',
  /** The patch's parent is not installed. */
  E_PARENT_MISSING: 'E_PARENT_MISSING',
  /** An older version than one already installed or activated. */
  E_ROLLBACK: 'E_ROLLBACK',
  /** No installed patch has that id. */
  E_UNKNOWN_PATCH: 'E_UNKNOWN_PATCH',
  /** The patch is in a state that does not allow the request. */
  E_STATE: 'E_STATE',
  /** The patch has expired. */
  E_EXPIRED: 'E_EXPIRED',
  /** The state directory is not set up (`revpatch init`). */
  E_NOT_INITIALIZED: 'E_NOT_INITIALIZED',
  /** A key file is missing or malformed. */
  E_KEY: 'E_KEY',
  /** Another process is changing the same state directory. */
  E_BUSY: 'E_BUSY',
  /**
   * The base volume is not the file `init` recorded (size, inode, modification
   * or change time differ): `boot` refuses until `revpatch verify` finds every
   * block intact (and records it) or the device is set up again with `init`.
   */
  E_BASE_CHANGED: 'E_BASE_CHANGED',
  /** The native addon could not be loaded. */
  E_ADDON: 'E_ADDON',
  /** An error the engine did not classify. */
  E_UNKNOWN: 'E_UNKNOWN',
  /** Repository metadata has expired against the reference time (freeze attack). */
  E_REPO_EXPIRED: 'E_REPO_EXPIRED',
  /** Repository metadata is older than the metadata already trusted (rollback attack). */
  E_REPO_ROLLBACK: 'E_REPO_ROLLBACK',
  /** Repository metadata lacks enough valid signatures of trusted keys. */
  E_REPO_SIGNATURE: 'E_REPO_SIGNATURE',
  /** Repository metadata is malformed or inconsistent with the other roles. */
  E_REPO_METADATA: 'E_REPO_METADATA',
  /** The server sent data too slowly (slow-retrieval attack) or went silent. */
  E_SLOW_RETRIEVAL: 'E_SLOW_RETRIEVAL',
  /** The network or the server failed (connection refused or reset, HTTP error). */
  E_NETWORK: 'E_NETWORK',
  /** Downloaded data has another length than announced. */
  E_LENGTH_MISMATCH: 'E_LENGTH_MISMATCH',
  /** A target name that could escape its directory or is otherwise unsafe. */
  E_UNSAFE_TARGET: 'E_UNSAFE_TARGET',
  /** The caller aborted the operation. */
  E_ABORTED: 'E_ABORTED',
  /** A fleet request's token is missing, unknown or revoked (HTTP 401). */
  E_AUTH: 'E_AUTH',
  /** A fleet request is not allowed: the token is of the other API, or the Host or Origin is not this server's (HTTP 403). */
  E_FORBIDDEN: 'E_FORBIDDEN',
  /** `install ID`: the configured repository offers no patch with that id. */
  E_NOT_OFFERED: 'E_NOT_OFFERED',
  /** `install ID`: the vendor recalled the patch. */
  E_RECALLED: 'E_RECALLED',
  /** `install ID`: the patch's rollout is halted. */
  E_HALTED: 'E_HALTED',
  /** `install ID`: the device has no repository configured (`revpatch init --repo`). */
  E_NO_REPOSITORY: 'E_NO_REPOSITORY',
  /** `install ID`: the device is outside the patch's staged rollout (`--force-rollout` overrides). */
  E_OUTSIDE_ROLLOUT: 'E_OUTSIDE_ROLLOUT',
} as const;

export type ErrorCode = keyof typeof ErrorCodes;

export class RevpatchError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'RevpatchError';
    this.code = code;
  }
}

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.prototype.hasOwnProperty.call(ErrorCodes, value);
}

/**
 * Turns anything thrown below (the addon, fs, libsodium) into a
 * RevpatchError, keeping a known `code` and mapping Node's errno codes.
 */
export function toRevpatchError(err: unknown): RevpatchError {
  if (err instanceof RevpatchError) return err;
  const e = err as { code?: unknown; message?: unknown };
  const message = typeof e?.message === 'string' ? e.message : String(err);
  if (isErrorCode(e?.code)) return new RevpatchError(e.code, message, { cause: err });
  switch (e?.code) {
    case 'ENOENT':
      return new RevpatchError('E_NOT_FOUND', message, { cause: err });
    case 'ENOSPC':
    case 'EDQUOT':
      return new RevpatchError('E_NO_SPACE', message, { cause: err });
    case 'EEXIST':
      return new RevpatchError('E_EXISTS', message, { cause: err });
    case 'EIO':
    case 'EACCES':
    case 'EPERM':
    case 'EISDIR':
    case 'ENOTDIR':
    case 'EROFS':
      return new RevpatchError('E_IO', message, { cause: err });
    default:
      return new RevpatchError('E_UNKNOWN', message, { cause: err });
  }
}
