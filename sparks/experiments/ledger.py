"""The results CSV kept in the repository: one row per finished run, appended once (keyed by its run hash), so a
grid can be stopped and finished later, on another machine, and reported from the CSV alone."""

from __future__ import annotations

import csv
import fcntl
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sparks.errors import UsageError

COLUMNS = ("grid", "label", "method", "tau", "seed", "bits_per_weight", "binary_storage_bits", "total_bits", "bops",
           "flops", "val_top1", "val_top5", "val_loss", "train_loss", "train_acc", "epochs", "steps", "wall_s",
           "device", "git_commit", "shared_hash", "run_hash", "finished_utc")
INT_COLUMNS = frozenset({"tau", "seed", "binary_storage_bits", "total_bits", "epochs", "steps"})
FLOAT_COLUMNS = frozenset({"bits_per_weight", "bops", "flops", "val_top1", "val_top5", "val_loss", "train_loss",
                           "train_acc", "wall_s"})


def _parse(row: dict[str, str], path: Path, line: int) -> dict[str, Any]:
    out: dict[str, Any] = dict(row)
    try:
        for key in INT_COLUMNS:
            out[key] = int(float(row[key])) if row.get(key) not in (None, "") else None
        for key in FLOAT_COLUMNS:
            out[key] = float(row[key]) if row.get(key) not in (None, "") else math.nan
    except ValueError as err:
        raise UsageError(f"results file {path}, line {line}: {err}") from None
    return out


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a results CSV (numbers parsed), first occurrence of each run hash only; [] if it is absent."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("label", "tau", "seed", "val_top1", "run_hash") if c not in (reader.fieldnames or ())]
        if missing:
            raise UsageError(f"results file {path} is not a sparks grid CSV (no column {missing[0]!r})")
        rows, seen = [], set()
        for line, row in enumerate(reader, start=2):
            if row["run_hash"] in seen:
                continue
            seen.add(row["run_hash"])
            rows.append(_parse(row, path, line))
    return rows


def finished_hashes(path: str | Path) -> set[str]:
    """Run hashes already recorded in the CSV."""
    return {row["run_hash"] for row in read_rows(path)}


def _format(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return repr(round(value, 6))
    return str(value)


def append_rows(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Append the rows whose run hash the file does not hold yet (under an exclusive file lock, so parallel writers
    on one machine cannot interleave); writes the header into a new file. Returns the number of rows written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", newline="") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            f.seek(0)
            text = f.read()
            reader = csv.DictReader(text.splitlines())
            if text and list(reader.fieldnames or ()) != list(COLUMNS):
                raise UsageError(f"results file {path} has other columns than this sparks writes; "
                                 f"move it aside or merge it by hand")
            seen = {row["run_hash"] for row in reader}
            writer = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
            if not text:
                writer.writeheader()
            elif not text.endswith("\n"):
                f.write("\n")
            written = 0
            for row in rows:
                if row["run_hash"] in seen:
                    continue
                unknown = set(row) - set(COLUMNS)
                if unknown:
                    raise ValueError(f"unknown result columns {sorted(unknown)}")
                writer.writerow({c: _format(row.get(c)) for c in COLUMNS})
                seen.add(row["run_hash"])
                written += 1
            f.flush()
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
    return written
