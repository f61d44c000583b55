"""Shared model blocks against hand-computed results."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from semseg.models.blocks import ConvBNAct, Upsample, conv_stack, crop_to, pad_to_multiple

IMAGE = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)

# Rows: output pixels 0..3, columns: weights of input pixels 0 and 1, for factor 2.
# Transposed conv with the bilinear kernel (taps 1/4, 3/4, 3/4, 1/4, stride 2, padding 1):
# each output mixes its nearest input (3/4) and the next one (1/4), zero beyond the border.
TRANSPOSED_2X = np.array([[0.75, 0], [0.75, 0.25], [0.25, 0.75], [0, 0.75]], dtype=np.float32)
# Bilinear interpolation with half-pixel centres (align_corners=False) repeats the border.
BILINEAR_2X = np.array([[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]], dtype=np.float32)
NEAREST_2X = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], dtype=np.float32)


def _upsample(module: Upsample, image: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(image)).numpy()


@pytest.mark.parametrize(
    ("mode", "matrix"),
    [("transposed", TRANSPOSED_2X), ("bilinear", BILINEAR_2X), ("nearest", NEAREST_2X)],
)
def test_upsample_by_two_matches_hand_computed(mode: str, matrix: np.ndarray) -> None:
    out = _upsample(Upsample(1, 2, mode), IMAGE[None, None])
    np.testing.assert_allclose(out[0, 0], matrix @ IMAGE @ matrix.T, rtol=0, atol=1e-6)


def test_transposed_upsample_keeps_channels_apart() -> None:
    image = np.stack([IMAGE, 10 * IMAGE, -IMAGE])[None]
    out = _upsample(Upsample(3, 2, "transposed"), image)
    for channel, scale in enumerate([1, 10, -1]):
        expected = scale * TRANSPOSED_2X @ IMAGE @ TRANSPOSED_2X.T
        np.testing.assert_allclose(out[0, channel], expected, rtol=0, atol=1e-5)


def test_transposed_upsample_by_three_matches_hand_computed() -> None:
    # Kernel 5, taps (1/3, 2/3, 1, 2/3, 1/3), stride 3, padding 1: input pixel i lands on output
    # pixel 3i + 1, and the two outputs between neighbours interpolate linearly.
    one_d = np.array([[2 / 3, 0], [1, 0], [2 / 3, 1 / 3], [1 / 3, 2 / 3], [0, 1], [0, 2 / 3]])
    out = _upsample(Upsample(1, 3, "transposed"), IMAGE[None, None])
    np.testing.assert_allclose(out[0, 0], one_d @ IMAGE @ one_d.T, rtol=0, atol=1e-6)


def test_transposed_upsample_is_learnable_and_interpolation_is_not() -> None:
    assert [p.shape for p in Upsample(4, 2, "transposed").parameters()] == [(4, 4, 4, 4)]
    assert list(Upsample(4, 2, "bilinear").parameters()) == []


def test_upsample_rejects_unknown_mode() -> None:
    with pytest.raises(ValueError, match="bicubic"):
        Upsample(1, 2, "bicubic")


def test_pad_to_multiple_pads_bottom_right_with_zeros() -> None:
    x = torch.arange(1.0, 1 + 2 * 5 * 7).reshape(1, 2, 5, 7)
    padded, size = pad_to_multiple(x, 4)
    assert size == (5, 7)
    assert padded.shape == (1, 2, 8, 8)
    assert torch.equal(padded[..., :5, :7], x)
    assert padded[..., 5:, :].abs().sum() == 0
    assert padded[..., :, 7:].abs().sum() == 0
    assert torch.equal(crop_to(padded, size), x)


def test_pad_to_multiple_leaves_a_multiple_unchanged() -> None:
    x = torch.ones(1, 1, 8, 12)
    padded, size = pad_to_multiple(x, 4)
    assert size == (8, 12)
    assert torch.equal(padded, x)


@pytest.mark.parametrize(
    ("stride", "dilation", "expected_size"), [(1, 1, (9, 10)), (1, 3, (9, 10)), (2, 1, (5, 5))]
)
def test_conv_bn_relu_output_size(
    stride: int, dilation: int, expected_size: tuple[int, int]
) -> None:
    block = ConvBNAct(2, 3, stride=stride, dilation=dilation)
    assert block(torch.randn(2, 2, 9, 10)).shape == (2, 3, *expected_size)


@pytest.mark.parametrize(("dilation", "expected_size"), [(1, (7, 8)), (2, (5, 6))])
def test_conv_bn_relu_without_padding_is_a_valid_convolution(
    dilation: int, expected_size: tuple[int, int]
) -> None:
    # Valid 3x3: H - 2 * dilation rows; each output sees only pixels of the input.
    block = ConvBNAct(2, 3, dilation=dilation, padding=0)
    assert block(torch.randn(2, 2, 9, 10)).shape == (2, 3, *expected_size)
    assert block[0].padding == (0, 0)


def test_conv_bn_relu_has_a_bias_only_without_batch_norm() -> None:
    assert ConvBNAct(2, 3)[0].bias is None
    without = ConvBNAct(2, 3, batch_norm=False)
    assert without[0].bias is not None
    assert [type(m).__name__ for m in without] == ["Conv2d", "ReLU"]


def test_conv_stack_chains_channel_counts() -> None:
    stack = conv_stack([3, 5, 7])
    assert [(layer[0].in_channels, layer[0].out_channels) for layer in stack] == [(3, 5), (5, 7)]
    with pytest.raises(ValueError, match=r"\[3\]"):
        conv_stack([3])
