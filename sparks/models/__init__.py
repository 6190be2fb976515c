"""Model registry: ``sparks.models.create(name, **kwargs)``, ``list_models()``, ``register_model``.

Every builder takes keyword arguments ``num_classes``, ``in_channels``, ``width`` (channel multiplier), ``tau`` and
``method`` (plus weight-method keyword arguments); the built model carries ``model_name`` and ``model_args`` so
that a checkpoint can rebuild it, and ``default_input_size`` (C, H, W; registered with the builder) that
:func:`input_size` returns unless a checkpoint says what the model was trained at.
"""

from __future__ import annotations

from sparks.models import resnet, vgg  # noqa: E402,F401  (registers the builders)
from sparks.models._registry import create, input_size, list_models, register_model

__all__ = ["create", "input_size", "list_models", "register_model"]
