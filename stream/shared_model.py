"""One model for a consumer group: the records workers and the trainer exchange over Kafka.

Every member of the group is a **worker** for the users of its partitions. A worker
summarises each batch against the newest model version it holds and publishes the
batch's additive statistics as a :class:`StatisticsRecord` on the one-partition
statistics topic, in the batch's transaction. A single **trainer** (whichever member
owns that partition in the trainer's consumer group) applies the records in offset
order (:class:`stream.group_trainer.GroupTrainer`) and publishes each new model as a
:class:`ModelVersion` on the compacted model topic; every worker follows that topic and
assigns its users with the newest version (:meth:`stream.pipeline.Pipeline.adopt`).

A version carries what a worker needs to assign and summarise: the float32 centroids,
decayed counts, the warm-up count, the ids of the points the trainer's reservoir holds
(a batch then sends refreshed positions of those points rather than new seeds), the
version at which each cluster was last reseeded (a cluster reseeded after the worker's
version means something new), the label terms, and, for staleness, the newest
statistics it includes. Its reservoir *points* and random state stay with the trainer:
they travel in the trainer's own state record (:class:`TrainerStateRecord`), which a new
trainer restores before replaying the statistics after it.

The formats are msgpack (msgspec) with a version number: no pickle, safe to read from
another process.

Example:

>>> import numpy as np
>>> version = ModelVersion(version=3, n_applied=5, centroids=np.eye(2, 3, dtype="<f4").tobytes(), dim=3,
...                        counts=np.array([2.0, 1.0]).tobytes(), reservoir_ids=np.array([7], "<u8").tobytes(),
...                        reseeded_at=[1, 3], label_terms={0: ["ball"]})
>>> back = decode_model_version(encode_model_version(version))
>>> back.version, back.centroid_matrix().shape, back.count_vector().tolist(), back.reseeded_since(2)
(3, (2, 3), [2.0, 1.0], [1])
>>> rec = decode_statistics(encode_statistics(StatisticsRecord(worker="g-a", stats=b"s", now_ms=5)))
>>> rec.worker, rec.label_stats, rec.now_ms
('g-a', None, 5)
"""

from __future__ import annotations

import msgspec
import numpy as np

__all__ = [
    "FORMAT_VERSION",
    "ModelVersion",
    "SharedModelError",
    "StatisticsRecord",
    "TrainerStateRecord",
    "decode_model_version",
    "decode_statistics",
    "decode_trainer_state",
    "encode_model_version",
    "encode_statistics",
    "encode_trainer_state",
]

FORMAT_VERSION = 1

#: Keys of the model topic's records.
VERSION_KEY = b"version"
TRAINER_STATE_KEY = b"trainer"
#: The key of the model record written before the group shared one model (read once on upgrade).
LEGACY_MODEL_KEY = b"model"


class SharedModelError(ValueError):
    """Bytes that are not a record of this format (or of a newer one)."""


class StatisticsRecord(msgspec.Struct, kw_only=True):
    """One worker batch's contribution to the model (the value of a statistics-topic record).

    ``stats``/``label_stats`` are :class:`~stream.kmeans.BatchStatistics` and
    :class:`~stream.labels.LabelStatistics` bytes; ``now_ms`` is the batch's emission time
    (the trainer stamps its snapshots with it, so a replay is deterministic);
    ``produced_ms`` the wall-clock time the worker built it (for the staleness metric);
    ``model_version`` the version the worker assessed the batch with.
    """

    format: int = FORMAT_VERSION
    worker: str = ""
    stats: bytes
    label_stats: bytes | None = None
    now_ms: int = 0
    event_clock_ms: int = 0
    produced_ms: int = 0
    model_version: int = 0


class ModelVersion(msgspec.Struct, kw_only=True):
    """One published model (the value of the model topic's ``version`` record)."""

    format: int = FORMAT_VERSION
    version: int
    n_applied: int
    centroids: bytes  # float32 little-endian (k, dim)
    dim: int
    counts: bytes  # float64 little-endian (k,)
    reservoir_ids: bytes = b""  # uint64 little-endian
    reseeded_at: list[int] = []  # per cluster: the version at which it was last reseeded (0: never)
    label_terms: dict[int, list[str]] = {}
    statistics_offset: int = 0  # the next statistics record this version does not include
    applied_records: int = 0  # statistics records applied since the model began
    applied_points: int = 0  # ... and the points they summarised
    newest_produced_ms: int = 0  # produced_ms of the newest statistics record included
    event_clock_ms: int = 0
    emit_ms: int = 0
    trainer: str = ""

    def centroid_matrix(self) -> np.ndarray:
        """The ``(k, dim)`` float32 centroids."""
        return np.frombuffer(self.centroids, dtype="<f4").reshape(-1, self.dim).astype(np.float32)

    def count_vector(self) -> np.ndarray:
        return np.frombuffer(self.counts, dtype="<f8").astype(np.float64)

    def reservoir_id_vector(self) -> np.ndarray:
        return np.frombuffer(self.reservoir_ids, dtype="<u8").astype(np.uint64)

    def reseeded_since(self, version: int) -> list[int]:
        """Clusters reseeded after ``version``: their ids now name another interest."""
        return [c for c, at in enumerate(self.reseeded_at) if at > version]


class TrainerStateRecord(msgspec.Struct, kw_only=True):
    """The trainer's whole state (the value of the model topic's ``trainer`` record).

    ``model_state`` is :func:`stream.model_state.model_state_to_bytes` (centroids, counts,
    reservoir, random state, labels, cadence); the rest is the trainer's bookkeeping.
    Restoring it and applying the statistics from ``statistics_offset`` on rebuilds the
    trainer bit for bit.
    """

    format: int = FORMAT_VERSION
    model_state: bytes
    statistics_offset: int
    applied_records: int = 0
    applied_points: int = 0
    reseeded_at: list[int] = []
    newest_produced_ms: int = 0


_ENCODER = msgspec.msgpack.Encoder()
_DECODERS = {cls: msgspec.msgpack.Decoder(cls) for cls in (StatisticsRecord, ModelVersion, TrainerStateRecord)}


def _decode(data: bytes, cls: type) -> msgspec.Struct:
    try:
        rec = _DECODERS[cls].decode(data)
    except (msgspec.DecodeError, TypeError) as exc:
        raise SharedModelError(f"not a {cls.__name__}: {exc}") from exc
    if rec.format != FORMAT_VERSION:
        raise SharedModelError(f"{cls.__name__} format {rec.format}; this version reads {FORMAT_VERSION}")
    return rec


def encode_statistics(rec: StatisticsRecord) -> bytes:
    return _ENCODER.encode(rec)


def decode_statistics(data: bytes) -> StatisticsRecord:
    return _decode(data, StatisticsRecord)


def encode_model_version(rec: ModelVersion) -> bytes:
    return _ENCODER.encode(rec)


def decode_model_version(data: bytes) -> ModelVersion:
    return _decode(data, ModelVersion)


def encode_trainer_state(rec: TrainerStateRecord) -> bytes:
    return _ENCODER.encode(rec)


def decode_trainer_state(data: bytes) -> TrainerStateRecord:
    return _decode(data, TrainerStateRecord)
