/**
 * A manifest's `requires` (format 2): what the payload needs of the device
 * beyond what every format 1 device has, written by `create` from what the
 * generator used and checked by the device before anything is written.
 *
 * Why up front: a DIFF of delta version 5 rebuilds compressed streams on
 * the device, and a zstd stream comes out byte for byte only from the
 * libzstd version that made it. The engine would refuse such an op anyway
 * (E_UNSUPPORTED) and the op's target hash is checked regardless, but only
 * when the install reaches it; checking the manifest first means a device
 * that cannot apply the patch changes nothing at all.
 */
import type { EngineCapabilities, GenerateResult } from '../engine/engine';
import { RevpatchError } from '../engine/errors';
import { BASE_DELTA_VERSION, type Manifest, type Requires } from './manifest';

/** The `requires` of a generated payload, or undefined when it needs nothing new. */
export function requiresOf(generated: Pick<GenerateResult, 'deltaVersions' | 'zstdVersions' | 'deflateStreams'>): Requires | undefined {
  const requires: Requires = {};
  const versions = [...new Set(generated.deltaVersions.filter((v) => v > BASE_DELTA_VERSION))].sort((a, b) => a - b);
  if (versions.length > 0) requires.deltaVersions = versions;
  if (generated.zstdVersions.length > 1) {
    // The generator keeps only frames its own libzstd reproduces, so this
    // cannot come from it; no device could apply such a payload.
    throw new RevpatchError('E_UNSUPPORTED', `zstd recipes of several versions (${generated.zstdVersions.join(', ')}): no device has them all`);
  }
  if (generated.zstdVersions.length === 1) requires.zstd = generated.zstdVersions[0]!;
  if (generated.deflateStreams) requires.deflate = true;
  return Object.keys(requires).length > 0 ? requires : undefined;
}

/** The reasons this engine cannot apply a patch with these needs (empty: it can). */
export function unmetRequirements(requires: Requires | undefined, engine: EngineCapabilities): string[] {
  if (requires === undefined) return [];
  const unmet: string[] = [];
  for (const v of requires.deltaVersions ?? []) {
    if (!engine.deltaVersions.includes(v)) unmet.push(`delta version ${v} (this engine decodes ${engine.deltaVersions.join(', ')})`);
  }
  if (requires.zstd !== undefined && requires.zstd !== engine.zstd) {
    unmet.push(`zstd ${requires.zstd} to rebuild its zstd streams exactly (this engine has zstd ${engine.zstd})`);
  }
  if (requires.deflate && !engine.deflate) unmet.push('deflate streams (this engine has no deflate codec)');
  return unmet;
}

/** Throws E_UNSUPPORTED naming what is missing when the engine cannot apply `manifest`. */
export function checkRequires(manifest: Pick<Manifest, 'id' | 'requires'>, engine: EngineCapabilities): void {
  const unmet = unmetRequirements(manifest.requires, engine);
  if (unmet.length > 0) {
    throw new RevpatchError('E_UNSUPPORTED', `patch ${manifest.id} needs what this device's engine lacks: ${unmet.join('; ')}`);
  }
}
