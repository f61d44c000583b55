"""Running a model at a fraction of the input's resolution."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from semseg.models.contract import SegmentationModel


class InputScaled(SegmentationModel):
    """Runs ``model`` on the input resized by ``scale`` and resizes the logits back.

    (N, 3, H, W) -> bilinear resize to (floor(H*scale), floor(W*scale)) -> model -> logits
    bilinearly resized to (N, C, H, W). Training then computes the loss, and evaluation the
    scores, at the labels' full resolution while the network pays for ``scale**2`` of the
    pixels. The input resize is not antialiased, so the model exports to ONNX with exact
    parity (ONNX Runtime's antialiased Resize treats image borders differently from
    PyTorch's); at ``scale=0.5`` bilinear sampling falls exactly between pixels and equals a
    2x2 average.

    ``num_classes`` and ``encoder`` are the inner model's; ``output_stride`` is the inner
    model's stride in input pixels, ``ceil(inner stride / scale)``.
    """

    def __init__(self, model: nn.Module, scale: float) -> None:
        if not 0.0 < scale <= 4.0:
            raise ValueError(f"input_scale must be in (0, 4], got {scale}")
        super().__init__(model.num_classes, math.ceil(model.output_stride / scale))
        self.model = model
        self.scale = scale

    @property
    def encoder(self) -> nn.Module | None:
        return getattr(self.model, "encoder", None)

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        small = F.interpolate(
            x, scale_factor=self.scale, mode="bilinear", align_corners=False,
            recompute_scale_factor=False,
        )  # fmt: skip
        return F.interpolate(self.model(small), size=size, mode="bilinear", align_corners=False)
