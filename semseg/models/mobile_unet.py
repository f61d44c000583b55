"""Mobile U-Net: a MobileNetV3-Large encoder and a light U-Net decoder, for CPUs and embedded.

Encoder: MobileNetV3-Large (Howard et al., "Searching for MobileNetV3", ICCV 2019) at output
stride 32, its ``features`` whole (ending with the 1x1 convolution to 960 channels); or
MobileNetV2 (Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR
2018) without its final 1x1 convolution to 1280 channels. Decoder: U-Net's expanding path
(Ronneberger et al., MICCAI 2015) made cheap: at strides 16, 8 and 4 the coarser map is
upsampled bilinearly to the skip's size, concatenated with the encoder's map of that stride,
and merged by a depthwise separable 3x3 convolution (depthwise and pointwise, each with
BatchNorm and ReLU) at stride 16 and by a 1x1 conv-BN-ReLU at strides 8 and 4
(``merge_kernels``). Before the decoder the stride-32 features pass a 1x1 conv-BN-ReLU gated
channel-wise by a sigmoid of a 1x1 convolution of their global average (the context branch of
LR-ASPP, Howard et al. 2019; no BatchNorm on the pooled branch, so batch size 1 trains). A 1x1
convolution classifies the last decoder map and bilinear upsampling brings the logits to the
input size.

Against torchvision's ``lraspp_mobilenet_v3_large`` (same encoder, dilated to output stride
16, logits at stride 8): the encoder keeps its strides, so its last stage runs on a quarter
of the pixels, and the saving pays for a decoder down to stride 4. Chosen by measurement
(``benchmarks/speed.py`` for CPU latency, ``benchmarks/ablation.py`` for CamVid
mIoU under one training recipe; results, machine and commands in ``benchmarks/results/``):
1x1 merges at strides 8 and 4 take 0.92-0.95x (NCHW) and 0.87-0.99x (channels_last) the
latency of 3x3 separable ones and scored 1.0 mIoU point more over three seeds (within the
seeds' spread); stopping the decoder at stride 8 cost 2.5 points (one seed); a 0.75-wide
encoder took 0.82-0.86x LR-ASPP's latency but scored 1.4 points below it (two seeds);
MobileNetV2 at width 0.5 (the former default) took 0.58-0.68x but scored 15 points below.

Output stride 4 with the defaults (``32 / 2**len(decoder_channels)``). Parameters for 11
classes: 3,265,835 (2,971,952 in the encoder; LR-ASPP: 3,219,838). At 1x3x360x480, fp32,
batch 1, 2 threads, eager PyTorch 2.13 on a shared 2-core AMD EPYC, timed in turns with the
LR-ASPP rebuild, over two runs: 0.89-0.94x its latency in NCHW, 0.85-0.88x in channels_last,
0.88x with BatchNorm folded (as ``Predictor`` runs it); a training step takes 0.54-0.74x as
long. CamVid val mIoU under one recipe (12 epochs from scratch, three seeds): 50.2
(48.8 to 51.6) against 49.2 (49.0 to 49.7) for LR-ASPP; boundary F1 33.7 against 30.1.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from semseg.models.backbones.mobilenet import (
    MobileNetV2,
    MobileNetV3Large,
    mobilenet_v2,
    mobilenet_v3_large,
)
from semseg.models.blocks import ConvBNAct, SeparableConv
from semseg.models.contract import SegmentationModel
from semseg.models.pretrained import load_pretrained_encoder

ENCODER_STRIDE = 32
ENCODERS = ("mobilenet_v2", "mobilenet_v3_large")


def build_encoder(name: str, width_mult: float) -> MobileNetV2 | MobileNetV3Large:
    """The encoder ``name`` at output stride 32: MobileNetV2 without its final 1x1 convolution
    to 1280 channels (stride-32 map: 320 channels at width 1), or MobileNetV3-Large with its
    1x1 convolution to 960 channels (torchvision's ``features`` whole)."""
    if name == "mobilenet_v2":
        return mobilenet_v2(width_mult, last_conv=False)
    if name == "mobilenet_v3_large":
        return mobilenet_v3_large(width_mult)
    raise ValueError(f"encoder must be one of {', '.join(ENCODERS)}, got {name!r}")


class MobileUNet(SegmentationModel):
    """``(N, 3, H, W)`` float -> ``(N, num_classes, H, W)`` float logits, any ``H, W``.

    Args:
        num_classes: output channels (logits, no softmax).
        encoder: ``"mobilenet_v2"`` or ``"mobilenet_v3_large"`` (see :func:`build_encoder`).
        width_mult: the encoder's width multiplier.
        decoder_channels: channels of the decoder after merging the skips at strides 16, 8,
            4 and 2 in turn; fewer entries stop the decoder earlier (3: at stride 4).
        merge_kernels: per decoder level, 3 for a depthwise separable 3x3 merge or 1 for a
            1x1 conv-BN-ReLU; ``None``: 3 at stride 16, 1 below.
    """

    def __init__(
        self,
        num_classes: int,
        encoder: str,
        width_mult: float,
        decoder_channels: Sequence[int],
        merge_kernels: Sequence[int] | None = None,
    ) -> None:
        decoder_channels = tuple(decoder_channels)
        if not 1 <= len(decoder_channels) <= 4 or min(decoder_channels) < 1:
            raise ValueError(
                "decoder_channels must be 1 to 4 positive channel counts (for the skips at "
                f"strides 16, 8, 4, 2), got {decoder_channels}"
            )
        if merge_kernels is None:
            merge_kernels = (3,) + (1,) * (len(decoder_channels) - 1)
        merge_kernels = tuple(merge_kernels)
        if len(merge_kernels) != len(decoder_channels) or not set(merge_kernels) <= {1, 3}:
            raise ValueError(
                f"merge_kernels must give 1 or 3 for each of the {len(decoder_channels)} "
                f"decoder levels, got {merge_kernels}"
            )
        super().__init__(num_classes, ENCODER_STRIDE)
        self.encoder = build_encoder(encoder, width_mult)
        *skip_channels, top_channels = self.encoder.channels
        self.top = ConvBNAct(top_channels, decoder_channels[0], 1)
        self.gate = nn.Conv2d(top_channels, decoder_channels[0], 1)
        inputs = (decoder_channels[0], *decoder_channels[:-1])
        skips = skip_channels[::-1][: len(decoder_channels)]
        self.merge = nn.ModuleList(
            SeparableConv(c_in + c_skip, c_out)
            if kernel == 3
            else ConvBNAct(c_in + c_skip, c_out, 1)
            for c_in, c_skip, c_out, kernel in zip(
                inputs, skips, decoder_channels, merge_kernels, strict=True
            )
        )
        self.classifier = nn.Conv2d(decoder_channels[-1], num_classes, 1)

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        *skips, top = self.encoder(x)
        context = torch.sigmoid(self.gate(top.mean(dim=(2, 3), keepdim=True)))
        y = self.top(top) * context
        for merge, skip in zip(self.merge, skips[::-1][: len(self.merge)], strict=True):
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = merge(torch.cat([y, skip], dim=1))
        logits = self.classifier(y)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def mobile_unet(
    num_classes: int,
    encoder: str = "mobilenet_v3_large",
    width_mult: float = 1.0,
    decoder_channels: Sequence[int] = (128, 64, 32),
    merge_kernels: Sequence[int] | None = None,
    encoder_weights: str | Path | None = None,
) -> MobileUNet:
    """Mobile U-Net, the real-time model for CPUs (see module docstring).

    Args:
        num_classes: output channels (11 for CamVid).
        encoder: ``"mobilenet_v2"`` or ``"mobilenet_v3_large"``.
        width_mult: encoder width multiplier (MobileNetV3-Large at 1: 2,971,952 encoder
            parameters; MobileNetV2 at 0.5: 480,320).
        decoder_channels: decoder widths after the skips at strides 16, 8, 4 (and 2 with a
            fourth entry, e.g. ``(128, 64, 32, 16)``).
        merge_kernels: per decoder level, 3 (depthwise separable 3x3) or 1 (1x1 conv);
            ``None``: 3 at stride 16, 1 below.
        encoder_weights: a torchvision ``mobilenet_v2`` or ``mobilenet_v3_large`` state dict
            (path or URL); only fits ``width_mult=1.0``, the one width torchvision publishes.
    """
    model = MobileUNet(num_classes, encoder, width_mult, decoder_channels, merge_kernels)
    if encoder_weights is not None:
        load_pretrained_encoder(model.encoder, encoder_weights)
    return model
