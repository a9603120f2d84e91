#!/usr/bin/env bash
# Installs the latest PyTorch from PyPI into bench/.venv (ignored by git), for the CPU comparison's
# second reference beside Debian's python3-torch. Nothing in the build or the tests needs it.
# Usage: bash bench/setup_torch_venv.sh        then: bench/.venv/bin/python -c 'import torch'
set -euo pipefail
cd "$(dirname "$0")"
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then "$python" -m venv .venv; fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet --upgrade torch numpy
.venv/bin/python -c 'import torch; print("bench/.venv: torch", torch.__version__, "oneDNN", torch.backends.mkldnn.is_available())'
