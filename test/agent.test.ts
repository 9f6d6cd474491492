import t from 'tap';
import * as crypto from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as net from 'node:net';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { installWhileDownloading, type AgentEvents, type RestartAnswer } from '../lib/agent/agent';
import { AuditTrail } from '../lib/agent/log';
import { parseTimeRange } from '../lib/agent/policy';
import { serveRepository } from '../lib/repo/serve';
import { addonBuilt, BLOCK, ROOT, tempDir } from './helpers';
import { BLOCKS, exported, makeWorld, startNginx } from './agent_fixture';
import { runWalkthrough } from '../lib/cli/walkthrough';

/** Collects every event an agent emits, by name. */
function record(agent: import('../lib/agent/agent').Agent) {
  const seen: { [K in keyof AgentEvents]?: AgentEvents[K][0][] } = {};
  for (const name of ['progress', 'staged', 'restart-required', 'activated', 'rolled-back', 'recalled', 'error'] as const) {
    (agent as unknown as { on(n: string, f: (v: unknown) => void): void }).on(name, (value) => {
      ((seen[name] ??= []) as unknown[]).push(value);
    });
  }
  return seen;
}

/**
 * A TCP proxy to 127.0.0.1:`port` that holds the first patch download once
 * `holdAfter` bytes of its response are through, until cut() drops that
 * connection; every other request passes. Keeps each request's head.
 */
