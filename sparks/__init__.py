"""sparks: sub-bit binary neural networks by sparse kernel selection (Wang et al., CVPR 2023).

Public API (torch-dependent names are imported lazily, so ``sparks.runtime`` and ``sparks.format`` work without
torch)::

    sparks.convert(model, tau=5, method="sparks")   # any torch model -> sub-bit model
    sparks.subbit_layers(model)                      # (name, SubBitConv2d) pairs
    sparks.summary(model, input_size=(1, 3, 224, 224))
    sparks.export(model, "model.sparks"); sparks.load("model.sparks", runtime="packed")
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "convert": "sparks.convert",
    "subbit_layers": "sparks.convert",
    "reset_selection": "sparks.convert",
    "set_temperature": "sparks.convert",
    "ConversionReport": "sparks.convert",
    "selection_parameters": "sparks.convert",
    "SubBitConv2d": "sparks.layers",
    "load_model": "sparks.checkpoint",
    "summary": "sparks.complexity",
    "export": "sparks.export",
    "load": "sparks.export",
    "SparksFormatError": "sparks.format",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sparks' has no attribute {name!r}")


class _SparksPackage(types.ModuleType):
    """``sparks.convert`` and ``sparks.export`` are functions that live in same-named submodules. Importing such a
    submodule would rebind the package attribute to the module; this keeps the function (import the submodules
    with ``from sparks.convert import ...``)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _SparksPackage
