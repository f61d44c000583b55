"""Reading a segmentation request: the body within the upload limit, the image in it (raw or
multipart), and the output the ``Accept`` header asks for."""

from __future__ import annotations

from fastapi import Request

from semseg.serve.errors import ServeError
from semseg.serve.images import EncodedImage, decoders_for, media_type, read_header
from semseg.serve.multipart import image_field
from semseg.serve.segment import Output
from semseg.serve.settings import ServeSettings


async def read_image(request: Request, settings: ServeSettings) -> EncodedImage:
    """The image of a raw or multipart body, its header read: 415 for a type that is not a
    supported image, 413 over the upload or pixel limits, 400 for a body that is not one."""
    content_type = request.headers.get("content-type", "")
    declared = media_type(content_type)
    multipart = declared == "multipart/form-data"
    decoders = None if multipart else decoders_for(declared)
    body = await read_body(request, settings.max_upload_bytes)
    if multipart:
        body, part_type = image_field(body, content_type)
        decoders = decoders_for(media_type(part_type), untyped_allowed=True)
    return read_header(body, decoders, settings.max_pixels)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as ``Content-Length`` or the bytes received
    pass ``limit``.

    Raises:
        ServeError: 413 over the limit; 400 for a ``Content-Length`` that is not a number.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise ServeError(400, "bad_content_length", f"Content-Length {declared!r}") from None
        if length > limit:
            raise _too_large(f"Content-Length is {length} bytes", limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _too_large(f"the body passed {len(body)} bytes", limit)
    return bytes(body)


def _too_large(what: str, limit: int) -> ServeError:
    return ServeError(
        413, "payload_too_large", f"{what}; this server accepts bodies up to {limit} bytes"
    )


def accepted_output(accept: str | None) -> Output:
    """The output an ``Accept`` header prefers: ``json`` (application/json) or ``labels``
    (image/png); json when absent or tied.

    Raises:
        ServeError: 406 when it accepts neither.
    """
    if not accept or not accept.strip():
        return "json"
    ranges: list[tuple[str, float]] = []
    for entry in accept.split(","):
        kind, *parameters = (part.strip() for part in entry.split(";"))
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    quality = 0.0
        ranges.append((kind.lower(), quality))

    def quality_of(media: str) -> float:
        kind = media.split("/")[0]
        for pattern in (media, f"{kind}/*", "*/*"):  # the most specific range decides
            matches = [q for r, q in ranges if r == pattern]
            if matches:
                return max(matches)
        return 0.0

    json_q, png_q = quality_of("application/json"), quality_of("image/png")
    if json_q <= 0 and png_q <= 0:
        raise ServeError(
            406, "not_acceptable", f"Accept {accept!r} allows neither application/json nor "
            "image/png; or choose with ?output=json|labels|overlay"
        )  # fmt: skip
    return "labels" if png_q > json_q else "json"
