#!/usr/bin/env bash
# Compile-fail test: a mismatched pipeline must not compile, and the compiler's message must
# name the offending stage index and both types.
# Usage: run.sh CXX INCLUDE_DIR SOURCE
set -u
cxx=$1 inc=$2 src=$3
out=$("$cxx" -std=c++20 -fsyntax-only -I"$inc" "$src" 2>&1)
status=$?
if [ $status -eq 0 ]; then
  echo "FAIL: $src compiled, but it should not"
  exit 1
fi
# GCC prints the instantiation as PipelineLink<sieve::stage_index<2>, double, int>.
if ! grep -Eq 'PipelineLink<sieve::stage_index<2(ul)?>, double, int>' <<<"$out"; then
  echo "FAIL: the compiler's message does not name stage 2 and both types:"
  echo "$out" | head -40
  exit 1
fi
if ! grep -q 'broken link' <<<"$out"; then
  echo "FAIL: the static_assert message is missing"
  exit 1
fi
echo "ok: the compiler names PipelineLink<stage_index<2>, double, int>"
