#!/usr/bin/env bash
# Builds the CUDA backend on a machine with an NVIDIA GPU and the CUDA toolkit but without the Debian
# packages, runs the CUDA tests, and runs each CUDA test binary under compute-sanitizer's memcheck.
# Every step's output goes to LOGDIR; a summary comes last; the exit status is non-zero if any step
# failed (a CUDA test that reports "skipped" counts as failed here: this script is for GPU machines).
#
# Usage: TL_DEPS_PREFIX=/path/to/deps scripts/gpu_check.sh LOGDIR
#
# TL_DEPS_PREFIX holds the header-only dependencies (nothing is downloaded); scripts/pack_deps.sh DIR
# gathers them from a machine where scripts/install_deps.sh ran:
#   $TL_DEPS_PREFIX/include/eigen3/Eigen/Core         Eigen 3.4 (the folder holding Eigen/ and unsupported/)
#   $TL_DEPS_PREFIX/include/stb/stb_image.h           stb: stb_image.h and stb_image_write.h
#   $TL_DEPS_PREFIX/include/stb/stb_image_write.h
#   $TL_DEPS_PREFIX/include/doctest/doctest.h         doctest (the single header)
# Also needed: CMake 3.25+, a C++20 compiler with OpenMP, nvcc and cuBLAS (CUDA 12+; nvcc found on
# PATH or as /usr/local/cuda/bin/nvcc), compute-sanitizer (ships with the toolkit).
# Optional environment: TL_BUILD_DIR (default build/gpu_check), CMAKE_CUDA_ARCHITECTURES (default 90),
# JOBS (default: the number of cores). The benchmark step: TL_TORCH_PYTHON (the Python with torch,
# default python3 on PATH), TL_BENCH_ITERS (timed steps, default 20), TL_BENCH_WARMUP (default 5),
# TL_BENCH_CONFIGS (comma-separated B:HxW:ACT, default batch 16 at 160x240 and batch 4 at 320x480,
# each activation), TL_BENCH_PROFILE (the config profiled by layer, default 16:160x240:relu; empty: none).
# TL_CHECK_STEPS picks the steps after configure and build (comma-separated, default
# ctest,memcheck,bench), so that a time-limited session can split them over two runs; TL_STEP_TIMEOUT
# (seconds, default 420) bounds each ctest test and each memcheck run. summary.txt is written step
# by step, and the benchmark's report.md after each process, so a run stopped part way leaves both.
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
torch_python=${TL_TORCH_PYTHON:-$(command -v python3 || echo python3)}
bench_iters=${TL_BENCH_ITERS:-20}
bench_warmup=${TL_BENCH_WARMUP:-5}
bench_configs=${TL_BENCH_CONFIGS:-16:160x240:relu,16:160x240:gelu,16:160x240:silu,16:160x240:pysilu,4:320x480:relu,4:320x480:gelu,4:320x480:silu,4:320x480:pysilu}
bench_profile=${TL_BENCH_PROFILE-16:160x240:relu}
steps=${TL_CHECK_STEPS:-ctest,memcheck,bench}   # configure + build always run (a no-op when up to date)
step_timeout=${TL_STEP_TIMEOUT:-420}
summary=()
failed=0
: >"$logdir/summary.txt"
want() { [[ ",$steps," == *",$1,"* ]]; }
note() { summary+=("$1"); printf '%s\n' "$1" >>"$logdir/summary.txt"; }
export PATH="$PATH:/usr/local/cuda/bin:/usr/local/cuda/compute-sanitizer"

# step NAME LOGFILE COMMAND...: runs COMMAND with its output in LOGDIR/LOGFILE, records the outcome.
step() {
  local name=$1 log=$2
  shift 2
  echo "== $name (log: $logdir/$log)"
  if "$@" >"$logdir/$log" 2>&1; then
    note "PASS  $name"
  else
    note "FAIL  $name (exit $?, see $log)"
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
  "$torch_python" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, "GPU", torch.cuda.is_available())'
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
  command -v compute-sanitizer >/dev/null || echo "MISSING compute-sanitizer (the memcheck steps will fail; the rest still runs)"
  return "$ok"
}
step "dependencies in TL_DEPS_PREFIX" 01_dependencies.log deps_check
if [ $failed -ne 0 ]; then
  cat "$logdir/01_dependencies.log" >&2
  exit 1
