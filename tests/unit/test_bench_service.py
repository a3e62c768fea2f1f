"""The arithmetic of the service benchmarks (bench/service.py); the benchmarks themselves need a broker."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

try:
    import bench  # noqa: F401  (bench/ is not an installed package: importable from the repo root)
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.service import _Recorder, exact_quantile, histogram_quantile, window_rate
from stream.metrics import LATENCY_BUCKETS, ServiceMetrics


def test_window_rate_starts_at_the_first_batch_start():
    # batches end at 2.0, 3.0, 5.0 s; the first took 0.5 s: the window is 1.5 .. 5.0
    n, seconds, rate = window_rate([(2.0, 10), (3.0, 20), (5.0, 5)], [0.5, 0.9, 1.0])
    assert (n, seconds) == (35, 3.5) and rate == pytest.approx(10.0)
    assert np.isnan(window_rate([], [])[2])


def test_histogram_quantile_matches_the_service_histogram():
    rng = np.random.default_rng(0)
    values = rng.gamma(2.0, 0.03, size=5000)
    metrics = ServiceMetrics()
    for v in values:
        metrics.latency.observe(float(v))
    uppers = [*LATENCY_BUCKETS, float("inf")]
    cumulative = [
        metrics.registry.get_sample_value("interest_end_to_end_latency_seconds_bucket", {"le": le})
        for le in [*(str(float(b)) for b in LATENCY_BUCKETS), "+Inf"]
    ]
    p99 = histogram_quantile(0.99, uppers, cumulative)
    exact = exact_quantile(values, 0.99)
    lower = max(b for b in (0.0, *LATENCY_BUCKETS) if b <= exact)
    upper = min(b for b in LATENCY_BUCKETS if b >= exact)
    assert lower <= p99 <= upper  # interpolated inside the bucket that holds the exact quantile
    assert histogram_quantile(0.5, [1.0, 2.0, float("inf")], [0, 4, 4]) == 1.5  # linear inside (1, 2]


def test_recorder_forwards_to_the_metric():
    metrics = ServiceMetrics()
    rec = _Recorder(metrics.events_consumed)
    rec.inc(3)
    rec.inc(2)
    assert rec.total() == 5 and [v for _, v in rec.calls] == [3, 2]
    assert metrics.registry.get_sample_value("interest_events_consumed_total") == 5
