"""Explicit resource limits for every loader: what a file may declare before anything is allocated from it.

A ``.sparks`` file, a checkpoint, a config file or a data file is checked against :class:`Limits` before its numbers
drive an allocation (header, declared sizes, architecture arguments), so a small hostile file cannot make a load
use more than a small multiple of its size plus the model it describes. The defaults fit every registered
architecture at width ≤ 4 with ImageNet-sized heads; a user raises them on purpose with ``limits=Limits(...)`` or
the ``SPARKS_LIMITS`` environment variable (``SPARKS_LIMITS="max_params=1e9,max_file_bytes=8e9"``). No torch import
here (the packed runtime uses it); :func:`check_model_args` imports torch lazily. See docs/format.md, *Limits*.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any

from sparks.errors import SparksError, UsageError

ENV_VAR = "SPARKS_LIMITS"
KNOWN_ARGS = ("width", "num_classes", "in_channels", "tau", "method")  # every builder's shared keyword arguments
SELECTION_ALLOWANCE = 512 * 512  # training-only selection parameters one sub-bit layer may add (Sparks scores)


@dataclass(frozen=True)
class Limits:
    """Upper bounds on what a file may declare; every field can be raised by the user on purpose."""

    max_file_bytes: int = 1 << 32  # a .sparks file or checkpoint on disk
    max_header_bytes: int = 1 << 24  # safetensors JSON header of a .sparks file
    max_table_bytes: int = 1 << 24  # the decompressed layer table of a .sparks file
    max_ops: int = 10_000  # ops in a layer table
    max_channels: int = 1 << 16  # channels of one layer, in_channels of a model
    max_classes: int = 1 << 20  # num_classes of a model
    max_spatial: int = 1 << 14  # input height / width
    max_value_elements: int = 1 << 24  # elements of one activation at batch 1 (64 MiB in float32)
    max_width: float = 64.0  # channel width multiplier in model_args
    max_params: int = 1 << 27  # parameters + buffers of a described model (134 M: 512 MiB in float32)
    max_config_bytes: int = 1 << 20  # a YAML config file
    max_data_bytes: int = 1 << 33  # one dataset file (IDX images, CIFAR batch), after gunzip
    max_tensors: int = 100_000  # tensors in a checkpoint's state dicts
    max_abs_value: float = 1e12  # |x| of a stored real value: larger ones overflow float32 within a layer or two

    @property
    def max_model_bytes(self) -> int:
        """Bytes of the described model in float32: the memory a load may add on top of the file."""
        return 4 * self.max_params


def _parse_env(text: str) -> dict[str, Any]:
    fields = {f.name: f for f in dataclasses.fields(Limits)}
    out: dict[str, Any] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in fields:
            raise UsageError(f"{ENV_VAR}: expected NAME=VALUE with NAME one of {', '.join(fields)}, got {item!r}")
        try:
            number = float(value)
        except ValueError:
            raise UsageError(f"{ENV_VAR}: {key} must be a number, got {value!r}") from None
        if not math.isfinite(number) or number <= 0:
            raise UsageError(f"{ENV_VAR}: {key} must be a positive finite number, got {value!r}")
        out[key] = number if fields[key].type == "float" else int(number)
    return out


def resolve(limits: Limits | None = None) -> Limits:
    """``limits``, or the defaults updated by the ``SPARKS_LIMITS`` environment variable."""
    if limits is not None:
        return limits
    text = os.environ.get(ENV_VAR, "")
    return Limits(**_parse_env(text)) if text else Limits()


def check_size(what: str, size: int, limit: int, field: str, error: type[SparksError]) -> None:
    """Raise ``error`` if ``size`` exceeds ``limit``, naming the :class:`Limits` field that raises it."""
    if size > limit:
        raise error(f"{what} is {size:,}, over the limit of {limit:,} (raise Limits.{field} or "
                    f"{ENV_VAR}={field}=N if this is intended)")


def _number(args: dict, key: str, lo: float, hi: float, integer: bool, error: type[SparksError]) -> None:
    v = args[key]
    ok = not isinstance(v, bool) and (isinstance(v, int) if integer else isinstance(v, (int, float)))
    if not ok or not (math.isfinite(v) and lo <= v <= hi):
        kind = "an int" if integer else "a finite number"
        raise error(f"model_args: {key!r} must be {kind} in {lo:g}..{hi:g}, got {v!r:.60}")


def check_model_args(name: object, args: object, error: type[SparksError], limits: Limits | None = None) -> None:
    """Check an architecture name and its builder arguments from a file before building the model.

    Types and ranges of ``width``/``num_classes``/``in_channels``/``tau``/``method``, scalars elsewhere, then the
    parameter count of the model they describe (built on torch's ``meta`` device, which allocates nothing) against
    ``limits.max_params``. Raises ``error`` (one line) on the first problem.
    """
    from sparks.models import list_models

    lim = resolve(limits)
    if not isinstance(name, str) or name not in list_models():
        raise error(f"unknown architecture {name!r:.60}; known: {', '.join(list_models())}")
    if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
        raise error(f"model_args must be a mapping of names to values, got {type(args).__name__}")
    for key, v in args.items():
        if not (v is None or isinstance(v, (bool, str)) or (isinstance(v, (int, float)) and math.isfinite(v)
                                                            and abs(v) < 2**31)) or len(str(v)) > 200:
            raise error(f"model_args: {key!r} must be a plain scalar, got {v!r:.60}")
    present = {k: args[k] for k in KNOWN_ARGS if args.get(k) is not None}
    if "width" in present:
        _number(present, "width", 1e-3, lim.max_width, False, error)
    if "num_classes" in present:
        _number(present, "num_classes", 1, lim.max_classes, True, error)
    if "in_channels" in present:
        _number(present, "in_channels", 1, lim.max_channels, True, error)
    if "tau" in present:
        _number(present, "tau", 1, 9, True, error)
    if "method" in present and not isinstance(present["method"], str):
        raise error(f"model_args: 'method' must be a string, got {present['method']!r:.60}")
    try:
        params = described_params(name, present)
    except (TypeError, ValueError, RuntimeError, OverflowError) as err:
        raise error(f"model_args {present} do not build {name}: {str(err).splitlines()[0][:120] if str(err) else err!r}"
                    ) from None
    check_size(f"{name} with {present}: parameter count", params, lim.max_params, "max_params", error)


def described_params(name: str, args: dict[str, Any], selection: bool = True) -> int:
    """Parameters + buffers of ``create(name, **args)`` (shared arguments only) plus, with ``selection``, the
    training-only selection parameters any method may add; counted on the ``meta`` device (no memory)."""
    import torch

    from sparks.models import create

    shared = {k: args[k] for k in ("width", "num_classes", "in_channels") if k in args}
    with torch.device("meta"):
        model = create(name, **shared, method="float")
    count = sum(t.numel() for t in model.parameters()) + sum(t.numel() for t in model.buffers())
    subbit = sum(1 for m in model.modules() if hasattr(m, "tau") and hasattr(m, "quantizer"))
    return int(count + (SELECTION_ALLOWANCE * subbit if selection else 0))
