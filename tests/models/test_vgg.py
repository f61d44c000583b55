"""VGG16 / VGG16-BN feature extractors: torchvision names, strides, pooling indices."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from semseg.models.backbones import vgg16, vgg16_bn

# torchvision's features.{i} indices of the 13 convolutions (read off torchvision's
# vgg16 / vgg16_bn printouts: conv, ReLU [, BN] per layer, one max pool per stage).
TORCHVISION_VGG16_CONVS = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
TORCHVISION_VGG16_BN_CONVS = [0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40]
CONV_SHAPES = [
    (64, 3), (64, 64),
    (128, 64), (128, 128),
    (256, 128), (256, 256), (256, 256),
    (512, 256), (512, 512), (512, 512),
    (512, 512), (512, 512), (512, 512),
]  # fmt: skip


def test_vgg16_state_dict_matches_torchvision_names_and_shapes() -> None:
    with torch.device("meta"):
        state = vgg16(with_fc=True).state_dict()
    expected = {}
    for index, (out_ch, in_ch) in zip(TORCHVISION_VGG16_CONVS, CONV_SHAPES, strict=True):
        expected[f"features.{index}.weight"] = (out_ch, in_ch, 3, 3)
        expected[f"features.{index}.bias"] = (out_ch,)
    expected |= {
        "classifier.0.weight": (4096, 512, 7, 7),
        "classifier.0.bias": (4096,),
        "classifier.3.weight": (4096, 4096, 1, 1),
        "classifier.3.bias": (4096,),
    }
    assert {name: tuple(t.shape) for name, t in state.items()} == expected


def test_vgg16_bn_state_dict_matches_torchvision_names() -> None:
    with torch.device("meta"):
        state = vgg16_bn().state_dict()
    expected = set()
    for index in TORCHVISION_VGG16_BN_CONVS:
        expected |= {f"features.{index}.weight", f"features.{index}.bias"}
        bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
        expected |= {f"features.{index + 1}.{field}" for field in bn}
    assert set(state) == expected


def test_pools_have_strides_2_to_32_and_fc7_keeps_pool5_size() -> None:
    encoder = vgg16(width_divisor=16, with_fc=True).eval()
    features = encoder(torch.randn(2, 3, 64, 96))
    sizes = [tuple(p.shape) for p in features.pools]
    assert sizes == [(2, 4, 32, 48), (2, 8, 16, 24), (2, 16, 8, 12), (2, 32, 4, 6), (2, 32, 2, 3)]
    assert features.fc7 is not None
    assert features.fc7.shape == (2, 256, 2, 3)
    assert features.indices == []


def test_output_stride_16_keeps_pool5_at_pool4_size() -> None:
    features = vgg16(width_divisor=16, output_stride=16)(torch.randn(1, 3, 64, 96))
    assert features.pools[4].shape[-2:] == features.pools[3].shape[-2:] == (4, 6)


@pytest.mark.parametrize(
    ("ceil_mode", "expected"), [(False, [48, 24, 12, 6, 3]), (True, [49, 25, 13, 7, 4])]
)
def test_pool_rounding_on_odd_sizes(ceil_mode: bool, expected: list[int]) -> None:
    features = vgg16(width_divisor=32, ceil_mode=ceil_mode)(torch.randn(1, 3, 97, 97))
    assert [p.shape[-1] for p in features.pools] == expected


def test_pooling_indices_point_at_the_maxima() -> None:
    torch.manual_seed(0)
    encoder = vgg16_bn(width_divisor=16, ceil_mode=True, return_indices=True).eval()
    x = torch.randn(1, 3, 37, 45)
    features = encoder(x)
    assert len(features.indices) == 5
    # pool1's input is the output of the first stage's layers (conv-BN-ReLU twice).
    before_pool1 = encoder.features[:6](x)
    gathered = before_pool1.flatten(2).gather(2, features.indices[0].flatten(2))
    torch.testing.assert_close(gathered, features.pools[0].flatten(2))
    reference = F.max_pool2d(before_pool1, 2, 2, ceil_mode=True)
    torch.testing.assert_close(features.pools[0], reference)


@pytest.mark.parametrize(
    "kwargs", [{"width_divisor": 3}, {"width_divisor": 0}, {"output_stride": 8}]
)
def test_invalid_configuration_is_rejected(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        vgg16(**kwargs)
