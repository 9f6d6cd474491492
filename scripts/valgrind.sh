#!/usr/bin/env bash
# The leak and memory-error gate: the whole device lifecycle through the
# addon (scripts/valgrind-lifecycle.js: keygen, create, inspect, init,
# install, boot, confirm, export, remove, boot, export on a ~1 MiB image)
# under memcheck. Fails (exit 99) on any memory error or definite leak that
# native/valgrind.supp does not attribute to Node's own internals, or if the
# lifecycle itself fails. Needs the addon (build/Release, else a prebuild)
# and dist/.
#   scripts/valgrind.sh          npm run test:valgrind
# The full report is kept in build-valgrind/memcheck.log.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v valgrind >/dev/null || { echo "valgrind not found; on Debian: apt-get install valgrind" >&2; exit 1; }
# lib/engine/engine.ts loads build/Release first, then prebuilds/<platform>-<arch>/.
if [ ! -f build/Release/revpatch.node ]; then
  if compgen -G "prebuilds/$(node -p 'process.platform + "-" + process.arch')/*.node" >/dev/null; then
    echo "note: no source build in build/Release; checking the prebuilt addon in prebuilds/" >&2
  else
    echo "the addon is not built: npx node-gyp configure && npx node-gyp build -j 2" >&2
    exit 1
  fi
fi
[ -f dist/cli/cli.js ] || { echo "dist/ is not built: npm run build:ts" >&2; exit 1; }

mkdir -p build-valgrind
log=build-valgrind/memcheck.log
work=$(mktemp -d "${TMPDIR:-/tmp}/revpatch-valgrind-XXXXXX")
trap 'rm -rf "$work"' EXIT

started=$(date +%s)
status=0
# --smc-check: V8 writes and runs machine code. Threads (libuv's pool, where
# the engine runs) are followed by default.
valgrind --tool=memcheck --leak-check=full --show-leak-kinds=definite \
  --errors-for-leak-kinds=definite --error-exitcode=99 --smc-check=all-non-file \
  --num-callers=40 --suppressions=native/valgrind.supp --log-file="$log" \
  node scripts/valgrind-lifecycle.js "$work" >"$work.out" 2>&1 || status=$?
elapsed=$(( $(date +%s) - started ))
cat "$work.out"
rm -f "$work.out"

summary=$(grep -E 'ERROR SUMMARY' "$log" | tail -1 | sed 's/^==[0-9]*== //')
definite=$(grep -E 'definitely lost:' "$log" | tail -1 | sed 's/^==[0-9]*== *//')
echo "memcheck (${elapsed} s): ${summary:-no summary}; ${definite:-no leak summary}"
if [ "$status" -ne 0 ]; then
  if [ "$status" -eq 99 ]; then
    echo "memcheck found errors or definite leaks; the report is in $log:" >&2
    grep -E -A 30 '^==[0-9]+== (Invalid|Conditional|Use of uninit|Syscall param|Mismatched|[0-9,]+ bytes in [0-9,]+ blocks are definitely)' "$log" | head -120 >&2
  else
    echo "the lifecycle failed under valgrind (exit $status); see $log" >&2
  fi
  exit 1
fi
