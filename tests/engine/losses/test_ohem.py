"""OHEM cross-entropy against a NumPy selection of the hard pixels."""

import numpy as np
import pytest
import torch

from semseg.engine.losses import CrossEntropyLoss, OhemCrossEntropyLoss
from tests.engine.losses.oracle import labelled_rows, random_batch, softmax, weighted_mean


def numpy_ohem(logits, target, threshold, min_kept, weights=None):
    rows, labels = labelled_rows(logits, target)
    p = softmax(rows)[np.arange(len(labels)), labels]
    nll = -np.log(p)
    keep = p < threshold
    if keep.sum() < min_kept:
        keep = np.zeros_like(keep)
        keep[np.argsort(p, kind="stable")[:min_kept]] = True
    return weighted_mean(nll[keep], labels[keep], weights), int(keep.sum())


def confident_batch(seed, hard):
    """Logits where every labelled pixel has its true class at probability > 0.97 except
    ``hard`` pixels of the first image's last row, at about 1 / C."""
    logits, target = random_batch(seed, scale=0.3)
    classes = logits.shape[1]
    one_hot = np.eye(classes, dtype=np.float32)[np.where(target == 255, 0, target)]
    logits = logits + 6.0 * one_hot.transpose(0, 3, 1, 2)
    logits[0, :, -1, :hard] = 0.3 * logits[0, :, -1, :hard] / 6.0
    return logits, target


@pytest.mark.parametrize("weights", [None, [0.5, 2.0, 1.0, 4.0]])
def test_many_hard_pixels_keeps_those_below_the_threshold(weights):
    logits, target = random_batch(0, scale=3.0)
    expected, kept = numpy_ohem(logits, target, 0.7, 5, weights)
    assert 5 < kept < (target != 255).sum()  # the threshold, not min_kept, decides
    loss = OhemCrossEntropyLoss(0.7, 5, weights)(torch.from_numpy(logits), torch.from_numpy(target))
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_few_hard_pixels_keeps_exactly_min_kept():
    logits, target = confident_batch(1, hard=2)
    _, kept = numpy_ohem(logits, target, 0.7, 1)
    assert kept == 2
    expected, kept = numpy_ohem(logits, target, 0.7, 7)
    assert kept == 7
    scores = torch.from_numpy(logits).requires_grad_()
    loss = OhemCrossEntropyLoss(0.7, 7)(scores, torch.from_numpy(target))
    loss.backward()
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    pixels_with_gradient = (scores.grad.abs().sum(1) > 0).sum().item()
    assert pixels_with_gradient == 7


def test_min_kept_above_the_labelled_pixels_is_plain_cross_entropy():
    logits, target = confident_batch(2, hard=1)
    scores, labels = torch.from_numpy(logits), torch.from_numpy(target)
    ohem = OhemCrossEntropyLoss(0.7, 10_000)(scores, labels)
    assert ohem.item() == pytest.approx(CrossEntropyLoss()(scores, labels).item(), rel=1e-6)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="ohem threshold"):
        OhemCrossEntropyLoss(threshold=1.5)
    with pytest.raises(ValueError, match="ohem min_kept"):
        OhemCrossEntropyLoss(min_kept=0)
