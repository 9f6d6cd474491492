'use strict';
const fs = require('node:fs');
/**
 * bench/RESULTS.md is written by several benchmark steps; each owns the
 * part between `<!-- NAME:begin -->` and `<!-- NAME:end -->` and replaces
 * only that, so the steps can run apart and in any order.
 */

function markers(name) {
  if (!/^[a-z][a-z0-9-]*$/.test(name)) throw new Error(`section name must be kebab-case, not ${JSON.stringify(name)}`);
  return [`<!-- ${name}:begin -->`, `<!-- ${name}:end -->`];
}

/**
 * `text` with section `name` set to `body`: replaced where both markers are
 * (in order, once each), appended with its markers at the end otherwise.
 * Throws on a half-present, repeated or reversed pair rather than guess.
 */
function replaceSection(text, name, body) {
  const [begin, end] = markers(name);
  const b = text.indexOf(begin);
  const e = text.indexOf(end);
  const block = `${begin}\n${body.replace(/\n+$/, '')}\n${end}`;
  if (b === -1 && e === -1) {
    const base = text.replace(/\n*$/, '');
    return `${base}${base ? '\n\n' : ''}${block}\n`;
  }
  if (b === -1 || e === -1 || e < b || text.indexOf(begin, b + 1) !== -1 || text.indexOf(end, e + 1) !== -1) {
    throw new Error(`the ${name} markers in the results file are not one begin/end pair`);
  }
  return text.slice(0, b) + block + text.slice(e + end.length);
}

/** The body of section `name`, or null when the text has none. */
function readSection(text, name) {
  const [begin, end] = markers(name);
  const b = text.indexOf(begin);
  const e = text.indexOf(end);
  if (b === -1 || e === -1 || e < b) return null;
  return text.slice(b + begin.length, e).replace(/^\n/, '').replace(/\n$/, '');
}

/** Sets section `name` of the results file `file` to `body` (creating the file). */
function writeSection(file, name, body) {
  const old = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
  fs.writeFileSync(file, replaceSection(old, name, body));
}

module.exports = { replaceSection, readSection, writeSection };
