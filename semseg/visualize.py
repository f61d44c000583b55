"""Pictures of results: colour label maps, overlays with a legend, training curves."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from semseg.labels import LabelSet


def colorize(label_map: np.ndarray, labels: LabelSet) -> np.ndarray:
    """(H, W) integer train ids -> (H, W, 3) uint8 colours (void colour for ignore)."""
    return labels.palette()[label_map.astype(np.uint8)]


def overlay(
    image: np.ndarray,
    label_map: np.ndarray,
    labels: LabelSet,
    alpha: float = 0.5,
    legend: bool = True,
    classes: Sequence[int] | None = None,
) -> np.ndarray:
    """Blend class colours over ``image`` and add a legend panel on the right.

    Args:
        image: (H, W, 3) uint8 RGB.
        label_map: (H, W) train ids.
        alpha: opacity of the colours, 0 (image only) to 1 (colours only).
        legend: append a legend of the classes present (or of ``classes``).
        classes: train ids to list in the legend (default: those present in ``label_map``).

    Returns:
        (H, W + legend width, 3) uint8.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if image.shape[:2] != label_map.shape:
        raise ValueError(f"image {image.shape[:2]} and label map {label_map.shape} differ in size")
    blended = image.astype(np.float32) * (1 - alpha) + colorize(label_map, labels) * alpha
    result = blended.round().astype(np.uint8)
    if not legend:
        return result
    if classes is None:
        present = np.unique(label_map)
        classes = [int(c) for c in present if c < labels.num_classes]
    return np.concatenate([result, legend_panel(labels, classes, height=image.shape[0])], axis=1)


def legend_panel(labels: LabelSet, classes: Sequence[int], height: int) -> np.ndarray:
    """(height, width, 3) uint8 white panel with a colour swatch and name per class."""
    font = ImageFont.load_default()
    row = max(12, min(20, height // max(len(classes), 1)))
    width = 24 + 7 * max((len(labels.names[c]) for c in classes), default=4)
    panel = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(panel)
    for position, class_id in enumerate(classes):
        top = 4 + position * row
        if top + row > height:
            break
        draw.rectangle([4, top, 4 + row - 4, top + row - 4], fill=labels.colours[class_id],
                       outline=(0, 0, 0))  # fmt: skip
        draw.text((row + 4, top), labels.names[class_id], fill=(0, 0, 0), font=font)
    return np.asarray(panel)
