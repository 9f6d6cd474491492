/** Shared fixture of the repository tests: a publisher key, two images, signed patches, a repository. */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import type { Test as Tap } from 'tap';
import { createPatch } from '../lib/publisher/create';
import { RevpatchError } from '../lib/engine/errors';
import { writeKeyPair } from '../lib/patch/keys';
import { Repository } from '../lib/repo/publisher';
import { stampedImage, tempDir } from './helpers';

export interface RepoFixture {
  dir: string;
  repoDir: string;
  keyPath: string;
  pubPath: string;
  base: string;
  patch1: string;
  patch2: string;
  repo: Repository;
}

export async function rejectsWith(t: Tap, promise: Promise<unknown>, code: string, name?: string): Promise<RevpatchError | undefined> {
  let caught: unknown;
  try {
    await promise;
  } catch (err) {
    caught = err;
  }
  const got = caught instanceof RevpatchError ? caught.code : caught === undefined ? 'no error' : String(caught);
  t.equal(got, code, name ?? `rejects with ${code}`);
  return caught instanceof RevpatchError ? caught : undefined;
}

export async function repoFixture(t: Tap, now?: () => Date): Promise<RepoFixture> {
  const dir = await tempDir(t, 'revpatch-repo-');
  const keys = await writeKeyPair(path.join(dir, 'keys'));
  const base = path.join(dir, 'base.img');
  const v1 = path.join(dir, 'v1.img');
  const v2 = path.join(dir, 'v2.img');
  const image = stampedImage(64);
  await fs.writeFile(base, image);
  const one = Buffer.from(image);
  stampedImage(4, 'one').copy(one, 8 * 4096);
  await fs.writeFile(v1, one);
  const two = Buffer.from(one);
  stampedImage(4, 'two').copy(two, 20 * 4096);
  await fs.writeFile(v2, two);
  const patch1 = path.join(dir, 'p1.rvp');
  const patch2 = path.join(dir, 'p2.rvp');
  await createPatch({ from: base, to: v1, keyPath: keys.secretKeyPath, id: 'fix-1', out: patch1, version: 1 });
  await createPatch({ from: v1, to: v2, keyPath: keys.secretKeyPath, id: 'fix-2', parent: 'fix-1', out: patch2, version: 2 });
  const repoDir = path.join(dir, 'repo');
  const repo = await Repository.init(repoDir, { publisherKey: keys.publicKeyPath, now });
  return { dir, repoDir, keyPath: keys.secretKeyPath, pubPath: keys.publicKeyPath, base, patch1, patch2, repo };
}
