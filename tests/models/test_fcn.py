"""FCN-32s/16s/8s: contract, the paper's parameter count, bilinear and zero initialisation,
frozen upsampling, and fc6/fc7 loaded from dense ImageNet weights."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from semseg.models import create_model
from semseg.models.backbones import vgg16_bn

from .architecture_contract import ArchitectureContract
from .test_pretrained import torchvision_vgg16_state

TINY = {"width_divisor": 32}


class FCNContract(ArchitectureContract):
    input_size = (64, 96)  # pool5 at least 2x2: export would specialise a size-1 dimension

    def build(self) -> nn.Module:
        # The paper's zero-initialised score layers stop every gradient to the encoder and the
        # image at the start; random scores let the contract check the wiring behind them.
        model = super().build()
        with torch.no_grad():
            for layer in (model.score_fr, model.score_pool4, model.score_pool3):
                if layer is not None:
                    layer.weight.normal_(std=0.1)
        return model


class TestFCN32s(FCNContract):
    model_name = "fcn32s"
    model_kwargs: ClassVar = TINY


class TestFCN16s(FCNContract):
    model_name = "fcn16s"
    model_kwargs: ClassVar = TINY


class TestFCN8s(FCNContract):
    model_name = "fcn8s"
    model_kwargs: ClassVar = TINY


def _conv(c_in: int, c_out: int, k: int) -> int:
    return c_in * c_out * k * k + c_out


def test_fcn8s_has_the_papers_parameter_count() -> None:
    classes = 21
    vgg_convs = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256)]
    vgg_convs += [(256, 512)] + [(512, 512)] * 5
    expected = sum(_conv(c_in, c_out, 3) for c_in, c_out in vgg_convs)
    expected += _conv(512, 4096, 7) + _conv(4096, 4096, 1)  # fc6, fc7
    expected += _conv(4096, classes, 1) + _conv(512, classes, 1) + _conv(256, classes, 1)
    expected += classes * classes * (4 * 4 + 4 * 4 + 16 * 16)  # upscore2, _pool4, 8: no bias
    assert expected == 134_489_759
    with torch.device("meta"):
        model = create_model("fcn8s", classes)
    assert sum(p.numel() for p in model.parameters()) == expected
    # Long et al. 2015, Table 1: FCN-VGG16 has 134M parameters.
    assert round(expected / 1e6) == 134


def test_score_layers_start_at_zero_so_the_first_prediction_is_zero() -> None:
    model = create_model("fcn8s", 4, **TINY).eval()
    for layer in (model.score_fr, model.score_pool4, model.score_pool3):
        assert torch.count_nonzero(layer.weight) == 0
        assert torch.count_nonzero(layer.bias) == 0
    with torch.no_grad():
        assert torch.count_nonzero(model(torch.randn(1, 3, 40, 50))) == 0


def test_x2_upsampling_starts_as_hand_computed_bilinear_interpolation() -> None:
    model = create_model("fcn8s", 2, **TINY)
    taps = torch.tensor([0.25, 0.75, 0.75, 0.25])
    weight = model.upscore2.transposed.weight
    torch.testing.assert_close(weight[0, 0], torch.outer(taps, taps))
    torch.testing.assert_close(weight[1, 1], torch.outer(taps, taps))
    assert torch.count_nonzero(weight[0, 1]) == torch.count_nonzero(weight[1, 0]) == 0

    # Columns [0, 4] become [0, 1, 3, 3] (0.75/0.25 mixes, zero beyond the border); the
    # constant rows [1, 1] become [0.75, 1, 1, 0.75]. Channel 1 stays zero.
    x = torch.zeros(1, 2, 2, 2)
    x[0, 0] = torch.tensor([[0.0, 4.0], [0.0, 4.0]])
    with torch.no_grad():
        up = model.upscore2(x)
    expected = torch.outer(torch.tensor([0.75, 1.0, 1.0, 0.75]), torch.tensor([0.0, 1.0, 3.0, 3.0]))
    torch.testing.assert_close(up[0, 0], expected)
    assert torch.count_nonzero(up[0, 1]) == 0


@pytest.mark.parametrize(("name", "factor"), [("fcn32s", 32), ("fcn16s", 16), ("fcn8s", 8)])
def test_final_upsampling_equals_bilinear_interpolation_away_from_the_border(
    name: str, factor: int
) -> None:
    torch.manual_seed(0)
    model = create_model(name, 2, **TINY)
    x = torch.randn(1, 2, 5, 6)
    with torch.no_grad():
        up = model.upscore(x)
    reference = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    assert up.shape == reference.shape
    inner = slice(factor, -factor)  # the outermost input pixel's reach sees zero padding
    torch.testing.assert_close(up[..., inner, inner], reference[..., inner, inner])


@pytest.mark.parametrize("learn", [True, False])
def test_learn_upsampling_controls_whether_the_deconvolutions_train(learn: bool) -> None:
    model = create_model("fcn16s", 3, learn_upsampling=learn, **TINY)
    upsampling = [model.upscore2.transposed.weight, model.upscore.transposed.weight]
    assert all(w.requires_grad == learn for w in upsampling)
    upsampling_ids = {id(w) for w in upsampling}
    others = [p for p in model.parameters() if id(p) not in upsampling_ids]
    assert others and all(p.requires_grad for p in others)


def test_dense_fc6_loads_as_a_7x7_convolution_computing_the_same_layer(tmp_path: Path) -> None:
    torch.manual_seed(0)
    state = torchvision_vgg16_state(width_divisor=32)
    torch.save(state, tmp_path / "vgg16.pth")
    model = create_model("fcn8s", 3, encoder_weights=str(tmp_path / "vgg16.pth"), **TINY)

    fc6 = model.encoder.classifier[0]
    pool5 = torch.randn(2, 16, 7, 7)  # a 7x7 pool5 map, as VGG has for a 224x224 image
    with torch.no_grad():
        centre = fc6(pool5)[:, :, 3, 3]  # padding 3: the centre output sees the whole map
    dense = F.linear(pool5.flatten(1), state["classifier.0.weight"], state["classifier.0.bias"])
    torch.testing.assert_close(centre, dense, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model.encoder.features[0].weight, state["features.0.weight"])


def test_vgg16_bn_backbone_adds_batchnorm_to_the_encoder_only(tmp_path: Path) -> None:
    plain = create_model("fcn8s", 3, **TINY)
    with_bn = create_model("fcn8s", 3, backbone="vgg16_bn", **TINY)
    norms = [m for m in with_bn.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 13  # one per VGG16 convolution; fc6 and fc7 have none
    assert not any(isinstance(m, nn.BatchNorm2d) for m in with_bn.encoder.classifier)
    extra = sum(p.numel() for p in with_bn.parameters()) - sum(
        p.numel() for p in plain.parameters()
    )
    assert extra == 2 * sum(m.num_features for m in norms)

    # torchvision's vgg16_bn names: the BatchNorm statistics load with the convolutions.
    state = vgg16_bn(with_fc=True, width_divisor=32).state_dict()
    for name in ("classifier.0.weight", "classifier.3.weight"):
        state[name] = torch.randn(state[name].shape[0], state[name][0].numel())
    state["features.1.running_mean"] = torch.arange(2.0)
    torch.save(state, tmp_path / "vgg16_bn.pth")
    loaded = create_model(
        "fcn8s", 3, backbone="vgg16_bn", encoder_weights=str(tmp_path / "vgg16_bn.pth"), **TINY
    )
    torch.testing.assert_close(loaded.encoder.features[1].running_mean, torch.arange(2.0))


def test_unknown_backbone_is_an_error_naming_it_and_the_choices() -> None:
    with pytest.raises(ValueError, match=r"'vgg19'.*vgg16, vgg16_bn"):
        create_model("fcn32s", 3, backbone="vgg19", **TINY)
