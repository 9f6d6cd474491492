/**
 * The folders of lib/ are the roles of DESIGN.md, and imports flow one way:
 * cli and bench → agent and fleet → device, repo and report → publisher
 * and patch → engine. This reads every import of lib/ and fails on one
 * that points up or sideways, so the layering cannot drift unnoticed.
 */
import t from 'tap';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

const LIB = path.join(__dirname, '..', 'lib');

/** What each folder may import besides itself. */
const ALLOWED: Record<string, readonly string[]> = {
  engine: [],
  patch: ['engine'],
  publisher: ['patch', 'engine'],
  repo: ['patch', 'engine'],
  report: ['patch', 'engine'],
  device: ['repo', 'patch', 'engine'],
  agent: ['device', 'repo', 'report', 'patch', 'engine'],
  fleet: ['repo', 'report', 'patch', 'engine'],
  bench: ['agent', 'fleet', 'device', 'repo', 'report', 'publisher', 'patch', 'engine'],
  cli: ['bench', 'agent', 'fleet', 'device', 'repo', 'report', 'publisher', 'patch', 'engine'],
};

async function tsFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await fs.readdir(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await tsFiles(full)));
    else if (entry.name.endsWith('.ts')) out.push(full);
  }
  return out;
}

/** Relative module specifiers of import/export/require/import() in `source`. */
export function relativeImports(source: string): string[] {
  const found: string[] = [];
  const re = /(?:\bfrom\s+|\brequire\(\s*|\bimport\(\s*|^\s*import\s+)(['"])(\.{1,2}\/[^'"]+)\1/gm;
  for (let m = re.exec(source); m; m = re.exec(source)) found.push(m[2]);
  return found;
}

t.test('every folder of lib/ is a role the layering names', async (t) => {
  const entries = await fs.readdir(LIB, { withFileTypes: true });
  const folders = entries.filter((e) => e.isDirectory()).map((e) => e.name).sort();
  t.same(folders, Object.keys(ALLOWED).sort());
  const loose = entries.filter((e) => e.isFile()).map((e) => e.name);
  t.same(loose, ['index.ts'], 'only the public API sits at the top of lib/');
});

t.test('imports in lib/ flow one way', async (t) => {
  const violations: string[] = [];
  let imports = 0;
  for (const file of await tsFiles(LIB)) {
    const rel = path.relative(LIB, file);
    const from = rel.split(path.sep)[0];
    if (from === 'index.ts') continue;
    const source = await fs.readFile(file, 'utf8');
    for (const spec of relativeImports(source)) {
      imports += 1;
      const target = path.relative(LIB, path.resolve(path.dirname(file), spec));
      const to = target.split(path.sep)[0];
      if (to === from) continue;
      if (!ALLOWED[from]?.includes(to)) violations.push(`${rel} imports ${spec} (${from} → ${to})`);
    }
  }
  t.ok(imports > 100, `read ${imports} imports`);
  t.same(violations, [], 'no import points up or sideways');
});

t.test('the import reader finds every form of import', async (t) => {
  const src = [
    "import { a } from './x';",
    "import type { B } from '../device/device';",
    "export { c } from './y';",
    "const m = require('../repo/client') as typeof import('../repo/client');",
    "import './side-effect';",
    "import * as path from 'node:path';",
  ].join('\n');
  t.same(relativeImports(src), ['./x', '../device/device', './y', '../repo/client', '../repo/client', './side-effect']);
});
