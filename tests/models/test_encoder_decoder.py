"""Encoder-decoder without skips: the architecture contract per upsampling mode, and its
parameter count against a formula."""

from __future__ import annotations

import re
from typing import ClassVar

import pytest
import torch

from semseg.models import create_model

from .architecture_contract import ArchitectureContract

TINY = {"widths": (4, 8, 8), "convs_per_stage": 1}


class TestEncoderDecoderNearest(ArchitectureContract):
    model_name = "encoder_decoder"
    model_kwargs: ClassVar = {**TINY, "upsampling": "nearest"}


class TestEncoderDecoderBilinear(ArchitectureContract):
    model_name = "encoder_decoder"
    model_kwargs: ClassVar = {**TINY, "upsampling": "bilinear"}


class TestEncoderDecoderTransposed(ArchitectureContract):
    model_name = "encoder_decoder"
    model_kwargs: ClassVar = {**TINY, "upsampling": "transposed", "batch_norm": False}


def _conv(c_in: int, c_out: int, k: int, bias: bool) -> int:
    return c_in * c_out * k * k + (c_out if bias else 0)


def _conv_bn(c_in: int, c_out: int) -> int:
    """3x3 convolution without bias, then BatchNorm's scale and shift."""
    return _conv(c_in, c_out, 3, bias=False) + 2 * c_out


@pytest.mark.parametrize("upsampling", ["nearest", "bilinear", "transposed"])
def test_parameter_count_matches_hand_count(upsampling: str) -> None:
    # in 3, widths (4, 6), two convs per stage, 5 classes.
    encoder = _conv_bn(3, 4) + _conv_bn(4, 4) + _conv_bn(4, 6) + _conv_bn(6, 6)
    # Mirror: the last conv of each decoder stage steps down to the next shallower width.
    decoder = _conv_bn(6, 6) + _conv_bn(6, 4) + _conv_bn(4, 4) + _conv_bn(4, 4)
    if upsampling == "transposed":
        # One bias-free 4x4 channel-preserving transposed conv per decoder stage.
        decoder += _conv(6, 6, 4, bias=False) + _conv(4, 4, 4, bias=False)
    classifier = _conv(4, 5, 1, bias=True)
    model = create_model("encoder_decoder", 5, widths=(4, 6), upsampling=upsampling)
    assert sum(p.numel() for p in model.parameters()) == encoder + decoder + classifier


def test_without_batch_norm_convolutions_have_biases() -> None:
    model = create_model("encoder_decoder", 5, widths=(4,), batch_norm=False)
    expected = _conv(3, 4, 3, True) + _conv(4, 4, 3, True)  # encoder
    expected += _conv(4, 4, 3, True) + _conv(4, 4, 3, True)  # decoder
    expected += _conv(4, 5, 1, True)  # classifier
    assert sum(p.numel() for p in model.parameters()) == expected


def test_bottleneck_has_output_stride_resolution() -> None:
    model = create_model("encoder_decoder", 2, widths=(4, 8, 16))
    assert model.encoder(torch.zeros(1, 3, 32, 48)).shape == (1, 16, 4, 6)


@pytest.mark.parametrize(
    ("argument", "value"),
    [("widths", ()), ("widths", (4, 0)), ("convs_per_stage", 0), ("upsampling", "bicubic")],
)
def test_bad_argument_is_named(argument: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"{argument}.*{re.escape(str(value))}"):
        create_model("encoder_decoder", 2, **{argument: value})
