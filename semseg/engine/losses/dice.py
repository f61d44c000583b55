"""Soft multi-class Dice loss."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from semseg.engine.losses.base import PixelLoss, class_mean, labelled_pixels
from semseg.labels import IGNORE_INDEX


class DiceLoss(PixelLoss):
    """``1 - Dice_c`` averaged over the classes present in the batch's labels, with the soft
    Dice of class ``c`` over the labelled pixels ``i`` of the whole batch::

        Dice_c = (2 * sum_i p_ic * g_ic + smooth) / (sum_i p_ic + sum_i g_ic + smooth)

    ``p`` the softmax probabilities, ``g`` the one-hot labels. With ``class_weights`` the mean
    over present classes is weighted.

    Args:
        smooth: added to numerator and denominator (> 0 keeps small classes' gradients finite).
    """

    def __init__(
        self,
        smooth: float = 1.0,
        class_weights: Sequence[float] | None = None,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        super().__init__(class_weights, ignore_index)
        if smooth < 0:
            raise ValueError(f"dice smooth must be non-negative, got {smooth}")
        self.smooth = smooth

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        probabilities, labels = labelled_pixels(logits.softmax(1), target, self.ignore_index)
        classes = torch.arange(probabilities.shape[0], device=labels.device)
        foreground = (labels == classes[:, None]).float()  # (C, P) like the probabilities
        intersection = (probabilities * foreground).sum(1)
        sizes = probabilities.sum(1) + foreground.sum(1)
        dice = (2 * intersection + self.smooth) / (sizes + self.smooth)
        return class_mean(1 - dice, foreground.sum(1) > 0, self.class_weights)
