/**
 * Installing the package needs no compiler where a prebuilt binary fits:
 * the packed package installs with its install script (node-gyp-build),
 * builds nothing, and loads prebuilds/<platform>-<arch>/; without a fitting
 * binary the loader says what to do. Runs on a copy made by `npm pack`, so
 * the checkout's build/ is neither used nor touched.
 */
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { existsSync, promises as fs, statSync, readdirSync } from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import * as engine from '../lib/engine/engine';
import { ROOT, stampedImage, tempDir } from './helpers';

const TUPLE = `${process.platform}-${process.arch}`;
const PREBUILD_DIR = path.join(ROOT, 'prebuilds', TUPLE);
const GOLDEN = path.join(ROOT, 'test', 'fixtures', 'golden');

function run(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = {}): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, { cwd, env: { ...process.env, ...env }, encoding: 'utf8', timeout: 600_000 });
}

function newestSource(): number {
  let newest = statSync(path.join(ROOT, 'binding.gyp')).mtimeMs;
  for (const dir of ['native/engine', 'native/addon']) {
    for (const f of readdirSync(path.join(ROOT, dir))) newest = Math.max(newest, statSync(path.join(ROOT, dir, f)).mtimeMs);
  }
  return newest;
}

function prebuiltFile(dir: string): string | undefined {
  const files = existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.node')) : [];
  return files.length === 1 ? path.join(dir, files[0]) : undefined;
}

/** Engine calls made by a separate Node process from `cwd` through the installed package. */
function probe(cwd: string, pkg: string, image: string): SpawnSyncReturns<string> {
  const script = `
    const engine = require(${JSON.stringify(path.join(pkg, 'dist', 'engine', 'engine.js'))});
    (async () => {
      const digest = await engine.hashImage(${JSON.stringify(image)}, 4096);
      const record = await engine.readCommitRecord(${JSON.stringify(path.join(GOLDEN, 'commit.record'))});
      console.log(JSON.stringify({ digest: digest.digest, generation: record.generation }));
    })().catch((err) => { console.error(err.code + '\\n' + err.message); process.exit(3); });`;
  return run(process.execPath, ['-e', script], cwd);
}

