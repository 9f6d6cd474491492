#!/usr/bin/env bash
# Builds the engine and its unit tests with clang++ (-std=c++17 -Wall
# -Wextra -Wpedantic -Werror, as native/CMakeLists.txt sets) in build-clang/
# and runs them: the compiler macOS uses, checked on Linux.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v clang++ >/dev/null || { echo "clang-test: clang++ not found (apt-get install clang)" >&2; exit 1; }
dir="${REVPATCH_BUILD_DIR:-build-clang}"
cmake -S native -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ >/dev/null
cmake --build "$dir" -j "$(nproc 2>/dev/null || echo 2)"
ctest --test-dir "$dir" --output-on-failure
