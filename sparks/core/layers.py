"""The sub-bit convolution: binary activations in, α · codeword kernels as weights.

:class:`SubBitConv2d` is an ``nn.Conv2d`` (its ``weight`` is the real latent weight, so state-dict keys stay those of
the float model) whose forward binarizes the input with :func:`~sparks.activation.binary_sign` and the weight with a
weight method of :mod:`sparks.methods`.

The forward computes ``α ⊙ conv(sign(x), V[idx]) (+ bias)``: the convolution of ±1 values with ±1 kernels is an
exact integer in float32, and α scales it once per output channel, which the packed runtime reproduces bit for bit.

Padding convention: the ±1 activations are zero-padded (``F.conv2d``'s zeros), as ReActNet and Bi-Real Net do, so a
border output sums over the in-image taps only. The packed runtime reproduces this exactly.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from sparks.core.activation import binary_sign
from sparks.core.codebook import KERNEL_SIZE
from sparks.core.methods import WeightMethod, channel_alpha, get_method


class SubBitConv2d(nn.Conv2d):
    """3×3 convolution with binary activations and sub-bit weights.

    Args:
        in_channels, out_channels, stride, padding, dilation, bias: as ``nn.Conv2d`` (kernel 3×3, groups 1).
        tau: bits per kernel index (1..9); n = 2^τ codewords; τ/9 bits per weight.
        method: a registered weight method (``sparks``, ``sign``, ``snn``, ``topn``, ``random``, ``float``).
        binary_activation: binarize the input (True in BNNs; False only for experiments).
        **method_kwargs: passed to the weight method (e.g. ``sinkhorn_iters``, ``init``, ``seed``).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, padding: int = 1, dilation: int = 1,
                 bias: bool = False, tau: int = 5, method: str = "sparks", binary_activation: bool = True,
                 **method_kwargs: object) -> None:
        super().__init__(in_channels, out_channels, KERNEL_SIZE, stride=stride, padding=padding, dilation=dilation,
                         groups=1, bias=bias)
        self.quantizer: WeightMethod = get_method(method)(tau=tau, **method_kwargs)
        self.binary_activation = binary_activation
        self.reset_selection()

    @property
    def method(self) -> str:
        return self.quantizer.name

    @property
    def tau(self) -> int:
        """Bits per kernel index (9 for ``sign``; 9 for ``float``, whose weights are not binary)."""
        return self.quantizer.tau

    @property
    def bits_per_weight(self) -> float:
        """Storage bits per binary weight, τ/9 (32 for real-valued ``float`` weights)."""
        return self.tau / 9 if self.quantizer.binary else 32.0

    def reset_selection(self) -> None:
        """(Re)initialise the codeword selection from the current latent weights (after loading them, say)."""
        self.quantizer.initialize(self.weight.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.binary_activation:
            x = binary_sign(x)
        if not self.quantizer.binary:
            return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)
        # The binary path runs in fp32 even under autocast: ±1 sums are exact integers in fp32 (and TF32) but not in
        # bf16 above 256 or fp16 above 2048, and the nearest-codeword search and α must be those of the fp32 model.
        with torch.autocast(x.device.type, enabled=False):
            return self._binary_forward(x.float())

    def _binary_forward(self, x: torch.Tensor) -> torch.Tensor:
        # conv with exact ±1 kernels, then α per output channel: bit-for-bit what the packed runtime computes.
        if self.training or torch.is_grad_enabled():
            kernels, alpha = self.quantizer(self.weight), channel_alpha(self.weight)
        else:
            kernels, alpha = self._inference_weights()
        out = F.conv2d(x, kernels, None, self.stride, self.padding, self.dilation)
        out = out * alpha.view(1, -1, 1, 1)
        return out if self.bias is None else out + self.bias.view(1, -1, 1, 1)

    def _state_key(self) -> tuple:
        """Changes whenever the latent weight or the selection changes (in-place updates bump ``_version``)."""
        tensors = [self.weight, *self.quantizer.parameters(), *self.quantizer.buffers()]
        return tuple((t.data_ptr(), t._version) for t in tensors)

    def _inference_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The ±1 kernels and α, cached between eval forwards: the nearest-codeword search runs once per weight."""
        self.quantizer.sync(self.weight.detach())  # a learned selection re-reads scores changed by the last step
        key = self._state_key()
        cache = getattr(self, "_inference_cache", None)
        if cache is None or cache[0] != key:
            with torch.no_grad():
                cache = (key, self.quantizer(self.weight), channel_alpha(self.weight))
            self._inference_cache = cache
        return cache[1], cache[2]

    def _require_binary(self) -> None:
        if not self.quantizer.binary:
            raise ValueError(f"layer uses method {self.method!r}, whose weights are not binary")

    @torch.no_grad()
    def subcodebook(self) -> torch.Tensor:
        """The layer's n codewords, Tensor[n, 3, 3] of ±1 (distinct rows)."""
        self._require_binary()
        self.quantizer.sync(self.weight.detach())
        return self.quantizer.codewords().detach().reshape(-1, KERNEL_SIZE, KERNEL_SIZE).clone()

    @torch.no_grad()
    def kernel_indices(self) -> torch.Tensor:
        """Index into :meth:`subcodebook` of every kernel, int64 Tensor[C_out, C_in]."""
        self._require_binary()
        return self.quantizer.kernel_indices(self.weight, self.quantizer.codewords().detach())

    @torch.no_grad()
    def alpha(self) -> torch.Tensor:
        """Per-output-channel scale, Tensor[C_out]."""
        return channel_alpha(self.weight).flatten()

    @torch.no_grad()
    def binary_weight(self) -> torch.Tensor:
        """The exact forward weight α · subcodebook()[kernel_indices()], Tensor[C_out, C_in, 3, 3]."""
        codewords = self.subcodebook()
        return self.alpha().view(-1, 1, 1, 1) * codewords[self.kernel_indices()]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, method={self.method}, tau={self.tau}"


def subbit_layers(model: nn.Module) -> Iterator[tuple[str, SubBitConv2d]]:
    """Yield ``(name, layer)`` for every :class:`SubBitConv2d` of ``model``, in module order."""
    for name, module in model.named_modules():
        if isinstance(module, SubBitConv2d):
            yield name, module


def reset_selection(model: nn.Module) -> None:
    """Re-initialise every sub-bit layer's selection from its current latent weights (after loading step 1)."""
    for _, layer in subbit_layers(model):
        layer.reset_selection()


def set_temperature(model: nn.Module, temperature: float) -> None:
    """Set the Sinkhorn temperature of every learned selector of ``model`` (the training loop calls this)."""
    for _, layer in subbit_layers(model):
        selector = getattr(layer.quantizer, "selector", None)
        if selector is not None:
            selector.set_temperature(temperature)


def selection_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters of the learned selections that train at their own learning rate (the Sparks scores).

    They live on a different scale from the network weights: the training loop gives them their own learning rate
    and no weight decay. Methods with ``own_learning_rate = False`` (SNN's codeword proxies, which SNN trains at the
    model learning rate) are not included.
    """
    return [p for _, layer in subbit_layers(model) if layer.quantizer.own_learning_rate
            for p in layer.quantizer.parameters()]
