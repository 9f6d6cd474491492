/**
 * `revpatch fleet …` through the real command line: the operator's story
 * on a temporary repository and SQLite file, spawned as bin/revpatch.js on
 * dist/ like any user's shell; and bad input to every command and flag: a
 * usage error exits 2 before anything is opened, a refused request exits 1
 * with its stable code, and neither changes the database or the
 * repository. The long lists of bad input run the same `main(argv)` in
 * this process (a process start per case costs seconds on a busy machine);
 * a few of each kind are also spawned, so the two paths are seen to agree.
 */
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fs, existsSync } from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { addonBuilt, CLI, CliResult, ROOT, runCli, snapshot } from './helpers';
import { repoFixture } from './repo_fixture';
import { Repository } from '../lib/repo/publisher';
import { newReport } from '../lib/report/client';
import { isLoopback, parseListen, parseStages } from '../lib/cli/fleet_args';
import { main } from '../lib/cli/cli';
import { simulationText } from '../lib/cli/cli_fleet';

/** `main(argv)` in this process, its output captured: the CLI without the process start. */
async function inProcess(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  const out: string[] = [];
  const err: string[] = [];
  const saved = { out: process.stdout.write, err: process.stderr.write, env: { ...process.env } };
  process.stdout.write = ((chunk: string | Uint8Array) => out.push(String(chunk)) > 0) as typeof process.stdout.write;
  process.stderr.write = ((chunk: string | Uint8Array) => err.push(String(chunk)) > 0) as typeof process.stderr.write;
  Object.assign(process.env, env);
  try {
    const code = await main(args);
    return { code, stdout: out.join(''), stderr: err.join('') };
  } finally {
    process.stdout.write = saved.out;
    process.stderr.write = saved.err;
    for (const k of Object.keys(env)) {
      if (saved.env[k] === undefined) delete process.env[k];
      else process.env[k] = saved.env[k];
    }
  }
}

const built = addonBuilt() && existsSync(path.join(ROOT, 'dist', 'cli', 'cli_fleet.js'));

const expectError = (t: Test, r: CliResult, code: string) => {
  t.equal(r.code, 1, `exit 1 (${r.stderr.trim()})`);
  t.match(r.stderr, new RegExp(`^error ${code}: .+`, 'm'), `stderr says error ${code}`);
};

const expectUsage = (t: Test, r: CliResult, what: string) => {
  t.equal(r.code, 2, `${what}: exit 2 (${r.stderr.trim().split('\n')[0]})`);
  t.notMatch(r.stderr, /^error E_/m, `${what}: a usage error, not a failure`);
};

/** A repository with fix-1 v1 published at rollout 0, and a database path beside it. */
async function fleetFixture(t: Test) {
  const f = await repoFixture(t);
  await f.repo.publish(f.patch1, { rollout: 0 });
  const dbFile = path.join(f.dir, 'fleet.db');
  const db = `sqlite:${dbFile}`;
  /** Spawned, as a user runs it. */
  const fleet = (...args: string[]) => runCli(['fleet', ...args]);
  /** In this process (see the header). */
  const quick = (...args: string[]) => inProcess(['fleet', ...args]);
  const status = async () => {
    const r = await quick('status', '--db', db, '--json');
    if (r.code !== 0) throw new Error(`fleet status failed: ${r.stderr}`);
    return JSON.parse(r.stdout) as Array<Record<string, any>>;
  };
  const published = async () => (await Repository.open(f.repoDir)).patches().find((p) => p.id === 'fix-1')!;
  return { ...f, dbFile, db, fleet, quick, status, published };
}

