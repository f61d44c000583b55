"""MobileNetV2 / MobileNetV3-Large backbones: torchvision names and sizes, strides, dilation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from semseg.models.backbones.mobilenet import make_divisible, mobilenet_v2, mobilenet_v3_large
from semseg.models.pretrained import load_pretrained_encoder

Shapes = dict[str, tuple[int, ...]]

# The papers' tables. MobileNetV2 (Sandler et al., Table 2): expansion t, channels c,
# repeats n, first stride s. MobileNetV3-Large (Howard et al., Table 1): kernel, expanded
# channels, output channels, squeeze-excitation, stride.
MOBILENET_V2_TABLE = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                      (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]  # fmt: skip
MOBILENET_V3_LARGE_TABLE = [
    (3, 16, 16, False, 1), (3, 64, 24, False, 2), (3, 72, 24, False, 1),
    (5, 72, 40, True, 2), (5, 120, 40, True, 1), (5, 120, 40, True, 1),
    (3, 240, 80, False, 2), (3, 200, 80, False, 1), (3, 184, 80, False, 1),
    (3, 184, 80, False, 1), (3, 480, 112, True, 1), (3, 672, 112, True, 1),
    (5, 672, 160, True, 2), (5, 960, 160, True, 1), (5, 960, 160, True, 1),
]  # fmt: skip
# torchvision's squeeze widths: expanded / 4 rounded to a multiple of 8, never 10% below.
SQUEEZE = {72: 24, 120: 32, 480: 120, 672: 168, 960: 240}

# torchvision's published parameter counts (classifier included) and its classifiers.
MOBILENET_V2_PARAMETERS = 3_504_872
MOBILENET_V2_CLASSIFIER = 1280 * 1000 + 1000
MOBILENET_V3_LARGE_PARAMETERS = 5_483_032
MOBILENET_V3_LARGE_CLASSIFIER = (960 * 1280 + 1280) + (1280 * 1000 + 1000)


def _batch_norm(shapes: Shapes, prefix: str, channels: int) -> None:
    for field in ("weight", "bias", "running_mean", "running_var"):
        shapes[f"{prefix}.{field}"] = (channels,)
    shapes[f"{prefix}.num_batches_tracked"] = ()


def _conv_bn(shapes: Shapes, prefix: str, c_out: int, c_in: int, kernel: int) -> None:
    """torchvision's Conv2dNormActivation: ``.0`` conv without bias, ``.1`` BatchNorm."""
    shapes[f"{prefix}.0.weight"] = (c_out, c_in, kernel, kernel)
    _batch_norm(shapes, f"{prefix}.1", c_out)


def torchvision_mobilenet_v2_shapes() -> Shapes:
    """Names and shapes of torchvision's ``mobilenet_v2().state_dict()``."""
    shapes: Shapes = {}
    _conv_bn(shapes, "features.0", 32, 3, 3)
    c_in, index = 32, 1
    for t, c, n, _ in MOBILENET_V2_TABLE:
        for _ in range(n):
            hidden, prefix = c_in * t, f"features.{index}.conv"
            if t == 1:  # no expansion: depthwise, projection conv, its BatchNorm
                _conv_bn(shapes, f"{prefix}.0", hidden, 1, 3)
                shapes[f"{prefix}.1.weight"] = (c, hidden, 1, 1)
                _batch_norm(shapes, f"{prefix}.2", c)
            else:
                _conv_bn(shapes, f"{prefix}.0", hidden, c_in, 1)
                _conv_bn(shapes, f"{prefix}.1", hidden, 1, 3)
                shapes[f"{prefix}.2.weight"] = (c, hidden, 1, 1)
                _batch_norm(shapes, f"{prefix}.3", c)
            c_in, index = c, index + 1
    _conv_bn(shapes, "features.18", 1280, 320, 1)
    shapes["classifier.1.weight"] = (1000, 1280)
    shapes["classifier.1.bias"] = (1000,)
    return shapes


