#!/usr/bin/env bash
# Sets up and runs the test suite on a fresh machine: installs the missing Debian packages, configures,
# builds and runs every test with ctest. Under CI (CI set) compiler warnings are errors.
# Usage: scripts/test.sh [extra ctest arguments, e.g. -L gradcheck]
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install_deps.sh

preset=release
if [ -n "${CI:-}" ]; then preset=ci; fi
jobs=$(nproc 2>/dev/null || echo 2)

cmake --preset "$preset"
cmake --build --preset "$preset" -j "$jobs"
set +e
ctest --preset "$preset" -j "$jobs" --timeout 1200 "$@" | tee "build/$preset/ctest.log"
status=${PIPESTATUS[0]}
set -e

# The gradient check's table of ops and worst errors (ctest keeps test output in its log).
log="build/$preset/Testing/Temporary/LastTest.log"
if [ -f "$log" ] && grep -q "ops checked, tolerance" "$log"; then
  echo
  echo "gradient check (float64 central differences):"
  sed -n '/^op .*cases .*worst rel err/,/ops checked, tolerance/p' "$log"
  grep -E "tests passed|tests failed" "build/$preset/ctest.log" | tail -n 1
fi
exit "$status"
