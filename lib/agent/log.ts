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
 * The Device class writes no log, and to the trail only a read that failed
 * its hash check (`corrupt-read`, lib/device/audit.ts): a refused install
 * leaves the state directory byte for byte as it was, which its tests check.
 */
import * as path from 'node:path';
import pino from 'pino';

// The trail's writer lives with the device, which also appends to it.
export { AUDIT_FILE, AuditTrail, type AuditEntry } from '../device/audit';

export const AGENT_LOG_FILE = 'agent.log';

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

