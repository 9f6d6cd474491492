#!/usr/bin/env node
// Bundles every browser page script, lib/<role>/web/<name>.page.ts, into
// dist/web/<name>.js with esbuild (minified, one file each, no runtime
// loading). Run by `npm run build` and `prepare`, so `npm install` and
// `npm start` find the pages built. The server side of each page (HTML,
// routes) is ordinary TypeScript compiled by tsc; only the `web/` folders
// are browser code, type-checked by tsconfig.web.json.
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const outDir = path.join(root, 'dist', 'web');

function pages() {
  const found = [];
  const lib = path.join(root, 'lib');
  for (const role of fs.readdirSync(lib, { withFileTypes: true })) {
    if (!role.isDirectory()) continue;
    const web = path.join(lib, role.name, 'web');
    if (!fs.existsSync(web)) continue;
    for (const name of fs.readdirSync(web)) {
      if (name.endsWith('.page.ts')) found.push(path.join(web, name));
    }
  }
  return found.sort();
}

async function main() {
  const entries = pages();
  if (entries.length === 0) return;
  let esbuild;
  try {
    esbuild = require('esbuild');
  } catch {
    // An install without devDependencies (a device that only runs the
    // agent) has no esbuild; the pages it would serve are not built, and
    // the servers say so when asked for them.
    console.warn('build-web: esbuild is not installed; web pages not built');
    return;
  }
  fs.mkdirSync(outDir, { recursive: true });
  await esbuild.build({
    entryPoints: Object.fromEntries(entries.map((p) => [path.basename(p, '.page.ts'), p])),
    outdir: outDir,
    bundle: true,
    minify: true,
    sourcemap: true,
    format: 'iife',
    target: ['chrome110', 'firefox110', 'safari16'],
    legalComments: 'linked',
    logLevel: 'warning',
  });
}

main().catch((err) => {
  console.error(err.message);
  process.exit(1);
});
