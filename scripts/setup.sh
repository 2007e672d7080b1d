#!/usr/bin/env bash
# Create .venv with the project's pinned stack. Idempotent: a second run installs nothing new.
#   bash scripts/setup.sh          # runtime
#   bash scripts/setup.sh --dev    # + pytest and ruff
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip

# torch first, pinned: a bare "torch" requirement would pull a multi-GB CUDA build. On the
# project's machines the CPU wheel of 2.13.0 lies on disk; elsewhere set TORCH_INDEX_URL
# (e.g. https://download.pytorch.org/whl/cpu, or a CUDA index on a GPU machine).
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
fi

extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"
.venv/bin/python -m pip install -q -e ".${extras}"
echo "set-up done: $(.venv/bin/python --version) in .venv"
