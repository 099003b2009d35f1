#!/bin/sh
# Build and run one libFuzzer harness: tools/fuzz.sh TARGET SECONDS
#   TARGET   a harness tools/fuzz/TARGET.cpp defining LLVMFuzzerTestOneInput (decode_image,
#            safetensors, csv, submission, checkpoint)
#   SECONDS  fuzzing time (libFuzzer -max_total_time); SIEVE_FUZZ_SECONDS overrides it, for
#            longer local runs of the suite's tests (SIEVE_FUZZ_SECONDS=600 meson test -t 0 ...)
# Builds with clang++-14 -fsanitize=fuzzer,address,undefined (UB is fatal) in a temporary
# directory, seeds from tools/fuzz/corpus/TARGET/ (new inputs go to the temp dir; see KEEP),
# and exits 77 (meson's "skipped") when clang++-14 or its libFuzzer runtime is missing.
# Environment:
#   SIEVE_FUZZ_SEED       libFuzzer -seed (default 1, so a test run is repeatable; 0 = random)
#   SIEVE_FUZZ_ARTIFACTS  where findings go (default: the temp dir, whose path is printed; it is
#                         kept when the run fails). A crash, leak, timeout or oom fails the run.
#   SIEVE_FUZZ_KEEP=1     after a clean run, merge the inputs that add coverage into the
#                         committed corpus tools/fuzz/corpus/TARGET/ (libFuzzer -merge=1), so
#                         the corpus grows with what fuzzing finds; review and commit them.
# Findings are never merged: reproduce one with the binary left in the temp dir (or rebuild) as
# `sieve-fuzz-TARGET.*/TARGET ARTIFACT`, fix the library, then add the input to the corpus as
# a seed so the run checks the fix from then on.
set -eu
if [ $# -ne 2 ]; then
  echo "usage: $0 TARGET SECONDS" >&2
  exit 2
fi
target=$1
seconds=${SIEVE_FUZZ_SECONDS:-$2}
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
src="$here/fuzz/$target.cpp"
seeds="$here/fuzz/corpus/$target"
[ -f "$src" ] || { echo "fuzz.sh: no harness $src" >&2; exit 2; }
CXX=${CXX_FUZZ:-clang++-14}
if ! command -v "$CXX" >/dev/null 2>&1; then
  echo "fuzz.sh: $CXX not found; skipping (install clang-14 and libclang-rt-14-dev)"
  exit 77
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/sieve-fuzz-$target.XXXXXX")
artifacts=${SIEVE_FUZZ_ARTIFACTS:-$work/artifacts}
mkdir -p "$work/corpus" "$work/tmp" "$artifacts"
# Harnesses that need files (checkpoint) make them under TMPDIR: kept with the run's temp dir.
export TMPDIR="$work/tmp"
# Harnesses include sieve headers only (no xtensor); third-party headers are system includes.
# Every UB check halts, except the suppressions below (known, memory-safe residuals in code we
# include but do not own; each needs a reason):
#  - stb_image 2.27 stbi__jpeg_decode_block / _prog_dc: `dc * dequant[0]` and
#    `dc * (1 << succ_low)` overflow int for crafted DC streams (seed dc_overflow.jpg). The
#    product is truncated to a short coefficient; no index or size depends on it. Fixed
#    upstream in 2.28 (stbi__mul2shorts_valid); Debian 12 ships 2.27.
#  - stb_image 2.27 stbi__grow_buffer_unsafe: on truncated entropy-coded data code_bits goes
#    negative and the refill `b << (24 - code_bits)` shifts a 32-bit value by >= 32. The bits it
#    yields are garbage, but code_buffer only ever reaches tables through masks and shifts of a
#    32-bit value (fast[512], bmask[17]) and the Huffman tables were validated by sieve's
#    pre-check, so no index leaves its table; ASan watches every access in the same run.
cat >"$work/ubsan.supp" <<'SUPP'
signed-integer-overflow:stbi__jpeg_decode_block
signed-integer-overflow:stbi__jpeg_decode_block_prog_dc
shift-exponent:stbi__grow_buffer_unsafe
SUPP
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:suppressions=$work/ubsan.supp${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
flags="-std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -fsanitize-recover=signed-integer-overflow,shift
       -I$root/include -isystem /usr/include/stb $(pkg-config --cflags-only-I xtensor 2>/dev/null | sed 's/-I/-isystem /g')"
if ! $CXX $flags "$src" -o "$work/$target" -lz -pthread 2>"$work/build.log"; then
  if grep -q -i "libclang_rt.fuzzer\|cannot find.*fuzzer" "$work/build.log"; then
    echo "fuzz.sh: libFuzzer runtime missing (libclang-rt-14-dev); skipping"
    exit 77
  fi
  cat "$work/build.log" >&2
  exit 1
fi
echo "fuzz.sh: $target for ${seconds}s in $work"
set -- "$work/corpus"
[ -d "$seeds" ] && set -- "$@" "$seeds"
# A fixed seed by default, so the test suite's run is repeatable; SIEVE_FUZZ_SEED=0 = random.
# libFuzzer's default exit status for a finding is 77, meson's "skipped": findings exit 1.
# `|| status=$?` keeps set -e from ending the script before the log and findings are shown.
status=0
"$work/$target" "$@" -seed="${SIEVE_FUZZ_SEED:-1}" -max_total_time="$seconds" -max_len=65536 -timeout=20 -rss_limit_mb=2560 \
  -error_exitcode=1 -timeout_exitcode=1 -artifact_prefix="$artifacts/" -print_final_stats=1 >"$work/fuzz.log" 2>&1 ||
  status=$?
tail -25 "$work/fuzz.log"
# Also look for artifacts: a finding must fail the run whatever the exit status says.
for f in "$artifacts"/crash-* "$artifacts"/leak-* "$artifacts"/timeout-* "$artifacts"/oom-*; do
  if [ -e "$f" ]; then
    echo "fuzz.sh: $target found failures, kept in $artifacts:" >&2
    ls "$artifacts" >&2
    exit 1
  fi
done
if [ "$status" -ne 0 ]; then
  echo "fuzz.sh: $target exited with status $status; the run is kept in $work" >&2
  [ "$status" -eq 77 ] && exit 1  # never "skipped" once the harness has run
  exit "$status"
fi
if [ "${SIEVE_FUZZ_KEEP:-0}" = 1 ]; then
  mkdir -p "$seeds"
  before=$(ls "$seeds" | wc -l)
  if ! "$work/$target" -merge=1 "$seeds" "$work/corpus" -max_len=65536 -timeout=20 -rss_limit_mb=2560 \
       >"$work/merge.log" 2>&1; then
    tail -25 "$work/merge.log" >&2
    echo "fuzz.sh: merging into $seeds failed; the run is kept in $work" >&2
    exit 1
  fi
  echo "fuzz.sh: corpus $seeds: $before -> $(ls "$seeds" | wc -l) files"
fi
rm -rf "$work"
