"""Training checkpoints: what they hold, atomic writes, safe loads, and rebuilding the model from one.

A checkpoint is a dict saved with ``torch.save`` and read with ``torch.load(weights_only=True)`` (no pickle of
arbitrary objects), so everything in it is a tensor or a plain type::

    format_version, model_name, model_args, model (state dict of the unwrapped model), optimizer, scheduler,
    scaler, epoch (epochs completed), step (optimizer steps done), best_metric, rng (per rank), config, data,
    and from a training run also metrics (every row so far), best_key, best_epoch (see sparks/train/rundir.py)

:func:`load_model` rebuilds the model with ``sparks.models.create(model_name, **model_args)`` for eval/export.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sparks.atomic import atomic_path
from sparks.errors import UsageError, first_line

FORMAT_VERSION = 1


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
    """Restore what :func:`rng_state` returned."""
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


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a sparks checkpoint safely; ``UsageError("... is not a sparks checkpoint: ...")`` if it is not one."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"checkpoint {path} does not exist")
    if path.is_dir():
        raise UsageError(f"checkpoint {path} is a directory, not a file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for corrupt or foreign files
        reason = first_line(err)
        if "Weights only load failed" in reason:
            # torch's own text goes on to suggest weights_only=False, which would run code from the file.
            reason = "not a torch checkpoint, or it holds objects other than tensors and plain types"
        raise UsageError(f"{path} is not a sparks checkpoint: {reason}") from None
    if not isinstance(state, dict) or "format_version" not in state or "model" not in state:
        raise UsageError(f"{path} is not a sparks checkpoint: no format_version/model entries")
    if state["format_version"] > FORMAT_VERSION:
        raise UsageError(f"{path} has checkpoint format {state['format_version']}, newer than this sparks "
                         f"({FORMAT_VERSION}); upgrade sparks")
    return state


def model_from_checkpoint(state: dict[str, Any], source: str | Path = "checkpoint") -> nn.Module:
    """Rebuild the checkpoint's model and load its weights (train mode, on CPU)."""
    from sparks.models import create

    try:
        model = create(state["model_name"], **state.get("model_args", {}))
    except (KeyError, TypeError, ValueError) as err:
        raise UsageError(f"{source} is not a sparks checkpoint: cannot rebuild its model ({err})") from None
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise UsageError(f"{source} is not a sparks checkpoint: its weights do not fit "
                         f"{state['model_name']} ({first_line(err)})") from None
    return model


def load_model(checkpoint_path: str | Path) -> nn.Module:
    """The model stored in a sparks checkpoint, rebuilt and in eval mode (for eval, export and analysis)."""
    state = load_checkpoint(checkpoint_path)
    model = model_from_checkpoint(state, checkpoint_path)
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
