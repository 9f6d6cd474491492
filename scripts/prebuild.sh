#!/usr/bin/env bash
# Builds the prebuilt addons that `npm install` loads without a compiler:
# prebuilds/<platform>-<arch>/revpatch.node, made by prebuildify (--napi, so
# one binary serves every Node version with Node-API 8; --strip).
#   scripts/prebuild.sh            this machine's platform-arch, and on
#                                  linux-x64 also linux-arm64 when the cross
#                                  compiler is installed
#   scripts/prebuild.sh --host     this machine's only
#   scripts/prebuild.sh --arm64    linux-arm64 only (cross, from linux-x64)
# The build runs in a temporary copy of the sources, so build/ of the
# checkout is never touched; node-gyp uses the installed Node's headers
# (nodedir) and downloads nothing when they are there.
# linux-arm64 is built for plain ARMv8-A (every 64-bit Arm CPU): SHA-256
# runs the portable code there. darwin-*: run this on a Mac of each arch, or
# let .github/workflows/ci.yml do it (docs/portability.md).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
host="$(node -p 'process.platform + "-" + process.arch')"

want_host=1
want_arm64=0
case "${1:-}" in
  --host) ;;
  --arm64) want_host=0; want_arm64=1 ;;
  "") [ "$host" = linux-x64 ] && command -v aarch64-linux-gnu-g++ >/dev/null && want_arm64=1 ;;
  *) echo "usage: scripts/prebuild.sh [--host|--arm64]" >&2; exit 2 ;;
esac

# The running Node's own headers, when its prefix has them (Debian, Homebrew,
# nodejs.org tarballs): node-gyp then needs no download.
prefix="$(dirname "$(dirname "$(command -v node)")")"
if [ -f "$prefix/include/node/node_api.h" ] && [ -f "$prefix/include/node/common.gypi" ]; then
  export npm_config_nodedir="$prefix"
fi

# Brotli is linked statically and kept private (native/brotli-flags.js), so
# the binary needs nothing beyond the C and C++ runtimes on the user's machine.
export REVPATCH_BROTLI_STATIC=1
# libzstd likewise (native/zstd-flags.js); its version is the one zstd
# stream recipes of patches made with this build name.
export REVPATCH_ZSTD_STATIC=1
# The nbdkit plugin is built from source only (native/nbdkit/nbdkit-flags.js).
export REVPATCH_NBDKIT=0

stage="$(mktemp -d "${TMPDIR:-/tmp}/revpatch-prebuild.XXXXXX")"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/native"
cp -R binding.gyp package.json "$stage/"
cp -R native/engine native/addon native/nbdkit native/brotli-flags.js native/zstd-flags.js "$stage/native/"
ln -s "$root/node_modules" "$stage/node_modules"
prebuildify="$root/node_modules/.bin/prebuildify"

build() {  # build <arch> [env...]
  local arch=$1; shift
  rm -rf "$stage/build" "$stage/prebuilds"
  (cd "$stage" && env "$@" "$prebuildify" --napi --strip --arch "$arch")
  local tuple
  tuple="$(ls "$stage/prebuilds")"
  rm -rf "prebuilds/$tuple"
  mkdir -p prebuilds
  cp -R "$stage/prebuilds/$tuple" "prebuilds/$tuple"
  for f in "prebuilds/$tuple"/*.node; do
    echo "$f: $(wc -c <"$f") bytes, sha256 $(sha256sum "$f" 2>/dev/null | cut -c1-16 || shasum -a 256 "$f" | cut -c1-16)"
  done
}

if [ $want_host = 1 ]; then
  build "$(node -p process.arch)"
fi
if [ $want_arm64 = 1 ]; then
  if [ "$host" != linux-x64 ] || ! command -v aarch64-linux-gnu-g++ >/dev/null; then
    echo "prebuild: linux-arm64 is cross-compiled on linux-x64 with g++-aarch64-linux-gnu" >&2
    exit 1
  fi
  build arm64 PREBUILD_ARCH=arm64 CC=aarch64-linux-gnu-gcc CXX=aarch64-linux-gnu-g++ LINK=aarch64-linux-gnu-g++ \
    AR=aarch64-linux-gnu-ar PREBUILD_STRIP_BIN=aarch64-linux-gnu-strip
fi
