"""Mobile U-Net: a MobileNetV2 encoder and a light U-Net decoder, for CPUs and embedded use.

Encoder: MobileNetV2 (Sandler et al., "MobileNetV2: Inverted Residuals and Linear
Bottlenecks", CVPR 2018) at width 0.5, without its final 1x1 convolution to 1280 channels.
Decoder: U-Net's expanding path (Ronneberger et al., MICCAI 2015) made cheap: at strides 16, 8
and 4 the coarser map is upsampled bilinearly to the skip's size, concatenated with the
encoder's map of that stride, and merged by one depthwise separable 3x3 convolution
(depthwise and pointwise, each with BatchNorm and ReLU). Before the decoder the stride-32
features pass a 1x1 conv-BN-ReLU gated channel-wise by a sigmoid of a 1x1 convolution of their
global average (the context branch of LR-ASPP, Howard et al., "Searching for MobileNetV3",
ICCV 2019; no BatchNorm on the pooled branch, so batch size 1 trains). A 1x1 convolution
classifies the last decoder map and bilinear upsampling brings the logits to the input size.

Chosen by measurement among LR-ASPP on MobileNetV3-Large and MobileNetV2, ENet and this
design at several widths and decoder depths (``benchmarks/realtime_latency.py``; numbers,
machine and command in ``benchmarks/results/realtime_latency.md``): the fastest candidate
that keeps a skip path down to stride 4, which thin classes (poles, signs, pedestrians) need,
and the cheapest to train.

Output stride 4 with the defaults (``32 / 2**len(decoder_channels)``). Parameters for 11
classes: 517,515 (480,320 in the encoder). Latency at 1x3x360x480, fp32, batch 1, 2 threads,
eager PyTorch 2.13 on a shared 2-core AMD EPYC: 19.6 ms median (13.6 ms channels_last) against
29.9 ms (20.6 ms) for torchvision's ``lraspp_mobilenet_v3_large`` architecture and 107.9 ms
(79.6 ms) for ``unet(base_channels=16)`` in the same run; a training step on 4 images takes
0.28 s there.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from semseg.models import register_model
from semseg.models.backbones.mobilenet import (
    MobileNetV2,
    MobileNetV3Large,
    SeparableConv,
    mobilenet_v2,
    mobilenet_v3_large,
)
from semseg.models.blocks import ConvBNAct
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


class MobileUNet(nn.Module):
    """``(N, 3, H, W)`` float -> ``(N, num_classes, H, W)`` float logits, any ``H, W``.

    Args:
        num_classes: output channels (logits, no softmax).
        encoder: ``"mobilenet_v2"`` or ``"mobilenet_v3_large"`` (see :func:`build_encoder`).
        width_mult: the encoder's width multiplier.
        decoder_channels: channels of the decoder after merging the skips at strides 16, 8,
            4 and 2 in turn; fewer entries stop the decoder earlier (3: at stride 4).
        merge_kernels: per decoder level, 3 for a depthwise separable 3x3 merge or 1 for a
            1x1 conv-BN-ReLU; ``None``: 3 at every level.
    """

    def __init__(
        self,
        num_classes: int,
        encoder: str,
        width_mult: float,
        decoder_channels: Sequence[int],
        merge_kernels: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        decoder_channels = tuple(decoder_channels)
        if not 1 <= len(decoder_channels) <= 4 or min(decoder_channels) < 1:
            raise ValueError(
                "decoder_channels must be 1 to 4 positive channel counts (for the skips at "
                f"strides 16, 8, 4, 2), got {decoder_channels}"
            )
        merge_kernels = (3,) * len(decoder_channels) if merge_kernels is None else merge_kernels
        merge_kernels = tuple(merge_kernels)
        if len(merge_kernels) != len(decoder_channels) or not set(merge_kernels) <= {1, 3}:
            raise ValueError(
                f"merge_kernels must give 1 or 3 for each of the {len(decoder_channels)} "
                f"decoder levels, got {merge_kernels}"
            )
        self.encoder = build_encoder(encoder, width_mult)
        self.output_stride = ENCODER_STRIDE >> len(decoder_channels)
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *skips, top = self.encoder(x)
        context = torch.sigmoid(self.gate(top.mean(dim=(2, 3), keepdim=True)))
        y = self.top(top) * context
        for merge, skip in zip(self.merge, skips[::-1][: len(self.merge)], strict=True):
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = merge(torch.cat([y, skip], dim=1))
        logits = self.classifier(y)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


@register_model
def mobile_unet(
    num_classes: int,
    encoder: str = "mobilenet_v2",
    width_mult: float = 0.5,
    decoder_channels: Sequence[int] = (64, 48, 32),
    merge_kernels: Sequence[int] | None = None,
    encoder_weights: str | Path | None = None,
) -> MobileUNet:
    """Mobile U-Net, the real-time model for CPUs (see module docstring).

    Args:
        num_classes: output channels (11 for CamVid).
        encoder: ``"mobilenet_v2"`` or ``"mobilenet_v3_large"``.
        width_mult: encoder width multiplier (MobileNetV2 at 0.5: 480,320 encoder parameters).
        decoder_channels: decoder widths after the skips at strides 16, 8, 4 (and 2 with a
            fourth entry, e.g. ``(64, 48, 32, 16)``: about 25% slower).
        merge_kernels: per decoder level, 3 (depthwise separable 3x3) or 1 (1x1 conv).
        encoder_weights: a torchvision ``mobilenet_v2`` or ``mobilenet_v3_large`` state dict
            (path or URL); only fits ``width_mult=1.0``, the one width torchvision publishes.
    """
    model = MobileUNet(num_classes, encoder, width_mult, decoder_channels, merge_kernels)
    if encoder_weights is not None:
        load_pretrained_encoder(model.encoder, encoder_weights)
    return model
