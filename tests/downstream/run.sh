#!/usr/bin/env bash
# Builds and runs tests/downstream/consumer against sieve in one of two ways:
#   run.sh subproject SIEVE_SRC   sieve as a meson subproject (subprojects/sieve -> source tree)
#   run.sh pkg-config SIEVE_SRC   sieve installed into a temporary prefix, found via sieve.pc
set -eu
method=$1
src=$(cd "$2" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sieve-downstream.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cp -r "$src/tests/downstream/consumer" "$tmp/consumer"
case $method in
  subproject)
    mkdir -p "$tmp/consumer/subprojects"
    ln -s "$src" "$tmp/consumer/subprojects/sieve"
    meson setup "$tmp/build" "$tmp/consumer" -Dmethod=subproject --wrap-mode=nodownload >"$tmp/setup.log" 2>&1 ||
      { cat "$tmp/setup.log"; exit 1; }
    ;;
  pkg-config)
    # Configure sieve with the temporary prefix and install headers + sieve.pc only
    # (--no-rebuild: the install needs nothing compiled).
    meson setup "$tmp/sieve-build" "$src" --prefix="$tmp/prefix" --libdir=lib -Dbenchmarks=disabled \
      -Dcli=disabled --wrap-mode=nodownload >"$tmp/setup-sieve.log" 2>&1 || { cat "$tmp/setup-sieve.log"; exit 1; }
    meson install -C "$tmp/sieve-build" --no-rebuild >"$tmp/install.log" 2>&1 || { cat "$tmp/install.log"; exit 1; }
    test -f "$tmp/prefix/lib/pkgconfig/sieve.pc" || { echo "sieve.pc was not installed"; exit 1; }
    test -f "$tmp/prefix/include/sieve/sieve.hpp" || { echo "headers were not installed"; exit 1; }
    PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}" \
      meson setup "$tmp/build" "$tmp/consumer" -Dmethod=pkg-config --wrap-mode=nodownload >"$tmp/setup.log" 2>&1 ||
      { cat "$tmp/setup.log"; exit 1; }
    ;;
  *) echo "usage: run.sh subproject|pkg-config SIEVE_SRC"; exit 2 ;;
esac
meson compile -C "$tmp/build" >"$tmp/build.log" 2>&1 || { cat "$tmp/build.log"; exit 1; }
"$tmp/build/consumer"