def torchvision_mobilenet_v3_large_shapes() -> Shapes:
    """Names and shapes of torchvision's ``mobilenet_v3_large().state_dict()``, classifier
    left out."""
    shapes: Shapes = {}
    _conv_bn(shapes, "features.0", 16, 3, 3)
    c_in = 16
    for index, (kernel, expanded, c_out, squeeze, _) in enumerate(MOBILENET_V3_LARGE_TABLE, 1):
        prefix, position = f"features.{index}.block", 0
        if expanded != c_in:
            _conv_bn(shapes, f"{prefix}.0", expanded, c_in, 1)
            position = 1
        _conv_bn(shapes, f"{prefix}.{position}", expanded, 1, kernel)
        if squeeze:
            position += 1
            s = SQUEEZE[expanded]
            shapes |= {
                f"{prefix}.{position}.fc1.weight": (s, expanded, 1, 1),
                f"{prefix}.{position}.fc1.bias": (s,),
                f"{prefix}.{position}.fc2.weight": (expanded, s, 1, 1),
                f"{prefix}.{position}.fc2.bias": (expanded,),
            }
        _conv_bn(shapes, f"{prefix}.{position + 1}", c_out, expanded, 1)
        c_in = c_out
    _conv_bn(shapes, "features.16", 960, 160, 1)
    return shapes


