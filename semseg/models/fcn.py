"""FCN-32s, FCN-16s and FCN-8s on VGG16.

Long, Shelhamer & Darrell, "Fully Convolutional Networks for Semantic Segmentation", CVPR
2015. VGG16's fc6 and fc7 become convolutions (7x7 and 1x1, 4096 channels, ReLU and dropout
0.5), ``score_fr`` (1x1) scores the classes at stride 32, and transposed convolutions
initialised to bilinear interpolation bring the scores back to input size:

- FCN-32s: x32 from ``score_fr``.
- FCN-16s: x2, plus ``score_pool4`` (1x1 on pool4), then x16.
- FCN-8s: x2 + ``score_pool4``, x2 + ``score_pool3`` (1x1 on pool3), then x8.

Score layers start at zero, as in the paper, so a new model predicts all-zero logits and the
skips join in without disturbing the coarser prediction. Transposed convolutions have no bias
and connect every class to every class (Caffe's ``Deconvolution``); ``learn_upsampling=False``
freezes them at bilinear.

Alignment. The original pads conv1_1 by 100 pixels and crops each skip map at a
hand-derived offset, so fc6 (7x7 without padding) has an output for any image size. Here the
input is zero-padded at the bottom and right to a multiple of 32 and fc6 has padding 3, so
every map at stride ``s`` has exactly ``H / s`` rows and its pixel ``j`` is centred on input
pixel ``s * j + (s - 1) / 2``. A transposed convolution with kernel ``2f``, stride ``f`` and
padding ``f / 2`` produces exactly ``f`` times as many pixels with those same centres, so
skips add without any crop offsets; the full-size scores are cropped back to ``H x W``. The
network is the same (same layers, same parameter count); only its border behaviour differs.

Output stride 32 (FCN-32s), 16 (FCN-16s), 8 (FCN-8s). Parameters for 21 classes: FCN-32s
136,152,917, FCN-16s 134,815,994, FCN-8s 134,489,759 (the paper reports 134M for FCN-VGG16;
FCN-32s is larger because its x32 kernel alone has 21 * 21 * 64 * 64 = 1.8M weights).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from semseg.models.backbones import create_vgg
from semseg.models.blocks import Upsample
from semseg.models.contract import SegmentationModel
from semseg.models.pretrained import load_pretrained_encoder

STRIDE = 32


class FCN(SegmentationModel):
    """``(N, 3, H, W) -> (N, num_classes, H, W)`` logits; ``skips`` is 0 (FCN-32s), 1 (16s)
    or 2 (8s). Score and upsampling layers are named after the Caffe reference model's."""

    def __init__(
        self, num_classes: int, skips: int, backbone: str = "vgg16", width_divisor: int = 1
    ) -> None:
        super().__init__(num_classes, STRIDE)
        self.encoder = create_vgg(backbone, with_fc=True, width_divisor=width_divisor)
        pool3_channels, pool4_channels = self.encoder.channels[2:4]
        self.score_fr = _zero_conv(self.encoder.fc_channels, num_classes)
        self.score_pool4 = _zero_conv(pool4_channels, num_classes) if skips >= 1 else None
        self.upscore2 = Upsample(num_classes, 2, "transposed") if skips >= 1 else None
        self.score_pool3 = _zero_conv(pool3_channels, num_classes) if skips >= 2 else None
        self.upscore_pool4 = Upsample(num_classes, 2, "transposed") if skips >= 2 else None
        self.upscore = Upsample(num_classes, STRIDE >> skips, "transposed")

    pads_input = True

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)
        pool3, pool4 = features.pools[2:4]
        score = self.score_fr(features.fc7)
        if self.score_pool4 is not None:
            score = self.upscore2(score) + self.score_pool4(pool4)
        if self.score_pool3 is not None:
            score = self.upscore_pool4(score) + self.score_pool3(pool3)
        return self.upscore(score)

    def upsampling_parameters(self) -> list[nn.Parameter]:
        """Weights of the transposed convolutions (the bilinear upsamplers)."""
        return [m.weight for m in self.modules() if isinstance(m, nn.ConvTranspose2d)]


def _variant(skips: int, summary: str) -> Callable[..., FCN]:
    """The registry constructor of the FCN with ``skips`` skip streams."""

    def create(
        num_classes: int,
        backbone: str = "vgg16",
        encoder_weights: str | Path | None = None,
        learn_upsampling: bool = True,
        width_divisor: int = 1,
    ) -> FCN:
        return _create_fcn(
            num_classes, skips, backbone, encoder_weights, learn_upsampling, width_divisor
        )

    create.__name__ = create.__qualname__ = f"fcn{STRIDE >> skips}s"
    create.__doc__ = f"""{summary} See module docstring.

    Args:
        num_classes: output channels (21 for PASCAL VOC).
        backbone: ``"vgg16"`` (the paper's) or ``"vgg16_bn"``, BatchNorm after every encoder
            convolution (fc6/fc7 have none, as in torchvision's ``vgg16_bn``): what makes
            training from scratch work where no ImageNet weights are at hand.
        encoder_weights: torchvision/timm VGG16 state dict (path or URL); fc6/fc7 are
            converted from dense to convolutional weights.
        learn_upsampling: train the transposed convolutions (``False`` keeps them bilinear).
        width_divisor: divide every encoder channel count by this (tests build tiny copies,
            the CPU ablation quarter-width ones).
    """
    return create


fcn32s = _variant(0, "FCN-32s: single-stream, x32 upsampling of ``score_fr``.")
fcn16s = _variant(1, "FCN-16s: two-stream, pool4 skip then x16 upsampling.")
fcn8s = _variant(2, "FCN-8s: three-stream, pool4 and pool3 skips then x8 upsampling.")


def _create_fcn(
    num_classes: int,
    skips: int,
    backbone: str,
    encoder_weights: str | Path | None,
    learn_upsampling: bool,
    width_divisor: int,
) -> FCN:
    model = FCN(num_classes, skips, backbone, width_divisor)
    if encoder_weights is not None:
        load_pretrained_encoder(model.encoder, encoder_weights)
    for weight in model.upsampling_parameters():
        weight.requires_grad_(learn_upsampling)
    return model


def _zero_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, out_channels, 1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv
