"""Sliding-window inference: overlapping tiles whose logits are blended with a weight window.

An image larger than the size a model was trained on is cut into ``tile_size`` tiles that
overlap by a fraction of the tile; each tile's logits are weighted by a window (uniform, or a
Gaussian that trusts tile centres more than tile borders) and every output pixel is the
weighted average of the logits of the tiles covering it. Tiles run ``tile_batch_size`` at a
time, so memory holds at most that many tiles' activations besides the full-size output.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

Window = Literal["gaussian", "uniform"]
WINDOWS: tuple[str, ...] = ("gaussian", "uniform")

GAUSSIAN_SIGMA = 0.125
"""Standard deviation of the Gaussian window as a fraction of the tile side (nnU-Net's value);
a tile's border pixels then weigh exp(-8) ~ 3e-4 of its centre."""


def tile_starts(length: int, tile: int, overlap: float) -> list[int]:
    """Start offsets of tiles of ``tile`` pixels covering ``0..length`` along one axis.

    Consecutive tiles are ``tile - round(tile * overlap)`` pixels apart (at least 1); the
    last tile is moved back to end exactly at ``length``. A tile at least as long as the axis
    gives the single start 0 (the caller clips the tile to the axis).

    >>> tile_starts(10, 4, 0.5)
    [0, 2, 4, 6]
    >>> tile_starts(10, 4, 0.0)
    [0, 4, 6]
    """
    if tile >= length:
        return [0]
    step = max(tile - round(tile * overlap), 1)
    starts = list(range(0, length - tile, step))
    return [*starts, length - tile]


def weight_window(height: int, width: int, window: Window = "gaussian") -> torch.Tensor:
    """(height, width) float32 blending weights, all positive.

    ``"uniform"``: all ones (plain averaging where tiles overlap). ``"gaussian"``: the outer
    product of two Gaussians centred on the tile with sigma ``GAUSSIAN_SIGMA`` times the side,
    scaled so the centre weighs 1.
    """
    if window == "uniform":
        return torch.ones(height, width)
    if window != "gaussian":
        raise ValueError(f"window {window!r} is not one of {', '.join(WINDOWS)}")
    return torch.outer(_gaussian(height), _gaussian(width))


def _gaussian(length: int) -> torch.Tensor:
    position = torch.arange(length, dtype=torch.float64) - (length - 1) / 2
    sigma = GAUSSIAN_SIGMA * length
    return torch.exp(-0.5 * (position / sigma) ** 2).float()


def sliding_window(
    forward: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    tile_size: tuple[int, int],
    overlap: float = 0.25,
    window: Window = "gaussian",
    tile_batch_size: int = 4,
) -> torch.Tensor:
    """Blended logits of overlapping tiles.

    Args:
        forward: maps (T, 3, h, w) float tiles to (T, C, h, w) float logits.
        images: (N, 3, H, W) float, already normalised.
        tile_size: (height, width) of a tile in pixels; clipped to the image size.
        overlap: fraction of a tile shared with its neighbour, in [0, 1).
        window: weight of each tile pixel when blending, ``"gaussian"`` or ``"uniform"``.
        tile_batch_size: tiles per call of ``forward``.

    Returns:
        (N, C, H, W) float32 logits: per pixel, the window-weighted mean over the tiles that
        cover it.
    """
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if tile_batch_size < 1:
        raise ValueError(f"tile_batch_size must be at least 1, got {tile_batch_size}")
    if min(tile_size) < 1:
        raise ValueError(f"tile_size must be positive, got {tuple(tile_size)}")
    count, _, height, width = images.shape
    if count == 0:
        raise ValueError("sliding_window needs at least one image, got an empty batch")
    tile_h, tile_w = min(tile_size[0], height), min(tile_size[1], width)
    weights = weight_window(tile_h, tile_w, window).to(images.device)
    tiles = [
        (n, top, left)
        for n in range(count)
        for top in tile_starts(height, tile_h, overlap)
        for left in tile_starts(width, tile_w, overlap)
    ]
    logits: torch.Tensor | None = None
    total = torch.zeros(height, width, device=images.device)
    for first in range(0, len(tiles), tile_batch_size):
        chunk = tiles[first : first + tile_batch_size]
        crops = torch.stack(
            [images[n, :, top : top + tile_h, left : left + tile_w] for n, top, left in chunk]
        )
        scores = forward(crops).float() * weights
        if logits is None:
            logits = images.new_zeros(count, scores.shape[1], height, width, dtype=torch.float32)
        for (n, top, left), score in zip(chunk, scores, strict=True):
            logits[n, :, top : top + tile_h, left : left + tile_w] += score
            if n == 0:
                total[top : top + tile_h, left : left + tile_w] += weights
    return logits / total
