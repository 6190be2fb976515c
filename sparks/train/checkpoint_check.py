"""Validation of a training checkpoint before it is used: zip layout, then the type of every known field.

A checkpoint is a ``torch.save`` zip of stored (uncompressed) entries; anything else — a legacy pickle, a deflated
entry (a decompression bomb), entries larger than the file — is refused before ``torch.load`` allocates. After the
load every field the code reads is type-checked, so a legal but hostile file (``format_version`` a string,
``model`` not a dict, ``optimizer`` None, a bad ``rng``) gives one :class:`~sparks.errors.CheckpointError` line.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path
from typing import Any

import torch

from sparks.core.codebook import NUM_CODEWORDS
from sparks.errors import CheckpointError, first_line
from sparks.limits import Limits, check_size

FORMAT_VERSION = 1
MAX_RANKS = 4096  # RNG states (one per process) a checkpoint may hold
NUMERIC_HYPERPARAMETERS = ("lr", "initial_lr", "weight_decay", "eps")


def _fail(path: Path | str, reason: str) -> CheckpointError:
    return CheckpointError(f"{path} is not a sparks checkpoint: {reason}")


def check_zip(path: Path, lim: Limits, head: bytes) -> None:
    """The file is a zip of stored entries whose sizes fit the file (what ``torch.save`` writes); ``head``: its first
    bytes, as :func:`sparks.filekind.expect_checkpoint` read them (it names .sparks and other files)."""
    size = path.stat().st_size
    check_size(f"{path}: file size", size, lim.max_file_bytes, "max_file_bytes", CheckpointError)
    if not head.startswith(b"PK\x03\x04"):
        raise _fail(path, "not a zip-format torch file (torch.save writes a zip)")
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as err:
        raise _fail(path, f"corrupted zip ({first_line(err)[:120]})") from None
    check_size(f"{path}: zip entry count", len(infos), lim.max_tensors + 64, "max_tensors", CheckpointError)
    total = 0
    for info in infos:
        if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
            raise _fail(path, f"zip entry {info.filename[:80]!r} is compressed (torch.save stores entries)")
        total += info.file_size
    if total > size:
        raise _fail(path, f"zip entries declare {total:,} bytes in a {size:,}-byte file")


def _int(state: dict, key: str, path: Path | str, lo: int = 0) -> None:
    v = state[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise CheckpointError(f"{path}: checkpoint field {key!r} must be an int >= {lo}, got {v!r:.60}")


def _typed(state: dict, key: str, kinds: tuple[type, ...], path: Path | str, what: str) -> None:
    if key in state and not isinstance(state[key], kinds):
        raise CheckpointError(f"{path}: checkpoint field {key!r} must be {what}, got {type(state[key]).__name__}")


def check_fields(state: Any, path: Path | str, lim: Limits) -> None:
    """Type of every known field (unknown extra fields are allowed and ignored); finite model weights."""
    if not isinstance(state, dict) or "format_version" not in state or "model" not in state:
        raise _fail(path, "no format_version/model entries")
    version = state["format_version"]
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise _fail(path, f"format_version must be a positive int, got {version!r:.40}")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {version}, newer than this sparks ({FORMAT_VERSION}); "
                              f"upgrade sparks")
    model = state["model"]
    if not isinstance(model, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in model.items()):
        raise _fail(path, "'model' must be a dict of tensors (a state dict)")
    check_size(f"{path}: tensors in 'model'", len(model), lim.max_tensors, "max_tensors", CheckpointError)
    for key, t in model.items():
        check_weight(key, t, path, lim)
    _typed(state, "model_name", (str,), path, "a string")
    for key in ("model_args", "config", "data", "scheduler"):
        _typed(state, key, (dict,), path, "a dict")
    _typed(state, "scaler", (dict, type(None)), path, "a dict")
    for key in ("epoch", "step"):
        if key in state:
            _int(state, key, path)
    for key in ("best_metric", "metric"):
        v = state.get(key, 0.0)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
            raise CheckpointError(f"{path}: checkpoint field {key!r} must be a number, got {v!r:.60}")
    if "optimizer" in state and not _optimizer_ok(state["optimizer"]):
        raise CheckpointError(f"{path}: checkpoint field 'optimizer' is not an optimizer state dict (state: {{int: "
                              f"{{name: tensor or number}}}}, param_groups: [{{params: [int], lr: number, ...}}])")
    if "rng" in state:
        rng = state["rng"]
        if not isinstance(rng, list) or len(rng) > MAX_RANKS:
            raise CheckpointError(f"{path}: checkpoint field 'rng' must be a list of per-process RNG states")
        for entry in rng:
            check_rng(entry, path)


def check_weight(key: str, t: torch.Tensor, path: Path | str, lim: Limits) -> None:
    """Values a model can run on: finite and |x| ≤ ``max_abs_value``, BN variances ≥ 0, codeword indices < 512."""
    if t.is_floating_point():
        peak = float(t.abs().max()) if t.numel() else 0.0  # NaN propagates through max
        if not peak <= lim.max_abs_value:
            raise CheckpointError(f"{path}: weight {key[:80]!r} holds NaN, infinite or huge (|x| > "
                                  f"{lim.max_abs_value:g}, Limits.max_abs_value) values")
        if key.endswith("running_var") and t.numel() and float(t.min()) < 0:
            raise CheckpointError(f"{path}: batch-norm variance {key[:80]!r} is negative")
    elif key.endswith(".selected") and t.numel() and (int(t.min()) < 0 or int(t.max()) >= NUM_CODEWORDS):
        raise CheckpointError(f"{path}: codeword indices {key[:80]!r} outside 0..{NUM_CODEWORDS - 1}")


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (bool, str)) or (isinstance(v, (int, float)) and not math.isnan(v))


def _optimizer_ok(opt: Any) -> bool:
    """``torch.optim.Optimizer.state_dict()`` structure: per-parameter state, then groups of hyperparameters."""
    if not isinstance(opt, dict) or not isinstance(opt.get("state"), dict):
        return False
    if not isinstance(opt.get("param_groups"), list):
        return False
    for key, entry in opt["state"].items():
        if isinstance(key, bool) or not isinstance(key, int) or not isinstance(entry, dict):
            return False
        if not all(isinstance(v, torch.Tensor) or _scalar(v) for v in entry.values()):
            return False
    for group in opt["param_groups"]:
        if not isinstance(group, dict) or not isinstance(group.get("params"), list):
            return False
        if not all(isinstance(p, int) and not isinstance(p, bool) for p in group["params"]):
            return False
        for key, v in group.items():
            if key == "params":
                continue
            if key in NUMERIC_HYPERPARAMETERS and (isinstance(v, bool) or not isinstance(v, (int, float))
                                                   or not math.isfinite(v) or v < 0):
                return False
            items = v if isinstance(v, (list, tuple)) and len(v) <= 16 else [v]
            if not all(_scalar(x) for x in items):
                return False
    return True


def _tensor(v: Any, dtype: torch.dtype, numel: int | None) -> bool:
    return isinstance(v, torch.Tensor) and v.dtype == dtype and v.dim() == 1 and (numel is None or v.numel() == numel)


def check_rng(entry: Any, path: Path | str = "checkpoint") -> None:
    """One process's RNG state has the structure :func:`sparks.train.checkpoint.rng_state` writes."""
    py = entry.get("python") if isinstance(entry, dict) else None
    npy = entry.get("numpy") if isinstance(entry, dict) else None
    ok = (isinstance(py, dict) and isinstance(npy, dict)
          and isinstance(py.get("version"), int) and _tensor(py.get("state"), torch.int64, 625)
          and (py.get("gauss") is None or isinstance(py.get("gauss"), float))
          and isinstance(npy.get("kind"), str) and _tensor(npy.get("keys"), torch.int64, 624)
          and isinstance(npy.get("pos"), int) and isinstance(npy.get("has_gauss"), int)
          and isinstance(npy.get("cached"), float) and _tensor(entry.get("torch"), torch.uint8, None)
          and (entry.get("cuda") is None or isinstance(entry.get("cuda"), list)))
    if not ok:
        raise CheckpointError(f"{path}: checkpoint field 'rng' holds a malformed RNG state")
