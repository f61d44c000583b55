"""ResNet-18/34/50 backbones: torchvision names and sizes, strides, dilation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from semseg.models.backbones.resnet import ResNet, resnet18, resnet34, resnet50
from semseg.models.pretrained import load_pretrained_encoder

from .test_mobilenet import Shapes, random_state

# torchvision's published parameter counts, fc classifier included.
PUBLISHED = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032}
BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3)}
BUILD = {18: resnet18, 34: resnet34, 50: resnet50}


def _batch_norm(shapes: Shapes, prefix: str, channels: int) -> None:
    for field in ("weight", "bias", "running_mean", "running_var"):
        shapes[f"{prefix}.{field}"] = (channels,)
    shapes[f"{prefix}.num_batches_tracked"] = ()


def torchvision_resnet_shapes(depth: int) -> Shapes:
    """Names and shapes of torchvision's ``resnet{depth}().state_dict()`` (timm's are the
    same), from He et al.'s Table 1: basic blocks 3x3-3x3, bottlenecks 1x1-3x3-1x1 x4."""
    expansion = 4 if depth == 50 else 1
    shapes: Shapes = {"conv1.weight": (64, 3, 7, 7)}
    _batch_norm(shapes, "bn1", 64)
    c_in = 64
    for stage, blocks in enumerate(BLOCKS[depth]):
        width = 64 * 2**stage
        for block in range(blocks):
            prefix = f"layer{stage + 1}.{block}"
            if expansion == 1:
                shapes[f"{prefix}.conv1.weight"] = (width, c_in, 3, 3)
                shapes[f"{prefix}.conv2.weight"] = (width, width, 3, 3)
            else:
                shapes[f"{prefix}.conv1.weight"] = (width, c_in, 1, 1)
                shapes[f"{prefix}.conv2.weight"] = (width, width, 3, 3)
                shapes[f"{prefix}.conv3.weight"] = (width * 4, width, 1, 1)
                _batch_norm(shapes, f"{prefix}.bn3", width * 4)
            _batch_norm(shapes, f"{prefix}.bn1", width)
            _batch_norm(shapes, f"{prefix}.bn2", width)
            if c_in != width * expansion or (block == 0 and stage > 0):
                shapes[f"{prefix}.downsample.0.weight"] = (width * expansion, c_in, 1, 1)
                _batch_norm(shapes, f"{prefix}.downsample.1", width * expansion)
            c_in = width * expansion
    shapes["fc.weight"] = (1000, c_in)
    shapes["fc.bias"] = (1000,)
    return shapes


@pytest.mark.parametrize("depth", [18, 34, 50])
def test_state_dict_has_torchvision_names_and_shapes(depth: int) -> None:
    with torch.device("meta"):
        encoder = BUILD[depth]()
    expected = torchvision_resnet_shapes(depth)
    del expected["fc.weight"], expected["fc.bias"]
    assert {name: tuple(t.shape) for name, t in encoder.state_dict().items()} == expected


@pytest.mark.parametrize("depth", [18, 34, 50])
def test_parameter_count_is_torchvisions_less_the_fc_layer(depth: int) -> None:
    fc = (512 if depth < 50 else 2048) * 1000 + 1000
    with torch.device("meta"):
        encoder = BUILD[depth]()
    assert sum(p.numel() for p in encoder.parameters()) == PUBLISHED[depth] - fc


def test_torchvision_state_dict_file_loads_with_nothing_missing(tmp_path: Path) -> None:
    state = random_state(torchvision_resnet_shapes(18))
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    encoder = resnet18(output_stride=8)  # dilation changes no parameter
    report = load_pretrained_encoder(encoder, path)
    assert report.missing == []
    assert {name for name, _ in report.skipped} == {"fc.weight", "fc.bias"}
    loaded = encoder.state_dict()
    for name in ("conv1.weight", "layer3.0.downsample.1.running_mean", "layer4.1.conv2.weight"):
        assert torch.equal(loaded[name], state[name])


@pytest.mark.parametrize(
    ("output_stride", "sizes"),
    [
        (32, [(49, 66), (25, 33), (13, 17), (7, 9), (4, 5)]),
        (16, [(49, 66), (25, 33), (13, 17), (7, 9), (7, 9)]),
        (8, [(49, 66), (25, 33), (13, 17), (13, 17), (13, 17)]),
    ],
)
@pytest.mark.parametrize(
    ("depth", "channels"), [(18, (8, 8, 16, 32, 64)), (50, (8, 32, 64, 128, 256))]
)
def test_feature_maps_and_channels(
    output_stride: int, sizes: list[tuple[int, int]], depth: int, channels: tuple[int, ...]
) -> None:
    encoder = BUILD[depth](output_stride=output_stride, width_divisor=8).eval()
    with torch.no_grad():
        features = encoder(torch.randn(1, 3, 97, 131))
    assert [tuple(f.shape[-2:]) for f in features] == sizes
    assert tuple(f.shape[1] for f in features) == encoder.channels == channels


def test_output_stride_8_dilates_like_torchvision_replace_stride_with_dilation() -> None:
    # replace_stride_with_dilation=[False, True, True]: the first block of layer3 keeps
    # dilation 1 (stride 1), later ones 2; layer4's first block 2, later ones 4.
    with torch.device("meta"):
        encoder = resnet50(output_stride=8)
    conv2 = {
        name: (m.stride[0], m.dilation[0], m.padding[0])
        for name, m in encoder.named_modules()
        if name.endswith("conv2")
    }
    assert conv2["layer2.0.conv2"] == (2, 1, 1)
    assert conv2["layer3.0.conv2"] == (1, 1, 1)
    assert all(conv2[f"layer3.{b}.conv2"] == (1, 2, 2) for b in range(1, 6))
    assert conv2["layer4.0.conv2"] == (1, 2, 2)
    assert conv2["layer4.1.conv2"] == conv2["layer4.2.conv2"] == (1, 4, 4)
    assert encoder.layer3[0].downsample[0].stride == (1, 1)


@pytest.mark.parametrize("depth", [18, 50])
def test_dilation_computes_the_strided_network_on_a_finer_grid(depth: int) -> None:
    # As for MobileNetV2: with the same weights the output-stride-8 network's maps,
    # subsampled, are the output-stride-32 network's.
    torch.manual_seed(0)
    strided = BUILD[depth](width_divisor=16).eval()
    dilated = BUILD[depth](output_stride=8, width_divisor=16).eval()
    dilated.load_state_dict(strided.state_dict())
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        coarse, fine = strided(x), dilated(x)
    for stride, a, b in zip(strided.strides, coarse, fine, strict=True):
        step = stride // min(stride, 8)
        torch.testing.assert_close(b[..., ::step, ::step], a, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"depth": 101}, "depth.*101"),
        ({"depth": 18, "output_stride": 4}, "output_stride.*4"),
        ({"depth": 18, "width_divisor": 3}, "width_divisor.*3"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ResNet(**kwargs)
