"""Request bodies to images: media types, the header-only size check, decoding, multipart."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from semseg.data.synthetic import render_scene
from semseg.serve.errors import ServeError
from semseg.serve.images import decode, decoders_for, media_type, read_header
from semseg.serve.multipart import image_field

from .support import encode, flip_bytes
from .test_app import png_header_claiming

SCENE = render_scene(11, 40, 56)[0]
PNG = encode(SCENE)


def test_media_types_choose_one_decoder():
    assert media_type("Image/PNG; charset=binary") == "image/png"
    assert decoders_for("image/jpeg") == ("JPEG",)
    assert decoders_for("", untyped_allowed=True) == ("PNG", "JPEG", "WEBP")
    for refused in ("image/gif", "image/tiff", "text/plain", "", "image/svg+xml"):
        with pytest.raises(ServeError) as caught:
            decoders_for(refused)
        assert caught.value.status == 415


def test_a_decompression_bomb_is_refused_from_its_header_without_allocating():
    bomb = png_header_claiming(60000, 60000)  # 10.8 GB of RGB pixels
    tracemalloc.start()
    try:
        with pytest.raises(ServeError) as caught:
            read_header(bomb, ("PNG",), max_pixels=10**9)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.status == 413 and caught.value.code == "too_many_pixels"
    assert peak < 1_000_000  # bytes: the pixels were never allocated
    with pytest.raises(ServeError, match="3000x2000 = 6000000 pixels.* at most 5999999"):
        read_header(png_header_claiming(3000, 2000), ("PNG",), max_pixels=5_999_999)


def test_header_then_pixels():
    header = read_header(PNG, ("PNG",), 10**6)
    assert (header.format, header.height, header.width) == ("PNG", 40, 56)
    np.testing.assert_array_equal(decode(header), SCENE)
    truncated = read_header(PNG[: len(PNG) // 2], ("PNG",), 10**6)  # the header is intact
    with pytest.raises(ServeError, match="cannot decode the PNG image") as caught:
        decode(truncated)
    assert caught.value.status == 400


def test_modes_are_converted_as_pillow_converts_them():
    palette = Image.fromarray(SCENE).quantize(16)
    for image in (palette, Image.fromarray(SCENE).convert("LA"), Image.fromarray(SCENE[..., 0])):
        body = encode(np.asarray(image)) if image.mode != "P" else _save(image)
        decoded = decode(read_header(body, ("PNG",), 10**6))
        np.testing.assert_array_equal(decoded, np.asarray(image.convert("RGB")))


def _save(image: Image.Image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_body_of_another_format_is_named():
    with pytest.raises(ServeError, match="is a JPEG image but was declared as PNG"):
        read_header(encode(SCENE, "JPEG"), ("PNG",), 10**6)
    with pytest.raises(ServeError, match="is not a PNG image"):
        read_header(b"GIF89a" + b"\0" * 40, ("PNG",), 10**6)


@settings(max_examples=150, deadline=None)
@given(
    data=st.one_of(
        st.binary(max_size=300),
        st.builds(
            lambda cut, flips: flip_bytes(PNG[:cut], flips),
            st.integers(1, len(PNG)),
            st.lists(st.tuples(st.integers(0, len(PNG) - 1), st.integers(1, 255)), max_size=6),
        ),
    )
)
def test_any_bytes_give_an_image_or_a_serve_error(data):
    try:
        header = read_header(data, ("PNG", "JPEG", "WEBP"), 10**5)
        image = decode(header)
    except ServeError as error:
        assert error.status in (400, 413) and error.message
    else:
        assert image.shape == (header.height, header.width, 3) and image.dtype == np.uint8


def multipart(*parts: tuple[str, str, bytes], boundary: str = "b0undary") -> tuple[bytes, str]:
    body = b""
    for name, kind, data in parts:
        disposition = f'Content-Disposition: form-data; name="{name}"; filename="f"'
        head = f"--{boundary}\r\n{disposition}\r\nContent-Type: {kind}\r\n\r\n"
        body += head.encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_multipart_image_field():
    body, kind = multipart(("note", "text/plain", b"hi"), ("image", "image/png", PNG))
    assert image_field(body, kind) == (PNG, "image/png")
    for parts, match in (
        ([("note", "text/plain", b"hi")], "no field named 'image'.*'note'"),
        ([("image", "image/png", PNG)] * 2, "more than one field named 'image'"),
    ):
        with pytest.raises(ServeError, match=match) as caught:
            image_field(*multipart(*parts))
        assert caught.value.status == 400
    with pytest.raises(ServeError, match="without a boundary"):
        image_field(body, "multipart/form-data")
