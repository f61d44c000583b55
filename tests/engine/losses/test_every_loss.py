"""What every loss promises: ignored pixels count for nothing, class weights are checked, the
arithmetic is float32 under bf16 autocast."""

import pytest
import torch

from semseg.engine.losses import LOSSES
from semseg.labels import IGNORE_INDEX
from tests.engine.losses.oracle import random_batch

WEIGHTS = [0.5, 2.0, 1.0, 4.0]


def make(name, weights=None):
    """Loss ``name`` with its defaults; OHEM keeps few pixels so that its selection matters."""
    arguments = {"min_kept": 7} if name == "ohem" else {}
    return LOSSES[name](**arguments, class_weights=weights)


@pytest.mark.parametrize("weights", [None, WEIGHTS])
@pytest.mark.parametrize("name", list(LOSSES))
def test_ignored_pixels_neither_count_nor_get_gradient(name, weights):
    logits, target = random_batch(0)
    ignored = torch.from_numpy(target) == IGNORE_INDEX
    first = torch.from_numpy(logits).requires_grad_()
    loss = make(name, weights)(first, torch.from_numpy(target))
    loss.backward()
    assert torch.equal(first.grad.movedim(1, -1)[ignored], torch.zeros(int(ignored.sum()), 4))
    changed = torch.from_numpy(logits).clone()
    changed.movedim(1, -1)[ignored] = 50.0 * torch.randn(int(ignored.sum()), 4)
    again = make(name, weights)(changed, torch.from_numpy(target))
    assert again.item() == pytest.approx(loss.item(), rel=1e-6)


@pytest.mark.parametrize("name", list(LOSSES))
def test_class_weights_change_the_loss(name):
    logits, target = random_batch(1, scale=2.0)
    scores, labels = torch.from_numpy(logits), torch.from_numpy(target)
    assert make(name, WEIGHTS)(scores, labels).item() != pytest.approx(
        make(name)(scores, labels).item(), rel=1e-4
    )
    # uniform weights are no weights
    assert make(name, [3.0] * 4)(scores, labels).item() == pytest.approx(
        make(name)(scores, labels).item(), rel=1e-5
    )


@pytest.mark.parametrize("name", list(LOSSES))
def test_all_ignored_batch_gives_zero_with_gradient(name):
    logits = torch.randn(1, 4, 3, 3, requires_grad=True)
    loss = make(name)(logits, torch.full((1, 3, 3), IGNORE_INDEX))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(logits.grad, torch.zeros_like(logits))


@pytest.mark.parametrize("name", list(LOSSES))
def test_float32_under_bf16_autocast(name):
    logits, target = random_batch(2, scale=2.0)
    layer = torch.nn.Conv2d(4, 4, 1)
    scores, labels = torch.from_numpy(logits), torch.from_numpy(target)
    with torch.autocast("cpu", torch.bfloat16):
        low = layer(scores)
        assert low.dtype == torch.bfloat16
        loss = make(name)(low, labels)
    assert loss.dtype == torch.float32
    reference = make(name)(low.detach().float(), labels)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)


@pytest.mark.parametrize("name", list(LOSSES))
def test_bad_weights_are_rejected(name):
    with pytest.raises(ValueError, match="non-negative"):
        make(name, [1.0, -1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="2 class weights for 4 classes"):
        make(name, [1.0, 1.0])(torch.randn(1, 4, 2, 2), torch.zeros(1, 2, 2).long())
