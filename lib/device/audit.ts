/**
 * The audit trail, `<state>/audit.ndjson`: one JSON line per event, appended
 * and fsynced before the writer moves on, so the trail survives a power cut.
 * The agent records its transitions here (lib/agent/log.ts); the device
 * layer records reads that failed their hash check (`corrupt-read`), and so
 * does the engine's own writer (native/engine/audit.h) for readers with no
 * TypeScript beside them. The commit record stays the truth; the trail says
 * how it got there.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { syncDirectory } from '../engine/atomic';
import { toRevpatchError } from '../engine/errors';

export const AUDIT_FILE = 'audit.ndjson';

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
