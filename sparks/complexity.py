"""Model complexity as the BNN papers count it: storage bits, BOPs, FLOPs and OPs (``sparks.summary``).

One forward pass with hooks records each layer's input and output shapes; the counts follow SNN / ReActNet /
Bi-Real Net (see docs/complexity.md for every convention and its reason):

* binary storage = Σ τ · c_in · c_out over the sub-bit 3×3 convs (τ bits per kernel of 9 weights);
* BOPs of a sub-bit conv with output H×W = min(9·c_in·c_out·H·W, 9·2^τ·c_in·H·W + 0.5·c_in·c_out·H·W);
* FLOPs = multiply-accumulates of the real-valued convs and linears; OPs = BOPs / 64 + FLOPs.

All operation counts are per image, whatever the batch size of ``input_size``. Layers are recognised by their
attributes (a sub-bit layer has ``tau``, ``bits_per_weight`` and ``quantizer.binary``; a conv has ``kernel_size``
and ``groups``; a linear has ``in_features``), never by a fixed list of classes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from sparks.errors import first_line

FLOAT_BITS = 32  # storage of a real-valued parameter (and of a float32 baseline weight)
BOPS_PER_OP = 64  # OPs = BOPs / 64 + FLOPs (Bi-Real / ReActNet convention)
KERNEL_WEIGHTS = 9  # weights per 3×3 kernel
FULL_CODEBOOK_TAU = 9  # τ = 9: the full codebook, implicit in the index (no sub-codebook to store)


def is_subbit(module: nn.Module) -> bool:
    """True for a layer with the sub-bit interface (``tau``, ``bits_per_weight``, ``quantizer.binary``)."""
    quantizer = getattr(module, "quantizer", None)
    return (hasattr(module, "tau") and hasattr(module, "bits_per_weight") and quantizer is not None
            and hasattr(quantizer, "binary"))


def is_binary_subbit(module: nn.Module) -> bool:
    """A sub-bit layer whose weights are binary codewords (every method but ``float``)."""
    return is_subbit(module) and bool(module.quantizer.binary)


def subbit_bops(c_in: int, c_out: int, out_pixels: int, tau: int) -> float:
    """BOPs of one sub-bit 3×3 conv per image: the cheaper of the direct XNOR-popcount conv (9·c_in·c_out·HW) and
    convolving with the 2^τ codewords once then gathering/accumulating per output channel
    (9·2^τ·c_in·HW + 0.5·c_in·c_out·HW; the 0.5 is fitted to SNN's published numbers)."""
    direct = KERNEL_WEIGHTS * c_in * c_out * out_pixels
    via_codebook = KERNEL_WEIGHTS * 2**tau * c_in * out_pixels + 0.5 * c_in * c_out * out_pixels
    return float(min(direct, via_codebook))


def codebook_bits(tau: int) -> int:
    """Bits to store a sub-codebook of 2^τ codewords (9 bits each); 0 at τ = 9, where the index is the kernel."""
    return 0 if tau >= FULL_CODEBOOK_TAU else 2**tau * KERNEL_WEIGHTS


@dataclass
class LayerProfile:
    """One row of the summary: a module that owns parameters (or a sub-bit conv)."""

    name: str
    kind: str  # "subbit", "conv", "linear", "norm" or the lower-cased class name (e.g. "learnablebias", "prelu")
    bits_per_weight: float  # τ/9 for sub-bit layers, 32 for real ones
    input_shape: list[int] | None  # of the first call, batch included; None if the forward never called it
    output_shape: list[int] | None
    params: int  # all weights of the layer (binary weights included) and its bias
    tau: int | None = None
    binary_weights: int = 0
    binary_bits: int = 0  # τ · c_in · c_out
    codebook_bits: int = 0
    scale_bits: int = 0  # 32 · C_out for the per-channel α of a sub-bit layer
    real_params: int = 0  # parameters stored as float32
    storage_bits: int = 0  # binary + codebook + scale + 32 · real_params
    bops: float = 0.0
    flops: float = 0.0
    calls: int = 0


@dataclass
class _Record:
    input_shape: list[int] | None = None
    output_shape: list[int] | None = None
    shapes: list[tuple[list[int] | None, list[int]]] = field(default_factory=list)


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for item in value:
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


def _counted_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules that own parameters directly, plus every sub-bit layer; nothing inside a sub-bit layer (its
    quantizer's training-time parameters are not part of the stored model: the sub-codebook is, as codebook bits)."""
    chosen: list[tuple[str, nn.Module]] = []
    subbit_prefixes: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(prefix + ".") for prefix in subbit_prefixes):
            continue
        if is_subbit(module):
            subbit_prefixes.append(name)
            chosen.append((name, module))
        elif any(True for _ in module.parameters(recurse=False)):
            chosen.append((name, module))
    return chosen


def _per_image(shape: list[int] | None) -> int:
    return math.prod(shape[1:]) if shape else 0


def _conv_macs(module: nn.Module, in_shape: list[int] | None, out_shape: list[int]) -> float:
    kernel = math.prod(module.kernel_size) if isinstance(module.kernel_size, tuple) else module.kernel_size**2
    if getattr(module, "transposed", False):  # each input element meets c_out/groups kernels
        return float(_per_image(in_shape) * (module.out_channels // module.groups) * kernel)
    return float(_per_image(out_shape) * (module.in_channels // module.groups) * kernel)


def _kind(module: nn.Module) -> str:
    if is_subbit(module):
        return "subbit" if is_binary_subbit(module) else "conv"
    if hasattr(module, "kernel_size") and hasattr(module, "groups") and hasattr(module, "in_channels"):
        return "conv"
    if hasattr(module, "in_features") and hasattr(module, "out_features"):
        return "linear"
    if hasattr(module, "running_mean") or "norm" in type(module).__name__.lower():
        return "norm"
    return type(module).__name__.lower()


def _profile(name: str, module: nn.Module, record: _Record, seen: set[int]) -> LayerProfile:
    own = [p for p in module.parameters(recurse=False) if id(p) not in seen]
    seen.update(id(p) for p in own)
    params = sum(p.numel() for p in own)
    kind = _kind(module)
    row = LayerProfile(name=name or "(model)", kind=kind, bits_per_weight=float(FLOAT_BITS),
                       input_shape=record.input_shape, output_shape=record.output_shape, params=params,
                       real_params=params, calls=len(record.shapes))
    if kind == "subbit":
        tau = int(module.tau)
        kernels = module.weight.numel() // KERNEL_WEIGHTS
        row.tau = tau
        row.bits_per_weight = float(module.bits_per_weight)
        row.binary_weights = module.weight.numel()
        row.binary_bits = tau * kernels
        row.codebook_bits = codebook_bits(tau)
        row.scale_bits = FLOAT_BITS * module.weight.shape[0]
        row.real_params = params - (module.weight.numel() if any(p is module.weight for p in own) else 0)
        binary_activation = getattr(module, "binary_activation", True)
        for in_shape, out_shape in record.shapes:
            if binary_activation:
                row.bops += subbit_bops(module.in_channels, module.out_channels, math.prod(out_shape[2:]), tau)
            else:  # real activations times binary weights: count them as real MACs
                row.flops += _conv_macs(module, in_shape, out_shape)
    elif kind == "conv":
        row.flops = sum(_conv_macs(module, i, o) for i, o in record.shapes)
    elif kind == "linear":
        row.flops = float(sum(_per_image(o) * module.in_features for _, o in record.shapes))
    # Norm layers, biases and PReLU: parameters only, no FLOPs (elementwise; BN folds into the neighbouring
    # scale/threshold at inference). This is what the published OPs figures count.
    row.storage_bits = row.binary_bits + row.codebook_bits + row.scale_bits + FLOAT_BITS * row.real_params
    return row


def _normalize_input_size(input_size: Sequence[int]) -> tuple[int, ...]:
    size = tuple(int(s) for s in input_size)
    if len(size) == 3:
        size = (1, *size)
    if len(size) != 4 or any(s < 1 for s in size):
        raise ValueError(f"input_size must be (C, H, W) or (N, C, H, W) of positive ints, got {tuple(input_size)}")
    return size


def summary(model: nn.Module, input_size: Sequence[int] | None = None,
            print_fn: Callable[[str], Any] | None = print) -> dict[str, Any]:
    """Storage, BOPs, FLOPs and OPs of ``model``, per layer and in total; prints a table unless ``print_fn=None``.

    Args:
        model: any ``nn.Module``; sub-bit layers are found by their attributes (see module docstring).
        input_size: (N, C, H, W) or (C, H, W) of the forward pass used to record shapes; counts are per image.
            Default: the model's own (:func:`sparks.models.input_size`: what it was trained at, else its
            architecture's registered size), the same as ``sparks summary``; required for other models.
        print_fn: called with each line of the table (default ``print``); ``None`` prints nothing.

    Returns:
        A JSON-serialisable dict: the totals (``binary_storage_mbit``, ``codebook_bits``, ``real_params``,
        ``total_bits``, ``compression``, ``bops``, ``flops``, ``ops``, ...; see docs/complexity.md) and ``layers``,
        one dict per :class:`LayerProfile`.

    Raises:
        ValueError: a malformed ``input_size``, or a forward pass that fails with it.
    """
    if input_size is None:
        from sparks.models import input_size as model_input_size

        input_size = model_input_size(model)
        if input_size is None:
            raise ValueError("pass input_size=(C, H, W): the model is not a registered architecture")
    size = _normalize_input_size(input_size)
    modules = _counted_modules(model)
    records = {name: _Record() for name, _ in modules}

    def make_hook(record: _Record):
        def hook(_module, inputs, output):
            out = _first_tensor(output)
            inp = _first_tensor(inputs)
            if out is None:
                return
            shapes = (list(inp.shape) if inp is not None else None, list(out.shape))
            if not record.shapes:
                record.input_shape, record.output_shape = shapes
            record.shapes.append(shapes)

        return hook

    first = next(model.parameters(), None)
    x = torch.zeros(size, dtype=first.dtype if first is not None and first.is_floating_point() else torch.float32,
                    device=first.device if first is not None else None)
    handles = [module.register_forward_hook(make_hook(records[name])) for name, module in modules]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    except (RuntimeError, ValueError, TypeError, IndexError) as err:
        raise ValueError(f"forward pass with input size {size} failed: {first_line(err)}") from err
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)

    seen: set[int] = set()
    rows = [_profile(name, module, records[name], seen) for name, module in modules]
    result = _totals(rows)
    result.update(model=getattr(model, "model_name", type(model).__name__), input_size=list(size),
                  layers=[asdict(row) for row in rows])
    if print_fn is not None:
        for line in format_summary(result).splitlines():
            print_fn(line)
    return result


def _totals(rows: list[LayerProfile]) -> dict[str, Any]:
    binary_weights = sum(r.binary_weights for r in rows)
    binary_bits = sum(r.binary_bits for r in rows)
    book = sum(r.codebook_bits for r in rows)
    scales = sum(r.scale_bits for r in rows)
    real = sum(r.real_params for r in rows)
    params = sum(r.params for r in rows)
    total = binary_bits + book + scales + FLOAT_BITS * real
    bops = sum(r.bops for r in rows)
    flops = sum(r.flops for r in rows)
    return {
        "params": params,
        "binary_weights": binary_weights,
        "binary_storage_bits": binary_bits,
        "binary_storage_mbit": binary_bits / 1e6,
        "bits_per_binary_weight": binary_bits / binary_weights if binary_weights else None,
        "codebook_bits": book,
        "scale_bits": scales,
        "real_params": real,
        "real_bits": FLOAT_BITS * real,
        "total_bits": total,
        "total_mbit": total / 1e6,
        "float_bits": FLOAT_BITS * params,
        "compression": FLOAT_BITS * params / total if total else None,
        "binary_compression": FLOAT_BITS * binary_weights / binary_bits if binary_bits else None,
        "bops": bops,
        "flops": flops,
        "ops": bops / BOPS_PER_OP + flops,
        "per_image": True,
    }


def human(value: float, digits: int = 4) -> str:
    """Compact engineering notation: 1676279808 → '1.676G'."""
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.{digits}g}{suffix}"
    return f"{value:.{digits}g}"


def _shape(shape: list[int] | None) -> str:
    return "×".join(str(s) for s in shape[1:]) if shape else "-"


def format_summary(result: dict[str, Any]) -> str:
    """The readable table of a :func:`summary` result: one aligned row per layer, the totals below."""
    header = ("Layer", "Kind", "Bits/w", "Input", "Output", "Params", "Storage", "BOPs", "FLOPs")
    body = [(r["name"], r["kind"], f"{r['bits_per_weight']:.3g}", _shape(r["input_shape"]),
             _shape(r["output_shape"]), f"{r['params']:,}", human(r["storage_bits"]) + "b",
             human(r["bops"]) if r["bops"] else "-", human(r["flops"]) if r["flops"] else "-")
            for r in result["layers"]]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    right = {2, 5, 6, 7, 8}

    def line(cells: Sequence[str]) -> str:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(cells).rstrip()

    rule = "-" * len(line(header))
    lines = [f"Model: {result['model']}   input {'×'.join(map(str, result['input_size']))} (counts per image)",
             rule, line(header), rule, *(line(row) for row in body), rule]
    r = result
    bpw = f"{r['bits_per_binary_weight']:.3f}" if r["bits_per_binary_weight"] is not None else "-"
    lines += [
        f"Binary storage:   {r['binary_storage_mbit']:.4g} Mbit  ({r['binary_weights']:,} binary weights, "
        f"{bpw} bit/weight; Σ τ·c_in·c_out)",
        f"Codebooks:        {r['codebook_bits']:,} bit",
        f"Scales (α):       {r['scale_bits']:,} bit",
        f"Real params:      {r['real_params']:,}  ({r['real_bits'] / 1e6:.4g} Mbit at 32 bit)",
        f"Total:            {r['total_mbit']:.4g} Mbit  (float32 model {r['float_bits'] / 1e6:.4g} Mbit: "
        f"{_ratio(r['compression'])} smaller; binary layers alone {_ratio(r['binary_compression'])})",
        f"BOPs:             {human(r['bops'])}",
        f"FLOPs:            {human(r['flops'])}",
        f"OPs:              {human(r['ops'])}  (BOPs/64 + FLOPs)",
    ]
    return "\n".join(lines)


def _ratio(value: float | None) -> str:
    return f"{value:.3g}×" if value is not None else "-"
