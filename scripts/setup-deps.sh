#!/usr/bin/env bash
# Installs the Debian packages sieve needs, skipping those already present. Idempotent.
# The one list of the project's system dependencies is PACKAGES below.
set -euo pipefail

PACKAGES=(
  # build
  g++ meson ninja-build cmake pkg-config
  # library
  libxtensor-dev libxtensor-blas-dev libopenblas-dev libstb-dev zlib1g-dev
  # CLI, tests, benchmarks
  libcli11-dev nlohmann-json3-dev doctest-dev libbenchmark-dev
  # fuzzing (libFuzzer) and sanitizer runtimes
  clang-14 libclang-rt-14-dev
  # optional MPI backend (-Dmpi=enabled) and its tests
  libopenmpi-dev openmpi-bin
  # golden reference and fixtures: Debian's PyTorch (run with /usr/bin/python3)
  python3 python3-numpy python3-torch python3-torchvision python3-pil
  # the embedded default data set
  dataset-fashion-mnist
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

echo "setup-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "setup-deps: done"
