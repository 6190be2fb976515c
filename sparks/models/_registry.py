"""Registered model builders (thin functions) and the one entry point that creates them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a builder under its function name; a duplicate name raises."""
    if fn.__name__ in _BUILDERS:
        raise ValueError(f"model {fn.__name__!r} is already registered")
    _BUILDERS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """Names of the registered models, sorted."""
    return sorted(_BUILDERS)


def create(name: str, **kwargs: Any) -> nn.Module:
    """Build model ``name``; ``None`` values are dropped so unset CLI flags never override builder defaults.

    The model gets ``model_name`` and ``model_args`` (the arguments actually passed) attributes.
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(list_models())}")
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    model = _BUILDERS[name](**kwargs)
    model.model_name = name
    model.model_args = dict(kwargs)
    return model
