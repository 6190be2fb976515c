"""VGG-Small, the CIFAR network of the BNN literature (LQ-Nets, Zhang et al. ECCV 2018; used by SNN).

Real 3×3 stem conv (128) → BN, then five binary 3×3 convs 128-256-256-512-512 with 2×2 max-pools after the 2nd,
4th and 6th conv; each binary conv is LearnableBias → sign → SubBitConv2d → (pool) → BN → RPReLU. Classifier: a
real FC on the flattened 4×4 (32×32 input) or 3×3 (28×28) map, through global average pooling so both sizes work.
"""

from __future__ import annotations

from torch import nn

from sparks.core.activation import LearnableBias, RPReLU
from sparks.core.layers import SubBitConv2d
from sparks.models._registry import register_model
from sparks.models.args import DEFAULT_TAU, check_args, scaled

# (channels, max-pool after) of the five binary convs; the stem has 128 channels.
_BINARY_CONVS = ((128, True), (256, False), (256, True), (512, False), (512, True))


class VGGBinaryConv(nn.Module):
    """LearnableBias → sign → SubBitConv2d → optional 2×2 max-pool → BN → RPReLU."""

    def __init__(self, in_channels: int, out_channels: int, pool: bool, tau: int, method: str,
                 **method_kwargs: object) -> None:
        super().__init__()
        self.shift = LearnableBias(in_channels)
        self.conv = SubBitConv2d(in_channels, out_channels, tau=tau, method=method, **method_kwargs)
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = RPReLU(out_channels)

    def forward(self, x):
        return self.act(self.bn(self.pool(self.conv(self.shift(x)))))


class VGGSmall(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, width: float, tau: int, method: str,
                 **method_kwargs: object) -> None:
        super().__init__()
        stem = scaled(128, width)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, stem, 3, padding=1, bias=False), nn.BatchNorm2d(stem))
        layers, channels = [], stem
        for out, pool in _BINARY_CONVS:
            layers.append(VGGBinaryConv(channels, scaled(out, width), pool, tau, method, **method_kwargs))
            channels = scaled(out, width)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.features(self.stem(x))).flatten(1))


@register_model(image_size=(32, 32))
def vgg_small(*, num_classes: int = 10, in_channels: int = 3, width: float = 1.0, tau: int = DEFAULT_TAU,
              method: str = "sparks", **method_kwargs: object) -> VGGSmall:
    """VGG-Small for CIFAR-sized inputs: real stem, five sub-bit 3×3 convs, real classifier."""
    check_args(num_classes, in_channels, width)
    return VGGSmall(num_classes, in_channels, width, tau, method, **method_kwargs)
