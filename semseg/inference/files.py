"""Segmenting files: images, folders, globs and videos in; label maps and overlays out.

Inputs are grouped into batches of equal-size images; a file that fails (undecodable, too
small) is reported with its name and skipped while the others go on.
"""

from __future__ import annotations

import glob
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from semseg.data.io import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    ImageReadError,
    image_size,
    read_image,
    write_index_png,
    write_png,
)
from semseg.inference.predictor import Prediction, Predictor
from semseg.inference.tta import InputSizeError
from semseg.inference.video import VIDEO_SUFFIXES, VideoReadError, predict_video
from semseg.visualize import overlay

Failure = tuple[Path, str]
"""An input that could not be segmented, and the error message (which names the file)."""


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Files, folders (their images and videos, sorted) and glob patterns -> list of paths,
    each file once (in first-mention order).

    Raises:
        FileNotFoundError: naming an input that matches nothing.
    """
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            suffixes = IMAGE_SUFFIXES + VIDEO_SUFFIXES
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in suffixes)
            if not found:
                raise FileNotFoundError(f"{path}: folder holds no images or videos")
            paths += found
        elif path.is_file():
            paths.append(path)
        else:
            matches = [p for p in sorted(map(Path, glob.glob(item, recursive=True))) if p.is_file()]
            if not matches:
                raise FileNotFoundError(f"{item}: no such file, folder or matching pattern")
            paths += matches
    unique: dict[Path, Path] = {}
    for path in paths:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def output_stems(paths: Sequence[Path]) -> list[str]:
    """A distinct output name per input: the file stem, or ``<stem>_<k>`` with the smallest
    ``k >= 1`` not yet taken where stems repeat (``a.png``, ``b/a.png`` -> ``a``, ``a_1``)."""
    taken: set[str] = set()
    stems = []
    for path in paths:
        stem, k = path.stem, 0
        while stem in taken:
            k += 1
            stem = f"{path.stem}_{k}"
        taken.add(stem)
        stems.append(stem)
    return stems


def check_outputs(inputs: Iterable[Path], outputs: Iterable[Path]) -> None:
    """Raise ValueError naming the file if any output path is one of the inputs."""
    sources = {path.resolve(): path for path in inputs}
    for output in outputs:
        if output.resolve() in sources:
            raise ValueError(
                f"{output}: output would overwrite the input {sources[output.resolve()]}; "
                "choose another --out folder"
            )


def plan_batches(sizes: Sequence[tuple[int, int]], batch_size: int) -> list[list[int]]:
    """Indices of ``sizes`` grouped into batches of at most ``batch_size`` equal sizes, groups
    in order of first appearance: ``[(2, 2), (3, 3), (2, 2)]``, 2 -> ``[[0, 2], [1]]``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    groups: dict[tuple[int, int], list[int]] = {}
    for index, size in enumerate(sizes):
        groups.setdefault(tuple(size), []).append(index)
    return [
        members[start : start + batch_size]
        for members in groups.values()
        for start in range(0, len(members), batch_size)
    ]


def segment_images(
    predictor: Predictor,
    paths: Sequence[Path],
    on_result: Callable[[int, np.ndarray, Prediction], None],
    batch_size: int = 1,
    progress: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    probabilities: bool = False,
) -> list[Failure]:
    """Segment image files in batches of equal-size images; call ``on_result(index, image,
    prediction)`` for each success (``index`` into ``paths``); the predictions carry their
    probabilities when ``probabilities`` is True.

    A file that cannot be decoded, whose header claims more than ``max_pixels`` pixels, or
    that is smaller than the model accepts, is reported and skipped; the others go on.

    Returns:
        (path, reason) of each failed input, in input order.
    """
    failures: dict[int, str] = {}
    sizes: dict[int, tuple[int, int]] = {}
    for index, path in enumerate(paths):
        try:
            sizes[index] = image_size(path, max_pixels)
        except ImageReadError as error:
            failures[index] = str(error)
    indices = list(sizes)
    with tqdm(total=len(indices), desc="predict", unit="img", disable=not progress) as bar:
        for batch in plan_batches([sizes[i] for i in indices], batch_size):
            images: dict[int, np.ndarray] = {}
            for index in (indices[b] for b in batch):
                try:
                    images[index] = read_image(paths[index], max_pixels)
                except ImageReadError as error:
                    failures[index] = str(error)
            bar.update(len(batch))
            if not images:
                continue
            try:
                predictions = predictor.predict_batch(list(images.values()), probabilities)
            except InputSizeError as error:
                failures.update({index: f"{paths[index]}: {error}" for index in images})
                continue
            for (index, image), prediction in zip(images.items(), predictions, strict=True):
                on_result(index, image, prediction)
    return [(paths[index], failures[index]) for index in sorted(failures)]


