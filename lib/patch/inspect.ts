/**
 * `revpatch inspect`: what a patch file says about itself.
 *
 * With a trusted public key the signature is verified (E_SIGNATURE if it
 * fails) and the engine then reads the whole payload, checking every chunk
 * digest and the payload digest and counting operations by type. Without
 * one, the manifest is parsed UNVERIFIED, and the result says so: signature
 * and payload are 'unchecked', and no payload byte is interpreted.
 */
import * as engine from '../engine/engine';
import type { PayloadStats } from '../engine/engine';
import { readPublicKey } from './keys';
import type { Manifest, Requires } from './manifest';
import { unmetRequirements } from './requires';
import { HEADER_SIZE, PatchFile, SIGNATURE_SIZE } from './patch_file';

export interface PatchSizes {
  file: number;
  header: number;
  manifest: number;
  signature: number;
  payload: number;
}

export interface InspectResult {
  manifest: Manifest;
  signature: 'valid' | 'unchecked';
  payload: 'valid' | 'unchecked';
  /** Operation statistics counted by the engine; only when the payload was checked. */
  stats?: PayloadStats;
  sizes: PatchSizes;
  /**
   * What the patch needs of a device beyond format 1 (the manifest's
   * `requires`: delta versions, the zstd version its recipes name,
   * deflate), null when nothing; and what of it this engine lacks (empty
   * when this engine can apply it).
   */
  requires: Requires | null;
  unmet: string[];
}

export async function inspectPatch(file: string, trustedPublicKeyPath?: string): Promise<InspectResult> {
  const trust = trustedPublicKeyPath === undefined ? undefined : await readPublicKey(trustedPublicKeyPath);
  const patch = await PatchFile.open(file);
  try {
    const sizes: PatchSizes = {
      file: patch.fileSize,
      header: HEADER_SIZE,
      manifest: patch.header.manifestLength,
      signature: SIGNATURE_SIZE,
      payload: patch.payloadLength,
    };
    const needs = (m: Manifest) => ({
      requires: m.requires ?? null,
      unmet: unmetRequirements(m.requires, engine.capabilities()),
    });
    if (!trust) {
      const manifest = patch.parseUnverified();
      return { manifest, signature: 'unchecked', payload: 'unchecked', sizes, ...needs(manifest) };
    }
    const manifest = patch.verify(trust);
    // The scan creates no layer; the path is not used.
    const stats = await engine.scanPayload(patch.applyParams(''));
    return { manifest, signature: 'valid', payload: 'valid', stats, sizes, ...needs(manifest) };
  } finally {
    await patch.close();
  }
}
