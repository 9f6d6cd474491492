/**
 * The agent's persisted settings (docs/agent.md, "Settings page"):
 * `<state>/agent/settings.json`, what the device's user chose on the
 * settings page — the automatic-install switch — and what a device's
 * owner set by hand: the download rate cap (`maxBytesPerSecond`, bytes per
 * second, 0 unlimited, else ≥ 1024) and the install priority
 * (`background`). Written atomically
 * (a crash leaves the old or the new file, never a torn one) and read by
 * the agent at the start of every check, so a change made by another
 * process is honoured at the next check without a restart.
 *
 * A setting the file does not hold falls back to the agent's own (its
 * command-line flags); a damaged file is reported and ignored, never a
 * reason to stop patching.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { writeFileAtomic } from '../engine/atomic';
import { RevpatchError, toRevpatchError } from '../engine/errors';
import { isRateCap } from './policy';

export const SETTINGS_FILE = 'settings.json';

export interface PersistedSettings {
  /** The "install security patches automatically" switch, when the user set it. */
  autoInstall?: boolean;
  /** Download cap in bytes per second; 0 unlimited (AgentSettings.maxBytesPerSecond). */
  maxBytesPerSecond?: number;
  /** Install at the lowest CPU and I/O priority (AgentSettings.background). */
  background?: boolean;
}


export function settingsPath(stateDir: string): string {
  return path.join(stateDir, 'agent', SETTINGS_FILE);
}

/** The persisted settings; {} when there are none. A malformed file throws E_CORRUPT. */
export async function readPersistedSettings(stateDir: string): Promise<PersistedSettings> {
  const file = settingsPath(stateDir);
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw toRevpatchError(err);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new RevpatchError('E_CORRUPT', `${file} is not JSON`);
  }
  const o = parsed as { format?: unknown; autoInstall?: unknown; maxBytesPerSecond?: unknown; background?: unknown };
  if (
    !o ||
    typeof o !== 'object' ||
    o.format !== 1 ||
    (o.autoInstall !== undefined && typeof o.autoInstall !== 'boolean') ||
    (o.background !== undefined && typeof o.background !== 'boolean') ||
    (o.maxBytesPerSecond !== undefined && !isRateCap(o.maxBytesPerSecond))
  ) {
    throw new RevpatchError('E_CORRUPT', `${file} has an unknown shape`);
  }
  const settings: PersistedSettings = {};
  if (o.autoInstall !== undefined) settings.autoInstall = o.autoInstall;
  if (o.maxBytesPerSecond !== undefined) settings.maxBytesPerSecond = o.maxBytesPerSecond as number;
  if (o.background !== undefined) settings.background = o.background;
  return settings;
}

/** Replaces the persisted settings with `settings`, atomically. */
export async function writePersistedSettings(stateDir: string, settings: PersistedSettings): Promise<void> {
  const file = settingsPath(stateDir);
  await fs.mkdir(path.dirname(file), { recursive: true });
  await writeFileAtomic(file, `${JSON.stringify({ format: 1, ...settings }, null, 1)}\n`);
}
