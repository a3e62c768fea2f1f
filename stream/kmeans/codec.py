"""Bytes for :class:`~stream.kmeans.BatchStatistics` and :class:`~stream.kmeans.MiniBatchKMeans`, without pickle.

A record is a 4-byte magic (``ISBS`` statistics, ``ISKM`` model), a format version byte,
then msgpack (msgspec): arrays travel as raw little-endian bytes, random generator
states as JSON. The format evolves by adding fields at the end, each with a default that
means what a record written before it meant; so every record ever written still decodes.
The version byte changes only for a change older readers must refuse.

Example:

>>> import numpy as np
>>> from stream.kmeans import MiniBatchKMeans
>>> model = MiniBatchKMeans(n_clusters=2, seed=0)
>>> _ = model.learn_many(np.random.default_rng(0).normal([[1.0, 0.0], [0.0, 1.0]] * 4, 0.1))
>>> data = model_to_bytes(model)
>>> data[:5]
b'ISKM\\x01'
>>> model_from_bytes(MiniBatchKMeans, data).to_bytes() == data
True
>>> stats = model.summarise(np.array([[3.0, 0.0], [2.0, 0.1]]))
>>> statistics_from_bytes(type(stats), statistics_to_bytes(stats)).weights.tolist() in ([2.0, 0.0], [0.0, 2.0])
True
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
import numpy as np

from stream.kmeans.refinement import RefineSchedule
from stream.kmeans.reservoir import Reservoir

if TYPE_CHECKING:
    from stream.kmeans.estimator import MiniBatchKMeans
    from stream.kmeans.statistics import BatchStatistics

__all__ = ["model_from_bytes", "model_to_bytes", "statistics_from_bytes", "statistics_to_bytes"]

STATS_MAGIC = b"ISBS"
MODEL_MAGIC = b"ISKM"
FORMAT_VERSION = 1

S = TypeVar("S", bound="BatchStatistics")
M = TypeVar("M", bound="MiniBatchKMeans")


class StatisticsWire(msgspec.Struct, array_like=True):
    n_clusters: int
    dim: int
    n_points: int
    model_version: int
    sums: bytes | None
    weights: bytes | None
    n_seeds: int
    seed_capacity: int
    seeds: bytes
    seed_keys: bytes
    # Point ids (absent in statistics written before they existed).
    seed_ids: bytes = b""
    n_refresh: int = 0
    refresh: bytes = b""
    refresh_ids: bytes = b""


class ModelWire(msgspec.Struct):
    params: dict[str, Any]
    dim: int | None
    features: list[str | int] | None
    version: int
    n_applied: int
    centroids: bytes | None
    counts: bytes
    reseed_age: bytes
    buffer: bytes
    n_buffer: int
    reservoir: bytes
    reservoir_keys: bytes
    reservoir_age: bytes
    n_reservoir: int
    rng_state: str
    sample_rng_state: str
    # Periodic refinement (absent in states written before it existed).
    refine_wait: int = 0
    refine_interval: int = 0
    n_refines: int = 0
    n_refines_adopted: int = 0
    reservoir_ids: bytes = b""
    # Whether the last refinement that ran was won by a fresh seeding (the schedule depends on it).
    refine_restart_won: bool = False


def _f64(buf: bytes, shape: tuple[int, ...]) -> np.ndarray:
    return np.frombuffer(buf, dtype="<f8").reshape(shape).astype(np.float64)


def _f32(buf: bytes, shape: tuple[int, ...]) -> np.ndarray:
    return np.frombuffer(buf, dtype="<f4").reshape(shape).astype(np.float32)


def _u64(buf: bytes, n: int) -> np.ndarray:
    return np.frombuffer(buf, dtype="<u8").astype(np.uint64) if buf else np.zeros(n, dtype=np.uint64)


def _le(a: np.ndarray, dtype: str) -> bytes:
    return np.ascontiguousarray(a, dtype=dtype).tobytes()


def _body(data: bytes, magic: bytes, what: str) -> bytes:
    if data[:4] != magic:
        raise ValueError(f"not a {what} record")
    if data[4] != FORMAT_VERSION:
        raise ValueError(f"unsupported {what} format version {data[4]}")
    return data[5:]


def _record(magic: bytes, wire: msgspec.Struct) -> bytes:
    return magic + bytes([FORMAT_VERSION]) + msgspec.msgpack.encode(wire)


def statistics_to_bytes(stats: BatchStatistics) -> bytes:
    return _record(STATS_MAGIC, StatisticsWire(
        n_clusters=stats.n_clusters,
        dim=stats.dim,
        n_points=stats.n_points,
        model_version=stats.model_version,
        sums=None if stats.sums is None else _le(stats.sums, "<f8"),
        weights=None if stats.weights is None else _le(stats.weights, "<f8"),
        n_seeds=int(stats.seeds.shape[0]),
        seed_capacity=stats.seed_capacity,
        seeds=_le(stats.seeds, "<f4"),
        seed_keys=_le(stats.seed_keys, "<f8"),
        seed_ids=_le(stats.seed_ids, "<u8"),
        n_refresh=int(stats.refresh.shape[0]),
        refresh=_le(stats.refresh, "<f4"),
        refresh_ids=_le(stats.refresh_ids, "<u8"),
    ))


def statistics_from_bytes(cls: type[S], data: bytes) -> S:
    w = msgspec.msgpack.decode(_body(data, STATS_MAGIC, "BatchStatistics"), type=StatisticsWire)
    k, d = w.n_clusters, w.dim
    return cls(
        n_clusters=k,
        dim=d,
        sums=None if w.sums is None else _f64(w.sums, (k, d)),
        weights=None if w.weights is None else _f64(w.weights, (k,)),
        n_points=w.n_points,
        seeds=_f32(w.seeds, (w.n_seeds, d)),
        seed_keys=_f64(w.seed_keys, (w.n_seeds,)),
        seed_capacity=w.seed_capacity,
        model_version=w.model_version,
        seed_ids=_u64(w.seed_ids, w.n_seeds),
        refresh=_f32(w.refresh, (w.n_refresh, d)),
        refresh_ids=_u64(w.refresh_ids, w.n_refresh),
    )


def model_to_bytes(model: MiniBatchKMeans) -> bytes:
    """The model's full state: hyper-parameters, centroids, counts, buffer, reservoir, schedule, generators."""
    d = model._dim or 0
    empty = np.zeros((0, d), dtype=np.float32)
    buf = model._buffer if model._buffer is not None else empty
    reservoir = model._reservoir
    points = reservoir.points if reservoir.points is not None else empty
    schedule = model._schedule
    return _record(MODEL_MAGIC, ModelWire(
        params=model._get_params(),
        dim=model._dim,
        features=model._features,
        version=model.version,
        n_applied=model._n_applied,
        centroids=None if model._centroids is None else _le(model._centroids, "<f8"),
        counts=_le(model._counts, "<f8"),
        reseed_age=_le(model._reseed_age, "<f8"),
        buffer=_le(buf, "<f4"),
        n_buffer=int(buf.shape[0]),
        reservoir=_le(points, "<f4"),
        reservoir_keys=_le(reservoir.keys, "<f8"),
        reservoir_age=_le(reservoir.age, "<f8"),
        n_reservoir=int(points.shape[0]),
        rng_state=json.dumps(model._rng.bit_generator.state),
        sample_rng_state=json.dumps(model._sample_rng.bit_generator.state),
        refine_wait=schedule.wait,
        refine_interval=schedule.interval,
        n_refines=model.n_refines,
        n_refines_adopted=model.n_refines_adopted,
        reservoir_ids=_le(reservoir.ids, "<u8"),
        refine_restart_won=schedule.restart_won,
    ))


