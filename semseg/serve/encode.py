"""Segmentation results to response bodies: the palette PNG, the overlay PNG and the JSON."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from semseg.data.io import write_index_png, write_png
from semseg.inference.drivable import extract_drivable
from semseg.labels import LabelSet
from semseg.visualize import overlay


def hex_colour(colour: Sequence[int]) -> str:
    """``(128, 64, 128)`` -> ``"#804080"``."""
    return "#" + "".join(f"{int(v):02x}" for v in colour)


def labels_png(label_map: np.ndarray, labels: LabelSet) -> bytes:
    """(H, W) uint8 train ids -> palette PNG bytes, exactly as ``semseg predict`` writes
    ``STEM_labels.png`` (one byte per pixel, the class colours as its palette)."""
    buffer = io.BytesIO()
    write_index_png(buffer, label_map, labels.palette())
    return buffer.getvalue()


def overlay_png(image: np.ndarray, label_map: np.ndarray, labels: LabelSet, alpha: float) -> bytes:
    """PNG of :func:`semseg.visualize.overlay`: class colours at opacity ``alpha`` over the
    (H, W, 3) uint8 image, with a legend of the classes present on the right."""
    buffer = io.BytesIO()
    write_png(buffer, overlay(image, label_map, labels, alpha=alpha))
    return buffer.getvalue()


def class_shares(label_map: np.ndarray, labels: LabelSet) -> list[dict[str, Any]]:
    """Every class in id order: ``{"id", "name", "color" ("#rrggbb"), "fraction"}``, the
    fraction of the image's pixels predicted as that class."""
    counts = np.bincount(label_map.ravel(), minlength=256)
    total = max(label_map.size, 1)
    return [
        {"id": i, "name": name, "color": hex_colour(colour), "fraction": float(counts[i] / total)}
        for i, (name, colour) in enumerate(zip(labels.names, labels.colours, strict=True))
    ]


def drivable_json(
    label_map: np.ndarray, labels: LabelSet, drivable_classes: Sequence[int]
) -> dict[str, Any] | None:
    """``{"classes", "fraction", "boundary", "polygon"}`` of
    :func:`~semseg.inference.drivable.extract_drivable` (the defaults ``semseg drivable``
    uses), or None when there are no drivable classes."""
    if not drivable_classes:
        return None
    space = extract_drivable(label_map, drivable_classes=drivable_classes).to_json()
    return {
        "classes": [labels.names[i] for i in drivable_classes],
        "fraction": space["area_fraction"],
        "boundary": space["boundary"],
        "polygon": space["polygon"],
    }


def segment_json(
    label_map: np.ndarray, labels: LabelSet, drivable_classes: Sequence[int]
) -> dict[str, Any]:
    """The JSON output without ``timing_ms``: size, class shares, the palette PNG in base64
    and the drivable space."""
    height, width = label_map.shape
    return {
        "height": height,
        "width": width,
        "classes": class_shares(label_map, labels),
        "labels_png": base64.b64encode(labels_png(label_map, labels)).decode("ascii"),
        "drivable": drivable_json(label_map, labels, drivable_classes),
    }
