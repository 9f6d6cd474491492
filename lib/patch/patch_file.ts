/**
 * The patch file container (docs/on-disk-format.md, "Patch file"):
 *
 *   header (64 bytes) || manifest (UTF-8 JSON) || signature (64 bytes) || payload
 *
 * The Ed25519 signature covers header || manifest; the manifest carries the
 * payload digest and every chunk digest, so the signature covers the whole
 * file. Nothing but the fixed-size, bounds-checked header is interpreted
 * before the signature checks (DESIGN.md invariant 4): `verify` checks the
 * signature first and only then parses the manifest.
 *
 * A PatchFile holds ONE descriptor for its lifetime. Header, manifest and
 * signature are read from it with positional reads at open, and the engine
 * reads the payload through the same descriptor, so replacing or truncating
 * the path afterwards cannot change what was verified (short of rewriting
 * the same inode in place, which the payload's chunk digests catch).
 *
 * Codes: framing violations (empty, truncated, trailing bytes, bad magic,
 * lengths out of bounds or inconsistent, reserved bytes set) are E_FORMAT; a
 * format version other than 1 is E_UNSUPPORTED; a missing file E_NOT_FOUND;
 * a bad signature E_SIGNATURE; a manifest that does not parse or validate
 * E_MANIFEST.
 */
import { promises as fs } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import type { ApplyParams } from '../engine/engine';
import { RevpatchError, toRevpatchError } from '../engine/errors';
import { keyIdOf, type PublicKey } from './keys';
import { MAX_MANIFEST_BYTES, parseManifest, type Manifest } from './manifest';
import { ready as signingReady, signSync, SIGNATURE_BYTES, verifySync } from './signing';

/** "RVPATCH" followed by a zero byte. */
export const PATCH_MAGIC: Buffer = Buffer.from('RVPATCH\0', 'latin1');
export const PATCH_FORMAT_VERSION = 1;
export const HEADER_SIZE = 64;
export const SIGNATURE_SIZE = SIGNATURE_BYTES;

/** Byte offsets of the header fields (all little-endian). */
const OFF_VERSION = 8;
const OFF_HEADER_SIZE = 12;
const OFF_MANIFEST_LENGTH = 16;
const OFF_SIGNATURE_LENGTH = 20;
const OFF_PAYLOAD_OFFSET = 24;
const OFF_PAYLOAD_LENGTH = 32;
const OFF_RESERVED = 40;

export interface PatchHeader {
  version: number;
  headerSize: number;
  manifestLength: number;
  signatureLength: number;
  payloadOffset: number;
  payloadLength: number;
}

/** The header of a patch file whose manifest and payload have these lengths. */
export function encodeHeader(manifestLength: number, payloadLength: number): Buffer {
  if (!Number.isInteger(manifestLength) || manifestLength < 1 || manifestLength > MAX_MANIFEST_BYTES) {
    throw new RevpatchError('E_INVALID_ARGUMENT', `manifest length ${manifestLength} is outside 1..${MAX_MANIFEST_BYTES}`);
  }
  const payloadOffset = HEADER_SIZE + manifestLength + SIGNATURE_SIZE;
  if (!Number.isSafeInteger(payloadLength) || payloadLength < 0 || payloadOffset + payloadLength > Number.MAX_SAFE_INTEGER) {
    throw new RevpatchError('E_INVALID_ARGUMENT', `payload length ${payloadLength} is out of range`);
  }
  const header = Buffer.alloc(HEADER_SIZE);
  PATCH_MAGIC.copy(header, 0);
  header.writeUInt32LE(PATCH_FORMAT_VERSION, OFF_VERSION);
  header.writeUInt32LE(HEADER_SIZE, OFF_HEADER_SIZE);
  header.writeUInt32LE(manifestLength, OFF_MANIFEST_LENGTH);
  header.writeUInt32LE(SIGNATURE_SIZE, OFF_SIGNATURE_LENGTH);
  header.writeBigUInt64LE(BigInt(payloadOffset), OFF_PAYLOAD_OFFSET);
  header.writeBigUInt64LE(BigInt(payloadLength), OFF_PAYLOAD_LENGTH);
  return header;
}

/**
 * Decodes and bounds-checks a header. The file size check (payload offset +
 * payload length = file size) is the caller's, who knows the size.
 */
