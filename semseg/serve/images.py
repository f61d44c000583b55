"""Request bodies to images: the declared media type, the size read from the image header
before any pixel is decoded, then the pixels.

Only PNG, JPEG and WebP are opened, and only with the decoder the declared type names, so a
body cannot reach Pillow's other format plugins. The pixel cap is checked on the header:
a decompression bomb (a small file whose header claims 60000 x 60000 pixels) is refused
without allocating its pixels.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from semseg.serve.errors import ServeError

FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}
"""Media type -> the Pillow decoder that may open it."""

UNTYPED = ("application/octet-stream", "")
"""Media types of a multipart file whose format is not declared: any of :data:`FORMATS`."""


@dataclass(frozen=True, eq=False)
class EncodedImage:
    """An image body whose header has been read: ``format`` is the Pillow format name."""

    data: bytes
    format: str
    height: int
    width: int


def media_type(content_type: str | None) -> str:
    """``"image/png"`` of ``"Image/PNG; charset=x"``; ``""`` when absent."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def decoders_for(declared: str, untyped_allowed: bool = False) -> tuple[str, ...]:
    """The Pillow formats that may open a body declared as ``declared`` (a media type).

    Raises:
        ServeError: 415 when ``declared`` is not one of :data:`FORMATS` (nor, with
            ``untyped_allowed``, one of :data:`UNTYPED`).
    """
    if declared in FORMATS:
        return (FORMATS[declared],)
    if untyped_allowed and declared in UNTYPED:
        return tuple(FORMATS.values())
    shown = declared or "no Content-Type"
    raise ServeError(
        415,
        "unsupported_media_type",
        f"{shown} is not a supported image type; send {', '.join(FORMATS)}"
        + (" or multipart/form-data with a field named 'image'" if not untyped_allowed else ""),
    )


def read_header(data: bytes, decoders: tuple[str, ...], max_pixels: int) -> EncodedImage:
    """The format and size of an image body, from its header only.

    Raises:
        ServeError: 400 for an empty body or one that is not an image of ``decoders``' formats
            (saying which format it is when it is another supported one); 413 when the header
            claims more than ``max_pixels`` pixels.
    """
    if not data:
        raise ServeError(400, "empty_body", "the request body is empty; send an image")
    try:
        with Image.open(io.BytesIO(data), formats=decoders) as image:
            width, height = image.size
            found = image.format
    except Image.DecompressionBombError as error:
        claimed = f"more pixels than Pillow's decompression-bomb limit ({error})"
        raise _too_many_pixels(claimed, max_pixels) from None
    except UnidentifiedImageError:
        raise ServeError(400, "undecodable_image", _not_a(data, decoders)) from None
    except Exception as error:  # Pillow's header parsers raise assorted types
        raise ServeError(
            400, "undecodable_image", f"cannot read the image header ({error})"
        ) from None
    if width * height > max_pixels:
        raise _too_many_pixels(f"{width}x{height} = {width * height} pixels", max_pixels)
    return EncodedImage(data, found, height, width)


def decode(image: EncodedImage) -> np.ndarray:
    """(H, W, 3) uint8 RGB pixels of ``image`` (greyscale, palette and RGBA converted as
    ``semseg predict`` converts them).

    Raises:
        ServeError: 400 when the pixel data is truncated or corrupt.
    """
    try:
        with Image.open(io.BytesIO(image.data), formats=(image.format,)) as opened:
            opened.load()
            return np.array(opened.convert("RGB"))
    except MemoryError:
        raise
    except Exception as error:  # Pillow's decoders raise OSError, SyntaxError, ValueError...
        raise ServeError(
            400, "undecodable_image", f"cannot decode the {image.format} image ({error})"
        ) from None


def _too_many_pixels(claimed: str, max_pixels: int) -> ServeError:
    return ServeError(
        413,
        "too_many_pixels",
        f"the image header claims {claimed}; this server accepts at most {max_pixels} pixels",
    )


def _not_a(data: bytes, decoders: tuple[str, ...]) -> str:
    """Why ``data`` did not open with ``decoders``: another supported format, or none."""
    expected = " or ".join(decoders)
    others = tuple(f for f in FORMATS.values() if f not in decoders)
    if others:
        try:
            with Image.open(io.BytesIO(data), formats=others) as image:
                return (
                    f"the body is a {image.format} image but was declared as {expected}; "
                    "send it with its own Content-Type"
                )
        except Exception:  # not one of the others either
            pass
    return f"the body is not a {expected} image"
