/**
 * bench/RESULTS.md is shared by benchmark steps: each replaces only the
 * part between its own markers (bench/sections.js), or appends it.
 */
import t from 'tap';
import * as path from 'node:path';
import { ROOT } from './helpers';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { replaceSection, readSection } = require(path.join(ROOT, 'bench', 'sections.js')) as {
  replaceSection(text: string, name: string, body: string): string;
  readSection(text: string, name: string): string | null;
};

const other = '<!-- fleet-scenarios:begin -->\nscenarios v1\n<!-- fleet-scenarios:end -->';

t.test('a section is appended with its markers when the file has none', async (t) => {
  const out = replaceSection('# Benchmarks\n\nolder text\n', 'fleet-ingest', 'ingest v1\n');
  t.equal(out, '# Benchmarks\n\nolder text\n\n<!-- fleet-ingest:begin -->\ningest v1\n<!-- fleet-ingest:end -->\n');
  t.equal(readSection(out, 'fleet-ingest'), 'ingest v1');
});

t.test('replacing a section leaves everything around it byte for byte', async (t) => {
  const before = `# Benchmarks\n\nhead\n\n<!-- fleet-ingest:begin -->\nold\nlines\n<!-- fleet-ingest:end -->\n\n${other}\n\ntail\n`;
  const out = replaceSection(before, 'fleet-ingest', 'new');
  t.equal(out, `# Benchmarks\n\nhead\n\n<!-- fleet-ingest:begin -->\nnew\n<!-- fleet-ingest:end -->\n\n${other}\n\ntail\n`);
  t.equal(readSection(out, 'fleet-scenarios'), 'scenarios v1', "the other step's section is untouched");
  t.equal(replaceSection(out, 'fleet-ingest', 'new'), out, 'the same body twice changes nothing');
});

t.test('two steps writing in either order keep both sections', async (t) => {
  let a = replaceSection('# B\n', 'fleet-ingest', 'i1');
  a = replaceSection(a, 'fleet-scenarios', 's1');
  a = replaceSection(a, 'fleet-ingest', 'i2');
  let b = replaceSection('# B\n', 'fleet-scenarios', 's1');
  b = replaceSection(b, 'fleet-ingest', 'i2');
  for (const text of [a, b]) {
    t.equal(readSection(text, 'fleet-ingest'), 'i2');
    t.equal(readSection(text, 'fleet-scenarios'), 's1');
    t.equal(text.split('fleet-ingest:begin').length, 2, 'one ingest section');
  }
});

t.test('a broken marker pair is refused rather than guessed at', async (t) => {
  const begin = '<!-- fleet-ingest:begin -->';
  const end = '<!-- fleet-ingest:end -->';
  t.throws(() => replaceSection(`x\n${begin}\nbody\n`, 'fleet-ingest', 'b'), /not one begin\/end pair/, 'end missing');
  t.throws(() => replaceSection(`x\n${end}\nbody\n`, 'fleet-ingest', 'b'), /not one begin\/end pair/, 'begin missing');
  t.throws(() => replaceSection(`${end}\n${begin}\n`, 'fleet-ingest', 'b'), /not one begin\/end pair/, 'reversed');
  t.throws(() => replaceSection(`${begin}\n${end}\n${begin}\n${end}\n`, 'fleet-ingest', 'b'), /not one begin\/end pair/, 'twice');
  t.throws(() => replaceSection('x', 'Fleet Ingest', 'b'), /kebab-case/, 'a name that could not be a marker');
});
