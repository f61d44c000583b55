"""A fully convolutional network that never downsamples: every layer at input resolution.

The second step on the road to FCN: share the computation of overlapping patches by running
convolutions over the whole image, but keep the full resolution through every layer, so no
pooling loses detail and no upsampling has to restore it. The price is that every layer pays
for every pixel: at the depth of the naive baseline (13 3x3 convolutions, then a 1x1
classifier, as VGG16's convolutional part has) a full-resolution network of VGG's widths
costs about as much as 50 naive ones, so it has to be narrow, and the receptive field grows by
only 2 pixels a layer (27 pixels after 13) unless the convolutions are dilated (Yu and Koltun,
"Multi-Scale Context Aggregation by Dilated Convolutions", ICLR 2016), which widens the view
at the same cost.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from semseg.models.blocks import ConvBNAct
from semseg.models.contract import SegmentationModel

NAIVE_DEPTH = 13
"""3x3 convolutions of VGG16, the naive baseline's encoder."""


class FullResolutionFCN(SegmentationModel):
    """``(N, 3, H, W)`` float -> ``(N, num_classes, H, W)`` float logits, output stride 1.

    ``len(dilations)`` 3x3 conv-BN-ReLU layers of ``width`` channels at stride 1 (padding equal
    to the dilation, so every map keeps ``H x W``), then a 1x1 convolution to the classes.
    Receptive field ``1 + 2 * sum(dilations)`` pixels.

    Attributes:
        encoder: the convolution layers, ``(N, 3, H, W) -> (N, width, H, W)``.
        classifier: the 1x1 convolution, ``width -> num_classes`` with bias.
    """

    def __init__(self, num_classes: int, width: int, dilations: Sequence[int]) -> None:
        if width < 1:
            raise ValueError(f"width must be at least 1, got {width}")
        if not dilations or min(dilations) < 1:
            raise ValueError(f"dilations must be one or more positive integers, got {dilations}")
        super().__init__(num_classes, output_stride=1)
        self.receptive_field = 1 + 2 * sum(dilations)
        channels = [3] + [width] * len(dilations)
        self.encoder = nn.Sequential(
            *(
                ConvBNAct(c_in, c_out, 3, dilation=d)
                for c_in, c_out, d in zip(channels[:-1], channels[1:], dilations, strict=True)
            )
        )
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.encoder(x))


def fullres_fcn(
    num_classes: int,
    width: int = 16,
    depth: int = NAIVE_DEPTH,
    dilations: Sequence[int] | None = None,
) -> FullResolutionFCN:
    """Stride-1 convolutions only, no pooling; see :class:`FullResolutionFCN`.

    Parameters: ``27 * width + 2 * width`` for the first layer, ``9 * width**2 + 2 * width`` for
    each further one, ``(width + 1) * num_classes`` for the classifier: 28,496 + 17 *
    num_classes with the defaults (16 channels, 13 layers).

    Args:
        num_classes: output channels.
        width: channels of every convolution.
        depth: number of 3x3 convolutions; 13 is the naive baseline's.
        dilations: dilation of each convolution (``depth`` of them); default all 1 (receptive
            field ``2 * depth + 1``). For example ``[1, 1, 2, 2, 4, 4, 8, 8, 16, 16, 1, 1, 1]``
            sees 131 pixels.
    """
    if dilations is None:
        dilations = [1] * depth
    elif len(dilations) != depth:
        raise ValueError(f"dilations has {len(dilations)} entries for depth {depth}")
    return FullResolutionFCN(num_classes, width, list(dilations))
