#!/usr/bin/env bash
# Sets up and trains on a fresh machine: installs the missing Debian packages, builds the release
# preset, and runs train_unet with the given flags. Without flags it trains on the built-in
# synthetic set (a few minutes on 2 CPU cores) and writes the run to runs/train_<date>-<time>/.
# Usage: scripts/train.sh [train_unet flags, e.g. --data-dir /data/carvana --epochs 10]
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install_deps.sh train
cmake --preset release >/dev/null
cmake --build --preset release -j "$(nproc 2>/dev/null || echo 2)" --target train_unet predict_unet
exec ./build/release/train_unet "$@"
