"""What a run reports as it goes: the metrics.jsonl rows, curves.png and (when installed) TensorBoard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sparks.atomic import atomic_path


def metrics_text(rows: list[dict[str, Any]]) -> str:
    """The text of a metrics.jsonl file: one JSON object a line."""
    return "".join(json.dumps(r) + "\n" for r in rows)


def write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write all metric rows atomically (a kill leaves the old or the new file). They are derived from the rows
    last.pt holds (see :mod:`sparks.train.rundir`)."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(metrics_text(rows))


def log_row(row: dict[str, Any], epochs: int, writer: Any = None, suffix: str = "") -> None:
    """Print an epoch's row as one line (and add its numbers to TensorBoard when ``writer`` is one)."""
    numbers = {k: v for k, v in row.items() if k not in ("epoch", "step") and isinstance(v, (int, float))}
    if writer is not None:
        for key, value in numbers.items():
            writer.add_scalar(key, value, row["epoch"])
    print(f"epoch {row['epoch']}/{epochs}: " + ", ".join(f"{k} {v:.4g}" for k, v in numbers.items()) + suffix,
          flush=True)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of a metrics.jsonl file ([] when it does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_curves(rows: list[dict[str, Any]], path: Path) -> None:
    """Loss and accuracy per epoch to a PNG (matplotlib, Agg backend). Rows may differ in their keys (a resumed
    run may evaluate other splits): each curve uses the rows that have its key."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    selection = any("sel_coverage" in r for r in rows)
    fig, axes = plt.subplots(1, 3 if selection else 2, figsize=(15 if selection else 10, 4))
    ax_loss, ax_acc = axes[0], axes[1]
    if selection:
        _plot_selection(axes[2], [r for r in rows if "sel_coverage" in r])
    for ax, suffix in ((ax_loss, "loss"), (ax_acc, "acc")):
        for split in ("train", "val", "test"):
            points = [(r["epoch"], r[f"{split}_{suffix}"]) for r in rows if f"{split}_{suffix}" in r]
            if points:
                ax.plot(*zip(*points, strict=True), label=split)
        ax.legend()
        ax.grid(alpha=0.3)
    ax_loss.set(xlabel="epoch", ylabel="loss")
    ax_acc.set(xlabel="epoch", ylabel="top-1 accuracy (%)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def _plot_selection(ax: Any, rows: list[dict[str, Any]]) -> None:
    """Selection diagnostics per epoch (sparks.core.diagnostics): coverage, reconstruction error and entropy on the
    left axis (means over layers), codeword switches of all layers on the right."""
    epochs = [r["epoch"] for r in rows]
    ax.plot(epochs, [r["sel_coverage"] for r in rows], label="coverage")
    ax.plot(epochs, [r["sel_error"] for r in rows], label="rel. error")
    if all("sel_entropy" in r for r in rows):
        ax.plot(epochs, [r["sel_entropy"] / 9 for r in rows], label="entropy / 9 bit")
    ax.set(xlabel="epoch", ylabel="mean over layers")
    ax.legend()
    ax.grid(alpha=0.3)
    twin = ax.twinx()
    twin.plot(epochs, [r["sel_switches"] for r in rows], "k--", label="switches")
    twin.set(ylabel="codeword switches (all layers)")
    twin.legend(loc="lower right")


def tensorboard(out: Path) -> Any:
    """A TensorBoard ``SummaryWriter`` on ``out/tb`` when tensorboard is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tb"))
