"""NumPy references shared by the loss tests: float64, written from the papers' formulas."""

import numpy as np

from semseg.labels import IGNORE_INDEX


def labelled_rows(logits, target):
    """(N, C, H, W) logits and (N, H, W) labels -> float64 (P, C) logits and (P,) labels of the
    labelled pixels, in the order of a C-order flattening."""
    c = logits.shape[1]
    rows = logits.transpose(0, 2, 3, 1).reshape(-1, c).astype(np.float64)
    labels = target.reshape(-1)
    keep = labels != IGNORE_INDEX
    return rows[keep], labels[keep]


def softmax(rows):
    shifted = np.exp(rows - rows.max(1, keepdims=True))
    return shifted / shifted.sum(1, keepdims=True)


def weighted_mean(values, labels, weights):
    w = np.ones_like(values) if weights is None else np.asarray(weights, np.float64)[labels]
    return (w * values).sum() / w.sum()


def random_batch(seed, classes=4, size=(2, 5, 6), scale=1.0, ignored=True):
    rng = np.random.default_rng(seed)
    logits = (scale * rng.normal(size=(size[0], classes, *size[1:]))).astype(np.float32)
    target = rng.integers(0, classes, size=size)
    if ignored:
        target[0, :2] = IGNORE_INDEX
    return logits, target
