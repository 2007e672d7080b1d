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

extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"
.venv/bin/python -m pip install -q -e ".${extras}"
echo "set-up done: $(.venv/bin/python --version) in .venv"
