"""Checkpoints: a pipeline's whole state as bytes, with the input offsets it covers.

A checkpoint holds the user profiles (one float32 matrix), the last emitted
assignment per user (with the recheck cursors, so rechecks resume where they were),
the k-means model, the cluster labels, the trainer's snapshot cadence and the input
offsets already folded in. Restoring it and re-reading the input from those offsets
gives exactly the state of an uninterrupted run, which is how the service survives a
restart. The format is msgpack (msgspec) with raw little-endian arrays and a version
number: no pickle, so a checkpoint written by another process is safe to read.

Example:

>>> import numpy as np
>>> from stream.settings import ClusteringSettings
>>> from stream.pipeline import Pipeline, SourceRecord
>>> class HashEncoder:
...     dim = 4
...     def encode(self, texts):
...         rng = [np.random.default_rng(len(t)) for t in texts]
...         return np.array([r.normal(size=4) for r in rng], np.float32)
>>> pipe = Pipeline(ClusteringSettings(n_clusters=2), HashEncoder())
>>> recs = [SourceRecord(f'{{"user_id": "u{i}", "ts": {i}, "text": "{"x" * i}"}}'.encode(), None, None)
...         for i in range(1, 9)]
>>> _ = pipe.process_batch(recs, now_ms=0)
>>> data = pipeline_to_bytes(pipe, {"events:0": 8})
>>> fresh = Pipeline(ClusteringSettings(n_clusters=2), HashEncoder())
>>> restore_pipeline(fresh, data)
{'events:0': 8}
>>> bool(np.allclose(fresh.profiles.direction("u3"), pipe.profiles.direction("u3")))
True
>>> fresh.model.version == pipe.model.version
True
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import numpy as np

if TYPE_CHECKING:
    from stream.pipeline import Pipeline

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """The bytes are not a checkpoint this version can read, or do not fit the pipeline."""


class _CheckpointWire(msgspec.Struct):
    format: int
    offsets: dict[str, int]
    dim: int
    user_ids: list[str]
    profile_sums: bytes  # float32 (n, dim)
    profile_ref_ms: bytes  # int64 (n,)
    profile_mass: bytes  # float64 (n,)
    tracker: bytes  # AssignmentTracker.to_bytes()
    model: bytes
    labeler: bytes | None
    trainer_updates: int
    trainer_since_snapshot: int
    trainer_snapshots: int
    trainer_published: bytes | None  # float32 (k, dim) centroids of the last snapshot
    event_clock_ms: int


def pipeline_to_bytes(pipeline: Pipeline, offsets: dict[str, int]) -> bytes:
    """Serialise ``pipeline``'s state; ``offsets`` maps ``"topic:partition"`` to the next offset to read."""
    users, sums, refs, mass = pipeline.profiles.export_arrays()
    trainer = pipeline.trainer
    published = trainer._published
    wire = _CheckpointWire(
        format=FORMAT_VERSION,
        offsets=dict(offsets),
        dim=pipeline.profiles.dim,
        user_ids=users,
        profile_sums=sums.astype("<f4").tobytes(),
        profile_ref_ms=refs.astype("<i8").tobytes(),
        profile_mass=mass.astype("<f8").tobytes(),
        tracker=pipeline.tracker.to_bytes(),
        model=pipeline.model.to_bytes(),
        labeler=pipeline.labeler.to_bytes() if pipeline.labeler is not None else None,
        trainer_updates=int(trainer.updates),
        trainer_since_snapshot=int(trainer._since_snapshot),
        trainer_snapshots=int(trainer.snapshots_published),
        trainer_published=None if published is None else np.asarray(published, dtype="<f4").tobytes(),
        event_clock_ms=int(pipeline.event_clock_ms),
    )
    return msgspec.msgpack.encode(wire)


def restore_pipeline(pipeline: Pipeline, data: bytes) -> dict[str, int]:
    """Load a checkpoint into a freshly built ``pipeline``; returns the offsets it covers."""
    from stream.assignments import AssignmentTracker
    from stream.kmeans import MiniBatchKMeans
    from stream.labels import ClusterLabeler

    try:
        wire = msgspec.msgpack.decode(data, type=_CheckpointWire)
    except msgspec.DecodeError as exc:
        raise CheckpointError(f"not a readable checkpoint: {exc}") from exc
    if wire.format != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint format {wire.format}, this version reads {FORMAT_VERSION}")
    if wire.dim != pipeline.profiles.dim:
        raise CheckpointError(f"checkpoint has dim {wire.dim}, the pipeline's encoder has {pipeline.profiles.dim}")
    model = MiniBatchKMeans.from_bytes(wire.model)
    if model.n_clusters != pipeline.model.n_clusters:
        raise CheckpointError(
            f"checkpoint has {model.n_clusters} clusters, settings ask for {pipeline.model.n_clusters}"
        )
    n, d = len(wire.user_ids), wire.dim
    sums = np.frombuffer(wire.profile_sums, dtype="<f4").reshape(n, d)
    refs = np.frombuffer(wire.profile_ref_ms, dtype="<i8")
    mass = np.frombuffer(wire.profile_mass, dtype="<f8")
    pipeline.profiles.put_many(wire.user_ids, sums, refs, mass)
    # The stages hold references to the tracker, model and labeler: swap their state in place.
    pipeline.tracker.__dict__.update(AssignmentTracker.from_bytes(wire.tracker).__dict__)
    pipeline.model.__dict__.update(model.__dict__)
    if wire.labeler is not None and pipeline.labeler is not None:
        pipeline.labeler.__dict__.update(ClusterLabeler.from_bytes(wire.labeler).__dict__)
    trainer = pipeline.trainer
    trainer.updates = wire.trainer_updates
    trainer._since_snapshot = wire.trainer_since_snapshot
    trainer.snapshots_published = wire.trainer_snapshots
    if wire.trainer_published is not None:
        trainer._published = np.frombuffer(wire.trainer_published, dtype="<f4").reshape(model.n_clusters, -1).copy()
    pipeline.event_clock_ms = wire.event_clock_ms
    return dict(wire.offsets)


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
