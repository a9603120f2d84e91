#!/usr/bin/env bash
# Gathers the header-only dependencies, as installed by scripts/install_deps.sh (Debian's
# libeigen3-dev, libstb-dev, doctest-dev), into one folder laid out as TL_DEPS_PREFIX expects, for a
# machine that has a GPU and the CUDA toolkit but not these packages:
#   DIR/include/eigen3/Eigen/...  DIR/include/stb/stb_image.h ...  DIR/include/doctest/doctest.h
# Then, there: TL_DEPS_PREFIX=DIR scripts/gpu_check.sh LOGDIR
#
# Usage: scripts/pack_deps.sh DIR   (about 12 MB; build/deps is ignored by git)
set -euo pipefail
if [ $# -ne 1 ]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
out=$1
src=${TL_DEPS_SOURCE:-/usr/include}
for d in eigen3/Eigen stb/stb_image.h stb/stb_image_write.h doctest/doctest.h; do
  if [ ! -e "$src/$d" ]; then
    echo "$0: $src/$d is missing: run scripts/install_deps.sh first" >&2
    exit 1
  fi
done
mkdir -p "$out/include"
rm -rf "$out/include/eigen3" "$out/include/stb" "$out/include/doctest"
cp -r "$src/eigen3" "$src/stb" "$src/doctest" "$out/include/"
echo "dependencies in $out/include: $(du -sh "$out" | cut -f1)"
