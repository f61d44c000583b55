"""Segmentation losses and their weighted sum, as a recipe's ``loss`` section names them
(:func:`semseg.engine.build.build_loss` builds the sum from the section).

=========  =================================================  ==============================
name       loss                                               class weights
=========  =================================================  ==============================
ce         :class:`CrossEntropyLoss`                          weighted mean over pixels
ohem       :class:`OhemCrossEntropyLoss` (hard pixels)        weighted mean over kept pixels
lovasz     :class:`LovaszSoftmaxLoss` (Berman et al. 2018)    weighted mean over classes
dice       :class:`DiceLoss` (soft, multi-class)              weighted mean over classes
focal      :class:`FocalLoss` (Lin et al. 2017)               weighted mean over pixels
=========  =================================================  ==============================

Every loss leaves out pixels labelled ``ignore_index`` and computes in float32 under autocast
(:class:`~semseg.engine.losses.base.PixelLoss`). A recipe sums any of them::

    loss:
      class_weights: median_frequency
      terms:
        - {name: ce, weight: 1.0}
        - {name: lovasz, weight: 0.5, class_weighted: false}
        - {name: ohem, threshold: 0.7, min_kept: 100000}
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from semseg.engine.losses.base import PixelLoss
from semseg.engine.losses.cross_entropy import CrossEntropyLoss
from semseg.engine.losses.dice import DiceLoss
from semseg.engine.losses.focal import FocalLoss
from semseg.engine.losses.lovasz import LovaszSoftmaxLoss
from semseg.engine.losses.ohem import OhemCrossEntropyLoss

LOSSES: dict[str, type[PixelLoss]] = {
    "ce": CrossEntropyLoss,
    "ohem": OhemCrossEntropyLoss,
    "lovasz": LovaszSoftmaxLoss,
    "dice": DiceLoss,
    "focal": FocalLoss,
}
"""Name in a recipe -> loss class."""

_SET_BY_THE_SECTION = ("class_weights", "ignore_index")


def loss_arguments(name: str) -> dict[str, Any]:
    """The arguments of loss ``name`` a recipe term may set, with their defaults (the class
    weights and the ignore index come from the loss section and the labels).

    Raises:
        ValueError: naming an unknown loss and listing the known ones.
    """
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose from {', '.join(LOSSES)}")
    parameters = inspect.signature(LOSSES[name]).parameters.values()
    return {p.name: p.default for p in parameters if p.name not in _SET_BY_THE_SECTION}


class SegmentationLoss(nn.Module):
    """``sum_k weight_k * loss_k(logits, target)``: the loss a recipe's ``loss`` section builds.

    Args:
        terms: (weight, loss) pairs, at least one.
    """

    def __init__(self, terms: Sequence[tuple[float, PixelLoss]]) -> None:
        super().__init__()
        if not terms:
            raise ValueError("a segmentation loss needs at least one term")
        self.weights = [float(weight) for weight, _ in terms]
        self.terms = nn.ModuleList(loss for _, loss in terms)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits: (N, C, H, W) float; target: (N, H, W) int64 -> scalar float32 loss."""
        total = self.weights[0] * self.terms[0](logits, target)
        for weight, term in zip(self.weights[1:], self.terms[1:], strict=True):
            total = total + weight * term(logits, target)
        return total


__all__ = [
    "LOSSES",
    "CrossEntropyLoss",
    "DiceLoss",
    "FocalLoss",
    "LovaszSoftmaxLoss",
    "OhemCrossEntropyLoss",
    "PixelLoss",
    "SegmentationLoss",
    "loss_arguments",
]
