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
from stream.profiles import ProfileStore
from stream.records import AssignmentChange, CentroidSnapshot
from stream.settings import ClusteringSettings
from stream.shared_model import ModelVersion
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
        self.trainer = TrainerStage.for_settings(s)
        self.model = self.trainer.model
        self.labeler = self.trainer.labeler
        self.tracker = AssignmentTracker(
            hysteresis=s.hysteresis,
            top_k=s.top_k,
            maturity_margin=s.maturity_margin,
            confirmations=s.confirmations,
            return_margin=s.return_margin,
            interests=self.interests,
        )
        self.worker = WorkerStage(s, self.embedder, self.profiles, self.tracker, labeler=self.labeler)
        #: Movement of the centroids adopted from shared model versions since the last batch.
        self._adopted_movement: np.ndarray | None = None
        #: Label terms of the adopted shared model version (a worker's own labeler only summarises).
        self.label_terms: dict[int, list[str]] = {}
        #: The largest event time applied so far (epoch ms; 0 before any event).
        self.event_clock_ms = 0

    @classmethod
    def from_settings(
        cls,
        settings: ClusteringSettings,
        encoder: Encoder | None = None,
        catalog: ItemCatalog | None = None,
    ) -> Pipeline:
        """Build a pipeline; loads the sentence encoder of ``settings.backend`` unless ``encoder`` is given."""
        if encoder is None:
            from stream.encoders import make_encoder

            encoder = make_encoder(settings)
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

    def process_batch(
        self, records: Sequence[SourceRecord], now_ms: int | None = None, *, train: bool = True
    ) -> BatchResult:
        """One micro-batch: prepare (worker) -> apply (trainer) -> finish (worker).

        ``now_ms`` is the emission time written into the records; ``None`` uses the event
        clock (:attr:`event_clock_ms`, the largest event time applied so far), which makes
        offline replays reproducible.

        With ``train=False`` (a member of a group sharing one model) the trainer step is
        skipped: the result's ``stats``/``label_stats`` are for the group's trainer, the users
        are assessed with the model version adopted last (:meth:`adopt`), and the users of
        clusters that moved since the previous batch are re-checked.
        """
        prepared = self.worker.prepare(records, self.model)
        if prepared.applied_ts_ms.shape[0]:
            self.event_clock_ms = max(self.event_clock_ms, int(prepared.applied_ts_ms.max()))
        if now_ms is None:
            now_ms = self.event_clock_ms
        if train:
            trained = self.trainer.apply(prepared.stats, prepared.label_stats, now_ms)
            if trained.reseeded and self.interests is not None:
                self.interests.on_model_change(trained.reseeded)
            movement = trained.movement
        else:
            movement, self._adopted_movement = self._adopted_movement, None
            trained = TrainerOutput(version=self.model.version, movement=movement,
                                    initialised=self.model.is_initialised)
        out = self.worker.finish(prepared, self.model, now_ms, movement=movement)
        return BatchResult(out, trained, stats=prepared.stats, label_stats=prepared.label_stats)

    def adopt(self, version: ModelVersion) -> bool:
        """Assign and summarise with a shared model version from now on; False if it is not newer.

        "Newer" is a higher version, or the same version with more statistics applied (the
        warm-up count can pass its mark without the centroids changing). The centroids'
        movement is remembered for the next batch's re-check of moved clusters, and the
        clusters reseeded since the version held before (every version skipped included) are
        dropped from the users' interest mixes.
        """
        model = self.model
        if (version.version, version.n_applied) <= (model.version, model.n_applied) and model.is_initialised:
            return False
        held_version = model.version if model.is_initialised else 0
        moved = model.follow(version.centroid_matrix(), version.count_vector(), version.version,
                             version.n_applied, version.reservoir_id_vector())
        reseeded = version.reseeded_since(held_version)
        if reseeded and held_version and self.interests is not None:
            # Those ids now name other interests: the weights the mixes hold for them are dropped.
            self.interests.on_model_change(reseeded, n_clusters=model.n_clusters)
        if moved is not None:
            held = self._adopted_movement
            self._adopted_movement = moved if held is None else np.maximum(held, moved)
        self.worker.score_waiting(model)  # events that waited for the first centroids join the mixes
        self.label_terms = {int(c): list(t) for c, t in version.label_terms.items()}
        self.event_clock_ms = max(self.event_clock_ms, int(version.event_clock_ms))
        return True

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

    def take_stale_profiles(self, limit: int) -> list[str]:
        """Users whose state record (profile + interest mix) no longer matches their state (a model change
        altered their mix outside a batch): up to ``limit``, to write again (e.g. by an idle sweep)."""
        mixes = self.interests
        if mixes is None:
            return []
        return [u for u in mixes.take_stale_records(limit) if u in self.profiles]

    def snapshot(self, now_ms: int) -> list[CentroidSnapshot]:
        """A full centroid snapshot now (e.g. the final state written by ``replay --centroids``)."""
        return self.trainer.snapshot(now_ms)