t.test('the values fleet flags take are checked at the edge', async (t) => {
  t.same(parseStages('1,5,25,100'), [1, 5, 25, 100]);
  t.same(parseStages('0.5, 2.25,100'), [0.5, 2.25, 100]);
  for (const bad of ['5,1', '0,200', '0,5', '1,1', '1,,5', '', 'a,b', '-1,5', '1,101', '0.001']) {
    t.throws(() => parseStages(bad), { code: 'commander.invalidArgument' }, `stages ${JSON.stringify(bad)}`);
  }
  t.same(parseListen('127.0.0.1:8470'), { host: '127.0.0.1', port: 8470 });
  t.same(parseListen('[::1]:0'), { host: '::1', port: 0 });
  t.same(parseListen(':9000'), { host: '127.0.0.1', port: 9000 });
  t.same(parseListen('fleet.example:443'), { host: 'fleet.example', port: 443 });
  for (const bad of ['127.0.0.1', '127.0.0.1:', 'host:port', '1.2.3.4:70000', '300.1.1.1:80', '[nope]:80', 'a b:80', '::1:80']) {
    t.throws(() => parseListen(bad), { code: 'commander.invalidArgument' }, `listen ${JSON.stringify(bad)}`);
  }
  t.ok(isLoopback('127.0.0.1') && isLoopback('::1') && isLoopback('localhost'));
  t.notOk(isLoopback('0.0.0.0') || isLoopback('10.0.0.1'));
});

