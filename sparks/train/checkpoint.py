"""Training checkpoints: what they hold, atomic writes, safe loads, and rebuilding the model from one.

A checkpoint is a dict saved with ``torch.save`` and read with ``torch.load(weights_only=True)`` (no pickle of
arbitrary objects), so everything in it is a tensor or a plain type::

    format_version, model_name, model_args, model (state dict of the unwrapped model), optimizer, scheduler,
    scaler, epoch (epochs completed), step (optimizer steps done), best_metric, rng (per rank), config, data,
    and from a training run also metrics (every row so far), best_key, best_epoch (see sparks/train/rundir.py)

:func:`load_model` rebuilds the model with ``sparks.models.create(model_name, **model_args)`` for eval/export.
Loading validates before it allocates (:mod:`sparks.train.checkpoint_check`): the file's size and zip layout (stored
entries only, so no decompression bomb), then every known field's type, then ``model_args`` against
:class:`sparks.limits.Limits` (on the meta device) before the model is built; any problem is one
:class:`~sparks.errors.CheckpointError` line.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sparks.atomic import atomic_path
from sparks.errors import CheckpointError, UsageError, first_line
from sparks.filekind import expect_checkpoint
from sparks.limits import Limits, check_model_args, resolve
from sparks.train.checkpoint_check import FORMAT_VERSION, check_fields, check_rng, check_zip

__all__ = ["FORMAT_VERSION", "CheckpointError", "load_checkpoint", "load_init_weights", "load_model",
           "model_from_checkpoint", "rng_state", "save_checkpoint", "set_rng_state", "unwrap"]


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside a DDP (``.module``) or ``torch.compile`` (``._orig_mod``) wrapper."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def rng_state() -> dict[str, Any]:
    """This process's RNG states (python, numpy, torch, CUDA) as tensors and plain types."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (CheckpointError if it is malformed)."""
    check_rng(state)
    try:
        _restore_rng(state)
    except (KeyError, TypeError, ValueError, RuntimeError, OverflowError, AttributeError) as err:
        raise CheckpointError(f"checkpoint RNG state is malformed ({first_line(err)[:120]})") from None


def _restore_rng(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` to ``path`` atomically (temporary file in the same directory, then ``os.replace``)."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    limits: Limits | None = None) -> dict[str, Any]:
    """Read a sparks checkpoint safely; ``CheckpointError("... is not a sparks checkpoint: ...")`` if it is not one.

    Checks, in order and before the next step allocates: what the file is (a missing, .sparks, text, ... file gets
    the CLI's line from :func:`sparks.filekind.expect_checkpoint`); file size ≤ ``limits.max_file_bytes``; a zip of
    stored (uncompressed) entries whose sizes fit the file (what ``torch.save`` writes); ``torch.load(weights_only)``;
    the type of every known field (``format_version`` an int, ``model`` a dict of tensors, ``optimizer``, ``rng``,
    ``config``, ...); finite floating-point weights.
    """
    path = Path(path)
    lim = resolve(limits)
    head = expect_checkpoint(path)  # a missing, .sparks or other foreign file: the CLI's line saying what to do
    check_zip(path, lim, head)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for corrupt or foreign files
        reason = first_line(err)
        if "Weights only load failed" in reason:
            # torch's own text goes on to suggest weights_only=False, which would run code from the file.
            reason = "not a torch checkpoint, or it holds objects other than tensors and plain types"
        raise CheckpointError(f"{path} is not a sparks checkpoint: {reason[:200]}") from None
    check_fields(state, path, lim)
    return state


def model_from_checkpoint(state: dict[str, Any], source: str | Path = "checkpoint",
                          limits: Limits | None = None) -> nn.Module:
    """Rebuild the checkpoint's model and load its weights (train mode, on CPU); ``model_args`` are checked against
    ``limits`` first (CheckpointError)."""
    from sparks.models import create

    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise CheckpointError(f"{source} is not a sparks checkpoint: no model weights")
    name, args = state.get("model_name"), state.get("model_args", {})
    try:
        check_model_args(name, args, CheckpointError, limits)
    except CheckpointError as err:
        raise CheckpointError(f"{source}: cannot rebuild its model: {err}") from None
    try:
        model = create(name, **args)
    except (KeyError, TypeError, ValueError, RuntimeError, OverflowError) as err:
        raise CheckpointError(f"{source} is not a sparks checkpoint: cannot rebuild its model "
                              f"({first_line(err)[:160]})") from None
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, TypeError, ValueError, KeyError, AttributeError) as err:
        raise CheckpointError(f"{source} is not a sparks checkpoint: its weights do not fit "
                              f"{name} ({first_line(err)[:160]})") from None
    return model


def load_model(checkpoint_path: str | Path, limits: Limits | None = None) -> nn.Module:
    """The model stored in a sparks checkpoint, rebuilt and in eval mode (for eval, export and analysis)."""
    state = load_checkpoint(checkpoint_path, limits=limits)
    model = model_from_checkpoint(state, checkpoint_path, limits)
    model.checkpoint_data = state.get("data", {})
    return model.eval()


def load_init_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str | Path) -> None:
    """Load a step-1 (e.g. ``float``) state dict into a sub-bit model whose keys are a superset of it.

    Every source key must exist with the same shape, and every model key outside the weight methods
    (``.quantizer.``) must come from the source; ``UsageError`` names the first key that does not fit. The
    selections are then restarted from the loaded latent weights.
    """
    from sparks.core.layers import reset_selection

    target = model.state_dict()
    for key, value in state_dict.items():
        if key not in target:
            raise UsageError(f"--init-from {source} does not fit {getattr(model, 'model_name', 'the model')}: "
                             f"key {key!r} is not in the model")
        if tuple(target[key].shape) != tuple(value.shape):
            raise UsageError(f"--init-from {source} does not fit: key {key!r} has shape {tuple(value.shape)}, "
                             f"the model expects {tuple(target[key].shape)}")
    for key in target:
        if key not in state_dict and ".quantizer." not in key:
            raise UsageError(f"--init-from {source} does not fit: it lacks key {key!r}")
    model.load_state_dict(state_dict, strict=False)
    reset_selection(model)
