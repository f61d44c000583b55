"""The API through httpx's ASGI transport: every endpoint and output, each error status with
the inputs that produce it, the API key, queueing (503) and timeouts (504)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import struct
import zlib

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from semseg.cli import main
from semseg.data.synthetic import render_scene
from semseg.inference.drivable import extract_drivable
from semseg.serve.schemas import ModelInfo, SegmentResult
from semseg.visualize import overlay

from .support import HeldPredictor, encode, wait_until

ROAD = 3  # the synthetic label set's Road
LIMITS = {"max_pixels": 100 * 100, "max_upload_mb": 0.05, "drivable_classes": (ROAD,)}


@pytest.fixture
def live(serve, predictor):
    return serve(predictor, **LIMITS)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_header_claiming(width: int, height: int) -> bytes:
    """A 100-byte PNG whose header claims ``width x height`` RGB pixels (a decompression bomb:
    its one IDAT chunk holds a few compressed zero bytes)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
            + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b""))  # fmt: skip


def post_image(live, body: bytes, content_type: str = "image/png", query: str = "", **kwargs):
    return live.post(f"/v1/segment{query}", content=body,
                     headers={"Content-Type": content_type, **kwargs.pop("headers", {})},
                     **kwargs)  # fmt: skip


def assert_error(response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    return error["message"]


def test_json_output_matches_the_predictor(live, predictor, scene_png):
    response = post_image(live, scene_png)
    assert response.status_code == 200, response.text
    result = response.json()
    SegmentResult.model_validate(result)
    image = np.array(Image.open(io.BytesIO(scene_png)))
    expected = predictor.predict(image).labels
    labels = np.asarray(Image.open(io.BytesIO(base64.b64decode(result["labels_png"]))))
    assert (result["height"], result["width"]) == (61, 77) == labels.shape
    np.testing.assert_array_equal(labels, expected)
    shares = [c["fraction"] for c in result["classes"]]
    np.testing.assert_allclose(shares, np.bincount(expected.ravel(), minlength=8) / expected.size)
    assert [c["name"] for c in result["classes"]] == list(predictor.labels.names)
    assert result["classes"][ROAD]["color"] == "#" + bytes(predictor.labels.colours[ROAD]).hex()
    space = extract_drivable(expected, drivable_classes=(ROAD,))
    assert result["drivable"]["fraction"] == pytest.approx(space.mask.mean())
    assert result["drivable"]["boundary"] == space.boundary.tolist()
    assert result["drivable"]["polygon"] == [[x, y] for x, y in space.polygon]
    assert set(result["timing_ms"]) == {"queue", "decode", "inference", "encode"}
    assert all(value >= 0 for value in result["timing_ms"].values())
    stages = [part.split(";")[0] for part in response.headers["server-timing"].split(", ")]
    assert stages == ["queue", "decode", "inference", "encode"]


def test_drivable_is_null_without_drivable_classes(serve, predictor, scene_png):
    live = serve(predictor)
    assert post_image(live, scene_png).json()["drivable"] is None
    assert live.get("/v1/model").json()["drivable_classes"] is None


def test_labels_png_equals_what_semseg_predict_writes(live, checkpoint, scene_png, tmp_path):
    (tmp_path / "scene.png").write_bytes(scene_png)
    arguments = [
        "predict",
        "--checkpoint",
        checkpoint,
        tmp_path / "scene.png",
        "--out",
        tmp_path,
        "--backend",
        "torch",
        "--precision",
        "fp32",
    ]  # the served predictor's engine
    result = CliRunner().invoke(main, [str(a) for a in arguments])
    assert result.exit_code == 0, result.output
    written = (tmp_path / "scene_labels.png").read_bytes()
    labels = post_image(live, scene_png, query="?output=labels")
    assert labels.status_code == 200
    assert labels.headers["content-type"] == "image/png"
    assert labels.content == written
    in_json = base64.b64decode(post_image(live, scene_png).json()["labels_png"])
    assert in_json == written
    decoded = Image.open(io.BytesIO(labels.content))
    assert decoded.mode == "P" and decoded.size == (77, 61)


def test_overlay_output_is_the_visualize_overlay(live, predictor, scene_png):
    response = post_image(live, scene_png, query="?output=overlay&alpha=0.25")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    image = np.array(Image.open(io.BytesIO(scene_png)))
    expected = overlay(image, predictor.predict(image).labels, predictor.labels, alpha=0.25)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(response.content))), expected)


