"""sparks: sub-bit binary neural networks by sparse kernel selection (Wang et al., CVPR 2023).

Data flows one way: ``sparks.core`` (codebook, selection, weight methods, layers, convert) → ``sparks.models`` →
``sparks.train`` (writes checkpoints) → ``sparks.deploy`` (export to a ``.sparks`` file, load it back) →
``sparks.runtime`` (the torch-free packed runtime). ``sparks.complexity`` and ``sparks.analysis`` measure models.

The public API::

    sparks.convert(model, tau=5, method="sparks")   # any torch model -> sub-bit model
    sparks.subbit_layers(model)                      # (name, SubBitConv2d) pairs
    sparks.models.create("resnet18_cifar", num_classes=10, tau=5)
    sparks.summary(model)                            # storage, BOPs, FLOPs, OPs
    sparks.export(model, "model.sparks"); sparks.load("model.sparks", runtime="packed")

Names are imported on first use (PEP 562), so ``import sparks.runtime`` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

# public name -> module that defines it
_API = {
    "convert": "sparks.core.convert",
    "replace_module": "sparks.core.convert",
    "ConversionReport": "sparks.core.convert",
    "SubBitConv2d": "sparks.core.layers",
    "subbit_layers": "sparks.core.layers",
    "reset_selection": "sparks.core.layers",
    "set_temperature": "sparks.core.layers",
    "selection_parameters": "sparks.core.layers",
    "load_model": "sparks.train.checkpoint",
    "summary": "sparks.complexity",
    "export": "sparks.deploy.export",
    "load": "sparks.deploy.load",
    "SparksFormatError": "sparks.deploy.format",
    "SparksError": "sparks.errors",
    "UsageError": "sparks.errors",
}
_SUBMODULES = ("analysis", "bench", "cli", "complexity", "core", "deploy", "errors", "models", "runtime", "train")

__all__ = sorted(_API) + list(_SUBMODULES) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"sparks.{name}")
    raise AttributeError(f"module 'sparks' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