def random_state(shapes: Shapes, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with ``shapes``: random floats, BatchNorm variances positive."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in shapes.items():
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(7)
        else:
            state[name] = torch.rand(shape, generator=generator) + 0.5
    return state


def _shapes(module: torch.nn.Module) -> Shapes:
    return {name: tuple(t.shape) for name, t in module.state_dict().items()}


def test_mobilenet_v2_state_dict_has_torchvision_names_and_shapes() -> None:
    with torch.device("meta"):
        encoder = mobilenet_v2()
    expected = torchvision_mobilenet_v2_shapes()
    del expected["classifier.1.weight"], expected["classifier.1.bias"]
    assert _shapes(encoder) == expected


def test_mobilenet_v3_large_state_dict_has_torchvision_names_and_shapes() -> None:
    with torch.device("meta"):
        encoder = mobilenet_v3_large()
    assert _shapes(encoder) == torchvision_mobilenet_v3_large_shapes()


@pytest.mark.parametrize(
    ("build", "published", "classifier"),
    [
        (mobilenet_v2, MOBILENET_V2_PARAMETERS, MOBILENET_V2_CLASSIFIER),
        (mobilenet_v3_large, MOBILENET_V3_LARGE_PARAMETERS, MOBILENET_V3_LARGE_CLASSIFIER),
    ],
)
def test_parameter_count_is_torchvisions_less_the_classifier(
    build, published: int, classifier: int
) -> None:
    with torch.device("meta"):
        encoder = build()
    assert sum(p.numel() for p in encoder.parameters()) == published - classifier


def test_torchvision_state_dict_file_loads_with_nothing_missing(tmp_path: Path) -> None:
    state = random_state(torchvision_mobilenet_v2_shapes())
    path = tmp_path / "mobilenet_v2.pth"
    torch.save(state, path)
    encoder = mobilenet_v2()
    report = load_pretrained_encoder(encoder, path)
    assert report.missing == []
    assert {name for name, _ in report.skipped} == {"classifier.1.weight", "classifier.1.bias"}
    loaded = encoder.state_dict()
    for name in ("features.0.0.weight", "features.5.conv.1.1.running_var", "features.18.1.bias"):
        assert torch.equal(loaded[name], state[name])


@pytest.mark.parametrize(
    ("value", "expected"),
    # 32 * 0.5; 16 * 0.25 is raised to the minimum 8; 18 rounds to 16, more than 10% low, so
    # 24; 1280 * 0.35 = 448 stays.
    [(16.0, 16), (4.0, 8), (18.0, 24), (448.0, 448), (12.0, 16), (30.0, 32)],
)
def test_make_divisible(value: float, expected: int) -> None:
    assert make_divisible(value) == expected


def test_width_multiplier_scales_the_feature_channels() -> None:
    with torch.device("meta"):
        assert mobilenet_v2().channels == (16, 24, 32, 96, 1280)
        assert mobilenet_v2(last_conv=False).channels == (16, 24, 32, 96, 320)
        # 8, 12 -> 16, 16, 48, 160; the last convolution keeps 1280 below width 1.
        assert mobilenet_v2(0.5).channels == (8, 16, 16, 48, 1280)
        assert mobilenet_v3_large().channels == (16, 24, 40, 112, 960)
        assert mobilenet_v3_large(0.5).channels == (8, 16, 24, 56, 480)


@pytest.mark.parametrize("build", [mobilenet_v2, mobilenet_v3_large])
@pytest.mark.parametrize(
    ("output_stride", "sizes"),
    [
        (32, [(49, 66), (25, 33), (13, 17), (7, 9), (4, 5)]),
        (16, [(49, 66), (25, 33), (13, 17), (7, 9), (7, 9)]),
        (8, [(49, 66), (25, 33), (13, 17), (13, 17), (13, 17)]),
    ],
)
def test_feature_maps_round_up_at_each_stride(
    build, output_stride: int, sizes: list[tuple[int, int]]
) -> None:
    encoder = build(width_mult=0.25, output_stride=output_stride).eval()
    with torch.no_grad():
        features = encoder(torch.randn(1, 3, 97, 131))
    assert [tuple(f.shape[-2:]) for f in features] == sizes
    assert [f.shape[1] for f in features] == list(encoder.channels)
    assert encoder.strides == tuple(min(s, output_stride) for s in (2, 4, 8, 16, 32))


@pytest.mark.parametrize("output_stride", [16, 8])
def test_dilation_computes_the_strided_network_on_a_finer_grid(output_stride: int) -> None:
    # Same weights: a stride-2 layer's outputs are its stride-1 outputs at even positions, and
    # a 3x3 convolution dilated by 2 on the fine grid reads exactly the neighbours the
    # undilated one reads on the coarse grid (zero padding included), so the dilated
    # network's maps subsampled by 32 / output_stride equal the strided network's.
    torch.manual_seed(0)
    strided = mobilenet_v2(width_mult=0.25).eval()
    dilated = mobilenet_v2(width_mult=0.25, output_stride=output_stride).eval()
    dilated.load_state_dict(strided.state_dict())
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        coarse, fine = strided(x), dilated(x)
    for stride, a, b in zip(strided.strides, coarse, fine, strict=True):
        step = stride // min(stride, output_stride)
        torch.testing.assert_close(b[..., ::step, ::step], a, rtol=1e-4, atol=1e-5)
    assert fine[-1].shape[-1] == 96 // output_stride


def _depthwise_dilation_and_stride(encoder: torch.nn.Module) -> list[tuple[int, int]]:
    """(dilation, stride) of each inverted residual block's depthwise convolution."""
    convs = [
        m
        for block in encoder.features[1:-1]
        for m in block.modules()
        if isinstance(m, torch.nn.Conv2d) and m.groups > 1
    ]
    return [(conv.dilation[0], conv.stride[0]) for conv in convs]


@pytest.mark.parametrize(
    ("output_stride", "expected"),
    [
        # torchvision's mobilenet_v3_large(dilated=True): the last stage (features.13-15)
        # at stride 1, dilation 2, the strided block included.
        (16, [(1, 1), (1, 2), (1, 1), (1, 2), (1, 1), (1, 1), (1, 2)] + [(1, 1)] * 5
         + [(2, 1)] * 3),
        (8, [(1, 1), (1, 2), (1, 1), (1, 2), (1, 1), (1, 1)] + [(2, 1)] * 6 + [(4, 1)] * 3),
    ],
)  # fmt: skip
def test_mobilenet_v3_large_dilates_the_strided_block_as_torchvision(
    output_stride: int, expected: list[tuple[int, int]]
) -> None:
    with torch.device("meta"):
        encoder = mobilenet_v3_large(output_stride=output_stride)
    assert _depthwise_dilation_and_stride(encoder) == expected
    conv = encoder.features[13].block[1][0]
    assert conv.padding[0] == 2 * conv.dilation[0]  # "same" padding of a 5x5 kernel


def test_mobilenet_v3_large_returns_the_tapped_layers() -> None:
    encoder = mobilenet_v3_large(width_mult=0.25, output_stride=16, taps=(0, 4, 16)).eval()
    assert encoder.channels == (8, 16, 240)
    assert encoder.strides == (2, 8, 16)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        first, fourth, last = encoder(x)
        expected = encoder.features[:5](x)
    torch.testing.assert_close(fourth, expected)
    assert [tuple(f.shape[1:]) for f in (first, fourth, last)] == [
        (8, 32, 48), (16, 8, 12), (240, 4, 6)
    ]  # fmt: skip


@pytest.mark.parametrize("taps", [(), (4, 3), (1, 17), (-1, 4)])
def test_bad_taps_are_named(taps: tuple) -> None:
    with pytest.raises(
        ValueError, match=re.escape(f"taps must be increasing indices of the 17 layers, got {taps}")
    ):
        mobilenet_v3_large(taps=taps)


def test_squeeze_excitation_scales_each_channel_by_a_hard_sigmoid_of_its_mean() -> None:
    encoder = mobilenet_v3_large(width_mult=0.25).eval()
    se = encoder.features[4].block[2]
    x = torch.randn(2, se.fc1.in_channels, 5, 6)
    mean = x.mean(dim=(2, 3))
    hidden = (mean @ se.fc1.weight[:, :, 0, 0].T + se.fc1.bias).clamp(min=0)
    gate = hidden @ se.fc2.weight[:, :, 0, 0].T + se.fc2.bias
    gate = (gate / 6 + 0.5).clamp(0, 1)  # hard sigmoid: relu6(x + 3) / 6
    with torch.no_grad():
        torch.testing.assert_close(se(x), x * gate[:, :, None, None])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"width_mult": 0.0}, "width_mult.*0.0"), ({"output_stride": 4}, "output_stride.*4")],
)
def test_bad_arguments_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mobilenet_v2(**kwargs)
    with pytest.raises(ValueError, match=message):
        mobilenet_v3_large(**kwargs)


