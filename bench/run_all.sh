#!/usr/bin/env bash
# Run every benchmark of docs/benchmarks.md in sequence, on an otherwise idle machine, logging to OUT (default
# bench-results/). Each script measures its own ratios interleaved in one run; this only runs them one after another.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench-results}
mkdir -p "$OUT"
lscpu | grep -E "Model name|^CPU\(s\)|Flags" | sed 's/Flags:.*\(avx512[a-z_0-9 ]*\).*/AVX-512 flags: &/' > "$OUT/cpu.txt"
run() { echo "== $*"; "$@" 2>&1 | tee "$OUT/$(basename "$2" .py).txt"; }
run .venv/bin/python bench/selector_overhead.py
run .venv/bin/python bench/train_throughput.py --steps 8 --warmup 2
run .venv/bin/python bench/runtime_layers.py
run .venv/bin/python bench/runtime.py
run .venv/bin/python bench/loader_throughput.py --data "${CIFAR_DIR:-/tmp/cifar}"
run .venv/bin/python bench/grid_budget.py
