"""The divergence guard: an epoch whose loss exploded or whose accuracy fell back to chance is not checkpointed, and
``--diverge-patience`` such epochs in a row stop the run with the last good checkpoint kept (the per-step NaN/Inf
guard is in the loop). Thresholds are documented in docs/training.md."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

AT_CHANCE = 0.02  # an accuracy below chance + 2 % of the distance to 100 % is "at chance"
LEARNED = 0.10  # a collapse needs an earlier epoch at least chance + 10 % of that distance
EXIT_DIVERGED = 3  # exit code of a diverged run: `sparks train` and the sweep worker (2 is bad input)


class TrainingDiverged(RuntimeError):
    """The loss became NaN/Inf or exploded, or accuracy collapsed; the last good checkpoint is left untouched."""

    @classmethod
    def at(cls, problem: str, epoch: int, in_a_row: int, last: Path) -> TrainingDiverged:
        """The error of ``in_a_row`` divergent epochs ending at ``epoch``, naming the last good checkpoint."""
        good = epoch - in_a_row
        where = f"{last} (epoch {good})" if good > 0 and last.exists() else "none written yet"
        row = f" ({in_a_row} epochs in a row)" if in_a_row > 1 else ""
        return cls(f"training diverged: {problem} at epoch {epoch}{row}; last good checkpoint: {where}")


def epoch_problem(rows: list[dict[str, Any]], num_classes: int, factor: float, key: str) -> str | None:
    """Why the last of ``rows`` (metrics rows, oldest first) looks divergent, or None.

    Loss: non-finite, or above ``factor`` × the first epoch's train loss (at most ln(num_classes), the loss of a
    uniform guess, so a first epoch that already exploded sets no bar); ``factor <= 0`` turns this check off.
    Accuracy (``key``, e.g. ``val_acc``; ``train_acc`` for rows without it): at chance after an earlier epoch had
    clearly learned."""
    row = rows[-1]
    loss = float(row["train_loss"])
    if not math.isfinite(loss):
        return f"train loss {loss}"
    chance_loss = math.log(max(num_classes, 2))
    first = float(rows[0]["train_loss"])
    reference = min(first, chance_loss) if math.isfinite(first) and first > 0 else chance_loss
    if factor > 0 and loss > factor * reference:
        return f"train loss {loss:.4g} > {factor:g} x {reference:.4g}"
    name = key if key in row else "train_acc"
    chance = 100.0 / num_classes
    earlier = [float(r[name]) for r in rows[:-1] if name in r]
    acc = float(row[name])
    if acc < chance + AT_CHANCE * (100 - chance) and earlier and max(earlier) >= chance + LEARNED * (100 - chance):
        return f"{name} {acc:.2f}% is at chance level ({chance:.3g}%) after {max(earlier):.2f}%"
    return None
