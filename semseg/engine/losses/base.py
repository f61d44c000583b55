"""What every per-pixel loss shares: class weights, the ignore index, float32 arithmetic."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from semseg.labels import IGNORE_INDEX


class PixelLoss(nn.Module):
    """Base class of the segmentation losses: a scalar from logits and a label map.

    :meth:`forward` checks the class weights against the number of classes, turns autocast off
    and casts the logits to float32 (so a bf16 or fp16 forward pass still gets a float32 loss:
    softmax, logarithms and sorts are not computed in 8 bits of mantissa), and returns 0 (with a
    graph, so ``backward`` works) for a batch with no labelled pixel. Subclasses implement
    :meth:`compute`.

    Args:
        class_weights: (C,) non-negative weights, or None; each loss says how it uses them.
        ignore_index: label of pixels that count in no loss.
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
        """logits: (N, C, H, W) float of any precision; target: (N, H, W) int64 labels in
        ``0..C-1`` or ``ignore_index`` -> scalar float32 loss."""
        if self.class_weights is not None and self.class_weights.numel() != logits.shape[1]:
            raise ValueError(
                f"{self.class_weights.numel()} class weights for {logits.shape[1]} classes"
            )
        with torch.autocast(logits.device.type, enabled=False):
            logits = logits.float()
            if not (target != self.ignore_index).any():
                return logits.sum() * 0.0
            return self.compute(logits, target)

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss of float32 ``logits`` (N, C, H, W) where some pixel of ``target`` is
        labelled."""
        raise NotImplementedError


def labelled_pixels(
    values: torch.Tensor, target: torch.Tensor, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The labelled pixels of a batch, one row per class: values (N, C, H, W) -> (C, P) and
    their labels (P,) int64, P the number of pixels whose label is not ``ignore_index``."""
    labelled = (target != ignore_index).reshape(-1)
    rows = values.transpose(0, 1).reshape(values.shape[1], -1)
    return rows[:, labelled], target.reshape(-1)[labelled]


def class_mean(per_class: torch.Tensor, present: torch.Tensor, weights: torch.Tensor | None):
    """Mean of per-class values (C,) over the classes where ``present`` (C,) bool is true,
    weighted by ``weights`` (C,) when given."""
    weight = present.float() if weights is None else present.float() * weights
    return (per_class * weight).sum() / weight.sum()
