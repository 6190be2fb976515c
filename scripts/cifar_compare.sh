#!/usr/bin/env bash
# The CPU-scale CIFAR-10 comparison of docs/results.md: one shared step 1 (binary activations, real weights), then
# step 2 for each weight method from the same step-1 checkpoint, same budget, held-out validation split.
#   bash scripts/cifar_compare.sh [OUT=/tmp/cmp] [EPOCHS=5] [WIDTH=0.25]
# CIFAR-10 is expanded from ../shared/data/cifar10 into OUT/cifar first. Step-2 runs go two at a time (2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/cmp}
EPOCHS=${2:-5}
WIDTH=${3:-0.25}
mkdir -p "$OUT"
[ -d "$OUT/cifar/cifar-10-batches-py" ] || .venv/bin/python ../shared/data/cifar10/expand.py "$OUT/cifar"
common=(--arch resnet18_cifar --width "$WIDTH" --dataset cifar10 --data "$OUT/cifar" --val-fraction 0.1
        --epochs "$EPOCHS" --lr 2e-3 --batch-size 128 --threads 1 --seed 0 --no-progress --overwrite)
[ -f "$OUT/step1/last.pt" ] || .venv/bin/sparks train "${common[@]}" --method float --out "$OUT/step1"
step2() {  # method tau
    .venv/bin/sparks train "${common[@]}" --method "$1" --tau "$2" --init-from "$OUT/step1/last.pt" \
        --out "$OUT/$1" > "$OUT/$1.log" 2>&1
}
step2 sign 9 & step2 sparks 5 & wait
step2 snn 5 & step2 topn 5 & wait
.venv/bin/python scripts/plot_results.py "$OUT" sign sparks snn topn
