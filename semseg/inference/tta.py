"""From a network to class probabilities: sliding window, flip and scale TTA.

:func:`infer_probabilities` runs a network (any callable from normalised images to logits)
over a batch of images, optionally

- in overlapping tiles (:mod:`semseg.sliding_window`) instead of on the whole image,
- on the left-right mirrored images too (flip test-time augmentation),
- at several scales,

and returns the softmax probabilities averaged over every flip and scale, at input size.
The network pads its input where its layers need it (:mod:`semseg.models.contract`); here the
output stride only bounds the smallest image and tile.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from semseg.inference.sliding_window import WINDOWS, Window, sliding_window


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
        hflip: also segment the left-right mirrored image and average the probabilities.
        scales: image scale factors, probabilities averaged; ``(1.0,)`` is plain inference.
    """

    tile_size: tuple[int, int] | None = None
    overlap: float = 0.25
    window: Window = "gaussian"
    tile_batch_size: int = 4
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
        stride: the model's output stride, the smallest image side it accepts.

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
            logits = _logits(forward, scaled.flip(-1) if flip else scaled, options)
            probabilities = logits.float().softmax(1)
            if flip:
                probabilities = probabilities.flip(-1)
            if scale != 1.0:
                probabilities = F.interpolate(
                    probabilities, size=(height, width), mode="bilinear", align_corners=False
                )
            total = probabilities if total is None else total + probabilities
    return total / (len(options.scales) * len(flips))


def class_indices(scores: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) logits or probabilities -> (N, H, W) int64 index of the largest score (the
    first on ties, as ``argmax``). ``max(1).indices`` because on the CPU with torch 2.13
    ``argmax`` over the channels of a 1x11x360x480 tensor ran 4-6x slower than ``max`` (one
    thread, busy host: 52-65 against 10-14 ms)."""
    return scores.max(1).indices


def infer_labels(
    forward: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    options: InferenceOptions,
    stride: int = 1,
) -> torch.Tensor:
    """The class of every pixel: the argmax of :func:`infer_probabilities`, which is the
    argmax of the logits themselves when ``options`` average nothing (softmax is monotonic),
    so then no softmax is computed. Arguments as for :func:`infer_probabilities`.

    Returns:
        (N, H, W) int64 class indices.
    """
    if options.hflip or tuple(options.scales) != (1.0,):
        return class_indices(infer_probabilities(forward, images, options, stride))
    check_input_size(*images.shape[-2:], options, stride)
    return class_indices(_logits(forward, images, options))


def _logits(
    forward: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    options: InferenceOptions,
) -> torch.Tensor:
    if options.tile_size is None:
        return forward(images)
    return sliding_window(
        forward, images, options.tile_size, options.overlap, options.window, options.tile_batch_size
    )