def model_from_bytes(cls: type[M], data: bytes) -> M:
    w = msgspec.msgpack.decode(_body(data, MODEL_MAGIC, "MiniBatchKMeans"), type=ModelWire)
    model = cls(**w.params)
    k, d = model.n_clusters, w.dim or 0
    model._dim = w.dim
    model._features = w.features
    model.version = w.version
    model._n_applied = w.n_applied
    if w.centroids is not None:
        model._centroids = _f64(w.centroids, (k, d))
        model._c32 = model._centroids.astype(np.float32)
    model._counts = _f64(w.counts, (k,))
    model._reseed_age = _f64(w.reseed_age, (k,))
    model._buffer = _f32(w.buffer, (w.n_buffer, d)) if w.n_buffer else None
    reservoir = Reservoir()
    reservoir.points = _f32(w.reservoir, (w.n_reservoir, d)) if w.dim is not None else None
    reservoir.keys = _f64(w.reservoir_keys, (w.n_reservoir,))
    reservoir.age = _f64(w.reservoir_age, (w.n_reservoir,))
    reservoir.ids = _u64(w.reservoir_ids, w.n_reservoir)
    model._reservoir = reservoir
    model._rng.bit_generator.state = json.loads(w.rng_state)
    model._sample_rng.bit_generator.state = json.loads(w.sample_rng_state)
    model._schedule = RefineSchedule(wait=w.refine_wait, interval=w.refine_interval, restart_won=w.refine_restart_won)
    model.n_refines = w.n_refines
    model.n_refines_adopted = w.n_refines_adopted
    return model
