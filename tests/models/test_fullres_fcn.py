"""The full-resolution FCN: contract, every map at input resolution, receptive field of the
dilations, parameter count by hand, bad arguments."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch
from torch import nn

from semseg.models import create_model

from .architecture_contract import ODD_SIZE, ArchitectureContract


class TestFullResolutionFCN(ArchitectureContract):
    model_name = "fullres_fcn"
    model_kwargs: ClassVar = {"width": 4, "depth": 3}


class TestFullResolutionFCNDilated(ArchitectureContract):
    model_name = "fullres_fcn"
    model_kwargs: ClassVar = {"width": 4, "depth": 3, "dilations": [1, 4, 2]}


def test_every_feature_map_keeps_the_input_resolution() -> None:
    model = create_model("fullres_fcn", 3, width=4, depth=4, dilations=[1, 2, 4, 1]).eval()
    sizes = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            module.register_forward_hook(lambda _m, _i, out: sizes.append(out.shape[-2:]))
    with torch.no_grad():
        model(torch.randn(1, 3, *ODD_SIZE))
    assert sizes == [ODD_SIZE] * 5
    assert not any(isinstance(m, nn.MaxPool2d | nn.AvgPool2d) for m in model.modules())


@pytest.mark.parametrize(("dilations", "side"), [([1, 1, 1], 7), ([1, 4, 2], 15)])
def test_an_output_pixel_sees_the_receptive_field_of_its_dilations(
    dilations: list[int], side: int
) -> None:
    # 1 + 2 * sum(dilations) pixels, centred on the output pixel.
    torch.manual_seed(0)
    model = create_model("fullres_fcn", 2, width=4, depth=3, dilations=dilations).eval()
    assert model.receptive_field == side
    x = torch.randn(1, 3, 41, 41)

    def score(image: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(image)[0, :, 20, 20]

    half = side // 2
    inside = torch.zeros(41, 41, dtype=torch.bool)
    inside[20 - half : 21 + half, 20 - half : 21 + half] = True
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    assert torch.equal(score(x + noise * ~inside), score(x))
    for row, column in [(20 - half, 20), (20 + half, 20), (20, 20 - half), (20, 20 + half)]:
        changed = x.clone()
        changed[0, :, row, column] += 5.0
        assert not torch.allclose(score(changed), score(x)), (row, column)


def test_default_parameter_count_matches_hand_count() -> None:
    # 13 layers of 16 channels: 3x3 convolutions without bias, BatchNorm's scale and shift.
    first = 3 * 16 * 9 + 2 * 16
    others = 12 * (16 * 16 * 9 + 2 * 16)
    classifier = 16 * 11 + 11
    assert first + others == 28_496
    model = create_model("fullres_fcn", 11)
    assert sum(p.numel() for p in model.parameters()) == first + others + classifier
    assert model.output_stride == 1
    assert model.receptive_field == 27


def test_dilations_change_no_parameter_count() -> None:
    plain = create_model("fullres_fcn", 5, width=6, depth=4)
    dilated = create_model("fullres_fcn", 5, width=6, depth=4, dilations=[1, 2, 4, 8])
    expected = (3 * 6 * 9 + 12) + 3 * (6 * 6 * 9 + 12) + (6 * 5 + 5)
    assert sum(p.numel() for p in plain.parameters()) == expected
    assert sum(p.numel() for p in dilated.parameters()) == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"depth": 3, "dilations": [1, 2]}, "2 entries for depth 3"),
        ({"depth": 2, "dilations": [1, 0]}, "dilations"),
        ({"width": 0}, "width"),
        ({"depth": 0}, "dilations"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_model("fullres_fcn", 3, **kwargs)
