"""``sparks.load``: read a ``.sparks`` file into the packed runtime (default) or back into a PyTorch module."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sparks.deploy.format import read_sparks
from sparks.limits import Limits

RUNTIMES = ("packed", "torch")
DEFAULT_RUNTIME = "packed"  # what a deployer wants; ``sparks run`` uses the same default


def load(path: str | Path, runtime: str = DEFAULT_RUNTIME, limits: Limits | None = None) -> Any:
    """Load a ``.sparks`` file: ``runtime="packed"`` → :class:`sparks.runtime.PackedModel` (numba, no torch);
    ``"torch"`` → an ``nn.Module`` in eval mode whose outputs equal the exported model's. Either has ``.metadata``
    (the file's metadata dict).

    ``limits``: raise the default :class:`sparks.limits.Limits` on purpose (docs/format.md, *Limits*).

    Raises:
        ValueError: an unknown runtime.
        SparksFormatError: the file is not a valid ``.sparks`` file (the message says what is wrong).
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; expected one of {', '.join(RUNTIMES)}")
    metadata, tensors = read_sparks(path, limits)
    if runtime == "packed":
        from sparks.runtime import PackedModel

        return PackedModel(metadata, tensors, limits=limits)
    from sparks.deploy.rebuild import torch_model

    model = torch_model(metadata, tensors, limits)
    model.metadata = metadata  # as PackedModel.metadata: the file's metadata, for both runtimes
    return model
