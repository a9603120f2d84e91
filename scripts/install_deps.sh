#!/usr/bin/env bash
# Installs the Debian packages the project builds and tests with, and only those that are missing.
# Usage: scripts/install_deps.sh [train|test]
#   train  what building and training need (scripts/train.sh)
#   test   (the default) that, and what the tests need (scripts/test.sh)
# Prints what it installs; prints nothing to do when everything is present.
set -euo pipefail

train_packages=(
  cmake g++ make         # the build
  libeigen3-dev          # CPU GEMM (Eigen 3.4)
  libstb-dev             # image decode/encode headers
  doctest-dev            # the test framework (headers; the build configures the tests too)
  libturbojpeg0-dev      # JPEG decoding at a reduced DCT scale (data/photo_decode.h); optional at build time
)
test_packages=(
  python3-torch          # the PyTorch reference of the parity tests (run with /usr/bin/python3)
  libopenblas-dev        # without it Debian's torch falls back to a reference BLAS 30x slower
  clang libclang-rt-14-dev  # the fuzz harnesses (scripts/fuzz.sh): clang and its libFuzzer runtime
  chromium               # headless, for the run report check (tests/report_browser.py)
  libonnx-dev libprotobuf-dev  # ONNX export (apps/export_onnx); optional at build time
  python3-venv           # the onnx test sets up onnxruntime from PyPI in a virtual environment
  libopenmpi-dev openmpi-bin  # data-parallel training under mpirun (optional at build time)
)

mode=${1:-test}
case "$mode" in
  train) packages=("${train_packages[@]}") ;;
  test) packages=("${train_packages[@]}" "${test_packages[@]}") ;;
  *) echo "install_deps: unknown mode '$mode' (expected train or test)" >&2; exit 2 ;;
esac

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all packages present (${packages[*]})"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
    echo "install_deps: missing packages (${missing[*]}) and not root; install them with apt-get" >&2
    exit 1
  fi
fi

echo "install_deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install_deps: done"