export function decodeHeader(bytes: Uint8Array): PatchHeader {
  const fail = (message: string): never => {
    throw new RevpatchError('E_FORMAT', `not a valid patch file: ${message}`);
  };
  if (bytes.byteLength < HEADER_SIZE) fail(`header truncated (${bytes.byteLength} of ${HEADER_SIZE} bytes)`);
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, HEADER_SIZE);
  if (!b.subarray(0, PATCH_MAGIC.length).equals(PATCH_MAGIC)) fail('wrong magic (expected "RVPATCH\\0")');
  const version = b.readUInt32LE(OFF_VERSION);
  if (version !== PATCH_FORMAT_VERSION) {
    throw new RevpatchError(
      'E_UNSUPPORTED',
      `patch file format version ${version} is not supported (this revpatch reads version ${PATCH_FORMAT_VERSION})`,
    );
  }
  const headerSize = b.readUInt32LE(OFF_HEADER_SIZE);
  if (headerSize !== HEADER_SIZE) fail(`header size ${headerSize}, expected ${HEADER_SIZE}`);
  const manifestLength = b.readUInt32LE(OFF_MANIFEST_LENGTH);
  if (manifestLength < 1 || manifestLength > MAX_MANIFEST_BYTES) {
    fail(`manifest length ${manifestLength} is outside 1..${MAX_MANIFEST_BYTES}`);
  }
  const signatureLength = b.readUInt32LE(OFF_SIGNATURE_LENGTH);
  if (signatureLength !== SIGNATURE_SIZE) fail(`signature length ${signatureLength}, expected ${SIGNATURE_SIZE}`);
  const payloadOffset = b.readBigUInt64LE(OFF_PAYLOAD_OFFSET);
  const expectedOffset = BigInt(HEADER_SIZE + manifestLength + SIGNATURE_SIZE);
  if (payloadOffset !== expectedOffset) fail(`payload offset ${payloadOffset}, expected ${expectedOffset}`);
  const payloadLength = b.readBigUInt64LE(OFF_PAYLOAD_LENGTH);
  if (payloadOffset + payloadLength > BigInt(Number.MAX_SAFE_INTEGER)) {
    fail(`payload length ${payloadLength} is beyond 2^53 - 1 bytes of file`);
  }
  for (let i = OFF_RESERVED; i < HEADER_SIZE; i++) {
    if (b[i] !== 0) fail(`reserved header byte ${i} is not zero`);
  }
  return {
    version,
    headerSize,
    manifestLength,
    signatureLength,
    payloadOffset: Number(payloadOffset),
    payloadLength: Number(payloadLength),
  };
}

/**
 * Header || manifest || signature for a payload of `payloadLength` bytes:
 * everything of a patch file before its payload, signed with `secretKey`
 * (64-byte Ed25519, lib/patch/keys.ts).
 */
export async function encodeSignedHead(
  manifestBytes: Uint8Array,
  payloadLength: number,
  secretKey: Uint8Array,
): Promise<Buffer> {
  await signingReady();
  const header = encodeHeader(manifestBytes.byteLength, payloadLength);
  const signed = Buffer.concat([header, manifestBytes]);
  const signature = signSync(signed, secretKey);
  return Buffer.concat([signed, signature]);
}

async function readExactly(handle: FileHandle, length: number, position: number, what: string): Promise<Buffer> {
  const buffer = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await handle.read(buffer, done, length - done, position + done);
    if (bytesRead === 0) {
      throw new RevpatchError('E_FORMAT', `not a valid patch file: ${what} truncated (file shrank while reading)`);
    }
    done += bytesRead;
  }
  return buffer;
}

export class PatchFile {
  private handle: FileHandle | null;
  private verified: Manifest | null = null;

  private constructor(
    /** The path it was opened from; the file there may since have changed. */
    readonly path: string,
    handle: FileHandle,
    readonly header: PatchHeader,
    /** The exact bytes the signature covers: header || manifest. */
    private readonly signedBytes: Buffer,
    private readonly signature: Buffer,
    readonly fileSize: number,
  ) {
    this.handle = handle;
  }

  /**
   * Opens `file`, checks its framing and reads header, manifest bytes and
   * signature from the one descriptor it keeps. Nothing is parsed yet.
   */
  static async open(file: string): Promise<PatchFile> {
    return PatchFile.openFile(file, null);
  }

  /**
   * Opens a patch file that is still being written (streaming install) and
   * will be `length` bytes long: header, manifest and signature must be
   * there already, the payload may not be yet. The header must announce
   * exactly `length` bytes. The engine then reads the payload through a feed.
   */
  static async openGrowing(file: string, length: number): Promise<PatchFile> {
    if (!Number.isSafeInteger(length) || length < HEADER_SIZE) {
      throw new RevpatchError('E_INVALID_ARGUMENT', `a patch file cannot be ${length} bytes long`);
    }
    return PatchFile.openFile(file, length);
  }

