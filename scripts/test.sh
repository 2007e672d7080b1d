#!/usr/bin/env bash
# Everything CI checks: set-up (dev), lint, tests. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
.venv/bin/python -m ruff check .
.venv/bin/python -m pytest -q "$@"