fi

# ---- configure and build (release, CUDA required)
gen=()
if [ ! -f "$build/CMakeCache.txt" ] && command -v ninja >/dev/null; then gen=(-G Ninja); fi
step "configure" 02_configure.log cmake -S "$root" -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DTL_CUDA=ON \
  -DTL_DEPS_PREFIX="$TL_DEPS_PREFIX" -DCMAKE_CUDA_ARCHITECTURES="$arch"
step "build" 03_build.log cmake --build "$build" -j "$jobs" \
  --target test_cuda test_cuda_ops test_cuda_unet test_cuda_index bench_unet_gpu

# ---- the CUDA tests: all must run (not skip) and pass
cuda_tests() {
  (cd "$build" && ctest -L cuda --no-tests=error --output-on-failure --timeout "$step_timeout") || return 1
  if grep -q "skipped: no CUDA device" "$build/Testing/Temporary/LastTest.log" 2>/dev/null; then
    echo "a CUDA test skipped: no GPU is visible to this process"
    return 1
  fi
}
want ctest && step "ctest -L cuda" 04_ctest_cuda.log cuda_tests

# ---- each CUDA test binary under compute-sanitizer memcheck (no leak check: the caching allocator
# holds its blocks until the process ends, by design)
n=0
want memcheck && for bin in "$build"/tests/test_cuda*; do
  if [ ! -f "$bin" ] || [ ! -x "$bin" ]; then continue; fi
  n=$((n + 1))
  name=$(basename "$bin")
  step "memcheck $name" "05_memcheck_$name.log" timeout "$step_timeout" compute-sanitizer --tool memcheck --error-exitcode 1 "$bin"
done
if want memcheck && [ $n -eq 0 ]; then
  note "FAIL  memcheck: no CUDA test binary under $build/tests"
  failed=1
fi

# ---- GPU benchmark: our UNet against PyTorch eager on this GPU (bench/compare_gpu.py), the table of
# docs/PERFORMANCE.md. The report, raw JSON lines and each process's stderr go to LOGDIR/06_bench_gpu/.
# Without torch for TL_TORCH_PYTHON our side still runs and the step reports SKIP for the reference.
bench_gpu() {
  if [ ! -x "$build/bench_unet_gpu" ]; then echo "$build/bench_unet_gpu was not built"; return 1; fi
  local profile=()
  if [ -n "$bench_profile" ]; then profile=(--profile "$bench_profile"); fi
  python3 "$root/bench/compare_gpu.py" --ours "$build/bench_unet_gpu" --python "$torch_python" \
    --iters "$bench_iters" --warmup "$bench_warmup" --configs "$bench_configs" "${profile[@]}" \
    --log-dir "$logdir/06_bench_gpu"
}
if want bench; then
echo "== gpu bench: ours and PyTorch eager (log: $logdir/06_bench_gpu.log)"
bench_gpu >"$logdir/06_bench_gpu.log" 2>&1
rc=$?
case $rc in
  0) note "PASS  gpu bench (report: 06_bench_gpu/report.md)" ;;
  77) note "FAIL  gpu bench: no PyTorch reference ($torch_python cannot import torch or sees no GPU); ours in 06_bench_gpu/report.md"; failed=1 ;;
  *) note "FAIL  gpu bench (exit $rc, see 06_bench_gpu.log)"; failed=1 ;;
esac
fi

echo
{
  echo "gpu_check summary ($(date -u)), build $build, logs $logdir"
  printf '%s\n' "${summary[@]}"
  if [ $failed -eq 0 ]; then echo "result: all steps passed"; else echo "result: FAILED"; fi
} | tee "$logdir/summary.txt.tmp" && mv "$logdir/summary.txt.tmp" "$logdir/summary.txt"
exit $failed