def test_multipart_upload_and_accept_header(live, scene_png):
    files = {"image": ("../../etc/passwd", scene_png, "image/png")}
    assert live.post("/v1/segment", files=files).json()["width"] == 77
    untyped = {"image": ("x", scene_png, "application/octet-stream")}
    assert live.post("/v1/segment", files=untyped).status_code == 200
    as_png = post_image(live, scene_png, headers={"Accept": "image/png"})
    assert as_png.headers["content-type"] == "image/png"
    prefers_json = "image/png;q=0.5, application/json"
    assert post_image(live, scene_png, headers={"Accept": prefers_json}).json()["width"] == 77
    assert post_image(live, scene_png, headers={"Accept": "*/*"}).json()["width"] == 77
    query_wins = post_image(live, scene_png, query="?output=json", headers={"Accept": "image/png"})
    assert query_wins.headers["content-type"] == "application/json"
    assert_error(post_image(live, scene_png, headers={"Accept": "text/html"}), 406,
                 "not_acceptable")  # fmt: skip


def test_rgba_greyscale_jpeg_and_webp_images(live, predictor):
    rgb = render_scene(7, 48, 64)[0]
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)])
    grey = rgb.mean(axis=2).astype(np.uint8)
    cases = [(encode(rgba), "image/png", rgb), (encode(grey), "image/png", np.dstack([grey] * 3))]
    for body, kind, seen in cases:
        labels = post_image(live, body, kind, "?output=labels")
        assert labels.status_code == 200, labels.text
        expected = predictor.predict(seen).labels
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(labels.content))), expected)
    for fmt, kind in (("JPEG", "image/jpeg"), ("WEBP", "image/webp")):
        response = post_image(live, encode(rgb, fmt), kind)
        assert response.status_code == 200, response.text
        assert (response.json()["height"], response.json()["width"]) == (48, 64)


def test_model_endpoint(live, checkpoint, predictor):
    info = live.get("/v1/model").json()
    ModelInfo.model_validate(info)
    assert info["name"] == "unet" and info["backend"] == "torch"
    assert info["precision"] == "fp32" and info["output_stride"] == 4
    assert info["checkpoint"] == {
        "file": "best.pt",
        "sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest(),
    }
    assert [c["name"] for c in info["classes"]] == list(predictor.labels.names)
    assert info["normalisation"] == {"mean": list(predictor.mean), "std": list(predictor.std)}
    assert info["drivable_classes"] == ["Road"]
    assert info["limits"]["max_pixels"] == 10_000


def test_health_readiness_metrics_and_openapi(live, scene_png):
    assert live.get("/healthz").json() == {"status": "alive"}
    assert live.get("/readyz").json() == {"status": "ready"}
    post_image(live, scene_png)
    post_image(live, b"")
    metrics = live.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert 'semseg_http_requests_total{handler="/v1/segment",method="POST",status="200"} 1' in text
    assert 'semseg_http_requests_total{handler="/v1/segment",method="POST",status="400"} 1' in text
    assert 'semseg_rejected_requests_total{reason="empty_body"} 1' in text
    for stage in ("queue", "decode", "inference", "encode"):
        # the warm-up and the request
        assert f'semseg_segment_stage_seconds_count{{stage="{stage}"}} 2' in text
    assert "semseg_queue_depth 0" in text and "semseg_ready 1" in text
    schema = live.get("/openapi.json").json()
    assert {"/v1/segment", "/v1/model", "/healthz", "/readyz", "/metrics"} <= set(schema["paths"])
    body = schema["paths"]["/v1/segment"]["post"]["requestBody"]["content"]
    assert set(body) == {"image/png", "image/jpeg", "image/webp", "multipart/form-data"}


def test_readiness_waits_for_the_warm_up(serve, predictor, checkpoint):
    from semseg.checkpoint import Checkpoint
    from semseg.serve.app import create_app
    from semseg.serve.settings import ServeSettings

    from .support import LiveApp

    held = HeldPredictor(predictor)
    held.hold()
    live = LiveApp(create_app(held, ServeSettings(), Checkpoint.load(checkpoint)))
    try:
        assert held.entered.wait(30)
        assert_error(live.get("/readyz"), 503, "not_ready")
        assert live.get("/healthz").status_code == 200
        held.release()
        live.wait_ready()
    finally:
        held.release()
        live.close()


def test_the_page_and_its_files_and_nothing_else(live):
    page = live.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert b'src="/static/app.js"' in page.content and b"https://" not in page.content
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
        response = live.get(f"/static/{name}")
        assert response.status_code == 200 and response.headers["content-type"].startswith(kind)
        assert b"http://" not in response.content and b"https://" not in response.content
    for path in ("/static/../pyproject.toml", "/static/%2e%2e/%2e%2e/pyproject.toml",
                 "/static/index.html", "/static/", "/docs", "/..%2f..%2fetc%2fpasswd"):  # fmt: skip
        assert_error(live.get(path), 404, "not_found")
    assert_error(live.request("DELETE", "/v1/segment"), 405, "method_not_allowed")


