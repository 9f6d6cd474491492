'use strict';
/**
 * A throwaway PostgreSQL server for the fleet ingest benchmark: the Debian
 * package's initdb and pg_ctl, a cluster in a temporary directory, listening
 * on 127.0.0.1 and a socket in that directory only, with PostgreSQL's
 * durable defaults (fsync on, synchronous_commit on). Run as an unprivileged
 * user: as root, the cluster belongs to `nobody` and every command runs
 * through `runuser -u nobody`.
 *
 * startPostgres() → { url, dir, pid(), stop() }; throws with what is missing
 * when the binaries are not there.
 */
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const net = require('node:net');
const { execFileSync } = require('node:child_process');

const PG_BINS = ['/usr/lib/postgresql/15/bin', '/usr/lib/postgresql/16/bin', '/usr/lib/postgresql/17/bin'];

function pgBin() {
  for (const dir of PG_BINS) if (fs.existsSync(path.join(dir, 'pg_ctl'))) return dir;
  return null;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function startPostgres() {
  const bin = pgBin();
  if (!bin) throw new Error(`PostgreSQL not found in ${PG_BINS.join(', ')} (Debian: apt-get install postgresql)`);
  const asRoot = process.getuid && process.getuid() === 0;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'revpatch-bench-pg-'));
  const data = path.join(dir, 'data');
  fs.chmodSync(dir, 0o755);
  if (asRoot) execFileSync('chown', ['nobody:nogroup', dir]);
  const run = (cmd, args) =>
    execFileSync(asRoot ? 'runuser' : path.join(bin, cmd), asRoot ? ['-u', 'nobody', '--', path.join(bin, cmd), ...args] : args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      encoding: 'utf8',
      cwd: dir,
    });
  run('initdb', ['-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-locale']);
  const port = await freePort();
  const options = `-c listen_addresses=127.0.0.1 -p ${port} -k ${dir} -c max_connections=200`;
  run('pg_ctl', ['-D', data, '-o', options, '-l', path.join(dir, 'log'), '-w', '-t', '60', 'start']);
  let stopped = false;
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    dir,
    /** The postmaster's pid (its backends are its children). */
    pid() {
      return Number(fs.readFileSync(path.join(data, 'postmaster.pid'), 'utf8').split('\n')[0]);
    },
    stop() {
      if (stopped) return;
      stopped = true;
      try {
        run('pg_ctl', ['-D', data, '-m', 'fast', '-w', 'stop']);
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}

module.exports = { startPostgres, pgBin };