  private static async openFile(file: string, growingTo: number | null): Promise<PatchFile> {
    await signingReady();
    let handle: FileHandle;
    try {
      handle = await fs.open(file, 'r');
    } catch (err) {
      const e = toRevpatchError(err);
      if (e.code === 'E_NOT_FOUND') throw new RevpatchError('E_NOT_FOUND', `patch file ${file} does not exist`, { cause: err });
      throw e;
    }
    try {
      const stat = await handle.stat();
      if (!stat.isFile()) throw new RevpatchError('E_FORMAT', `not a valid patch file: ${file} is not a regular file`);
      const size = stat.size;
      if (size === 0) throw new RevpatchError('E_FORMAT', `not a valid patch file: ${file} is empty`);
      if (size < HEADER_SIZE) {
        throw new RevpatchError('E_FORMAT', `not a valid patch file: ${size} bytes, shorter than the ${HEADER_SIZE}-byte header`);
      }
      const headerBytes = await readExactly(handle, HEADER_SIZE, 0, 'header');
      const header = decodeHeader(headerBytes);
      const end = header.payloadOffset + header.payloadLength;
      if (growingTo !== null) {
        if (end !== growingTo) {
          throw new RevpatchError('E_FORMAT', `not a valid patch file: the header says ${end} bytes, ${growingTo} are expected`);
        }
        if (size < header.payloadOffset) {
          throw new RevpatchError('E_FORMAT', `not a valid patch file: only ${size} bytes of its ${header.payloadOffset}-byte head are written`);
        }
      } else if (size < end) {
        throw new RevpatchError('E_FORMAT', `not a valid patch file: truncated (${size} bytes, the header says ${end})`);
      }
      if (size > end) {
        throw new RevpatchError('E_FORMAT', `not a valid patch file: ${size - end} unexpected bytes after the payload`);
      }
      const signedBytes = Buffer.alloc(HEADER_SIZE + header.manifestLength);
      headerBytes.copy(signedBytes, 0);
      (await readExactly(handle, header.manifestLength, HEADER_SIZE, 'manifest')).copy(signedBytes, HEADER_SIZE);
      const signature = await readExactly(handle, SIGNATURE_SIZE, HEADER_SIZE + header.manifestLength, 'signature');
      return new PatchFile(file, handle, header, signedBytes, signature, growingTo ?? size);
    } catch (err) {
      await handle.close().catch(() => undefined);
      throw toRevpatchError(err);
    }
  }

  /** The held descriptor; the engine reads the payload through it with pread. */
  get fd(): number {
    return this.openHandle().fd;
  }

  get payloadOffset(): number {
    return this.header.payloadOffset;
  }

  get payloadLength(): number {
    return this.header.payloadLength;
  }

  get isVerified(): boolean {
    return this.verified !== null;
  }

  /**
   * Checks the signature over header || manifest with the trusted key
   * (E_SIGNATURE), and only then parses and validates the manifest
   * (E_MANIFEST). Returns the manifest, which `manifest` then also gives.
   */
  verify(trusted: Uint8Array | PublicKey): Manifest {
    const publicKey = trusted instanceof Uint8Array ? trusted : trusted.publicKey;
    this.openHandle();
    if (!verifySync(this.signedBytes, this.signature, publicKey)) {
      throw new RevpatchError(
        'E_SIGNATURE',
        `the signature of ${this.path} does not verify with the trusted key ${keyIdOf(publicKey)}`,
      );
    }
    const manifest = this.decodeManifest();
    const keyId = keyIdOf(publicKey);
    if (manifest.keyId !== keyId) {
      throw new RevpatchError('E_MANIFEST', `the manifest names key ${manifest.keyId} but was signed by ${keyId}`);
    }
    this.verified = manifest;
    return manifest;
  }

  /** The verified manifest; throws E_STATE before `verify` has succeeded. */
  get manifest(): Manifest {
    if (!this.verified) {
      throw new RevpatchError('E_STATE', `the manifest of ${this.path} is not verified yet: call verify() first`);
    }
    return this.verified;
  }

  /**
   * UNVERIFIED: parses and validates the manifest without checking the
   * signature, for `inspect` without a trusted key. Nothing may act on the
   * result; it does not make `manifest` or `applyParams` available.
   */
  parseUnverified(): Manifest {
    this.openHandle();
    return this.decodeManifest();
  }

  /**
   * What the engine needs to apply (or scan) the payload into `layerPath`,
   * from the verified manifest. `blockSize`, if given, is the device's block
   * size and must be the manifest's (E_BASE_MISMATCH).
   */
  applyParams(layerPath: string, blockSize?: number): ApplyParams {
    const m = this.manifest;
    if (blockSize !== undefined && blockSize !== m.blockSize) {
      throw new RevpatchError('E_BASE_MISMATCH', `patch ${m.id} uses ${m.blockSize}-byte blocks, the volume ${blockSize}`);
    }
    return {
      fd: this.fd,
      payloadOffset: this.payloadOffset,
      payloadSize: this.payloadLength,
      chunkSize: m.payload.chunkSize,
      chunkDigests: [...m.payload.chunks],
      payloadDigest: m.payload.digest,
      operationCount: m.operationCount,
      blockSize: m.blockSize,
      targetSize: m.target.size,
      sourceDigest: m.source.digest,
      targetDigest: m.target.digest,
      layerPath,
    };
  }

  /** Closes the descriptor; later calls are no-ops. */
  async close(): Promise<void> {
    const handle = this.handle;
    this.handle = null;
    this.verified = null;
    if (handle) await handle.close();
  }

  private decodeManifest(): Manifest {
    const manifest = parseManifest(this.signedBytes.subarray(HEADER_SIZE));
    if (manifest.payload.size !== this.payloadLength) {
      throw new RevpatchError(
        'E_MANIFEST',
        `the manifest's payload size ${manifest.payload.size} is not the header's ${this.payloadLength}`,
      );
    }
    return manifest;
  }

  private openHandle(): FileHandle {
    if (!this.handle) throw new RevpatchError('E_STATE', `patch file ${this.path} is closed`);
    return this.handle;
  }
}
