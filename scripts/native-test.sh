#!/usr/bin/env bash
# Builds the engine on its own with CMake and runs its unit tests (ctest).
#   scripts/native-test.sh              release build with debug info
#   scripts/native-test.sh --sanitize   the same under AddressSanitizer + UBSan
set -euo pipefail
cd "$(dirname "$0")/.."
dir=build-native
flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo)
if [ "${1:-}" = "--sanitize" ]; then
  dir=build-native-asan
  flags+=(-DREVPATCH_SANITIZE=ON)
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
fi
cmake -S native -B "$dir" "${flags[@]}" >/dev/null
cmake --build "$dir" -j "$(nproc 2>/dev/null || echo 2)"
ctest --test-dir "$dir" --output-on-failure
