"""Mobile U-Net: the architecture contract on both encoders and both merge kinds, hand counts
of its decoder, its output stride, and loading torchvision MobileNetV2 and MobileNetV3-Large
weights."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from semseg.models import create_model
from semseg.models.blocks import SeparableConv

from .architecture_contract import ArchitectureContract
from .test_mobilenet import (
    random_state,
    torchvision_mobilenet_v2_shapes,
    torchvision_mobilenet_v3_large_shapes,
)


class TestMobileUNet(ArchitectureContract):
    model_name = "mobile_unet"
    # At least 2x2 at stride 32: torch.export specialises dimensions of size 1.
    input_size = (64, 96)
    model_kwargs = {"width_mult": 0.25, "decoder_channels": (16, 8, 8)}


class TestMobileUNetToStride2(ArchitectureContract):
    model_name = "mobile_unet"
    input_size = (64, 96)
    model_kwargs = {"width_mult": 0.25, "decoder_channels": (16, 12, 8, 8)}


class TestMobileUNetOnMobileNetV2WithSeparableMerges(ArchitectureContract):
    model_name = "mobile_unet"
    input_size = (64, 96)
    model_kwargs = {
        "encoder": "mobilenet_v2",
        "width_mult": 0.25,
        "decoder_channels": (8, 8, 8),
        "merge_kernels": (3, 3, 3),
    }


def _separable(c_in: int, c_out: int) -> int:
    """3x3 depthwise conv + BN, 1x1 pointwise conv + BN, no biases."""
    return (9 * c_in + 2 * c_in) + (c_in * c_out + 2 * c_out)


def _pointwise(c_in: int, c_out: int) -> int:
    """1x1 conv + BN, no bias."""
    return c_in * c_out + 2 * c_out


def test_default_decoder_parameter_count_matches_hand_count() -> None:
    # MobileNetV3-Large's maps at strides 16, 8, 4: 112, 40, 24 channels; 960 at stride 32.
    model = create_model("mobile_unet", 11)
    assert model.encoder.channels == (16, 24, 40, 112, 960)
    top = 960 * 128 + 2 * 128  # 1x1 conv-BN
    gate = 960 * 128 + 128  # 1x1 conv with bias
    # Default merges: a separable 3x3 at stride 16, 1x1 convolutions at strides 8 and 4.
    merges = _separable(128 + 112, 128) + _pointwise(128 + 40, 64) + _pointwise(64 + 24, 32)
    classifier = 32 * 11 + 11
    encoder = sum(p.numel() for p in model.encoder.parameters())
    assert encoder == 2_971_952  # torchvision's mobilenet_v3_large less its classifier
    total = sum(p.numel() for p in model.parameters())
    assert total - encoder == top + gate + merges + classifier


def test_mobilenet_v2_decoder_parameter_count_matches_hand_count() -> None:
    # Width 0.5 encoder maps (Sandler et al.'s channels halved, rounded to multiples of 8):
    # 8, 16, 16, 48 channels at strides 2-16 and 160 at stride 32.
    model = create_model(
        "mobile_unet", 11, encoder="mobilenet_v2", width_mult=0.5,
        decoder_channels=(64, 48, 32), merge_kernels=(3, 3, 3),
    )  # fmt: skip
    assert model.encoder.channels == (8, 16, 16, 48, 160)
    top = 160 * 64 + 2 * 64
    gate = 160 * 64 + 64
    merges = _separable(64 + 48, 64) + _separable(64 + 16, 48) + _separable(48 + 16, 32)
    classifier = 32 * 11 + 11
    encoder = sum(p.numel() for p in model.encoder.parameters())
    total = sum(p.numel() for p in model.parameters())
    assert total - encoder == top + gate + merges + classifier


@pytest.mark.parametrize(
    ("decoder_channels", "stride"), [((8,), 16), ((8, 8, 8), 4), ((8,) * 4, 2)]
)
def test_classifier_runs_at_the_decoder_stride(decoder_channels: tuple, stride: int) -> None:
    model = create_model("mobile_unet", 3, width_mult=0.25, decoder_channels=decoder_channels)
    seen = []
    model.classifier.register_forward_hook(lambda m, args, out: seen.append(out.shape[-2:]))
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, 64, 96))
    assert model.output_stride == 32  # the coarsest feature stride: the encoder's
    assert seen == [(64 // stride, 96 // stride)]


def test_context_gate_scales_the_top_features_by_a_sigmoid_of_their_mean() -> None:
    model = create_model("mobile_unet", 3, width_mult=0.25, decoder_channels=(8,)).eval()
    captured = {}
    model.top.register_forward_hook(lambda m, args, out: captured.update(top_in=args[0], top=out))
    model.merge[0].register_forward_pre_hook(lambda m, args: captured.update(merged=args[0]))
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 96))
        top_in = captured["top_in"]
        mean = top_in.mean(dim=(2, 3))
        gate = torch.sigmoid(mean @ model.gate.weight[:, :, 0, 0].T + model.gate.bias)
        # The gated map, upsampled from 2x3 to 4x6, is the first part of the merge input.
        expected = torch.nn.functional.interpolate(
            captured["top"] * gate[:, :, None, None], size=(4, 6), mode="bilinear"
        )
    torch.testing.assert_close(captured["merged"][:, :8], expected)


def test_merge_kernel_1_is_a_pointwise_conv_on_the_upsampled_map_and_the_skip() -> None:
    model = create_model(
        "mobile_unet", 3, encoder="mobilenet_v2", width_mult=0.25, decoder_channels=(8, 8),
        merge_kernels=(3, 1),
    ).eval()  # fmt: skip
    merge = model.merge[1]
    assert isinstance(model.merge[0], SeparableConv)
    conv, norm = merge[0], merge[1]
    assert conv.kernel_size == (1, 1)
    generator = torch.Generator().manual_seed(0)
    norm.running_mean.copy_(torch.randn(8, generator=generator))
    norm.running_var.copy_(torch.rand(8, generator=generator) + 0.5)
    captured = {}
    merge.register_forward_hook(lambda m, args, out: captured.update(x=args[0], y=out))
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 96))
        x = captured["x"]  # 8 upsampled decoder channels and the 8-channel stride-8 skip
        assert x.shape == (1, 16, 8, 12)
        pre = torch.einsum("oc,nchw->nohw", conv.weight[:, :, 0, 0], x)
        expected = torch.relu(
            (pre - norm.running_mean[:, None, None])
            / torch.sqrt(norm.running_var[:, None, None] + norm.eps)
            * norm.weight[:, None, None]
            + norm.bias[:, None, None]
        )
    torch.testing.assert_close(captured["y"], expected)


def test_torchvision_mobilenet_v2_weights_fill_the_width_1_encoder(tmp_path: Path) -> None:
    state = random_state(torchvision_mobilenet_v2_shapes())
    path = tmp_path / "mobilenet_v2.pth"
    torch.save(state, path)
    model = create_model(
        "mobile_unet", 5, encoder="mobilenet_v2", width_mult=1.0, encoder_weights=str(path)
    )
    loaded = model.encoder.state_dict()
    assert set(loaded) <= set(state)
    for name, tensor in loaded.items():
        assert torch.equal(tensor, state[name]), name


def test_torchvision_mobilenet_v3_large_weights_fill_the_encoder(tmp_path: Path) -> None:
    state = random_state(torchvision_mobilenet_v3_large_shapes())
    path = tmp_path / "mobilenet_v3_large.pth"
    torch.save(state, path)
    model = create_model("mobile_unet", 5, encoder_weights=path)
    loaded = model.encoder.state_dict()
    assert set(loaded) == {name for name in state if name.startswith("features.")}
    for name, tensor in loaded.items():
        assert torch.equal(tensor, state[name]), name


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("encoder", "resnet18"),
        ("decoder_channels", ()),
        ("decoder_channels", (8, 8, 8, 8, 8)),
        ("decoder_channels", (8, 0)),
        ("merge_kernels", (3, 3)),
        ("merge_kernels", (3, 5, 3)),
    ],
)
def test_bad_argument_is_named(argument: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"{argument}.*{re.escape(str(value))}"):
        create_model("mobile_unet", 2, **{argument: value})
