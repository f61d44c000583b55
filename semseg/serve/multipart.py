"""The ``image`` field of a ``multipart/form-data`` body already held in memory."""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from semseg.serve.errors import ServeError

FIELD = "image"


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)


def image_field(body: bytes, content_type: str) -> tuple[bytes, str]:
    """The bytes and declared media type (``""`` when the part has none) of the one field
    named ``image``.

    Raises:
        ServeError: 400 when the body has no boundary, does not parse, or has no (or more than
            one) ``image`` field.
    """
    _, parameters = parse_options_header(content_type)
    boundary = parameters.get(b"boundary")
    if not boundary:
        raise ServeError(400, "bad_multipart", "multipart/form-data without a boundary parameter")
    parts: list[_Part] = []
    header: list[bytearray] = [bytearray(), bytearray()]

    def on_header_end() -> None:
        parts[-1].headers[bytes(header[0]).strip().lower()] = bytes(header[1]).strip()
        header[0].clear()
        header[1].clear()

    callbacks = {
        "on_part_begin": lambda: parts.append(_Part()),
        "on_part_data": lambda data, start, end: parts[-1].data.extend(data[start:end]),
        "on_header_field": lambda data, start, end: header[0].extend(data[start:end]),
        "on_header_value": lambda data, start, end: header[1].extend(data[start:end]),
        "on_header_end": on_header_end,
    }
    parser = MultipartParser(boundary, callbacks)
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError as error:
        raise ServeError(
            400, "bad_multipart", f"the multipart body does not parse ({error})"
        ) from None
    images = [part for part in parts if _field_name(part) == FIELD]
    if len(images) != 1:
        names = [name for name in map(_field_name, parts) if name is not None]
        found = "more than one" if images else "no"
        raise ServeError(
            400,
            "missing_image_field" if not images else "bad_multipart",
            f"the multipart body has {found} field named {FIELD!r} (fields: {names})",
        )
    declared = images[0].headers.get(b"content-type", b"").decode("latin-1")
    return bytes(images[0].data), declared


def _field_name(part: _Part) -> str | None:
    _, parameters = parse_options_header(part.headers.get(b"content-disposition", b""))
    name = parameters.get(b"name")
    return name.decode("utf-8", "replace") if name is not None else None
