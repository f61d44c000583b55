"""Limits and switches of a server (``semseg serve`` options), validated once."""

from __future__ import annotations

from dataclasses import dataclass, field

MEGABYTE = 1024 * 1024


@dataclass(frozen=True)
class ServeSettings:
    """How the server admits, queues and runs requests.

    Attributes:
        max_upload_mb: largest request body in MiB (checked on ``Content-Length`` and while the
            body streams in); larger ones get 413.
        max_pixels: largest image in pixels (width x height, read from the image header before
            decoding); larger ones get 413.
        max_queue: requests that may wait (uploading or queued) beyond those being computed;
            one more gets 503 with ``Retry-After``.
        timeout_s: seconds from a segmentation request's start to its response (upload, queue
            and compute); past it the request gets 504 and a queued job is dropped.
        workers: inference threads, each running one image (or one micro-batch) at a time.
        batch_max: a worker takes up to this many queued images of one size for one forward
            pass (1: no micro-batching).
        batch_wait_ms: how long a worker holding fewer than ``batch_max`` images waits for more.
        api_key: when set, ``/v1/*`` and ``/metrics`` need ``Authorization: Bearer <key>``.
        cors_origins: origins allowed by CORS; empty turns CORS off.
        drivable_classes: train ids of the drivable classes, empty when the label set has none
            (the JSON output's ``drivable`` is then null).
        retry_after_s: the ``Retry-After`` seconds sent with 503.
    """

    max_upload_mb: float = 32.0
    max_pixels: int = 4096 * 4096
    max_queue: int = 16
    timeout_s: float = 30.0
    workers: int = 1
    batch_max: int = 1
    batch_wait_ms: float = 0.0
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    drivable_classes: tuple[int, ...] = field(default_factory=tuple)
    retry_after_s: int = 1

    def __post_init__(self) -> None:
        positive = {
            "max_upload_mb": self.max_upload_mb,
            "max_pixels": self.max_pixels,
            "timeout_s": self.timeout_s,
            "workers": self.workers,
            "batch_max": self.batch_max,
            "retry_after_s": self.retry_after_s,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        if self.max_queue < 0:
            raise ValueError(f"max_queue must be 0 or more, got {self.max_queue!r}")
        if self.batch_wait_ms < 0:
            raise ValueError(f"batch_wait_ms must be 0 or more, got {self.batch_wait_ms!r}")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("api_key is empty; leave it unset to serve without a key")
        object.__setattr__(self, "cors_origins", tuple(self.cors_origins))
        object.__setattr__(self, "drivable_classes", tuple(self.drivable_classes))

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MEGABYTE)

    @property
    def capacity(self) -> int:
        """Segmentation requests admitted at once: those computed plus those waiting."""
        return self.workers * self.batch_max + self.max_queue
