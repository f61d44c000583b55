"""One batch of segmentation jobs, as a worker thread runs it: decode, predict, encode."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from semseg.inference.predictor import Predictor
from semseg.inference.tta import InputSizeError
from semseg.serve.encode import labels_png, overlay_png, segment_json
from semseg.serve.errors import ServeError
from semseg.serve.images import EncodedImage, decode
from semseg.serve.metrics import ServerMetrics
from semseg.serve.pool import Job

Output = Literal["json", "labels", "overlay"]
OUTPUTS: tuple[Output, ...] = ("json", "labels", "overlay")
STAGES = ("queue", "decode", "inference", "encode")


@dataclass(frozen=True, eq=False)
class SegmentJob:
    """What a request asks for: an image whose header was read, the output, overlay opacity."""

    image: EncodedImage
    output: Output
    alpha: float = 0.5


@dataclass(frozen=True, eq=False)
class Segmented:
    """A response body, its media type and the seconds spent in each of :data:`STAGES`."""

    body: bytes
    media_type: str
    seconds: dict[str, float]

    def server_timing(self) -> str:
        """The ``Server-Timing`` header: each stage's duration in milliseconds."""
        return ", ".join(f"{stage};dur={1000 * s:.3f}" for stage, s in self.seconds.items())


class Segmenter:
    """Runs :class:`SegmentJob` batches through the predictor (the one road to the model).

    Args:
        predictor: the model.
        drivable_classes: train ids of the drivable classes (empty: no drivable output).
        metrics: stage durations are observed here.
    """

    def __init__(
        self, predictor: Predictor, drivable_classes: Sequence[int], metrics: ServerMetrics
    ) -> None:
        self.predictor = predictor
        self.drivable_classes = tuple(drivable_classes)
        self.metrics = metrics

    def run_batch(self, jobs: list[Job]) -> list[Segmented | Exception]:
        """Jobs of one image size -> one result or error per job. Decoding failures and
        images below the model's minimum size fail their own job only."""
        results: list[Segmented | Exception | None] = [None] * len(jobs)
        seconds = [{"queue": job.queue_seconds} for job in jobs]
        images: dict[int, np.ndarray] = {}
        for index, job in enumerate(jobs):
            start = time.perf_counter()
            try:
                images[index] = decode(job.payload.image)
            except ServeError as error:
                results[index] = error
            seconds[index]["decode"] = time.perf_counter() - start
        if images:
            start = time.perf_counter()
            try:
                predictions = self.predictor.predict_batch(
                    list(images.values()), probabilities=False
                )
            except InputSizeError as error:
                predictions = []
                for index in images:
                    results[index] = ServeError(422, "image_too_small", str(error))
            elapsed = time.perf_counter() - start
            for (index, image), prediction in zip(images.items(), predictions, strict=False):
                seconds[index]["inference"] = elapsed
                job = jobs[index].payload
                results[index] = self._encode(job, image, prediction.labels, seconds[index])
        for stages in seconds:
            for stage, value in stages.items():
                self.metrics.stage_seconds.observe(value, stage=stage)
        return results

    def _encode(
        self, job: SegmentJob, image: np.ndarray, label_map: np.ndarray, seconds: dict[str, float]
    ) -> Segmented:
        start = time.perf_counter()
        labels = self.predictor.labels
        if job.output == "labels":
            body, media_type = labels_png(label_map, labels), "image/png"
        elif job.output == "overlay":
            body, media_type = overlay_png(image, label_map, labels, job.alpha), "image/png"
        else:
            record = segment_json(label_map, labels, self.drivable_classes)
            seconds["encode"] = time.perf_counter() - start
            record["timing_ms"] = {stage: 1000 * s for stage, s in seconds.items()}
            body, media_type = json.dumps(record).encode(), "application/json"
        seconds["encode"] = time.perf_counter() - start
        return Segmented(body, media_type, dict(seconds))
