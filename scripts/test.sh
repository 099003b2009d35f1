#!/usr/bin/env bash
# Installs dependencies, builds, and runs every test: the release build (all suites), then the
# unit tests and the CLI's tests of untrusted input and crashes (suite 'cli') again under
# AddressSanitizer + UndefinedBehaviorSanitizer. Ends with the line
# 'N passed, N failed, N skipped' (skipped: tests that exit 77, e.g. without mpirun or torch);
# exits non-zero if anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
jobs=${SIEVE_JOBS:-$(nproc)}

bash scripts/setup-deps.sh || { echo "0 passed, 1 failed, 0 skipped"; exit 1; }

status=0
configure() {  # configure DIR [options...]: set up once, reconfigure afterwards
  local dir=$1; shift
  if [ -f "$dir/build.ninja" ]; then
    meson setup --reconfigure "$dir" --wrap-mode=nodownload "$@" >/dev/null
  else
    meson setup "$dir" --wrap-mode=nodownload "$@" >/dev/null
  fi
}

echo "== release build"
start=$SECONDS
rm -f build/meson-logs/testlog.json build-asan/meson-logs/testlog.json  # no stale results
# With MPI: the sieve CLI gets `mpirun -np N` support and its 2-rank test (cli_mpi); without
# mpirun the binary behaves exactly like a plain build. --reconfigure applies it to an old dir.
if configure build -Dmpi=enabled && meson compile -C build -j "$jobs"; then
  echo "== release tests (built in $((SECONDS - start)) s)"
  meson test -C build --num-processes "$jobs" --print-errorlogs || status=1
else
  echo "release build failed"; status=1
fi

echo "== sanitizer build (ASan + UBSan), unit and cli suites"
start=$SECONDS
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# -O1 with line tables only (-g1): much cheaper to compile than debugoptimized, and ASan
# reports still name the file and line.
if configure build-asan -Dbuildtype=plain "-Dcpp_args=['-O1','-g1']" -Db_sanitize=address,undefined -Db_lundef=false \
     -De2e=false -Dbenchmarks=disabled && meson compile -C build-asan -j "$jobs"; then
  echo "== sanitizer tests (built in $((SECONDS - start)) s)"
  meson test -C build-asan --suite unit --suite cli --num-processes "$jobs" --print-errorlogs || status=1
else
  echo "sanitizer build failed"; status=1
fi

/usr/bin/python3 tools/test_summary.py "$root/build" "$root/build-asan" || status=1
exit $status
