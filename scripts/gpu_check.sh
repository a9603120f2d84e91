#!/usr/bin/env bash
# The GPU check: builds the CUDA backend on a machine with an NVIDIA GPU and the CUDA toolkit but
# without the Debian packages, and verifies it. Every step's output goes to LOGDIR as it runs and
# LOGDIR/summary.txt gains a line per finished step, so a run cut off part way still reports; the exit
# status is non-zero if any step failed (a CUDA test that reports "skipped" counts as failed here:
# this script is for GPU machines).
#
# Usage: TL_DEPS_PREFIX=/path/to/deps scripts/gpu_check.sh [--rest] LOGDIR
#   (default, sized for at most 9 minutes on an H100 with 16 cores)
#     build      only the CUDA test targets, train_unet, predict_unet, evaluate_masks and
#                bench_unet_gpu, with all cores
#     ctest      ctest -L cuda
#     sanitize   compute-sanitizer memcheck of the op table (test_cuda_ops) and of one UNet train step,
#                racecheck and initcheck of the op table, all with TL_CUDA_ALLOCATOR=passthrough (exact
#                cudaMalloc/cudaFree, so overruns and use-after-free are visible)
#     train      train_unet --device cuda on a small synthetic set: the loss falls, the checkpoint
#                loads on the CPU and predicts the same masks as on the GPU
#     bench      ours against PyTorch eager at batch 16 160x240 and batch 4 320x480 (relu), fp32,
#                TF32 and bf16 autocast, with peak memory
#   --rest       what is left for a second call: memcheck of every other CUDA test binary and the
#                other benchmark configs (gelu, silu, pysilu) with the per-layer profile
#
# TL_DEPS_PREFIX holds the header-only dependencies (nothing is downloaded); scripts/pack_deps.sh DIR
# gathers them from a machine where scripts/install_deps.sh ran:
#   $TL_DEPS_PREFIX/include/eigen3/Eigen/Core         Eigen 3.4 (the folder holding Eigen/ and unsupported/)
#   $TL_DEPS_PREFIX/include/stb/stb_image.h           stb: stb_image.h and stb_image_write.h
#   $TL_DEPS_PREFIX/include/stb/stb_image_write.h
#   $TL_DEPS_PREFIX/include/doctest/doctest.h         doctest (the single header)
# Also needed: CMake 3.25+, a C++20 compiler with OpenMP, nvcc and cuBLAS (CUDA 12+; nvcc found on
# PATH or as /usr/local/cuda/bin/nvcc), compute-sanitizer (ships with the toolkit).
# Optional environment: TL_BUILD_DIR (default build/gpu_check), CMAKE_CUDA_ARCHITECTURES (default
# native: this machine's GPU), JOBS (default: the number of cores). TL_TORCH_PYTHON: the Python with
# torch for the benchmark; by default the first of python3 and python on PATH, $VIRTUAL_ENV/bin/python,
# the repository's bench/.venv and .venv, and /usr/bin/python3 that imports torch (the dependency step
# says which). TL_BENCH_ITERS (timed steps, default 20), TL_BENCH_WARMUP (default 5), TL_BENCH_CONFIGS
# (comma-separated B:HxW:ACT; the default depends on the mode, see above), TL_BENCH_PROFILE (the config
# profiled by layer in --rest, default 16:160x240:relu; empty: none). TL_CHECK_STEPS picks the steps
# after configure and build (comma-separated; default ctest,sanitize,train,bench, or with --rest
# memcheck_rest,bench); TL_STEP_TIMEOUT (seconds, default 240) bounds each ctest test and each
# sanitizer run. The benchmark's report.md is written after each process, so a cut-off run leaves it.
# The step functions below run through `step`, which shellcheck cannot follow.
# shellcheck disable=SC2317
set -uo pipefail

mode=quick
if [ "${1:-}" = "--rest" ]; then
  mode=rest
  shift
fi
if [ $# -ne 1 ]; then
  echo "usage: TL_DEPS_PREFIX=/path/to/deps $0 [--rest] LOGDIR" >&2
  exit 2
fi
mkdir -p "$1" || exit 2
logdir=$(cd "$1" && pwd)
root=$(cd "$(dirname "$0")/.." && pwd)
build=${TL_BUILD_DIR:-$root/build/gpu_check}
arch=${CMAKE_CUDA_ARCHITECTURES:-native}
jobs=${JOBS:-$(nproc 2>/dev/null || echo 4)}
# The first interpreter that imports torch (the benchmark's reference), or TL_TORCH_PYTHON as given.
find_torch_python() {
  local c
  for c in "$(command -v python3)" "$(command -v python)" "${VIRTUAL_ENV:+$VIRTUAL_ENV/bin/python}" \
    "$root/bench/.venv/bin/python" "$root/.venv/bin/python" /usr/bin/python3; do
    if [ -n "$c" ] && [ -x "$c" ] && "$c" -c 'import torch' >/dev/null 2>&1; then
      echo "$c"
      return 0
    fi
  done
  command -v python3 || echo python3
}
torch_python=${TL_TORCH_PYTHON:-$(find_torch_python)}
bench_iters=${TL_BENCH_ITERS:-20}
bench_warmup=${TL_BENCH_WARMUP:-5}
if [ $mode = quick ]; then
  bench_configs=${TL_BENCH_CONFIGS:-16:160x240:relu,4:320x480:relu}
  bench_variants=fp32,tf32,bf16
  bench_profile=""
  steps=${TL_CHECK_STEPS:-ctest,sanitize,train,bench}   # configure + build always run (a no-op when up to date)
else
  bench_configs=${TL_BENCH_CONFIGS:-16:160x240:gelu,16:160x240:silu,16:160x240:pysilu,4:320x480:gelu,4:320x480:silu,4:320x480:pysilu}
  bench_variants=fp32,tf32,fp32-cl,bf16
  bench_profile=${TL_BENCH_PROFILE-16:160x240:relu}
  steps=${TL_CHECK_STEPS:-memcheck_rest,bench}
fi
step_timeout=${TL_STEP_TIMEOUT:-240}
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
  echo "mode $mode, steps $steps"
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
  command -v compute-sanitizer >/dev/null || echo "MISSING compute-sanitizer (the sanitizer steps will fail; the rest still runs)"
  if "$torch_python" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, "GPU", torch.cuda.is_available())'; then
    echo "found   torch in $torch_python"
  else
    echo "MISSING torch: no interpreter imports it ($torch_python tried last; set TL_TORCH_PYTHON); the benchmark runs our side only"
  fi
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
  --target test_cuda test_cuda_ops test_cuda_unet test_cuda_index cuda_device_count train_unet predict_unet \
  evaluate_masks bench_unet_gpu

