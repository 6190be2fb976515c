"""Model registry: ``sparks.models.create(name, **kwargs)``, ``list_models()``, ``register_model``.

Every builder takes keyword arguments ``num_classes``, ``in_channels``, ``width`` (channel multiplier), ``tau`` and
``method`` (plus weight-method keyword arguments); the built model carries ``model_name`` and ``model_args`` so
that a checkpoint can rebuild it.
"""

from __future__ import annotations

from sparks.models import resnet, vgg  # noqa: E402,F401  (registers the builders)
from sparks.models._registry import create, list_models, register_model

__all__ = ["create", "list_models", "register_model"]
