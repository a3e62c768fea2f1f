"""The trainer of a consumer group: one model from every worker's statistics, in log order.

:class:`GroupTrainer` applies :class:`~stream.shared_model.StatisticsRecord` values in the
order of the statistics topic (one partition, so one order for the whole group) with the
same :class:`~stream.trainer.TrainerStage` a single process uses. It applies them in
**groups** (:meth:`GroupTrainer.apply_group`: a trainer poll's records, summed, folded in
once, forgetting as much as that many batches would have), so one trainer keeps up with many
workers; the group boundaries travel with the committed offset
(:meth:`GroupTrainer.offset_metadata`). It produces:

- :meth:`GroupTrainer.version` — the :class:`~stream.shared_model.ModelVersion` every
  worker follows;
- :meth:`GroupTrainer.state_record` — its whole state with the offset of the next
  statistics record, for the compacted model topic.

Applying is deterministic given the state (the model's random generators are part of it),
so a trainer restored from a state record (:meth:`GroupTrainer.restore`) that applies the
statistics after that record's offset in the same groups reaches the same model, bit for
bit, as the trainer that never stopped. ``applied_records``/``applied_points`` count what
the model includes: after any number of failovers they equal the sums over the statistics
log up to ``statistics_offset`` (no record applied twice, none lost).

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
from collections.abc import Sequence

import numpy as np

from stream.kmeans import BatchStatistics
from stream.labels import LabelStatistics
from stream.model_state import RestoredModel, model_state_to_bytes, restore_model_state
from stream.settings import ClusteringSettings
from stream.shared_model import (
    ModelVersion,
    SharedModelError,
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
        #: Ends of the groups applied since the last state record (see :meth:`apply_group`).
        self.group_ends: list[int] = []
        #: ``produced_ms`` of each record the last group applied (for the staleness metric).
        self.last_group_produced_ms: list[int] = []
        self._state_offset = 0  # statistics_offset of the last state record taken (or restored)

    # ------------------------------------------------------------------ applying
    def apply(self, offset: int, value: bytes) -> TrainerOutput | None:
        """Apply the statistics record at ``offset`` alone (a group of one; see :meth:`apply_group`).

        Raises :class:`~stream.shared_model.SharedModelError` (or ``ValueError``) for a record that
        cannot be applied; it is skipped (the model is unchanged).
        """
        out, bad = self.apply_group([(offset, value)], offset + 1)
        if bad:
            raise bad[0][1]
        return out

    def apply_group(
        self, records: Sequence[tuple[int, bytes]], end: int
    ) -> tuple[TrainerOutput | None, list[tuple[int, Exception]]]:
        """Apply the statistics records ``(offset, value)`` below ``end`` as one update; ``end`` becomes
        :attr:`statistics_offset`.

        The records' statistics are summed (they are additive: exactly the update of the
        concatenated batches) and applied once, forgetting as much as that many batches would
        have: so one trainer keeps up with many workers, and refinement runs per update, not per
        worker batch. The group boundaries are part of the log's meaning (they are in the
        committed offsets' metadata, :meth:`offset_metadata`), so a replay applies the same groups.
        Records below :attr:`statistics_offset` are skipped (already in the model); records that
        do not decode or do not fit the model are returned as ``(offset, error)`` and skipped.
        """
        stats: list[BatchStatistics] = []
        labels: list[LabelStatistics] = []
        bad: list[tuple[int, Exception]] = []
        produced: list[int] = []
        seen: set[int] = set()
        n_batches = 0
        now_ms = 0
        for offset, value in records:
            if offset < self.statistics_offset or offset >= end or offset in seen:
                continue
            seen.add(offset)
            try:
                rec = decode_statistics(value)
                st = BatchStatistics.from_bytes(rec.stats)
                lab = LabelStatistics.from_bytes(rec.label_stats) if rec.label_stats is not None else None
                if (st.n_clusters, self.dim or st.dim) != (self.model.n_clusters, st.dim):
                    raise ValueError(f"statistics of {st.n_clusters} clusters, dim {st.dim}; the model has "
                                     f"{self.model.n_clusters} clusters, dim {self.dim}")
            except (SharedModelError, ValueError) as exc:
                bad.append((offset, exc))
                continue
            stats.append(st)
            if lab is not None:
                labels.append(lab)
            now_ms = max(now_ms, int(rec.now_ms))
            self.event_clock_ms = max(self.event_clock_ms, int(rec.event_clock_ms))
            self.newest_produced_ms = max(self.newest_produced_ms, int(rec.produced_ms))
            produced.append(int(rec.produced_ms))
            n_batches += max(1, int(rec.batches))
        self.last_group_produced_ms = produced
        self.statistics_offset = max(self.statistics_offset, int(end))
        self.group_ends.append(int(end))
        if not stats:
            return None, bad
        if len(stats) > 1:  # keep every worker's seeds, as one record at a time would (up to the reservoir)
            capacity = min(sum(st.seed_capacity for st in stats), max(self.model.reservoir_size, 1))
            for st in stats:
                st.seed_capacity = capacity
        merged = BatchStatistics.merge(stats)
        label_stats = LabelStatistics.merge(labels) if labels else None
        out = self.trainer.apply(merged, label_stats, now_ms, batches=n_batches)
        if out.reseeded:
            self.reseeded_at[out.reseeded] = out.version
        self.applied_records += len(stats)
        self.applied_points += int(merged.n_points)
        return out, bad

    def offset_metadata(self) -> str:
        """The group boundaries since the last state record, for the committed offset's metadata."""
        start = self._state_offset
        deltas, prev = [], start
        for e in self.group_ends:
            deltas.append(str(e - prev))
            prev = e
        return f"groups:{start}:{','.join(deltas)}"

    @staticmethod
    def groups_from_metadata(metadata: str | None, start: int) -> list[int] | None:
        """The group ends a :meth:`offset_metadata` string names, if it continues from ``start``."""
        if not metadata or not metadata.startswith("groups:"):
            return None
        try:
            _, first, deltas = metadata.split(":", 2)
            prev = int(first)
            ends = []
            for d in filter(None, deltas.split(",")):
                prev += int(d)
                ends.append(prev)
        except ValueError:
            return None
        return ends if int(first) == start else None

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
        """Everything a new trainer needs to continue exactly (see the module docstring); the group
        boundaries start afresh from here."""
        self.group_ends = []
        self._state_offset = int(self.statistics_offset)
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
        trainer._state_offset = trainer.statistics_offset
        trainer.restored = restored
        return trainer

    #: What the last restore found (settings changed since the state was written), for the caller to log.
    restored: RestoredModel | None = None
