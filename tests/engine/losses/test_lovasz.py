"""Lovász-softmax against a NumPy sort-based Lovász extension of the Jaccard loss, and against
1 - IoU where the probabilities are one-hot (the extension agrees with the set function)."""

import numpy as np
import pytest
import torch

from semseg.engine.losses import LovaszSoftmaxLoss
from semseg.engine.losses.lovasz import lovasz_gradient
from tests.engine.losses.oracle import labelled_rows, random_batch, softmax


def numpy_lovasz(logits, target, weights=None):
    """Berman et al.'s ``lovasz_softmax_flat`` one class at a time, Jaccard losses recomputed
    from scratch for each prefix of the sorted errors (no cumulative sums)."""
    rows, labels = labelled_rows(logits, target)
    p = softmax(rows)
    values, class_weights = [], []
    for c in range(p.shape[1]):
        fg = (labels == c).astype(np.float64)
        if fg.sum() == 0:
            continue
        errors = np.abs(fg - p[:, c])
        order = np.argsort(-errors, kind="stable")
        fg_sorted = fg[order]
        jaccard = []
        for k in range(len(order) + 1):  # the k largest errors counted as mistakes
            mistakes = np.zeros(len(order), bool)
            mistakes[:k] = True
            intersection = fg_sorted[~mistakes].sum()
            union = fg_sorted.sum() + (mistakes & (fg_sorted == 0)).sum()
            jaccard.append(1 - intersection / union)
        values.append(np.dot(errors[order], np.diff(jaccard)))
        class_weights.append(1.0 if weights is None else weights[c])
    return np.dot(values, class_weights) / np.sum(class_weights)


@pytest.mark.parametrize("weights", [None, [0.5, 2.0, 1.0, 4.0]])
def test_matches_the_numpy_lovasz_extension(weights):
    logits, target = random_batch(0, size=(1, 4, 5))
    loss = LovaszSoftmaxLoss(weights)(torch.from_numpy(logits), torch.from_numpy(target))
    assert loss.item() == pytest.approx(numpy_lovasz(logits, target, weights), rel=1e-5)


def test_absent_classes_do_not_count():
    logits, target = random_batch(1, classes=5, size=(1, 4, 5))
    target[target == 4] = 0  # class 4 absent from the labels
    loss = LovaszSoftmaxLoss()(torch.from_numpy(logits), torch.from_numpy(target))
    assert loss.item() == pytest.approx(numpy_lovasz(logits, target), rel=1e-5)


def test_one_hot_probabilities_give_one_minus_iou():
    # labels and a hard prediction on 2 x 3 pixels, 3 classes
    target = np.array([[[0, 0, 1], [1, 2, 2]]])
    prediction = np.array([[[0, 1, 1], [1, 1, 2]]])
    logits = 60.0 * np.eye(3, dtype=np.float32)[prediction].transpose(0, 3, 1, 2)
    # IoU: class 0 1/2, class 1 2/4, class 2 1/2
    loss = LovaszSoftmaxLoss()(torch.from_numpy(logits), torch.from_numpy(target))
    assert loss.item() == pytest.approx(1 - (0.5 + 0.5 + 0.5) / 3, abs=1e-6)


def test_gradient_weights_are_jaccard_differences():
    fg_sorted = torch.tensor([[1.0, 0.0, 1.0]])
    # J(0) = 0, J(1) = 1 - 1/2, J(2) = 1 - 1/3, J(3) = 1 - 0/3
    expected = [0.5, 2 / 3 - 0.5, 1 - 2 / 3]
    assert lovasz_gradient(fg_sorted)[0].tolist() == pytest.approx(expected)
