#!/usr/bin/env bash
# Builds the libFuzzer targets of native/fuzz/ (clang, ASan + UBSan) into
# build-fuzz/ and runs each for SECONDS (default 60) from the seed corpus.
#   scripts/fuzz.sh [SECONDS] [TARGET...]    npm run fuzz -- [SECONDS] [TARGET...]
#   scripts/fuzz.sh --build                  build only
# New coverage goes to build-fuzz/corpus/<target>/ (the checked-in seeds in
# native/fuzz/corpus/ are only read). A crash, leak, sanitizer report, hang
# (-timeout) or failed harness check is saved as native/fuzz/crashes/<target>-*
# and makes the script exit 1 after the other targets ran. Logs:
# build-fuzz/logs/<target>.log. docs/fuzzing.md says how to minimise a crash
# and keep it as a regression input.
set -euo pipefail
cd "$(dirname "$0")/.."

all_targets=(operation_fuzzer diff_fuzzer payload_fuzzer layer_fuzzer commit_record_fuzzer
             stream_codec_fuzzer elf_fuzzer macho_pe_fuzzer deflate_fuzzer)
# Largest input per target: enough for a few records, a small delta, a
# layer of a few blocks; larger inputs only slow the search down.
declare -A max_len=(
  [operation_fuzzer]=16384 [diff_fuzzer]=20000 [payload_fuzzer]=32768
  [layer_fuzzer]=16384 [commit_record_fuzzer]=8192 [stream_codec_fuzzer]=65536 [elf_fuzzer]=32768 [macho_pe_fuzzer]=4096 [deflate_fuzzer]=24576
)

find_clang() {
  for cxx in "${CXX_FUZZ:-}" clang++ clang++-14 clang++-15 clang++-16; do
    [ -n "$cxx" ] && command -v "$cxx" >/dev/null 2>&1 && { echo "$cxx"; return; }
  done
  echo "scripts/fuzz.sh: clang++ not found; on Debian: apt-get install clang libclang-rt-14-dev" >&2
  exit 1
}

build() {
  local cxx
  cxx=$(find_clang)
  cmake -S native -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER="$cxx" \
    -DREVPATCH_FUZZ=ON >/dev/null
  cmake --build build-fuzz -j "$(nproc 2>/dev/null || echo 2)" >/dev/null
}

if [ "${1:-}" = "--build" ]; then
  build
  exit 0
fi

seconds=60
if [[ "${1:-}" =~ ^[0-9]+$ ]]; then
  seconds=$1
  shift
fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")
for t in "${targets[@]}"; do
  [ -n "${max_len[$t]:-}" ] || { echo "unknown fuzz target: $t (one of: ${all_targets[*]})" >&2; exit 2; }
done

build
mkdir -p build-fuzz/logs native/fuzz/crashes
# The harnesses' scratch files (layers, commit records, payloads) go to
# tmpfs where there is one; libFuzzer ends a run without atexit handlers,
# so the directory is removed here.
scratch_base=/dev/shm
[ -d "$scratch_base" ] && [ -w "$scratch_base" ] || scratch_base=${TMPDIR:-/tmp}
export REVPATCH_FUZZ_TMPDIR
REVPATCH_FUZZ_TMPDIR=$(mktemp -d "$scratch_base/revpatch-fuzz-run-XXXXXX")
trap 'rm -rf "$REVPATCH_FUZZ_TMPDIR"' EXIT
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

failed=()
printf '%-22s %8s %12s %8s %8s  %s\n' target seconds executions exec/s corpus result
for t in "${targets[@]}"; do
  mkdir -p "build-fuzz/corpus/$t"
  log="build-fuzz/logs/$t.log"
  status=0
  "build-fuzz/$t" -max_total_time="$seconds" -max_len="${max_len[$t]}" -timeout=30 \
    -rss_limit_mb=2048 -use_value_profile=1 -print_final_stats=1 \
    -artifact_prefix="native/fuzz/crashes/$t-" \
    "build-fuzz/corpus/$t" "native/fuzz/corpus/$t" >"$log" 2>&1 || status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  if [ -z "$execs" ]; then
    # A crash ends the run before the final stats; the last status line counts.
    execs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
  fi
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  units=$(find "build-fuzz/corpus/$t" -type f | wc -l)
  if [ "$status" -eq 0 ]; then
    result=ok
  else
    result="FAILED (exit $status)"
    failed+=("$t")
  fi
  printf '%-22s %8s %12s %8s %8s  %s\n' "$t" "$seconds" "${execs:-0}" "${rate:--}" "$units" "$result"
done

if [ ${#failed[@]} -gt 0 ]; then
  for t in "${failed[@]}"; do
    echo
    echo "== $t: last lines of build-fuzz/logs/$t.log"
    grep -E 'ERROR|fuzz check failed|SUMMARY|Test unit written|artifact_prefix' "build-fuzz/logs/$t.log" | tail -8 || true
  done
  echo
  echo "crashing inputs are in native/fuzz/crashes/; reproduce with build-fuzz/<target> <file>," >&2
  echo "minimise with build-fuzz/<target> -minimize_crash=1 -runs=20000 <file> (docs/fuzzing.md)" >&2
  exit 1
fi