async function holdingProxy(t: { teardown(fn: () => unknown): void }, port: number, holdAfter: number) {
  const requests: string[] = [];
  let held: net.Socket[] = [];
  let holding = false;
  const server = net.createServer((client) => {
    const up = net.connect(port, '127.0.0.1');
    let hold = false;
    let sent = 0;
    client.on('data', (d: Buffer) => {
      const head = d.toString('latin1');
      if (/^GET \/targets\//.test(head) && !holding) {
        holding = true;
        hold = true;
        held = [client, up];
      }
      if (/^[A-Z]+ \//.test(head)) requests.push(head);
      up.write(d);
    });
    up.on('data', (d: Buffer) => {
      if (!hold) {
        client.write(d);
        return;
      }
      const room = holdAfter - sent;
      if (room > 0) client.write(d.subarray(0, room));
      sent += d.length;
      if (sent >= holdAfter) up.pause();
    });
    up.on('end', () => client.end());
    up.on('error', () => client.destroy());
    client.on('error', () => up.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    for (const s of held) s.destroy();
    server.close();
  });
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    cut: () => {
      for (const s of held) s.destroy();
    },
  };
}

/**
 * A world with one published patch, big-1 (many scattered new blocks in
 * 64 KiB chunks: the engine has work before the last bytes arrive), served
 * through a proxy that holds its download at half the file, and an agent
 * that fetches through the proxy without retries.
 */
async function heldDownloadWorld(t: Parameters<typeof makeWorld>[0]) {
  const w = await makeWorld(t, { publish: [] });
  const next = Buffer.from(w.bytes.base);
  for (let b = 8; b < BLOCKS; b += 2) crypto.randomBytes(BLOCK).copy(next, b * BLOCK);
  const { patch } = await w.repo.publish(await w.patch('big-1', w.bytes.base, next, { chunkSize: 64 * 1024 }));
  const server = await serveRepository(w.repoDir, { port: 0 });
  t.teardown(() => server.close());
  const proxy = await holdingProxy(t, Number(new URL(server.url).port), Math.floor(patch.length / 2));
  const agent = await w.agent({}, {
    url: proxy.url,
    transport: { retries: 0, connectTimeoutMs: 20_000, readTimeoutMs: 20_000, minBytesPerSecond: 0 },
  });
  return { w, next, patch, proxy, agent };
}

if (!addonBuilt()) {
  t.skip('native addon not built (npm run build)', () => {});
} else {
  t.test('a check stages fix-1 and fix-2 bottom up; the restart makes them trial and the health check confirms them', async (t) => {
    const w = await makeWorld(t);
    const restarts: string[][] = [];
    const agent = await w.agent({
      hooks: {
        requestRestart: (_reason, info): RestartAnswer => {
          restarts.push(info.patches);
          return 'accepted';
        },
        healthCheck: () => true,
      },
    });
    const seen = record(agent);
    const report = await agent.checkOnce();
    t.same(report.staged, ['fix-1', 'fix-2']);
    t.same(report.refused, []);
    t.same(seen.staged?.map((p) => p.id), ['fix-1', 'fix-2']);
    t.ok(seen.progress?.some((p) => p.phase === 'download' && p.done === p.total && p.total > 0), 'download progress reached the end');
    t.ok(seen.progress?.some((p) => p.phase === 'install'), 'install progress');
    t.same(restarts, [['fix-1', 'fix-2']], 'one restart asked for both');
    t.equal(seen['restart-required']?.[0].action, 'request');
    t.same((await w.device()).list().map((p) => p.state), ['staged', 'staged']);
    t.same(await fs.readdir(path.join(w.state, 'downloads')), [], 'downloads are deleted once installed');

    await (await w.device()).boot();
    const startup = await agent.startup();
    t.same(startup.activated, ['fix-1', 'fix-2']);
    t.equal(startup.healthy, true);
    t.same(seen.activated?.[0].map((p) => p.id), ['fix-1', 'fix-2']);
    t.same((await w.device()).list().map((p) => p.state), ['active', 'active']);
    t.ok((await exported(w)).equals(w.bytes.v2), 'the booted view is v2');

    const again = await agent.checkOnce();
    t.same(again.staged, [], 'nothing new');
    t.equal(again.restart, null, 'no restart needed');

    const audit = (await AuditTrail.forState(w.state).read()).map((e) => `${e.event}:${e.patch ?? ''}`);
    t.same(audit, [
      'staged:fix-1',
      'staged:fix-2',
      'restart-requested:',
      'booted:fix-1',
      'booted:fix-2',
      'activated:fix-1',
      'activated:fix-2',
    ]);
    const log = await fs.readFile(path.join(w.state, 'agent.log'), 'utf8').catch(() => '');
    t.equal(log, '', 'no agent.log unless a logger is given (the CLI gives one)');
  });

  t.test('the agent applies a patch while it downloads, leaves the device as it was when the download is cut, and resumes it at the next check', async (t) => {
    const { w, next, patch, proxy, agent } = await heldDownloadWorld(t);
    const seen = record(agent);
    let cut = false;
    agent.on('progress', (p) => {
      // The download is held at half the file: install progress now means the engine is already applying.
      if (p.phase === 'install' && !cut) {
        cut = true;
        proxy.cut();
      }
    });
    const before = await w.stateSnapshot({ without: ['tuf/', 'agent/', 'downloads/'] });
    const first = await agent.checkOnce();
    t.ok(cut, 'the engine was applying the patch while its download was still arriving');
    t.same(first.refused.map((r) => [r.id, r.code]), [['big-1', 'E_NETWORK']]);
    t.same(first.staged, []);
    t.same(await w.stateSnapshot({ without: ['tuf/', 'agent/', 'downloads/'] }), before, 'the device is as it was');
    const kept = (await fs.stat(path.join(w.state, 'downloads', 'big-1-v1.rvp'))).size;
    t.ok(kept > 0 && kept < patch.length, `the partial download (${kept} of ${patch.length} bytes) is kept`);

    const second = await agent.checkOnce();
    t.same(second.staged, ['big-1']);
    const gets = proxy.requests.filter((r) => r.startsWith('GET /targets/'));
    t.equal(gets.length, 2);
    t.equal(/^range: bytes=(\d+)-/im.exec(gets[1])?.[1], String(kept), 'the second download asked only for the rest');
    t.ok(seen.progress?.some((p) => p.phase === 'download' && p.done === kept && p.total === patch.length), 'download progress starts from the kept bytes');
    t.same(await fs.readdir(path.join(w.state, 'downloads')), [], 'the download is deleted once installed');
    await (await w.device()).boot();
    t.ok((await exported(w)).equals(next), 'the booted view is the new image');
  });

  t.test('a partial download no later check will resume is deleted: the patch was recalled, or the file is a stray', async (t) => {
    const { w, proxy, agent } = await heldDownloadWorld(t);
    agent.on('progress', (p) => {
      if (p.phase === 'install') proxy.cut();
    });
    const downloads = path.join(w.state, 'downloads');
    await fs.mkdir(downloads, { recursive: true });
    await fs.writeFile(path.join(downloads, 'gone-3-v2.rvp'), 'left by a check long ago');
    await fs.writeFile(path.join(downloads, 'gone-3-v2.rvp.etag'), '"abc"');
    const first = await agent.checkOnce();
    t.same(first.refused.map((r) => [r.id, r.code]), [['big-1', 'E_NETWORK']]);
    t.same((await fs.readdir(downloads)).sort(), ['big-1-v1.rvp', 'big-1-v1.rvp.etag'], 'the resumable partial download and its ETag stay, the stray ones are deleted');

    await w.repo.recall('big-1');
    const second = await agent.checkOnce();
    t.same(second.staged, []);
    t.same(await fs.readdir(downloads), [], 'the partial download of the recalled patch is deleted');
    t.same((await w.device()).list(), [], 'and nothing was installed');
  });

  t.test('against nginx: the agent stages a published patch, the restart activates it, it is confirmed, and a recall removes it at the next restart', async (t) => {
    const w = await makeWorld(t, { publish: ['fix-1'] });
    const nginx = await startNginx(t, w.repoDir);
    if (typeof nginx === 'string') {
      t.skip(nginx, () => {});
      return;
    }
    const agent = await w.agent({ hooks: { healthCheck: () => true } }, { url: nginx.url });
    t.same((await agent.checkOnce()).staged, ['fix-1']);
    t.equal((await w.device()).list()[0].state, 'staged');
    await (await w.device()).boot();
    t.same((await agent.startup()).activated, ['fix-1']);
    t.ok((await exported(w)).equals(w.bytes.v1), 'the booted view is v1');
    await w.repo.recall('fix-1');
    t.same((await agent.checkOnce()).recalled, ['fix-1']);
    t.same((await (await w.device()).boot()).removed, ['fix-1']);
    t.ok((await exported(w)).equals(w.bytes.base), 'back to the base');
    t.same(w.server.requests, [], 'everything came from nginx');
  });

  t.test('a recall marks the active patch pending-removal; the next restart removes it and it is never taken again', async (t) => {
    const w = await makeWorld(t, { publish: ['fix-1'] });
    const agent = await w.agent();
    const seen = record(agent);
    await agent.checkOnce();
    await (await w.device()).boot();
    await agent.startup();
    await w.repo.recall('fix-1');
    const report = await agent.checkOnce();
    t.same(report.recalled, ['fix-1']);
    t.same(seen.recalled?.map((p) => [p.id, p.state]), [['fix-1', 'pending-removal']]);
    t.same(report.restart?.patches, ['fix-1'], 'the recall asks for a restart');
    const boot = await (await w.device()).boot();
    t.same(boot.removed, ['fix-1']);
    await agent.startup();
    const device = await w.device();
    t.equal(device.list()[0].state, 'removed');
    t.equal(device.list()[0].reason, 'recalled');
    t.ok((await exported(w)).equals(w.bytes.base), 'back to the base');
    const after = await agent.checkOnce();
    t.same(after.staged, []);
    t.same(after.recalled, [], 'a recall already handled is not handled twice');
    const events = (await AuditTrail.forState(w.state).read()).map((e) => e.event);
    t.ok(events.includes('recalled') && events.includes('removed'));
  });

  t.test('a recall of a staged patch drops it at once, and its child with it', async (t) => {
    const w = await makeWorld(t);
    const agent = await w.agent();
    await agent.checkOnce();
    await w.repo.recall('fix-1');
    const report = await agent.checkOnce();
    t.same(report.recalled.sort(), ['fix-1', 'fix-2']);
    t.same((await w.device()).list().map((p) => p.state), ['removed', 'removed']);
    t.equal(report.restart, null, 'nothing booted ran them: no restart');
    t.same(report.staged, [], 'fix-2 is not taken again without its parent');
  });

  t.test('a failed health check confirms nothing, forces a restart, and the rollback is reported as rolled-back', async (t) => {
    const w = await makeWorld(t, { publish: ['fix-1'], maxBootAttempts: 1 });
    const forced: boolean[] = [];
    const agent = await w.agent({
      hooks: {
        healthCheck: () => false,
        requestRestart: (_r, info): RestartAnswer => {
          forced.push(info.forced);
          return 'accepted';
        },
      },
    });
    const seen = record(agent);
    await agent.checkOnce();
    await (await w.device()).boot();
    const startup = await agent.startup();
    t.equal(startup.healthy, false);
    t.same(startup.activated, []);
    t.same(forced, [false, true], 'the second restart is forced');
    t.equal(seen['restart-required']?.at(-1)?.code, 'health-check-failed');
    t.equal((await w.device()).list()[0].state, 'trial');
    await (await w.device()).boot();
    const after = await agent.startup();
    t.same(after.rolledBack, ['fix-1']);
    t.same(seen['rolled-back']?.map((p) => p.id), ['fix-1']);
    t.equal((await w.device()).list()[0].state, 'failed');
    t.same((await agent.checkOnce()).staged, [], 'a rolled-back patch is not taken again');
  });

  t.test('a health check that throws counts as failed', async (t) => {
    const w = await makeWorld(t, { publish: ['fix-1'] });
    const agent = await w.agent({
      hooks: {
        healthCheck: () => {
          throw new Error('probe crashed');
        },
      },
    });
    await agent.checkOnce();
    await (await w.device()).boot();
    t.equal((await agent.startup()).healthy, false);
    t.equal((await w.device()).list()[0].state, 'trial');
  });

  t.test('auto-install off downloads nothing and reports the patch available', async (t) => {
    const w = await makeWorld(t, { publish: ['fix-1'] });
    const agent = await w.agent({ settings: { autoInstall: false } });
    const report = await agent.checkOnce();
    t.same(report.available, ['fix-1']);
    t.same(report.staged, []);
    t.equal(report.skipped[0].code, 'auto-install-off');
    t.notOk(w.server.requests.some((r) => r.startsWith('/targets/')), 'no target was fetched');
  });

  t.test('a 0% rollout skips the device; raising it to 100% stages the patch', async (t) => {
    const w = await makeWorld(t, { publish: ['fix-1'], rollout: 0 });
    const agent = await w.agent();
    const report = await agent.checkOnce();
    t.same(report.staged, []);
    t.equal(report.skipped[0].code, 'outside-rollout');
    await w.repo.publish(w.files['fix-1'], { rollout: 100 });
    t.same((await agent.checkOnce()).staged, ['fix-1']);
  });

  t.test('without room for patch + layer + margin the patch is skipped before a byte is downloaded', async (t) => {
    const w = await makeWorld(t, { publish: ['fix-1'] });
    const agent = await w.agent({ hooks: { freeSpace: async () => 1024 * 1024 } });
    const report = await agent.checkOnce();
    t.same(report.staged, []);
    t.equal(report.skipped[0].code, 'no-space');
    t.match(report.skipped[0].reason, /needs \d+ bytes/);
    t.notOk(w.server.requests.some((r) => r.startsWith('/targets/')));
    t.same((await w.device()).list(), []);
  });

  t.test('a patch for another view than the device has is skipped, not downloaded', async (t) => {
    const w = await makeWorld(t, { publish: [] });
    const other = await w.patch('other', w.bytes.other, w.bytes.v1);
    await w.repo.publish(other);
    const report = await (await w.agent()).checkOnce();
    t.same(report.staged, []);
    t.equal(report.skipped[0].code, 'view-mismatch');
    t.notOk(w.server.requests.some((r) => r.startsWith('/targets/')));
  });

  t.test('of two patches for the same view the newer version is taken', async (t) => {
    const w = await makeWorld(t, { publish: [] });
    const v1 = await w.patch('fix-a', w.bytes.base, w.bytes.v1, { version: 1 });
    const v3 = await w.patch('fix-b', w.bytes.base, w.bytes.v2, { version: 3 });
    await w.repo.publish(v1);
    await w.repo.publish(v3);
    const report = await (await w.agent()).checkOnce();
    t.same(report.staged, ['fix-b']);
    t.same(report.skipped.map((s) => [s.id, s.code]), [['fix-a', 'superseded']]);
  });

  t.test('restarts wait for the maintenance window, the user may defer them, and the limit forces one', async (t) => {
    const w = await makeWorld(t, { publish: ['fix-1'] });
    const answers: Array<[boolean, RestartAnswer]> = [];
    // A window two to three hours from now (local time; it may cross midnight), so
    // every moment below stays within the repository's one-day timestamp expiry.
    const start = new Date(w.clock.now.getTime());
    start.setSeconds(0, 0);
    const hhmm = (d: Date) => `${String(d.getHours()).padStart(2, '0')}:${String(d.getMinutes()).padStart(2, '0')}`;
    const at = (hours: number) => new Date(start.getTime() + hours * 3600 * 1000);
    const agent = await w.agent({
      settings: { maintenanceWindows: [parseTimeRange(`${hhmm(at(2))}-${hhmm(at(3))}`)], deferral: { maxCount: 2 } },
      hooks: {
        now: () => w.clock.now,
        requestRestart: (_r, info): RestartAnswer => {
          const answer: RestartAnswer = info.forced ? 'accepted' : 'deferred';
          answers.push([info.forced, answer]);
          return answer;
        },
      },
    });
    w.clock.now = at(1);
    const before = await agent.checkOnce();
    t.equal(before.restart?.action, 'wait');
    t.same(before.restart?.nextStart, at(2), 'with the next opening of the window');
    t.equal(before.restart?.code, 'outside-window');
    t.same(answers, [], 'not asked outside the window');
    w.clock.now = at(2.5);
    t.equal((await agent.checkOnce()).restart?.action, 'request');
    t.equal((await agent.checkOnce()).restart?.action, 'request');
    const third = await agent.checkOnce();
    t.equal(third.restart?.action, 'force');
    t.equal(third.restart?.code, 'deferral-count');
    t.same(answers, [
      [false, 'deferred'],
      [false, 'deferred'],
      [true, 'accepted'],
    ]);
    await (await w.device()).boot();
    await agent.startup();
    const state = JSON.parse(await fs.readFile(path.join(w.state, 'agent', 'state.json'), 'utf8'));
    t.same(state.deferral, { count: 0, firstRequestedAt: null }, 'the restart happened: deferrals start over');
  });

  t.test('run() stops on abort, and a transition in flight finishes before it returns', async (t) => {
    const w = await makeWorld(t, { publish: ['fix-1'] });
    const controller = new AbortController();
    let installsFinished = 0;
    let finishedAtAbort = -1;
    const agent = await w.agent({
      settings: { pollIntervalMs: 1000, jitter: 0 },
      installer: (context) => {
        const client = context.client;
        // The stop request arrives once the download is complete, while the install runs.
        return installWhileDownloading({
          ...context,
          client: {
            refresh: () => client.refresh(),
            patches: () => client.patches(),
            targetUrl: (patch) => client.targetUrl(patch),
            download: async (...args) => {
              const result = await client.download(...args);
              finishedAtAbort = installsFinished;
              controller.abort();
              return result;
            },
          },
          device: new Proxy(context.device, {
            get(target, prop, receiver) {
              if (prop === 'installPatchFile') {
                return async (...args: Parameters<typeof target.installPatchFile>) => {
                  const r = await target.installPatchFile(...args);
                  installsFinished++;
                  return r;
                };
              }
              return Reflect.get(target, prop, receiver);
            },
          }),
        });
      },
    });
    const started = Date.now();
    await agent.run(controller.signal);
    t.equal(finishedAtAbort, 0, 'the stop request came before the install finished');
    t.equal(installsFinished, 1, 'the install in flight completed');
    t.equal((await w.device()).list()[0]?.state, 'staged', 'and committed');
    t.ok(Date.now() - started < 10_000, 'run returned without waiting out the poll interval');
  });

  t.test('run() returns at once when aborted during the wait between checks', async (t) => {
    const w = await makeWorld(t, { publish: [] });
    const agent = await w.agent({ settings: { pollIntervalMs: 3600_000, jitter: 0 } });
    const controller = new AbortController();
    const running = agent.run(controller.signal);
    while (!w.server.requests.some((r) => r.endsWith('timestamp.json'))) await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, 200));
    const stopped = Date.now();
    controller.abort();
    await running;
    t.ok(Date.now() - stopped < 2000, 'returned without waiting out the hour');
  });

  t.test('the poll interval is jittered within ± jitter and never the same for a fleet', async (t) => {
    const w = await makeWorld(t, { publish: [] });
    const agent = await w.agent({ settings: { pollIntervalMs: 100_000, jitter: 0.2 } });
    t.equal(agent.nextDelayMs(() => 0), 80_000);
    t.equal(agent.nextDelayMs(() => 0.5), 100_000);
    t.equal(agent.nextDelayMs(() => 0.999999), 120_000);
    const delays = new Set(Array.from({ length: 50 }, () => agent.nextDelayMs()));
    t.ok(delays.size > 40, 'random delays differ');
    t.ok([...delays].every((d) => d >= 80_000 && d <= 120_000));
    await t.rejects(w.agent({ settings: { jitter: 1 } }), { code: 'E_INVALID_ARGUMENT' });
    await t.rejects(w.agent({ settings: { pollIntervalMs: 10 } }), { code: 'E_INVALID_ARGUMENT' });
  });

  t.test('an unreachable repository fails the check with E_NETWORK and changes nothing', async (t) => {
    const w = await makeWorld(t, { publish: ['fix-1'] });
    const agent = await w.agent();
    await agent.checkOnce();
    const before = await w.stateSnapshot();
    await w.server.close();
    const errors: string[] = [];
    agent.on('error', (e) => errors.push(e.code));
    await t.rejects(agent.checkOnce(), { code: 'E_NETWORK' });
    t.same(errors, ['E_NETWORK']);
    t.same(await w.stateSnapshot(), before);
    const audit = await AuditTrail.forState(w.state).read();
    t.equal(audit.at(-1)?.event, 'refused');
    t.equal(audit.at(-1)?.code, 'E_NETWORK');
  });

  t.test('the npm start walkthrough tells the whole story: stage, restart, confirm, recall, removal, a bad patch halted by the fleet', async (t) => {
    const dir = await tempDir(t, 'revpatch-walkthrough-');
    const lines: string[] = [];
    await runWalkthrough(dir, (line) => lines.push(line));
    const text = lines.join('\n');
    for (const step of [
      /first run: making sample images/,
      /serving it on http:\/\/127\.0\.0\.1:\d+/,
      /downloaded fix-1 \(\d+ bytes/,
      /staged fix-1 v1/,
      /staged fix-2 v1/,
      /restart \(boot\): trial: fix-1, fix-2/,
      /health check: the system came up/,
      /confirmed: fix-1, fix-2 active/,
      /exported image equals fix-2 \(over fix-1\): yes/,
      /recalled fix-2/,
      /fix-2 recalled: pending-removal/,
      /restart \(boot\): removed: fix-2/,
      /exported image equals fix-1 again: yes/,
      /report collector on http:\/\/127\.0\.0\.1:\d+, rollout controller in this process; database .*fleet\.db/,
      /published fix-3 v1 at rollout 0%/,
      /start 0% → 10%: rollout starts at stage 1 of 3/,
      /round 1: repository says 10%; [1-9]\d* staged/,
      /recall 10% → 10%: \d+ failed of \d+ verdicts in stage 1: .*halted and recalled \(auto-recall\)/,
      /repository says 10% \(recalled, halted\)/,
      /fix-3 halted and recalled at 10%: \d+ of 100 devices ever took it, none holds it now/,
      /fix-3 v1 {2}RECALLED {2}stage 1\/3/,
    ]) {
      t.match(text, step);
    }
    t.notMatch(text, /advance 10% → 50%/, 'the bad patch never reaches the second stage');
    const again: string[] = [];
    await runWalkthrough(dir, (line) => again.push(line));
    t.match(again.join('\n'), /made earlier/, 'a second run reuses the sample repository');
  });

  const cliBuilt = () => existsSync(path.join(ROOT, 'dist', 'cli', 'cli_agent.js'));
  const cliScript = `
    const { buildProgram } = require(${JSON.stringify(path.join(ROOT, 'dist', 'cli', 'cli.js'))});
    const { registerAgent } = require(${JSON.stringify(path.join(ROOT, 'dist', 'cli', 'cli_agent.js'))});
    const program = buildProgram();
    if (!program.commands.some((c) => c.name() === 'agent')) registerAgent(program);
    program.parseAsync(process.argv.slice(2), { from: 'user' }).then(
      () => process.exit(0),
      (e) => { process.stderr.write('error ' + e.code + ': ' + e.message + '\\n'); process.exit(e.exitCode === undefined ? 1 : 2); },
    );`;

  /** Runs the CLI without blocking this process (whose event loop serves the repository). */
  const run = (args: string[]) =>
    new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => (stdout += d));
      child.stderr.on('data', (d) => (stderr += d));
      child.once('exit', (status) => resolve({ status, stdout, stderr }));
    });

  const writeCli = async (dir: string) => {
    const file = path.join(dir, 'revpatch-cli.js');
    await fs.writeFile(file, cliScript);
    return file;
  };

  t.test('revpatch agent --once stages, prints JSON, and exits 1 with the code of a refusal', { skip: !cliBuilt() && 'dist/ not built (npx tsc -p .)' }, async (t) => {
    const w = await makeWorld(t, { publish: ['fix-1'] });
    const cli = await writeCli(w.dir);
    const ok = await run([cli, '--state', w.state, '--json', 'agent', '--once', '--device-id', 'd1']);
    t.equal(ok.status, 0, ok.stderr);
    t.same(JSON.parse(ok.stdout).staged, ['fix-1']);
    t.match(await fs.readFile(path.join(w.state, 'agent.log'), 'utf8'), /"msg":"staged"/);
    await w.server.close();
    const down = await run([cli, '--state', w.state, 'agent', '--once']);
    t.equal(down.status, 1);
    t.match(down.stderr, /^error E_NETWORK: /m);
    const bad = await run([cli, '--state', w.state, 'agent', '--once', '--window', '25:00-01:00']);
    t.equal(bad.status, 2, 'a malformed window is a usage error');
  });

  t.test('revpatch agent (daemon) stages, then exits 0 on SIGTERM', { skip: !cliBuilt() && 'dist/ not built (npx tsc -p .)' }, async (t) => {
    const w = await makeWorld(t, { publish: ['fix-1'] });
    const cli = await writeCli(w.dir);
    const child = spawn(process.execPath, [cli, '--state', w.state, 'agent', '--interval', '3600'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      if (/restart required/.test(out)) child.kill('SIGTERM');
    });
    const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
    t.equal(code, 0);
    t.match(out, /staged fix-1 v1/);
    t.equal((await w.device()).list()[0].state, 'staged');
  });
}
