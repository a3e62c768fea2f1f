"""The clustering model's state as bytes: centroids, decayed counts, labels, snapshot cadence.

This is the value of the model changelog record. With it, a restarted or newly
assigned member continues the model where the last writer left it, instead of
starting k-means from scratch. Profiles travel separately, one changelog record per
user (:func:`stream.profiles.profile_to_bytes`), and the last emitted assignments are
read back from the assignments topic.

The format is msgpack (msgspec) with a version number; the model and labeler use their
own no-pickle codecs, so a record written by another process is safe to read.

A restore keeps what the model learned (centroids, counts, reservoir, labels, version,
random state) and takes the hyper-parameters from the current settings: a setting changed
since the record was written (``kmeans_half_life``, ``refine_every``, ``warmup_batches``,
``seed``, ...) takes effect at once and is listed in :attr:`RestoredModel.changes`, for the
caller to log. Settings the learned state is made of (``n_clusters``, the encoder's
dimension) cannot change on a live model: :func:`restore_model_state` refuses them with a
:class:`ModelStateError` that says how to migrate.

Example:

>>> import numpy as np
>>> from stream.settings import ClusteringSettings
>>> from stream.pipeline import Pipeline, SourceRecord
>>> class LengthEncoder:
...     dim = 4
...     def encode(self, texts):
...         return np.array([np.random.default_rng(len(t)).normal(size=4) for t in texts], np.float32)
>>> pipe = Pipeline(ClusteringSettings(n_clusters=2), LengthEncoder())
>>> recs = [SourceRecord(f'{{"user_id": "u{i}", "ts": {i}, "text": "{"x" * i}"}}'.encode(), None, None)
...         for i in range(1, 9)]
>>> _ = pipe.process_batch(recs, now_ms=0)
>>> data = model_state_to_bytes(pipe)
>>> fresh = Pipeline(ClusteringSettings(n_clusters=2, kmeans_half_life=20.0), LengthEncoder())
>>> restored = restore_model_state(fresh, data)
>>> writer, updates_offset = restored
>>> (writer, updates_offset), [str(change) for change in restored.changes]
(('', 0), ['setting kmeans_half_life changed from 50.0 to 20.0, taking effect now'])
>>> fresh.model.version == pipe.model.version, bool(np.allclose(fresh.model.centroids, pipe.model.centroids))
(True, True)

Replaying a logged trainer step continues the model exactly:

>>> fresh = Pipeline(ClusteringSettings(n_clusters=2), LengthEncoder())
>>> restore_model_state(fresh, data).changes
[]
>>> more = [SourceRecord(f'{{"user_id": "v{i}", "ts": {i}, "text": "{"y" * i}"}}'.encode(), None, None)
...         for i in range(1, 9)]
>>> result = pipe.process_batch(more, now_ms=1)
>>> step = model_update_to_bytes(pipe.trainer.updates, result.stats, result.label_stats, 1)
>>> apply_model_update(fresh, step) == pipe.trainer.updates
True
>>> bool(np.array_equal(fresh.model.centroids, pipe.model.centroids))
True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec
import numpy as np

from stream.settings import ClusteringSettings

if TYPE_CHECKING:
    from stream.pipeline import Pipeline

FORMAT_VERSION = 1


# Settings behind the model's and the labeler's hyper-parameters, where the names differ.
_MODEL_SETTING = {"half_life": "kmeans_half_life", "time_unit": "kmeans_time_unit", "warmup": "warmup_batches"}
_LABELER_SETTING = {"half_life": "label_half_life", "max_vocab": "label_max_vocab", "top_n": "label_top_n"}
_MIGRATE = (
    "this cannot change on a live model. To migrate, run under a new group id: it gets its own changelog "
    "topics and reads the events topic from the earliest retained offset, so the events are replayed into a "
    "new model (offline: `interest-stream replay` over an events file)"
)


class ModelStateError(ValueError):
    """The bytes are not a model state this version can read, or do not fit the pipeline."""


class SettingChange(NamedTuple):
    """A setting whose value differs from the one the restored state was learned with."""

    setting: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"setting {self.setting} changed from {self.old} to {self.new}, taking effect now"


@dataclasses.dataclass(frozen=True)
class RestoredModel:
    """What :func:`restore_model_state` restored: whose update log continues it and from where,
    and the settings that changed since the state was written (they take effect now).

    Unpacks as the pair ``writer, updates_offset``.
    """

    writer: str
    updates_offset: int
    changes: list[SettingChange]

    def __iter__(self) -> Iterator[Any]:
        return iter((self.writer, self.updates_offset))


class _ModelStateWire(msgspec.Struct):
    format: int
    model: bytes
    labeler: bytes | None
    trainer_updates: int
    trainer_since_snapshot: int
    trainer_snapshots: int
    trainer_published: bytes | None  # float32 (k, dim): centroids of the last published snapshot
    event_clock_ms: int
    writer: str = ""  # who wrote it (the member's transactional id): its update log continues it
    updates_offset: int = 0  # where that writer's update log continues (a hint; older updates are skipped)


class ModelUpdate(msgspec.Struct):
    """One trainer step: the statistics a batch applied, numbered by the trainer's update count.

    Replaying the updates after a snapshot, in order, rebuilds the model bit for bit: the
    trainer is deterministic given its state (the random generator's state included).
    """

    seq: int
    stats: bytes
    label_stats: bytes | None
    now_ms: int


def model_update_to_bytes(seq: int, stats, label_stats, now_ms: int) -> bytes:
    """Encode one trainer step (``seq`` = the trainer's update count after applying it)."""
    return msgspec.msgpack.encode(ModelUpdate(
        seq=int(seq), stats=stats.to_bytes(),
        label_stats=label_stats.to_bytes() if label_stats is not None else None, now_ms=int(now_ms)))


def apply_model_update(pipeline: Pipeline, data: bytes) -> int:
    """Apply an encoded trainer step to ``pipeline`` if it is the next one; returns the trainer's update count.

    Steps already contained in the model (``seq`` not above the count) are skipped; a gap raises.
    """
    from stream.kmeans import BatchStatistics
    from stream.labels import LabelStatistics

    update = msgspec.msgpack.decode(data, type=ModelUpdate)
    current = pipeline.trainer.updates
    if update.seq <= current:
        return current
    if update.seq != current + 1:
        raise ModelStateError(f"model update log has a gap: at step {current}, next record is step {update.seq}")
    stats = BatchStatistics.from_bytes(update.stats)
    labels = LabelStatistics.from_bytes(update.label_stats) if update.label_stats is not None else None
    pipeline.trainer.apply(stats, labels, update.now_ms)
    return pipeline.trainer.updates


def model_state_to_bytes(pipeline: Pipeline, *, writer: str = "", updates_offset: int = 0) -> bytes:
    """Serialise the model side of ``pipeline`` (model, labels, trainer cadence, event clock)."""
    trainer = pipeline.trainer.state()
    wire = _ModelStateWire(
        format=FORMAT_VERSION,
        model=pipeline.model.to_bytes(),
        labeler=pipeline.labeler.to_bytes() if pipeline.labeler is not None else None,
        trainer_updates=int(trainer.updates),
        trainer_since_snapshot=int(trainer.since_snapshot),
        trainer_snapshots=int(trainer.snapshots_published),
        trainer_published=None if trainer.published is None else np.asarray(trainer.published, dtype="<f4").tobytes(),
        event_clock_ms=int(pipeline.event_clock_ms),
        writer=writer,
        updates_offset=int(updates_offset),
    )
    return msgspec.msgpack.encode(wire)


def restore_model_state(pipeline: Pipeline, data: bytes, *, dim: int | None = None) -> RestoredModel:
    """Load a model state into ``pipeline`` in place (its stages keep their references).

    The model, labels and trainer continue what the state learned, with the pipeline's
    current settings. Returns a :class:`RestoredModel`: whose update log continues this state
    and from where, and the settings that differ from the state's. Raises
    :class:`ModelStateError`, leaving the pipeline untouched, when the bytes are not a model
    state or the state cannot continue under these settings (another ``n_clusters`` or
    encoder dimension). ``pipeline`` may be anything with ``model``, ``labeler``, ``trainer`` and
    ``event_clock_ms`` (a :class:`~stream.group_trainer.GroupTrainer`); ``dim`` defaults to its
    profiles' dimension.
    """
    from stream.kmeans import MiniBatchKMeans
    from stream.labels import ClusterLabeler
    from stream.trainer import TrainerState

    try:
        wire = msgspec.msgpack.decode(data, type=_ModelStateWire)
    except msgspec.DecodeError as exc:
        raise ModelStateError(f"not a readable model state: {exc}") from exc
    if wire.format != FORMAT_VERSION:
        raise ModelStateError(f"model state format {wire.format}, this version reads {FORMAT_VERSION}")
    try:
        model = MiniBatchKMeans.from_bytes(wire.model)
        labeler = ClusterLabeler.from_bytes(wire.labeler) if wire.labeler is not None else None
    except (ValueError, msgspec.DecodeError) as exc:
        raise ModelStateError(f"not a readable model state: {exc}") from exc
    if model.n_clusters != pipeline.model.n_clusters:
        raise ModelStateError(
            f"the stored model has {model.n_clusters} clusters, the settings ask for {pipeline.model.n_clusters}: "
            f"{_MIGRATE}"
        )
    if dim is None:
        dim = pipeline.profiles.dim
    if model.dim is not None and model.dim != dim:
        raise ModelStateError(
            f"the stored model has dim {model.dim}, the encoder has dim {dim} (another embedding "
            f"model): {_MIGRATE}"
        )
    try:
        changed = _changes(pipeline.model.load_state(model), _MODEL_SETTING, "MiniBatchKMeans")
    except ValueError as exc:
        raise ModelStateError(f"{exc}: {_MIGRATE}") from exc
    if labeler is not None and pipeline.labeler is not None:
        changed += _changes(pipeline.labeler.load_state(labeler), _LABELER_SETTING, "ClusterLabeler")
    published = None
    if wire.trainer_published is not None:
        published = np.frombuffer(wire.trainer_published, dtype="<f4").reshape(model.n_clusters, -1)
    pipeline.trainer.load_state(
        TrainerState(wire.trainer_updates, wire.trainer_since_snapshot, wire.trainer_snapshots, published)
    )
    pipeline.event_clock_ms = max(pipeline.event_clock_ms, wire.event_clock_ms)
    return RestoredModel(wire.writer, wire.updates_offset, changed)


def _changes(differ: dict[str, tuple[Any, Any]], setting_of: dict[str, str], owner: str) -> list[SettingChange]:
    """Name each differing hyper-parameter after its setting (``owner.name`` when it has none)."""
    out = []
    for name, (old, new) in differ.items():
        setting = setting_of.get(name, name)
        out.append(SettingChange(setting if setting in ClusteringSettings.model_fields else f"{owner}.{name}", old, new))
    return out
