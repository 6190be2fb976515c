"""Summarise comparison runs: a markdown table of validation accuracy and one PNG of the curves.

    python scripts/plot_results.py OUT RUN [RUN ...]

Reads OUT/step1/metrics.jsonl and OUT/RUN/metrics.jsonl (written by `sparks train`), prints the table and writes
OUT/curves.png (step 1 followed by each step-2 run, validation accuracy per epoch).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main(out: Path, runs: list[str]) -> None:
    step1 = read(out / "step1" / "metrics.jsonl")
    offset = len(step1)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(range(1, offset + 1), [r["val_acc"] for r in step1], "k-o", label="step 1 (float weights)")
    print("| run | final val top-1 | best val top-1 | final train loss |")
    print("|---|---|---|---|")
    print(f"| step 1 (binary act., real weights) | {step1[-1]['val_acc']:.2f} | "
          f"{max(r['val_acc'] for r in step1):.2f} | {step1[-1]['train_loss']:.3f} |")
    for run in runs:
        rows = read(out / run / "metrics.jsonl")
        epochs = range(offset + 1, offset + len(rows) + 1)
        ax.plot(epochs, [r["val_acc"] for r in rows], "-o", label=run)
        print(f"| {run} | {rows[-1]['val_acc']:.2f} | {max(r['val_acc'] for r in rows):.2f} | "
              f"{rows[-1]['train_loss']:.3f} |")
    ax.set_xlabel("epoch (step 1, then step 2)")
    ax.set_ylabel("validation top-1 (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=120)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
