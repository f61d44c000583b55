"""Weight EMA against a hand computation."""

import pytest
import torch
from torch import nn

from semseg.engine.ema import WeightEma


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))


def test_update_averages_parameters_and_copies_buffers():
    model = tiny_model()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    ema = WeightEma(model, decay=0.9, warmup=False)
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[1].running_mean.fill_(5.0)
    model[1].num_batches_tracked += 3
    ema.update(model)
    averaged = ema.model.state_dict()
    assert torch.allclose(averaged["0.weight"], 0.9 * start["0.weight"] + 0.1 * 1.0)
    assert torch.allclose(averaged["0.bias"], start["0.bias"])  # unchanged weight: unchanged
    assert torch.equal(averaged["1.running_mean"], torch.full((2,), 5.0))
    assert averaged["1.num_batches_tracked"].item() == 3
    with torch.no_grad():
        model[0].weight.fill_(3.0)
    ema.update(model)
    expected = 0.9 * (0.9 * start["0.weight"] + 0.1) + 0.1 * 3.0
    assert torch.allclose(ema.model.state_dict()["0.weight"], expected)
    assert ema.updates == 2
    assert not ema.model.training
    assert not any(p.requires_grad for p in ema.model.parameters())


def test_warmup_ramps_the_decay():
    ema = WeightEma(tiny_model(), decay=0.5)
    assert [ema.decay_at(t) for t in (0, 1, 8, 100)] == pytest.approx([0.1, 2 / 11, 0.5, 0.5])
    model = tiny_model()
    start = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.fill_(2.0)
    ema = WeightEma(tiny_model(), decay=0.999)
    ema.update(model)  # first factor 1/10
    assert torch.allclose(ema.model[0].weight, 0.1 * start + 0.9 * 2.0)


def test_state_round_trip_and_bad_decay():
    model = tiny_model()
    ema = WeightEma(model, 0.99)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    ema.update(model)
    restored = WeightEma(tiny_model(), 0.99)
    restored.load_state_dict(ema.state_dict())
    assert restored.updates == 1
    for key, value in ema.model.state_dict().items():
        assert torch.equal(restored.model.state_dict()[key], value)
    with pytest.raises(ValueError, match=r"train\.ema\.decay"):
        WeightEma(model, 1.0)
