/**
 * The fleet loop end to end, with real parts only (issue 13, part 5): 20
 * real devices (state directories over one base image, the real Agent and
 * RepositoryClient, each reporting to the fleet service), the repository
 * served by nginx, and `revpatch fleet serve` as its own process running
 * the collector and the rollout controller on a 1 s tick.
 *
 * The story: a patch is published at rollout 0 and planned in stages
 * 25, 50, 100 %. It breaks the host's health check on 8 of the 20 devices.
 * The devices that the first stage reaches take it; the broken ones roll it
 * back after their restarts and report it; the controller halts the
 * rollout and, with --auto-recall, recalls it; after their next check and
 * restart every device runs the base image again. A fixed version 2 under
 * a new id then rolls out by itself to 100 % and every device confirms it.
 *
 * Around the story, what must not work does not: a report under a forged
 * token is refused and not counted, a device token cannot act as an
 * operator, a recalled rollout cannot be resumed, and the collector's
 * database holds no device id. Version 2 has a new patch id because a
 * device never takes again a patch id it once held.
 *
 * The test plays the hosts: for each device a check, then every restart
 * the agent asks for (boot, then startup with the health check). It waits
 * for the controller by polling `fleet status --json` against deadlines,
 * never by sleeping a guessed time, and asserts no timing.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { writeKeyPair } from '../lib/patch/keys';
import { createPatch, type CreateResult } from '../lib/publisher/create';
import { rolloutBucket } from '../lib/agent/policy';
import { Repository } from '../lib/repo/publisher';
import { newReport } from '../lib/report/client';
import { BLOCK, stampedImage, tempDir } from './helpers';
import { startRepositoryNginx } from './fixtures/nginx';
import { fleetCli, jsonRequest, startFleetService, type CliRun } from './fixtures/fleet_service';
import { FleetDevice, inParallel, stateDirOf, type CycleResult } from './fleet_devices';

const DEVICES = 20;
const BLOCKS = 128;
/** Devices whose health check the bad patch breaks: 8 of 20. */
const BROKEN = new Set([0, 3, 5, 8, 10, 13, 15, 18]);
const BAD_ID = 'sec-2026-005';
const FIXED_ID = 'sec-2026-006';
const STAGES = [25, 50, 100];
const MIN_REPORTS = 3;
const MAX_FAILURE_PCT = 10;
/** Devices checking and restarting at once. */
const CONCURRENCY = 4;
/** Rollout states after which the controller decides nothing more. */
const FINAL = ['complete', 'recalled'];
const deviceName = (i: number) => `fleet-device-${String(i).padStart(2, '0')}`;

interface StatusEntry {
  id: string;
  version: number;
  state: string;
  stage: number;
  rollout: number;
  halted: boolean;
  counts: Record<string, number>;
  failureRate: number;
  decisions: Array<{
    action: string;
    code: string;
    reason: string;
    by: string;
    fromRollout: number;
    toRollout: number;
    appliedAt: string | null;
    inputs: null | {
      counts: Record<string, number>;
      stageCounts: Record<string, number>;
      failureRate: number;
      wilsonLower: number;
      wilsonUpper: number;
    };
  }>;
}

function mustSucceed(run: CliRun, what: string): string {
  if (run.code !== 0) throw new Error(`${what} exited ${run.code}: ${run.stderr.trim()}`);
  return run.stdout;
}

/** Polls `probe` until it returns a value, or fails with what it saw last. */
async function until<T>(what: string, timeoutMs: number, probe: () => Promise<T | null>, describe: () => string = () => ''): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== null) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} ${describe()}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

// CI installs nginx-light; only a machine without nginx at all skips.
const nginxMissing = spawnSync('nginx', ['-v']).error ? 'nginx is not installed (apt-get install -y nginx-light): the fleet end-to-end test needs it' : false;

