"""The trainer stage: the model's side of a micro-batch.

The trainer owns the clustering model and the cluster labels. It folds the additive
statistics that workers summarised (:class:`~stream.kmeans.BatchStatistics`,
label statistics) into the centroids and label counts, and decides when to publish
:class:`~stream.records.CentroidSnapshot` records: a full, consistent snapshot of all
``k`` clusters (one model version) whenever

- the model was just initialised, or a cluster was reseeded;
- some centroid moved at least ``snapshot_min_movement`` (cosine distance) since the
  last published snapshot (accumulated drift counts, not just the last batch's);
- or ``snapshot_every`` model updates passed since the last snapshot.

Example:

>>> import numpy as np
>>> from stream.kmeans import MiniBatchKMeans
>>> from stream.labels import ClusterLabeler
>>> model = MiniBatchKMeans(n_clusters=2, init_size=2, seed=0)
>>> trainer = TrainerStage(model, ClusterLabeler(2), snapshot_every=3)
>>> points = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
>>> out = trainer.apply(model.summarise(points), None, now_ms=1_000)
>>> out.version, len(out.snapshots), out.snapshots[0].model_version
(1, 2, 1)
>>> [len(trainer.apply(model.summarise(points), None, now_ms=t).snapshots) for t in (2, 3, 4)]
[0, 0, 2]
>>> state = trainer.state()
>>> state.updates, state.since_snapshot, state.snapshots_published
(4, 0, 2)
>>> later = TrainerStage(model, ClusterLabeler(2), snapshot_every=3)  # e.g. after a restart
>>> later.load_state(state)
>>> later.updates, later.snapshots_published
(4, 2)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream.kmeans import BatchStatistics, MiniBatchKMeans
from stream.records import CentroidSnapshot

__all__ = ["TrainerOutput", "TrainerStage", "TrainerState"]

_DIGITS = 7


@dataclass(slots=True)
class TrainerOutput:
    """What one model update did: the new version, per-cluster movement, reseeded ids, snapshots.

    ``movement`` is ``None`` when there was nothing to apply (no statistics).
    """

    version: int
    movement: np.ndarray | None
    reseeded: list[int] = field(default_factory=list)
    snapshots: list[CentroidSnapshot] = field(default_factory=list)
    initialised: bool = False


@dataclass(frozen=True, eq=False)
class TrainerState:
    """The trainer's cadence, what a restart must carry over (its model and labels travel on their own).

    ``published`` holds the centroids of the last published snapshot (``None`` before the first).
    """

    updates: int
    since_snapshot: int
    snapshots_published: int
    published: np.ndarray | None


class TrainerStage:
    """Applies batch statistics to the model and the labeler; publishes centroid snapshots."""

    def __init__(
        self,
        model: MiniBatchKMeans,
        labeler: Any | None = None,
        snapshot_every: int = 10,
        snapshot_min_movement: float = 0.01,
    ) -> None:
        if snapshot_every < 1:
            raise ValueError("snapshot_every must be >= 1")
        self.model = model
        self.labeler = labeler
        self.snapshot_every = int(snapshot_every)
        self.snapshot_min_movement = float(snapshot_min_movement)
        self.updates = 0
        self.snapshots_published = 0
        self._since_snapshot = 0
        self._published: np.ndarray | None = None  # centroids of the last snapshot

    @classmethod
    def for_settings(cls, settings: Any) -> TrainerStage:
        """A trainer with a new model and labeler built from :class:`~stream.settings.ClusteringSettings`."""
        from stream.labels import ClusterLabeler

        s = settings
        model = MiniBatchKMeans(
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
        labeler = ClusterLabeler(
            s.n_clusters, half_life=s.label_half_life, max_vocab=s.label_max_vocab, top_n=s.label_top_n
        )
        return cls(model, labeler, snapshot_every=s.snapshot_every, snapshot_min_movement=s.snapshot_min_movement)

    def apply(
        self, stats: BatchStatistics | None, label_stats: Any | None, now_ms: int, batches: int = 1
    ) -> TrainerOutput:
        """Fold one batch's statistics (or ``batches`` batches' merged ones) into the model and labels;
        maybe publish snapshots."""
        model = self.model
        if stats is None:
            return TrainerOutput(version=model.version, movement=None, initialised=model.is_initialised)
        was_initialised = model.is_initialised
        result = model.apply(stats, batches)
        if self.labeler is not None:
            if result.reseeded:
                self.labeler.reset(result.reseeded)
            if label_stats is not None:
                self.labeler.apply(label_stats, batches)
        self.updates += 1
        snapshots: list[CentroidSnapshot] = []
        if result.initialised:
            self._since_snapshot += 1
            if self._due(not was_initialised or bool(result.reseeded)):
                snapshots = self.snapshot(now_ms)
        return TrainerOutput(
            version=result.version,
            movement=result.movement if result.initialised else None,
            reseeded=list(result.reseeded),
            snapshots=snapshots,
            initialised=result.initialised,
        )

    def state(self) -> TrainerState:
        """The cadence state (update count, snapshots since and published, last published centroids)."""
        published = None if self._published is None else self._published.copy()
        return TrainerState(self.updates, self._since_snapshot, self.snapshots_published, published)

    def load_state(self, state: TrainerState) -> None:
        """Continue the cadence from ``state`` (this trainer keeps its snapshot settings)."""
        self.updates = int(state.updates)
        self._since_snapshot = int(state.since_snapshot)
        self.snapshots_published = int(state.snapshots_published)
        self._published = None if state.published is None else np.array(state.published, dtype=np.float32)

    def _due(self, forced: bool) -> bool:
        if forced or self._published is None or self._since_snapshot >= self.snapshot_every:
            return True
        current = self.model.centroids
        if current.shape != self._published.shape:
            return True
        drift = 1.0 - np.einsum("ij,ij->i", current, self._published)
        return bool(drift.max() >= self.snapshot_min_movement)

    def snapshot(self, now_ms: int) -> list[CentroidSnapshot]:
        """A full snapshot of every cluster now (empty before the model is initialised)."""
        model = self.model
        if not model.is_initialised:
            return []
        centroids = model.centroids
        counts = model.counts
        terms = self.labeler.all_terms() if self.labeler is not None else {}
        self._published = centroids
        self._since_snapshot = 0
        self.snapshots_published += 1
        return [
            CentroidSnapshot(
                cluster=c,
                vector=np.round(centroids[c].astype(np.float64), _DIGITS).tolist(),
                weight=round(float(counts[c]), 6),
                label_terms=list(terms.get(c, [])),
                model_version=int(model.version),
                emit_ts_ms=int(now_ms),
            )
            for c in range(model.n_clusters)
        ]
