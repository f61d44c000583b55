"""Sliding-window inference: tile placement, blending weights, equality with whole images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from semseg.inference.sliding_window import sliding_window, tile_starts, weight_window


@pytest.mark.parametrize(
    ("length", "tile", "overlap", "expected"),
    [
        (10, 4, 0.5, [0, 2, 4, 6]),
        (10, 4, 0.0, [0, 4, 6]),
        (12, 4, 0.0, [0, 4, 8]),
        (10, 4, 0.25, [0, 3, 6]),
        (4, 4, 0.5, [0]),
        (3, 8, 0.5, [0]),
        (5, 4, 0.9, [0, 1]),
    ],
)
def test_tile_starts_by_hand(length, tile, overlap, expected):
    assert tile_starts(length, tile, overlap) == expected


@pytest.mark.parametrize(("length", "tile", "overlap"), [(37, 8, 0.3), (100, 17, 0.5), (9, 2, 0)])
def test_tiles_cover_the_axis_and_stay_inside(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    covered = np.zeros(length, dtype=int)
    for start in starts:
        assert 0 <= start <= length - tile
        covered[start : start + tile] += 1
    assert covered.min() >= 1
    assert starts == sorted(set(starts))


def test_uniform_window_is_all_ones():
    assert torch.equal(weight_window(3, 5, "uniform"), torch.ones(3, 5))


def test_gaussian_window_matches_numpy():
    height, width = 9, 16
    y = np.arange(height) - (height - 1) / 2
    x = np.arange(width) - (width - 1) / 2
    expected = np.outer(
        np.exp(-0.5 * (y / (height / 8)) ** 2), np.exp(-0.5 * (x / (width / 8)) ** 2)
    )
    window = weight_window(height, width, "gaussian").numpy()
    np.testing.assert_allclose(window, expected, rtol=1e-6)
    assert window[4, 7] == window[4, 8]  # symmetric about the centre
    assert window.min() > 0


def test_unknown_window_is_an_error():
    with pytest.raises(ValueError, match="'hann'"):
        weight_window(4, 4, "hann")


def _tile_mean(tiles: torch.Tensor) -> torch.Tensor:
    """A 'network' whose logits are each tile's mean colour, constant over the tile."""
    return tiles.mean(dim=(2, 3), keepdim=True).expand(-1, -1, *tiles.shape[2:]).clone()


@pytest.mark.parametrize("window", ["uniform", "gaussian"])
def test_blending_is_the_window_weighted_mean_over_covering_tiles(window):
    images = torch.rand(1, 3, 10, 12, generator=torch.Generator().manual_seed(0))
    result = sliding_window(_tile_mean, images, (4, 6), overlap=0.5, window=window)
    # Oracle: loops over the hand-derived starts (rows 0, 2, 4, 6; columns 0, 3, 6).
    w = weight_window(4, 6, window).numpy().astype(np.float64)
    image = images[0].numpy().astype(np.float64)
    total = np.zeros((3, 10, 12))
    weight = np.zeros((10, 12))
    for top in (0, 2, 4, 6):
        for left in (0, 3, 6):
            mean = image[:, top : top + 4, left : left + 6].mean(axis=(1, 2))
            total[:, top : top + 4, left : left + 6] += mean[:, None, None] * w
            weight[top : top + 4, left : left + 6] += w
    np.testing.assert_allclose(result[0].numpy(), total / weight, rtol=1e-5)


def test_a_tile_as_large_as_the_image_is_whole_image_inference():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 5, 3, padding=1))
    images = torch.randn(2, 3, 20, 28)
    with torch.no_grad():
        whole = net(images)
        for tile in [(20, 28), (64, 64)]:  # larger tiles are clipped to the image
            tiled = sliding_window(net, images, tile, overlap=0.5, window="gaussian")
            torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("tile", "overlap", "window"),
    [((8, 8), 0.25, "gaussian"), ((5, 7), 0.5, "uniform"), ((16, 3), 0.0, "gaussian")],
)
def test_pointwise_model_gives_whole_image_logits(tile, overlap, window):
    """A 1x1 convolution sees one pixel, so every tile gives the same logits there and any
    weighted mean of them is those logits."""
    torch.manual_seed(1)
    net = nn.Conv2d(3, 4, kernel_size=1)
    images = torch.randn(2, 3, 23, 31)
    with torch.no_grad():
        tiled = sliding_window(net, images, tile, overlap, window, tile_batch_size=3)
        torch.testing.assert_close(tiled, net(images), rtol=1e-6, atol=1e-6)


def test_tile_batch_size_bounds_each_call_and_does_not_change_the_result():
    calls: list[int] = []

    def counting(tiles: torch.Tensor) -> torch.Tensor:
        calls.append(tiles.shape[0])
        return _tile_mean(tiles)

    images = torch.rand(2, 3, 10, 12, generator=torch.Generator().manual_seed(2))
    reference = sliding_window(_tile_mean, images, (4, 6), 0.5, "gaussian", tile_batch_size=1)
    result = sliding_window(counting, images, (4, 6), 0.5, "gaussian", tile_batch_size=5)
    torch.testing.assert_close(result, reference, rtol=1e-6, atol=0)
    assert sum(calls) == 2 * 4 * 3  # two images, 4 x 3 tiles each
    assert max(calls) == 5
    assert len(calls) == 5  # ceil(24 / 5)


def test_batched_images_match_one_at_a_time():
    images = torch.rand(3, 3, 9, 11, generator=torch.Generator().manual_seed(3))
    batch = sliding_window(_tile_mean, images, (5, 5), 0.4)
    for n in range(3):
        single = sliding_window(_tile_mean, images[n : n + 1], (5, 5), 0.4)
        torch.testing.assert_close(batch[n : n + 1], single)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"overlap": 1.0}, "overlap"),
        ({"overlap": -0.1}, "overlap"),
        ({"tile_batch_size": 0}, "tile_batch_size"),
        ({"tile_size": (0, 4)}, "tile_size"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, message):
    arguments = {"tile_size": (4, 4), **kwargs}
    with pytest.raises(ValueError, match=message):
        sliding_window(_tile_mean, torch.zeros(1, 3, 8, 8), **arguments)
