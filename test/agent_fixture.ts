/**
 * A small world for the agent and attack tests: stamped images, a publisher
 * key, patches fix-1 (base -> v1) and fix-2 (v1 -> v2, stacked on fix-1), a
 * TUF repository made with the publisher, a loopback HTTP server whose
 * answers a test can replace per path (to serve tampered variants), and a
 * device set up to trust the repository's first root.
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { Device } from '../lib/device/device';
import { writeKeyPair } from '../lib/patch/keys';
import { createPatch } from '../lib/publisher/create';
import { Repository } from '../lib/repo/publisher';
import { RepositoryClient } from '../lib/repo/client';
import type { RepositoryClientOptions } from '../lib/repo/types';
import { Agent, type AgentOptions } from '../lib/agent/agent';
import { AGENT_LOG_FILE, AUDIT_FILE } from '../lib/agent/log';
import { BLOCK, snapshot, stampedImage, tempDir } from './helpers';
import { startRepositoryNginx } from './fixtures/nginx';

export const BLOCKS = 128;

export function images() {
  const base = stampedImage(BLOCKS, 'base');
  const v1 = Buffer.from(base);
  stampedImage(4, 'v1').copy(v1, 10 * BLOCK);
  v1.fill(0, 50 * BLOCK, 52 * BLOCK);
  const v2 = Buffer.from(v1);
  stampedImage(3, 'v2').copy(v2, 30 * BLOCK);
  const other = Buffer.from(base);
  stampedImage(2, 'other').copy(other, 90 * BLOCK);
  return { base, v1, v2, other };
}

/** Replaces the answer for one request; return true if it answered. */
export type Interceptor = (req: http.IncomingMessage, res: http.ServerResponse, urlPath: string) => boolean | Promise<boolean>;

export interface TestServer {
  url: string;
  /** Request paths in order. */
  requests: string[];
  intercept: Interceptor | null;
  close(): Promise<void>;
}

