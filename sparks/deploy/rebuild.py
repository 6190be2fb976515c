"""Rebuild a PyTorch module from a validated ``.sparks`` layer table (``sparks.load(path, runtime="torch")``).

A registered architecture is rebuilt with ``sparks.models.create(model_name, **model_args)``; any other exported
model becomes a :class:`GraphModel` that runs the op list. Either way the outputs equal the exported model's in eval
mode, bit for bit for float32 files: every sub-bit conv becomes an :class:`ExportedSubBitConv2d` whose α is the
stored float32 value (a latent weight α·codeword cannot always reproduce α through ``mean |W|`` exactly), and every
BN holds the stored folded scale/shift as weight/bias with mean 0, var 1, eps 0 (so torch computes x·scale + shift).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sparks.core.activation import BinaryActivation, LearnableBias, RPReLU, binary_sign
from sparks.core.layers import SubBitConv2d
from sparks.deploy.bits import codeword_to_kernel, decode_subbit
from sparks.deploy.table import table_params
from sparks.errors import SparksFormatError
from sparks.limits import Limits, check_model_args, described_params


class ExportedSubBitConv2d(SubBitConv2d):
    """A sub-bit conv loaded from a file: fixed sub-codebook (``topn`` storage) and the stored per-channel α."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, tau: int, bias: bool,
                 method: str = "topn") -> None:
        super().__init__(in_channels, out_channels, stride=stride, padding=1, bias=bias, tau=tau, method="topn")
        self.exported_method = method
        self.register_buffer("exported_alpha", torch.ones(out_channels))

    @property
    def method(self) -> str:
        return self.exported_method

    def reset_selection(self) -> None:
        """Keep the file's sub-codebook (``quantizer.selected``): nothing to derive from the latent weights (which
        also spares the frequency count, several times the weight's memory, at construction)."""

    @torch.no_grad()
    def alpha(self) -> torch.Tensor:
        return self.exported_alpha.clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # SubBitConv2d.forward with the stored α: conv of exact ±1 values, then α once per output channel.
        out = F.conv2d(binary_sign(x), self.quantizer(self.weight), None, self.stride, self.padding, self.dilation)
        out = out * self.exported_alpha.view(1, -1, 1, 1)
        return out if self.bias is None else out + self.bias.view(1, -1, 1, 1)


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a, dtype=np.float32).copy())


def _subbit(op: dict[str, Any], tensors: dict[str, np.ndarray], method: str) -> ExportedSubBitConv2d:
    n, tau = op["n"], op["tau"]
    if n != 1 << tau:
        raise SparksFormatError(f"{op['name']}: the torch runtime needs n = 2^tau codewords, got n={n}, tau={tau}")
    codes, idx = decode_subbit(op, tensors)
    layer = ExportedSubBitConv2d(op["in_channels"], op["out_channels"], op["stride"], tau, op["bias"], method)
    alpha = _t(tensors[f"{op['name']}.alpha"])
    with torch.no_grad():
        # latent = α·codeword: sign and nearest codeword give back exactly codes[idx]; filled row by row so the
        # only full-size tensor is the layer's own weight
        for o in range(op["out_channels"]):
            layer.weight[o].copy_(torch.from_numpy(codeword_to_kernel(codes[idx[o]])))
        layer.weight.mul_(alpha.clamp_min(1e-12).view(-1, 1, 1, 1))
        layer.quantizer.selected.copy_(torch.from_numpy(codes))
        layer.exported_alpha.copy_(alpha)
        if op["bias"]:
            layer.bias.copy_(_t(tensors[f"{op['name']}.bias"]))
    return layer


def _fill(module: nn.Module, op: dict[str, Any], tensors: dict[str, np.ndarray]) -> None:
    """Copy an op's tensors into a module of the matching type (SparksFormatError if the type does not match)."""
    kind, name = op["op"], op["name"]
    want = {"conv2d": nn.Conv2d, "batchnorm": nn.BatchNorm2d, "bias": LearnableBias, "rprelu": RPReLU,
            "linear": nn.Linear}.get(kind)
    if want is None:
        return
    if not isinstance(module, want):
        raise SparksFormatError(f"op {name!r} ({kind}) does not match module {type(module).__name__}")
    with torch.no_grad():
        if kind in ("conv2d", "linear"):
            if module.weight.shape != tensors[f"{name}.weight"].shape:
                raise SparksFormatError(f"op {name!r}: weight shape does not match the architecture")
            module.weight.copy_(_t(tensors[f"{name}.weight"]))
            if (module.bias is not None) != op["bias"]:
                raise SparksFormatError(f"op {name!r}: bias presence does not match the architecture")
            if op["bias"]:
                module.bias.copy_(_t(tensors[f"{name}.bias"]))
        elif kind == "batchnorm":
            module.eps = 0.0
            module.weight.copy_(_t(tensors[f"{name}.scale"]))
            module.bias.copy_(_t(tensors[f"{name}.shift"]))
            module.running_mean.zero_()
            module.running_var.fill_(1.0)
        elif kind == "bias":
            module.bias.copy_(_t(tensors[f"{name}.bias"]).view_as(module.bias))
        else:  # rprelu
            module.shift_in.bias.copy_(_t(tensors[f"{name}.shift_in"]).view_as(module.shift_in.bias))
            module.prelu.weight.copy_(_t(tensors[f"{name}.weight"]).view_as(module.prelu.weight))
            module.shift_out.bias.copy_(_t(tensors[f"{name}.shift_out"]).view_as(module.shift_out.bias))


