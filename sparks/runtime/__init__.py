"""Packed CPU runtime for exported sparks models: numpy + numba only, no torch."""

from __future__ import annotations

from typing import Any

__all__ = ["PackedModel"]


def __getattr__(name: str) -> Any:
    # lazy, so that importing sparks.runtime.kernels alone does not pull in the engine
    if name == "PackedModel":
        from sparks.runtime.engine import PackedModel

        return PackedModel
    raise AttributeError(f"module 'sparks.runtime' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
