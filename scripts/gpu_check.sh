#!/usr/bin/env bash
# One prepared GPU check (≤ 8 minutes on one H100-class GPU): the suite's CUDA tests, train throughput of float,
# sign and Sparks τ=5 (resnet18_cifar width 1, batch 256, bf16, channels-last), and a CIFAR-10 two-step run
# (float, then Sparks τ=5) for as many epochs as fit the budget; validation accuracy, wall time, one JSON.
#
#   scripts/gpu_check.sh DATA [JSON]
#
# DATA: a folder holding cifar-10-batches-py/ (or data_batch_1..5 itself), or a folder holding
#       cifar10-train-jpeg.npz and expand.py (../shared/data/cifar10, 45 MB: it fits the device machine's 64 MiB
#       working-tree limit, the expanded 150 MB does not); it is expanded once into $TMPDIR/sparks_cifar10.
# JSON: where the figures go (default $OUT/gpu_check.json, else ./gpu_check.json).
# Dry run on the CPU with tiny sizes (see scripts/gpu_check.py for every knob):
#   GPU_CHECK_DEVICE=cpu GPU_CHECK_WIDTH=0.0625 GPU_CHECK_BATCH=32 GPU_CHECK_STEPS=2 GPU_CHECK_ROUNDS=1 \
#   GPU_CHECK_SUBSET=256 GPU_CHECK_EPOCHS=1,1 scripts/gpu_check.sh /work/data/cifar /tmp/gpu_check.json
set -uo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?usage: scripts/gpu_check.sh DATA [JSON]}
JSON=${2:-${OUT:-.}/gpu_check.json}
PY=${PYTHON:-python3}
TMP=${TMPDIR:-/tmp}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
start=$(date +%s)
mkdir -p "$TMP"

if [ -f "$DATA/cifar-10-batches-py/data_batch_1" ] || [ -f "$DATA/data_batch_1" ]; then
    CIFAR=$DATA
elif [ -f "$DATA/cifar10-train-jpeg.npz" ] && [ -f "$DATA/expand.py" ]; then
    CIFAR=$TMP/sparks_cifar10
    [ -f "$CIFAR/cifar-10-batches-py/data_batch_1" ] || "$PY" "$DATA/expand.py" "$CIFAR" || exit 1
else
    echo "gpu_check: $DATA holds neither cifar-10-batches-py/ nor cifar10-train-jpeg.npz + expand.py" >&2
    exit 2
fi
echo "== data ready after $(( $(date +%s) - start )) s: $CIFAR"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

echo "== CUDA tests (pytest -m cuda)"
timeout "${GPU_CHECK_TEST_TIMEOUT:-150}" "$PY" -m pytest -q -m cuda -p no:cacheprovider tests 2>&1 | tee "$TMP/gpu_check_tests.log"
tests_rc=${PIPESTATUS[0]}
summary=$(tail -n 1 "$TMP/gpu_check_tests.log")
echo "== tests exit $tests_rc after $(( $(date +%s) - start )) s"

echo "== throughput and budgeted CIFAR-10 two-step run"
"$PY" scripts/gpu_check.py --data "$CIFAR" --json "$JSON" --tests-summary "rc=$tests_rc: $summary"
run_rc=$?
echo "== done in $(( $(date +%s) - start )) s (tests exit $tests_rc, run exit $run_rc); figures: $JSON"
[ "$tests_rc" -eq 0 ] && [ "$run_rc" -eq 0 ]