/** A static server over `root` (GET only, whole files), with a per-test interceptor. */
export async function startServer(root: string): Promise<TestServer> {
  const state: TestServer = { url: '', requests: [], intercept: null, close: async () => undefined };
  const server = http.createServer((req, res) => {
    void (async () => {
      const urlPath = decodeURIComponent((req.url ?? '/').split('?')[0]);
      state.requests.push(urlPath);
      if (state.intercept && (await state.intercept(req, res, urlPath))) return;
      const file = path.join(root, urlPath);
      if (!file.startsWith(root + path.sep)) {
        res.writeHead(404).end();
        return;
      }
      const body = await fs.readFile(file).catch(() => null);
      if (!body) {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { 'Content-Length': body.length, 'Content-Type': 'application/octet-stream' }).end(body);
    })().catch(() => res.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  state.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  state.close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return state;
}

export interface PatchExtra {
  parent?: string;
  version?: number;
  chunkSize?: number;
}

export interface World {
  dir: string;
  repoDir: string;
  state: string;
  pub: string;
  key: string;
  bytes: ReturnType<typeof images>;
  files: Record<string, string>;
  repo: Repository;
  server: TestServer;
  /** The clock the client and agent use; tests move it. */
  clock: { now: Date };
  device(): Promise<Device>;
  client(extra?: Partial<RepositoryClientOptions>): Promise<RepositoryClient>;
  agent(extra?: Partial<AgentOptions>, client?: Partial<RepositoryClientOptions>): Promise<Agent>;
  /** Makes a signed patch from two images (extra images by name in `bytes`). */
  patch(id: string, from: Buffer, to: Buffer, extra?: PatchExtra): Promise<string>;
  /** Digests of the state directory, without the agent's log and audit trail. */
  stateSnapshot(options?: { without?: string[] }): Promise<Record<string, string>>;
}

export const FAST_TRANSPORT = {
  retries: 1,
  backoffMs: 10,
  maxBackoffMs: 20,
  connectTimeoutMs: 2000,
  readTimeoutMs: 2000,
};

export async function makeWorld(
  t: { teardown(fn: () => unknown): void },
  options: { publish?: Array<'fix-1' | 'fix-2'>; maxBootAttempts?: number; rollout?: number } = {},
): Promise<World> {
  const dir = await tempDir(t, 'revpatch-agent-');
  const bytes = images();
  const files: Record<string, string> = {};
  for (const [name, data] of Object.entries(bytes)) {
    files[name] = path.join(dir, `${name}.img`);
    await fs.writeFile(files[name], data);
  }
  const keys = await writeKeyPair(path.join(dir, 'keys'));
  const clock = { now: new Date() };
  const repoDir = path.join(dir, 'repo');
  const repo = await Repository.init(repoDir, { publisherKey: keys.publicKeyPath, now: () => clock.now });
  const patch = async (id: string, from: Buffer, to: Buffer, extra: PatchExtra = {}) => {
    const a = path.join(dir, `${id}.${extra.version ?? 1}.from.img`);
    const b = path.join(dir, `${id}.${extra.version ?? 1}.to.img`);
    await fs.writeFile(a, from);
    await fs.writeFile(b, to);
    const out = path.join(dir, `${id}-v${extra.version ?? 1}.rvp`);
    await createPatch({ from: a, to: b, keyPath: keys.secretKeyPath, id, out, blockSize: BLOCK, ...extra });
    return out;
  };
  files['fix-1'] = await patch('fix-1', bytes.base, bytes.v1);
  files['fix-2'] = await patch('fix-2', bytes.v1, bytes.v2, { parent: 'fix-1' });
  for (const id of options.publish ?? ['fix-1', 'fix-2']) {
    await repo.publish(files[id], { rollout: options.rollout ?? 100, now: () => clock.now });
  }
  const server = await startServer(repoDir);
  t.teardown(() => server.close());
  const state = path.join(dir, 'state');
  const rootPath = path.join(repoDir, 'metadata', '1.root.json');
  await Device.init(state, {
    volume: files.base,
    trust: keys.publicKeyPath,
    blockSize: BLOCK,
    maxBootAttempts: options.maxBootAttempts,
    repository: { url: server.url, root: rootPath },
  });
  const world: World = {
    dir,
    repoDir,
    state,
    pub: keys.publicKeyPath,
    key: keys.secretKeyPath,
    bytes,
    files,
    repo,
    server,
    clock,
    device: () => Device.open(state),
    client: (extra = {}) =>
      RepositoryClient.open(state, { url: server.url, rootPath, now: () => clock.now, transport: FAST_TRANSPORT, ...extra }),
    agent: async (extra = {}, clientExtra = {}) =>
      new Agent({
        stateDir: state,
        client: await world.client(clientExtra),
        deviceId: 'test-device',
        ...extra,
        hooks: { now: () => clock.now, ...extra.hooks },
      }),
    patch,
    stateSnapshot: async ({ without = [] } = {}) => {
      const all = await snapshot(state);
      for (const name of Object.keys(all)) {
        if (name === AGENT_LOG_FILE || name === AUDIT_FILE || without.some((w) => name === w || name.startsWith(w))) delete all[name];
      }
      return all;
    },
  };
  return world;
}

/** The exported booted view of the device. */
export async function exported(world: World): Promise<Buffer> {
  const out = path.join(world.dir, `export-${Date.now()}-${Math.random().toString(16).slice(2)}.img`);
  await (await world.device()).export(out);
  const data = await fs.readFile(out);
  await fs.rm(out, { force: true });
  return data;
}

/**
 * A real nginx on 127.0.0.1 serving the repository in `root` (its metadata/
 * and targets/; test/fixtures/nginx.ts); a string saying
 * why if it cannot start (not installed: apt-get install -y nginx-light).
 */
export async function startNginx(t: { teardown(fn: () => unknown): void }, root: string): Promise<{ url: string } | string> {
  const nginx = await startRepositoryNginx(t, root);
  return typeof nginx === 'string' ? nginx : { url: nginx.url };
}
