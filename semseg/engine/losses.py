"""Per-pixel softmax cross-entropy over the labelled pixels of a mini-batch."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from semseg.labels import IGNORE_INDEX


class SegmentationLoss(nn.Module):
    """Cross-entropy averaged over labelled pixels, optionally class-weighted.

    With weights, the mean is weighted: ``sum_i w[y_i] * nll_i / sum_i w[y_i]`` over the
    pixels ``i`` whose label is not ``ignore_index`` (PyTorch's ``cross_entropy`` definition).
    A batch with no labelled pixel gives a loss of 0 (with a graph), not NaN.

    Args:
        class_weights: (C,) non-negative weights, or None for plain averaging.
        ignore_index: label of pixels that do not count.
    """

    def __init__(
        self, class_weights: Sequence[float] | None = None, ignore_index: int = IGNORE_INDEX
    ) -> None:
        super().__init__()
        weight = None if class_weights is None else torch.as_tensor(class_weights).float()
        if weight is not None and (weight < 0).any():
            raise ValueError(f"class weights must be non-negative, got {weight.tolist()}")
        self.register_buffer("class_weights", weight)
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits: (N, C, H, W) float; target: (N, H, W) int64 -> scalar loss."""
        if self.class_weights is not None and self.class_weights.numel() != logits.shape[1]:
            raise ValueError(
                f"{self.class_weights.numel()} class weights for {logits.shape[1]} classes"
            )
        if not (target != self.ignore_index).any():
            return logits.sum() * 0.0
        return F.cross_entropy(
            logits, target, weight=self.class_weights, ignore_index=self.ignore_index
        )
