import * as crypto from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as net from 'node:net';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import t, { type Test } from 'tap';
import { createPatch } from '../lib/publisher/create';
import { Device } from '../lib/device/device';
import { download } from '../lib/repo/download';
import * as engine from '../lib/engine/engine';
import { writeKeyPair } from '../lib/patch/keys';
import { PatchFile } from '../lib/patch/patch_file';
import { RepositoryClient } from '../lib/repo/client';
import { Repository } from '../lib/repo/publisher';
import { serveRepository } from '../lib/repo/serve';
import type { RepoPatch } from '../lib/repo/types';
import { downloadPath, installFromDownload, type PatchSource } from '../lib/device/stream_install';
import { addonBuilt, ADDON, snapshot, stampedImage, tempDir } from './helpers';
import { rejectsWith } from './repo_fixture';

type Tap = Test;

const streaming =
  typeof (engine as unknown as { createFeed?: unknown }).createFeed === 'function' &&
  typeof (PatchFile as unknown as { openGrowing?: unknown }).openGrowing === 'function';
const SKIP = !addonBuilt()
  ? `needs the native addon (${ADDON})`
  : !streaming
    ? 'this build has no streaming install yet (engine.createFeed / PatchFile.openGrowing / Device.installPatchFile)'
    : false;

const BLOCKS = 1024; // 4 MiB image, a quarter of it changed: a payload of ~1 MiB in 16 chunks
const FAST = { retries: 0, connectTimeoutMs: 20_000, readTimeoutMs: 20_000, minBytesPerSecond: 0 };

async function fixture(t: Tap) {
  const dir = await tempDir(t, 'revpatch-stream-');
  const keys = await writeKeyPair(path.join(dir, 'keys'));
  const base = path.join(dir, 'base.img');
  const next = path.join(dir, 'next.img');
  const image = stampedImage(BLOCKS);
  await fs.writeFile(base, image);
  const changed = Buffer.from(image);
  // Zeroed blocks first (a ZERO operation), then scattered new bytes (data
  // operations): the engine has work to do before the last bytes arrive.
  changed.fill(0, 0, 64 * 4096);
  for (let b = 64; b < BLOCKS; b += 4) crypto.randomBytes(4096).copy(changed, b * 4096);
  await fs.writeFile(next, changed);
  const patchPath = path.join(dir, 'p.rvp');
  await createPatch({ from: base, to: next, keyPath: keys.secretKeyPath, id: 'big-1', out: patchPath, chunkSize: 64 * 1024 });
  const repoDir = path.join(dir, 'repo');
  const repo = await Repository.init(repoDir, { publisherKey: keys.publicKeyPath });
  await repo.publish(patchPath);
  const server = await serveRepository(repoDir, { port: 0 });
  t.teardown(() => server.close());
  const state = path.join(dir, 'state');
  const device = await Device.init(state, { volume: base, trust: keys.publicKeyPath });
  const client = await RepositoryClient.open(state, {
    url: server.url,
    rootPath: path.join(repoDir, 'metadata', '1.root.json'),
    transport: FAST,
  });
  const [patch] = await client.patches();
  return { dir, state, device, client, patch, patchPath, next, server, repoDir };
}

/** A PatchSource that downloads from `url` (a proxy, a tampered copy) with the verified length and hash. */
function sourceAt(url: string, extra: object = {}): PatchSource {
  return {
    download: (p: RepoPatch, dest, options) =>
      download(url, dest, { ...FAST, ...extra, ...options, expectedLength: p.length, sha256: p.sha256 }),
  };
}

