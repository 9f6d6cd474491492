/**
 * `revpatch serve-view [--socket PATH | --port N]` (DESIGN.md, "Command
 * line"; docs/serve-view.md): the booted view as a read-only NBD export, in
 * the foreground. Once nbdkit accepts connections it prints one line,
 * `serving <uri>` (with --json: {"uri","socket","port","digest","pid"}),
 * then serves until SIGTERM or SIGINT, when it stops nbdkit, removes the
 * serve lease and exits 0. If nbdkit dies on its own the command fails
 * (exit 1). While it runs, `revpatch boot` refuses with E_BUSY.
 */
import * as path from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { RevpatchError } from '../engine/errors';
import { startViewServer } from '../device/serve_view';

interface GlobalOptions {
  state?: string;
  json?: boolean;
}

function port(value: string): number {
  if (!/^\d+$/.test(value)) throw new InvalidArgumentError('--port must be a whole number');
  const n = Number(value);
  if (n < 1 || n > 65535) throw new InvalidArgumentError('--port must be from 1 to 65535');
  return n;
}

export function registerServeView(program: Command): void {
  program
    .command('serve-view')
    .description('serve the booted view as a read-only NBD export (nbdkit) until SIGTERM/SIGINT')
    .addOption(new Option('--socket <path>', 'Unix socket to listen on (default <state>/view.sock)').conflicts('port'))
    .addOption(new Option('--port <n>', 'TCP port on 127.0.0.1 instead of a socket').argParser(port).conflicts('socket'))
    .option('--nbdkit <path>', 'the nbdkit binary (default: nbdkit on PATH)')
    .action(async (opts: { socket?: string; port?: number; nbdkit?: string }) => {
      const globals = program.opts<GlobalOptions>();
      const stateDir = path.resolve(globals.state ?? process.env.REVPATCH_STATE ?? './revpatch-state');
      const server = await startViewServer(stateDir, { socket: opts.socket, port: opts.port, nbdkit: opts.nbdkit });
      let stopping = false;
      const stop = () => {
        stopping = true;
        void server.close();
      };
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
      try {
        process.stdout.write(
          globals.json
            ? `${JSON.stringify({ uri: server.uri, socket: server.socket, port: server.port, digest: server.digest, pid: server.pid })}\n`
            : `serving ${server.uri}\n`,
        );
        await server.exited;
      } finally {
        process.removeListener('SIGTERM', stop);
        process.removeListener('SIGINT', stop);
      }
      if (!stopping) throw new RevpatchError('E_IO', `nbdkit (pid ${server.pid}) stopped serving on its own`);
    });
}
