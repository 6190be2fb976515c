"""Registered model builders (thin functions), their metadata, and the one entry point that creates them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
_IMAGE_SIZES: dict[str, tuple[int, int]] = {}


def register_model(fn: Callable[..., nn.Module] | None = None, *, image_size: Sequence[int] = (32, 32)) -> Any:
    """Register a builder under its function name, with the (H, W) its architecture is meant for; a duplicate name
    raises. Use bare (``@register_model``) or with metadata (``@register_model(image_size=(224, 224))``)."""
    size = tuple(int(v) for v in image_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"image_size must be (H, W), got {image_size!r}")

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if builder.__name__ in _BUILDERS:
            raise ValueError(f"model {builder.__name__!r} is already registered")
        _BUILDERS[builder.__name__] = builder
        _IMAGE_SIZES[builder.__name__] = size  # type: ignore[assignment]
        return builder

    return wrap(fn) if fn is not None else wrap


def list_models() -> list[str]:
    """Names of the registered models, sorted."""
    return sorted(_BUILDERS)


def create(name: str, **kwargs: Any) -> nn.Module:
    """Build model ``name``; ``None`` values are dropped so unset CLI flags never override builder defaults.

    The model gets ``model_name``, ``model_args`` (the arguments actually passed) and ``default_input_size``
    (C, H, W: its input channels and the architecture's registered image size) attributes.
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(list_models())}")
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    model = _BUILDERS[name](**kwargs)
    model.model_name = name
    model.model_args = dict(kwargs)
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    model.default_input_size = (first.in_channels if first is not None else 3, *_IMAGE_SIZES[name])
    return model


def input_size(model: nn.Module) -> tuple[int, int, int] | None:
    """The (C, H, W) a model takes: what its checkpoint says it was trained at, else its architecture's registered
    size (see :func:`create`); ``None`` for a model that is neither. The one default of ``sparks.summary``,
    ``sparks.export`` and the CLI."""
    default = getattr(model, "default_input_size", None)
    trained = (getattr(model, "checkpoint_data", None) or {}).get("input_size")
    if default is not None and trained and len(trained) == 2:
        return int(default[0]), int(trained[0]), int(trained[1])
    return tuple(int(v) for v in default) if default is not None else None  # type: ignore[return-value]