t.test('a patch that breaks 8 of 20 devices is halted and recalled in its first stage, every device returns to the base, and a fixed version 2 reaches 100 %', { skip: nginxMissing }, async (t) => {
  const dir = await tempDir(t, 'revpatch-fleet-e2e-');
  // Where the time goes, for whoever reads the output; never asserted.
  const started = Date.now();
  const phase = (name: string) => t.comment(`${name} at ${((Date.now() - started) / 1000).toFixed(1)} s`);

  // ------------------------------------------------ images, keys, patches
  const baseBytes = stampedImage(BLOCKS, 'base');
  const badBytes = Buffer.from(baseBytes);
  stampedImage(4, 'bad fix', BLOCK).copy(badBytes, 10 * BLOCK);
  const fixedBytes = Buffer.from(baseBytes);
  stampedImage(4, 'good fix', BLOCK).copy(fixedBytes, 10 * BLOCK);
  const base = path.join(dir, 'base.img');
  await fs.writeFile(base, baseBytes);
  await fs.writeFile(path.join(dir, 'bad.img'), badBytes);
  await fs.writeFile(path.join(dir, 'fixed.img'), fixedBytes);
  const keys = await writeKeyPair(path.join(dir, 'keys'));
  const make = (id: string, to: string, version: number): Promise<CreateResult> =>
    createPatch({ from: base, to: path.join(dir, to), keyPath: keys.secretKeyPath, id, version, out: path.join(dir, `${id}-v${version}.rvp`), blockSize: BLOCK });
  const bad = await make(BAD_ID, 'bad.img', 1);
  const fixed = await make(FIXED_ID, 'fixed.img', 2);

  // The fixture's premise, checked rather than assumed (the rollout buckets
  // are a hash of device and patch id): the bad patch's first stage reaches
  // at least three devices it breaks — enough failures to halt with
  // confidence — and fewer healthy ones than a stage needs to advance, so
  // the controller cannot move on before the failures are in, however the
  // reports interleave. Each stage of the fixed patch adds enough devices
  // to be judged.
  const band = (id: string, from: number, to: number) =>
    Array.from({ length: DEVICES }, (_, i) => i).filter((i) => {
      const bucket = rolloutBucket(deviceName(i), id);
      return bucket >= from * 100 && bucket < to * 100;
    });
  const badFirst = band(BAD_ID, 0, STAGES[0]);
  t.ok(badFirst.filter((i) => BROKEN.has(i)).length >= 3, `the bad patch's first stage reaches ${badFirst.length} devices, ${badFirst.filter((i) => BROKEN.has(i)).length} of them broken by it`);
  t.ok(badFirst.filter((i) => !BROKEN.has(i)).length < MIN_REPORTS, 'and fewer healthy ones than a stage needs to advance');
  for (const [k, to] of STAGES.entries()) {
    const from = k === 0 ? 0 : STAGES[k - 1];
    t.ok(band(FIXED_ID, from, to).length >= MIN_REPORTS, `the fixed patch's stage ${from}-${to} % adds ${band(FIXED_ID, from, to).length} devices`);
  }

  // ----------------------------------------- repository, nginx, the service
  const repoDir = path.join(dir, 'repo');
  await Repository.init(repoDir, { publisherKey: keys.publicKeyPath });
  const nginx = await startRepositoryNginx(t, repoDir);
  if (typeof nginx === 'string') throw new Error(nginx);
  const keyLeak = await jsonRequest(`${nginx.url}/keys/targets.key`);
  t.equal(keyLeak.status, 404, 'nginx serves no role key');

  const db = `sqlite:${path.join(dir, 'fleet.db')}`;
  const deviceTokenFile = path.join(dir, 'device.token');
  const operatorTokenFile = path.join(dir, 'operator.token');
  mustSucceed(await fleetCli(['fleet', 'enroll', '--db', db, '--out', deviceTokenFile, '--devices', String(DEVICES)]), 'fleet enroll');
  mustSucceed(await fleetCli(['fleet', 'enroll', '--db', db, '--out', operatorTokenFile, '--operator']), 'fleet enroll --operator');
  const deviceToken = (await fs.readFile(deviceTokenFile, 'utf8')).trim();
  const operatorToken = (await fs.readFile(operatorTokenFile, 'utf8')).trim();
  const service = await startFleetService(t, { repo: repoDir, db, tickSeconds: 1 });
  t.teardown(() => {
    if (t.passing()) return;
    t.comment(`fleet serve said:\n${service.output()}`);
  });

  /** `fleet status ID --json`: the newest plan of the patch id. */
  const statusOf = async (id: string): Promise<StatusEntry | null> => {
    const entries = JSON.parse(mustSucceed(await fleetCli(['fleet', 'status', id, '--db', db, '--json']), 'fleet status')) as StatusEntry[];
    return entries.filter((s) => s.id === id).sort((a, b) => b.version - a.version)[0] ?? null;
  };

  // --------------------------------------------------------------- devices
  const rootPath = path.join(repoDir, 'metadata', '1.root.json');
  const devices = await inParallel(
    Array.from({ length: DEVICES }, (_, i) => i),
    CONCURRENCY,
    async (i) => {
      const id = deviceName(i);
      const device = await FleetDevice.create({
        id,
        stateDir: stateDirOf(dir, id),
        base,
        trust: keys.publicKeyPath,
        blockSize: BLOCK,
        repoUrl: nginx.url,
        rootPath,
        maxBootAttempts: 2,
        report: { url: service.url, tokenFile: deviceTokenFile },
      });
      if (BROKEN.has(i)) device.breaksOn.add(bad.manifest.target.digest);
      return device;
    },
  );
  t.teardown(() => Promise.all(devices.map((d) => d.close())));
  const baseDigest = (await (await devices[0].open()).status()).baseDigest;
  for (const d of devices) t.equal(await d.bootedDigest(), baseDigest, `${d.id} starts on the base`);

  // Bad input to the collector changes nothing: a well-formed failure
  // report under a token the service never minted is refused, and the
  // exact counts asserted below show it was not counted.
  const forgedToken = deviceToken.slice(0, -1) + (deviceToken.endsWith('A') ? 'B' : 'A');
  const forgedReport = newReport({ patch: BAD_ID, version: 1, outcome: 'rolled-back', code: 'health-check-failed', pseudonym: 'f'.repeat(64) });
  const forged = await jsonRequest(`${service.url}/v1/reports`, { method: 'POST', token: forgedToken, body: { format: 1, reports: [forgedReport] } });
  t.equal(forged.status, 401, 'a batch with a token the service never minted is refused');
  t.match(forged.body, { error: { code: 'E_AUTH' } }, 'with the stable code');
  const deviceAsOperator = await jsonRequest(`${service.url}/v1/patches/${BAD_ID}/resume`, { method: 'POST', token: deviceToken, body: {} });
  t.equal(deviceAsOperator.status, 403, 'a device token cannot act as an operator');

  /** Every device: a check, then the restarts it asks for; then every queued report sent. */
  const round = async () => {
    const results = await inParallel(devices, CONCURRENCY, (d) => d.cycle());
    await inParallel(devices, CONCURRENCY, (d) => d.flushReports());
    return results;
  };
  let last: StatusEntry | null = null;
  const settled = (s: StatusEntry | null) => (s && s.decisions.every((d) => d.appliedAt !== null) ? s : null);
  const moves = (s: StatusEntry) => s.decisions.filter((d) => d.action !== 'hold').length;
  /**
   * Rounds of every device until `done`: before each round, the plan with
   * every decision published; after it, the controller's next move (a
   * decision other than hold), or `done` already. Rounds and waits are
   * bounded, so a controller that never moves fails the test with the
   * status it showed last.
   */
  const drive = async (
    id: string,
    done: (status: StatusEntry, results: CycleResult[]) => boolean | Promise<boolean>,
  ): Promise<StatusEntry> => {
    let results: CycleResult[] = [];
    for (let r = 0; r < 10; r++) {
      const before = await until(`the plan of ${id} with its decisions published`, 60_000, async () => settled((last = await statusOf(id))), () => JSON.stringify(last));
      if (await done(before, results)) return before;
      if (before.rollout === 0 && moves(before) === 0) {
        // Not started yet: the controller's first tick publishes the first stage.
        await until(`the controller to start ${id}`, 60_000, async () => {
          const s = settled((last = await statusOf(id)));
          return s && moves(s) > 0 ? s : null;
        }, () => JSON.stringify(last));
        continue;
      }
      results = await round();
      // A rollout that ended (complete, recalled) makes no more moves; the
      // devices that had not checked since its last one do so next round.
      await until(`the controller's next move on ${id}`, 60_000, async () => {
        const s = settled((last = await statusOf(id)));
        return s && (moves(s) > moves(before) || FINAL.includes(s.state)) ? s : null;
      }, () => JSON.stringify(last));
    }
    throw new Error(`${id} did not get where the test expected within 10 rounds: ${JSON.stringify(last)}`);
  };
  const holders = new Set<string>();

  phase('20 devices set up');
  // ------------------------------------------- the bad patch and its halt
  mustSucceed(await fleetCli(['repo', 'publish', repoDir, bad.path, '--rollout', '0', '--wait', '30']), 'repo publish');
  mustSucceed(
    await fleetCli([
      'fleet', 'plan', BAD_ID, '--repo', repoDir, '--db', db,
      '--stages', STAGES.join(','), '--soak', '0', '--min-reports', String(MIN_REPORTS),
      '--max-failure', String(MAX_FAILURE_PCT), '--auto-recall',
    ]),
    'fleet plan',
  );
  const halted = await drive(BAD_ID, (status, results) => {
    for (const [i, result] of results.entries()) {
      if (result.check.staged.includes(BAD_ID)) holders.add(devices[i].id);
    }
    return status.state === 'recalled';
  });

  t.equal(halted.state, 'recalled', 'the controller halted and, with --auto-recall, recalled the bad patch');
  t.ok(halted.halted, 'the halt flag is published');
  // With --auto-recall the halt and the recall are one decision: recorded
  // with its numbers, then published as halted and recalled together.
  const halt = halted.decisions.find((d) => d.action === 'halt' || d.action === 'recall');
  t.ok(halt, 'the halt is a recorded decision');
  if (halt) {
    t.equal(halt.by, 'controller', 'made by the controller, not an operator');
    t.equal(halt.code, 'failure-rate-above-threshold', 'for the failure rate');
    t.ok(halt.reason.length > 0, `with its reason: ${halt.reason}`);
    t.ok(halt.appliedAt, 'and published');
    t.ok(halt.inputs, 'and the numbers it was made from');
    if (halt.inputs) {
      t.ok(halt.inputs.stageCounts.failed >= 3, `failures of the stage counted (${halt.inputs.stageCounts.failed} of ${halt.inputs.stageCounts.confirmed + halt.inputs.stageCounts.failed})`);
      t.ok(halt.inputs.failureRate > MAX_FAILURE_PCT / 100, `failure rate ${halt.inputs.failureRate} above ${MAX_FAILURE_PCT} %`);
      t.ok(halt.inputs.wilsonLower > MAX_FAILURE_PCT / 100, `with confidence: Wilson lower bound ${halt.inputs.wilsonLower}`);
      t.ok(halt.inputs.wilsonLower <= halt.inputs.failureRate && halt.inputs.failureRate <= halt.inputs.wilsonUpper, 'the interval holds the rate');
    }
  }
  t.ok(halted.decisions.some((d) => d.action === 'recall' && d.by === 'controller'), 'the recall is a decision of the controller');

  // Only the first stage took it; the broken ones rolled it back.
  const highestRollout = Math.max(...halted.decisions.map((d) => Math.max(d.fromRollout, d.toRollout)));
  t.equal(highestRollout, STAGES[0], 'the halt came in the first stage: no decision ever published a wider rollout');
  for (const [i, d] of devices.entries()) {
    if (holders.has(d.id)) t.ok(badFirst.includes(i), `${d.id}, which took it, is in the first stage`);
  }
  const heldBroken = devices.filter((d, i) => holders.has(d.id) && BROKEN.has(i));
  const heldHealthy = devices.filter((d, i) => holders.has(d.id) && !BROKEN.has(i));
  t.ok(heldBroken.length >= 3, `${heldBroken.length} broken devices took it and rolled it back`);

  phase('bad patch halted and recalled');
  // -------------------------- every device's next check and restart: base
  await round();
  for (const [i, d] of devices.entries()) {
    const record = (await d.patches()).filter((p) => p.id === BAD_ID);
    t.equal(await d.bootedDigest(), baseDigest, `${d.id} runs the base image again`);
    if (!holders.has(d.id)) {
      t.same(record, [], `${d.id} never took the halted patch`);
    } else if (BROKEN.has(i)) {
      t.same(record.map((p) => p.state), ['failed'], `${d.id} rolled it back`);
    } else {
      t.same(record.map((p) => [p.state, p.reason]), [['removed', 'recalled']], `${d.id} removed it on the recall`);
    }
  }
  const afterRecall = (await statusOf(BAD_ID))!;
  t.same(
    { staged: afterRecall.counts.staged, trial: afterRecall.counts.trial, confirmed: afterRecall.counts.confirmed, failed: afterRecall.counts.failed, recalled: afterRecall.counts.recalled },
    { staged: holders.size, trial: holders.size, confirmed: heldHealthy.length, failed: heldBroken.length, recalled: heldHealthy.length },
    'the collector counted each device once per outcome of the bad patch',
  );
  const servedBad = (await nginx.served()).filter((p) => p.endsWith(`${BAD_ID}-v1.rvp`));
  t.equal(servedBad.length, holders.size, 'every device that took it downloaded it from nginx, once');

  phase('every device back on the base');
  // ------------------------------------------- the fixed version 2, to 100 %
  mustSucceed(await fleetCli(['repo', 'publish', repoDir, fixed.path, '--rollout', '0', '--wait', '30']), 'repo publish v2');
  mustSucceed(
    await fleetCli([
      'fleet', 'plan', FIXED_ID, '--repo', repoDir, '--db', db, '--version', '2',
      '--stages', STAGES.join(','), '--soak', '0', '--min-reports', String(MIN_REPORTS),
      '--max-failure', String(MAX_FAILURE_PCT), '--auto-recall',
    ]),
    'fleet plan v2',
  );
  const everyoneOnFixed = async () => {
    for (const d of devices) {
      if (!(await d.patches()).some((p) => p.id === FIXED_ID && p.state === 'active')) return false;
    }
    return true;
  };
  const complete = await drive(FIXED_ID, async (status) => status.state === 'complete' && (await everyoneOnFixed()));

  phase('fixed version 2 complete on every device');
  t.equal(complete.rollout, 100, 'the fixed version 2 is published at 100 %');
  t.notOk(complete.halted, 'and never halted');
  t.same(
    { confirmed: complete.counts.confirmed, failed: complete.counts.failed },
    { confirmed: DEVICES, failed: 0 },
    'every device confirmed version 2 after its restart, none failed',
  );
  t.same(
    complete.decisions.filter((d) => d.action !== 'hold').map((d) => [d.action, d.toRollout]),
    [['start', STAGES[0]], ['advance', STAGES[1]], ['advance', STAGES[2]], ['complete', STAGES[2]]],
    'it went through every stage, one decision each, and completed',
  );
  t.same(
    { staged: complete.counts.staged, trial: complete.counts.trial },
    { staged: DEVICES, trial: DEVICES },
    'every device reported staging it and booting it',
  );
  for (const d of devices) {
    t.equal(await d.bootedDigest(), fixed.manifest.target.digest, `${d.id} runs version 2's view`);
    const record = (await d.patches()).filter((p) => p.id === FIXED_ID);
    t.same(record.map((p) => [p.state, p.version]), [['active', 2]], `${d.id} holds version 2, active`);
  }
  const operatorView = await jsonRequest(`${service.url}/v1/patches/${BAD_ID}`, { token: operatorToken });
  t.equal(operatorView.status, 200, 'the operator API shows the bad patch to an operator token');
  t.match(operatorView.body, { patches: [{ id: BAD_ID, version: 1, state: 'recalled', halted: true }] }, 'halted and recalled');
  t.equal((await jsonRequest(`${service.url}/v1/patches/${BAD_ID}`, { token: deviceToken })).status, 403, 'and not to a device token');
  // Recall is final: not even an operator resumes it.
  const resume = await fleetCli(['fleet', 'resume', BAD_ID, '--repo', repoDir, '--db', db]);
  t.equal(resume.code, 1, 'a recalled rollout cannot be resumed');
  t.match(resume.stderr, /^error E_STATE: /m, 'with a stable code');
  // Nothing the collector stored names a device: reports carry a pseudonym per patch.
  const stored = Buffer.concat(
    await Promise.all(['fleet.db', 'fleet.db-wal'].map((name) => fs.readFile(path.join(dir, name)).catch(() => Buffer.alloc(0)))),
  );
  t.not(stored.indexOf(BAD_ID), -1, 'the database files hold the reports in plain text (the patch id is there)');
  t.equal(stored.indexOf('fleet-device-'), -1, 'and no device id anywhere');
  const badAtEnd = (await statusOf(BAD_ID))!;
  t.equal(badAtEnd.state, 'recalled', 'the bad patch stays recalled');
  t.same(badAtEnd.counts, afterRecall.counts, 'and its counts did not move');
});
