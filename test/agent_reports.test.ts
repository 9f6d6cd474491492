import t from 'tap';
import * as crypto from 'node:crypto';
import { promises as fs, existsSync } from 'node:fs';
import * as path from 'node:path';
import { RevpatchError } from '../lib/engine/errors';
import { AGENT_DIR, AGENT_STATE_FILE, type Agent, type AgentOptions } from '../lib/agent/agent';
import { configureReporting, CONFIG_FILE, REPORT_DIR } from '../lib/report/config';
import type { DeviceReport } from '../lib/report/format';
import { Reporter } from '../lib/report/reporter';
import { newReport } from '../lib/report/client';
import { MIN_QUEUE_BYTES, QUEUE_FILE, readQueueStats, ReportQueue } from '../lib/report/queue';
import { writeKeyPair } from '../lib/patch/keys';
import { addonBuilt, runCli, runCliAsync, stampedImage, tempDir } from './helpers';
import { makeWorld, type World } from './agent_fixture';
import { startCollector, type CollectorStub } from './report_collector_stub';

const TOKEN = `rpd_${crypto.randomBytes(32).toString('base64url')}`;

async function writeToken(dir: string): Promise<string> {
  const file = path.join(dir, 'device.token');
  await fs.writeFile(file, `${TOKEN}\n`);
  return file;
}

/** A world whose device reports to a stand-in collector. */
async function reportingWorld(t: Parameters<typeof makeWorld>[0], options: Parameters<typeof makeWorld>[1] = {}) {
  const w = await makeWorld(t, options);
  const collector = await startCollector(t);
  await configureReporting(w.state, { url: collector.url, tokenFile: await writeToken(w.dir) });
  return { w, collector };
}

/** Sends what the agent queued and returns every report the collector stored, in order. */
async function sent(agent: Agent, collector: CollectorStub): Promise<DeviceReport[]> {
  const result = await agent.flushReports({ timeoutMs: 10_000 });
  if (!result || result.remaining > 0) throw new Error(`reports left unsent: ${JSON.stringify(result)}`);
  return [...collector.stored.values()];
}

const summary = (reports: DeviceReport[]) => reports.map((r) => [r.patch, r.outcome, r.code, r.bootAttempts]);

async function agentDeviceId(w: World): Promise<string> {
  const state = JSON.parse(await fs.readFile(path.join(w.state, AGENT_DIR, AGENT_STATE_FILE), 'utf8')) as { deviceId: string };
  return state.deviceId;
}

function assertAnonymous(t: { notOk(value: unknown, message: string): unknown }, reports: DeviceReport[], ids: string[]) {
  const text = JSON.stringify(reports);
  for (const id of ids) t.notOk(text.includes(id), `no report names the device (${id})`);
}

