"""SegNet and SegNet-Basic: contract, index unpooling, parameter counts, pretrained encoder."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from semseg.models import create_model
from semseg.models.backbones import vgg16_bn
from semseg.models.segnet import max_unpool

from .architecture_contract import ArchitectureContract


class TestSegNet(ArchitectureContract):
    model_name = "segnet"
    model_kwargs: ClassVar = {"width_divisor": 16}
    input_size = (64, 96)  # pool5 at least 2x2: export would specialise a size-1 dimension
    routes_by_argmax = True


class TestSegNetTransposedDecoder(ArchitectureContract):
    model_name = "segnet"
    model_kwargs: ClassVar = {"width_divisor": 16, "upsampling": "transposed"}
    input_size = (64, 96)


class TestSegNetBasic(ArchitectureContract):
    model_name = "segnet_basic"
    input_size = (48, 64)
    routes_by_argmax = True


def test_unpooling_puts_each_value_back_at_its_argmax() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 9.0, 6.0], [7.0, 8.0, 5.0]]).view(1, 1, 3, 3)
    pooled, indices = F.max_pool2d(x, 2, 2, ceil_mode=True, return_indices=True)
    assert pooled.flatten().tolist() == [9.0, 6.0, 8.0, 5.0]  # windows clipped at the border
    restored = max_unpool(pooled * 10, indices, like=x)
    expected = torch.tensor([[0.0, 0.0, 0.0], [0.0, 90.0, 60.0], [0.0, 80.0, 50.0]])
    torch.testing.assert_close(restored[0, 0], expected)


def test_unpooling_matches_torch_max_unpool2d_on_odd_sizes() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 11, 14)
    pooled, indices = F.max_pool2d(x, 2, 2, ceil_mode=True, return_indices=True)
    reference = F.max_unpool2d(pooled, indices, 2, 2, output_size=(11, 14))
    torch.testing.assert_close(max_unpool(pooled, indices, like=x), reference)


def test_parameter_count_matches_the_paper() -> None:
    def conv_bn(c_in: int, c_out: int) -> int:  # 3x3 conv with bias, BN scale and shift
        return c_in * c_out * 9 + c_out + 2 * c_out

    encoder = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256)]
    encoder += [(256, 512)] + [(512, 512)] * 5
    decoder = [(512, 512)] * 5 + [(512, 256), (256, 256), (256, 256), (256, 128)]
    decoder += [(128, 128), (128, 64), (64, 64)]
    classes = 11  # CamVid
    expected = sum(conv_bn(*c) for c in encoder + decoder) + 64 * classes * 9 + classes
    assert expected == 29_449_355
    with torch.device("meta"):
        model = create_model("segnet", classes)
    assert sum(p.numel() for p in model.parameters()) == expected
    # Badrinarayanan et al. 2017 report 29.5M (rounded); the exact count is 0.17% below it.
    assert abs(expected - 29.5e6) / 29.5e6 < 0.002


def test_segnet_basic_parameter_count() -> None:
    classes = 11
    conv7 = 64 * 64 * 49 + 64
    expected = (3 * 64 * 49 + 64) + 3 * conv7 + 4 * conv7 + 8 * 2 * 64 + 64 * classes + classes
    model = create_model("segnet_basic", classes)
    assert sum(p.numel() for p in model.parameters()) == expected == 1_416_587
    assert not any(isinstance(m, nn.ReLU) for m in model.decoder.modules())


def test_decoder_places_pool5_values_at_the_encoder_argmax() -> None:
    torch.manual_seed(0)
    model = create_model("segnet", 2, width_divisor=16).eval()
    x = torch.randn(1, 3, 37, 53)
    seen = {}
    model.decoder[0].register_forward_pre_hook(lambda _, args: seen.setdefault("input", args[0]))
    with torch.no_grad():
        features = model.encoder(x)
        model(x)
    unpooled = seen["input"]
    assert unpooled.shape[-2:] == features.pools[3].shape[-2:]  # pool5's input size
    nonzero = unpooled.flatten(2) != 0
    positions = torch.zeros_like(nonzero).scatter(2, features.indices[4].flatten(2), True)
    assert torch.equal(nonzero, positions & nonzero)  # non-zeros only at argmax positions
    values = unpooled.flatten(2).gather(2, features.indices[4].flatten(2))
    torch.testing.assert_close(values, features.pools[4].flatten(2))


def test_vgg16_bn_weights_load_into_the_encoder(tmp_path: Path) -> None:
    state = vgg16_bn(width_divisor=16).state_dict()  # torchvision vgg16_bn names (test_vgg)
    state = {name: torch.randn_like(t.float()).to(t.dtype) for name, t in state.items()}
    torch.save(state, tmp_path / "vgg16_bn.pth")
    model = create_model(
        "segnet", 2, width_divisor=16, encoder_weights=str(tmp_path / "vgg16_bn.pth")
    )
    torch.testing.assert_close(
        model.encoder.features[41].running_var, state["features.41.running_var"]
    )


def test_interpolating_decoder_feeds_each_stage_the_cropped_x2_upsampling() -> None:
    torch.manual_seed(0)
    model = create_model("segnet", 3, width_divisor=16, upsampling="bilinear").eval()
    x = torch.randn(1, 3, 75, 101)  # odd at every pool: ceil-mode pools, crops at each stage
    features = model.encoder(x)
    seen = []
    model.decoder[0].register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    with torch.no_grad():
        model(x)
    expected = F.interpolate(features.pools[-1], scale_factor=2, mode="bilinear")
    torch.testing.assert_close(seen[0], expected[..., :5, :7])  # pool4 is 5x7


def test_transposed_decoder_adds_one_4x4_kernel_per_channel_pair_and_stage() -> None:
    indices = create_model("segnet", 11, width_divisor=8)
    transposed = create_model("segnet", 11, width_divisor=8, upsampling="transposed")
    bilinear = create_model("segnet", 11, width_divisor=8, upsampling="bilinear")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(bilinear) == count(indices)
    assert count(transposed) - count(indices) == 16 * sum(c * c for c in (64, 64, 32, 16, 8))


def test_unknown_segnet_upsampling_is_named() -> None:
    try:
        create_model("segnet", 11, width_divisor=16, upsampling="unpool")
    except ValueError as error:
        assert "'unpool'" in str(error) and "indices" in str(error)
    else:
        raise AssertionError("no error for an unknown upsampling")
