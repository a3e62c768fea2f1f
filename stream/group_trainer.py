"""The trainer of a consumer group: one model from every worker's statistics, in log order.

:class:`GroupTrainer` applies :class:`~stream.shared_model.StatisticsRecord` values in the
order of the statistics topic (one partition, so one order for the whole group) with the
same :class:`~stream.trainer.TrainerStage` a single process uses, and produces:

- :meth:`GroupTrainer.version` — the :class:`~stream.shared_model.ModelVersion` every
  worker follows;
- :meth:`GroupTrainer.state_record` — its whole state with the offset of the next
  statistics record, for the compacted model topic.

Applying is deterministic given the state (the model's random generators are part of it),
so a trainer restored from a state record (:meth:`GroupTrainer.restore`) that applies the
statistics after that record's offset reaches the same model, bit for bit, as the trainer
that never stopped. ``applied_records``/``applied_points`` count what the model includes:
after any number of failovers they equal the sums over the statistics log up to
``statistics_offset`` (no record applied twice, none lost).

Example (two workers' batches, applied in log order; then a restore):

>>> import numpy as np
>>> from stream.kmeans import MiniBatchKMeans
>>> from stream.settings import ClusteringSettings
>>> from stream.shared_model import StatisticsRecord, encode_statistics
>>> settings = ClusteringSettings(n_clusters=2, warmup_batches=0)
>>> worker = MiniBatchKMeans(n_clusters=2, seed=1)
>>> def batch(points, now):
...     stats = worker.summarise(np.array(points, np.float32))
...     return encode_statistics(StatisticsRecord(worker="w", stats=stats.to_bytes(), now_ms=now))
>>> log = [batch([[1, 0], [0, 1], [1, .1], [.2, 1]], 1), batch([[.1, 1], [1, .3], [.3, 1]], 2), batch([[1, .2]], 3)]
>>> trainer = GroupTrainer(settings, dim=2)
>>> for offset, value in enumerate(log[:2]):
...     _ = trainer.apply(offset, value)
>>> state = trainer.state_record()
>>> _ = trainer.apply(2, log[2])
>>> version = trainer.version(emit_ms=10, trainer="g-trainer")
>>> version.statistics_offset, version.applied_records, version.applied_points
(3, 3, 8)
>>> again = GroupTrainer.restore(settings, state, dim=2)
>>> again.statistics_offset
2
>>> _ = again.apply(2, log[2])
>>> bool(np.array_equal(again.model.centroids, trainer.model.centroids)), again.model.version == version.version
(True, True)
"""

from __future__ import annotations

import logging

import numpy as np

from stream.kmeans import BatchStatistics
from stream.labels import LabelStatistics
from stream.model_state import RestoredModel, model_state_to_bytes, restore_model_state
from stream.settings import ClusteringSettings
from stream.shared_model import (
    ModelVersion,
    StatisticsRecord,
    TrainerStateRecord,
    decode_statistics,
    decode_trainer_state,
    encode_trainer_state,
)
from stream.trainer import TrainerOutput, TrainerStage

__all__ = ["GroupTrainer"]

log = logging.getLogger(__name__)


class GroupTrainer:
    """Applies statistics records in log order; publishes versions and its own state."""

    def __init__(self, settings: ClusteringSettings, *, dim: int | None = None) -> None:
        self.settings = settings
        self.dim = dim
        self.trainer = TrainerStage.for_settings(settings)
        self.model = self.trainer.model
        self.labeler = self.trainer.labeler
        self.event_clock_ms = 0
        #: The offset of the next statistics record to apply.
        self.statistics_offset = 0
        self.applied_records = 0
        self.applied_points = 0
        self.reseeded_at = np.zeros(settings.n_clusters, dtype=np.int64)
        self.newest_produced_ms = 0

    # ------------------------------------------------------------------ applying
    def apply(self, offset: int, value: bytes) -> TrainerOutput | None:
        """Apply the statistics record at ``offset``; None if it is not one (it is skipped).

        Records below :attr:`statistics_offset` are already in the model and are skipped too.
        Raises :class:`~stream.shared_model.SharedModelError` (or ``ValueError``: statistics of another
        shape) for a record that cannot be applied; the model is then unchanged and the record skipped.
        """
        if offset < self.statistics_offset:
            return None
        self.statistics_offset = offset + 1  # a record that does not decode is skipped, never retried
        return self.apply_record(decode_statistics(value))

    def apply_record(self, rec: StatisticsRecord) -> TrainerOutput:
        stats = BatchStatistics.from_bytes(rec.stats)
        labels = LabelStatistics.from_bytes(rec.label_stats) if rec.label_stats is not None else None
        out = self.trainer.apply(stats, labels, rec.now_ms)
        if out.reseeded:
            self.reseeded_at[out.reseeded] = out.version
        self.applied_records += 1
        self.applied_points += int(stats.n_points)
        self.event_clock_ms = max(self.event_clock_ms, int(rec.event_clock_ms))
        self.newest_produced_ms = max(self.newest_produced_ms, int(rec.produced_ms))
        return out

    # ------------------------------------------------------------------ publishing
    def version(self, *, emit_ms: int, trainer: str = "") -> ModelVersion | None:
        """The model as workers need it now; None before the model is initialised."""
        model = self.model
        if not model.is_initialised:
            return None
        return ModelVersion(
            version=int(model.version),
            n_applied=int(model.n_applied),
            centroids=np.ascontiguousarray(model.centroids, dtype="<f4").tobytes(),
            dim=int(model.dim),
            counts=np.ascontiguousarray(model.counts, dtype="<f8").tobytes(),
            reservoir_ids=np.ascontiguousarray(model.reservoir_ids, dtype="<u8").tobytes(),
            reseeded_at=[int(v) for v in self.reseeded_at],
            label_terms={int(c): list(t) for c, t in (self.labeler.all_terms() if self.labeler else {}).items()},
            statistics_offset=int(self.statistics_offset),
            applied_records=int(self.applied_records),
            applied_points=int(self.applied_points),
            newest_produced_ms=int(self.newest_produced_ms),
            event_clock_ms=int(self.event_clock_ms),
            emit_ms=int(emit_ms),
            trainer=trainer,
        )

    def state_record(self) -> bytes:
        """Everything a new trainer needs to continue exactly (see the module docstring)."""
        return encode_trainer_state(TrainerStateRecord(
            model_state=model_state_to_bytes(self),
            statistics_offset=int(self.statistics_offset),
            applied_records=int(self.applied_records),
            applied_points=int(self.applied_points),
            reseeded_at=[int(v) for v in self.reseeded_at],
            newest_produced_ms=int(self.newest_produced_ms),
        ))

    # ------------------------------------------------------------------ restoring
    @classmethod
    def restore(cls, settings: ClusteringSettings, data: bytes, *, dim: int | None = None) -> GroupTrainer:
        """A trainer continuing from a :meth:`state_record` (raises ``ModelStateError``/``SharedModelError``)."""
        rec = decode_trainer_state(data)
        trainer = cls(settings, dim=dim)
        restored = restore_model_state(trainer, rec.model_state, dim=dim)
        trainer.statistics_offset = int(rec.statistics_offset)
        trainer.applied_records = int(rec.applied_records)
        trainer.applied_points = int(rec.applied_points)
        if len(rec.reseeded_at) == settings.n_clusters:
            trainer.reseeded_at = np.array(rec.reseeded_at, dtype=np.int64)
        trainer.newest_produced_ms = int(rec.newest_produced_ms)
        trainer.restored = restored
        return trainer

    #: What the last restore found (settings changed since the state was written), for the caller to log.
    restored: RestoredModel | None = None
