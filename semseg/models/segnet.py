"""SegNet and SegNet-Basic: encoder-decoders that upsample with the encoder's pooling indices.

Badrinarayanan, Kendall & Cipolla, "SegNet: A Deep Convolutional Encoder-Decoder
Architecture for Image Segmentation", TPAMI 2017. Each encoder max pool remembers where its
maxima were; the matching decoder stage puts its input back at exactly those positions (zeros
elsewhere) and densifies the sparse map with trainable convolutions. Nothing is learned for
upsampling and no encoder feature maps are kept, only their argmax indices.

Layer choices follow the authors' Caffe models (SegNet-Tutorial): every convolution has a bias
and, but for the classifier, batch norm; pools round up (Caffe's pooling), so odd sizes lose
no row.

Unpooling is written as a scatter into a zero map of the pre-pool size, which is what
``F.max_unpool2d(x, indices, 2, output_size=size)`` computes; ``F.max_unpool2d`` itself
checks ``output_size`` with Python comparisons that fail under ``torch.jit.trace`` and ONNX
export, while the scatter exports cleanly and handles any size.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import torch
from torch import nn

from semseg.models.backbones import vgg16_bn
from semseg.models.backbones.vgg import STAGE_WIDTHS, vgg_conv_layers
from semseg.models.blocks import UPSAMPLING_MODES, Upsample, crop_to
from semseg.models.contract import SegmentationModel
from semseg.models.pretrained import load_pretrained_encoder

BASIC_WIDTH = 64
BASIC_KERNEL = 7
SEGNET_UPSAMPLING = ("indices", *UPSAMPLING_MODES)


def max_unpool(x: torch.Tensor, indices: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Place ``x`` at the argmax positions of a max pool, zeros elsewhere.

    Args:
        x: ``(N, C, h, w)`` float, the values to place.
        indices: ``(N, C, h, w)`` int64 from ``max_pool2d(..., return_indices=True)``, flat
            positions in the pool's input plane.
        like: any tensor with the pool input's spatial size ``(..., H, W)``.

    Returns:
        ``(N, C, H, W)``, equal to ``F.max_unpool2d(x, indices, 2, output_size=(H, W))``.
    """
    n, c = x.shape[:2]
    height, width = like.shape[-2:]
    flat = x.new_zeros(n, c, height * width).scatter(2, indices.flatten(2), x.flatten(2))
    return flat.view(n, c, height, width)


class SegNet(SegmentationModel):
    """VGG16-BN encoder (13 convolutions, 5 pools with indices) and its mirror as decoder.

    ``(N, 3, H, W) -> (N, num_classes, H, W)`` logits for any ``H, W`` (ceil-mode pools);
    output stride 32 (the decoder ends at input resolution). Decoder stage ``k`` mirrors
    encoder stage ``k``: unpool with pool ``k``'s indices, then its convolutions in reverse,
    the last one narrowing to the channels that entered encoder stage ``k``; stage 1 ends in a 3x3
    classifier (no batch norm). Full width: 29,443,008 + 577 * num_classes parameters
    (29,449,355 for CamVid's 11 classes; the paper reports 29.5M).

    ``upsampling`` other than ``"indices"`` replaces each unpooling by a x2
    :class:`~semseg.models.blocks.Upsample` (nearest, bilinear, or a transposed convolution
    initialised as bilinear) cropped to the pool's input size, everything else unchanged: the
    decoder comparison of the paper's Section 4 on the full network.
    """

    def __init__(
        self, num_classes: int, width_divisor: int = 1, upsampling: str = "indices"
    ) -> None:
        if upsampling not in SEGNET_UPSAMPLING:
            raise ValueError(
                f"SegNet upsampling {upsampling!r} is not one of {', '.join(SEGNET_UPSAMPLING)}"
            )
        super().__init__(num_classes, 32)
        self.upsampling = upsampling
        self.encoder = vgg16_bn(width_divisor=width_divisor, ceil_mode=True, return_indices=True)
        stages = []
        in_channels = 3
        for widths in STAGE_WIDTHS:
            widths = [w // width_divisor for w in widths]
            channels = [*reversed(widths), in_channels]  # through the mirrored stage
            convs = list(itertools.pairwise(channels))
            if in_channels == 3:
                convs = convs[:-1]  # the classifier takes the place of stage 1's last conv
            layers = [m for c_in, c_out in convs for m in vgg_conv_layers(c_in, c_out, True)]
            stages.append(nn.Sequential(*layers))
            in_channels = widths[-1]
        self.decoder = nn.ModuleList(reversed(stages))  # decoder[0] undoes pool5
        self.upsamplers = nn.ModuleList(
            Upsample(channels, 2, upsampling) if upsampling != "indices" else nn.Identity()
            for channels in reversed(self.encoder.channels)
        )
        self.classifier = nn.Conv2d(self.encoder.channels[0], num_classes, 3, padding=1)

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)
        pool_inputs = [x, *features.pools[:-1]]  # same spatial size as each pool's input
        y = features.pools[-1]
        for stage, upsample, indices, like in zip(
            self.decoder,
            self.upsamplers,
            reversed(features.indices),
            reversed(pool_inputs),
            strict=True,
        ):
            if self.upsampling == "indices":
                y = max_unpool(y, indices, like)
            else:  # a ceil-mode pool's output cell i covers input rows 2i, 2i + 1: crop the end
                y = crop_to(upsample(y), like.shape[-2:])
            y = stage(y)
        return self.classifier(y)