def test_batchnorm_eps_and_momentum_are_torchvisions() -> None:
    # torchvision: MobileNetV3 builds every norm as BatchNorm2d(eps=0.001, momentum=0.01);
    # MobileNetV2 uses nn.BatchNorm2d's defaults (1e-5, 0.1).
    with torch.device("meta"):
        v3, v2 = mobilenet_v3_large(), mobilenet_v2()
    for encoder, expected in ((v3, (1e-3, 0.01)), (v2, (1e-5, 0.1))):
        norms = [m for m in encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert norms
        assert {(m.eps, m.momentum) for m in norms} == {expected}


def test_torchvision_weights_give_torchvisions_stem_features(tmp_path: Path) -> None:
    # A hand-computed stem (conv stride 2, BatchNorm with eps 1e-3, hard swish) on weights in
    # torchvision's format. The small running variances make eps matter: with 1e-5 the
    # features would differ by up to ~10x.
    state = random_state(torchvision_mobilenet_v3_large_shapes())
    state["features.0.1.running_var"] = torch.full((16,), 1e-3)
    path = tmp_path / "mobilenet_v3_large.pth"
    torch.save(state, path)
    encoder = mobilenet_v3_large().eval()
    load_pretrained_encoder(encoder, path)
    x = torch.randn(1, 3, 9, 12, generator=torch.Generator().manual_seed(0))
    conv = torch.nn.functional.conv2d(x, state["features.0.0.weight"], stride=2, padding=1)
    mean, var = state["features.0.1.running_mean"], state["features.0.1.running_var"]
    weight, bias = state["features.0.1.weight"], state["features.0.1.bias"]
    normed = (conv - mean[:, None, None]) / torch.sqrt(var[:, None, None] + 1e-3)
    affine = normed * weight[:, None, None] + bias[:, None, None]
    expected = affine * (affine + 3).clamp(0, 6) / 6  # hard swish
    with torch.no_grad():
        torch.testing.assert_close(encoder.features[0](x), expected, rtol=1e-5, atol=1e-5)
