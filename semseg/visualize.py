"""Pictures of results: colour label maps, overlays with a legend, training curves."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from semseg.labels import LabelSet

LEGEND_MIN_ROW = 12
LEGEND_MAX_ROW = 20
"""Legend row heights in pixels: a swatch of ``row - 4`` and the class name beside it."""


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
    """Blend class colours over ``image`` and add a legend panel (:func:`legend_panel`) on the
    right.

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
    """(height, width, 3) uint8 white panel with a colour swatch and the name of each class in
    ``classes``, every one of them shown.

    Rows are 20 pixels high, shrinking to 12 where that fits every class in one column; below
    that the classes fill further columns, top to bottom then left to right (VOC's 21 classes
    on a 128-pixel image take three columns of ten). A panel under 16 pixels high clips its
    rows.
    """
    classes = list(classes)
    font = ImageFont.load_default()
    row = max(LEGEND_MIN_ROW, min(LEGEND_MAX_ROW, (height - 4) // max(len(classes), 1)))
    per_column = max(1, (height - 4) // row)
    columns = max(1, math.ceil(len(classes) / per_column))
    names = [labels.names[c] for c in classes]
    column_width = row + 8 + math.ceil(max((font.getlength(n) for n in names), default=28.0))
    panel = Image.new("RGB", (columns * column_width, height), (255, 255, 255))
    draw = ImageDraw.Draw(panel)
    for position, (class_id, name) in enumerate(zip(classes, names, strict=True)):
        column, line = divmod(position, per_column)
        left, top = column * column_width, 4 + line * row
        draw.rectangle([left + 4, top, left + row, top + row - 4], fill=labels.colours[class_id],
                       outline=(0, 0, 0))  # fmt: skip
        draw.text((left + row + 4, top), name, fill=(0, 0, 0), font=font)
    return np.asarray(panel)
