"""Encoder-decoder with a mirrored feature decoder and no skip connections.

The design of SegNet (Badrinarayanan, Kendall and Cipolla, "SegNet: A Deep Convolutional
Encoder-Decoder Architecture for Image Segmentation", TPAMI 2017) and DeconvNet (Noh, Hong and
Han, "Learning Deconvolution Network for Semantic Segmentation", ICCV 2015): a convolution and
max-pooling feature extractor, then a decoder that mirrors it stage by stage, then a per-pixel
linear classifier. Everything the decoder knows about fine detail must pass through the
bottleneck; this is the baseline that U-Net's skip connections improve on.

Unlike SegNet and DeconvNet this decoder does not reuse the encoder's max-pooling indices
(that would be a skip of pooling positions); it upsamples by nearest or bilinear
interpolation or by a learned transposed convolution.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import nn

from semseg.models.blocks import Upsample, conv_stack
from semseg.models.contract import SegmentationModel


class EncoderDecoder(SegmentationModel):
    """``(N, in_channels, H, W)`` float -> ``(N, num_classes, H, W)`` float logits.

    Encoder stage ``i``: ``convs_per_stage`` 3x3 conv-BN-ReLU layers to ``widths[i]`` channels,
    then 2x2 max pooling. Decoder stage ``i`` (deepest first): upsampling by 2, then
    ``convs_per_stage`` layers, the last of which reduces ``widths[i]`` to ``widths[i - 1]``
    (stage 0 keeps ``widths[0]``). A 1x1 convolution classifies each pixel.

    Output stride ``2 ** len(widths)``: the input is zero-padded at the bottom and right to a
    multiple of it and the logits are cropped back, so any ``H, W`` works. Inputs of at most
    one output stride on both sides have a 1x1 bottleneck, which BatchNorm cannot normalise in
    train mode with batch size 1.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        widths: Sequence[int],
        convs_per_stage: int,
        upsampling: str,
        batch_norm: bool,
    ) -> None:
        if not widths or min(widths) < 1:
            raise ValueError(f"widths must be a non-empty list of positive ints, got {widths}")
        if convs_per_stage < 1:
            raise ValueError(f"convs_per_stage must be at least 1, got {convs_per_stage}")
        widths = tuple(widths)
        super().__init__(num_classes, 2 ** len(widths))

        encoder_stages = []
        for c_in, c_out in pairwise((in_channels, *widths)):
            convs = conv_stack([c_in] + [c_out] * convs_per_stage, batch_norm)
            encoder_stages.append(nn.Sequential(*convs, nn.MaxPool2d(2)))
        self.encoder = nn.Sequential(*encoder_stages)

        decoder_stages = []
        for c_in, c_out in pairwise((*widths[::-1], widths[0])):
            convs = conv_stack([c_in] * convs_per_stage + [c_out], batch_norm)
            decoder_stages.append(nn.Sequential(Upsample(c_in, 2, upsampling), *convs))
        self.decoder = nn.Sequential(*decoder_stages)

        self.classifier = nn.Conv2d(widths[0], num_classes, kernel_size=1)

    pads_input = True

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.decoder(self.encoder(x)))


def encoder_decoder(
    num_classes: int,
    in_channels: int = 3,
    widths: Sequence[int] = (64, 128, 256, 512),
    convs_per_stage: int = 2,
    upsampling: str = "bilinear",
    batch_norm: bool = True,
) -> EncoderDecoder:
    """Encoder-decoder without skip connections (SegNet / DeconvNet design, see module doc).

    Args:
        num_classes: output channels (logits, no softmax).
        in_channels: image channels.
        widths: channels of each encoder stage; the decoder mirrors them.
        convs_per_stage: 3x3 conv-BN-ReLU layers per encoder and per decoder stage.
        upsampling: ``"nearest"``, ``"bilinear"`` or ``"transposed"`` (learned, initialised
            bilinear).
        batch_norm: BatchNorm after every convolution.

    Output stride 16 with the default four widths. Parameters with the defaults and
    ``num_classes=21``: 9,410,197 (bilinear or nearest), 14,980,757 (transposed).
    """
    return EncoderDecoder(num_classes, in_channels, widths, convs_per_stage, upsampling, batch_norm)
