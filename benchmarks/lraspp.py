"""A rebuild of torchvision's ``lraspp_mobilenet_v3_large``, the yardstick of the real-time
model, for environments without torchvision (it does not load with the torch semseg uses).

It has torchvision's layers and parameter count (3,221,538 for 21 classes) on
:class:`~semseg.models.backbones.mobilenet.MobileNetV3Large`. It takes the stride-8 map after
its stage's last block where torchvision takes it after the first, and its first dilated
block keeps dilation 1; neither changes the work done. ``benchmarks/speed.py`` times it and
``benchmarks/ablation.py`` trains it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from semseg.models.backbones.mobilenet import MobileNetV2, MobileNetV3Large, mobilenet_v3_large
from semseg.models.blocks import ConvBNAct


class LRASPP(nn.Module):
    """Lite R-ASPP head (Howard et al., "Searching for MobileNetV3", ICCV 2019) on a MobileNet.

    The stride-16 map (dilated last stage) goes through a 1x1 conv-BN-ReLU to 128 channels,
    gated by a sigmoid of a 1x1 convolution of its global average; it is upsampled to the
    stride-8 map, both are classified by 1x1 convolutions and summed, and the sum upsampled to
    the input. ``(N, 3, H, W) -> (N, num_classes, H, W)``.
    """

    def __init__(self, encoder: MobileNetV2 | MobileNetV3Large, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        low_channels, high_channels = encoder.channels[2], encoder.channels[4]
        self.cbr = ConvBNAct(high_channels, 128, 1)
        self.scale = nn.Conv2d(high_channels, 128, 1, bias=False)
        self.low_classifier = nn.Conv2d(low_channels, num_classes, 1)
        self.high_classifier = nn.Conv2d(128, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)
        low, high = features[2], features[4]
        gate = torch.sigmoid(self.scale(high.mean(dim=(2, 3), keepdim=True)))
        y = F.interpolate(self.cbr(high) * gate, size=low.shape[-2:], mode="bilinear")
        y = self.low_classifier(low) + self.high_classifier(y)
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear")


def lraspp_mobilenet_v3_large(num_classes: int) -> LRASPP:
    """LR-ASPP on MobileNetV3-Large dilated to output stride 16, as torchvision builds it."""
    return LRASPP(mobilenet_v3_large(output_stride=16), num_classes)
