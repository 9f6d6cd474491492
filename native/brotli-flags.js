// Where binding.gyp finds Brotli, printed for gyp's <!(...) expansion.
//   node native/brotli-flags.js include   include directory (macOS)
//   node native/brotli-flags.js libs      link arguments
// Source builds link the system's shared libraries (Debian/Ubuntu
// libbrotli-dev, Homebrew brotli). Prebuilt binaries must not need them on
// the user's machine: REVPATCH_BROTLI_STATIC=1 links the static archives
// instead, with their symbols kept private (scripts/prebuild.sh sets it).
// BROTLI_PREFIX names the installation to use (its include/ and lib/);
// REVPATCH_BROTLI_LIBDIR the library directory, e.g. a multiarch one.
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const mac = process.platform === 'darwin';
const prefixes = process.env.BROTLI_PREFIX
  ? [process.env.BROTLI_PREFIX]
  : ['/opt/homebrew/opt/brotli', '/usr/local/opt/brotli', '/opt/homebrew', '/opt/local', '/usr/local', '/usr'];
const prefix = prefixes.find((p) => fs.existsSync(path.join(p, 'include', 'brotli', 'encode.h'))) || prefixes[0];

function libDirs() {
  if (process.env.REVPATCH_BROTLI_LIBDIR) return [process.env.REVPATCH_BROTLI_LIBDIR];
  const dirs = [path.join(prefix, 'lib')];
  const multiarch = { x64: 'x86_64-linux-gnu', arm64: 'aarch64-linux-gnu' }[process.env.PREBUILD_ARCH || process.arch];
  if (multiarch) dirs.push(path.join(prefix, 'lib', multiarch));
  return dirs;
}

function staticArchive(name) {
  for (const dir of libDirs()) {
    for (const file of [`lib${name}.a`, `lib${name}-static.a`]) {
      if (fs.existsSync(path.join(dir, file))) return path.join(dir, file);
    }
  }
  throw new Error(`brotli-flags: no static lib${name}.a in ${libDirs().join(', ')} (set BROTLI_PREFIX or REVPATCH_BROTLI_LIBDIR)`);
}

function libs() {
  if (process.env.REVPATCH_BROTLI_STATIC === '1') {
    const archives = ['brotlienc', 'brotlidec', 'brotlicommon'].map(staticArchive);
    return mac ? archives : ['-Wl,--exclude-libs,ALL', ...archives];
  }
  const dirs = mac || process.env.BROTLI_PREFIX ? [`-L${libDirs()[0]}`] : [];
  return [...dirs, '-lbrotlienc', '-lbrotlidec'];
}

const what = process.argv[2];
if (what === 'include') console.log(path.join(prefix, 'include'));
else if (what === 'libs') console.log(libs().join(' '));
else {
  console.error('usage: node native/brotli-flags.js include|libs');
  process.exit(2);
}
