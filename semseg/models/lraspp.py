"""LR-ASPP (Lite Reduced Atrous Spatial Pyramid Pooling) on MobileNetV3-Large.

Howard et al., "Searching for MobileNetV3", ICCV 2019, Sec. 6.3 and Figure 10, as
torchvision builds it (``torchvision.models.segmentation.lraspp_mobilenet_v3_large``): the
encoder is MobileNetV3-Large dilated to output stride 16 (its last stage, ``features.13`` to
``.15``, keeps stride 16 with its 5x5 depthwise convolutions dilated by 2), ending with the 1x1
convolution to 960 channels. The head takes two of its maps: the high-level one (960 channels,
stride 16) passes a 1x1 conv-BN-ReLU to 128 channels, gated channel-wise by a sigmoid of a 1x1
convolution (no bias, no BatchNorm) of its global average, and is upsampled bilinearly to the
low-level map (``features.4``, the first block at stride 8, 40 channels); each is classified by
a 1x1 convolution with bias, the two logit maps are summed and upsampled bilinearly to the
input.

Module names follow torchvision's: ``encoder.features.{i}`` is its ``backbone.{i}`` and
``classifier.*`` its ``classifier.*`` (``cbr.0``/``cbr.1`` conv and BatchNorm, ``scale.1`` the
gate's convolution, ``low_classifier``, ``high_classifier``), so a torchvision LR-ASPP state
dict loads with :data:`TORCHVISION_PREFIXES` and
:func:`~semseg.models.pretrained.load_encoder_weights`, and a torchvision ``mobilenet_v3_large``
ImageNet state dict fills the encoder (``encoder_weights``).

Parameters for 21 classes: 3,221,538, torchvision's published figure (2,971,952 in the encoder).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from semseg.models.backbones.mobilenet import mobilenet_v3_large
from semseg.models.blocks import ConvBNAct
from semseg.models.contract import SegmentationModel
from semseg.models.pretrained import load_pretrained_encoder

INTER_CHANNELS = 128
LOW_LEVEL_LAYER = 4
"""``features.4``: the block that takes MobileNetV3-Large to stride 8 (torchvision's "C2")."""
HIGH_LEVEL_LAYER = 16
"""``features.16``: the final 1x1 convolution to 960 channels."""
OUTPUT_STRIDES = (16, 32)
TORCHVISION_PREFIXES = {"backbone.": "encoder.features.", "classifier.": "classifier."}
"""``prefix_map`` from torchvision's ``lraspp_mobilenet_v3_large`` state dict names to ours."""


class LRASPPHead(nn.Module):
    """``low (N, low_channels, h, w)``, ``high (N, high_channels, h', w')`` -> logits
    ``(N, num_classes, h, w)`` at the low-level map's resolution (see the module docstring)."""

    def __init__(
        self, low_channels: int, high_channels: int, num_classes: int, inter_channels: int
    ) -> None:
        super().__init__()
        self.cbr = ConvBNAct(high_channels, inter_channels, 1)
        self.scale = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(high_channels, inter_channels, 1, bias=False),
            nn.Sigmoid(),
        )
        self.low_classifier = nn.Conv2d(low_channels, num_classes, 1)
        self.high_classifier = nn.Conv2d(inter_channels, num_classes, 1)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        y = self.cbr(high) * self.scale(high)
        y = F.interpolate(y, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.low_classifier(low) + self.high_classifier(y)


class LRASPP(SegmentationModel):
    """``(N, 3, H, W)`` float -> ``(N, num_classes, H, W)`` float logits, any ``H, W``.

    Args:
        encoder: a MobileNet feature extractor (``channels`` and ``strides`` attributes, a
            list of maps from ``forward``) whose last map is the high-level one.
        num_classes: output channels.
        low_level: index of the low-level map in the encoder's outputs.
        inter_channels: width of the gated high-level branch (128 in the paper).
    """

    def __init__(
        self, encoder: nn.Module, num_classes: int, low_level: int, inter_channels: int
    ) -> None:
        super().__init__(num_classes, max(encoder.strides))
        if inter_channels < 1:
            raise ValueError(f"inter_channels must be at least 1, got {inter_channels}")
        self.low_level = low_level
        self.encoder = encoder
        self.classifier = LRASPPHead(
            encoder.channels[low_level], encoder.channels[-1], num_classes, inter_channels
        )

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)
        logits = self.classifier(features[self.low_level], features[-1])
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def lraspp_mobilenet_v3_large(
    num_classes: int,
    width_mult: float = 1.0,
    output_stride: int = 16,
    inter_channels: int = INTER_CHANNELS,
    encoder_weights: str | Path | None = None,
) -> LRASPP:
    """LR-ASPP on MobileNetV3-Large, torchvision's ``lraspp_mobilenet_v3_large``.

    Args:
        num_classes: output channels (21 for PASCAL VOC, 11 for CamVid).
        width_mult: the encoder's width multiplier; tests build tiny copies with it.
        output_stride: 16 (dilated last stage, as in the paper) or 32 (no dilation).
        inter_channels: width of the gated high-level branch.
        encoder_weights: a torchvision ``mobilenet_v3_large`` ImageNet state dict (path or
            URL); only fits ``width_mult=1.0``.

    Logits at stride 8, upsampled bilinearly to the input size.
    """
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(
            f"output_stride must be one of {', '.join(map(str, OUTPUT_STRIDES))}, "
            f"got {output_stride}"
        )
    encoder = mobilenet_v3_large(width_mult, output_stride, (LOW_LEVEL_LAYER, HIGH_LEVEL_LAYER))
    model = LRASPP(encoder, num_classes, 0, inter_channels)
    if encoder_weights is not None:
        load_pretrained_encoder(model.encoder, encoder_weights)
    return model
