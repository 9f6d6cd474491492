/** revpatch as a library: the device lifecycle, the publisher's tools, the engine. */
export { Device } from './device';
export type { InitOptions, InstallOptions, BootReport, DeviceStatus } from './device';
export type { PatchRecord, PatchState, DeviceConfig, DeviceRecord } from './record';
export { createPatch } from './create';
export { inspectPatch } from './inspect';
export { PatchFile } from './patch_file';
export { writeKeyPair, readPublicKey, readSecretKey } from './keys';
export { RevpatchError, ErrorCodes } from './errors';
export type { ErrorCode } from './errors';
export * as engine from './engine';
