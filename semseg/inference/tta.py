"""From a network to class probabilities: stride padding, sliding window, flip and scale TTA.

:func:`infer_probabilities` runs a network (any callable from normalised images to logits)
over a batch of images, optionally

- in overlapping tiles (:mod:`semseg.sliding_window`) instead of on the whole image,
- on the left-right mirrored images too (flip test-time augmentation),
- at several scales,

and returns the softmax probabilities averaged over every flip and scale, at input size.
Whole images and tiles are padded at the bottom and right to a multiple of the model's output
stride, by reflection or with zeros, and the logits are cropped back.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from semseg.inference.sliding_window import WINDOWS, Window, sliding_window

PAD_MODES = ("reflect", "zeros")


class InputSizeError(ValueError):
    """An image is smaller than the smallest input the model can segment."""


@dataclass(frozen=True)
class InferenceOptions:
    """How an image becomes class probabilities.

    Attributes:
        tile_size: (height, width) of sliding-window tiles in pixels; None runs each image
            whole. Tiles are clipped to the image, so a small image is one tile.
        overlap: fraction of a tile shared with its neighbour, in [0, 1).
        window: weights of tile logits when blending, ``"gaussian"`` or ``"uniform"``.
        tile_batch_size: tiles per forward pass; bounds the memory of tiled inference.
        pad_mode: padding up to a multiple of the output stride, ``"reflect"`` (mirror the
            image) or ``"zeros"`` (zero after normalisation, i.e. the mean colour).
        hflip: also segment the left-right mirrored image and average the probabilities.
        scales: image scale factors, probabilities averaged; ``(1.0,)`` is plain inference.
    """

    tile_size: tuple[int, int] | None = None
    overlap: float = 0.25
    window: Window = "gaussian"
    tile_batch_size: int = 4
    pad_mode: Literal["reflect", "zeros"] = "reflect"
    hflip: bool = False
    scales: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        if self.tile_size is not None:
            size = tuple(self.tile_size)
            if len(size) != 2 or not all(isinstance(v, int) and v >= 1 for v in size):
                raise ValueError(f"tile_size must be two positive integers, got {self.tile_size!r}")
            object.__setattr__(self, "tile_size", size)
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap!r}")
        if self.window not in WINDOWS:
            raise ValueError(f"window {self.window!r} is not one of {', '.join(WINDOWS)}")
        if self.tile_batch_size < 1:
            raise ValueError(f"tile_batch_size must be at least 1, got {self.tile_batch_size!r}")
        if self.pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode {self.pad_mode!r} is not one of {', '.join(PAD_MODES)}")
        scales = tuple(float(s) for s in self.scales)
        if not scales or not all(math.isfinite(s) and s > 0 for s in scales):
            raise ValueError(f"scales must be positive numbers, got {self.scales!r}")
        object.__setattr__(self, "scales", scales)


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """Image size in pixels at ``scale`` (rounded, at least 1)."""
    return max(round(height * scale), 1), max(round(width * scale), 1)


def check_input_size(height: int, width: int, options: InferenceOptions, stride: int) -> None:
    """Raise :class:`InputSizeError` unless a ``height x width`` image, at every scale of
    ``options``, is at least one output stride in each direction (a smaller input would be
    mostly padding by the time it reaches the deepest layer)."""
    for scale in options.scales:
        h, w = scaled_size(height, width, scale)
        if h < stride or w < stride:
            at_scale = f" at scale {scale} it is {h}x{w}," if scale != 1.0 else ""
            raise InputSizeError(
                f"image is {height}x{width} pixels;{at_scale} smaller than the model's minimum "
                f"input {stride}x{stride} (its output stride)"
            )


def padded_forward(
    forward: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    stride: int,
    pad_mode: str = "reflect",
) -> torch.Tensor:
    """Logits of ``images`` (N, 3, H, W) after padding H and W at the bottom and right to
    multiples of ``stride``, cropped back to (N, C, H, W). Reflection needs each padding
    amount below the side it mirrors, which holds when ``H, W >= stride``."""
    height, width = images.shape[-2:]
    padding = (0, (-width) % stride, 0, (-height) % stride)
    if any(padding):
        mode = "reflect" if pad_mode == "reflect" else "constant"
        images = F.pad(images, padding, mode=mode)
    return forward(images)[..., :height, :width]


def infer_probabilities(
    forward: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    options: InferenceOptions,
    stride: int = 1,
) -> torch.Tensor:
    """Softmax probabilities averaged over the flips and scales of ``options``.

    Args:
        forward: maps (N, 3, h, w) normalised float images to (N, C, h, w) logits.
        images: (N, 3, H, W) float32, normalised.
        options: tiling, padding and test-time augmentation.
        stride: the model's output stride; inputs are padded to its multiples.

    Returns:
        (N, C, H, W) float32 probabilities, summing to 1 over C.

    Raises:
        InputSizeError: when the images (at some scale) are smaller than one stride.
    """
    height, width = images.shape[-2:]
    check_input_size(height, width, options, stride)
    flips: Sequence[bool] = (False, True) if options.hflip else (False,)
    total = None
    for scale in options.scales:
        scaled = images
        if scale != 1.0:
            size = scaled_size(height, width, scale)
            scaled = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        for flip in flips:
            logits = _logits(forward, scaled.flip(-1) if flip else scaled, options, stride)
            probabilities = logits.float().softmax(1)
            if flip:
                probabilities = probabilities.flip(-1)
            if scale != 1.0:
                probabilities = F.interpolate(
                    probabilities, size=(height, width), mode="bilinear", align_corners=False
                )
            total = probabilities if total is None else total + probabilities
    return total / (len(options.scales) * len(flips))


def _logits(
    forward: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    options: InferenceOptions,
    stride: int,
) -> torch.Tensor:
    def run(batch: torch.Tensor) -> torch.Tensor:
        return padded_forward(forward, batch, stride, options.pad_mode)

    if options.tile_size is None:
        return run(images)
    return sliding_window(
        run, images, options.tile_size, options.overlap, options.window, options.tile_batch_size
    )
