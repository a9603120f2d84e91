#!/usr/bin/env bash
# Builds the libFuzzer harnesses (fuzz/, a separate clang build tree) and runs each for a fixed time
# from its seed corpus in fuzz/corpus/<target>/. A crash, a sanitizer report or a broken property
# fails the run and leaves the input as build/fuzz/crash-<target>-*.
# Usage: scripts/fuzz.sh [seconds per target, default 25] [targets...]
#   exit 0: every target ran clean; 1: a finding or a build failure; 77: clang or libFuzzer is
#   missing (scripts/install_deps.sh installs clang-14 and libclang-rt-14-dev).
# Environment: TL_FUZZ_BUILD (build folder, default build/fuzz), TL_FUZZ_JOBS (default 2),
# CXX_FUZZ (the clang++ to use, default clang++ or clang++-14).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-25}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then targets=(safetensors split_csv rle json image); fi
build=${TL_FUZZ_BUILD:-build/fuzz}
jobs=${TL_FUZZ_JOBS:-2}

skip() { echo "fuzz: SKIPPED: $* (install with scripts/install_deps.sh)"; exit 77; }
cxx=${CXX_FUZZ:-}
if [ -z "$cxx" ]; then
  for c in clang++ clang++-14; do
    if command -v "$c" >/dev/null 2>&1; then cxx=$c; break; fi
  done
fi
{ [ -n "$cxx" ] && command -v "$cxx" >/dev/null 2>&1; } || skip "no clang++ on PATH (package clang)"
probe=$(mktemp -d)
shm=/dev/shm
[ -d "$shm" ] && [ -w "$shm" ] || shm=${TMPDIR:-/tmp}
TL_FUZZ_TMP=$(mktemp -d "$shm/tl_fuzz.XXXXXX")  # the harnesses' input files, in memory where possible
export TL_FUZZ_TMP
trap 'rm -rf "$probe" "$TL_FUZZ_TMP"' EXIT
printf 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }\n' > "$probe/p.cpp"
"$cxx" -fsanitize=fuzzer,address,undefined "$probe/p.cpp" -o "$probe/p" >/dev/null 2>&1 ||
  skip "$cxx cannot link -fsanitize=fuzzer,address,undefined (the libFuzzer runtime, libclang-rt-14-dev, is missing)"

echo "fuzz: building ${targets[*]} with $cxx in $build"
mkdir -p "$build"
cmake -S fuzz -B "$build" -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$build/configure.log" 2>&1 ||
  { cat "$build/configure.log"; echo "fuzz: FAILED: configure"; exit 1; }
cmake --build "$build" -j "$jobs" --target "${targets[@]/#/fuzz_}" >"$build/build.log" 2>&1 ||
  { tail -n 40 "$build/build.log"; echo "fuzz: FAILED: build"; exit 1; }

# A fixed libFuzzer seed (TL_FUZZ_SEED, default 1) makes a run repeatable: the test in CI explores the
# beginning of what a longer run with the same seed explored. TL_FUZZ_SEED=0 picks a random seed, for
# long local runs that should look somewhere new.
seed=${TL_FUZZ_SEED:-1}
# TL_FUZZ_RUNS=N stops each target after N inputs instead of after the seconds given (which stay a
# cap): with the fixed seed the run is then the same on every machine, fast or slow, as a test must be.
limit=(-max_total_time="$seconds")
if [ -n "${TL_FUZZ_RUNS:-}" ]; then limit+=(-runs="$TL_FUZZ_RUNS"); fi

# Each run works on a copy of the seed corpus, so the repository's corpus stays small; -timeout and
# -rss_limit_mb turn a hang or a memory blow-up into a finding.
status=0
for t in "${targets[@]}"; do
  work="$build/corpus_$t"
  rm -rf "$work"
  mkdir -p "$work"
  cp fuzz/corpus/"$t"/* "$work"/ 2>/dev/null || true
  log="$build/$t.log"
  if ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$build/fuzz_$t" "${limit[@]}" -seed="$seed" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$build/crash-$t-" "$work" >"$log" 2>&1; then
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 || true)
    echo "fuzz: $t: ok, $runs executions, seed $seed ($cov, corpus $(ls "$work" | wc -l) inputs)"
  else
    status=1
    tail -n 60 "$log"
    echo "fuzz: $t: FAILED (see $log; the input is $build/crash-$t-*)"
  fi
done
exit $status
