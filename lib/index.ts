/** revpatch as a library: the device lifecycle, the publisher's tools, the engine. */
export { Device } from './device/device';
export type { InitOptions, InstallOptions, BootReport, DeviceStatus } from './device/device';
export type { PatchRecord, PatchState, DeviceConfig, DeviceRecord } from './device/record';
export { createPatch } from './publisher/create';
export { inspectPatch } from './patch/inspect';
export { PatchFile } from './patch/patch_file';
export { writeKeyPair, readPublicKey, readSecretKey } from './patch/keys';
export { RevpatchError, ErrorCodes } from './engine/errors';
export type { ErrorCode } from './engine/errors';
export * as engine from './engine/engine';
export { Agent, installWhileDownloading } from './agent/agent';
export type { AgentHooks, AgentSettings, AgentEvents, CheckReport } from './agent/agent';
export * as policy from './agent/policy';
export { AuditTrail, openAgentLog } from './agent/log';
export { RepositoryClient } from './repo/client';
export { installFromDownload, checkManifestMatches } from './device/stream_install';
export * as testing from './engine/testing';
