"""The arguments every builder shares (num_classes, in_channels, width, tau, method): limits, checks and defaults
in one place, so that a bad value fails before any layer is allocated."""

from __future__ import annotations

import math

MAX_WIDTH = 64.0  # a width multiplier beyond this builds layers of tens of thousands of channels
MAX_CHANNELS = 1 << 16  # of the input and of the classifier (the .sparks format's limit too)
DEFAULT_TAU = 5


def resolve_tau(method: str, tau: int | None, flags: tuple[str, str] = ("tau", "method")) -> int:
    """τ of weight method ``method``: ``tau``, or :data:`DEFAULT_TAU` when ``None``; a method whose τ is fixed
    (``sign``, ``float``: 9) takes only that one. ``ValueError`` for an unknown method, a τ outside 1..9, or a τ the
    method contradicts (named as ``flags``, e.g. ``("--tau", "--method")`` for the CLI)."""
    from sparks.core.methods import check_tau, get_method

    fixed = getattr(get_method(method), "fixed_tau", None)
    if tau is None:
        return fixed or DEFAULT_TAU
    check_tau(tau)
    if fixed is not None and tau != fixed:
        raise ValueError(f"{flags[0]} {tau} contradicts {flags[1]} {method}, which is always tau={fixed} (leave out "
                         f"{flags[0]}, or pick a sub-bit method: sparks, snn, topn, random)")
    return tau


def check_args(num_classes: int, in_channels: int, width: float) -> None:
    """``ValueError`` naming the argument unless 1 ≤ num_classes, in_channels ≤ MAX_CHANNELS and 0 < width ≤
    MAX_WIDTH (finite). (τ is checked by the layer; a τ that a fixed-τ method ignores is refused by the training
    config and the CLI via :func:`resolve_tau`, not here, so that checkpoints written before that rule still load.)"""
    for name, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CHANNELS:
            raise ValueError(f"{name} must be an int in 1..{MAX_CHANNELS}, got {value!r}")
    if isinstance(width, bool) or not isinstance(width, int | float) or not (
            math.isfinite(width) and 0 < width <= MAX_WIDTH):
        raise ValueError(f"width must be a number in (0, {MAX_WIDTH:g}], got {width!r}")


def scaled(channels: int, width: float) -> int:
    """Channel count times the width multiplier, at least 8."""
    return max(8, int(round(channels * width)))