def predict_files(
    predictor: Predictor,
    paths: Sequence[Path],
    out_dir: Path,
    alpha: float = 0.5,
    batch_size: int = 1,
    probabilities: bool = False,
    confidence: bool = False,
    progress: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> list[Failure]:
    """Segment images and videos, writing into ``out_dir`` per input ``<stem>`` (distinct even
    for equal file stems, see :func:`output_stems`):

    - image: ``<stem>_labels.png`` (index PNG with the class palette), ``<stem>_overlay.png``
      (class colours at opacity ``alpha`` over the image, legend on the right), with
      ``probabilities`` ``<stem>_probabilities.npz`` (``probabilities``: (C, H, W) float16;
      ``class_names``), with ``confidence`` ``<stem>_confidence.png`` (8-bit, top-class
      probability times 255, rounded);
    - video: ``<stem>_overlay<suffix>`` with the input's frame rate and a legend of every class.

    Images are batched ``batch_size`` at a time among images of one size. An input that fails
    (undecodable, over ``max_pixels`` pixels, too small) is skipped and reported; the others go
    on.

    Returns:
        (path, reason) of each failed input, in input order.

    Raises:
        ValueError: before writing anything, when an output path is one of the inputs.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    stems = output_stems(paths)
    kinds = ["labels.png", "overlay.png"]
    kinds += ["probabilities.npz"] * probabilities + ["confidence.png"] * confidence
    images = [i for i, path in enumerate(paths) if not is_video(path)]
    videos = {
        i: out_dir / f"{stems[i]}_overlay{path.suffix.lower()}"
        for i, path in enumerate(paths)
        if is_video(path)
    }
    named = [out_dir / f"{stems[i]}_{kind}" for i in images for kind in kinds]
    check_outputs(paths, [*videos.values(), *named])
    out_dir.mkdir(parents=True, exist_ok=True)

    def write(position: int, image: np.ndarray, prediction: Prediction) -> None:
        stem = out_dir / stems[images[position]]
        write_index_png(f"{stem}_labels.png", prediction.labels, predictor.labels.palette())
        picture = overlay(image, prediction.labels, predictor.labels, alpha=alpha)
        write_png(f"{stem}_overlay.png", picture)
        if probabilities:
            np.savez_compressed(
                f"{stem}_probabilities.npz",
                probabilities=prediction.probabilities.astype(np.float16),
                class_names=np.array(predictor.labels.names),
            )
        if confidence:
            level = np.rint(prediction.confidence * 255).astype(np.uint8)
            write_png(f"{stem}_confidence.png", level)

    failed = segment_images(
        predictor,
        [paths[i] for i in images],
        write,
        batch_size,
        progress,
        max_pixels,
        probabilities or confidence,
    )
    failures = {path: reason for path, reason in failed}
    for index, out_path in videos.items():
        try:
            predict_video(predictor, paths[index], out_path, alpha, batch_size, progress)
        except (VideoReadError, InputSizeError) as error:
            failures[paths[index]] = str(error)
    return [(path, failures[path]) for path in paths if path in failures]
