#!/usr/bin/env bash
# Cross-compiles the engine and its unit tests for aarch64 (build-arm64/) and
# runs them under qemu-user: the arm64 check on an x86-64 machine.
# Needs (Debian): g++-aarch64-linux-gnu, qemu-user-static (or qemu-user),
# libbrotli-dev:arm64 and libzstd-dev:arm64, and zlib1g-dev:arm64 for the
# deflate test's zlib cases (dpkg --add-architecture arm64 && apt-get update).
# The build uses -march=armv8-a+crypto, so the ARMv8 SHA-256 instructions are
# what runs, and sha256_test compares them with the portable code.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${REVPATCH_BUILD_DIR:-build-arm64}"
for tool in aarch64-linux-gnu-g++ cmake ctest; do
  command -v "$tool" >/dev/null || { echo "arm64-test: $tool not found (apt-get install g++-aarch64-linux-gnu cmake)" >&2; exit 1; }
done
if ! command -v qemu-aarch64-static >/dev/null && ! command -v qemu-aarch64 >/dev/null; then
  echo "arm64-test: qemu-aarch64 not found (apt-get install qemu-user-static)" >&2
  exit 1
fi
if [ ! -e /usr/lib/aarch64-linux-gnu/libbrotlienc.so ]; then
  echo "arm64-test: no arm64 brotli (dpkg --add-architecture arm64 && apt-get update && apt-get install libbrotli-dev:arm64)" >&2
  exit 1
fi
if [ ! -e /usr/lib/aarch64-linux-gnu/libzstd.so ]; then
  echo "arm64-test: no arm64 zstd (dpkg --add-architecture arm64 && apt-get update && apt-get install libzstd-dev:arm64)" >&2
  exit 1
fi
cmake -S native -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_TOOLCHAIN_FILE="$PWD/native/cmake/aarch64-linux-gnu.cmake" >/dev/null
cmake --build "$dir" -j "$(nproc 2>/dev/null || echo 2)"
log="$dir/ctest.log"
ctest --test-dir "$dir" --output-on-failure --timeout 900 -V >"$log" 2>&1 || { cat "$log"; exit 1; }
# The SHA-256 check means something only if the ARMv8 path is the one used.
if ! grep -q "sha256 implementation: armv8" "$log"; then
  echo "arm64-test: sha256_test did not run the ARMv8 instructions path" >&2
  grep "sha256 implementation" "$log" >&2 || true
  exit 1
fi
passed=$(grep -Eo '[0-9]+ passed, 0 failed' "$log" | awk '{s += $1} END {print s + 0}')
binaries=$(grep -c ' Passed ' "$log" || true)
echo "arm64 (qemu): $binaries test binaries, $passed test cases passed; sha256: armv8"
