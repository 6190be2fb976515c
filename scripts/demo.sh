#!/usr/bin/env bash
# The sparks demo: on a fresh Debian machine without internet, set up .venv and Fashion-MNIST if missing, train a
# small Sparks tau=5 model on the CPU, evaluate it on the test set and print accuracy, bits per weight and size.
# Environment overrides: SPARKS_DEMO_OUT (output dir, default runs/demo), SPARKS_DEMO_EPOCHS (default 5),
# SPARKS_DEMO_THREADS (torch CPU threads, default 1: predictable on a shared machine, where an oversubscribed
# thread pool is many times slower).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=.venv/bin/python
bash scripts/setup.sh   # .venv with torch and sparks, Debian's Fashion-MNIST: each step only when missing
DATA=/usr/share/datasets/fashion-mnist

OUT=${SPARKS_DEMO_OUT:-runs/demo}
EPOCHS=${SPARKS_DEMO_EPOCHS:-5}
THREADS=${SPARKS_DEMO_THREADS:-1}
echo "== training vgg_small (width 0.125), Sparks tau=5, ${EPOCHS} epochs, ${THREADS} thread(s), into ${OUT}"
start=$(date +%s)
"$PY" -m sparks train --arch vgg_small --width 0.125 --dataset fashion-mnist --data "$DATA" \
    --method sparks --tau 5 --epochs "$EPOCHS" --batch-size 128 --lr 3e-3 --select-lr 3e-3 --no-augment --no-eval-test \
    --threads "$THREADS" --out "$OUT" --overwrite
end=$(date +%s)

echo "== evaluating on the Fashion-MNIST test set"
"$PY" -m sparks eval --checkpoint "$OUT/last.pt" --data "$DATA" --split test --json > "$OUT/test.json"
"$PY" - "$OUT" "$((end - start))" <<'PYEOF'
import json
import sys

import sparks
from sparks.train.checkpoint import load_model

out, seconds = sys.argv[1], int(sys.argv[2])
result = json.load(open(f"{out}/test.json"))
model = load_model(f"{out}/last.pt")
layers = [layer for _, layer in sparks.subbit_layers(model)]
bits = {round(layer.bits_per_weight, 4) for layer in layers}
report = sparks.summary(model, input_size=(1, 1, 28, 28), print_fn=None)
binary_bits = sum(layer.tau * layer.in_channels * layer.out_channels for layer in layers)
print(f"test accuracy:          {result['top1']:.2f}% top-1, {result['top5']:.2f}% top-5 (n={result['n']})")
print(f"bits per binary weight: {', '.join(f'{b:.3f}' for b in sorted(bits))} (tau={layers[0].tau}, "
      f"{len(layers)} sub-bit layers)")
print(f"model size:             {report['total_bits']:,} bits ({report['total_bits'] / 8 / 1024:.1f} KiB; "
      f"binary kernels {binary_bits:,} bits)")
print(f"training time:          {seconds} s")
PYEOF

echo "== exporting to ${OUT}/model.sparks and running it on the packed CPU runtime"
"$PY" -m sparks export --checkpoint "$OUT/last.pt" --out "$OUT/model.sparks"
"$PY" -m sparks run --model "$OUT/model.sparks" --dataset fashion-mnist --data "$DATA" --split test
