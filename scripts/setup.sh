#!/usr/bin/env bash
# Set up what sparks needs on a fresh Debian machine, offline apart from the package mirrors: .venv with torch
# (CPU build, from the local wheel cache), sparks and its test extra, and Debian's Fashion-MNIST package.
# Idempotent: every step is skipped when already done. Used by `make demo` and `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv"
    python3 -m venv .venv
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    # torch first, pinned: pip then takes the CPU build on disk instead of downloading a CUDA build.
    .venv/bin/pip install -q torch==2.13.0
fi
if ! .venv/bin/python -c "import sparks, pytest, ruff, numba, safetensors, threadpoolctl" 2>/dev/null; then
    .venv/bin/pip install -q -e '.[test]'
fi

if [ ! -d /usr/share/datasets/fashion-mnist ]; then
    echo "== installing Fashion-MNIST (Debian package dataset-fashion-mnist)"
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq dataset-fashion-mnist
fi
