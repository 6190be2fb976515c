"""Export a (sub-bit) model to a ``.sparks`` file and load it back: ``export(model, path)``, ``load(path, runtime)``.

The model is traced with ``torch.fx`` (our layers and the supported ``torch.nn`` modules are leaves) into the layer
table of :mod:`sparks.format`; a module or function the table cannot express raises ``ValueError("not supported yet:
...")``. ``load(runtime="torch")`` rebuilds a PyTorch module whose outputs equal the exported model's (eval mode);
``load(runtime="packed")`` returns the numpy/numba engine :class:`sparks.runtime.PackedModel`.
"""

from __future__ import annotations

import json
import operator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from sparks import __version__
from sparks.core.activation import BinaryActivation, LearnableBias, RPReLU
from sparks.core.codebook import KERNEL_SIZE, kernel_to_index
from sparks.core.layers import SubBitConv2d
from sparks.deploy.bits import CODE_BITS, FULL_CODEBOOK, index_bits, pack_bits
from sparks.deploy.format import FORMAT_VERSION, write_sparks
from sparks.errors import first_line

_LEAVES = (SubBitConv2d, nn.Conv2d, nn.BatchNorm2d, LearnableBias, RPReLU, nn.PReLU, nn.ReLU, nn.AvgPool2d,
           nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.Linear, nn.Flatten, nn.Identity, nn.Dropout, BinaryActivation)


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, _LEAVES) or super().is_leaf_module(m, qualname)


def _np(t: torch.Tensor, dtype: np.dtype) -> np.ndarray:
    return t.detach().cpu().to(torch.float32).numpy().astype(dtype)


def _input_shape(model: nn.Module, input_size: Any) -> tuple[int, int, int]:
    """(C, H, W) from ``input_size`` or else the model's own (:func:`sparks.models.input_size`)."""
    if input_size is None:
        from sparks.models import input_size as model_input_size

        input_size = model_input_size(model)
        if input_size is None:
            raise ValueError("pass input_size=(C, H, W) to export a model that is not a registered architecture")
    size = tuple(int(v) for v in input_size)
    if len(size) not in (3, 4) or min(size) < 1:
        raise ValueError(f"input_size must be (C, H, W) or (N, C, H, W), got {input_size!r}")
    return size[-3:]  # type: ignore[return-value]


