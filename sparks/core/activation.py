"""Binary activations and the learnable shifts of ReActNet.

* :func:`binary_sign` — forward ``+1 if x >= 0 else -1`` (0 maps to +1, so the output is always exactly ±1 and the
  packed runtime can store it as one bit); backward the ApproxSign gradient of Bi-Real Net (Liu et al., ECCV 2018):
  ``2 + 2x`` on [-1, 0), ``2 - 2x`` on [0, 1), 0 elsewhere.
* :class:`LearnableBias` — a per-channel shift (ReActNet's RSign threshold / RPReLU shifts).
* :class:`RPReLU` — shift, PReLU, shift (ReActNet, Liu et al., ECCV 2020).
"""

from __future__ import annotations

import torch
from torch import nn


class _ApproxSign(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        grad = torch.clamp(2.0 - 2.0 * x.abs(), min=0.0)
        return grad_output * grad


def binary_sign(x: torch.Tensor) -> torch.Tensor:
    """±1 sign (0 → +1) with the ApproxSign straight-through gradient."""
    return _ApproxSign.apply(x)


class BinaryActivation(nn.Module):
    """Module form of :func:`binary_sign`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return binary_sign(x)


class LearnableBias(nn.Module):
    """Adds a learnable per-channel bias to an (N, C, H, W) tensor; starts at zero."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias


class RPReLU(nn.Module):
    """ReActNet's RPReLU: shift → per-channel PReLU → shift."""

    def __init__(self, channels: int, init_slope: float = 0.25) -> None:
        super().__init__()
        self.shift_in = LearnableBias(channels)
        self.prelu = nn.PReLU(channels, init=init_slope)
        self.shift_out = LearnableBias(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shift_out(self.prelu(self.shift_in(x)))
