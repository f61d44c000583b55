"""The Prometheus text our registry writes, read back by prometheus_client's parser."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from semseg.serve.metrics import Counter, Gauge, Histogram, Registry


def test_counters_gauges_and_histograms_parse_with_their_values():
    registry = Registry()
    requests = registry.add(Counter("x_requests_total", "Requests.", ("status", "path")))
    seconds = registry.add(Histogram("x_seconds", "Latency.", ("stage",), (0.1, 0.5, 1.0)))
    registry.add(Gauge("x_depth", "Depth.", lambda: 3))
    requests.inc(status="200", path="/a")
    requests.inc(2, status="200", path="/a")
    requests.inc(status="503", path='/we"ird\\path\n')
    observations = np.array([0.05, 0.1, 0.3, 0.7, 2.0, 0.2])
    for value in observations:
        seconds.observe(float(value), stage="decode")

    families = {f.name: f for f in text_string_to_metric_families(registry.render())}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in families.values() for s in f.samples}  # fmt: skip
    assert families["x_requests"].type == "counter"
    assert samples[("x_requests_total", (("path", "/a"), ("status", "200")))] == 3
    assert samples[("x_requests_total", (("path", '/we"ird\\path\n'), ("status", "503")))] == 1
    assert samples[("x_depth", ())] == 3
    for bound in (0.1, 0.5, 1.0, float("inf")):
        le = "+Inf" if bound == float("inf") else str(bound)
        key = ("x_seconds_bucket", (("le", le), ("stage", "decode")))
        assert samples[key] == (observations <= bound).sum()
    assert samples[("x_seconds_count", (("stage", "decode"),))] == 6
    assert samples[("x_seconds_sum", (("stage", "decode"),))] == pytest.approx(observations.sum())


def test_wrong_labels_and_duplicate_names_are_errors():
    registry = Registry()
    counter = registry.add(Counter("a_total", "A.", ("kind",)))
    with pytest.raises(ValueError, match="takes labels"):
        counter.inc(other="x")
    with pytest.raises(ValueError, match="registered twice"):
        registry.add(Counter("a_total", "Again."))
