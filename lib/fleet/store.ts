/**
 * Opens the fleet store named by a URL (DESIGN.md, "Fleet": `--db URL`):
 *
 * - `sqlite:PATH` (relative to the working directory, or absolute): the
 *   embedded default, one file (lib/fleet/store_sqlite.ts);
 * - `sqlite::memory:`: a private in-memory database, for tests;
 * - `postgres://…` / `postgresql://…` (any form pg accepts, such as
 *   `postgresql://user@/db?host=/run/postgresql`): one database shared by
 *   several collector processes (lib/fleet/store_postgres.ts).
 *
 * Opening applies the numbered migrations the database lacks, and refuses
 * (E_UNSUPPORTED) a database whose schema is newer than this code, so an
 * older collector never writes into a layout it does not understand.
 */
import * as path from 'node:path';
import { RevpatchError } from '../engine/errors';
import type { FleetStore } from './types';
import { SqliteFleetStore } from './store_sqlite';
import { PostgresFleetStore } from './store_postgres';

/** The fleet database when neither `--db` nor `$REVPATCH_FLEET_DB` names one. */
export const DEFAULT_FLEET_DB = 'sqlite:./revpatch-fleet.db';

export interface OpenStoreOptions {
  /** SQLite: how long a write waits for another process's transaction, ms (default 5000). */
  busyTimeoutMs?: number;
  /** PostgreSQL: connections in the work pool (default 10). */
  poolSize?: number;
}

/** The database URL to use: `given`, else `$REVPATCH_FLEET_DB`, else the default SQLite file. */
export function fleetDbUrl(given?: string): string {
  if (given !== undefined && given !== '') return given;
  const env = process.env.REVPATCH_FLEET_DB;
  return env !== undefined && env !== '' ? env : DEFAULT_FLEET_DB;
}

/** The URL without its password, for messages. */
export function redactDbUrl(url: string): string {
  return url.replace(/^([a-z]+:\/\/[^:/@]*):[^@/]*@/i, '$1:***@');
}

export async function openStore(url: string, options: OpenStoreOptions = {}): Promise<FleetStore> {
  if (typeof url !== 'string' || url === '') throw new RevpatchError('E_INVALID_ARGUMENT', 'a fleet database URL is required');
  if (url.startsWith('sqlite:')) {
    const file = url.slice('sqlite:'.length);
    if (file === '') throw new RevpatchError('E_INVALID_ARGUMENT', `"${url}" names no file: use sqlite:PATH or sqlite::memory:`);
    const target = file === ':memory:' ? ':memory:' : path.resolve(file);
    return SqliteFleetStore.open(target, { busyTimeoutMs: options.busyTimeoutMs });
  }
  if (/^postgres(ql)?:\/\//i.test(url)) {
    return PostgresFleetStore.open(url, { poolSize: options.poolSize });
  }
  throw new RevpatchError(
    'E_INVALID_ARGUMENT',
    `unknown fleet database URL "${redactDbUrl(url)}": use sqlite:PATH, sqlite::memory: or postgres://…`,
  );
}
