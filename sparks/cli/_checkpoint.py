"""Rebuild a model from a checkpoint file for the read-only subcommands (``summary``, ``analyze``).

Uses ``sparks.checkpoint.load_model`` when that module exists; otherwise reads a ``torch.load(weights_only=True)``
dict with keys ``model_name``, ``model_args`` and ``model`` (the state dict) and rebuilds through the registry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ..errors import UsageError


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def load_checkpoint_model(path: str | Path) -> nn.Module:
    """The model stored in checkpoint ``path`` (CPU, eval mode); ``UsageError`` naming the problem otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} not found")
    try:
        from ..checkpoint import load_model  # the training engineer's loader, when present
    except ImportError:
        load_model = None
    if load_model is not None:
        loaded = load_model(path)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        if isinstance(model, nn.Module):
            return model.eval()
    return _load_plain(path).eval()


def _load_plain(path: Path) -> nn.Module:
    import torch

    from ..models import create

    try:
        ckpt: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is a usage error, reported in one line
        raise UsageError(f"cannot read checkpoint {str(path)!r}: {_first_line(err)}") from err
    if not isinstance(ckpt, dict) or not {"model_name", "model_args", "model"} <= set(ckpt):
        raise UsageError(f"{str(path)!r} is not a sparks checkpoint (expected keys model_name, model_args, model)")
    try:
        model = create(ckpt["model_name"], **dict(ckpt["model_args"]))
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, TypeError, ValueError) as err:
        raise UsageError(f"checkpoint {str(path)!r} does not fit model {ckpt['model_name']!r}: "
                         f"{_first_line(err)}") from err
    return model
