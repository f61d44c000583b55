"""LR-ASPP on MobileNetV3-Large: the architecture contract, the parameter count against
torchvision's published figure by hand, torchvision's state dict names, the head's gate and
branches, and encoder weights."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from semseg.models import create_model
from semseg.models.lraspp import TORCHVISION_PREFIXES
from semseg.models.pretrained import load_encoder_weights

from .architecture_contract import ArchitectureContract
from .test_mobilenet import random_state, torchvision_mobilenet_v3_large_shapes

TORCHVISION_LRASPP_PARAMETERS = 3_221_538
"""torchvision's ``lraspp_mobilenet_v3_large`` (21 classes), from its weights' metadata."""


class TestLRASPPMobileNetV3Large(ArchitectureContract):
    model_name = "lraspp_mobilenet_v3_large"
    model_kwargs = {"width_mult": 0.25, "inter_channels": 8}


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_count_is_torchvisions_by_hand() -> None:
    with torch.device("meta"):
        model = create_model("lraspp_mobilenet_v3_large", 21)
    encoder = 2_971_952  # torchvision's mobilenet_v3_large less its classifier
    cbr = 960 * 128 + 2 * 128  # 1x1 conv without bias, BatchNorm
    scale = 960 * 128  # 1x1 conv without bias
    low_classifier = 40 * 21 + 21
    high_classifier = 128 * 21 + 21
    assert encoder + cbr + scale + low_classifier + high_classifier == (
        TORCHVISION_LRASPP_PARAMETERS
    )
    assert _count(model.encoder) == encoder
    assert _count(model) == TORCHVISION_LRASPP_PARAMETERS


def torchvision_lraspp_shapes(num_classes: int) -> dict[str, tuple[int, ...]]:
    """Names and shapes of torchvision's ``lraspp_mobilenet_v3_large().state_dict()``: the
    backbone's ``features.{i}`` as ``backbone.{i}``, then the head."""
    shapes = {
        f"backbone.{name.removeprefix('features.')}": shape
        for name, shape in torchvision_mobilenet_v3_large_shapes().items()
    }
    shapes["classifier.cbr.0.weight"] = (128, 960, 1, 1)
    for field in ("weight", "bias", "running_mean", "running_var"):
        shapes[f"classifier.cbr.1.{field}"] = (128,)
    shapes["classifier.cbr.1.num_batches_tracked"] = ()
    shapes["classifier.scale.1.weight"] = (128, 960, 1, 1)
    shapes["classifier.low_classifier.weight"] = (num_classes, 40, 1, 1)
    shapes["classifier.low_classifier.bias"] = (num_classes,)
    shapes["classifier.high_classifier.weight"] = (num_classes, 128, 1, 1)
    shapes["classifier.high_classifier.bias"] = (num_classes,)
    return shapes


def test_torchvision_lraspp_state_dict_loads_with_nothing_skipped_or_missing() -> None:
    state = random_state(torchvision_lraspp_shapes(21))
    model = create_model("lraspp_mobilenet_v3_large", 21)
    report = load_encoder_weights(model, state, TORCHVISION_PREFIXES)
    assert report.skipped == []
    assert report.missing == []
    loaded = model.state_dict()
    for name in ("backbone.13.block.1.0.weight", "classifier.scale.1.weight"):
        ours = name.replace("backbone.", "encoder.features.")
        assert torch.equal(loaded[ours], state[name])


def test_encoder_weights_load_torchvision_mobilenet_v3_large(tmp_path: Path) -> None:
    state = random_state(torchvision_mobilenet_v3_large_shapes())
    path = tmp_path / "mobilenet_v3_large.pth"
    torch.save(state, path)
    model = create_model("lraspp_mobilenet_v3_large", 5, encoder_weights=path)
    loaded = model.encoder.state_dict()
    assert set(loaded) == set(state)
    for name, tensor in loaded.items():
        assert torch.equal(tensor, state[name]), name


def test_head_sums_the_low_level_logits_and_the_gated_high_level_logits() -> None:
    model = create_model("lraspp_mobilenet_v3_large", 3, width_mult=0.25, inter_channels=8)
    model.eval()
    head = model.classifier
    captured = {}
    model.encoder.features[4].register_forward_hook(lambda m, a, out: captured.update(low=out))
    model.encoder.features[16].register_forward_hook(lambda m, a, out: captured.update(high=out))
    head.register_forward_hook(lambda m, a, out: captured.update(logits=out))
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 96))
        low, high = captured["low"], captured["high"]
        assert low.shape[-2:] == (8, 12) and high.shape[-2:] == (4, 6)  # strides 8 and 16
        gate = torch.sigmoid(high.mean(dim=(2, 3)) @ head.scale[1].weight[:, :, 0, 0].T)
        gated = head.cbr(high) * gate[:, :, None, None]
        upsampled = F.interpolate(gated, size=(8, 12), mode="bilinear", align_corners=False)
        expected = F.conv2d(low, head.low_classifier.weight, head.low_classifier.bias)
        expected += F.conv2d(upsampled, head.high_classifier.weight, head.high_classifier.bias)
    torch.testing.assert_close(captured["logits"], expected)


@pytest.mark.parametrize(("output_stride", "high_size"), [(16, (4, 6)), (32, (2, 3))])
def test_output_stride_sets_the_high_level_map_and_leaves_the_low_level_at_8(
    output_stride: int, high_size: tuple[int, int]
) -> None:
    model = create_model(
        "lraspp_mobilenet_v3_large", 3, width_mult=0.25, output_stride=output_stride
    ).eval()
    assert model.output_stride == output_stride
    with torch.no_grad():
        low, high = model.encoder(torch.randn(1, 3, 64, 96))
    assert (low.shape[-2:], high.shape[-2:]) == ((8, 12), high_size)


@pytest.mark.parametrize(
    ("argument", "value"), [("output_stride", 8), ("inter_channels", 0), ("width_mult", 0.0)]
)
def test_bad_argument_is_named(argument: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"{argument}.*{re.escape(str(value))}"):
        create_model("lraspp_mobilenet_v3_large", 2, **{argument: value})
