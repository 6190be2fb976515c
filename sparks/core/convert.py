"""Turn any PyTorch model into a sub-bit one: ``sparks.convert(model, tau=5)``."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from torch import nn

from sparks.core.layers import SubBitConv2d
from sparks.core.methods import check_tau, get_method

log = logging.getLogger(__name__)


@dataclass
class ConversionReport:
    """What :func:`convert` did: converted layer names and the convs left alone, each with the reason."""

    converted: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def _ineligible_reason(conv: nn.Conv2d) -> str | None:
    if conv.kernel_size != (3, 3):
        return f"kernel {conv.kernel_size[0]}x{conv.kernel_size[1]}, not 3x3"
    if conv.groups != 1:
        return f"groups={conv.groups}, not 1"
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return f"padding {conv.padding!r}/{conv.padding_mode} unsupported"
    return None


def convert(model: nn.Module, tau: int = 5, method: str = "sparks", skip: Iterable[str] = (),
            skip_first: bool = True, only: Iterable[str] | None = None, binary_activation: bool = True,
            report: ConversionReport | None = None, **method_kwargs: object) -> nn.Module:
    """Replace eligible ``nn.Conv2d`` modules of ``model`` (in place) by :class:`SubBitConv2d`; return ``model``.

    Eligible: 3×3 kernel, groups 1, zero padding. The float weights (and bias) become the latent weights, so
    state-dict keys stay the same (plus the method's own entries under ``<name>.quantizer``).

    Args:
        tau: bits per kernel index, an int in 1..9.
        method: a weight method name (``sparks``, ``sign``, ``snn``, ``topn``, ``random``, ``float``).
        skip: module names to leave real-valued.
        skip_first: leave the first conv of the model real-valued (the stem), as BNNs do.
        only: if given, convert exactly these module names; each must be an eligible conv (``ValueError`` otherwise).
        binary_activation: binarize each converted layer's input.
        report: a :class:`ConversionReport` to fill in; skipped layers are also logged at INFO level.
        **method_kwargs: passed to the weight method.

    Raises:
        ValueError: bad ``tau`` or ``method``, or an ``only`` name that is missing or not an eligible conv.
    """
    check_tau(tau)
    get_method(method)
    report = report if report is not None else ConversionReport()
    skip = set(skip)
    convs = [(name, m) for name, m in model.named_modules() if type(m) is nn.Conv2d]
    if only is not None:
        only = list(only)
        by_name = dict(convs)
        for name in only:
            if name not in by_name:
                raise ValueError(f"{name!r} is not an nn.Conv2d of this model")
            reason = _ineligible_reason(by_name[name])
            if reason:
                raise ValueError(f"cannot convert {name!r}: {reason}; only 3x3 convs with groups=1 are sub-bit")
        wanted = set(only)
    else:
        wanted = None
    for position, (name, conv) in enumerate(convs):
        if wanted is not None:
            reason = None if name in wanted else "not in `only`"
        elif name in skip:
            reason = "in skip list"
        elif skip_first and position == 0:
            reason = "first conv (stem) stays real-valued"
        else:
            reason = _ineligible_reason(conv)
        if reason:
            report.skipped[name] = reason
            log.info("sparks.convert: leaving %s real-valued (%s)", name, reason)
            continue
        replace_module(model, name, _to_subbit(conv, tau, method, binary_activation, method_kwargs))
        report.converted.append(name)
    return model


def _to_subbit(conv: nn.Conv2d, tau: int, method: str, binary_activation: bool,
               method_kwargs: dict[str, object]) -> SubBitConv2d:
    layer = SubBitConv2d(conv.in_channels, conv.out_channels, stride=conv.stride, padding=conv.padding,
                         dilation=conv.dilation, bias=conv.bias is not None, tau=tau, method=method,
                         binary_activation=binary_activation, **method_kwargs)
    layer.to(device=conv.weight.device, dtype=conv.weight.dtype)
    layer.weight.data.copy_(conv.weight.data)
    if conv.bias is not None:
        layer.bias.data.copy_(conv.bias.data)
    layer.reset_selection()
    return layer


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` in place of the submodule called ``name`` (dotted path) of ``model``."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
