/**
 * Builds operation records by hand (docs/on-disk-format.md, "Patch payload"),
 * for tests that need payloads the generator would never make.
 */
import * as crypto from 'node:crypto';

export const TYPES = { REPLACE: 1, REPLACE_BROTLI: 2, ZERO: 3, COPY: 4, DIFF: 5 } as const;

export interface Op {
  type: number;
  src?: Array<[bigint | number, bigint | number]>;
  dst: Array<[bigint | number, bigint | number]>;
  data?: Buffer;
  dataLength?: bigint | number;
  srcHash?: Buffer;
  dstHash?: Buffer;
  srcCount?: number;
  dstCount?: number;
}

/** The operation record of docs/on-disk-format.md, "Patch payload". */
export function encodeOp(op: Op): Buffer {
  const src = op.src ?? [];
  const data = op.data ?? Buffer.alloc(0);
  const header = Buffer.alloc(88);
  header.writeUInt8(op.type, 0);
  header.writeUInt32LE(op.srcCount ?? src.length, 4);
  header.writeUInt32LE(op.dstCount ?? op.dst.length, 8);
  header.writeBigUInt64LE(BigInt(op.dataLength ?? data.length), 16);
  (op.srcHash ?? Buffer.alloc(32)).copy(header, 24);
  (op.dstHash ?? Buffer.alloc(32)).copy(header, 56);
  const extents = Buffer.alloc(16 * (src.length + op.dst.length));
  [...src, ...op.dst].forEach(([start, count], i) => {
    extents.writeBigUInt64LE(BigInt(start), 16 * i);
    extents.writeBigUInt64LE(BigInt(count), 16 * i + 8);
  });
  return Buffer.concat([header, extents, data]);
}

export const sha = (data: Buffer): Buffer => crypto.createHash('sha256').update(data).digest();

/** Payload bytes and the manifest fields that describe them, in 64 KiB chunks. */
export function payloadOf(ops: Op[], chunkSize = 64 * 1024) {
  const payload = Buffer.concat(ops.map(encodeOp));
  const chunks: string[] = [];
  for (let off = 0; off < payload.length; off += chunkSize) chunks.push(sha(payload.subarray(off, off + chunkSize)).toString('hex'));
  return { payload, fields: { size: payload.length, digest: sha(payload).toString('hex'), chunkSize, chunks } };
}
