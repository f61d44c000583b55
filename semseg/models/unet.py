"""U-Net: Ronneberger, Fischer and Brox, "U-Net: Convolutional Networks for Biomedical Image
Segmentation", MICCAI 2015.

A contracting path (two 3x3 convolutions per level, 2x2 max pooling between levels, channels
doubling at each pooling) and an expanding path that, at each level, upsamples by 2 while
halving the channels, concatenates the contracting path's feature map of that level, and
applies two 3x3 convolutions. A 1x1 convolution gives the class logits.

Differences from the paper, each a common modern choice:
    - 3x3 convolutions are zero-padded, so feature maps keep their size and no cropping of the
      skip connections is needed (the paper uses unpadded convolutions and an overlap-tile
      strategy; a 572x572 input gives 388x388 outputs there).
    - Optional BatchNorm after every convolution (the paper predates BatchNorm).
"""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn

from semseg.models.blocks import Upsample, conv_stack
from semseg.models.contract import SegmentationModel


class UNetEncoder(nn.Module):
    """Contracting path: ``(N, in_channels, H, W)`` -> one feature map per level.

    Level ``k`` has ``base_channels * 2**k`` channels at resolution ``H / 2**k``; level 0 is
    the full resolution, level ``depth`` the bottleneck. ``H, W`` must be multiples of
    ``2**depth`` (:class:`UNet` pads its input to make them so).
    """

    def __init__(self, in_channels: int, base_channels: int, depth: int, batch_norm: bool) -> None:
        super().__init__()
        self.channels = [base_channels * 2**level for level in range(depth + 1)]
        levels = [conv_stack([in_channels, base_channels, base_channels], batch_norm)]
        for c_in, c_out in pairwise(self.channels):
            levels.append(
                nn.Sequential(nn.MaxPool2d(2), *conv_stack([c_in, c_out, c_out], batch_norm))
            )
        self.levels = nn.ModuleList(levels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for level in self.levels:
            x = level(x)
            features.append(x)
        return features


class UNet(SegmentationModel):
    """``(N, in_channels, H, W)`` float -> ``(N, num_classes, H, W)`` float logits.

    Output stride ``2**depth``: the input is zero-padded at the bottom and right to a multiple
    of it, so every pooling halves an even size, and the logits are cropped back. Inputs of at
    most ``2**depth`` pixels on both sides have a 1x1 bottleneck, which BatchNorm cannot
    normalise in train mode with batch size 1.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        base_channels: int,
        depth: int,
        upsampling: str,
        batch_norm: bool,
    ) -> None:
        if base_channels < 1:
            raise ValueError(f"base_channels must be at least 1, got {base_channels}")
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        super().__init__(num_classes, 2**depth)
        self.encoder = UNetEncoder(in_channels, base_channels, depth, batch_norm)
        # Deepest level first: upsample level k + 1 to level k, merge with level k's features.
        pairs = list(pairwise(reversed(self.encoder.channels)))
        self.up = nn.ModuleList(
            _up_convolution(deep, shallow, upsampling) for deep, shallow in pairs
        )
        self.merge = nn.ModuleList(
            conv_stack([2 * shallow, shallow, shallow], batch_norm) for _, shallow in pairs
        )
        self.classifier = nn.Conv2d(base_channels, num_classes, kernel_size=1)

    pads_input = True

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        *skips, x = self.encoder(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips), strict=True):
            x = merge(torch.cat([skip, up(x)], dim=1))
        return self.classifier(x)


def _up_convolution(in_channels: int, out_channels: int, mode: str) -> nn.Module:
    """Double the resolution and map ``in_channels`` to ``out_channels``.

    ``"transposed"`` is the paper's 2x2 stride-2 "up-convolution"; the interpolation modes
    upsample and then apply a 1x1 convolution.
    """
    if mode == "transposed":
        return nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
    return nn.Sequential(Upsample(in_channels, 2, mode), nn.Conv2d(in_channels, out_channels, 1))


def unet(
    num_classes: int,
    in_channels: int = 3,
    base_channels: int = 64,
    depth: int = 4,
    upsampling: str = "transposed",
    batch_norm: bool = True,
) -> UNet:
    """U-Net (Ronneberger et al., MICCAI 2015) with padded convolutions (see module doc).

    Args:
        num_classes: output channels (logits, no softmax).
        in_channels: image channels.
        base_channels: channels of the first level; doubled at each of the ``depth`` poolings.
        depth: number of 2x2 poolings (the paper: 4, from 64 to 1024 channels).
        upsampling: ``"transposed"`` (the paper's 2x2 up-convolution), ``"nearest"`` or
            ``"bilinear"`` (interpolation then a 1x1 convolution).
        batch_norm: BatchNorm after every 3x3 convolution.

    Output stride ``2**depth`` (16 by default). Parameters: 31,030,658 for the paper's
    configuration (``in_channels=1, num_classes=2, batch_norm=False``); 31,038,933 with the
    defaults and ``num_classes=21``; 1,942,917 with ``base_channels=16`` and ``num_classes=21``.
    """
    return UNet(num_classes, in_channels, base_channels, depth, upsampling, batch_norm)
