"""The single-process pipeline: worker and trainer stages wired together in memory.

:meth:`Pipeline.process_batch` runs one micro-batch through
``worker.prepare -> trainer.apply -> worker.finish`` and returns everything to
publish (:class:`BatchResult`). Both the offline ``interest-stream replay`` command
and the Kafka service call exactly this; only their sources and sinks differ.

:meth:`Pipeline.from_settings` builds every part from
:class:`~stream.settings.ClusteringSettings` and loads the sentence encoder; pass
``encoder=`` to use another one (tests use a fake, deterministic encoder).

Example:

>>> import numpy as np
>>> class AxisEncoder:  # "ball i" -> near the x axis, anything else -> near the y axis
...     dim = 2
...     def encode(self, texts):
...         def vec(t):
...             i = 0.01 * int(t.split()[-1])
...             return [1.0, i] if t.startswith("ball") else [i, 1.0]
...         return np.array([vec(t) for t in texts], np.float32)
>>> from stream.settings import ClusteringSettings
>>> settings = ClusteringSettings(n_clusters=2, warmup_batches=0)  # assign from the first batch
>>> pipe = Pipeline.from_settings(settings, encoder=AxisEncoder())
>>> batch = [SourceRecord(f'{{"user_id": "u{i}", "ts": {i}, "text": "{t} {i}"}}'.encode(), None, None)
...          for i, t in enumerate(["ball", "stocks"] * 4)]
>>> result = pipe.process_batch(batch, now_ms=100)
>>> len(result.changes), result.version, len(result.snapshots), result.dead_letters
(8, 1, 2, [])
>>> clusters = {c.user_id: c.cluster for c in result.changes}
>>> clusters["u0"] == clusters["u2"] != clusters["u1"] == clusters["u3"]
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stream.assignments import AssignmentTracker
from stream.catalog import ItemCatalog
from stream.embedder import EmbeddingCache, Encoder, EventEmbedder
from stream.interests import InterestMixes
from stream.kmeans import MiniBatchKMeans
from stream.labels import ClusterLabeler
from stream.profiles import ProfileStore
from stream.records import AssignmentChange, CentroidSnapshot
from stream.settings import ClusteringSettings
from stream.trainer import TrainerOutput, TrainerStage
from stream.worker import SourceRecord, WorkerOutput, WorkerStage

__all__ = ["BatchResult", "Pipeline", "SourceRecord"]


@dataclass(slots=True)
class BatchResult:
    """Everything one micro-batch produced: the worker's output and the trainer's, side by side.

    Publish ``changes`` and ``tombstones`` on the assignments topic (they never name the
    same user, so their order does not matter), ``snapshots`` on the centroids topic and
    ``dead_letters`` (the source record and why) on the dead-letter topic. ``updated_users``
    are the users whose profile the batch changed (applied events only; never a user named
    by a rejected record): the state to write back. ``stats``/``label_stats`` are the batch's
    additive model statistics as the trainer applied them (``None`` for a batch without
    applied events); the service logs them for exact restores.
    """

    worker: WorkerOutput
    trainer: TrainerOutput
    stats: Any = None
    label_stats: Any = None

    # The worker's side.
    changes = property(lambda self: self.worker.changes)
    tombstones = property(lambda self: self.worker.tombstones)
    updated_users = property(lambda self: self.worker.updated_users)
    dead_letters = property(lambda self: self.worker.dead_letters)
    n_events = property(lambda self: self.worker.n_events)
    n_applied = property(lambda self: self.worker.n_applied)
    n_forgotten = property(lambda self: self.worker.n_forgotten)
    n_rechecked = property(lambda self: self.worker.n_rechecked)
    embed_seconds = property(lambda self: self.worker.embed_seconds)
    applied_ts_ms = property(lambda self: self.worker.applied_ts_ms)
    # The trainer's side.
    snapshots = property(lambda self: self.trainer.snapshots)
    version = property(lambda self: self.trainer.version)
    movement = property(lambda self: self.trainer.movement)
    reseeded = property(lambda self: self.trainer.reseeded)


class Pipeline:
    """Worker + trainer in one process (see the module docstring)."""

    def __init__(
        self,
        settings: ClusteringSettings,
        encoder: Encoder,
        catalog: ItemCatalog | None = None,
    ) -> None:
        s = settings
        self.settings = s
        self.encoder = encoder
        self.catalog = catalog if catalog is not None else ItemCatalog()
        self.cache = EmbeddingCache(s.cache_size)
        self.embedder = EventEmbedder(encoder, self.cache, self.catalog)
        #: The users' interest mixes (``None`` when ``max_interests`` is 0); kept with the profiles.
        self.interests = (
            InterestMixes(s.half_life_s, s.max_interests, s.min_interest_share, s.interest_hysteresis)
            if s.max_interests > 0
            else None
        )
        self.profiles = ProfileStore(int(encoder.dim), s.half_life_s, interests=self.interests)
        self.model = MiniBatchKMeans(
            n_clusters=s.n_clusters,
            half_life=s.kmeans_half_life,
            time_unit=s.kmeans_time_unit,
            seed=s.seed,
            refine_every=s.refine_every,
            refine_restarts=s.refine_restarts,
            refine_iterations=s.refine_iterations,
            refine_min_gain=s.refine_min_gain,
            refine_backoff=s.refine_backoff,
            warmup=s.warmup_batches,
        )
        self.tracker = AssignmentTracker(
            hysteresis=s.hysteresis,
            top_k=s.top_k,
            maturity_margin=s.maturity_margin,
            confirmations=s.confirmations,
            return_margin=s.return_margin,
            interests=self.interests,
        )
        self.labeler = ClusterLabeler(
            s.n_clusters, half_life=s.label_half_life, max_vocab=s.label_max_vocab, top_n=s.label_top_n
        )
        self.worker = WorkerStage(s, self.embedder, self.profiles, self.tracker, labeler=self.labeler)
        self.trainer = TrainerStage(
            self.model, self.labeler, snapshot_every=s.snapshot_every, snapshot_min_movement=s.snapshot_min_movement
        )
        #: The largest event time applied so far (epoch ms; 0 before any event).
        self.event_clock_ms = 0

    @classmethod
    def from_settings(
        cls,
        settings: ClusteringSettings,
        encoder: Encoder | None = None,
        catalog: ItemCatalog | None = None,
    ) -> Pipeline:
        """Build a pipeline; loads the sentence-transformers model unless ``encoder`` is given."""
        if encoder is None:
            from stream.embedder import SentenceEmbedder

            encoder = SentenceEmbedder(
                settings.model_path,
                device=settings.device,
                batch_size=settings.encode_batch_size,
                max_seq_length=settings.max_seq_length,
            )
        return cls(settings, encoder, catalog)

    @property
    def counters(self):
        """The worker's running :class:`~stream.worker.WorkerCounters`."""
        return self.worker.counters

    def counters_snapshot(self) -> dict[str, Any]:
        """Worker counters plus model/user gauges, as a flat dict (for metrics and summaries)."""
        out = self.worker.counters.as_dict()
        out.update(
            users=len(self.profiles),
            model_version=self.model.version,
            cache_size=len(self.cache),
            snapshots_published=self.trainer.snapshots_published,
        )
        return out

    def process_batch(self, records: Sequence[SourceRecord], now_ms: int | None = None) -> BatchResult:
        """One micro-batch: prepare (worker) -> apply (trainer) -> finish (worker).

        ``now_ms`` is the emission time written into the records; ``None`` uses the event
        clock (:attr:`event_clock_ms`, the largest event time applied so far), which makes
        offline replays reproducible.
        """
        prepared = self.worker.prepare(records, self.model)
        if prepared.applied_ts_ms.shape[0]:
            self.event_clock_ms = max(self.event_clock_ms, int(prepared.applied_ts_ms.max()))
        if now_ms is None:
            now_ms = self.event_clock_ms
        trained = self.trainer.apply(prepared.stats, prepared.label_stats, now_ms)
        if trained.reseeded and self.interests is not None:
            self.interests.on_model_change(trained.reseeded)
        out = self.worker.finish(prepared, self.model, now_ms, movement=trained.movement)
        return BatchResult(out, trained, stats=prepared.stats, label_stats=prepared.label_stats)

    def reassess(self, user_ids: Sequence[str], now_ms: int) -> list[AssignmentChange]:
        """Re-assess these users against the current model (an idle sweep); returns the changes.

        The same hysteresis rule as after a batch applies, so a settled user emits nothing.
        """
        users = [u for u in user_ids if u in self.profiles]
        if not users or not self.model.is_initialised:
            return []
        directions = self.profiles.directions(self.profiles.slots_of(users))
        sims = self.model.similarities(directions)
        event_ts = np.fromiter((self.profiles.ref_ms(u) for u in users), dtype=np.int64, count=len(users))
        changes = self.tracker.assess(
            users, directions, sims, self.model.version, event_ts, now_ms, maturity=self.worker.maturity(users)
        )
        self.worker.counters.changes += len(changes)
        return changes

    def snapshot(self, now_ms: int) -> list[CentroidSnapshot]:
        """A full centroid snapshot now (e.g. the final state written by ``replay --centroids``)."""
        return self.trainer.snapshot(now_ms)
