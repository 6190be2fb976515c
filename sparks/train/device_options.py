"""How the training step runs on its device: ``--amp`` autocast, ``--channels-last`` inputs, ``--compile``.

Each option changes speed, not what is trained: sub-bit convolutions run in fp32 inside any autocast (their ±1 sums
stay exact integers; :mod:`sparks.core.layers`), so a bf16 run's binary forward equals the fp32 one.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import torch
from torch import nn

from sparks.errors import UsageError


def autocast(amp: str, device: torch.device) -> Any:
    """The autocast context of an ``--amp`` setting: ``auto`` is bf16 on CUDA and off elsewhere; ``bf16``/``fp16``
    apply on any device."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=torch.float16 if amp == "fp16" else torch.bfloat16)


def to_input(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """A batch on ``device`` (asynchronous copy from pinned memory), channels-last if asked."""
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


def check_device_options(amp: str, compile_model: bool, device: torch.device) -> None:
    """``--amp`` and ``--compile`` settings that cannot work on ``device``: a one-line UsageError."""
    if amp == "fp16" and device.type != "cuda":
        raise UsageError("--amp fp16 needs a CUDA device (its loss scaling is CUDA-only); use --amp bf16 on the CPU")
    if compile_model and not hasattr(torch, "compile"):
        raise UsageError(f"--compile needs torch.compile (torch >= 2.0, this is {torch.__version__})")
    if compile_model and device.type != "cuda" and shutil.which(os.environ.get("CXX", "g++")) is None:
        raise UsageError("--compile on the CPU needs a C++ compiler (g++) for torch.compile's inductor backend")


def place_model(model: nn.Module, device: torch.device, channels_last: bool) -> nn.Module:
    """``model`` moved to ``device`` (in place), in channels-last memory format if asked. On CUDA, cuDNN picks its
    fastest convolution algorithms for the run's fixed input size (``cudnn.benchmark``)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model.to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def maybe_compile(net: nn.Module, compile_model: bool) -> nn.Module:
    """``torch.compile(net)`` when asked. The Sparks read-off (scipy) and the SNN refresh are graph breaks: the
    compiled graphs are the convolution blocks between them."""
    return torch.compile(net) if compile_model else net
