#!/usr/bin/env bash
# Regenerates the checked-in seed corpus native/fuzz/corpus/<target>/ with
# make_corpus (native/fuzz/make_corpus.cc), built by scripts/fuzz.sh into
# build-fuzz/. The seeds are deterministic: a run on an unchanged engine
# rewrites the same bytes. Run it when a format or a harness's input layout
# changes, then check that build-native's fuzz_regression_test passes.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/fuzz.sh --build
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
build-fuzz/make_corpus "$tmp/corpus"
rm -rf native/fuzz/corpus
mv "$tmp/corpus" native/fuzz/corpus
find native/fuzz/corpus -type f | sort | while read -r f; do printf '%7d  %s\n' "$(stat -c %s "$f")" "$f"; done