if (!built) {
  t.skip('CLI not built (npx tsc -p tsconfig.json)', () => {});
} else {
  t.test('every fleet command has --help and exits 0', async (t) => {
    for (const cmd of ['serve', 'enroll', 'revoke', 'plan', 'status', 'halt', 'resume', 'recall', 'advance', 'simulate']) {
      const r = runCli(['fleet', cmd, '--help']);
      t.equal(r.code, 0, `fleet ${cmd} --help`);
      t.match(r.stdout, /Usage: revpatch fleet/);
    }
  });

  t.test('enroll, plan, status, advance, halt, resume and recall on one rollout', async (t) => {
    const f = await fleetFixture(t);
    const devToken = path.join(f.dir, 'devices.token');
    const opToken = path.join(f.dir, 'operator.token');

    let r = f.fleet('enroll', '--db', f.db, '--out', devToken, '--devices', '20');
    t.equal(r.code, 0, r.stderr);
    t.equal((await fs.stat(devToken)).mode & 0o777, 0o600, 'the token file is 0600');
    t.match(await fs.readFile(devToken, 'utf8'), /^rpd_[A-Za-z0-9_-]{43}\n$/, 'a device token');
    r = f.fleet('enroll', '--db', f.db, '--out', opToken, '--operator', '--json');
    t.equal(r.code, 0, r.stderr);
    t.match(JSON.parse(r.stdout), { kind: 'operator', file: opToken, devices: 0 });
    t.match(await fs.readFile(opToken, 'utf8'), /^rpo_[A-Za-z0-9_-]{43}\n$/, 'an operator token');

    t.same(await f.status(), [], 'no plan yet');
    const elsewhere = path.join(f.dir, 'elsewhere.db');
    expectError(t, await f.quick('status', '--db', `sqlite:${elsewhere}`), 'E_NOT_FOUND');
    expectError(t, await f.quick('halt', 'fix-1', '--repo', f.repoDir, '--db', `sqlite:${elsewhere}`), 'E_NOT_FOUND');
    t.notOk(existsSync(elsewhere), 'status and halt create no database');
    r = f.fleet('plan', 'fix-1', '--repo', f.repoDir, '--db', f.db, '--stages', '1,5,25,100', '--soak', '60', '--min-reports', '5', '--max-failure', '10', '--auto-recall');
    t.equal(r.code, 0, r.stderr);
    let [entry] = await f.status();
    t.match(entry, {
      id: 'fix-1',
      version: 1,
      state: 'rolling',
      stage: 1,
      stages: [1, 5, 25, 100],
      rollout: 1,
      halted: false,
      counts: { staged: 0, confirmed: 0, failed: 0 },
      failureRate: 0,
      plan: { soakSeconds: 60, minReports: 5, maxFailurePct: 10, autoRecall: true },
      enrolledDevices: 20,
      next: { action: 'hold', code: 'soaking' },
    });
    t.equal((await f.published()).rollout, 1, 'the plan publishes its first stage at once');
    expectError(t, await f.quick('plan', 'fix-1', '--repo', f.repoDir, '--db', f.db, '--stages', '10,100'), 'E_EXISTS');

    r = f.fleet('advance', 'fix-1', '--repo', f.repoDir, '--db', f.db);
    t.equal(r.code, 0, r.stderr);
    t.match(r.stdout, /fix-1 v1: advance 1% → 5%/);
    [entry] = await f.status();
    t.match(entry, { state: 'rolling', stage: 2, rollout: 5 });
    t.equal((await f.published()).rollout, 5, 'the repository publishes the second stage');

    r = f.fleet('halt', 'fix-1', '--repo', f.repoDir, '--db', f.db);
    t.equal(r.code, 0, r.stderr);
    [entry] = await f.status();
    t.match(entry, { state: 'halted', halted: true });
    t.equal((await f.published()).halted, true, 'the signed halted flag is set');
    expectError(t, await f.quick('halt', 'fix-1', '--repo', f.repoDir, '--db', f.db), 'E_STATE');

    r = f.fleet('resume', 'fix-1', '--repo', f.repoDir, '--db', f.db);
    t.equal(r.code, 0, r.stderr);
    [entry] = await f.status();
    t.match(entry, { state: 'rolling', halted: false, rollout: 5 });
    t.equal((await f.published()).halted, false, 'the halted flag is lifted');
    expectError(t, await f.quick('resume', 'fix-1', '--repo', f.repoDir, '--db', f.db), 'E_STATE');

    r = f.fleet('recall', 'fix-1', '--repo', f.repoDir, '--db', f.db);
    t.equal(r.code, 0, r.stderr);
    [entry] = await f.status();
    t.equal(entry.state, 'recalled');
    t.equal((await f.published()).recalled, true, 'the repository recalls it');

    const actions = entry.decisions.map((d: { action: string }) => d.action);
    t.same(actions, ['start', 'advance', 'halt', 'resume', 'recall'], 'every operator action is a recorded decision');
    t.ok(entry.decisions.every((d: { by: string; reason: string }) => d.by === 'operator' && d.reason.length > 0));

    r = f.fleet('status', '--db', f.db);
    t.equal(r.code, 0, r.stderr);
    t.match(r.stdout, /fix-1 v1\s+RECALLED/);
    t.match(r.stdout, /halt +5% → 5% +operator +operator-halt/);
    r = await f.quick('status', 'fix-1', '--db', f.db, '--json');
    t.equal(JSON.parse(r.stdout).length, 1);
    expectError(t, await f.quick('status', 'fix-9', '--db', f.db), 'E_UNKNOWN_PATCH');
  });

  t.test('REVPATCH_FLEET_DB names the database when --db is not given', async (t) => {
    const f = await fleetFixture(t);
    const r = runCli(['fleet', 'enroll', '--out', path.join(f.dir, 't')], { REVPATCH_FLEET_DB: f.db });
    t.equal(r.code, 0, r.stderr);
    t.ok(existsSync(f.dbFile), 'the database is the one the variable names');
  });

  t.test('malformed flags are usage errors that open nothing', async (t) => {
    const f = await fleetFixture(t);
    const before = await snapshot(f.repoDir);
    const repo = ['--repo', f.repoDir, '--db', f.db];
    const cases: Array<[string, string[]]> = [
      ['plan without --repo', ['plan', 'fix-1', '--db', f.db, '--stages', '1,100']],
      ['plan --stages 5,1', ['plan', 'fix-1', ...repo, '--stages', '5,1']],
      ['plan --stages 0,200', ['plan', 'fix-1', ...repo, '--stages', '0,200']],
      ['plan --stages 1,1', ['plan', 'fix-1', ...repo, '--stages', '1,1']],
      ['plan --stages ten', ['plan', 'fix-1', ...repo, '--stages', 'ten']],
      ['plan --soak -5', ['plan', 'fix-1', ...repo, '--stages', '1,100', '--soak', '-5']],
      ['plan --soak 1h', ['plan', 'fix-1', ...repo, '--stages', '1,100', '--soak', '1h']],
      ['plan --min-reports 0', ['plan', 'fix-1', ...repo, '--stages', '1,100', '--min-reports', '0']],
      ['plan --min-reports 2.5', ['plan', 'fix-1', ...repo, '--stages', '1,100', '--min-reports', '2.5']],
      ['plan --max-failure 150', ['plan', 'fix-1', ...repo, '--stages', '1,100', '--max-failure', '150']],
      ['plan --max-failure 100', ['plan', 'fix-1', ...repo, '--stages', '1,100', '--max-failure', '100']],
      ['plan --stages with 21 stages', ['plan', 'fix-1', ...repo, '--stages', Array.from({ length: 21 }, (_, i) => i + 1).join(',')]],
      ['plan --max-failure x', ['plan', 'fix-1', ...repo, '--stages', '1,100', '--max-failure', 'x']],
      ['plan with a malformed id', ['plan', '../fix-1', ...repo, '--stages', '1,100']],
      ['plan without an id', ['plan', ...repo, '--stages', '1,100']],
      ['halt without --repo', ['halt', 'fix-1', '--db', f.db]],
      ['resume without --repo', ['resume', 'fix-1', '--db', f.db]],
      ['recall without --repo', ['recall', 'fix-1', '--db', f.db]],
      ['advance without --repo', ['advance', 'fix-1', '--db', f.db]],
      ['halt with a malformed id', ['halt', 'fix 1', ...repo]],
      ['serve without --repo', ['serve', '--db', f.db]],
      ['serve --listen without a port', ['serve', ...repo, '--listen', '127.0.0.1']],
      ['serve --listen with a port too large', ['serve', ...repo, '--listen', '127.0.0.1:70000']],
      ['serve --listen with a bad host', ['serve', ...repo, '--listen', 'not a host:80']],
      ['serve --tick 0', ['serve', ...repo, '--tick', '0']],
      ['serve --tick soon', ['serve', ...repo, '--tick', 'soon']],
      ['serve --tick 0.01', ['serve', ...repo, '--tick', '0.01']],
      ['serve --allow-host with a path', ['serve', ...repo, '--allow-host', 'fleet.example/x']],
      ['serve --allow-host with a port too large', ['serve', ...repo, '--allow-host', 'fleet.example:99999']],
      ['enroll without --out', ['enroll', '--db', f.db]],
      ['enroll --devices 0', ['enroll', '--db', f.db, '--out', path.join(f.dir, 'x.token'), '--devices', '0']],
      ['enroll --devices many', ['enroll', '--db', f.db, '--out', path.join(f.dir, 'x.token'), '--devices', 'many']],
      ['enroll --operator with --devices', ['enroll', '--db', f.db, '--out', path.join(f.dir, 'x.token'), '--operator', '--devices', '3']],
      ['status with an unknown flag', ['status', '--db', f.db, '--verbose']],
      ['revoke with neither --token-file nor --token-hash', ['revoke', '--db', f.db]],
      ['revoke with both', ['revoke', '--db', f.db, '--token-file', path.join(f.dir, 'x.token'), '--token-hash', 'a'.repeat(64)]],
      ['revoke --token-hash too short', ['revoke', '--db', f.db, '--token-hash', 'a'.repeat(63)]],
      ['revoke --token-hash not hex', ['revoke', '--db', f.db, '--token-hash', 'g'.repeat(64)]],
      ['revoke --token-hash given a token', ['revoke', '--db', f.db, '--token-hash', `rpd_${'a'.repeat(43)}`]],
      ['revoke --token-file without a value', ['revoke', '--db', f.db, '--token-file']],
      ['simulate --devices 0', ['simulate', '--devices', '0']],
      ['simulate --fail 101', ['simulate', '--fail', '101']],
      ['simulate --noise -1', ['simulate', '--noise', '-1']],
      ['simulate --seed with nothing', ['simulate', '--seed', '']],
      ['simulate --rule bogus', ['simulate', '--rule', 'bogus']],
      ['simulate --stages 50,10', ['simulate', '--stages', '50,10']],
    ];
    for (const [what, args] of cases) expectUsage(t, await f.quick(...args), what);
    // The same through a process of its own.
    expectUsage(t, f.fleet('plan', 'fix-1', ...repo, '--stages', '5,1'), 'spawned plan --stages 5,1');
    expectUsage(t, f.fleet('serve', ...repo, '--listen', 'nowhere'), 'spawned serve --listen nowhere');
    const spawned = f.fleet('revoke', '--db', f.db);
    expectUsage(t, spawned, 'spawned revoke with no token');
    t.match(spawned.stderr, /--token-file FILE or --token-hash HEX/, 'the usage error says what is missing');
    t.notOk(existsSync(f.dbFile), 'no database was created');
    t.notOk(existsSync(path.join(f.dir, 'x.token')), 'no token file was written');
    t.same(await snapshot(f.repoDir), before, 'the repository is unchanged');
  });

  t.test('refused requests exit 1 with their code and change nothing', async (t) => {
    const f = await fleetFixture(t);
    const opToken = path.join(f.dir, 'operator.token');
    t.equal(f.fleet('enroll', '--db', f.db, '--out', opToken, '--operator').code, 0);
    t.equal(f.fleet('plan', 'fix-1', '--repo', f.repoDir, '--db', f.db, '--stages', '10,100').code, 0);
    const repoBefore = await snapshot(f.repoDir);
    // What the store holds (the rule's view of the stage moves with the clock).
    const stored = async () => (await f.status()).map(({ current, next, ...rest }) => rest);
    const statusBefore = await stored();
    const tokenBefore = await fs.readFile(opToken, 'utf8');
    const dbBefore = await fs.readFile(f.dbFile);

    expectError(t, f.fleet('plan', 'fix-9', '--repo', f.repoDir, '--db', f.db, '--stages', '1,100'), 'E_UNKNOWN_PATCH');
    expectError(t, await f.quick('plan', 'fix-1', '--repo', f.repoDir, '--db', f.db, '--stages', '1,100', '--version', '7'), 'E_UNKNOWN_PATCH');
    for (const action of ['halt', 'resume', 'recall', 'advance']) {
      expectError(t, await f.quick(action, 'fix-9', '--repo', f.repoDir, '--db', f.db), 'E_UNKNOWN_PATCH');
    }
    expectError(t, await f.quick('resume', 'fix-1', '--repo', f.repoDir, '--db', f.db), 'E_STATE');
    expectError(t, await f.quick('halt', 'fix-1', '--repo', path.join(f.dir, 'no-repo'), '--db', f.db), 'E_NOT_FOUND');
    expectError(t, await f.quick('enroll', '--db', f.db, '--out', opToken), 'E_EXISTS');
    t.equal(await fs.readFile(opToken, 'utf8'), tokenBefore, 'the existing token file is untouched');

    t.same(await stored(), statusBefore, 'the rollout is unchanged');
    t.same(await snapshot(f.repoDir), repoBefore, 'the repository is unchanged');
    t.ok((await fs.readFile(f.dbFile)).equals(dbBefore), 'the database file is unchanged');
  });

  t.test('enroll prints the hash, never the token, and revoke retires a token once', async (t) => {
    const f = await fleetFixture(t);
    const devFile = path.join(f.dir, 'devices.token');
    const opFile = path.join(f.dir, 'operator.token');
    let r = f.fleet('enroll', '--db', f.db, '--out', devFile, '--devices', '20');
    t.equal(r.code, 0, r.stderr);
    const devToken = (await fs.readFile(devFile, 'utf8')).trim();
    const devHash = createHash('sha256').update(devToken).digest('hex');
    t.match(r.stdout, new RegExp(`token hash ${devHash}\\b`), 'the text names the token by its hash');
    t.notOk(r.stdout.includes(devToken) || r.stderr.includes(devToken), 'the token itself is not printed');
    r = await f.quick('enroll', '--db', f.db, '--out', opFile, '--operator', '--json');
    t.equal(r.code, 0, r.stderr);
    const opToken = (await fs.readFile(opFile, 'utf8')).trim();
    const opHash = createHash('sha256').update(opToken).digest('hex');
    t.same(JSON.parse(r.stdout), { file: opFile, kind: 'operator', devices: 0, hash: opHash }, 'enroll --json');
    t.notOk(r.stdout.includes(opToken), 'nor in JSON');
    t.equal((await f.status()).length, 0);

    // Refused: nothing changes.
    const dbBefore = await fs.readFile(f.dbFile);
    expectError(t, await f.quick('revoke', '--db', f.db, '--token-hash', 'b'.repeat(64)), 'E_NOT_FOUND');
    expectError(t, f.fleet('revoke', '--db', f.db, '--token-hash', 'B'.repeat(64)), 'E_NOT_FOUND');
    expectError(t, await f.quick('revoke', '--db', f.db, '--token-file', path.join(f.dir, 'missing.token')), 'E_NOT_FOUND');
    await fs.writeFile(path.join(f.dir, 'not.token'), 'not a token\n');
    expectError(t, await f.quick('revoke', '--db', f.db, '--token-file', path.join(f.dir, 'not.token')), 'E_KEY');
    expectError(t, await f.quick('revoke', '--db', `sqlite:${path.join(f.dir, 'elsewhere.db')}`, '--token-hash', devHash), 'E_NOT_FOUND');
    t.notOk(existsSync(path.join(f.dir, 'elsewhere.db')), 'revoke creates no database');
    t.ok((await fs.readFile(f.dbFile)).equals(dbBefore), 'the database file is unchanged');

    // By file: the text says what it revoked and what is left enrolled.
    r = f.fleet('revoke', '--db', f.db, '--token-file', devFile);
    t.equal(r.code, 0, r.stderr);
    t.match(r.stdout, new RegExp(`revoked enrollment token ${devHash} \\(20 devices\\).*enrolled devices now 0`));
    expectError(t, await f.quick('revoke', '--db', f.db, '--token-file', devFile), 'E_STATE');
    expectError(t, await f.quick('revoke', '--db', f.db, '--token-hash', devHash.toUpperCase()), 'E_STATE');

    // By hash, as enroll printed it.
    r = await f.quick('revoke', '--db', f.db, '--token-hash', opHash, '--json');
    t.equal(r.code, 0, r.stderr);
    t.same(JSON.parse(r.stdout), { hash: opHash, kind: 'operator', devices: 0, revoked: true, enrolledDevices: 0 });
    const again = f.fleet('revoke', '--db', f.db, '--token-hash', opHash);
    expectError(t, again, 'E_STATE');
    t.match(again.stderr, /already revoked/);
  });

  t.test('a database inside the repository directory is refused before it is created', async (t) => {
    const f = await fleetFixture(t);
    const before = await snapshot(f.repoDir);
    const inside = `sqlite:${path.join(f.repoDir, 'fleet.db')}`;
    const nested = `sqlite:${path.join(f.repoDir, 'metadata', 'x', 'fleet.db')}`;
    for (const db of [inside, nested]) {
      expectError(t, await f.quick('serve', '--repo', f.repoDir, '--db', db, '--listen', '127.0.0.1:0'), 'E_INVALID_ARGUMENT');
      expectError(t, await f.quick('plan', 'fix-1', '--repo', f.repoDir, '--db', db, '--stages', '1,100'), 'E_INVALID_ARGUMENT');
      expectError(t, await f.quick('halt', 'fix-1', '--repo', f.repoDir, '--db', db), 'E_INVALID_ARGUMENT');
    }
    // The default database, relative to a working directory that is the repository.
    const r = await new Promise<CliResult>((resolve) => {
      const child = spawn(process.execPath, [CLI, 'fleet', 'plan', 'fix-1', '--repo', '.', '--stages', '1,100'], {
        cwd: f.repoDir,
        env: { ...process.env, REVPATCH_FLEET_DB: '' },
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => (stdout += d));
      child.stderr.on('data', (d) => (stderr += d));
      child.on('exit', (code) => resolve({ code, stdout, stderr }));
    });
    expectError(t, r, 'E_INVALID_ARGUMENT');
    t.same(await snapshot(f.repoDir), before, 'no database file appeared in the repository');
  });

  t.test('an unknown database scheme is refused', async (t) => {
    const f = await fleetFixture(t);
    expectError(t, await f.quick('status', '--db', 'mysql://localhost/fleet'), 'E_INVALID_ARGUMENT');
    expectError(t, await f.quick('plan', 'fix-1', '--repo', f.repoDir, '--db', 'fleet.db', '--stages', '1,100'), 'E_INVALID_ARGUMENT');
    expectError(t, await f.quick('enroll', '--db', 'sqlite:', '--out', path.join(f.dir, 'x.token')), 'E_INVALID_ARGUMENT');
    expectError(t, await f.quick('serve', '--repo', f.repoDir, '--db', 'redis://localhost', '--listen', '127.0.0.1:0'), 'E_INVALID_ARGUMENT');
    t.notOk(existsSync(path.join(f.dir, 'x.token')), 'no token file is left behind');
  });

  t.test('simulate runs a small fleet against the real service and reports in JSON', async (t) => {
    const r = runCli(['fleet', 'simulate', '--devices', '2000', '--fail', '100', '--noise', '0', '--stages', '5,100', '--min-reports', '10', '--json']);
    t.equal(r.code, 0, r.stderr);
    t.equal(r.stderr, '', 'no progress line in a pipe');
    const result = JSON.parse(r.stdout);
    t.match(result, { devices: 2000, failPct: 100, halted: true, finalRollout: 5, stagesReached: [5] });
    t.ok(result.installed > 0 && result.installed < 2000 * 0.2, `a patch failing everywhere stops in its first stage (${result.installed} installed)`);
    t.ok(result.hurt > 0 && result.hurt <= result.installed, `hurt ${result.hurt} of ${result.installed}`);
    t.ok(result.reportsIngested > 0, 'reports went through the collector');
    t.ok(result.decisions.some((d: { action: string; code: string }) => d.action === 'halt' && d.code === 'failure-rate-above-threshold'));
    t.equal(result.stalled, false);
    t.notMatch(simulationText(result), /\(stalled\)|hint:/, 'a halted run gives no stall hint');
  });

  t.test('simulate says when the fleet is too small for the plan and what would move it', async (t) => {
    // 5% of 100 devices can never give the 50 verdicts a stage needs.
    const r = runCli(['fleet', 'simulate', '--devices', '100', '--noise', '0', '--stages', '5,100', '--min-reports', '50', '--soak', '60']);
    t.equal(r.code, 0, r.stderr);
    t.match(r.stdout, /outcome: ROLLING at 5% \(stalled\)/);
    const hints = r.stdout.split('\n').filter((line) => line.includes('hint:'));
    t.equal(hints.length, 1, 'one hint line');
    t.match(hints[0], /the 5% stage of 100 devices cannot give the 50 verdicts it needs; use a larger first stage \(--stages\) or a lower --min-reports/);
  });

  t.test('serve takes reports, answers operators, and stops cleanly on SIGTERM', async (t) => {
    const f = await fleetFixture(t);
    const devFile = path.join(f.dir, 'devices.token');
    const opFile = path.join(f.dir, 'operator.token');
    t.equal((await f.quick('enroll', '--db', f.db, '--out', devFile, '--devices', '10')).code, 0);
    t.equal((await f.quick('enroll', '--db', f.db, '--out', opFile, '--operator')).code, 0);
    t.equal((await f.quick('plan', 'fix-1', '--repo', f.repoDir, '--db', f.db, '--stages', '10,100')).code, 0);
    const devToken = (await fs.readFile(devFile, 'utf8')).trim();
    const opToken = (await fs.readFile(opFile, 'utf8')).trim();

    const child = spawn(process.execPath, [CLI, 'fleet', 'serve', '--repo', f.repoDir, '--db', f.db, '--listen', '127.0.0.1:0', '--tick', '0.2', '--json'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const exit = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    t.teardown(() => {
      if (child.exitCode === null) child.kill('SIGKILL');
    });
    const info = await new Promise<{ url: string }>((resolve, reject) => {
      let out = '';
      child.stdout.on('data', (d) => {
        out += d;
        try {
          resolve(JSON.parse(out));
        } catch {
          // not all of it yet
        }
      });
      child.on('exit', (code) => reject(new Error(`serve exited ${code}: ${stderr}`)));
    });
    t.match(info.url, /^http:\/\/127\.0\.0\.1:\d+$/, 'loopback');
    const request = (method: string, route: string, token: string | null, body?: unknown) =>
      new Promise<{ status: number; json: any }>((resolve, reject) => {
        const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
        const req = http.request(
          `${info.url}${route}`,
          {
            method,
            headers: {
              ...(token ? { Authorization: `Bearer ${token}` } : {}),
              ...(data ? { 'Content-Type': 'application/json', 'Content-Length': data.length } : {}),
            },
          },
          (res) => {
            const chunks: Buffer[] = [];
            res.on('data', (c) => chunks.push(c));
            res.on('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(Buffer.concat(chunks).toString() || 'null') }));
          },
        );
        req.on('error', reject);
        req.end(data);
      });

    t.equal((await request('GET', '/v1/health', null)).status, 200, 'GET /v1/health');
    const report = newReport({ patch: 'fix-1', version: 1, outcome: 'staged', pseudonym: 'a'.repeat(64) });
    const ack = await request('POST', '/v1/reports', devToken, { format: 1, reports: [report] });
    t.same(ack, { status: 200, json: { accepted: 1, duplicates: 0 } }, 'a device token posts a report');
    const listed = await request('GET', '/v1/patches', opToken);
    t.equal(listed.status, 200);
    t.match(listed.json.patches, [{ id: 'fix-1', version: 1, state: 'rolling', rollout: 10, counts: { staged: 1 } }], 'the operator API lists fleet status entries');
    t.match(await request('GET', '/v1/patches', devToken), { status: 403, json: { error: { code: 'E_FORBIDDEN' } } }, 'a device token cannot read');
    t.match(await request('POST', '/v1/patches/fix-1/halt', devToken), { status: 403, json: { error: { code: 'E_FORBIDDEN' } } }, 'nor halt');
    const halted = await request('POST', '/v1/patches/fix-1/halt', opToken);
    t.match(halted, { status: 200, json: { published: true, decision: { action: 'halt', by: 'operator' } } }, 'an operator halts');
    t.equal((await f.published()).halted, true, 'the repository carries the halt');

    // Revoked while the service runs: the next request of either token is refused and stores nothing.
    t.equal((await f.quick('revoke', '--db', f.db, '--token-file', devFile)).code, 0, 'revoke the device token');
    const late = newReport({ patch: 'fix-1', version: 1, outcome: 'rolled-back', pseudonym: 'b'.repeat(64) });
    t.match(await request('POST', '/v1/reports', devToken, { format: 1, reports: [late] }), { status: 401, json: { error: { code: 'E_AUTH' } } }, 'a revoked device token gets 401 E_AUTH');
    t.match(await request('POST', '/v1/reports', devToken, { format: 1, reports: [report] }), { status: 401, json: { error: { code: 'E_AUTH' } } }, 'even for a retried batch');
    const opHash = createHash('sha256').update(opToken).digest('hex');
    t.equal((await f.quick('revoke', '--db', f.db, '--token-hash', opHash)).code, 0, 'revoke the operator token');
    t.match(await request('GET', '/v1/patches', opToken), { status: 401, json: { error: { code: 'E_AUTH' } } }, 'a revoked operator token gets 401 E_AUTH');

    child.kill('SIGTERM');
    t.equal(await exit, 0, 'exit 0 after SIGTERM');
    t.notMatch(stderr, /\berror\b/, 'the service logged no error');
    const [entry] = await f.status();
    t.match(entry, { state: 'halted', counts: { staged: 1, failed: 0 } }, 'what the service stored is there after it stopped, and only that');
    t.equal(entry.enrolledDevices, null, 'the revoked devices no longer count (none enrolled)');
  });

  t.test('serve reports a port already taken with a code', async (t) => {
    const f = await fleetFixture(t);
    const blocker = http.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    t.teardown(() => new Promise<void>((resolve) => blocker.close(() => resolve())));
    const port = (blocker.address() as { port: number }).port;
    const r = await f.quick('serve', '--repo', f.repoDir, '--db', f.db, '--listen', `127.0.0.1:${port}`);
    t.equal(r.code, 1, r.stderr);
    t.match(r.stderr, /^error E_BUSY: .*in use/m);
  });
}
