"""Reading images and masks from disk, with errors that name the file."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from semseg.labels import LabelSet

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class ImageReadError(OSError):
    """An image or mask file could not be decoded."""


def _open(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:  # the block closes the file, also when decoding fails
            image.load()  # decode now: a truncated file fails here, not later in a worker
    except FileNotFoundError:
        raise ImageReadError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageReadError(f"{path}: cannot decode image ({error})") from None
    return image


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB (greyscale and RGBA are converted), writable."""
    return np.array(_open(Path(path)).convert("RGB"))


def read_mask(path: str | Path, labels: LabelSet, colour: bool = False) -> np.ndarray:
    """Read a mask and map it to train ids.

    Args:
        path: index PNG (mode L or P: pixel values are raw label ids) or, with ``colour``, an
            RGB PNG whose colours are looked up in ``labels.colours``.
        labels: the dataset's label set; raw values are remapped through it.
        colour: the mask stores colours instead of indices.

    Returns:
        (H, W) uint8 train ids, ``IGNORE_INDEX`` for void pixels.
    """
    path = Path(path)
    image = _open(path)
    if colour:
        return labels.encode_colour(np.asarray(image.convert("RGB")), source=str(path))
    if image.mode not in ("L", "P", "I;16", "I"):
        raise ImageReadError(
            f"{path}: mask has mode {image.mode!r}; expected a single-channel index PNG "
            "(mode L or P), or declare the dataset's masks as colour masks"
        )
    raw = np.asarray(image)
    if raw.dtype != np.uint8:
        if raw.min() < 0 or raw.max() > 255:
            raise ImageReadError(f"{path}: mask values {raw.min()}..{raw.max()} exceed 0..255")
        raw = raw.astype(np.uint8)
    return labels.encode(raw, source=str(path))


def write_index_png(
    path: str | Path | BinaryIO, labels: np.ndarray, palette: np.ndarray | None = None
) -> None:
    """Write (H, W) uint8 label ids as a PNG (to a path or a binary file); a palette PNG when
    ``palette`` (256, 3) is given."""
    image = Image.fromarray(labels.astype(np.uint8))
    if palette is not None:
        image.putpalette(palette.astype(np.uint8).reshape(-1).tolist())
    image.save(path, format="PNG")
