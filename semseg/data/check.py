"""Checking a dataset before training: every problem at once, with a count per kind.

Training reads a sample when its batch comes, so a bad file used to stop a run in the middle
of an epoch, one file per run. :func:`check_dataset` looks at every sample of the splits
first and lists what it finds (``semseg check``; the trainer runs it before it starts):

- ``undecodable``: an image or mask that is missing, not an image, truncated or corrupt.
  Images are not decoded in full: a PNG's chunks are read to the end with their checksums
  (``Image.verify``), a JPEG is decoded at 1/8 scale (it still reads every byte), other
  formats are decoded.
- ``oversized``: a header claiming more than ``max_pixels`` pixels (a decompression bomb).
- ``mask_mode``: an index mask that is not single-channel.
- ``mask_size``: a mask whose size is not its image's.
- ``label_values``: mask values (or colours) that are neither a class nor void.
- ``image_without_mask``, ``mask_without_image``: files the layout cannot pair.

Masks are decoded (their values are the point); images are read from their headers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from tqdm import tqdm

from semseg.data.formats import DatasetError, Sample, SplitFiles, list_split, list_splits
from semseg.data.io import (
    DEFAULT_MAX_PIXELS,
    ImageReadError,
    ImageTooLargeError,
    MaskModeError,
    image_size,
    open_image,
    read_mask,
)
from semseg.labels import LabelError

T = TypeVar("T")

PROBLEM_KINDS = {
    "undecodable": "undecodable or truncated",
    "oversized": "over the pixel limit",
    "mask_mode": "mask of the wrong mode",
    "mask_size": "mask of the wrong size",
    "label_values": "label values outside the classes",
    "image_without_mask": "image without a mask",
    "mask_without_image": "mask without an image",
}
"""Problem kind -> what it means, in the order reports list them."""


class DatasetCheckError(DatasetError):
    """A dataset has problems; the message lists every one and a count per kind."""


@dataclass(frozen=True)
class Problem:
    """One problem: its kind (a key of :data:`PROBLEM_KINDS`) and a message naming the file."""

    kind: str
    message: str


@dataclass
class DatasetCheck:
    """What :func:`check_dataset` found.

    Attributes:
        root: the dataset folder.
        splits: the splits checked.
        samples: image and mask pairs checked.
        problems: every problem, split by split, in file order.
    """

    root: Path
    splits: tuple[str, ...]
    samples: int = 0
    problems: list[Problem] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Problem kind -> count, for the kinds found, in :data:`PROBLEM_KINDS` order."""
        found = Counter(problem.kind for problem in self.problems)
        return {kind: found[kind] for kind in PROBLEM_KINDS if found[kind]}

    def summary(self) -> str:
        """One line of totals, then one line per kind found."""
        splits = ", ".join(self.splits)
        total = len(self.problems)
        lines = [
            f"{self.root}: {self.samples} samples checked in {splits}; "
            + (f"{total} problem{'s' * (total != 1)}" if total else "no problems")
        ]
        lines += [f"  {count:>6}  {PROBLEM_KINDS[kind]}" for kind, count in self.counts().items()]
        return "\n".join(lines)

    def __str__(self) -> str:
        lines = [f"{PROBLEM_KINDS[p.kind]}: {p.message}" for p in self.problems]
        return "\n".join([*lines, self.summary()])

    def raise_for_problems(self) -> None:
        """Raise :class:`DatasetCheckError` listing every problem, if there is any."""
        if self.problems:
            raise DatasetCheckError(str(self))


def check_dataset(
    root: str | Path,
    splits: Sequence[str] | None = None,
    data_format: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = False,
) -> DatasetCheck:
    """Check every sample of ``splits`` (default: every split present) of the dataset at
    ``root`` in ``data_format`` (detected when None).

    Raises:
        DatasetError: the layout itself is wrong (no such folder, an empty split, a bad
            ``labels.yaml``): nothing can be paired to check.
    """
    root = Path(root)
    splits = tuple(splits) if splits is not None else tuple(list_splits(root, data_format))
    if not splits:
        raise DatasetError(f"{root}: no splits found to check")
    result = DatasetCheck(root, splits)
    for split in splits:
        files = list_split(root, split, data_format, strict=False)
        result.samples += len(files.samples)
        result.problems += check_split(files, max_pixels, progress, description=f"check {split}")
    return result


def check_split(
    files: SplitFiles,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = False,
    description: str = "check",
) -> list[Problem]:
    """Every problem of one split's files (see the module docstring)."""
    problems = [Problem("image_without_mask", f"{path}") for path in files.images_without_masks]
    problems += [Problem("mask_without_image", f"{path}") for path in files.masks_without_images]
    for sample in tqdm(files.samples, desc=description, disable=not progress, leave=False):
        problems += check_sample(sample, files, max_pixels)
    return problems


def check_sample(sample: Sample, files: SplitFiles, max_pixels: int) -> list[Problem]:
    """The problems of one image and its mask."""
    problems = []
    image = _attempt(problems, lambda: _intact_image_size(sample.image, max_pixels))
    mask = _attempt(problems, lambda: image_size(sample.mask, max_pixels))
    if mask is None:
        return problems
    if image is not None and mask != image:
        problems.append(
            Problem(
                "mask_size",
                f"{sample.mask}: mask is {mask[1]}x{mask[0]} (WxH) but its image "
                f"{sample.image} is {image[1]}x{image[0]}",
            )
        )
    _attempt(problems, lambda: read_mask(sample.mask, files.labels, files.colour_masks, max_pixels))
    return problems


def _attempt(problems: list[Problem], read: Callable[[], T]) -> T | None:
    """``read()``'s result, or None with its failure appended to ``problems`` by kind."""
    try:
        return read()
    except ImageTooLargeError as error:
        problems.append(Problem("oversized", str(error)))
    except MaskModeError as error:
        problems.append(Problem("mask_mode", str(error)))
    except ImageReadError as error:
        problems.append(Problem("undecodable", str(error)))
    except LabelError as error:
        problems.append(Problem("label_values", str(error)))
    return None


def _intact_image_size(path: Path, max_pixels: int) -> tuple[int, int]:
    """(height, width) of an image whose data is all there, without decoding it in full: a
    PNG's chunks are read to the end and their CRCs checked, a JPEG is decoded at 1/8 scale
    (the decoder still reads every byte, so a truncated file fails), others are decoded."""
    with open_image(path, max_pixels) as image:
        width, height = image.size
        if image.format == "PNG":
            image.verify()
        else:
            image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
            image.load()
    return height, width
