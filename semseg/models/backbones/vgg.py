"""VGG16 and VGG16-BN feature extractors.

Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition",
ICLR 2015 (configuration D: 13 convolutions 3x3 in five stages, each stage ending in a 2x2 max
pool). Module names follow torchvision's ``vgg16`` / ``vgg16_bn`` so their state dicts load
directly: convolutions are ``features.{i}`` at torchvision's indices, and the optional fully
convolutional head holds fc6 as ``classifier.0`` (a 7x7 convolution) and fc7 as
``classifier.3`` (a 1x1 convolution); see :func:`semseg.models.pretrained.fc_to_conv`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import nn

STAGE_WIDTHS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
"""Output channels of the convolutions of each VGG16 stage at full width."""

FC_WIDTH = 4096
"""Channels of fc6 and fc7 at full width."""

FC6_KERNEL = 7


class VGGFeatures(NamedTuple):
    """What :class:`VGG` returns for an ``(N, 3, H, W)`` input.

    Attributes:
        pools: outputs of pool1..pool5, ``(N, C_k, H_k, W_k)`` float at strides 2, 4, 8, 16,
            32 (16 for pool5 when built with ``output_stride=16``).
        indices: for each pool, ``(N, C_k, H_k, W_k)`` int64 argmax positions, flattened over
            the pool's input plane (the layout ``F.max_unpool2d`` reads); empty unless built
            with ``return_indices=True``.
        fc7: ``(N, 4096 / width_divisor, H_5, W_5)`` output of the fc6-fc7 head, or ``None``
            when built without it.
    """

    pools: list[torch.Tensor]
    indices: list[torch.Tensor]
    fc7: torch.Tensor | None


class VGG(nn.Module):
    """VGG16 convolutional stages, optionally with batch norm and fc6/fc7 as convolutions.

    ``(N, 3, H, W) -> VGGFeatures``. Pools round down unless ``ceil_mode``; for exact halving
    pad ``H, W`` to multiples of 32 first. Full width: 14,714,688 parameters in the 13
    convolutions (+ 8,448 with batch norm), + 119,545,856 in fc6 and fc7.

    Args:
        batch_norm: BatchNorm after every convolution (torchvision's ``vgg16_bn`` layout).
        width_divisor: divide every channel count by this (a divisor of 64); 1 is the real
            network, larger values build small copies for tests.
        output_stride: 32, or 16 to make pool5 a 3x3 stride-1 pool (as DeepLab does) so the
            last map keeps stride 16 with conv5 weights unchanged.
        ceil_mode: pools round up, as Caffe's do, so no input row is dropped on odd sizes.
        return_indices: also return each pool's argmax indices (for SegNet's unpooling).
        with_fc: build fc6 (7x7, padding 3, so the map keeps its size) and fc7 (1x1), each
            followed by ReLU and dropout 0.5, as in Long et al.'s fully convolutional VGG.

    Attributes:
        channels: channels of pool1..pool5.
        fc_channels: channels of fc6 and fc7 (whether or not they are built).
    """

    def __init__(
        self,
        *,
        batch_norm: bool = False,
        width_divisor: int = 1,
        output_stride: int = 32,
        ceil_mode: bool = False,
        return_indices: bool = False,
        with_fc: bool = False,
    ) -> None:
        super().__init__()
        if width_divisor < 1 or 64 % width_divisor:
            raise ValueError(f"width_divisor must divide 64, got {width_divisor}")
        if output_stride not in (16, 32):
            raise ValueError(f"output_stride must be 32 or 16, got {output_stride}")
        self.channels = tuple(widths[-1] // width_divisor for widths in STAGE_WIDTHS)
        layers: list[nn.Module] = []
        in_channels = 3
        for stage, widths in enumerate(STAGE_WIDTHS):
            for width in widths:
                layers += vgg_conv_layers(in_channels, width // width_divisor, batch_norm)
                in_channels = width // width_divisor
            last = stage == len(STAGE_WIDTHS) - 1
            if last and output_stride == 16:
                pool = nn.MaxPool2d(3, 1, padding=1, return_indices=return_indices)
            else:
                pool = nn.MaxPool2d(2, 2, ceil_mode=ceil_mode, return_indices=return_indices)
            layers.append(pool)
        self.features = nn.Sequential(*layers)

        self.classifier: nn.Sequential | None = None
        self.fc_channels = FC_WIDTH // width_divisor
        if with_fc:
            self.classifier = nn.Sequential(
                nn.Conv2d(in_channels, self.fc_channels, FC6_KERNEL, padding=FC6_KERNEL // 2),
                nn.ReLU(inplace=True),
                nn.Dropout(0.5),
                nn.Conv2d(self.fc_channels, self.fc_channels, 1),
                nn.ReLU(inplace=True),
                nn.Dropout(0.5),
            )
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> VGGFeatures:
        pools: list[torch.Tensor] = []
        indices: list[torch.Tensor] = []
        for layer in self.features:
            if isinstance(layer, nn.MaxPool2d) and layer.return_indices:
                x, argmax = layer(x)
                indices.append(argmax)
            else:
                x = layer(x)
            if isinstance(layer, nn.MaxPool2d):
                pools.append(x)
        fc7 = self.classifier(x) if self.classifier is not None else None
        return VGGFeatures(pools, indices, fc7)


def vgg_conv_layers(in_channels: int, out_channels: int, batch_norm: bool) -> list[nn.Module]:
    """3x3 convolution (with bias, "same" padding), optional BatchNorm, ReLU: a VGG layer
    as torchvision and SegNet's Caffe model build it, flat so indices match torchvision's."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 3, padding=1)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(nn.ReLU(inplace=True))
    return layers


def vgg16(**kwargs: Any) -> VGG:
    """VGG16 without batch norm; ``kwargs`` as for :class:`VGG`."""
    return VGG(batch_norm=False, **kwargs)


def vgg16_bn(**kwargs: Any) -> VGG:
    """VGG16 with batch norm after every convolution; ``kwargs`` as for :class:`VGG`."""
    return VGG(batch_norm=True, **kwargs)


VGG_VARIANTS: dict[str, Callable[..., VGG]] = {"vgg16": vgg16, "vgg16_bn": vgg16_bn}
"""The VGG16 encoders a model's ``backbone`` argument accepts, by torchvision's names."""


def create_vgg(name: str, **kwargs: Any) -> VGG:
    """:data:`VGG_VARIANTS` ``[name](**kwargs)``; an unknown name is an error listing the known."""
    if name not in VGG_VARIANTS:
        raise ValueError(f"backbone {name!r} is not one of {', '.join(VGG_VARIANTS)}")
    return VGG_VARIANTS[name](**kwargs)