class SegNetBasic(SegmentationModel):
    """SegNet-Basic: 4 encoder and 4 decoder layers, 64 channels, 7x7 kernels.

    Input local response normalisation (size 5, alpha 1e-4, beta 0.75); encoder layers are
    conv-BN-ReLU then a 2x2 pool keeping indices; decoder layers are unpool then conv-BN with
    no ReLU (as in the authors' Caffe model); a 1x1 classifier. ``(N, 3, H, W) -> (N,
    num_classes, H, W)`` for any ``H, W``; output stride 16. Parameters: 1,415,872 + 65 *
    num_classes (1,416,587 for 11 classes).
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__(num_classes, 16)
        self.norm = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75)
        self.encoder = nn.ModuleList(
            nn.Sequential(*_basic_conv(3 if i == 0 else BASIC_WIDTH), nn.ReLU(inplace=True))
            for i in range(4)
        )
        self.pool = nn.MaxPool2d(2, 2, ceil_mode=True, return_indices=True)
        self.decoder = nn.ModuleList(nn.Sequential(*_basic_conv(BASIC_WIDTH)) for _ in range(4))
        self.classifier = nn.Conv2d(BASIC_WIDTH, num_classes, 1)

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(x)
        pool_inputs: list[torch.Tensor] = []  # each layer's input has its pool's input size
        indices: list[torch.Tensor] = []
        for layer in self.encoder:
            pool_inputs.append(y)
            y, argmax = self.pool(layer(y))
            indices.append(argmax)
        for layer, argmax, like in zip(
            self.decoder, reversed(indices), reversed(pool_inputs), strict=True
        ):
            y = layer(max_unpool(y, argmax, like))
        return self.classifier(y)


def _basic_conv(in_channels: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, BASIC_WIDTH, BASIC_KERNEL, padding=BASIC_KERNEL // 2),
        nn.BatchNorm2d(BASIC_WIDTH),
    ]


def segnet(
    num_classes: int,
    encoder_weights: str | Path | None = None,
    width_divisor: int = 1,
    upsampling: str = "indices",
) -> SegNet:
    """SegNet with a VGG16-BN encoder (see :class:`SegNet`).

    Args:
        num_classes: output channels.
        encoder_weights: torchvision/timm ``vgg16_bn`` state dict (path or URL).
        width_divisor: divide every channel count by this (tests build tiny copies, the CPU
            ablation quarter-width ones).
        upsampling: ``"indices"`` (SegNet's unpooling), or ``"nearest"``, ``"bilinear"``,
            ``"transposed"`` in its place, for comparison.
    """
    model = SegNet(num_classes, width_divisor, upsampling)
    if encoder_weights is not None:
        load_pretrained_encoder(model.encoder, encoder_weights)
    return model


def segnet_basic(num_classes: int) -> SegNetBasic:
    """SegNet-Basic, the paper's small model for its decoder comparisons (see
    :class:`SegNetBasic`). Trained from scratch: there are no pretrained weights."""
    return SegNetBasic(num_classes)
