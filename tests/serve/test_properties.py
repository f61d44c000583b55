"""Property-based: requests drawn from the app's own OpenAPI schema (its paths, methods,
query parameters and body media types) plus arbitrary ones never get a 500, and every
error is the documented JSON."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from semseg.checkpoint import Checkpoint
from semseg.serve.app import create_app
from semseg.serve.settings import ServeSettings

from .support import LiveApp, encode, flip_bytes


@pytest.fixture(scope="module")
def live(predictor, checkpoint):
    limits = ServeSettings(max_pixels=64 * 64, max_upload_mb=0.02, drivable_classes=(3,))
    live = LiveApp(create_app(predictor, limits, Checkpoint.load(checkpoint)))
    live.wait_ready()
    yield live
    live.close()


@pytest.fixture(scope="module")
def schema(live):
    return live.get("/openapi.json").json()


TEXT = st.text(st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=30)


def parameter_values(parameter: dict) -> st.SearchStrategy:
    """Mostly values the schema allows (its enums, numbers within its bounds), else any."""
    spec = parameter.get("schema", {})
    options = [spec, *spec.get("anyOf", [])]
    allowed = [st.sampled_from(o["enum"]) for o in options if "enum" in o]
    for option in options:
        if option.get("type") == "number":
            low, high = option.get("minimum"), option.get("maximum")
            allowed.append(st.floats(low, high).map(str))
            allowed.append(st.floats(allow_nan=True, allow_infinity=True).map(repr))
    return st.one_of(*allowed, *allowed, TEXT) if allowed else TEXT


def images() -> st.SearchStrategy[bytes]:
    flips = st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), max_size=3)
    return st.builds(lambda image, flips: flip_bytes(image[1], flips), well_formed_images(), flips)


def well_formed_images() -> st.SearchStrategy[tuple[str, bytes]]:
    """(media type, file bytes) of a random-noise image of 1 to 80 pixels a side."""

    def picture(height, width, seed, kind):
        image = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
        return kind, encode(image, kind.removeprefix("image/").upper())

    side = st.integers(1, 80)
    kinds = st.sampled_from(["image/png", "image/jpeg", "image/webp"])
    return st.builds(picture, side, side, st.integers(0, 99), kinds)


@st.composite
def requests(draw, schema, path=None, method=None):
    paths = schema["paths"]
    if path is None:
        path = draw(st.sampled_from([*paths, "/", "/static/app.js", "/nope", "/v1/segment/x"]))
    documented = [m.upper() for m in paths.get(path, {})]
    if method is None:
        method = draw(st.sampled_from(documented) if documented and draw(st.booleans())
                      else st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]))  # fmt: skip
    operation = paths.get(path, {}).get(method.lower(), {})
    if path == "/v1/segment" and method == "POST" and draw(st.booleans()):
        kind, body = draw(well_formed_images())
        query = {"output": draw(st.sampled_from(["json", "labels", "overlay"]))}
        return method, path, {"params": query, "headers": {"Content-Type": kind}, "content": body}
    query = {
        p["name"]: draw(parameter_values(p))
        for p in operation.get("parameters", [])
        if p["in"] == "query" and draw(st.booleans())
    }
    if draw(st.booleans()):
        query[draw(TEXT)] = draw(TEXT)
    body_types = list(operation.get("requestBody", {}).get("content", {}))
    other_kinds = st.sampled_from(["text/plain", "", "image/gif"]) | TEXT
    kind = draw(st.sampled_from(body_types) | other_kinds if body_types else other_kinds)
    headers = {"Content-Type": kind} if kind else {}
    if draw(st.booleans()):
        accepts = ["application/json", "image/png", "*/*", "text/html", "image/png;q=x"]
        headers["Accept"] = draw(st.sampled_from(accepts) | TEXT)
    if draw(st.booleans()):
        headers["Authorization"] = draw(TEXT)
    body = draw(st.one_of(st.binary(max_size=2000), images(), images()))
    if kind.startswith("multipart/form-data") and draw(st.booleans()):
        name = draw(st.sampled_from(["image", "file"]) | TEXT)
        part = draw(st.sampled_from(["image/png", "application/octet-stream", "text/plain"]))
        files = {name: ("f", body, part)}
        return method, path, {"params": query, "files": files}
    raw_headers = {name: value.encode("latin-1") for name, value in headers.items()}
    return method, path, {"params": query, "headers": raw_headers, "content": body}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_no_request_gets_a_500(live, schema, data):
    check(live, schema, *data.draw(requests(schema)))


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_no_segmentation_request_gets_a_500(live, schema, data):
    check(live, schema, *data.draw(requests(schema, "/v1/segment", "POST")))


def check(live, schema, method, path, arguments):
    response = live.request(method, path, **arguments)
    event(f"{method} {path if path in schema['paths'] else 'other'} -> {response.status_code}")
    assert response.status_code < 500, (response.status_code, response.text)
    media = response.headers.get("content-type", "").split(";")[0]
    if response.status_code >= 400:
        assert media == "application/json"
        error = response.json()["error"]
        assert isinstance(error["code"], str) and isinstance(error["message"], str)
        return
    operation = schema["paths"].get(path, {}).get(method.lower())
    if operation is not None:
        documented = operation["responses"]["200"].get("content", {})
        assert media in documented, (path, media, list(documented))
