// Where binding.gyp finds libzstd, printed for gyp's <!(...) expansion.
//   node native/zstd-flags.js include   include directory (macOS)
//   node native/zstd-flags.js libs      link arguments
// Source builds link the system's shared library (Debian/Ubuntu
// libzstd-dev, Homebrew zstd). Prebuilt binaries must not need it on the
// user's machine: REVPATCH_ZSTD_STATIC=1 (scripts/prebuild.sh sets it, as
// it does REVPATCH_BROTLI_STATIC) links the static archive instead, with
// its symbols kept private. ZSTD_PREFIX names the installation to use (its
// include/ and lib/); REVPATCH_ZSTD_LIBDIR the library directory.
//
// The libzstd version is part of what a zstd stream's recipe names
// (native/engine/stream_codec.h): a device rebuilds a stream only with the
// version that made it, so prebuilds pin the version they link.
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const mac = process.platform === 'darwin';
const prefixes = process.env.ZSTD_PREFIX
  ? [process.env.ZSTD_PREFIX]
  : ['/opt/homebrew/opt/zstd', '/usr/local/opt/zstd', '/opt/homebrew', '/opt/local', '/usr/local', '/usr'];
const prefix = prefixes.find((p) => fs.existsSync(path.join(p, 'include', 'zstd.h'))) || prefixes[0];

function libDirs() {
  if (process.env.REVPATCH_ZSTD_LIBDIR) return [process.env.REVPATCH_ZSTD_LIBDIR];
  const dirs = [path.join(prefix, 'lib')];
  const multiarch = { x64: 'x86_64-linux-gnu', arm64: 'aarch64-linux-gnu' }[process.env.PREBUILD_ARCH || process.arch];
  if (multiarch) dirs.push(path.join(prefix, 'lib', multiarch));
  return dirs;
}

function staticArchive() {
  for (const dir of libDirs()) {
    if (fs.existsSync(path.join(dir, 'libzstd.a'))) return path.join(dir, 'libzstd.a');
  }
  throw new Error(`zstd-flags: no static libzstd.a in ${libDirs().join(', ')} (set ZSTD_PREFIX or REVPATCH_ZSTD_LIBDIR)`);
}

function libs() {
  if (process.env.REVPATCH_ZSTD_STATIC === '1') {
    // libzstd's threads (multi-threaded recipes) need pthread.
    return mac ? [staticArchive()] : ['-Wl,--exclude-libs,ALL', staticArchive(), '-lpthread'];
  }
  const dirs = mac || process.env.ZSTD_PREFIX ? [`-L${libDirs()[0]}`] : [];
  return [...dirs, '-lzstd'];
}

const what = process.argv[2];
if (what === 'include') console.log(path.join(prefix, 'include'));
else if (what === 'libs') console.log(libs().join(' '));
else {
  console.error('usage: node native/zstd-flags.js include|libs');
  process.exit(2);
}