def _new_module(op: dict[str, Any]) -> nn.Module | None:
    kind = op["op"]
    if kind == "conv2d":
        return nn.Conv2d(op["in_channels"], op["out_channels"], op["kernel"], op["stride"], op["padding"],
                         bias=op["bias"])
    if kind == "batchnorm":
        return nn.BatchNorm2d(op["channels"])
    if kind == "bias":
        return LearnableBias(op["channels"])
    if kind == "rprelu":
        module = RPReLU(op["channels"])
        module.prelu = nn.PReLU(op["num_parameters"])
        return module
    if kind == "linear":
        return nn.Linear(op["in_features"], op["out_features"], bias=op["bias"])
    if kind == "relu":
        return nn.ReLU()
    if kind == "sign":
        return BinaryActivation()
    if kind == "avgpool2d":
        return nn.AvgPool2d(op["kernel"], op["stride"], op["padding"], op["ceil_mode"], op["count_include_pad"])
    if kind == "maxpool2d":
        return nn.MaxPool2d(op["kernel"], op["stride"], op["padding"], ceil_mode=op["ceil_mode"])
    if kind == "global_avgpool":
        return nn.AdaptiveAvgPool2d(1)
    if kind == "flatten":
        return nn.Flatten()
    return None  # add


class GraphModel(nn.Module):
    """Runs a ``.sparks`` op list with torch modules (for exported models that are not registered architectures)."""

    def __init__(self, ops: list[dict[str, Any]]) -> None:
        super().__init__()
        self.ops = [(op["op"], op["inputs"], op["output"], f"m{i}") for i, op in enumerate(ops)]
        self.layers = nn.ModuleDict()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = {"input": x}
        for kind, inputs, output, key in self.ops:
            args = [values[v] for v in inputs]
            values[output] = args[0] + args[1] if kind == "add" else self.layers[key](args[0])
        return values[self.ops[-1][2]]


def torch_model(metadata: dict[str, Any], tensors: dict[str, np.ndarray], limits: Limits | None = None) -> nn.Module:
    """The PyTorch module of a validated file's (metadata, tensors), in eval mode. A registered architecture's
    ``model_args`` are checked against ``limits`` before the model is built (SparksFormatError)."""
    from sparks.models import list_models

    name = metadata["model_name"]
    registered = name is not None and name in list_models()
    if registered:
        check_model_args(name, metadata["model_args"], SparksFormatError, limits)
        # model_args describing a much larger model than the table cannot be this file's graph: skip building it
        described = described_params(name, metadata["model_args"], selection=False)
        registered = described <= 4 * table_params(metadata, limits) + (1 << 20)
    model = _registered(metadata, tensors) if registered else None
    if model is None:  # not a registered architecture, or one modified after create(): run the op list itself
        model = GraphModel(metadata["ops"])
        for op, (_, _, _, key) in zip(metadata["ops"], model.ops, strict=True):
            module = _subbit(op, tensors, metadata["method"]) if op["op"] == "subbit_conv2d" else _new_module(op)
            if module is not None:
                _fill(module, op, tensors)
                model.layers[key] = module
        model.model_name = name
        model.model_args = dict(metadata["model_args"])
    return model.eval()


def _registered(metadata: dict[str, Any], tensors: dict[str, np.ndarray]) -> nn.Module | None:
    """``create(model_name, **model_args)`` with the file's weights, or None if its graph is not the file's."""
    from sparks.core.convert import replace_module
    from sparks.deploy.export import export_tables
    from sparks.models import create

    try:
        model = create(metadata["model_name"], **metadata["model_args"]).eval()
    except (TypeError, ValueError, RuntimeError, OverflowError):  # arguments this builder does not take
        return None
    for op in metadata["ops"]:
        try:
            module = model.get_submodule(op.get("module", ""))
        except AttributeError:
            return None
        try:
            if op["op"] == "subbit_conv2d" and isinstance(module, SubBitConv2d):
                replace_module(model, op["module"], _subbit(op, tensors, metadata["method"]))
            elif op["op"] == "conv2d" and isinstance(module, SubBitConv2d):  # method "float": real weights
                if module.weight.shape != tensors[f"{op['name']}.weight"].shape:
                    return None
                with torch.no_grad():
                    module.weight.copy_(_t(tensors[f"{op['name']}.weight"]))
            else:
                _fill(module, op, tensors)
        except SparksFormatError:
            return None
    inp = metadata["input"]
    ops, _ = export_tables(model, input_size=(inp["channels"], inp["height"], inp["width"]))
    return model if ops["ops"] == metadata["ops"] else None
