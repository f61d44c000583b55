"""U-Net: the architecture contract, and its parameter count against a formula."""

from __future__ import annotations

import re
from typing import ClassVar

import pytest
import torch

from semseg.models import create_model

from .architecture_contract import ArchitectureContract


class TestUNetTransposed(ArchitectureContract):
    model_name = "unet"
    model_kwargs: ClassVar = {"base_channels": 4, "depth": 2}


class TestUNetBilinearSingleChannel(ArchitectureContract):
    model_name = "unet"
    model_kwargs: ClassVar = {
        "in_channels": 1,
        "base_channels": 4,
        "depth": 3,
        "upsampling": "bilinear",
    }


def _conv(c_in: int, c_out: int, k: int, bias: bool) -> int:
    return c_in * c_out * k * k + (c_out if bias else 0)


def _conv_bn(c_in: int, c_out: int) -> int:
    """3x3 convolution without bias, then BatchNorm's scale and shift."""
    return _conv(c_in, c_out, 3, bias=False) + 2 * c_out


@pytest.mark.parametrize(
    ("upsampling", "up_kernel"), [("transposed", 2), ("nearest", 1), ("bilinear", 1)]
)
def test_parameter_count_matches_hand_count(upsampling: str, up_kernel: int) -> None:
    # in 2, base 3, depth 2, 5 classes: levels of 3, 6, 12 channels.
    encoder = _conv_bn(2, 3) + _conv_bn(3, 3) + _conv_bn(3, 6) + _conv_bn(6, 6)
    encoder += _conv_bn(6, 12) + _conv_bn(12, 12)
    # Up-convolutions halve the channels: a 2x2 transposed conv or a 1x1 conv, both with bias.
    up = _conv(12, 6, up_kernel, bias=True) + _conv(6, 3, up_kernel, bias=True)
    merge = _conv_bn(12, 6) + _conv_bn(6, 6) + _conv_bn(6, 3) + _conv_bn(3, 3)
    classifier = _conv(3, 5, 1, bias=True)
    model = create_model("unet", 5, in_channels=2, base_channels=3, depth=2, upsampling=upsampling)
    assert sum(p.numel() for p in model.parameters()) == encoder + up + merge + classifier


def test_paper_configuration_has_31_million_parameters() -> None:
    # Ronneberger et al.'s network (1 input channel, 2 classes, no BatchNorm), counted by hand
    # level by level: contracting path 18,842,048, up-convolutions 2,786,240, expanding path
    # 9,402,240, classifier 130.
    model = create_model("unet", 2, in_channels=1, batch_norm=False)
    assert sum(p.numel() for p in model.parameters()) == 31_030_658


def test_encoder_returns_one_feature_map_per_level() -> None:
    model = create_model("unet", 2, base_channels=4, depth=3)
    features = model.encoder(torch.zeros(1, 3, 16, 24))
    assert [tuple(f.shape) for f in features] == [
        (1, 4, 16, 24),
        (1, 8, 8, 12),
        (1, 16, 4, 6),
        (1, 32, 2, 3),
    ]


@pytest.mark.parametrize(
    ("argument", "value"),
    [("base_channels", 0), ("depth", 0), ("upsampling", "bicubic")],
)
def test_bad_argument_is_named(argument: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"{argument}.*{re.escape(str(value))}"):
        create_model("unet", 2, **{argument: value})
