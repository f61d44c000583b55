"""The HTTP app: ``create_app(predictor, settings)`` -> a FastAPI application.

Routes: ``POST /v1/segment``, ``GET /v1/model``, ``GET /healthz``, ``GET /readyz``,
``GET /metrics``, the page at ``/`` with its two static files, and ``/openapi.json``. Every
error is ``{"error": {"code", "message"}}``. A segmentation request is admitted only while
fewer than ``settings.capacity`` are in progress (else 503), its body is read up to
``settings.max_upload_bytes`` (else 413), the image header is checked against
``settings.max_pixels`` (else 413) on the event loop, and decoding, inference and encoding run
in the :class:`~semseg.serve.pool.InferencePool` threads.
"""

from __future__ import annotations

import asyncio
import hmac
import io
import logging
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from semseg.checkpoint import Checkpoint
from semseg.data.io import write_png
from semseg.data.synthetic import render_scene
from semseg.inference.predictor import Predictor
from semseg.serve import schemas
from semseg.serve.errors import ServeError, error_response
from semseg.serve.images import FORMATS, EncodedImage
from semseg.serve.metrics import ServerMetrics
from semseg.serve.middleware import MetricsMiddleware
from semseg.serve.model_info import describe_model
from semseg.serve.pool import InferencePool
from semseg.serve.read_request import accepted_output, read_image
from semseg.serve.segment import Output, Segmenter, SegmentJob
from semseg.serve.settings import ServeSettings

log = logging.getLogger(__name__)

PAGE_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
}
"""URL -> (file in semseg/serve/static, media type): the only files the server sends."""

PAGE_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
"""Content-Security-Policy of the page: nothing from another origin."""

MEDIA_TYPES: dict[Output, str] = {
    "json": "application/json",
    "labels": "image/png",
    "overlay": "image/png",
}
ERROR_STATUSES = {
    400: "The body is empty, does not decode as an image, or the multipart body has no "
    "'image' field.",
    401: "The API key is missing or wrong.",
    406: "The Accept header allows neither application/json nor image/png.",
    413: "The body is over the upload limit, or the image over the pixel limit.",
    415: "The Content-Type is not a supported image type or multipart/form-data.",
    422: "A query parameter is invalid, or the image is smaller than the model's minimum.",
    503: "The queue is full (see Retry-After) or the server is shutting down.",
    504: "The request took longer than the server's timeout.",
}
STATUS_CODES = {404: "not_found", 405: "method_not_allowed"}


