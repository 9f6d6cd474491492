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
export { Agent, installWhileDownloading } from './agent';
export type { AgentHooks, AgentSettings, AgentEvents, CheckReport } from './agent';
export * as policy from './policy';
export { AuditTrail, openAgentLog } from './log';
export { RepositoryClient } from './repo/client';
export { installFromDownload, checkManifestMatches } from './stream_install';
export * as testing from './testing';