# ---- the CUDA tests: all must run (not skip) and pass
cuda_tests() {
  (cd "$build" && ctest -L cuda --no-tests=error --output-on-failure --timeout "$step_timeout") || return 1
  if grep -q "skipped: no CUDA device" "$build/Testing/Temporary/LastTest.log" 2>/dev/null; then
    echo "a CUDA test skipped: no GPU is visible to this process"
    return 1
  fi
}
want ctest && step "ctest -L cuda" 04_ctest_cuda.log cuda_tests

# ---- compute-sanitizer, with the pass-through allocator (exact cudaMalloc/cudaFree: no rounding or
# reuse to hide an overrun or a use-after-free). No leak check: the conv workspace and the streams
# live until the process ends, by design.
sanitize() {  # sanitize TOOL LOGNAME BINARY [ARGS...]
  local tool=$1 log=$2
  shift 2
  step "$tool $log" "05_${tool}_$log.log" env TL_CUDA_ALLOCATOR=passthrough \
    timeout "$step_timeout" compute-sanitizer --tool "$tool" --error-exitcode 1 "$@"
}
if want sanitize; then
  sanitize memcheck test_cuda_ops "$build/tests/test_cuda_ops"
  sanitize memcheck unet_step "$build/tests/test_cuda_unet" "--test-case=a UNet (widths 8?16?32?64) train step*"
  sanitize racecheck test_cuda_ops "$build/tests/test_cuda_ops"
  sanitize initcheck test_cuda_ops "$build/tests/test_cuda_ops"
fi
if want memcheck_rest; then
  sanitize memcheck test_cuda "$build/tests/test_cuda"
  sanitize memcheck test_cuda_unet "$build/tests/test_cuda_unet"
fi

# ---- train on the GPU: a few epochs on a small synthetic set, the loss falls, and the checkpoint
# loads on the CPU and predicts the masks the GPU predicts (mean dice between the two at least 0.999).
train_smoke() {
  local run="$logdir/07_train_run"
  rm -rf "$run" "$logdir/07_masks_cuda" "$logdir/07_masks_cpu"
  "$build/train_unet" --device cuda --synthetic-count 64 --image-size 64x96 --features 8,16,32,64 --epochs 3 \
    --quiet --out "$run" || return 1
  awk -F, 'NR == 2 { first = $2 } END { print "train loss: epoch 1 " first ", last " $2; exit !($2 < first) }' \
    "$run/metrics.csv" || { echo "the training loss did not fall"; return 1; }
  "$build/predict_unet" --device cuda --checkpoint "$run/best.safetensors" --input "$run/synthetic/train" \
    --output "$logdir/07_masks_cuda" || return 1
  "$build/predict_unet" --device cpu --checkpoint "$run/best.safetensors" --input "$run/synthetic/train" \
    --output "$logdir/07_masks_cpu" || return 1
  "$build/evaluate_masks" --pred "$logdir/07_masks_cuda" --truth "$logdir/07_masks_cpu" \
    --csv "$logdir/07_masks_agreement.csv" | tee "$logdir/07_agreement.txt" || return 1
  awk '{ for (i = 1; i < NF; ++i) if ($i == "dice") { print "cuda vs cpu masks: mean dice " $(i + 1); exit !($(i + 1) + 0 >= 0.999) } }' \
    "$logdir/07_agreement.txt"
}
want train && step "train on cuda, predict on cpu and cuda" 07_train.log train_smoke

# ---- GPU benchmark: our UNet against PyTorch eager on this GPU (bench/compare_gpu.py), the table of
# docs/PERFORMANCE.md. The report, raw JSON lines and each process's stderr go to LOGDIR/06_bench_gpu/.
# Without torch for TL_TORCH_PYTHON our side still runs and the step reports SKIP for the reference.
bench_gpu() {
  if [ ! -x "$build/bench_unet_gpu" ]; then echo "$build/bench_unet_gpu was not built"; return 1; fi
  local profile=()
  if [ -n "$bench_profile" ]; then profile=(--profile "$bench_profile"); fi
  python3 "$root/bench/compare_gpu.py" --ours "$build/bench_unet_gpu" --python "$torch_python" \
    --iters "$bench_iters" --warmup "$bench_warmup" --configs "$bench_configs" \
    --torch-variants "$bench_variants" "${profile[@]}" \
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
