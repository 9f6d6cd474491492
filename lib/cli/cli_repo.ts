/**
 * `revpatch repo ...`: the publisher's commands (DESIGN.md, "Command line";
 * docs/repository.md). Errors propagate to lib/cli/cli.ts's main, which prints
 * `error E_CODE: message` and exits 1. The commands that change a
 * repository hold its lock; the global `--wait SECONDS` lets them wait for
 * another publisher instead of failing with E_BUSY.
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import { ROLE_NAMES, type ExpiryPeriods, type RoleName } from '../repo/types';
import { untilStopped } from './stop_signal';

// The publisher (@tufjs/models) and the server load when a repo command
// runs, not with every revpatch command (lib/cli/cli.ts).
/* eslint-disable @typescript-eslint/no-require-imports */
const publisher = () => require('../repo/publisher') as typeof import('../repo/publisher');
const server = () => require('../repo/serve') as typeof import('../repo/serve');
/* eslint-enable @typescript-eslint/no-require-imports */

function duration(value: string): number {
  try {
    return publisher().parseDuration(value);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

function percentage(value: string): number {
  if (!/^\d+(\.\d+)?$/.test(value) || Number(value) > 100) {
    throw new InvalidArgumentError('rollout must be a percentage from 0 to 100');
  }
  return Number(value);
}

function port(value: string): number {
  if (!/^\d+$/.test(value) || Number(value) > 65535) throw new InvalidArgumentError('port must be from 0 to 65535');
  return Number(value);
}

export function registerRepo(program: Command): void {
  const json = (): boolean => Boolean(program.opts<{ json?: boolean }>().json);
  const lockWaitMs = (): number => (program.opts<{ wait?: number }>().wait ?? 0) * 1000;
  const open = (dir: string) => publisher().Repository.open(dir, { lockWaitMs: lockWaitMs() });
  const print = (value: unknown, text: () => string) =>
    process.stdout.write(json() ? `${JSON.stringify(value, null, 2)}\n` : `${text()}\n`);

  const repo = program.command('repo').description('publish patches as a TUF repository (docs/repository.md)');

  const init = repo
    .command('init')
    .description('create a TUF repository in DIR; role keys are generated into DIR/keys/ unless given')
    .argument('<dir>', 'repository directory')
    .requiredOption('--key <key>', 'publisher key (revpatch.key or revpatch.pub): patches must be signed with it');
  for (const role of ROLE_NAMES) {
    init.option(`--${role}-key <key>`, `use this secret key file for the ${role} role`);
    init.option(`--${role}-expiry <duration>`, `${role} metadata lifetime (e.g. 86400, 12h, 30d)`, duration);
  }
  init.action(async (dir: string, opts: Record<string, string | number | undefined>) => {
    const expiry: Partial<ExpiryPeriods> = {};
    const roleKeys: Partial<Record<RoleName, string>> = {};
    for (const role of ROLE_NAMES) {
      const e = opts[`${role}Expiry`];
      if (typeof e === 'number') expiry[role] = e;
      const k = opts[`${role}Key`];
      if (typeof k === 'string') roleKeys[role] = k;
    }
    const created = await publisher().Repository.init(dir, { publisherKey: String(opts.key), expiry, roleKeys, lockWaitMs: lockWaitMs() });
    print({ dir: created.dir, rootVersion: created.rootVersion }, () => `created repository ${created.dir} (root version ${created.rootVersion})`);
  });

  repo
    .command('publish')
    .description('add a signed patch file as a target; refreshes targets, snapshot and timestamp')
    .argument('<dir>', 'repository directory')
    .argument('<file>', 'patch file (signed with the publisher key)')
    .option('--rollout <pct>', 'percentage of devices that take it (default 100)', percentage)
    .action(async (dir: string, file: string, opts: { rollout?: number }) => {
      const r = await open(dir);
      const result = await r.publish(file, { rollout: opts.rollout });
      const p = result.patch;
      print(result, () => `published ${p.target} (${p.length} bytes, rollout ${p.rollout}%), targets v${result.targetsVersion}`);
    });

  repo
    .command('recall')
    .description('mark every published version of patch ID recalled; devices remove it at their next restart')
    .argument('<dir>', 'repository directory')
    .argument('<id>', 'patch id')
    .action(async (dir: string, id: string) => {
      const r = await open(dir);
      const recalled = await r.recall(id);
      print(recalled, () => `recalled ${recalled.map((p) => p.target).join(', ')}`);
    });

  repo
    .command('refresh')
    .description('re-sign snapshot and timestamp with fresh expiry (run before the timestamp expires)')
    .argument('<dir>', 'repository directory')
    .action(async (dir: string) => {
      const r = await open(dir);
      await r.refresh();
      print({ dir: r.dir }, () => `refreshed ${r.dir}`);
    });

  repo
    .command('rotate-key')
    .description('replace the key of a role; the new root is signed by the old and the new root keys')
    .argument('<dir>', 'repository directory')
    .addOption(new Option('--role <role>', 'role whose key is replaced').choices([...ROLE_NAMES]).makeOptionMandatory())
    .option('--key <key>', 'new secret key file (default: generate one into DIR/keys/)')
    .action(async (dir: string, opts: { role: RoleName; key?: string }) => {
      const r = await open(dir);
      const result = await r.rotateKey({ role: opts.role, newKey: opts.key });
      print(result, () => `rotated the ${result.role} key ${result.oldKeyId.slice(0, 16)}… -> ${result.newKeyId.slice(0, 16)}… (root version ${result.rootVersion})`);
    });

  repo
    .command('serve')
    .description('serve DIR over HTTP for development (loopback unless --host)')
    .argument('<dir>', 'repository directory')
    .option('--host <host>', 'address to bind', '127.0.0.1')
    .option('--port <port>', 'port (0: any free one)', port, 8080)
    .action(async (dir: string, opts: { host: string; port: number }) => {
      const running = await server().serveRepository(dir, { host: opts.host, port: opts.port });
      print({ url: running.url }, () => `serving ${dir} at ${running.url} (Ctrl-C stops)`);
      await untilStopped();
      await running.close();
    });
}
