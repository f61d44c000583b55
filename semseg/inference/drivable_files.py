"""Drivable space of predicted label maps: choosing the drivable classes, and image files in,
mask, JSON and overlay out (``semseg drivable``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from semseg.data.io import DEFAULT_MAX_PIXELS, write_png
from semseg.inference.drivable import (
    HOLE_FRACTION,
    ISLAND_FRACTION,
    DrivableSpace,
    draw_drivable,
    extract_drivable,
)
from semseg.inference.files import Failure, check_outputs, output_stems, segment_images
from semseg.inference.predictor import Prediction, Predictor
from semseg.labels import LabelSet

DEFAULT_CLASS = "road"
OUTPUT_KINDS = ("drivable.png", "drivable.json", "drivable_overlay.png")


def drivable_class_ids(labels: LabelSet, classes: Sequence[str | int] | None = None) -> list[int]:
    """Train ids of the drivable classes.

    Args:
        labels: the model's classes.
        classes: class names (exact, else case-insensitive) or train ids (ints or digit
            strings); None picks the class named ``Road`` (any case).

    Raises:
        ValueError: naming an unknown class, or asking for ``classes`` when there is no Road.
    """
    names = list(labels.names)
    if classes is None:
        matches = [i for i, name in enumerate(names) if name.lower() == DEFAULT_CLASS]
        if not matches:
            raise ValueError(
                f"no class named Road among {names}; name the drivable classes with --classes"
            )
        return matches[:1]
    if not classes:
        raise ValueError("classes must name at least one drivable class")
    lowered = [name.lower() for name in names]
    ids = []
    for item in classes:
        text = str(item)
        if text.isdigit():
            if int(text) >= len(names):
                raise ValueError(f"class id {text} is not in 0..{len(names) - 1} ({names})")
            ids.append(int(text))
        elif text in names:
            ids.append(names.index(text))
        elif text.lower() in lowered:
            ids.append(lowered.index(text.lower()))
        else:
            raise ValueError(f"unknown class {text!r}; the model's classes are {names}")
    return sorted(set(ids))


def predict_drivable(
    predictor: Predictor,
    image: np.ndarray,
    classes: Sequence[str | int] | None = None,
    prediction: Prediction | None = None,
    hole_fraction: float = HOLE_FRACTION,
    island_fraction: float = ISLAND_FRACTION,
) -> DrivableSpace:
    """Drivable space of ``image`` ((H, W, 3) uint8 RGB) from the predicted label map (see
    :func:`~semseg.inference.drivable.extract_drivable` for the fractions); ``prediction``
    reuses one already made. ``classes`` as in :func:`drivable_class_ids`."""
    ids = drivable_class_ids(predictor.labels, classes)
    if prediction is None:
        prediction = predictor.predict(image, probabilities=False)
    return extract_drivable(prediction.labels, ids, hole_fraction, island_fraction)


def drivable_files(
    predictor: Predictor,
    paths: Sequence[Path],
    out_dir: Path,
    classes: Sequence[str | int] | None = None,
    alpha: float = 0.4,
    batch_size: int = 1,
    progress: bool = True,
    hole_fraction: float = HOLE_FRACTION,
    island_fraction: float = ISLAND_FRACTION,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> list[Failure]:
    """For each image write into ``out_dir``: ``<stem>_drivable.png`` (mask, 255 drivable,
    0 not), ``<stem>_drivable.json`` (:meth:`DrivableSpace.to_json` plus ``image`` and
    ``classes``) and ``<stem>_drivable_overlay.png`` (:func:`draw_drivable` at ``alpha``).
    ``hole_fraction`` and ``island_fraction`` as in
    :func:`~semseg.inference.drivable.extract_drivable`; images over ``max_pixels`` pixels are
    refused (reported) before decoding.

    Returns:
        (path, reason) of each failed input; the others go on.

    Raises:
        ValueError: before writing anything, for unknown classes or an output path that is
            one of the inputs.
    """
    ids = drivable_class_ids(predictor.labels, classes)
    stems = output_stems(paths)
    check_outputs(paths, [out_dir / f"{stem}_{kind}" for stem in stems for kind in OUTPUT_KINDS])
    out_dir.mkdir(parents=True, exist_ok=True)

    def write(index: int, image: np.ndarray, prediction: Prediction) -> None:
        space = extract_drivable(prediction.labels, ids, hole_fraction, island_fraction)
        stem = out_dir / stems[index]
        write_png(f"{stem}_drivable.png", space.mask.astype(np.uint8) * 255)
        record = {
            "image": str(paths[index]),
            "classes": [predictor.labels.names[i] for i in ids],
            **space.to_json(),
        }
        Path(f"{stem}_drivable.json").write_text(json.dumps(record))
        write_png(f"{stem}_drivable_overlay.png", draw_drivable(image, space, alpha=alpha))

    return segment_images(predictor, paths, write, batch_size, progress, max_pixels)