if (!engine.PREBUILT_PLATFORMS.includes(TUPLE)) {
  t.comment(`no prebuilt binaries are made for ${TUPLE}`);
  t.pass(`${TUPLE} installs from source`);
} else {
  t.test('a packed install loads the prebuilt binary and compiles nothing', async (t) => {
    const current = prebuiltFile(PREBUILD_DIR);
    if (!current || statSync(current).mtimeMs < newestSource()) {
      t.comment(`building the ${TUPLE} prebuild (npm run build:prebuilds -- --host)`);
      const built = run('bash', [path.join(ROOT, 'scripts', 'prebuild.sh'), '--host'], ROOT);
      t.equal(built.status, 0, 'scripts/prebuild.sh --host', { stderr: built.stderr.slice(-2000) });
    }
    const prebuilt = prebuiltFile(PREBUILD_DIR);
    if (!prebuilt) return t.fail(`no prebuild in ${PREBUILD_DIR}`);
    t.ok(existsSync(path.join(ROOT, 'dist', 'engine', 'engine.js')), 'dist/ is built (npm run build:ts)');

    const dir = await tempDir(t, 'revpatch-prebuild-');
    // --ignore-scripts: pack what is there; `prepare` would recompile dist/ of the checkout.
    const packed = run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dir], ROOT);
    t.equal(packed.status, 0, 'npm pack', { stderr: packed.stderr });
    const pack = JSON.parse(packed.stdout) as Array<{ filename: string; files: Array<{ path: string }> }>;
    const tarball = path.join(dir, path.basename(pack[0].filename));
    const files = pack[0].files.map((f) => f.path);
    t.ok(files.includes(`prebuilds/${TUPLE}/${path.basename(prebuilt)}`), 'the package holds the prebuild');
    t.notOk(files.some((f) => f.startsWith('build/')), 'the package holds no build/ folder');

    const consumer = path.join(dir, 'consumer');
    await fs.mkdir(consumer);
    // allowScripts: npm 11 runs a dependency's install script only when the
    // project approves it (npm 10, bundled with Node 20 and 22, always does);
    // the script must run, and find the prebuild.
    const manifest = { name: 'consumer', version: '1.0.0', private: true, allowScripts: { revpatch: true } };
    await fs.writeFile(path.join(consumer, 'package.json'), JSON.stringify(manifest));
    // A compile would need Node's headers: point node-gyp at a folder without
    // them, so an install that tried to build from source would fail.
    const installed = run(
      'npm',
      ['install', '--prefer-offline', '--no-audit', '--no-fund', '--no-package-lock', '--foreground-scripts', tarball],
      consumer,
      { npm_config_nodedir: path.join(dir, 'no-node-headers'), npm_config_build_from_source: '' },
    );
    t.equal(installed.status, 0, 'npm install of the tarball', { stderr: installed.stderr.slice(-3000) });
    if (installed.status !== 0) return;
    t.match(installed.stdout, /revpatch@[^\n]* install\n> node-gyp-build/, 'the install script ran');
    const pkg = path.join(consumer, 'node_modules', 'revpatch');
    t.notOk(existsSync(path.join(pkg, 'build')), 'the install script built nothing (no build/ folder)');
    const resolved = run(process.execPath, ['-p', `require('node-gyp-build').resolve(${JSON.stringify(pkg)})`], pkg);
    t.equal(resolved.stdout.trim(), path.join(pkg, 'prebuilds', TUPLE, path.basename(prebuilt)), 'node-gyp-build resolves the prebuild');

    const image = path.join(dir, 'image.img');
    await fs.writeFile(image, stampedImage(40));
    const want = await engine.hashImage(image, 4096);
    const loaded = probe(consumer, pkg, image);
    t.equal(loaded.status, 0, 'engine calls through the prebuild', { stderr: loaded.stderr });
    if (loaded.status === 0) {
      t.same(JSON.parse(loaded.stdout), { digest: want.digest, generation: 2 }, 'the prebuild hashes and reads as the source build does');
    }

    t.test('a corrupt prebuild is reported with its path and the fix', async (t) => {
      const file = path.join(pkg, 'prebuilds', TUPLE, path.basename(prebuilt));
      const saved = await fs.readFile(file);
      // Not a shared object at all (a truncated one can crash dlopen itself).
      await fs.writeFile(file, 'not a shared object\n'.repeat(256));
      t.teardown(() => fs.writeFile(file, saved));
      const r = probe(consumer, pkg, image);
      t.equal(r.status, 3);
      t.match(r.stderr, /^E_ADDON\n/);
      t.match(r.stderr, file);
      t.match(r.stderr, 'does not fit this system');
      t.match(r.stderr, 'npm rebuild revpatch --build-from-source');
    });

    t.test('with no binary for the platform the loader says what to do', async (t) => {
      const prebuilds = path.join(pkg, 'prebuilds');
      await fs.rename(prebuilds, prebuilds + '.away');
      t.teardown(() => fs.rename(prebuilds + '.away', prebuilds));
      const r = probe(consumer, pkg, image);
      t.equal(r.status, 3);
      t.match(r.stderr, /^E_ADDON\n/);
      t.match(r.stderr, `could not be loaded for ${TUPLE}`);
      t.match(r.stderr, 'No native build was found');
      t.match(r.stderr, 'npm rebuild revpatch --build-from-source');
      t.match(r.stderr, 'apt-get install python3 make g++ libbrotli-dev');
    });
  });
}

t.test('a linux-arm64 prebuild, when present, is an aarch64 shared object', async (t) => {
  const file = prebuiltFile(path.join(ROOT, 'prebuilds', 'linux-arm64'));
  if (!file) {
    t.comment('no prebuilds/linux-arm64 here (made by npm run build:prebuilds on linux-x64 with g++-aarch64-linux-gnu)');
    return;
  }
  const elf = await fs.readFile(file);
  t.equal(elf.toString('latin1', 1, 4), 'ELF');
  t.equal(elf[4], 2, '64-bit');
  t.equal(elf[5], 1, 'little-endian');
  t.equal(elf.readUInt16LE(16), 3, 'a shared object (ET_DYN)');
  t.equal(elf.readUInt16LE(18), 183, 'for aarch64 (EM_AARCH64)');
});
