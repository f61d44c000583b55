"""Online hard example mining cross-entropy: the loss of the pixels the model gets wrong."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from semseg.engine.losses.base import PixelLoss
from semseg.labels import IGNORE_INDEX


class OhemCrossEntropyLoss(PixelLoss):
    """Cross-entropy over the hard pixels of the batch, as PIDNet and PP-LiteSeg train CamVid.

    A labelled pixel is hard when the softmax probability of its true class is below
    ``threshold`` (its loss above ``-log(threshold)``). When fewer than ``min_kept`` pixels of
    the batch are hard, the ``min_kept`` pixels of lowest true-class probability are kept
    instead (every labelled pixel when there are fewer). The kept pixels' cross-entropy is
    averaged, weighted by ``class_weights[y]`` when given (as :class:`CrossEntropyLoss`). The
    choice of pixels is not differentiated through.

    Args:
        threshold: probability in (0, 1]; 0.7 in PIDNet and PP-LiteSeg.
        min_kept: least number of pixels kept per batch (all processes' batches separately).
    """

    def __init__(
        self,
        threshold: float = 0.7,
        min_kept: int = 100_000,
        class_weights: Sequence[float] | None = None,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        super().__init__(class_weights, ignore_index)
        if not 0 < threshold <= 1:
            raise ValueError(f"ohem threshold must be a probability in (0, 1], got {threshold}")
        if min_kept < 1:
            raise ValueError(f"ohem min_kept must be at least 1, got {min_kept}")
        self.threshold = threshold
        self.min_kept = min_kept

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        labelled = target != self.ignore_index
        nll = F.cross_entropy(logits, target, ignore_index=self.ignore_index, reduction="none")
        nll, labels = nll[labelled], target[labelled]
        probability = torch.exp(-nll.detach())  # softmax probability of the true class
        keep = probability < self.threshold
        if int(keep.sum()) < self.min_kept:
            keep = torch.zeros_like(keep)
            count = min(self.min_kept, probability.numel())
            keep[probability.topk(count, largest=False).indices] = True
        nll, labels = nll[keep], labels[keep]
        if self.class_weights is None:
            return nll.mean()
        weight = self.class_weights[labels]
        return (weight * nll).sum() / weight.sum()
