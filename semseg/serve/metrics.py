"""Counters, gauges and histograms rendered in the Prometheus text format (version 0.0.4).

A small registry of our own: the server needs three metric types with labels, thread-safe
updates (inference threads observe their stage times) and one ``render()``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Histogram bucket upper bounds in seconds."""

LabelValues = tuple[str, ...]


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help_text
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()

    def _key(self, labels: dict[str, str]) -> LabelValues:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {sorted(labels)}")
        return tuple(str(labels[name]) for name in self.labelnames)

    def _labels(self, key: LabelValues, extra: tuple[tuple[str, str], ...] = ()) -> str:
        pairs = [*zip(self.labelnames, key, strict=True), *extra]
        if not pairs:
            return ""
        return "{" + ",".join(f'{name}="{_escape(value)}"' for name, value in pairs) + "}"

    def render(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    """A count that only goes up; ``name`` should end in ``_total``."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labelnames)
        self._values: dict[LabelValues, float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(self._key(labels), 0.0)

    def render(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return [
            *super().render(),
            *(f"{self.name}{self._labels(k)} {_number(v)}" for k, v in items),
        ]


class Gauge(_Metric):
    """A value read when the metrics are rendered, from ``read()``."""

    kind = "gauge"

    def __init__(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        super().__init__(name, help_text)
        self.read = read

    def render(self) -> list[str]:
        return [*super().render(), f"{self.name} {_number(self.read())}"]


class Histogram(_Metric):
    """Observations counted into cumulative buckets, with their sum and count."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        help_text: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> None:
        super().__init__(name, help_text, labelnames)
        self.buckets = tuple(sorted(buckets))
        # per label values: counts per bucket (the last is +Inf), sum
        self._values: dict[LabelValues, tuple[list[int], float]] = {}

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        slot = next((i for i, bound in enumerate(self.buckets) if value <= bound), -1)
        with self._lock:
            counts, total = self._values.get(key, ([0] * (len(self.buckets) + 1), 0.0))
            counts[slot] += 1
            self._values[key] = (counts, total + value)

    def render(self) -> list[str]:
        with self._lock:
            items = sorted((k, (list(c), s)) for k, (c, s) in self._values.items())
        lines = super().render()
        for key, (counts, total) in items:
            cumulative = 0
            for bound, count in zip((*self.buckets, math.inf), counts, strict=True):
                cumulative += count
                le = (("le", "+Inf" if math.isinf(bound) else repr(float(bound))),)
                lines.append(f"{self.name}_bucket{self._labels(key, le)} {cumulative}")
            lines.append(f"{self.name}_sum{self._labels(key)} {_number(total)}")
            lines.append(f"{self.name}_count{self._labels(key)} {cumulative}")
        return lines


MetricT = TypeVar("MetricT", bound=_Metric)


class Registry:
    """The metrics of one server, rendered together."""

    def __init__(self) -> None:
        self._metrics: list[_Metric] = []

    def add(self, metric: MetricT) -> MetricT:
        if any(existing.name == metric.name for existing in self._metrics):
            raise ValueError(f"metric {metric.name} is registered twice")
        self._metrics.append(metric)
        return metric

    def render(self) -> str:
        return "".join(line + "\n" for metric in self._metrics for line in metric.render())


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class ServerMetrics:
    """The metrics ``GET /metrics`` shows.

    Args:
        queue_depth: reads the number of jobs waiting for an inference thread.
        in_progress: reads the number of segmentation requests admitted (uploading, queued or
            computing).
        ready: reads 1 once the warm-up inference is done, else 0.
    """

    def __init__(
        self,
        queue_depth: Callable[[], float],
        in_progress: Callable[[], float],
        ready: Callable[[], float],
    ) -> None:
        self.registry = Registry()
        add = self.registry.add
        self.requests = add(Counter(
            "semseg_http_requests_total", "HTTP requests by route, method and status.",
            ("handler", "method", "status"),
        ))  # fmt: skip
        self.request_seconds = add(Histogram(
            "semseg_http_request_duration_seconds", "Time from request to response.", ("handler",)
        ))  # fmt: skip
        self.stage_seconds = add(Histogram(
            "semseg_segment_stage_seconds",
            "Seconds a segmentation spent in each stage: queue, decode, inference, encode.",
            ("stage",),
        ))  # fmt: skip
        self.batch_size = add(Histogram(
            "semseg_inference_batch_size", "Images per forward pass.", (),
            buckets=(1, 2, 4, 8, 16, 32, 64),
        ))  # fmt: skip
        self.rejected = add(Counter(
            "semseg_rejected_requests_total", "Requests refused, by error code.", ("reason",)
        ))  # fmt: skip
        add(Gauge("semseg_queue_depth", "Jobs waiting for an inference thread.", queue_depth))
        add(Gauge("semseg_requests_in_progress", "Segmentation requests admitted.", in_progress))
        add(Gauge("semseg_ready", "1 once the warm-up inference is done.", ready))

    def render(self) -> str:
        return self.registry.render()
