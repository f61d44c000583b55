"""Focal loss: gamma 0 is cross-entropy, and the formula in NumPy otherwise."""

import numpy as np
import pytest
import torch

from semseg.engine.losses import CrossEntropyLoss, FocalLoss
from tests.engine.losses.oracle import labelled_rows, random_batch, softmax, weighted_mean


@pytest.mark.parametrize("weights", [None, [0.5, 2.0, 1.0, 4.0]])
def test_gamma_zero_is_cross_entropy(weights):
    logits, target = random_batch(0, scale=2.0)
    scores, labels = torch.from_numpy(logits), torch.from_numpy(target)
    focal = FocalLoss(0.0, weights)(scores, labels)
    assert focal.item() == pytest.approx(CrossEntropyLoss(weights)(scores, labels).item(), rel=1e-6)


@pytest.mark.parametrize(("gamma", "weights"), [(2.0, None), (0.5, [0.5, 2.0, 1.0, 4.0])])
def test_matches_numpy(gamma, weights):
    logits, target = random_batch(1, scale=2.0)
    rows, labels = labelled_rows(logits, target)
    p = softmax(rows)[np.arange(len(labels)), labels]
    expected = weighted_mean(-((1 - p) ** gamma) * np.log(p), labels, weights)
    loss = FocalLoss(gamma, weights)(torch.from_numpy(logits), torch.from_numpy(target))
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_gradient_is_finite_where_a_pixel_is_certain():
    logits = torch.tensor([[[[200.0, 0.0]], [[0.0, 1.0]]]], requires_grad=True)
    FocalLoss(0.5)(logits, torch.tensor([[[0, 1]]])).backward()
    assert torch.isfinite(logits.grad).all()


def test_negative_gamma_is_named():
    with pytest.raises(ValueError, match="focal gamma"):
        FocalLoss(gamma=-1.0)
