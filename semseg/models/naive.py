"""The naive baseline: a classification network's features, a 1x1 classifier, interpolation.

This is the design the fully convolutional papers improve on. The encoder's last map has
stride 32 (or 16), so each logit describes a 32x32 block of the input; the classifier sees
only that coarse map, and fixed interpolation cannot restore detail it never received. Thin
structures (poles, fences, lane markings) and small objects narrower than the stride fall
between samples and are averaged into their surroundings, and boundaries come out blurred
(bilinear) or blocky (nearest). FCN's skip connections (:mod:`semseg.models.fcn`) and
SegNet's index unpooling (:mod:`semseg.models.segnet`) exist to fix exactly this.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from semseg.models.backbones import VGG, create_vgg
from semseg.models.blocks import Upsample
from semseg.models.contract import SegmentationModel
from semseg.models.pretrained import load_pretrained_encoder

INTERPOLATIONS = ("bilinear", "nearest")


class NaiveSegmenter(SegmentationModel):
    """``(N, 3, H, W) -> (N, num_classes, H, W)`` logits from the encoder's last pool.

    The input is zero-padded at the bottom and right to a multiple of the output stride so
    every pool halves exactly; the coarse logits are interpolated by exactly the stride
    (``align_corners=False``, which matches how pooled pixels are centred) and cropped back.
    Returns logits: the softmax belongs to the loss and the predictor.
    """

    def __init__(self, encoder: VGG, num_classes: int, output_stride: int, upsampling: str) -> None:
        super().__init__(num_classes, output_stride)
        self.encoder = encoder
        self.classifier = nn.Conv2d(encoder.channels[-1], num_classes, 1)
        self.upsample = Upsample(num_classes, output_stride, upsampling)

    pads_input = True

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.classifier(self.encoder(x).pools[-1]))


def naive(
    num_classes: int,
    backbone: str = "vgg16",
    output_stride: int = 32,
    upsampling: str = "bilinear",
    encoder_weights: str | Path | None = None,
    width_divisor: int = 1,
) -> NaiveSegmenter:
    """Classification features + 1x1 classifier + fixed upsampling (the baseline to beat).

    Output stride 32, or 16 with pool5 made stride 1. Parameters with ``backbone="vgg16"``:
    14,714,688 + 513 * num_classes (14,725,461 for 21 classes); ``vgg16_bn`` adds 8,448.

    Args:
        num_classes: output channels.
        backbone: ``"vgg16"`` or ``"vgg16_bn"`` (see :mod:`semseg.models.backbones.vgg`).
        output_stride: 32 or 16.
        upsampling: ``"bilinear"`` or ``"nearest"`` interpolation of the logits.
        encoder_weights: torchvision/timm state dict (path or URL) for the backbone.
        width_divisor: divide every channel count by this (tests build tiny copies, the CPU
            ablation quarter-width ones).
    """
    if upsampling not in INTERPOLATIONS:
        raise ValueError(f"upsampling {upsampling!r} is not one of {', '.join(INTERPOLATIONS)}")
    encoder = create_vgg(backbone, width_divisor=width_divisor, output_stride=output_stride)
    if encoder_weights is not None:
        load_pretrained_encoder(encoder, encoder_weights)
    return NaiveSegmenter(encoder, num_classes, output_stride, upsampling)
