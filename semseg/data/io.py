"""Reading images and masks from disk, with errors that name the file."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from semseg.labels import LabelError, LabelSet

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
INDEX_MASK_MODES = ("L", "P", "I;16", "I")
"""Pillow modes of single-channel masks whose pixel values are raw label ids."""

DEFAULT_MAX_PIXELS = 2**27
"""Images whose header claims more pixels than this (134 megapixels, 384 MiB decoded as RGB)
are refused before decoding: a small file can claim a huge image (a decompression bomb).
Pillow's own ceiling, twice ``PIL.Image.MAX_IMAGE_PIXELS`` (178,956,970 pixels unless changed),
stays in force above any ``max_pixels``; Pillow warns from ``MAX_IMAGE_PIXELS`` up."""


class ImageReadError(OSError):
    """An image or mask file could not be decoded."""


class ImageTooLargeError(ImageReadError):
    """An image's header claims more pixels than the limit; nothing was decoded."""


class MaskModeError(ImageReadError):
    """A mask that should hold label ids is not a single-channel image."""


@contextmanager
def open_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator[Image.Image]:
    """Open ``path`` with Pillow, its size checked against ``max_pixels`` from the header; the
    pixels are decoded only when the ``with`` body asks for them, and the file is closed after.

    Raises:
        ImageTooLargeError: the header claims more than ``max_pixels`` pixels (or more than
            Pillow's own ceiling).
        ImageReadError: naming the file, when it is missing or cannot be decoded, also when
            decoding fails inside the ``with`` body.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:  # the block closes the file, also when decoding fails
            width, height = image.size
            if width * height > max_pixels:
                raise ImageTooLargeError(
                    f"{path}: {width}x{height} image ({width * height:,} pixels) is over the "
                    f"limit of {max_pixels:,} pixels; refused before decoding (raise "
                    "--max-pixels / max_pixels for a file you trust)"
                )
            yield image
    except ImageReadError:
        raise
    except FileNotFoundError:
        raise ImageReadError(f"{path}: file not found") from None
    except Image.DecompressionBombError as error:
        raise ImageTooLargeError(
            f"{path}: refused before decoding: {str(error).rstrip('.')}; the limit is "
            f"{max_pixels:,} pixels (--max-pixels / max_pixels) and Pillow's own applies above it"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageReadError(f"{path}: cannot decode image ({error})") from None


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux's MemAvailable); None where the
    system does not say."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def image_size(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(height, width) of an image from its header, without decoding the pixels.

    Raises:
        ImageTooLargeError, ImageReadError: as :func:`open_image`.
    """
    with open_image(path, max_pixels) as image:
        width, height = image.size
    return height, width


def read_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB (greyscale and RGBA are converted), writable.

    Raises:
        ImageTooLargeError: the header claims more than ``max_pixels`` pixels.
        ImageReadError: naming the file, when it is missing, truncated or not an image.
    """
    with open_image(path, max_pixels) as image:
        decoded = _decode_rgb_png(image)
        return decoded if decoded is not None else np.array(image.convert("RGB"))


def _decode_rgb_png(image: Image.Image) -> np.ndarray | None:
    """The pixels of an 8-bit RGB PNG (the usual dataset frame) decoded by OpenCV, which took
    4.1-4.6 ms for a 360x480 CamVid frame where Pillow and its copy to an array took 6.4-6.9
    (2-core AMD EPYC); the same pixels, a lossless format. None for any other image, and for
    a file OpenCV cannot decode, which Pillow then decodes or names in its error."""
    if image.format != "PNG" or image.mode != "RGB" or image.tile[0].args != "RGB":
        return None  # palette, grey, alpha and 16-bit PNGs keep Pillow's conversions
    image.fp.seek(0)  # the file Pillow has open; its own decoding seeks to its data again
    data = np.frombuffer(image.fp.read(), np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if bgr is None or bgr.shape != (image.height, image.width, 3):
        return None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_mask(
    path: str | Path,
    labels: LabelSet,
    colour: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Read a mask and map it to train ids.

    Args:
        path: index PNG (mode L or P: pixel values are raw label ids) or, with ``colour``, an
            RGB PNG whose colours are looked up in ``labels.colours``.
        labels: the dataset's label set; raw values are remapped through it.
        colour: the mask stores colours instead of indices.
        max_pixels: refuse a mask whose header claims more pixels than this.

    Returns:
        (H, W) uint8 train ids, ``IGNORE_INDEX`` for void pixels.

    Raises:
        MaskModeError: an index mask that is not single-channel.
        LabelError: values (or colours) that are not classes of ``labels``.
        ImageTooLargeError, ImageReadError: as :func:`read_image`.
    """
    path = Path(path)
    with open_image(path, max_pixels) as image:
        if colour:
            rgb = np.asarray(image.convert("RGB"))
        elif image.mode not in INDEX_MASK_MODES:
            raise MaskModeError(
                f"{path}: mask has mode {image.mode!r}; expected a single-channel index PNG "
                "(mode L or P), or declare the dataset's masks as colour masks"
            )
        else:
            raw = np.asarray(image)
    if colour:
        return labels.encode_colour(rgb, source=str(path))
    if raw.dtype != np.uint8:
        if raw.min() < 0 or raw.max() > 255:
            raise LabelError(f"{path}: mask values {raw.min()}..{raw.max()} exceed 0..255")
        raw = raw.astype(np.uint8)
    return labels.encode(raw, source=str(path))


PNG_COMPRESS_LEVEL = 1
"""zlib level of the PNGs semseg writes. Pillow's default, 6, took 147 ms for a 360x480 CamVid
frame on one thread of the AMX Xeon, as long as the real-time model's inference; level 1 took
43 ms for files 7% larger (3 took 76 ms)."""


def write_png(path: str | Path | BinaryIO, image: np.ndarray | Image.Image) -> None:
    """Write an (H, W) or (H, W, 3) uint8 array, or a PIL image, as a PNG (to a path or a
    binary file) at :data:`PNG_COMPRESS_LEVEL`."""
    picture = image if isinstance(image, Image.Image) else Image.fromarray(image)
    picture.save(path, format="PNG", compress_level=PNG_COMPRESS_LEVEL)


def write_index_png(
    path: str | Path | BinaryIO, labels: np.ndarray, palette: np.ndarray | None = None
) -> None:
    """Write (H, W) uint8 label ids as a PNG (to a path or a binary file); a palette PNG when
    ``palette`` (256, 3) is given."""
    image = Image.fromarray(labels.astype(np.uint8))
    if palette is not None:
        image.putpalette(palette.astype(np.uint8).reshape(-1).tolist())
    write_png(path, image)
