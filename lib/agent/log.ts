/**
 * What the agent leaves behind for people and auditors, in the state
 * directory, next to (never inside) the commit record:
 *
 * - `agent.log`: structured pino logs (one JSON object a line), for
 *   debugging; buffered, may lose its last lines in a crash.
 * - `audit.ndjson`: one line per transition the agent caused or saw
 *   (staged, activated, rolled back, recalled, removed, refused), appended
 *   and fsynced before the agent moves on, so the trail survives a power
 *   cut. The commit record stays the truth; the trail says how it got there.
 *
 * The Device class writes neither: a refused install leaves the state
 * directory byte for byte as it was, which its tests check.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import pino from 'pino';
import { syncDirectory } from '../engine/atomic';
import { toRevpatchError } from '../engine/errors';

export const AGENT_LOG_FILE = 'agent.log';
export const AUDIT_FILE = 'audit.ndjson';

export type Logger = pino.Logger;

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

export interface AgentLog {
  logger: Logger;
  /** Flushes buffered lines and closes the file. */
  close(): Promise<void>;
}

/** A pino logger appending to `<stateDir>/agent.log`. */
export function openAgentLog(stateDir: string, level: LogLevel = 'info'): AgentLog {
  const destination = pino.destination({ dest: path.join(stateDir, AGENT_LOG_FILE), append: true, sync: false, mkdir: true });
  const logger = pino({ level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime }, destination);
  return {
    logger,
    close: () =>
      new Promise<void>((resolve) => {
        destination.flush((err) => {
          if (err) {
            destination.end();
            resolve();
            return;
          }
          destination.once('close', () => resolve());
          destination.end();
        });
      }),
  };
}

/** A logger that drops everything (library use without a state log). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

/** One line of the audit trail. */
export interface AuditEntry {
  /** ISO time of the host clock when it was written. */
  time: string;
  /** What happened: staged, activated, rolled-back, recalled, removed, refused, restart-requested, ... */
  event: string;
  patch?: string | null;
  /** Patch state before and after, when a transition. */
  from?: string | null;
  to?: string | null;
  code?: string;
  reason?: string;
  [key: string]: unknown;
}

/**
 * The ndjson audit trail. Each append is one write of a whole line through
 * an O_APPEND handle followed by fsync, so concurrent writers never
 * interleave within a line and a returned append is durable.
 */
export class AuditTrail {
  constructor(readonly file: string) {}

  static forState(stateDir: string): AuditTrail {
    return new AuditTrail(path.join(stateDir, AUDIT_FILE));
  }

  async append(entry: Omit<AuditEntry, 'time'> & { time?: string }): Promise<void> {
    const line = `${JSON.stringify({ time: entry.time ?? new Date().toISOString(), ...entry })}\n`;
    let created = false;
    try {
      const handle = await fs.open(this.file, 'a', 0o644);
      try {
        created = (await handle.stat()).size === 0;
        await handle.write(line);
        await handle.sync();
      } finally {
        await handle.close();
      }
      if (created) await syncDirectory(path.dirname(this.file));
    } catch (err) {
      throw toRevpatchError(err);
    }
  }

  /** Every entry, oldest first (a torn last line from a crash is skipped). */
  async read(): Promise<AuditEntry[]> {
    let text: string;
    try {
      text = await fs.readFile(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw toRevpatchError(err);
    }
    const out: AuditEntry[] = [];
    for (const line of text.split('\n')) {
      if (!line) continue;
      try {
        out.push(JSON.parse(line) as AuditEntry);
      } catch {
        // a line cut by a crash mid-write
      }
    }
    return out;
  }
}
