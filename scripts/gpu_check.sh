#!/usr/bin/env bash
# Builds the CUDA backend on a machine with an NVIDIA GPU and the CUDA toolkit but without the Debian
# packages, runs the CUDA tests, and runs each CUDA test binary under compute-sanitizer's memcheck.
# Every step's output goes to LOGDIR; a summary comes last; the exit status is non-zero if any step
# failed (a CUDA test that reports "skipped" counts as failed here: this script is for GPU machines).
#
# Usage: TL_DEPS_PREFIX=/path/to/deps scripts/gpu_check.sh LOGDIR
#
# TL_DEPS_PREFIX holds the header-only dependencies (nothing is downloaded):
#   $TL_DEPS_PREFIX/include/eigen3/Eigen/Core         Eigen 3.4 (the folder holding Eigen/ and unsupported/)
#   $TL_DEPS_PREFIX/include/stb/stb_image.h           stb: stb_image.h and stb_image_write.h
#   $TL_DEPS_PREFIX/include/stb/stb_image_write.h
#   $TL_DEPS_PREFIX/include/doctest/doctest.h         doctest (the single header)
# Also needed: CMake 3.25+, a C++20 compiler with OpenMP, nvcc and cuBLAS (CUDA 12+; nvcc found on
# PATH or as /usr/local/cuda/bin/nvcc), compute-sanitizer (ships with the toolkit).
# Optional environment: TL_BUILD_DIR (default build/gpu_check), CMAKE_CUDA_ARCHITECTURES (default 90),
# JOBS (default: the number of cores).
# The step functions below run through `step`, which shellcheck cannot follow.
# shellcheck disable=SC2317
set -uo pipefail

if [ $# -ne 1 ]; then
  echo "usage: TL_DEPS_PREFIX=/path/to/deps $0 LOGDIR" >&2
  exit 2
fi
mkdir -p "$1" || exit 2
logdir=$(cd "$1" && pwd)
root=$(cd "$(dirname "$0")/.." && pwd)
build=${TL_BUILD_DIR:-$root/build/gpu_check}
arch=${CMAKE_CUDA_ARCHITECTURES:-90}
jobs=${JOBS:-$(nproc 2>/dev/null || echo 4)}
summary=()
failed=0
export PATH="$PATH:/usr/local/cuda/bin:/usr/local/cuda/compute-sanitizer"

# step NAME LOGFILE COMMAND...: runs COMMAND with its output in LOGDIR/LOGFILE, records the outcome.
step() {
  local name=$1 log=$2
  shift 2
  echo "== $name (log: $logdir/$log)"
  if "$@" >"$logdir/$log" 2>&1; then
    summary+=("PASS  $name")
  else
    summary+=("FAIL  $name (exit $?, see $log)")
    failed=1
  fi
}

# ---- environment
env_report() {
  date -u
  uname -a
  command -v nvidia-smi >/dev/null && nvidia-smi
  command -v nvcc >/dev/null && nvcc --version
  [ -x /usr/local/cuda/bin/nvcc ] && /usr/local/cuda/bin/nvcc --version
  cmake --version | head -n 1
  git -C "$root" log -1 --oneline 2>/dev/null
  git -C "$root" status --short 2>/dev/null
  return 0
}
step "environment" 00_environment.log env_report

deps_check() {
  local ok=0
  if [ -z "${TL_DEPS_PREFIX:-}" ]; then echo "TL_DEPS_PREFIX is not set"; return 1; fi
  for f in include/eigen3/Eigen/Core include/stb/stb_image.h include/stb/stb_image_write.h include/doctest/doctest.h; do
    if [ -f "$TL_DEPS_PREFIX/$f" ]; then echo "found   $TL_DEPS_PREFIX/$f"; else echo "MISSING $TL_DEPS_PREFIX/$f"; ok=1; fi
  done
  command -v nvcc >/dev/null || { echo "MISSING nvcc"; ok=1; }
  command -v compute-sanitizer >/dev/null || { echo "MISSING compute-sanitizer"; ok=1; }
  return "$ok"
}
step "dependencies in TL_DEPS_PREFIX" 01_dependencies.log deps_check
if [ $failed -ne 0 ]; then
  cat "$logdir/01_dependencies.log" >&2
  printf '%s\n' "${summary[@]}" | tee "$logdir/summary.txt"
  exit 1
fi

# ---- configure and build (release, CUDA required)
step "configure" 02_configure.log cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DTL_CUDA=ON \
  -DTL_DEPS_PREFIX="$TL_DEPS_PREFIX" -DCMAKE_CUDA_ARCHITECTURES="$arch"
step "build" 03_build.log cmake --build "$build" -j "$jobs"

# ---- the CUDA tests: all must run (not skip) and pass
cuda_tests() {
  (cd "$build" && ctest -L cuda --output-on-failure --timeout 1200) || return 1
  if grep -q "skipped: no CUDA device" "$build/Testing/Temporary/LastTest.log" 2>/dev/null; then
    echo "a CUDA test skipped: no GPU is visible to this process"
    return 1
  fi
}
step "ctest -L cuda" 04_ctest_cuda.log cuda_tests

# ---- each CUDA test binary under compute-sanitizer memcheck (no leak check: the caching allocator
# holds its blocks until the process ends, by design)
n=0
for bin in "$build"/tests/test_cuda*; do
  if [ ! -f "$bin" ] || [ ! -x "$bin" ]; then continue; fi
  n=$((n + 1))
  name=$(basename "$bin")
  step "memcheck $name" "05_memcheck_$name.log" compute-sanitizer --tool memcheck --error-exitcode 1 "$bin"
done
if [ $n -eq 0 ]; then
  summary+=("FAIL  memcheck: no CUDA test binary under $build/tests")
  failed=1
fi

# ---- GPU benchmark
# TODO(gpu bench): when bench/bench_unet takes --device, run here and keep the output, e.g.
#   step "bench_unet cuda" 06_bench_unet.log "$build/bench_unet" --device cuda --config 4:160x240:relu --json
summary+=("TODO  bench_unet on the GPU (bench_unet has no --device flag yet)")

echo
{
  echo "gpu_check summary ($(date -u)), build $build, logs $logdir"
  printf '%s\n' "${summary[@]}"
  if [ $failed -eq 0 ]; then echo "result: all steps passed"; else echo "result: FAILED"; fi
} | tee "$logdir/summary.txt"
exit $failed
