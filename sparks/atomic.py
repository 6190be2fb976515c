"""Atomic file writes: never leave a half-written checkpoint, export or report behind (no torch import here)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sparks.faults import fault_point

TMP_SUFFIX = ".tmp"


def temp_name(path: Path) -> Path:
    """The temporary file :func:`atomic_path` writes for ``path``: ``.NAME.PID.tmp`` beside it."""
    return path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; on success it is flushed to disk and replaces ``path``
    in one rename, on any error it is removed and ``path`` is left untouched."""
    path = Path(path)
    tmp = temp_name(path)
    try:
        yield tmp
        fault_point(f"write:{path.name}", partial=tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        fault_point(f"replace:{path.name}")
        os.replace(tmp, path)
        fault_point(f"replaced:{path.name}")
    finally:
        tmp.unlink(missing_ok=True)
