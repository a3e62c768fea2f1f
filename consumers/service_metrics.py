"""What the service tells Prometheus about its batches, its clusters and its consumer lag.

:class:`ServiceObserver` is the only place that writes the service's metrics from what a batch
produced (:class:`stream.metrics.ServiceMetrics` defines them). The pipeline keeps running
totals (cache hits, truncated texts); the observer turns them into counter increments and
starts from zero again when the pipeline is replaced after a recovery (:meth:`new_pipeline`).
Consumer lag is read from the consumer's cached high-water marks at most every ``lag_every_s``
seconds, and the series of a revoked partition is removed, so a member never reports lag for a
partition it no longer owns.

Example:

>>> from types import SimpleNamespace as NS
>>> import numpy as np
>>> from stream.metrics import ServiceMetrics
>>> metrics = ServiceMetrics()
>>> observer = ServiceObserver(metrics)
>>> observer.zero_labelled_series(reasons=["not_json"])
>>> pipeline = NS(profiles=[], model=NS(version=3, n_clusters=2), tracker=NS(cluster_sizes=lambda k: [4, 1]),
...               counters_snapshot=lambda: {"cache_hits": 5, "cache_misses": 2, "truncated": 0})
>>> out = NS(embed_seconds=0.01, n_applied=2, n_forgotten=0, dead_letters=[], changes=[1],
...          applied_ts_ms=np.array([1000, 1500]), movement=None)
>>> observer.batch(["r1", "r2"], out, pipeline, publish_ms=2000.0, seconds=0.02)
>>> metrics.cache_hits._value.get(), metrics.cluster_size.labels(cluster="0")._value.get()
(5.0, 4.0)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from stream.metrics import ServiceMetrics

log = logging.getLogger("interest_stream.service")

__all__ = ["ServiceObserver"]

_RUNNING_TOTALS = ("cache_hits", "cache_misses", "truncated")


class ServiceObserver:
    """Writes the service's metrics (see the module docstring)."""

    def __init__(self, metrics: ServiceMetrics, *, lag_every_s: float = 2.0) -> None:
        self.metrics = metrics
        self.lag_every_s = lag_every_s
        self._prev = dict.fromkeys(_RUNNING_TOTALS, 0)
        self._prev_set_changes = 0
        self._prev_by_interests = {}
        self._prev_by_interests: dict[int, int] = {}
        self._lag_at = 0.0
        self._lag_labels: set[tuple[str, str]] = set()

    def zero_labelled_series(self, reasons: Iterable[str]) -> None:
        """Create every known labelled series at 0, so ``rate()`` sees the first increase."""
        m = self.metrics
        for reason in reasons:
            m.rejected.labels(reason=reason)
        for operation in ("connect", "produce", "commit", "recover"):
            m.kafka_retries.labels(operation=operation)
        for action in ("rejoin", "exit"):
            m.group_recoveries.labels(action=action)
        m.restore_progress.set(0)

    def new_pipeline(self) -> None:
        """The pipeline was replaced (its running totals start at zero again)."""
        self._prev = dict.fromkeys(_RUNNING_TOTALS, 0)
        self._prev_set_changes = 0
        self._prev_by_interests = {}

    def batch(self, records: list, out: Any, pipeline: Any, publish_ms: float, seconds: float) -> None:
        """One committed batch: counts, sizes, durations, latency, model and cluster gauges."""
        m = self.metrics
        m.events_consumed.inc(len(records))
        m.batch_size.observe(len(records))
        m.batch_seconds.observe(seconds)
        m.embed_seconds.observe(out.embed_seconds)
        m.events_applied.inc(out.n_applied)
        m.forgotten.inc(out.n_forgotten)
        for _, rejection in out.dead_letters:
            m.rejected.labels(reason=rejection.reason).inc()
        m.changes.inc(len(out.changes))
        for ts in out.applied_ts_ms:
            m.latency.observe(max(0.0, (publish_ms - ts) / 1000.0))
        m.users.set(len(pipeline.profiles))
        m.model_version.set(pipeline.model.version)
        totals = pipeline.counters_snapshot()
        m.cache_hits.inc(max(0, totals["cache_hits"] - self._prev["cache_hits"]))
        m.cache_misses.inc(max(0, totals["cache_misses"] - self._prev["cache_misses"]))
        m.truncated.inc(max(0, totals["truncated"] - self._prev["truncated"]))
        self._prev = {k: totals[k] for k in _RUNNING_TOTALS}
        self.clusters(pipeline)
        if out.movement is not None:
            for cluster, moved in enumerate(out.movement):
                m.movement.labels(cluster=str(cluster)).set(float(moved))

    def clusters(self, pipeline: Any) -> None:
        """Users per cluster, from the last published assignments; the interests of the records published
        since the last call (batches and idle sweeps alike: the tracker keeps running totals)."""
        tracker = pipeline.tracker
        for cluster, size in enumerate(tracker.cluster_sizes(pipeline.model.n_clusters)):
            self.metrics.cluster_size.labels(cluster=str(cluster)).set(int(size))
        set_changes = int(getattr(tracker, "interest_set_changes", 0))
        self.metrics.interest_set_changes.inc(max(0, set_changes - self._prev_set_changes))
        self._prev_set_changes = set_changes
        for n, total in dict(getattr(tracker, "records_by_interests", {})).items():
            for _ in range(max(0, total - self._prev_by_interests.get(n, 0))):
                self.metrics.interests_per_user.observe(n)
            self._prev_by_interests[n] = total

    def lag(self, consumer: Any) -> None:
        """Consumer lag per owned partition (best effort, at most every ``lag_every_s``)."""
        now = time.monotonic()
        if now - self._lag_at < self.lag_every_s:
            return
        self._lag_at = now
        try:
            for tp in consumer.assignment():
                hw = consumer.highwater(tp)
                if hw is None:
                    continue
                pos = consumer.position(tp, timeout_ms=1000)
                key = (tp.topic, str(tp.partition))
                self.metrics.lag.labels(*key).set(max(0, hw - pos))
                self._lag_labels.add(key)
        except Exception as exc:  # lag is best effort; never stop the loop for it
            log.debug("lag update failed: %s", exc)

    def revoked(self, partitions: Iterable[Any]) -> None:
        """Remove the lag series of partitions this member no longer owns."""
        for tp in partitions:
            key = (tp.topic, str(tp.partition))
            if key in self._lag_labels:
                self.metrics.lag.remove(*key)
                self._lag_labels.discard(key)
