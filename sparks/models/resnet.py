"""ReActNet / Bi-Real ResNets with sub-bit 3×3 convolutions (Liu et al. ECCV 2018, ECCV 2020; Wang et al. 2021/2023).

A basic block holds ONE binary 3×3 conv with its own shortcut::

    x → LearnableBias → sign → SubBitConv2d → BN → (+ shortcut(x)) → RPReLU

The downsampling shortcut is AvgPool(2) → real 1×1 conv → BN. The stem, the 1×1 shortcuts and the classifier stay
real-valued. ``reactnet18``/``reactnet34`` use the ImageNet stem (7×7 stride-2 conv, BN, 3×3 max-pool);
``resnet18_cifar`` a 3×3 stride-1 stem for 32×32 (or 28×28) inputs.
"""

from __future__ import annotations

from torch import nn

from sparks.core.activation import LearnableBias, RPReLU
from sparks.core.layers import SubBitConv2d
from sparks.models._registry import register_model
from sparks.models.args import DEFAULT_TAU, check_args, scaled

STAGE_CHANNELS = (64, 128, 256, 512)

class BasicBlock(nn.Module):
    """One binary 3×3 conv with its own (identity or downsampling) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, tau: int, method: str,
                 **method_kwargs: object) -> None:
        super().__init__()
        self.shift = LearnableBias(in_channels)
        self.conv = SubBitConv2d(in_channels, out_channels, stride=stride, tau=tau, method=method, **method_kwargs)
        self.bn = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False) if stride != 1 else nn.Identity(),
                nn.Conv2d(in_channels, out_channels, 1, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.act = RPReLU(out_channels)

    def forward(self, x):
        return self.act(self.bn(self.conv(self.shift(x))) + self.shortcut(x))


class BinaryResNet(nn.Module):
    """Stem → four stages of :class:`BasicBlock` → global average pool → real FC."""

    def __init__(self, blocks: tuple[int, ...], stem: nn.Module, stem_channels: int, num_classes: int,
                 width: float, tau: int, method: str, **method_kwargs: object) -> None:
        super().__init__()
        self.stem = stem
        layers = []
        in_channels = stem_channels
        for stage, (count, channels) in enumerate(zip(blocks, STAGE_CHANNELS, strict=True)):
            out_channels = scaled(channels, width)
            for i in range(count):
                stride = 2 if stage > 0 and i == 0 else 1
                layers.append(BasicBlock(in_channels, out_channels, stride, tau, method, **method_kwargs))
                in_channels = out_channels
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.features(self.stem(x))).flatten(1))


def _imagenet_stem(in_channels: int, channels: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(in_channels, channels, 7, stride=2, padding=3, bias=False),
                         nn.BatchNorm2d(channels), nn.MaxPool2d(3, stride=2, padding=1))


def _cifar_stem(in_channels: int, channels: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))


def _resnet(blocks, stem_fn, *, num_classes, in_channels, width, tau, method, **method_kwargs) -> BinaryResNet:
    check_args(num_classes, in_channels, width)
    stem_channels = scaled(STAGE_CHANNELS[0], width)
    return BinaryResNet(blocks, stem_fn(in_channels, stem_channels), stem_channels, num_classes, width, tau, method,
                        **method_kwargs)


@register_model(image_size=(224, 224))
def reactnet18(*, num_classes: int = 1000, in_channels: int = 3, width: float = 1.0, tau: int = DEFAULT_TAU,
               method: str = "sparks", **method_kwargs: object) -> BinaryResNet:
    """ReActNet ResNet-18 (ImageNet stem, 16 binary 3×3 convs in [4, 4, 4, 4] blocks)."""
    return _resnet((4, 4, 4, 4), _imagenet_stem, num_classes=num_classes, in_channels=in_channels, width=width,
                   tau=tau, method=method, **method_kwargs)


@register_model(image_size=(224, 224))
def reactnet34(*, num_classes: int = 1000, in_channels: int = 3, width: float = 1.0, tau: int = DEFAULT_TAU,
               method: str = "sparks", **method_kwargs: object) -> BinaryResNet:
    """ReActNet ResNet-34 (ImageNet stem, 32 binary 3×3 convs in [6, 8, 12, 6] blocks)."""
    return _resnet((6, 8, 12, 6), _imagenet_stem, num_classes=num_classes, in_channels=in_channels, width=width,
                   tau=tau, method=method, **method_kwargs)


@register_model(image_size=(32, 32))
def resnet18_cifar(*, num_classes: int = 10, in_channels: int = 3, width: float = 1.0, tau: int = DEFAULT_TAU,
                   method: str = "sparks", **method_kwargs: object) -> BinaryResNet:
    """ReActNet ResNet-18 blocks with a real 3×3 stride-1 stem, for 32×32 and 28×28 inputs."""
    return _resnet((4, 4, 4, 4), _cifar_stem, num_classes=num_classes, in_channels=in_channels, width=width,
                   tau=tau, method=method, **method_kwargs)