if (!addonBuilt()) {
  t.skip('native addon not built (npm run build)', () => {});
} else {
  t.test('a patch that is confirmed after the restart is reported staged, trial, confirmed, under one pseudonym per patch', async (t) => {
    const { w, collector } = await reportingWorld(t);
    const agent = await w.agent({ hooks: { healthCheck: () => true } });
    t.same((await agent.checkOnce()).staged, ['fix-1', 'fix-2']);
    await (await w.device()).boot();
    t.same((await agent.startup()).activated, ['fix-1', 'fix-2']);
    const reports = await sent(agent, collector);
    t.same(summary(reports), [
      ['fix-1', 'staged', null, 0],
      ['fix-2', 'staged', null, 0],
      ['fix-1', 'trial', null, 0],
      ['fix-2', 'trial', null, 0],
      ['fix-1', 'confirmed', null, 0],
      ['fix-2', 'confirmed', null, 0],
    ]);
    const byPatch = (id: string) => new Set(reports.filter((r) => r.patch === id).map((r) => r.pseudonym));
    t.equal(byPatch('fix-1').size, 1, 'one pseudonym per patch');
    t.not([...byPatch('fix-1')][0], [...byPatch('fix-2')][0], 'another patch, another pseudonym');
    t.ok(reports.every((r) => r.version === 1 && /^[0-9a-f]{32}$/.test(r.id)));
    assertAnonymous(t, reports, ['test-device', await agentDeviceId(w)]);
    t.equal((await agent.flushReports())?.sent, 0, 'nothing is sent twice');
  });

  t.test('the agent reports under its own random rollout id too, without sending it', async (t) => {
    const { w, collector } = await reportingWorld(t, { publish: ['fix-1'] });
    const agent = await w.agent({ deviceId: undefined });
    await agent.checkOnce();
    const reports = await sent(agent, collector);
    t.same(summary(reports), [['fix-1', 'staged', null, 0]]);
    const id = await agent.deviceId();
    t.equal(id, await agentDeviceId(w));
    assertAnonymous(t, reports, [id]);
  });

  t.test('a patch that fails its health check until it is rolled back is reported rolled-back with health-check-failed', async (t) => {
    const { w, collector } = await reportingWorld(t, { publish: ['fix-1'], maxBootAttempts: 2 });
    const agent = await w.agent({ hooks: { healthCheck: () => false } });
    await agent.checkOnce();
    await (await w.device()).boot();
    t.equal((await agent.startup()).healthy, false);
    await (await w.device()).boot();
    t.equal((await agent.startup()).healthy, false);
    await (await w.device()).boot();
    t.same((await agent.startup()).rolledBack, ['fix-1']);
    t.same(summary(await sent(agent, collector)), [
      ['fix-1', 'staged', null, 0],
      ['fix-1', 'trial', null, 0],
      ['fix-1', 'rolled-back', 'health-check-failed', 2],
    ]);
  });

  t.test('a patch whose boots never reach the health check is reported rolled-back with boot-loop', async (t) => {
    const { w, collector } = await reportingWorld(t, { publish: ['fix-1'] });
    const agent = await w.agent();
    await agent.checkOnce();
    const device = await w.device();
    await device.boot();
    // Boots that end before the agent's startup: the health check is never reached.
    for (let i = 0; i < 20 && (await w.device()).list()[0].state === 'trial'; i++) await (await w.device()).boot();
    t.equal((await w.device()).list()[0].state, 'failed');
    t.same((await agent.startup()).rolledBack, ['fix-1']);
    t.same(summary(await sent(agent, collector)), [
      ['fix-1', 'staged', null, 0],
      ['fix-1', 'rolled-back', 'boot-loop', 0],
    ]);
  });

  t.test('a patch stacked on one that is rolled back takes its code', async (t) => {
    const { w, collector } = await reportingWorld(t);
    const agent = await w.agent();
    await agent.checkOnce();
    for (let i = 0; i < 20 && (await w.device()).list()[0].state !== 'failed'; i++) await (await w.device()).boot();
    t.same((await agent.startup()).rolledBack.sort(), ['fix-1', 'fix-2']);
    const rolledBack = (await sent(agent, collector)).filter((r) => r.outcome === 'rolled-back');
    t.same(rolledBack.map((r) => [r.patch, r.code]).sort(), [
      ['fix-1', 'boot-loop'],
      ['fix-2', 'boot-loop'],
    ]);
  });

  t.test('a refused install is reported with its code', async (t) => {
    const { w, collector } = await reportingWorld(t, { publish: ['fix-1'] });
    const agent = await w.agent({
      installer: async () => {
        throw new RevpatchError('E_SIGNATURE', 'tampered');
      },
    });
    t.same((await agent.checkOnce()).refused.map((r) => r.code), ['E_SIGNATURE']);
    t.same(summary(await sent(agent, collector)), [['fix-1', 'refused', 'E_SIGNATURE', 0]]);
  });

  t.test('a patch the user removes is reported removed once, with code user', async (t) => {
    const { w, collector } = await reportingWorld(t, { publish: ['fix-1'] });
    const agent = await w.agent();
    await agent.checkOnce();
    await (await w.device()).boot();
    await agent.startup();
    await (await w.device()).remove('fix-1'); // what `revpatch remove fix-1` does
    await agent.checkOnce();
    await (await w.device()).boot();
    await agent.startup();
    t.equal((await w.device()).list()[0].state, 'removed');
    t.same(summary(await sent(agent, collector)), [
      ['fix-1', 'staged', null, 0],
      ['fix-1', 'trial', null, 0],
      ['fix-1', 'confirmed', null, 0],
      ['fix-1', 'removed', 'user', 0],
    ]);
  });

  t.test('a recalled patch is reported recalled once, with code recall', async (t) => {
    const { w, collector } = await reportingWorld(t, { publish: ['fix-1'] });
    const agent = await w.agent();
    await agent.checkOnce();
    await (await w.device()).boot();
    await agent.startup();
    await w.repo.recall('fix-1');
    t.same((await agent.checkOnce()).recalled, ['fix-1']);
    await (await w.device()).boot();
    await agent.startup();
    await agent.checkOnce();
    t.same(summary(await sent(agent, collector)), [
      ['fix-1', 'staged', null, 0],
      ['fix-1', 'trial', null, 0],
      ['fix-1', 'confirmed', null, 0],
      ['fix-1', 'recalled', 'recall', 0],
    ]);
  });

  t.test('with a collector that is down, the agent finishes its work and the reports wait in the queue', async (t) => {
    const w = await makeWorld(t, { publish: ['fix-1'] });
    const collector = await startCollector(t);
    const url = collector.url;
    await collector.close();
    await configureReporting(w.state, { url, tokenFile: await writeToken(w.dir) });
    const agent = await w.agent();
    t.same((await agent.checkOnce()).staged, ['fix-1']);
    await (await w.device()).boot();
    t.same((await agent.startup()).activated, ['fix-1']);
    // Long enough for the first refused connection even on a loaded machine
    // (with 50 ms the deadline could come first, and the answer was E_ABORTED).
    const flushed = await agent.flushReports({ timeoutMs: 2000 });
    t.equal(flushed?.remaining, 3);
    t.equal(flushed?.error, 'E_NETWORK');
    await agent.close();
    const reporter = await Reporter.open(w.state);
    t.teardown(() => reporter?.close());
    t.same(
      reporter?.queue.peek(10).map((e) => e.report.outcome),
      ['staged', 'trial', 'confirmed'],
      'the reports are on disk for the next run',
    );
  });

  t.test('with a collector that never answers, the agent finishes its transitions while a send hangs', async (t) => {
    const { w, collector } = await reportingWorld(t, { publish: ['fix-1'] });
    collector.answer = () => 'hang';
    const reporter = await Reporter.open(w.state, { timeoutMs: 600_000 });
    t.ok(reporter);
    t.teardown(() => reporter!.close());
    reporter!.start();
    const agent = await w.agent({ reporter, hooks: { healthCheck: () => true } });
    t.same((await agent.checkOnce()).staged, ['fix-1']);
    await collector.received(1);
    await (await w.device()).boot();
    t.same((await agent.startup()).activated, ['fix-1'], 'the restart is confirmed while the first send still hangs');
    t.same((await agent.checkOnce()).staged, []);
    t.equal(collector.requests.length, 1, 'still the one hanging request');
    t.equal(reporter!.stats().queued, 3, 'everything waits in the queue');
    await reporter!.stop();
  });

  t.test('a device that does not report gets no report directory', async (t) => {
    const w = await makeWorld(t, { publish: ['fix-1'] });
    const agent = await w.agent();
    await agent.checkOnce();
    t.notOk(existsSync(path.join(w.state, REPORT_DIR)));
    t.equal(await agent.flushReports(), null);
  });

  t.test('a damaged report setup disables reporting, never the agent', async (t) => {
    const w = await makeWorld(t, { publish: ['fix-1'] });
    await fs.mkdir(path.join(w.state, REPORT_DIR));
    await fs.writeFile(path.join(w.state, REPORT_DIR, CONFIG_FILE), 'not json');
    const agent = await w.agent();
    t.same((await agent.checkOnce()).staged, ['fix-1']);
    t.equal(await agent.flushReports(), null);
  });

  t.test('an explicit null reporter turns reporting off', async (t) => {
    const { w, collector } = await reportingWorld(t, { publish: ['fix-1'] });
    const agent = await w.agent({ reporter: null } as Partial<AgentOptions>);
    await agent.checkOnce();
    t.equal(await agent.flushReports(), null);
    t.equal(collector.requests.length, 0);
  });

  t.test('revpatch init --report', async (t) => {
    async function inputs(t: Parameters<typeof tempDir>[0]) {
      const dir = await tempDir(t, 'revpatch-init-report-');
      const volume = path.join(dir, 'base.img');
      await fs.writeFile(volume, stampedImage(16));
      const keys = await writeKeyPair(path.join(dir, 'keys'));
      return { dir, volume, pub: keys.publicKeyPath, token: await writeToken(dir), state: path.join(dir, 'state') };
    }

    t.test('sets up a device that reports, with its config 0600', async (t) => {
      const i = await inputs(t);
      const r = runCli(['--state', i.state, 'init', '--volume', i.volume, '--trust', i.pub, '--report', 'http://127.0.0.1:9/', '--report-token', i.token]);
      t.equal(r.code, 0, r.stderr);
      t.match(r.stdout, /reports to http:\/\/127\.0\.0\.1:9/);
      const file = path.join(i.state, REPORT_DIR, CONFIG_FILE);
      t.same(JSON.parse(await fs.readFile(file, 'utf8')), { format: 1, url: 'http://127.0.0.1:9', token: TOKEN });
      t.equal((await fs.stat(file)).mode & 0o777, 0o600);
    });

    t.test('status shows the report queue while an agent holds it, and changes nothing', async (t) => {
      const i = await inputs(t);
      t.equal(runCli(['--state', i.state, 'init', '--volume', i.volume, '--trust', i.pub, '--report', 'http://127.0.0.1:9/', '--report-token', i.token]).code, 0);
      const status = () => {
        const r = runCli(['--state', i.state, 'status', '--json']);
        if (r.code !== 0) throw new Error(`status failed: ${r.stderr}`);
        return JSON.parse(r.stdout).reports;
      };
      t.same(status(), { url: 'http://127.0.0.1:9', queued: 0, queuedBytes: 0, dropped: 0, rejected: 0 }, 'a fresh queue');

      // The queue open, as a running agent holds it: status must not need its lock.
      const dir = path.join(i.state, REPORT_DIR);
      const report = () => newReport({ patch: 'fix-1', version: 1, outcome: 'staged', pseudonym: 'a'.repeat(64) });
      let queue = await ReportQueue.open(dir);
      t.teardown(() => queue.close());
      for (let n = 0; n < 3; n++) queue.append(report());
      await queue.remove([queue.peek(1)[0].seq], { rejected: true });
      queue.append(report());
      await queue.sync();
      const file = path.join(dir, QUEUE_FILE);
      const before = await fs.readFile(file);
      t.same(status(), { url: 'http://127.0.0.1:9', queued: 3, queuedBytes: queue.bytes, dropped: 0, rejected: 1 }, 'queued and rejected, the agent still running');
      const text = runCli(['--state', i.state, 'status']);
      t.equal(text.code, 0, text.stderr);
      t.match(text.stdout, new RegExp(`^reports +to http://127\\.0\\.0\\.1:9: 3 queued \\(${queue.bytes} bytes\\), 0 dropped, 1 rejected$`, 'm'));
      t.ok((await fs.readFile(file)).equals(before), 'the queue file is untouched');
      queue.append(report());
      t.equal(queue.length, 4, 'the owner keeps its queue');
      await queue.close();

      // Drops the owner made in memory, before a compaction wrote them down, are counted as a reopen would.
      queue = await ReportQueue.open(dir, { maxBytes: MIN_QUEUE_BYTES });
      while (queue.dropped === 0) queue.append(report());
      t.ok(queue.fileBytes <= 1.5 * MIN_QUEUE_BYTES, 'not yet compacted (the precondition of this check)');
      t.same(await readQueueStats(dir, { maxBytes: MIN_QUEUE_BYTES }), { queued: queue.length, queuedBytes: queue.bytes, dropped: queue.dropped, rejected: 1 });
      await queue.compact();
      t.match(status(), { queued: queue.length, dropped: queue.dropped, rejected: 1 }, 'once compacted, status agrees with the default bound too');
      await queue.close();
    });

    t.test('status says when the device does not report', async (t) => {
      const i = await inputs(t);
      t.equal(runCli(['--state', i.state, 'init', '--volume', i.volume, '--trust', i.pub]).code, 0);
      const r = runCli(['--state', i.state, 'status', '--json']);
      t.equal(r.code, 0, r.stderr);
      t.equal(JSON.parse(r.stdout).reports, null);
      t.match(runCli(['--state', i.state, 'status']).stdout, /^reports +not configured$/m);
      t.same(await readQueueStats(path.join(i.state, REPORT_DIR)), { queued: 0, queuedBytes: 0, dropped: 0, rejected: 0 }, 'no queue file reads as empty');
    });

    t.test('bad input exits non-zero with a code and leaves no state', async (t) => {
      const i = await inputs(t);
      const base = ['--state', i.state, 'init', '--volume', i.volume, '--trust', i.pub];
      const cases: Array<[string, string[], number, RegExp]> = [
        ['a URL that is not http(s)', ['--report', 'ftp://fleet.example', '--report-token', i.token], 1, /^error E_INVALID_ARGUMENT: /m],
        ['no URL at all', ['--report', 'fleet', '--report-token', i.token], 1, /^error E_INVALID_ARGUMENT: /m],
        ['a missing token file', ['--report', 'http://127.0.0.1:9', '--report-token', path.join(i.dir, 'nope')], 1, /^error E_NOT_FOUND: /m],
        ['a token file that is not a token', ['--report', 'http://127.0.0.1:9', '--report-token', i.volume], 1, /^error E_KEY: /m],
        ['--report alone', ['--report', 'http://127.0.0.1:9'], 2, /--report and --report-token go together/],
        ['--report-token alone', ['--report-token', i.token], 2, /--report and --report-token go together/],
      ];
      for (const [name, extra, code, stderr] of cases) {
        const r = runCli([...base, ...extra]);
        t.equal(r.code, code, `${name}: exit ${code}`);
        t.match(r.stderr, stderr, `${name}: says why`);
        t.notOk(existsSync(i.state), `${name}: no state`);
      }
    });
  });

  t.test('revpatch agent --once sends its reports, and exits 0 when the collector is down', async (t) => {
    const w = await makeWorld(t, { publish: ['fix-1'] });
    const collector = await startCollector(t);
    const token = await writeToken(w.dir);
    const volume = path.join(w.dir, 'cli-base.img');
    await fs.writeFile(volume, w.bytes.base);
    const root = path.join(w.repoDir, 'metadata', '1.root.json');
    const init = (state: string, url: string) =>
      runCli(['--state', state, 'init', '--volume', volume, '--trust', w.pub, '--repo', w.server.url, '--root', root, '--block-size', '4096', '--report', url, '--report-token', token]);

    const up = path.join(w.dir, 'state-up');
    t.equal(init(up, collector.url).code, 0);
    const r = await runCliAsync(['--state', up, 'agent', '--once']);
    t.equal(r.code, 0, r.stderr);
    t.same([...collector.stored.values()].map((x) => [x.patch, x.outcome]), [['fix-1', 'staged']]);

    const down = path.join(w.dir, 'state-down');
    const closed = await startCollector(t);
    const url = closed.url;
    await closed.close();
    t.equal(init(down, url).code, 0);
    const r2 = await runCliAsync(['--state', down, 'agent', '--once']);
    t.equal(r2.code, 0, r2.stderr);
    t.match(r2.stdout, /staged fix-1/);
    const reporter = await Reporter.open(down);
    t.teardown(() => reporter?.close());
    t.equal(reporter?.queue.length, 1, 'the report waits for the next run');
  });
}
