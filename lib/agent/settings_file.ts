/**
 * The agent's persisted settings (docs/agent.md, "Settings page"):
 * `<state>/agent/settings.json`, what the device's user chose on the
 * settings page — today the automatic-install switch. Written atomically
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

export const SETTINGS_FILE = 'settings.json';

export interface PersistedSettings {
  /** The "install security patches automatically" switch, when the user set it. */
  autoInstall?: boolean;
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
  const o = parsed as { format?: unknown; autoInstall?: unknown };
  if (!o || typeof o !== 'object' || o.format !== 1 || (o.autoInstall !== undefined && typeof o.autoInstall !== 'boolean')) {
    throw new RevpatchError('E_CORRUPT', `${file} has an unknown shape`);
  }
  return o.autoInstall === undefined ? {} : { autoInstall: o.autoInstall };
}

/** Replaces the persisted settings with `settings`, atomically. */
export async function writePersistedSettings(stateDir: string, settings: PersistedSettings): Promise<void> {
  const file = settingsPath(stateDir);
  await fs.mkdir(path.dirname(file), { recursive: true });
  await writeFileAtomic(file, `${JSON.stringify({ format: 1, ...settings }, null, 1)}\n`);
}