class Service:
    """The state of one app: the predictor behind an inference pool, readiness, metrics."""

    def __init__(self, predictor: Predictor, settings: ServeSettings) -> None:
        self.predictor = predictor
        self.settings = settings
        self.in_progress = 0
        self.ready = False
        self.warmup_error: str | None = None
        self.metrics = ServerMetrics(
            queue_depth=lambda: self.pool.depth,
            in_progress=lambda: self.in_progress,
            ready=lambda: float(self.ready),
        )
        self.segmenter = Segmenter(predictor, settings.drivable_classes, self.metrics)
        self.pool = InferencePool(
            self.segmenter.run_batch,
            settings.workers,
            settings.batch_max,
            settings.batch_wait_ms / 1000,
            on_batch=lambda size: self.metrics.batch_size.observe(size),
        )

    async def warm_up(self) -> None:
        """One JSON segmentation of a synthetic road scene through the pool; then ready."""
        stride = self.predictor.output_stride
        height, width = (-(-side // stride) * stride for side in (128, 160))
        buffer = io.BytesIO()
        write_png(buffer, render_scene(0, height, width)[0])
        image = EncodedImage(buffer.getvalue(), "PNG", height, width)
        try:
            await self.pool.run((height, width), SegmentJob(image, "json"))
        except Exception as error:
            self.warmup_error = f"warm-up inference failed: {error}"
            log.exception("warm-up inference failed")
            return
        self.ready = True


def create_app(
    predictor: Predictor,
    settings: ServeSettings | None = None,
    checkpoint: Checkpoint | None = None,
) -> FastAPI:
    """The app serving ``predictor`` under ``settings``; ``checkpoint`` is the checkpoint or
    ONNX file it came from (its model name, file and SHA-256 are in ``GET /v1/model``).

    The inference threads start, and the warm-up runs, when the app's lifespan starts
    (uvicorn, or ``with TestClient(app)``); ``/readyz`` answers 200 once the warm-up is done.
    """
    settings = settings or ServeSettings()
    service = Service(predictor, settings)
    model = describe_model(predictor, checkpoint) | {
        "drivable_classes": [predictor.labels.names[i] for i in settings.drivable_classes] or None,
        "limits": {
            "max_upload_bytes": settings.max_upload_bytes,
            "max_pixels": settings.max_pixels,
            "timeout_s": settings.timeout_s,
        },
    }
    page = {url: (_read_static(name), kind) for url, (name, kind) in PAGE_FILES.items()}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service.pool.start()
        warm_up = asyncio.create_task(service.warm_up())
        try:
            yield
        finally:
            warm_up.cancel()
            service.pool.close()

    app = FastAPI(
        title="semseg",
        summary="Semantic segmentation and drivable space of images.",
        version="1",
        lifespan=lifespan,
        docs_url=None,  # the Swagger page loads scripts from a CDN; /openapi.json stays
        redoc_url=None,
    )
    app.state.service = service
    _add_error_handlers(app, service)
    app.add_middleware(MetricsMiddleware, metrics=service.metrics)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    protected = [Depends(_api_key_check(settings.api_key))] if settings.api_key else []
    errors = {status: {"model": schemas.ErrorBody, "description": text}
              for status, text in ERROR_STATUSES.items()}  # fmt: skip

    @app.post(
        "/v1/segment",
        dependencies=protected,
        summary="Segment an image",
        response_model=None,
        responses={
            200: {
                "description": "output=json: the JSON below; labels: the palette PNG (class id "
                "per pixel, at the input's size); overlay: a PNG of the image with colours "
                "and a legend.",
                "content": {
                    "application/json": {"schema": schemas.SegmentResult.model_json_schema(
                        ref_template="#/components/schemas/{model}")},
                    "image/png": {"schema": {"type": "string", "format": "binary"}},
                },
            },
            **errors,
        },
        openapi_extra={"requestBody": _SEGMENT_BODY},
    )  # fmt: skip
    async def segment(
        request: Request,
        output: Annotated[
            Output | None,
            Query(description="json, labels or overlay; default from Accept, else json."),
        ] = None,
        alpha: Annotated[float, Query(ge=0.0, le=1.0, description="Overlay opacity.")] = 0.5,
    ) -> Response:
        kind = output or accepted_output(request.headers.get("accept"))
        if service.in_progress >= settings.capacity:
            raise ServeError(
                503,
                "queue_full",
                f"{service.in_progress} requests are in progress, the most this server admits; "
                f"retry after {settings.retry_after_s} s",
                {"Retry-After": str(settings.retry_after_s)},
            )
        service.in_progress += 1
        try:
            async with asyncio.timeout(settings.timeout_s):
                image = await read_image(request, settings)
                result = await service.pool.run(
                    (image.height, image.width), SegmentJob(image, kind, alpha)
                )
        except TimeoutError:
            raise ServeError(
                504, "timeout", f"the request took longer than {settings.timeout_s} s"
            ) from None
        finally:
            service.in_progress -= 1
        headers = {"Server-Timing": result.server_timing()}
        if result.media_type == "image/png":
            headers["Content-Disposition"] = f'inline; filename="{kind}.png"'
        return Response(result.body, media_type=result.media_type, headers=headers)

    @app.get("/v1/model", dependencies=protected, response_model=schemas.ModelInfo,
             responses={401: errors[401]}, summary="The served model")  # fmt: skip
    async def model_info() -> dict[str, Any]:
        return model

    @app.get("/healthz", response_model=schemas.Status, summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz", response_model=schemas.Status,
             responses={503: {"model": schemas.ErrorBody, "description": "Not ready yet."}},
             summary="Readiness: model loaded and a warm-up inference done")  # fmt: skip
    async def readyz() -> Any:
        if service.ready:
            return {"status": "ready"}
        if service.warmup_error:
            return error_response(503, "warmup_failed", service.warmup_error)
        return error_response(
            503, "not_ready", "the warm-up inference is still running", {"Retry-After": "1"}
        )

    @app.get("/metrics", dependencies=protected, summary="Prometheus metrics",
             response_class=Response,
             responses={200: {"content": {"text/plain": {}}}, 401: errors[401]})  # fmt: skip
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type="text/plain; version=0.0.4")

    for url in PAGE_FILES:
        app.add_api_route(url, _page_route(*page[url]), methods=["GET"], include_in_schema=False)
    return app


_SEGMENT_BODY = {
    "required": True,
    "description": "The image as the raw body, or a multipart field named 'image'.",
    "content": {
        **{kind: {"schema": {"type": "string", "format": "binary"}} for kind in FORMATS},
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["image"],
                "properties": {"image": {"type": "string", "format": "binary"}},
            }
        },
    },
}


BEARER = HTTPBearer(auto_error=False, description="The server's --api-key.")


def _api_key_check(key: str):
    expected = key.encode()

    async def check(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
    ) -> None:
        given = credentials.credentials.encode() if credentials is not None else b""
        if not hmac.compare_digest(given, expected):
            reason = "wrong" if credentials is not None else "missing"
            raise ServeError(
                401, "unauthorized", f"the API key is {reason}: send Authorization: Bearer <key>",
                {"WWW-Authenticate": "Bearer"},
            )  # fmt: skip

    return check


def _read_static(name: str) -> bytes:
    return resources.files("semseg.serve").joinpath("static", name).read_bytes()


def _page_route(content: bytes, kind: str):
    async def page() -> Response:
        return Response(
            content,
            media_type=kind,
            headers={"Content-Security-Policy": PAGE_POLICY, "Cache-Control": "no-cache"},
        )

    return page


def _add_error_handlers(app: FastAPI, service: Service) -> None:
    @app.exception_handler(ServeError)
    async def serve_error(request: Request, error: ServeError) -> JSONResponse:
        service.metrics.rejected.inc(reason=error.code)
        return error_response(error.status, error.code, error.message, error.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = STATUS_CODES.get(error.status_code, "http_error")
        return error_response(error.status_code, code, str(error.detail), error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        service.metrics.rejected.inc(reason="invalid_parameter")
        problems = "; ".join(
            f"{'.'.join(str(p) for p in problem['loc'])}: {problem['msg']}"
            for problem in error.errors()
        )
        return error_response(422, "invalid_parameter", problems)

    @app.exception_handler(Exception)
    async def internal(request: Request, error: Exception) -> JSONResponse:
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=error)
        return error_response(500, "internal_error", "internal server error; see the server log")
