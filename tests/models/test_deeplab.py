"""DeepLabV3 / DeepLabV3+: the architecture contract, parameter counts against torchvision and
by hand, ASPP rates and image pooling, the decoder's stride, and backbone weights."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from semseg.models import create_model

from .architecture_contract import ArchitectureContract
from .test_mobilenet import (
    random_state,
    torchvision_mobilenet_v2_shapes,
    torchvision_mobilenet_v3_large_shapes,
)


class TestDeepLabV3PlusResNet18(ArchitectureContract):
    model_name = "deeplabv3plus"
    model_kwargs = {"backbone": "resnet18", "width_divisor": 16}


class TestDeepLabV3PlusMobileNetV2OutputStride8(ArchitectureContract):
    model_name = "deeplabv3plus"
    model_kwargs = {"backbone": "mobilenet_v2", "output_stride": 8, "width_divisor": 8}


class TestDeepLabV3PlusMobileNetV3Large(ArchitectureContract):
    model_name = "deeplabv3plus"
    model_kwargs = {"backbone": "mobilenet_v3_large", "width_divisor": 8}


class TestDeepLabV3ResNet50(ArchitectureContract):
    model_name = "deeplabv3"
    model_kwargs = {"backbone": "resnet50", "width_divisor": 16}


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_deeplabv3_resnet50_is_torchvisions_without_its_extras() -> None:
    # torchvision's deeplabv3_resnet50 (21 classes) has 42,004,074 parameters, including an
    # auxiliary FCN head on layer3 (3x3 conv 1024->256, BN, 1x1 conv 256->21 with bias), a
    # 3x3 conv-BN 256->256 after ASPP, and a BatchNorm where our image pooling has a bias.
    auxiliary = 1024 * 256 * 9 + 2 * 256 + 256 * 21 + 21
    head_conv = 256 * 256 * 9 + 2 * 256
    pooling_norm_for_bias = 2 * 256 - 256
    with torch.device("meta"):
        model = create_model("deeplabv3", 21)
    assert _count(model) == 42_004_074 - auxiliary - head_conv - pooling_norm_for_bias


def _separable(c_in: int, c_out: int) -> int:
    """3x3 depthwise conv + BN, 1x1 pointwise conv + BN, no biases."""
    return 9 * c_in + 2 * c_in + c_in * c_out + 2 * c_out


def test_deeplabv3plus_head_parameter_count_matches_hand_count() -> None:
    # ResNet-18 / 16: layer1 has 4 channels, layer4 32; ASPP 256 / 16 = 16, low level 48 / 16.
    model = create_model("deeplabv3plus", 3, backbone="resnet18", width_divisor=16)
    aspp = (
        (32 * 16 + 2 * 16)  # 1x1 conv-BN
        + 3 * _separable(32, 16)  # atrous branches
        + (32 * 16 + 16)  # image pooling: 1x1 conv with bias
        + (5 * 16 * 16 + 2 * 16)  # projection conv-BN
    )
    decoder = (4 * 3 + 2 * 3) + _separable(16 + 3, 16) + _separable(16, 16) + (16 * 3 + 3)
    assert _count(model) - _count(model.encoder) == aspp + decoder


def test_deeplabv3plus_mobilenet_v3_large_head_parameter_count_matches_hand_count() -> None:
    # Full size: the 960-channel stride-16 map feeds ASPP, the 24-channel stride-4 map
    # (features.3) the decoder.
    with torch.device("meta"):
        model = create_model("deeplabv3plus", 21, backbone="mobilenet_v3_large")
    aspp = (
        (960 * 256 + 2 * 256)
        + 3 * _separable(960, 256)
        + (960 * 256 + 256)
        + (5 * 256 * 256 + 2 * 256)
    )
    decoder = (24 * 48 + 2 * 48) + _separable(256 + 48, 256) + _separable(256, 256)
    classifier = 256 * 21 + 21
    assert (
        _count(model.encoder) == 2_971_952
    )  # torchvision's mobilenet_v3_large less its classifier
    assert _count(model) - _count(model.encoder) == aspp + decoder + classifier
    assert _count(model) == 4_720_117


def test_full_size_decoder_reduces_the_stride_4_map_to_48_channels() -> None:
    with torch.device("meta"):
        resnet = create_model("deeplabv3plus", 21)
        mobilenet = create_model("deeplabv3plus", 21, backbone="mobilenet_v2")
        mobilenet_v3 = create_model("deeplabv3plus", 21, backbone="mobilenet_v3_large")
    assert (resnet.reduce[0].in_channels, resnet.reduce[0].out_channels) == (256, 48)
    assert (mobilenet.reduce[0].in_channels, mobilenet.reduce[0].out_channels) == (24, 48)
    assert (mobilenet_v3.reduce[0].in_channels, mobilenet_v3.reduce[0].out_channels) == (24, 48)
    assert resnet.aspp.branches[0][0].in_channels == 2048
    assert mobilenet.aspp.branches[0][0].in_channels == 320
    assert mobilenet_v3.aspp.branches[0][0].in_channels == 960


@pytest.mark.parametrize("output_stride", [16, 8])
def test_mobilenet_v3_large_decoder_reads_stride_4_and_aspp_the_output_stride(
    output_stride: int,
) -> None:
    model = create_model(
        "deeplabv3plus", 3, backbone="mobilenet_v3_large", output_stride=output_stride,
        width_divisor=8,
    ).eval()  # fmt: skip
    seen = {}
    model.reduce.register_forward_hook(lambda m, args, out: seen.update(low=args[0].shape[-2:]))
    model.aspp.register_forward_hook(lambda m, args, out: seen.update(high=args[0].shape[-2:]))
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 96))
    assert seen == {"low": (16, 24), "high": (64 // output_stride, 96 // output_stride)}


@pytest.mark.parametrize(
    ("output_stride", "rates", "expected"),
    [(16, (6, 12, 18), [6, 12, 18]), (8, (6, 12, 18), [12, 24, 36]), (16, (1, 2, 3), [1, 2, 3])],
)
@pytest.mark.parametrize("separable", [True, False])
def test_aspp_dilations(
    output_stride: int, rates: tuple, expected: list[int], separable: bool
) -> None:
    with torch.device("meta"):
        model = create_model(
            "deeplabv3plus", 3, backbone="resnet18", output_stride=output_stride,
            aspp_rates=rates, separable=separable,
        )  # fmt: skip
    convs = [branch[0] if separable else branch for branch in model.aspp.branches[1:]]
    assert [c[0].dilation[0] for c in convs] == expected
    assert [c[0].padding[0] for c in convs] == expected
    assert [c[0].groups > 1 for c in convs] == [separable] * 3


def test_image_pooling_branch_is_a_relu_of_the_mean_spread_over_the_map() -> None:
    model = create_model("deeplabv3plus", 3, backbone="resnet18", width_divisor=16).eval()
    captured = {}
    model.aspp.register_forward_pre_hook(lambda m, args: captured.update(x=args[0]))
    model.aspp.project.register_forward_pre_hook(lambda m, args: captured.update(cat=args[0]))
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 96))
    conv = model.aspp.pooling[0]
    mean = captured["x"].mean(dim=(2, 3))
    pooled = (mean @ conv.weight[:, :, 0, 0].T + conv.bias).clamp(min=0)
    branch = captured["cat"][:, -16:]
    assert branch.shape[-2:] == (4, 6)
    torch.testing.assert_close(branch, pooled[:, :, None, None].expand_as(branch))


@pytest.mark.parametrize(("name", "stride"), [("deeplabv3plus", 4), ("deeplabv3", 16)])
def test_classifier_runs_at_the_decoders_stride(name: str, stride: int) -> None:
    model = create_model(name, 3, backbone="resnet18", width_divisor=16).eval()
    seen = []
    model.classifier.register_forward_hook(lambda m, args, out: seen.append(out.shape[-2:]))
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 96))
    assert seen == [(64 // stride, 96 // stride)]


def test_encoder_weights_load_torchvision_mobilenet_v3_large(tmp_path: Path) -> None:
    state = random_state(torchvision_mobilenet_v3_large_shapes())
    path = tmp_path / "mobilenet_v3_large.pth"
    torch.save(state, path)
    model = create_model(
        "deeplabv3plus", 3, backbone="mobilenet_v3_large", encoder_weights=str(path)
    )
    loaded = model.encoder.state_dict()
    assert set(loaded) == set(state)
    for name, tensor in loaded.items():
        assert torch.equal(tensor, state[name]), name


def test_encoder_weights_load_torchvision_mobilenet_v2(tmp_path: Path) -> None:
    state = random_state(torchvision_mobilenet_v2_shapes())
    path = tmp_path / "mobilenet_v2.pth"
    torch.save(state, path)
    model = create_model("deeplabv3plus", 3, backbone="mobilenet_v2", encoder_weights=str(path))
    loaded = model.encoder.state_dict()
    # Everything but the classifier and features.18, the 1x1 convolution DeepLab leaves out.
    assert set(loaded) == {
        n for n in state if n.startswith("features.") and not n.startswith("features.18.")
    }
    for name, tensor in loaded.items():
        assert torch.equal(tensor, state[name]), name


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("backbone", "vgg16"),
        ("output_stride", 32),
        ("aspp_rates", (6, 12)),
        ("width_divisor", 3),
    ],
)
def test_bad_argument_is_named(argument: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"{argument}.*{re.escape(str(value))}"):
        create_model("deeplabv3plus", 2, **{argument: value})
