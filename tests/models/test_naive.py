"""The naive baseline: contract, coarse predictions, parameter count, pretrained encoder."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest
import torch

from semseg.models import create_model

from .architecture_contract import ArchitectureContract
from .test_pretrained import torchvision_vgg16_state


class TestNaiveBilinear(ArchitectureContract):
    model_name = "naive"
    model_kwargs: ClassVar = {"width_divisor": 16}
    input_size = (64, 96)  # pool5 at least 2x2: export would specialise a size-1 dimension


class TestNaiveNearestStride16BatchNorm(ArchitectureContract):
    model_name = "naive"
    model_kwargs: ClassVar = {
        "width_divisor": 16,
        "backbone": "vgg16_bn",
        "output_stride": 16,
        "upsampling": "nearest",
    }
    input_size = (64, 96)


@pytest.mark.parametrize("stride", [32, 16])
def test_nearest_upsampling_predicts_one_label_per_stride_block(stride: int) -> None:
    torch.manual_seed(0)
    model = create_model(
        "naive", 3, width_divisor=16, output_stride=stride, upsampling="nearest"
    ).eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 64, 64))
    blocks = logits.unfold(2, stride, stride).unfold(3, stride, stride)  # (1, 3, bh, bw, s, s)
    flat = blocks.flatten(-2)
    assert torch.equal(flat, flat[..., :1].expand_as(flat))  # constant inside each block
    assert not torch.equal(logits[..., 0, 0], logits[..., 0, stride])  # blocks differ


def test_parameter_count_is_vgg16_convolutions_plus_a_1x1_classifier() -> None:
    with torch.device("meta"):
        model = create_model("naive", 21)
    vgg16_convolutions = 14_714_688  # 13 3x3 convolutions with biases, 64..512 channels
    expected = vgg16_convolutions + 512 * 21 + 21
    assert sum(p.numel() for p in model.parameters()) == expected


def test_encoder_weights_are_loaded(tmp_path: Path) -> None:
    state = torchvision_vgg16_state(width_divisor=16)
    torch.save(state, tmp_path / "vgg16.pth")
    model = create_model("naive", 3, width_divisor=16, encoder_weights=str(tmp_path / "vgg16.pth"))
    torch.testing.assert_close(model.encoder.features[0].weight, state["features.0.weight"])


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [({"backbone": "resnet50"}, "resnet50"), ({"upsampling": "transposed"}, "transposed")],
)
def test_unknown_backbone_or_upsampling_is_rejected(kwargs: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        create_model("naive", 3, **kwargs)
