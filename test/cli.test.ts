import t, { type Test } from 'tap';
import { promises as fs, existsSync } from 'node:fs';
import * as path from 'node:path';
import { addonBuilt, BLOCK, CliResult, ROOT, runCli, stampedImage, tempDir } from './helpers';

const built = addonBuilt() && existsSync(path.join(ROOT, 'dist', 'cli', 'cli.js'));

const expectError = (t: Tap, r: CliResult, code: string, exit = 1) => {
  t.equal(r.code, exit, `exit ${exit}`);
  t.match(r.stderr, new RegExp(`^error ${code}: .+`, 'm'), `stderr says error ${code}`);
};
type Tap = Test;

if (!built) {
  t.skip('CLI not built (npm run build)', () => {});
} else {
  t.test('every command has --help and exits 0', async (t) => {
    for (const cmd of ['keygen', 'create', 'inspect', 'init', 'install', 'boot', 'confirm', 'remove', 'list', 'status', 'export']) {
      const r = runCli([cmd, '--help']);
      t.equal(r.code, 0, `${cmd} --help`);
      t.match(r.stdout, /Usage: revpatch/);
    }
    t.equal(runCli(['--help']).code, 0);
  });

  t.test('usage errors exit 2', async (t) => {
    t.equal(runCli(['frobnicate']).code, 2, 'unknown command');
    t.equal(runCli(['create', '--from', 'a']).code, 2, 'missing required options');
    t.equal(runCli(['list', '--bogus']).code, 2, 'unknown option');
    t.equal(runCli(['init', '--volume', 'a', '--trust', 'b', '--max-boot-attempts', 'many']).code, 2, 'bad number');
  });

  t.test('the whole device story through the CLI', async (t) => {
    const dir = await tempDir(t);
    const state = path.join(dir, 'state');
    const base = stampedImage(128, 'base');
    const next = Buffer.from(base);
    stampedImage(3, 'fix').copy(next, 7 * BLOCK);
    await fs.writeFile(path.join(dir, 'base.img'), base);
    await fs.writeFile(path.join(dir, 'next.img'), next);
    const cli = (...args: string[]) => runCli(['--state', state, ...args]);

    let r = runCli(['keygen', '--out', path.join(dir, 'keys')]);
    t.equal(r.code, 0, r.stderr);
    t.equal((await fs.stat(path.join(dir, 'keys', 'revpatch.key'))).mode & 0o777, 0o600, 'secret key is 0600');
    const key = path.join(dir, 'keys', 'revpatch.key');
    const pub = path.join(dir, 'keys', 'revpatch.pub');
    expectError(t, runCli(['keygen', '--out', path.join(dir, 'keys')]), 'E_EXISTS');

    const patch = path.join(dir, 'fix.rvp');
    r = runCli(['create', '--from', path.join(dir, 'base.img'), '--to', path.join(dir, 'next.img'), '--key', key,
      '--id', 'fix-1', '--out', patch, '--title', 'Fix one', '--version', '3']);
    t.equal(r.code, 0, r.stderr);
    t.equal(r.stderr, '', 'no progress bar in a pipe');

    r = runCli(['inspect', patch, '--trust', pub, '--json']);
    t.equal(r.code, 0, r.stderr);
    const info = JSON.parse(r.stdout);
    t.equal(info.signature, 'valid');
    t.equal(info.manifest.id, 'fix-1');
    t.equal(info.manifest.version, 3);
    r = runCli(['inspect', patch]);
    t.equal(r.code, 0);
    t.match(r.stdout, /signature: unchecked/);

    expectError(t, cli('list'), 'E_NOT_INITIALIZED');
    r = cli('init', '--volume', path.join(dir, 'base.img'), '--trust', pub);
    t.equal(r.code, 0, r.stderr);
    r = cli('list', '--json');
    t.same(JSON.parse(r.stdout), []);

    r = cli('install', patch);
    t.equal(r.code, 0, r.stderr);
    r = cli('list', '--json');
    const listed = JSON.parse(r.stdout);
    t.equal(listed.length, 1);
    t.match(listed[0], { id: 'fix-1', state: 'staged', version: 3, parent: null });

    t.equal(cli('boot').code, 0);
    t.match(JSON.parse(cli('list', '--json').stdout)[0], { state: 'trial' });
    t.equal(cli('confirm').code, 0);
    t.match(JSON.parse(cli('--json', 'list').stdout)[0], { state: 'active' });

    const status = JSON.parse(cli('status', '--json').stdout);
    t.equal(status.restartRequired, false);
    t.not(status.bootedDigest, status.baseDigest);

    const out = path.join(dir, 'out.img');
    r = cli('export', '--out', out);
    t.equal(r.code, 0, r.stderr);
    t.ok((await fs.readFile(out)).equals(next), 'export equals the target');

    expectError(t, cli('remove', 'no-such-patch'), 'E_UNKNOWN_PATCH');
    t.equal(cli('remove', 'fix-1').code, 0);
    t.match(JSON.parse(cli('list', '--json').stdout)[0], { state: 'pending-removal' });
    t.equal(JSON.parse(cli('status', '--json').stdout).restartRequired, true);
    t.equal(cli('boot').code, 0);
    t.equal(cli('export', '--out', out).code, 0);
    t.ok((await fs.readFile(out)).equals(base), 'export equals the base after remove + restart');

    expectError(t, cli('install', path.join(dir, 'missing.rvp')), 'E_NOT_FOUND');
    await fs.writeFile(path.join(dir, 'junk.rvp'), 'not a patch at all, not even close to one');
    expectError(t, cli('install', path.join(dir, 'junk.rvp')), 'E_FORMAT');
  });

  t.test('REVPATCH_STATE selects the state directory', async (t) => {
    const dir = await tempDir(t);
    const r = runCli(['list'], { REVPATCH_STATE: path.join(dir, 'elsewhere') });
    expectError(t, r, 'E_NOT_INITIALIZED');
    t.match(r.stderr, /elsewhere/);
  });
}