class _Builder:
    """Turns the traced graph into ops + tensors."""

    def __init__(self, model: nn.Module, half: bool) -> None:
        self.model = model
        self.real = np.float16 if half else np.float32
        self.ops: list[dict[str, Any]] = []
        self.tensors: dict[str, np.ndarray] = {}
        self.alias: dict[str, str] = {}
        self.subbit: list[SubBitConv2d] = []
        self.names: set[str] = set()

    def unique(self, name: str) -> str:
        """``name``, or ``name#k`` if taken (a module called twice)."""
        base, k = name, 1
        while name in self.names:
            k += 1
            name = f"{base}#{k}"
        self.names.add(name)
        return name

    def value(self, arg: Any) -> str:
        if not isinstance(arg, fx.Node):
            raise ValueError(f"not supported yet: constant argument {arg!r} in the model graph")
        return self.alias.get(arg.name, arg.name)

    def emit(self, kind: str, name: str, inputs: list[str], output: str, module: str | None = None,
             tensors: dict[str, torch.Tensor | np.ndarray] | None = None, **attrs: Any) -> None:
        op = {"op": kind, "name": name, "inputs": inputs, "output": output, **attrs}
        if module is not None:
            op["module"] = module
        self.ops.append(op)
        for key, t in (tensors or {}).items():
            self.tensors[f"{name}.{key}"] = t if isinstance(t, np.ndarray) else _np(t, self.real)

    def node(self, node: fx.Node) -> None:
        if node.op == "call_module":
            self.module(node, self.model.get_submodule(node.target))
        elif node.op == "call_function" and node.target in (operator.add, torch.add) and len(node.args) == 2 \
                and not node.kwargs:
            self.emit("add", self.unique(node.name), [self.value(a) for a in node.args], node.name)
        elif node.op == "call_function" and node.target in (F.relu, torch.relu) and not node.kwargs:
            self.emit("relu", self.unique(node.name), [self.value(node.args[0])], node.name)
        elif (node.op == "call_function" and node.target is torch.flatten) or (
                node.op == "call_method" and node.target == "flatten"):
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            if start != 1 or len(node.args) > 2 or node.kwargs.get("end_dim", -1) != -1:
                raise ValueError("not supported yet: flatten other than flatten(x, 1)")
            self.emit("flatten", self.unique(node.name), [self.value(node.args[0])], node.name)
        elif node.op == "call_method" and node.target == "add" and len(node.args) == 2 and not node.kwargs:
            self.emit("add", self.unique(node.name), [self.value(a) for a in node.args], node.name)
        else:
            what = getattr(node.target, "__name__", str(node.target))
            raise ValueError(f"not supported yet: {node.op.replace('_', ' ')} {what!r} in the model graph")

    def module(self, node: fx.Node, m: nn.Module) -> None:
        src, qual = [self.value(node.args[0])] if node.args else [], str(node.target)
        name = self.unique(qual)  # op (and tensor) names follow the module names of the state dict
        if len(node.args) != 1 or node.kwargs:
            raise ValueError(f"not supported yet: {type(m).__name__} {qual!r} called with {len(node.args)} args")
        if isinstance(m, (nn.Identity, nn.Dropout)):
            self.alias[node.name] = src[0]
        elif isinstance(m, SubBitConv2d):
            self.subbit_conv(name, node.name, src, qual, m)
        elif isinstance(m, nn.Conv2d):
            self.conv(name, node.name, src, qual, m, m.weight)
        elif isinstance(m, nn.BatchNorm2d):
            if m.running_mean is None:
                raise ValueError(f"not supported yet: BatchNorm2d {qual!r} without running statistics")
            # torch's CPU eval-mode fold, op for op: scale = rsqrt(var + eps)·γ, shift = fma(−μ, scale, β) (one
            # rounding); torch then computes fma(x, scale, shift), so a BN holding (scale, shift) gives equal outputs
            var, mean = m.running_var.detach().float(), m.running_mean.detach().float()
            scale = torch.rsqrt(var + m.eps) * (m.weight.detach().float() if m.weight is not None else 1)
            beta = m.bias.detach().double() if m.bias is not None else 0
            shift = (beta - mean.double() * scale.double()).float()
            self.emit("batchnorm", name, src, node.name, qual, {"scale": scale, "shift": shift},
                      channels=m.num_features)
        elif isinstance(m, LearnableBias):
            self.emit("bias", name, src, node.name, qual, {"bias": m.bias.flatten()}, channels=m.bias.numel())
        elif isinstance(m, RPReLU):
            w = m.prelu.weight
            self.emit("rprelu", name, src, node.name, qual, {"shift_in": m.shift_in.bias.flatten(), "weight": w,
                      "shift_out": m.shift_out.bias.flatten()}, channels=m.shift_in.bias.numel(),
                      num_parameters=w.numel())
        elif isinstance(m, nn.PReLU):
            raise ValueError(f"not supported yet: bare PReLU {qual!r} (its channel count is unknown before running)")
        elif isinstance(m, nn.ReLU):
            self.emit("relu", name, src, node.name, qual)
        elif isinstance(m, BinaryActivation):
            self.emit("sign", name, src, node.name, qual)
        elif isinstance(m, (nn.AvgPool2d, nn.MaxPool2d)):
            self.pool(name, node.name, src, qual, m)
        elif isinstance(m, nn.AdaptiveAvgPool2d):
            if m.output_size not in (1, (1, 1)):
                raise ValueError(f"not supported yet: AdaptiveAvgPool2d({m.output_size}) {qual!r}; only 1")
            self.emit("global_avgpool", name, src, node.name, qual)
        elif isinstance(m, nn.Flatten):
            if m.start_dim != 1 or m.end_dim != -1:
                raise ValueError(f"not supported yet: Flatten({m.start_dim}, {m.end_dim}) {qual!r}")
            self.emit("flatten", name, src, node.name, qual)
        elif isinstance(m, nn.Linear):
            self.emit("linear", name, src, node.name, qual, {"weight": m.weight, **({"bias": m.bias} if m.bias is not
                      None else {})}, in_features=m.in_features, out_features=m.out_features, bias=m.bias is not None)
        else:
            raise ValueError(f"not supported yet: {type(m).__name__} ({qual!r})")

    def conv(self, name: str, out: str, src: list[str], qual: str, m: nn.Conv2d, weight: torch.Tensor) -> None:
        if m.groups != 1 or tuple(m.dilation) != (1, 1) or m.padding_mode != "zeros" or isinstance(m.padding, str):
            raise ValueError(f"not supported yet: Conv2d {qual!r} with groups/dilation/padding mode "
                             f"{m.groups}/{m.dilation}/{m.padding!r} {m.padding_mode}")
        tensors = {"weight": weight, **({"bias": m.bias} if m.bias is not None else {})}
        self.emit("conv2d", name, src, out, qual, tensors, in_channels=m.in_channels, out_channels=m.out_channels,
                  kernel=list(m.kernel_size), stride=list(m.stride), padding=list(m.padding), bias=m.bias is not None)

    def subbit_conv(self, name: str, out: str, src: list[str], qual: str, m: SubBitConv2d) -> None:
        if tuple(m.padding) != (1, 1) or tuple(m.dilation) != (1, 1) or m.stride[0] != m.stride[1] or \
                m.stride[0] not in (1, 2):
            raise ValueError(f"not supported yet: SubBitConv2d {qual!r} with stride/padding/dilation "
                             f"{m.stride}/{m.padding}/{m.dilation} (packed kernels: stride 1 or 2, padding 1)")
        if not m.binary_activation:
            raise ValueError(f"not supported yet: SubBitConv2d {qual!r} without binary activations")
        if not m.quantizer.binary:  # method "float": binary activations, real weights → sign + real conv
            sign = self.unique(f"{name}.sign")
            self.emit("sign", sign, src, f"{out}_sign", qual)
            self.conv(name, out, [f"{out}_sign"], qual, m, m.weight)
            return
        codes = kernel_to_index(m.subcodebook().reshape(-1, KERNEL_SIZE, KERNEL_SIZE)).numpy()
        indices = m.kernel_indices().numpy()
        n = codes.size
        self.subbit.append(m)
        tensors = {"alpha": _np(m.alpha(), np.float32)}
        if n == FULL_CODEBOOK:  # every codeword: store each kernel's own codeword, the codebook is implicit
            indices = codes[indices]
        else:
            tensors["codebook"] = pack_bits(codes, CODE_BITS)
        tensors["indices"] = pack_bits(indices, index_bits(n))
        if m.bias is not None:
            tensors["bias"] = _np(m.bias, self.real)
        self.emit("subbit_conv2d", name, src, out, qual, tensors, in_channels=m.in_channels,
                  out_channels=m.out_channels, stride=m.stride[0], tau=m.tau, n=n, bias=m.bias is not None)

    def pool(self, name: str, out: str, src: list[str], qual: str, m: nn.Module) -> None:
        def pair(v: Any) -> list[int]:
            return [int(v), int(v)] if isinstance(v, int) else [int(x) for x in v]

        avg = isinstance(m, nn.AvgPool2d)
        if (avg and m.divisor_override is not None) or (not avg and (m.dilation not in (1, (1, 1)) or
                                                                      m.return_indices)):
            raise ValueError(f"not supported yet: {type(m).__name__} {qual!r} options")
        stride = m.stride if m.stride is not None else m.kernel_size
        attrs = {"kernel": pair(m.kernel_size), "stride": pair(stride), "padding": pair(m.padding),
                 "ceil_mode": bool(m.ceil_mode)}
        if avg:
            attrs["count_include_pad"] = bool(m.count_include_pad)
        self.emit("avgpool2d" if avg else "maxpool2d", name, src, out, qual, **attrs)