/** A TCP proxy that cuts the first connection after `cutAfter` bytes. */
async function cuttingProxy(t: Tap, port: number, cutAfter: number) {
  let n = 0;
  const server = net.createServer((client) => {
    const first = ++n === 1;
    const up = net.connect(port, '127.0.0.1');
    let sent = 0;
    client.on('data', (d) => up.write(d));
    up.on('data', (d: Buffer) => {
      if (first && sent + d.length > cutAfter) {
        client.write(d.subarray(0, cutAfter - sent));
        client.destroy();
        up.destroy();
        return;
      }
      sent += d.length;
      client.write(d);
    });
    up.on('end', () => client.end());
    up.on('error', () => client.destroy());
    client.on('error', () => up.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => server.close());
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

t.test('streaming install stages the patch and applies while the download is still running', { skip: SKIP }, async (t) => {
  const f = await fixture(t);
  let written = 0;
  let appliedBeforeDownloadEnded = 0;
  const record = await installFromDownload(f.device, f.client, f.patch, {
    maxBytesPerSecond: 2 * 1024 * 1024,
    onWritten: (n) => {
      written = n;
    },
    onApplyProgress: (done) => {
      if (written < f.patch.length && done > 0) appliedBeforeDownloadEnded = done;
    },
  });
  t.equal(record.state, 'staged');
  t.ok(appliedBeforeDownloadEnded > 0, `the engine applied ${appliedBeforeDownloadEnded} payload bytes before the download ended`);
  const reopened = await Device.open(f.state);
  const info = await engine.viewInfo(reopened.nextBootView());
  t.equal(info.digest, (await engine.hashImage(f.next, 4096)).digest, 'the next-boot view is the new image');
  await t.rejects(fs.stat(downloadPath(f.state, f.patch)), 'the download is removed once installed');
});

t.test('a download dropped mid-file fails with the device unchanged, and the next attempt resumes', { skip: SKIP }, async (t) => {
  const f = await fixture(t);
  const url = new URL(f.client.targetUrl(f.patch));
  const proxy = await cuttingProxy(t, Number(url.port), Math.floor(f.patch.length / 2));
  const before = await snapshot(path.join(f.state, 'layers'));
  const record = JSON.stringify(f.device.list());
  await rejectsWith(t, installFromDownload(f.device, sourceAt(`${proxy}${url.pathname}`), f.patch), 'E_NETWORK');
  t.equal(JSON.stringify((await Device.open(f.state)).list()), record, 'the device record is unchanged');
  const kept = (await fs.stat(downloadPath(f.state, f.patch))).size;
  t.ok(kept > 0 && kept < f.patch.length, `the partial download (${kept} bytes) is kept`);
  t.ok(before, 'layers snapshot taken');
  let resumedFrom = -1;
  const staged = await installFromDownload(f.device, {
    download: async (p, dest, options) => {
      const r = await f.client.download(p, dest, options);
      resumedFrom = r.resumedFrom;
      return r;
    },
  }, f.patch);
  t.equal(staged.state, 'staged');
  t.equal(resumedFrom, kept, 'the second download continued the first');
});

t.test('a valid patch served under another name is refused (E_REPO_METADATA) and not kept', { skip: SKIP }, async (t) => {
  const f = await fixture(t);
  const lie = { ...f.patch, id: 'other-1', target: 'patches/other-1-v1.rvp' };
  await rejectsWith(t, installFromDownload(f.device, sourceAt(f.client.targetUrl(f.patch)), lie), 'E_REPO_METADATA');
  t.same(f.device.list(), []);
  await t.rejects(fs.stat(downloadPath(f.state, lie)));
});

t.test('a patch whose payload or source digest is not the one the repository announced is refused (E_REPO_METADATA)', { skip: SKIP }, async (t) => {
  const f = await fixture(t);
  const other = '00'.repeat(32);
  for (const lie of [{ ...f.patch, payloadDigest: other }, { ...f.patch, sourceDigest: other }]) {
    const err = await rejectsWith(t, installFromDownload(f.device, sourceAt(f.client.targetUrl(f.patch)), lie), 'E_REPO_METADATA');
    t.match(err?.message, lie.payloadDigest === other ? /another payload/ : /another source view/);
    t.same((await Device.open(f.state)).list(), []);
    await t.rejects(fs.stat(downloadPath(f.state, lie)), 'the download is not kept');
  }
});

t.test('a tampered payload is refused while streaming, the device unchanged', { skip: SKIP }, async (t) => {
  const f = await fixture(t);
  const stored = path.join(f.repoDir, 'targets', 'patches', `${f.patch.sha256}.big-1-v1.rvp`);
  const bytes = await fs.readFile(stored);
  bytes[bytes.length - 100] ^= 0xff;
  await fs.writeFile(stored, bytes);
  const err = await rejectsWith(t, installFromDownload(f.device, f.client, f.patch), 'E_HASH_MISMATCH');
  t.ok(err);
  t.same((await Device.open(f.state)).list(), [], 'nothing staged');
});

t.test('a patch whose header announces another length than the repository is E_LENGTH_MISMATCH', { skip: SKIP }, async (t) => {
  const f = await fixture(t);
  const longer = { ...f.patch, length: f.patch.length + 10 };
  await rejectsWith(t, installFromDownload(f.device, sourceAt(f.client.targetUrl(f.patch)), longer), 'E_LENGTH_MISMATCH');
  t.same(f.device.list(), []);
});
