"""Per-pixel softmax cross-entropy over the labelled pixels of a mini-batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from semseg.engine.losses.base import PixelLoss


class CrossEntropyLoss(PixelLoss):
    """Cross-entropy averaged over labelled pixels, optionally class-weighted.

    With weights, the mean is weighted: ``sum_i w[y_i] * nll_i / sum_i w[y_i]`` over the
    pixels ``i`` whose label is not ``ignore_index`` (PyTorch's ``cross_entropy`` definition).
    """

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(
            logits, target, weight=self.class_weights, ignore_index=self.ignore_index
        )