def _json_args(args: dict[str, Any]) -> dict[str, Any]:
    try:
        return json.loads(json.dumps(args))
    except (TypeError, ValueError) as err:
        raise ValueError(f"model_args must be JSON-serialisable to export ({err})") from None


def export_tables(model: nn.Module, *, half: bool = False, input_size: Any = None,
                  training: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The (metadata, tensors) that :func:`export` writes (no file)."""
    channels, height, width = _input_shape(model, input_size)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            try:
                graph = _Tracer().trace(model)
            except Exception as err:  # fx raises many types for data-dependent control flow and the like
                raise ValueError(f"not supported yet: a model torch.fx cannot trace ({type(err).__name__}: "
                                 f"{first_line(err)})") from None
            builder = _Builder(model, half)
            placeholders = [n for n in graph.nodes if n.op == "placeholder"]
            if len(placeholders) != 1:
                raise ValueError(f"not supported yet: models with {len(placeholders)} inputs")
            builder.alias[placeholders[0].name] = "input"
            output = None
            for node in graph.nodes:
                if node.op == "output":
                    output = builder.value(node.args[0])
                elif node.op != "placeholder":
                    builder.node(node)
    finally:
        model.train(was_training)
    if not builder.ops or output != builder.ops[-1]["output"]:
        raise ValueError("not supported yet: a model whose output is not its last op")
    last = builder.ops[-1]
    num_classes = last.get("out_features")
    if num_classes is None:
        raise ValueError("not supported yet: a model that does not end in a Linear layer")
    first = builder.subbit[0] if builder.subbit else None
    metadata = {
        "format_version": FORMAT_VERSION,
        "producer": f"sparks {__version__}",
        "model_name": getattr(model, "model_name", None),
        "model_args": _json_args(getattr(model, "model_args", {}) or {}),
        "tau": first.tau if first else 9,
        "method": first.method if first else "float",
        "num_classes": num_classes,
        "input": {"channels": channels, "height": height, "width": width},
        "real_dtype": "float16" if half else "float32",
        "ops": builder.ops,
    }
    if training:
        metadata["training"] = _json_args(training)
    return metadata, builder.tensors


def export(model: nn.Module, path: str | Path, *, half: bool = False, input_size: Any = None,
           training: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``model`` (eval-mode semantics) to the ``.sparks`` file ``path`` (atomically); return its metadata.

    Args:
        half: store the real-valued layers in float16 (the sub-bit layers' α stays float32).
        input_size: (C, H, W) or (N, C, H, W); defaults to the model's own (:func:`sparks.models.input_size`).
        training: how the model was trained, stored as ``metadata["training"]`` (informative; ``sparks run --split
            val`` reads its ``data`` entry: dataset, val_fraction, seed, subset).

    Raises:
        ValueError: a module or function the format cannot express ("not supported yet: ...").
    """
    metadata, tensors = export_tables(model, half=half, input_size=input_size, training=training)
    write_sparks(path, metadata, tensors)
    return metadata


__all__ = ["export", "export_tables"]
