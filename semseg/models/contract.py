"""What every registered model is: :class:`SegmentationModel`.

A segmentation model maps ``(N, in_channels, H, W)`` float images (normalised) to
``(N, num_classes, H, W)`` float logits at the input's resolution, for any ``H, W`` of at
least ``output_stride`` pixels. Every model exposes

- ``num_classes``: the number of logit channels;
- ``output_stride``: the coarsest stride of the network's feature maps, in input pixels. An
  input whose ``H`` and ``W`` are multiples of it passes through without padding; the
  predictor refuses inputs smaller than it (they would be mostly padding by the deepest
  layer) and sliding-window tiles smaller than it. For a model run at ``input_scale`` it is
  the inner network's stride divided by the scale;
- ``encoder`` where it has one (training freezes it and gives it its own learning rate).

Networks whose layers need ``H, W`` divisible by the stride (pooling that must halve an even
size, skip connections of matching shapes) set ``pads_input = True``; then
:meth:`SegmentationModel.forward` — the one place that pads — zero-pads the input at the
bottom and right to a multiple of ``output_stride`` (zero is the mean colour after
normalisation) and crops the logits back. The others resize internally.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from semseg.models.blocks import crop_to, pad_to_multiple


class SegmentationModel(nn.Module):
    """Base class of the registered models; subclasses call ``super().__init__(num_classes,
    output_stride)`` and implement :meth:`segment`.

    Raises:
        ValueError: when ``num_classes`` or ``output_stride`` is below 1.
    """

    pads_input: ClassVar[bool] = False

    def __init__(self, num_classes: int, output_stride: int) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        if output_stride < 1:
            raise ValueError(f"output_stride must be at least 1, got {output_stride}")
        self.num_classes = int(num_classes)
        self.output_stride = int(output_stride)

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, H, W) -> (N, num_classes, H, W) logits; with ``pads_input`` only
        called with ``H, W`` multiples of ``output_stride``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.pads_input:
            return self.segment(x)
        padded, size = pad_to_multiple(x, self.output_stride)
        return crop_to(self.segment(padded), size)
