"""Cross-entropy over labelled pixels, against a NumPy computation."""

import numpy as np
import pytest
import torch

from semseg.engine.losses import CrossEntropyLoss
from semseg.labels import IGNORE_INDEX


def _numpy_loss(logits, target, weights=None):
    c = logits.shape[1]
    scores = logits.transpose(0, 2, 3, 1).reshape(-1, c).astype(np.float64)
    labels = target.reshape(-1)
    keep = labels != IGNORE_INDEX
    scores, labels = scores[keep], labels[keep]
    log_softmax = scores - np.log(np.exp(scores).sum(1, keepdims=True))
    nll = -log_softmax[np.arange(len(labels)), labels]
    pixel_weights = np.ones_like(nll) if weights is None else np.asarray(weights)[labels]
    return (pixel_weights * nll).sum() / pixel_weights.sum()


@pytest.mark.parametrize("weights", [None, [0.5, 2.0, 1.0, 4.0]])
def test_matches_numpy_with_ignore_and_weights(weights):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 4, 5, 6)).astype(np.float32)
    target = rng.integers(0, 4, size=(2, 5, 6))
    target[0, :2] = IGNORE_INDEX
    loss = CrossEntropyLoss(weights)(torch.from_numpy(logits), torch.from_numpy(target))
    assert loss.item() == pytest.approx(_numpy_loss(logits, target, weights), rel=1e-5)


def test_all_ignored_batch_gives_zero_with_gradient():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    loss = CrossEntropyLoss()(logits, torch.full((1, 4, 4), IGNORE_INDEX))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_bad_weights_are_rejected():
    with pytest.raises(ValueError, match="non-negative"):
        CrossEntropyLoss([1.0, -1.0])
    with pytest.raises(ValueError, match="2 class weights for 3 classes"):
        CrossEntropyLoss([1.0, 1.0])(torch.randn(1, 3, 2, 2), torch.zeros(1, 2, 2).long())
