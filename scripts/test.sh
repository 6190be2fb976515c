#!/usr/bin/env bash
# The test command (README, .ci/run): set up if needed, lint, run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check sparks tests bench scripts
.venv/bin/python -m pytest -q "$@"