TRUNCATED = encode(render_scene(1, 48, 64)[0])[:-200]


@pytest.mark.parametrize(
    ("body", "content_type", "query", "status", "code"),
    [
        (png_header_claiming(60000, 60000), "image/png", "", 413, "too_many_pixels"),
        (png_header_claiming(101, 100), "image/png", "", 413, "too_many_pixels"),
        (encode(render_scene(2, 110, 100)[0]), "image/png", "", 413, "too_many_pixels"),
        (b"\0" * 60_000, "image/png", "", 413, "payload_too_large"),
        (TRUNCATED, "image/png", "", 400, "undecodable_image"),
        (b"", "image/png", "", 400, "empty_body"),
        (b"a text file, not an image\n" * 20, "image/png", "", 400, "undecodable_image"),
        (encode(render_scene(3, 48, 64)[0], "JPEG"), "image/png", "", 400, "undecodable_image"),
        (encode(np.zeros((1, 1, 3), np.uint8)), "image/png", "", 422, "image_too_small"),
        (b"GIF89a", "image/gif", "", 415, "unsupported_media_type"),
        (b"{}", "application/json", "", 415, "unsupported_media_type"),
        (b"abc", "", "", 415, "unsupported_media_type"),
        (encode(render_scene(4, 48, 64)[0]), "image/png", "?output=mask", 422, "invalid_parameter"),
        (encode(render_scene(4, 48, 64)[0]), "image/png", "?alpha=1.5", 422, "invalid_parameter"),
    ],
    ids=["bomb-60000x60000", "header-over-cap", "image-over-cap", "body-over-limit",
         "truncated-png", "empty", "text-as-png", "jpeg-as-png", "1x1", "gif", "json", "no-type",
         "bad-output", "bad-alpha"],
)  # fmt: skip
def test_bad_input_gets_its_status_and_the_server_keeps_serving(
    live, scene_png, body, content_type, query, status, code
):
    message = assert_error(post_image(live, body, content_type, query), status, code)
    if code == "too_many_pixels":
        assert "10000 pixels" in message
    if content_type == "image/png" and body.startswith(b"\xff\xd8"):
        assert "JPEG" in message  # says what the body is
    assert post_image(live, scene_png).status_code == 200


def test_multipart_errors(live, scene_png):
    other_field = {"picture": ("x.png", scene_png, "image/png")}
    message = assert_error(live.post("/v1/segment", files=other_field), 400, "missing_image_field")
    assert "picture" in message
    text_part = {"image": ("x.txt", b"hello", "text/plain")}
    assert_error(live.post("/v1/segment", files=text_part), 415, "unsupported_media_type")
    no_boundary = post_image(live, b"--x\r\n", "multipart/form-data")
    assert_error(no_boundary, 400, "bad_multipart")
    assert post_image(live, scene_png).status_code == 200


def test_upload_limit_on_content_length_and_while_streaming(live):
    message = assert_error(post_image(live, b"\0" * 60_000), 413, "payload_too_large")
    assert "Content-Length is 60000 bytes" in message
    sent = []

    async def chunks():  # no Content-Length: chunked
        for _ in range(40):
            sent.append(10_000)
            yield b"\0" * 10_000

    message = assert_error(post_image(live, chunks()), 413, "payload_too_large")
    assert "the body passed" in message
    assert len(sent) < 40  # refused while streaming, not after reading it all


def test_api_key(serve, predictor, scene_png, monkeypatch):
    live = serve(predictor, api_key="s3cret")
    missing = post_image(live, scene_png)
    assert_error(missing, 401, "unauthorized")
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = {"Authorization": "Bearer s3cret-not"}
    assert_error(post_image(live, scene_png, headers=wrong), 401, "unauthorized")
    assert_error(live.get("/v1/model"), 401, "unauthorized")
    assert_error(live.get("/metrics"), 401, "unauthorized")
    right = {"Authorization": "Bearer s3cret"}
    assert post_image(live, scene_png, headers=right).status_code == 200
    assert live.get("/metrics", headers=right).status_code == 200
    for open_path in ("/healthz", "/readyz", "/"):
        assert live.get(open_path).status_code == 200


def test_cors_is_off_unless_asked_for(serve, predictor):
    origin = {"Origin": "https://example.org"}
    assert (
        "access-control-allow-origin"
        not in serve(predictor).get("/healthz", headers=origin).headers
    )
    allowed = serve(predictor, cors_origins=("https://example.org",))
    response = allowed.get("/healthz", headers=origin)
    assert response.headers["access-control-allow-origin"] == "https://example.org"


