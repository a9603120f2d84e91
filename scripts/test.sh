#!/usr/bin/env bash
# Sets up and runs the test suite on a fresh machine: installs the missing Debian packages, configures,
# builds and runs every test with ctest. Under CI (CI set) compiler warnings are errors.
# Usage: scripts/test.sh [extra ctest arguments, e.g. -L gradcheck]
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install_deps.sh test

preset=release
if [ -n "${CI:-}" ]; then preset=ci; fi
jobs=$(nproc 2>/dev/null || echo 2)

cmake --preset "$preset"
cmake --build --preset "$preset" -j "$jobs"
set +e
ctest --preset "$preset" -j "$jobs" --timeout 1200 "$@" | tee "build/$preset/ctest.log"
status=${PIPESTATUS[0]}
set -e

# The evidence tables the tests print (ctest keeps test output in its log): the gradient check's
# worst error per op, the per-op PyTorch parity summary and the UNet parity table.
log="build/$preset/Testing/Temporary/LastTest.log"
if [ -f "$log" ]; then
  if grep -q "ops checked, tolerance" "$log"; then
    echo; echo "gradient check (float64 central differences):"
    sed -n '/^op .*cases .*worst rel err/,/ops checked, tolerance/p' "$log"
  fi
  if grep -q "each with contiguous, first-strided and all-strided inputs" "$log"; then
    echo; echo "op parity with PyTorch:"
    grep "each with contiguous, first-strided and all-strided inputs" "$log"
  fi
  if grep -q "^UNet parity with PyTorch" "$log"; then
    echo; sed -n '/^UNet parity with PyTorch/,/^default  *[0-9]/p' "$log"
  fi
  grep -E "tests passed|tests failed" "build/$preset/ctest.log" | tail -n 1
fi
exit "$status"
