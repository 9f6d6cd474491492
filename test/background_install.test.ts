/**
 * Background etiquette on the device: the download rate cap
 * (`agent --max-rate`, AgentSettings.maxBytesPerSecond, the settings file)
 * and the install priority (`background`: the agent's default, `install
 * --background` for the CLI), which reaches the engine threads doing the
 * install (native/engine/priority.h). Bad values are refused with
 * E_INVALID_ARGUMENT (flags, options) or ignored as E_CORRUPT (the settings
 * file), and change nothing.
 */
import { execFileSync } from 'node:child_process';
import { promises as fs, readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { installWhileDownloading, type InstallContext } from '../lib/agent/agent';
import { checkRateCap, MIN_RATE_CAP } from '../lib/agent/policy';
import { readPersistedSettings, settingsPath, writePersistedSettings } from '../lib/agent/settings_file';
import { parseByteSize } from '../lib/cli/byte_size';
import { Device } from '../lib/device/device';
import type { ApplyResult } from '../lib/engine/engine';
import { addonBuilt, runCli, snapshot } from './helpers';
import { makeWorld } from './agent_fixture';

t.test('byte sizes take K, M and G suffixes and refuse anything else', async (t) => {
  t.equal(parseByteSize('--max-rate', '65536'), 65536);
  t.equal(parseByteSize('--max-rate', '2M'), 2 * 1024 * 1024);
  t.equal(parseByteSize('--max-rate', '512k'), 512 * 1024);
  t.equal(parseByteSize('--max-rate', '1.5G'), 1.5 * 1024 ** 3);
  t.equal(parseByteSize('--max-rate', '3MiB'), 3 * 1024 * 1024);
  t.equal(parseByteSize('--max-rate', '0'), 0);
  for (const bad of ['-1', 'abc', '', '2X', '1e6', 'M', '2 M B', '99999999999G']) {
    t.throws(() => parseByteSize('--max-rate', bad), { code: 'E_INVALID_ARGUMENT', message: /--max-rate/ }, bad);
  }
});

t.test('a rate cap is 0 or at least the slow-retrieval floor, in whole bytes', async (t) => {
  t.equal(checkRateCap(0), 0);
  t.equal(checkRateCap(MIN_RATE_CAP), MIN_RATE_CAP);
  for (const bad of [-1, 1, MIN_RATE_CAP - 1, 1.5 * 1024 + 0.5, NaN, Infinity, '2M', null]) {
    t.throws(() => checkRateCap(bad), { code: 'E_INVALID_ARGUMENT' }, String(bad));
  }
});

t.test('agent --max-rate with a bad value fails with E_INVALID_ARGUMENT before touching the state', async (t) => {
  const dir = t.testdir({ state: { 'keep.txt': 'x' } });
  const state = path.join(dir, 'state');
  const before = await snapshot(state);
  for (const bad of ['-1', 'abc', '512', '1.5.2M']) {
    const r = runCli(['--state', state, 'agent', '--once', '--max-rate', bad]);
    t.equal(r.code, 1, `--max-rate ${bad}: exit 1`);
    t.match(r.stderr, /E_INVALID_ARGUMENT.*--max-rate/, `--max-rate ${bad}: the code and the flag`);
  }
  t.same(await snapshot(state), before, 'nothing written');
});

if (!addonBuilt()) {
  t.skip('native addon not built (npm run build)', () => {});
} else {
  t.test('the agent refuses a bad cap or priority in its options', async (t) => {
    const w = await makeWorld(t, { publish: ['fix-1'] });
    for (const settings of [{ maxBytesPerSecond: -1 }, { maxBytesPerSecond: 100 }, { maxBytesPerSecond: 2.5e3 + 0.5 }]) {
      await t.rejects(w.agent({ settings }), { code: 'E_INVALID_ARGUMENT' }, JSON.stringify(settings));
    }
    await t.rejects(w.agent({ settings: { background: 'yes' as unknown as boolean } }), { code: 'E_INVALID_ARGUMENT' });
  });

  t.test('the settings file holds the cap and the priority; junk in it is E_CORRUPT and the agent keeps its own', async (t) => {
    const w = await makeWorld(t, { publish: ['fix-1'] });
    await writePersistedSettings(w.state, { maxBytesPerSecond: 4096, background: false });
    t.same(await readPersistedSettings(w.state), { maxBytesPerSecond: 4096, background: false });
    const seen: Array<Pick<InstallContext, 'background' | 'maxBytesPerSecond'>> = [];
    const installer = async (context: InstallContext) => {
      seen.push({ background: context.background, maxBytesPerSecond: context.maxBytesPerSecond });
      return installWhileDownloading(context);
    };
    const junk = [
      '{"format":1,"maxBytesPerSecond":-1}',
      '{"format":1,"maxBytesPerSecond":100}',
      '{"format":1,"maxBytesPerSecond":"2M"}',
      '{"format":1,"maxBytesPerSecond":4096.5}',
      '{"format":1,"background":"no"}',
    ];
    for (const text of junk) {
      await fs.writeFile(settingsPath(w.state), text);
      await t.rejects(readPersistedSettings(w.state), { code: 'E_CORRUPT' }, text);
    }
    // The last junk file is in place: the agent's own settings hold.
    const agent = await w.agent({ installer, settings: { maxBytesPerSecond: 8192, background: true } });
    t.same((await agent.checkOnce()).staged, ['fix-1']);
    t.same(seen, [{ background: true, maxBytesPerSecond: 8192 }], 'junk ignored: the options stand');
    t.equal(await fs.readFile(settingsPath(w.state), 'utf8'), junk[junk.length - 1], 'the file is left as it was');
  });

  t.test('persisted settings override the agent options at the next check', async (t) => {
    const w = await makeWorld(t, { publish: ['fix-1'] });
    await writePersistedSettings(w.state, { maxBytesPerSecond: 0, background: false });
    const seen: Array<Pick<InstallContext, 'background' | 'maxBytesPerSecond'>> = [];
    const agent = await w.agent({
      installer: async (context) => {
        seen.push({ background: context.background, maxBytesPerSecond: context.maxBytesPerSecond });
        return installWhileDownloading(context);
      },
      settings: { maxBytesPerSecond: 8192 },
    });
    t.same(agent.settings.background, true, 'on by default');
    t.same((await agent.checkOnce()).staged, ['fix-1']);
    t.same(seen, [{ background: false, maxBytesPerSecond: 0 }]);
  });

  const linux = process.platform === 'linux';
  const ionice = (() => {
    try {
      execFileSync('ionice', ['-p', String(process.pid)], { stdio: 'pipe' });
      return true;
    } catch {
      return false;
    }
  })();

  /** nice and ionice class of each thread of this process, from /proc and ionice(1). */
  function threads(): Array<{ tid: string; nice: number; io: string }> {
    const out: Array<{ tid: string; nice: number; io: string }> = [];
    for (const tid of readdirSync('/proc/self/task')) {
      try {
        const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
        const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        const nice = Number(fields[16]); // field 19 of stat(5), counted after the name
        const io = nice === 19 ? execFileSync('ionice', ['-p', tid], { encoding: 'utf8' }).trim() : '';
        out.push({ tid, nice, io });
      } catch {
        // the thread ended meanwhile
      }
    }
    return out;
  }

  t.test(
    'the agent installs at nice 19 in the idle I/O class while its capped download runs, and the rest of the process keeps its priority',
    { skip: !linux || !ionice ? 'needs Linux and ionice(1)' : false },
    async (t) => {
      const w = await makeWorld(t, { publish: ['fix-1'] });
      const length = (await fs.stat(w.files['fix-1'])).size;
      // The cap makes the download wait about length / cap seconds after its
      // first chunk, while the engine waits for the last byte.
      const cap = Math.max(MIN_RATE_CAP, Math.floor(length / 2));
      const agent = await w.agent({ settings: { maxBytesPerSecond: cap } });
      const lowered = new Map<string, string>();
      let settled = false;
      const check = agent.checkOnce().finally(() => (settled = true));
      const mainNice = threads().find((x) => x.tid === String(process.pid))?.nice;
      // Every thread at nice 19 while the check runs (the apply thread waits
      // for the last byte as long as the cap holds the download back).
      while (!settled) {
        for (const x of threads()) if (x.nice === 19) lowered.set(x.tid, x.io);
        await new Promise((r) => setTimeout(r, 20));
      }
      t.same((await check).staged, ['fix-1']);
      t.ok(lowered.size > 0, 'a thread of the process ran at nice 19 during the install');
      for (const [tid, io] of lowered) t.match(io, /^idle/, `thread ${tid}: ionice says idle`);
      t.equal(threads().find((x) => x.tid === String(process.pid))?.nice, mainNice, 'the event loop thread is not lowered');
    },
  );

  t.test('Device.install lowers the engine threads only with background set', async (t) => {
    for (const background of [true, false, undefined]) {
      const w = await makeWorld(t, { publish: [] });
      const device = await Device.open(w.state);
      let applied: ApplyResult | undefined;
      await device.install(w.files['fix-1'], { background, onApplied: (r) => (applied = r) });
      t.equal(applied?.lowered, linux && background === true, `background ${String(background)}`);
    }
  });

  t.test('install --background is accepted by the CLI and stages the patch', async (t) => {
    const w = await makeWorld(t, { publish: [] });
    const r = runCli(['--state', w.state, '--json', 'install', '--background', w.files['fix-1']]);
    t.equal(r.code, 0, r.stderr);
    t.match(JSON.parse(r.stdout), { id: 'fix-1', state: 'staged' });
  });
}
