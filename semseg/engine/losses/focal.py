"""Focal loss: cross-entropy that down-weights the pixels already classified well."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from semseg.engine.losses.base import PixelLoss
from semseg.labels import IGNORE_INDEX


class FocalLoss(PixelLoss):
    """``-(1 - p_i)^gamma * log p_i`` per labelled pixel (Lin et al. 2017), ``p_i`` the softmax
    probability of its true class, averaged over labelled pixels; with ``class_weights`` (the
    paper's alpha) the mean is weighted as :class:`CrossEntropyLoss`'s, so ``gamma=0`` gives
    the same value as the class-weighted cross-entropy.

    Args:
        gamma: focusing exponent, >= 0 (2 in the paper).
    """

    def __init__(
        self,
        gamma: float = 2.0,
        class_weights: Sequence[float] | None = None,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        super().__init__(class_weights, ignore_index)
        if gamma < 0:
            raise ValueError(f"focal gamma must be non-negative, got {gamma}")
        self.gamma = gamma

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        labelled = target != self.ignore_index
        labels = target[labelled]
        log_p = logits.log_softmax(1).movedim(1, -1)[labelled].gather(1, labels[:, None])[:, 0]
        # 1 - p from log p without cancellation; the floor keeps (1 - p)^gamma differentiable
        # for gamma < 1 where p rounds to 1
        miss = (-torch.expm1(log_p)).clamp_min(1e-12)
        loss = -(miss**self.gamma) * log_p
        if self.class_weights is None:
            return loss.mean()
        weight = self.class_weights[labels]
        return (weight * loss).sum() / weight.sum()
