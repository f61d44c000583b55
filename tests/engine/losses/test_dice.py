"""Soft Dice against the formula in NumPy and a hand-computed case."""

import numpy as np
import pytest
import torch

from semseg.engine.losses import DiceLoss
from tests.engine.losses.oracle import labelled_rows, random_batch, softmax


def numpy_dice(logits, target, smooth, weights=None):
    rows, labels = labelled_rows(logits, target)
    p = softmax(rows)
    g = np.eye(p.shape[1])[labels]
    dice = (2 * (p * g).sum(0) + smooth) / (p.sum(0) + g.sum(0) + smooth)
    w = (g.sum(0) > 0) * (1.0 if weights is None else np.asarray(weights))
    return ((1 - dice) * w).sum() / w.sum()


@pytest.mark.parametrize(("smooth", "weights"), [(1.0, None), (0.0, [0.5, 2.0, 1.0, 4.0])])
def test_matches_numpy(smooth, weights):
    logits, target = random_batch(0, classes=4)
    target[target == 3] = 1  # class 3 absent: left out of the mean
    loss = DiceLoss(smooth, weights)(torch.from_numpy(logits), torch.from_numpy(target))
    assert loss.item() == pytest.approx(numpy_dice(logits, target, smooth, weights), rel=1e-5)


def test_hand_computed_two_pixels():
    # pixel 0: label 0, p = (0.5, 0.5); pixel 1: label 1, p = (e/(1+e), 1/(1+e)) from logits (1, 0)
    logits = torch.tensor([[[[0.0, 1.0]], [[0.0, 0.0]]]])
    target = torch.tensor([[[0, 1]]])
    q = np.e / (1 + np.e)
    dice0 = 2 * 0.5 / (0.5 + q + 1)
    dice1 = 2 * (1 - q) / (0.5 + (1 - q) + 1)
    loss = DiceLoss(smooth=0.0)(logits, target)
    assert loss.item() == pytest.approx(1 - (dice0 + dice1) / 2, rel=1e-6)


def test_negative_smooth_is_named():
    with pytest.raises(ValueError, match="dice smooth"):
        DiceLoss(smooth=-1.0)
