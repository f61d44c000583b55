"""DeepLabV3 and DeepLabV3+ on ResNet-18/34/50, MobileNetV2 or MobileNetV3-Large.

Chen, Papandreou, Schroff & Adam, "Rethinking Atrous Convolution for Semantic Image
Segmentation", 2017 (DeepLabV3), and Chen, Zhu, Papandreou, Schroff & Adam, "Encoder-Decoder
with Atrous Separable Convolution for Semantic Image Segmentation", ECCV 2018 (DeepLabV3+).

Encoder: a backbone whose last stages trade stride for dilation, so its deepest map has
output stride 16 or 8. Atrous spatial pyramid pooling (ASPP) on that map, five branches of
256 channels concatenated and projected by a 1x1 conv-BN-ReLU (then dropout 0.1): a 1x1
conv-BN-ReLU, three 3x3 convolutions dilated by ``aspp_rates`` (depthwise separable in V3+:
depthwise conv-BN-ReLU then pointwise conv-BN-ReLU), and image pooling (global average, 1x1
convolution, ReLU, spread over the map). The image-pooling branch has a bias instead of the
paper's BatchNorm: its map is 1x1, so BatchNorm would have one value per channel at batch 1
and fail in training.

DeepLabV3 classifies the ASPP output with a 1x1 convolution and upsamples bilinearly.
DeepLabV3+ adds a decoder: the stride-4 encoder map reduced to 48 channels by a 1x1
conv-BN-ReLU, concatenated with the ASPP output upsampled to its size, two 3x3 (separable)
conv-BN-ReLU of 256 channels, a 1x1 classifier, and x4 bilinear upsampling to the input.

With MobileNetV2 the deepest map is the last inverted residual block's (320 channels; the
1x1 convolution to 1280 is not built), as in the paper's MobileNetV2 variant. With
MobileNetV3-Large it is the final 1x1 convolution's (960 channels), as in torchvision's
``deeplabv3_mobilenet_v3_large`` and the LR-ASPP of Howard et al. 2019; the decoder's stride-4
map is ``features.3`` (24 channels).

Parameters for 21 classes: DeepLabV3+ on ResNet-50 26,695,877, ResNet-34 22,446,533,
ResNet-18 12,338,373, MobileNetV3-Large 4,720,117, MobileNetV2 2,719,557; DeepLabV3 on
ResNet-50 (regular 3x3 ASPP convolutions) 39,048,277, which is torchvision's
``deeplabv3_resnet50`` (42,004,074) without its auxiliary classifier, its extra 3x3 conv-BN
after ASPP and its pooling-branch BatchNorm.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from semseg.models.backbones.mobilenet import mobilenet_v2, mobilenet_v3_large
from semseg.models.backbones.resnet import ResNet
from semseg.models.blocks import ConvBNAct, SeparableConv
from semseg.models.contract import SegmentationModel
from semseg.models.pretrained import load_pretrained_encoder

BACKBONES = ("resnet18", "resnet34", "resnet50", "mobilenet_v2", "mobilenet_v3_large")
ASPP_CHANNELS = 256
LOW_LEVEL_CHANNELS = 48
RATES_STRIDE = 16
"""Output stride at which ``aspp_rates`` are given; at stride 8 they are doubled."""
MAX_WIDTH_DIVISOR = 16


def _atrous_conv(
    in_channels: int, out_channels: int, dilation: int, separable: bool
) -> nn.Sequential:
    """3x3 conv-BN-ReLU, depthwise separable or not, keeping the spatial size."""
    if separable:
        return SeparableConv(in_channels, out_channels, dilation=dilation)
    return ConvBNAct(in_channels, out_channels, 3, dilation=dilation)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: ``(N, in_channels, H, W) -> (N, out_channels, H, W)``.

    Branches ``branches.0`` (1x1), ``branches.1-3`` (3x3 dilated by ``rates``) and ``pooling``
    (image-level features, no BatchNorm), concatenated and projected by ``project``.
    """

    def __init__(
        self, in_channels: int, out_channels: int, rates: Sequence[int], separable: bool
    ) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [
                ConvBNAct(in_channels, out_channels, 1),
                *(_atrous_conv(in_channels, out_channels, rate, separable) for rate in rates),
            ]
        )
        self.pooling = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1), nn.ReLU())
        self.project = nn.Sequential(
            ConvBNAct(out_channels * (len(rates) + 2), out_channels, 1), nn.Dropout(0.1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [branch(x) for branch in self.branches]
        pooled = self.pooling(x.mean(dim=(2, 3), keepdim=True))
        outputs.append(pooled.expand_as(outputs[0]))
        return self.project(torch.cat(outputs, dim=1))


class DeepLab(SegmentationModel):
    """``(N, 3, H, W)`` float -> ``(N, num_classes, H, W)`` float logits, any ``H, W``.

    ``decoder=False`` is DeepLabV3 (logits at the output stride), ``True`` DeepLabV3+ (logits
    at stride 4). See the module docstring and :func:`deeplabv3plus` for the arguments.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str,
        output_stride: int,
        aspp_rates: Sequence[int],
        separable: bool,
        decoder: bool,
        width_divisor: int,
    ) -> None:
        if output_stride not in (8, 16):
            raise ValueError(f"output_stride must be 8 or 16, got {output_stride}")
        if len(aspp_rates) != 3 or min(aspp_rates) < 1:
            raise ValueError(f"aspp_rates must be three positive dilations, got {aspp_rates}")
        if width_divisor < 1 or MAX_WIDTH_DIVISOR % width_divisor:
            raise ValueError(f"width_divisor must divide {MAX_WIDTH_DIVISOR}, got {width_divisor}")
        super().__init__(num_classes, output_stride)
        self.encoder = _backbone(backbone, output_stride, width_divisor)
        rates = [rate * RATES_STRIDE // output_stride for rate in aspp_rates]
        channels = ASPP_CHANNELS // width_divisor
        self.aspp = ASPP(self.encoder.channels[-1], channels, rates, separable)
        self.reduce: nn.Module | None = None
        self.decoder: nn.Module | None = None
        if decoder:
            low_channels = LOW_LEVEL_CHANNELS // width_divisor
            self.reduce = ConvBNAct(self.encoder.channels[1], low_channels, 1)
            self.decoder = nn.Sequential(
                _atrous_conv(channels + low_channels, channels, 1, separable),
                _atrous_conv(channels, channels, 1, separable),
            )
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)
        y = self.aspp(features[-1])
        if self.reduce is not None and self.decoder is not None:
            low = self.reduce(features[1])
            y = F.interpolate(y, size=low.shape[-2:], mode="bilinear", align_corners=False)
            y = self.decoder(torch.cat([y, low], dim=1))
        logits = self.classifier(y)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _backbone(name: str, output_stride: int, width_divisor: int) -> nn.Module:
    if name == "mobilenet_v2":
        return mobilenet_v2(1 / width_divisor, output_stride, last_conv=False)
    if name == "mobilenet_v3_large":
        return mobilenet_v3_large(1 / width_divisor, output_stride)
    if name in BACKBONES:
        return ResNet(int(name.removeprefix("resnet")), output_stride, width_divisor)
    raise ValueError(f"backbone {name!r} is not one of {', '.join(BACKBONES)}")


def _variant(decoder: bool, separable_default: bool, doc: str) -> Callable[..., DeepLab]:
    """The registry constructor of DeepLabV3+ (``decoder``) or DeepLabV3."""

    def create(
        num_classes: int,
        backbone: str = "resnet50",
        output_stride: int = 16,
        aspp_rates: Sequence[int] = (6, 12, 18),
        separable: bool = separable_default,
        encoder_weights: str | Path | None = None,
        width_divisor: int = 1,
    ) -> DeepLab:
        model = DeepLab(num_classes, backbone, output_stride, tuple(aspp_rates), separable,
                        decoder, width_divisor)  # fmt: skip
        if encoder_weights is not None:
            load_pretrained_encoder(model.encoder, encoder_weights)
        return model

    create.__name__ = create.__qualname__ = "deeplabv3plus" if decoder else "deeplabv3"
    create.__doc__ = doc
    return create


deeplabv3plus = _variant(
    True,
    True,
    """DeepLabV3+ (Chen et al., ECCV 2018); see the module docstring.

    Args:
        num_classes: output channels (21 for PASCAL VOC).
        backbone: ``"resnet18"``, ``"resnet34"``, ``"resnet50"``, ``"mobilenet_v2"`` or
            ``"mobilenet_v3_large"``.
        output_stride: 16 or 8, the stride of the map ASPP sees.
        aspp_rates: dilations of the three 3x3 ASPP branches at output stride 16; doubled at 8.
        separable: depthwise separable 3x3 convolutions in ASPP and the decoder.
        encoder_weights: torchvision (or timm, for ResNets) ImageNet state dict of the
            backbone, a path or URL.
        width_divisor: divide every channel count by this (a divisor of 16); tests build tiny
            copies with it. Pretrained weights fit only 1.

    Output stride 4 (the decoder's), then bilinear upsampling to the input size.
    """,
)
deeplabv3 = _variant(
    False,
    False,
    """DeepLabV3 (Chen et al., 2017): ASPP and a 1x1 classifier, no decoder.

    Arguments as for :func:`deeplabv3plus`; the ASPP convolutions are regular (not separable)
    by default, as in the paper. Logits at ``output_stride``, upsampled bilinearly to the input
    size.
    """,
)
