'use strict';
/**
 * One collector process of the fleet ingest benchmark
 * (bench/fleet_ingest.js): the real FleetServer over the real store, as
 * `revpatch fleet serve` runs them, without the controller (the benchmark
 * measures ingest). Started as
 *
 *   node bench/fleet_collector.js DB_URL PORT
 *
 * it prints one JSON line `{ "port": N }` once it listens on 127.0.0.1 and
 * closes the server and the store on SIGTERM. SIGKILL is the durability
 * test's business.
 */
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..');
const { openStore } = require(path.join(ROOT, 'dist', 'fleet', 'store.js'));
const { FleetServer } = require(path.join(ROOT, 'dist', 'fleet', 'server.js'));

async function main() {
  const [url, portArg] = process.argv.slice(2);
  const store = await openStore(url);
  const server = await FleetServer.start({ store, host: '127.0.0.1', port: Number(portArg || 0) });
  let closing = false;
  process.on('SIGTERM', async () => {
    if (closing) return;
    closing = true;
    await server.close();
    await store.close();
    process.exit(0);
  });
  process.stdout.write(`${JSON.stringify({ port: server.port })}\n`);
}

main().catch((err) => {
  process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