def test_full_queue_gets_503_with_retry_after(serve, predictor, scene_png):
    held = HeldPredictor(predictor)
    live = serve(held, workers=1, max_queue=1, retry_after_s=3)
    service = live.app.state.service
    held.hold()

    async def scenario(client):
        def send():
            return client.post("/v1/segment", content=scene_png,
                               headers={"Content-Type": "image/png"})  # fmt: skip

        running = asyncio.ensure_future(send())
        await asyncio.wait_for(asyncio.to_thread(held.entered.wait, 30), 30)
        queued = asyncio.ensure_future(send())
        for _ in range(3000):
            if service.pool.depth == 1:
                break
            await asyncio.sleep(0.01)
        refused = await send()
        held.release()
        return refused, await running, await queued

    refused, running, queued = live.run(scenario)
    assert_error(refused, 503, "queue_full")
    assert refused.headers["retry-after"] == "3"
    assert running.status_code == 200 and queued.status_code == 200
    assert post_image(live, scene_png).status_code == 200
    assert 'semseg_rejected_requests_total{reason="queue_full"} 1' in live.get("/metrics").text


def test_timeout_gets_504_and_drops_the_queued_job(serve, predictor, scene_png):
    held = HeldPredictor(predictor)
    live = serve(held, workers=1, timeout_s=0.5)
    service = live.app.state.service
    calls_before = len(held.batch_sizes)
    held.hold()

    async def scenario(client):
        def send():
            return client.post("/v1/segment", content=scene_png,
                               headers={"Content-Type": "image/png"})  # fmt: skip

        return await asyncio.gather(send(), send())

    first, second = live.run(scenario)
    assert_error(first, 504, "timeout")
    assert_error(second, 504, "timeout")
    held.release()
    wait_until(lambda: service.pool.busy == 0 and service.pool.depth == 0)
    assert post_image(live, scene_png).status_code == 200
    # the running job finished; the queued one was never computed
    assert len(held.batch_sizes) == calls_before + 2


def test_micro_batching_groups_images_of_one_size(serve, predictor, scene_png):
    held = HeldPredictor(predictor)
    live = serve(held, workers=1, batch_max=3, max_queue=8)
    service = live.app.state.service
    other_size = encode(render_scene(9, 48, 64)[0])
    held.hold()
    results = {}

    async def scenario(client):
        def send(body):
            return client.post("/v1/segment?output=labels", content=body,
                               headers={"Content-Type": "image/png"})  # fmt: skip

        blocker = asyncio.ensure_future(send(other_size))
        await asyncio.wait_for(asyncio.to_thread(held.entered.wait, 30), 30)
        same = [asyncio.ensure_future(send(scene_png)) for _ in range(4)]
        for _ in range(3000):
            if service.pool.depth == 4:
                break
            await asyncio.sleep(0.01)
        held.release()
        results["blocker"] = await blocker
        results["same"] = [await task for task in same]

    calls_before = len(held.batch_sizes)
    live.run(scenario)
    assert held.batch_sizes[calls_before:] == [1, 3, 1]
    single = post_image(live, scene_png, query="?output=labels").content
    for response in results["same"]:
        assert response.status_code == 200
        np.testing.assert_array_equal(
            np.asarray(Image.open(io.BytesIO(response.content))),
            np.asarray(Image.open(io.BytesIO(single))),
        )
    counts = live.get("/metrics").text
    assert "semseg_inference_batch_size_count 5" in counts  # warm-up, 1, 3, 1, the last


def test_error_bodies_are_json_everywhere(live):
    for response in (live.get("/nope"), live.post("/healthz"), post_image(live, b"x", "a/b")):
        assert response.headers["content-type"] == "application/json"
        assert set(json.loads(response.content)) == {"error"}


def test_an_onnx_export_is_served(checkpoint, scene_png, tmp_path):
    from semseg.checkpoint import Checkpoint
    from semseg.inference.export import export_onnx
    from semseg.inference.predictor import Predictor
    from semseg.serve.app import create_app
    from semseg.serve.settings import ServeSettings

    from .support import LiveApp

    onnx_path = export_onnx(checkpoint, tmp_path / "tiny.onnx")
    onnx_predictor = Predictor.from_checkpoint(onnx_path, threads=1)
    live = LiveApp(create_app(onnx_predictor, ServeSettings(), Checkpoint.load(onnx_path)))
    try:
        live.wait_ready()
        info = live.get("/v1/model").json()
        assert (info["backend"], info["precision"], info["name"]) == ("onnxruntime", "fp32", "unet")
        assert info["threads"] == 1
        assert info["checkpoint"]["sha256"] == hashlib.sha256(onnx_path.read_bytes()).hexdigest()
        labels = post_image(live, scene_png, query="?output=labels")
        image = np.array(Image.open(io.BytesIO(scene_png)))
        np.testing.assert_array_equal(
            np.asarray(Image.open(io.BytesIO(labels.content))),
            onnx_predictor.predict(image).labels,
        )
    finally:
        live.close()
