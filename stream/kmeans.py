"""Online mini-batch k-means with forgetting, as a river clusterer.

Each mini-batch is first *summarised* against the current centroids (every point
goes to its nearest centroid; per cluster we keep the weighted sum of its points
and their total weight) and the summary is then *applied* to the model with
exponential forgetting, as in Sculley's web-scale k-means and Spark's
``StreamingKMeans``::

    a         = 0.5 ** (1 / half_life)            # per batch, or a ** n_points per point
    count_j'  = a * count_j + m_j
    c_j'      = (a * count_j * c_j + sum_j) / count_j'

With ``spherical=True`` (the default, for sentence embeddings) points are
L2-normalised, assignment uses cosine similarity and centroids are renormalised
after each update.

The split matters: :class:`BatchStatistics` are additive (``a + b``,
:meth:`BatchStatistics.merge`), so many workers can summarise their own users'
batches and one trainer applies the merged statistics — exactly the update the
concatenated batch would have given. Statistics and the model serialise to bytes
without pickle.

Until ``init_size`` distinct points have been seen the model only buffers them; it
then runs k-means++ on the buffer. Clusters whose decayed weight falls below
``reseed_fraction`` of the average (or whose centroid duplicates another's) are
reseeded, k-means++ style, from a reservoir of recent points, keeping their ids.
Points may carry ids (:func:`point_ids`, e.g. of users): the reservoir then keeps one
row per id at its latest position, so the periodic refinement clusters users' current
profiles rather than stale copies of them.

Example: two blobs of points, one near the x axis and one near the y axis.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> east = rng.normal([1.0, 0.0], 0.05, size=(100, 2))
>>> north = rng.normal([0.0, 1.0], 0.05, size=(100, 2))
>>> model = MiniBatchKMeans(n_clusters=2, seed=1)
>>> for batch in np.split(np.vstack([east, north])[rng.permutation(200)], 4):
...     result = model.learn_many(batch)
>>> model.is_initialised, model.version
(True, 4)
>>> a, b = model.predict_many(np.array([[2.0, 0.1], [0.1, 3.0]])).tolist()
>>> a != b
True
>>> model.predict_one({0: 5.0, 1: 0.2}) == a
True
>>> np.round(model.centroids[a], 1).tolist()
[1.0, 0.0]
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import operator
from collections.abc import Iterable
from typing import Any

import msgspec
import numpy as np
from river import base

__all__ = ["ApplyResult", "BatchStatistics", "MiniBatchKMeans", "point_ids"]

_STATS_MAGIC = b"ISBS"
_MODEL_MAGIC = b"ISKM"
_FORMAT_VERSION = 1
# Reseeding samples its k-means++ candidates from at most this many recent reservoir points.
_RESEED_CANDIDATES = 512
# Reservoir points whose weight has decayed below this (three half-lives) are dropped,
# so reseeding never revives a centre from long-gone data.
_RESERVOIR_MAX_AGE = 0.125
# A refinement needs at least this many reservoir points per cluster (fewer: k-means on the
# reservoir would fit its noise, so the refinement is skipped).
_REFINE_POINTS_PER_CLUSTER = 16
# A refined centre whose cosine similarity to the centre it replaces is below this counts as a
# new centre (listed in ApplyResult.reseeded, so its labels start afresh).
_REFINE_NEW_CENTRE_SIM = 0.5


# ---------------------------------------------------------------------------- wire formats
class _StatsWire(msgspec.Struct, array_like=True):
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


class _ModelWire(msgspec.Struct):
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


def _f64(buf: bytes, shape: tuple[int, ...]) -> np.ndarray:
    return np.frombuffer(buf, dtype="<f8").reshape(shape).astype(np.float64)


def _f32(buf: bytes, shape: tuple[int, ...]) -> np.ndarray:
    return np.frombuffer(buf, dtype="<f4").reshape(shape).astype(np.float32)


def _le(a: np.ndarray, dtype: str) -> bytes:
    return np.ascontiguousarray(a, dtype=dtype).tobytes()


def _u64(buf: bytes, n: int) -> np.ndarray:
    return np.frombuffer(buf, dtype="<u8").astype(np.uint64) if buf else np.zeros(n, dtype=np.uint64)


def _top_keys(
    points: np.ndarray, keys: np.ndarray, capacity: int, ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep the ``capacity`` rows with the largest keys (weighted reservoir, A-Res), with their ids."""
    usable = keys > -np.inf
    if not usable.all():
        points, keys, ids = points[usable], keys[usable], ids[usable]
    if keys.shape[0] <= capacity:
        return points, keys, ids
    if capacity <= 0:
        return points[:0], keys[:0], ids[:0]
    keep = np.sort(np.argpartition(-keys, capacity - 1)[:capacity])
    return points[keep], keys[keep], ids[keep]


def _sample_keys(rng: np.random.Generator, weights: np.ndarray) -> np.ndarray:
    """A-Res keys ``log(u) / w`` (larger is kept); points of weight <= 0 are never kept."""
    u = rng.random(weights.shape[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        keys = np.log(u) / weights
    keys[~(weights > 0)] = -np.inf
    return keys


def point_ids(names: Iterable[str]) -> np.ndarray:
    """Stable non-zero uint64 ids of named points (e.g. user ids), for :meth:`MiniBatchKMeans.summarise`.

    >>> ids = point_ids(["alice", "bob", "alice"])
    >>> ids.dtype, bool(ids[0] == ids[2]), bool(ids[0] != ids[1]), bool((ids != 0).all())
    (dtype('uint64'), True, True, True)
    """
    digests = b"".join(hashlib.blake2b(n.encode("utf-8", "surrogatepass"), digest_size=8).digest() for n in names)
    return np.frombuffer(digests, dtype="<u8").astype(np.uint64) | np.uint64(1)


# ---------------------------------------------------------------------------- statistics
@dataclasses.dataclass(eq=False)
class BatchStatistics:
    """What one mini-batch contributes to the centroids; additive.

    Attributes
    ----------
    sums
        ``(k, d)`` float64 weighted sums of the points assigned to each cluster
        (``None`` when summarised before the model was initialised).
    weights
        ``(k,)`` float64 total weight assigned to each cluster (``None`` likewise).
    n_points
        Number of points summarised.
    seeds, seed_keys, seed_ids
        A bounded weighted reservoir sample of the batch's (normalised) points, their
        A-Res keys and their point ids (0: anonymous), used to initialise, reseed and
        refine the model. Merging keeps the ``seed_capacity`` largest keys, which is
        again a reservoir of the union.
    refresh, refresh_ids
        New positions of points the model's reservoir already holds (same id): a user's
        profile moves with each event, and the reservoir keeps the current one, so
        refinements cluster current profiles, not stale copies.
    model_version
        The model version the points were assigned with (the largest, after a merge).
    """

    n_clusters: int
    dim: int
    sums: np.ndarray | None
    weights: np.ndarray | None
    n_points: int
    seeds: np.ndarray
    seed_keys: np.ndarray
    seed_capacity: int
    model_version: int = 0
    seed_ids: np.ndarray | None = None
    refresh: np.ndarray | None = None
    refresh_ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.seed_ids is None:
            self.seed_ids = np.zeros(self.seeds.shape[0], dtype=np.uint64)
        if self.refresh is None:
            self.refresh = np.zeros((0, self.dim), dtype=np.float32)
        if self.refresh_ids is None:
            self.refresh_ids = np.zeros(0, dtype=np.uint64)

    def __add__(self, other: BatchStatistics) -> BatchStatistics:
        if not isinstance(other, BatchStatistics):
            return NotImplemented
        if (self.n_clusters, self.dim) != (other.n_clusters, other.dim):
            raise ValueError(
                f"cannot merge statistics of shape {(self.n_clusters, self.dim)} and {(other.n_clusters, other.dim)}"
            )
        if self.sums is None:
            sums, weights = other.sums, other.weights
        elif other.sums is None:
            sums, weights = self.sums, self.weights
        else:
            sums, weights = self.sums + other.sums, self.weights + other.weights
        capacity = max(self.seed_capacity, other.seed_capacity)
        seeds, keys, ids = _top_keys(
            np.concatenate([self.seeds, other.seeds]),
            np.concatenate([self.seed_keys, other.seed_keys]),
            capacity,
            np.concatenate([self.seed_ids, other.seed_ids]),
        )
        return BatchStatistics(
            n_clusters=self.n_clusters,
            dim=self.dim,
            sums=None if sums is None else sums.copy(),
            weights=None if weights is None else weights.copy(),
            n_points=self.n_points + other.n_points,
            seeds=seeds,
            seed_keys=keys,
            seed_capacity=capacity,
            model_version=max(self.model_version, other.model_version),
            seed_ids=ids,
            refresh=np.concatenate([self.refresh, other.refresh]),  # applied in order: the later wins
            refresh_ids=np.concatenate([self.refresh_ids, other.refresh_ids]),
        )

    @classmethod
    def merge(cls, stats: Iterable[BatchStatistics]) -> BatchStatistics:
        """Sum several statistics (order-free for the sums and weights)."""
        items = list(stats)
        if not items:
            raise ValueError("nothing to merge")
        return functools.reduce(operator.add, items)

    @property
    def total_weight(self) -> float:
        return 0.0 if self.weights is None else float(self.weights.sum())

    def to_bytes(self) -> bytes:
        """Magic ``ISBS``, a format version byte, then a msgpack array (raw little-endian arrays)."""
        wire = _StatsWire(
            n_clusters=self.n_clusters,
            dim=self.dim,
            n_points=self.n_points,
            model_version=self.model_version,
            sums=None if self.sums is None else _le(self.sums, "<f8"),
            weights=None if self.weights is None else _le(self.weights, "<f8"),
            n_seeds=int(self.seeds.shape[0]),
            seed_capacity=self.seed_capacity,
            seeds=_le(self.seeds, "<f4"),
            seed_keys=_le(self.seed_keys, "<f8"),
            seed_ids=_le(self.seed_ids, "<u8"),
            n_refresh=int(self.refresh.shape[0]),
            refresh=_le(self.refresh, "<f4"),
            refresh_ids=_le(self.refresh_ids, "<u8"),
        )
        return _STATS_MAGIC + bytes([_FORMAT_VERSION]) + msgspec.msgpack.encode(wire)

    @classmethod
    def from_bytes(cls, data: bytes) -> BatchStatistics:
        if data[:4] != _STATS_MAGIC:
            raise ValueError("not a BatchStatistics record")
        if data[4] != _FORMAT_VERSION:
            raise ValueError(f"unsupported BatchStatistics format version {data[4]}")
        w = msgspec.msgpack.decode(data[5:], type=_StatsWire)
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


@dataclasses.dataclass(frozen=True)
class ApplyResult:
    """What :meth:`MiniBatchKMeans.apply` did.

    ``movement[j]`` is how far centroid ``j`` moved (cosine distance when spherical,
    L2 otherwise); ``reseeded`` lists the clusters that were given a new centre;
    ``version`` is the model version after the update; ``initialised`` tells whether
    the model is initialised (it may have become so in this very call); ``refined``
    tells whether a periodic refinement replaced the centroids in this call (its
    clusters whose centre changed a lot are listed in ``reseeded`` as well).
    """

    movement: np.ndarray
    reseeded: list[int]
    version: int
    initialised: bool
    n_points: int
    refined: bool = False


# ---------------------------------------------------------------------------- the estimator
class MiniBatchKMeans(base.Clusterer):
    """Mini-batch k-means with exponential forgetting, numpy underneath.

    Parameters
    ----------
    n_clusters
        Number of clusters ``k``.
    half_life
        After this many batches (or points, see ``time_unit``) a point's weight in
        its centroid is halved. ``math.inf`` never forgets (plain running means).
    time_unit
        ``"batches"`` (decay once per applied batch) or ``"points"`` (decay by
        ``a ** n_points``, so the forgetting does not depend on the batch size).
    spherical
        Cosine k-means: normalise points and centroids (right for text embeddings).
    init_size
        Distinct points to buffer before the k-means++ initialisation; default ``3 * n_clusters``.
    reseed_fraction
        A cluster whose decayed weight is below ``reseed_fraction * total / n_clusters``
        is starved and gets reseeded (at most once per half-life).
    seed
        Seed of the random generators (k-means++, reservoir sampling, reseeding).
    reservoir_size
        Size of the weighted, decayed reservoir of recent points used for reseeding.
    seeds_per_batch
        Size of the point sample each :class:`BatchStatistics` carries once the model is
        initialised (before, it carries up to ``max(seeds_per_batch, init_size)``).
    refine_every
        Every this many applied batches, :meth:`apply` runs a *refinement*: k-means (Lloyd)
        on the reservoir, from the current centroids and from ``refine_restarts`` fresh
        k-means++ seedings, and adopts the best result if it lowers the reservoir's
        inertia by more than ``refine_min_gain`` (relative). This lets the streaming model
        escape the local optima mini-batch updates get stuck in (a starved cluster next to
        one that merges two groups). Cluster ids are kept by optimal (Hungarian) matching
        of the new centres to the old. ``0`` disables refinement.
    refine_restarts
        Fresh k-means++ (greedy) seedings tried by each refinement.
    refine_iterations
        Most Lloyd iterations per candidate (stops early when no point changes cluster).
    refine_min_gain
        Relative inertia gain a refinement needs to be adopted.
    refine_backoff
        While no restart beats the (polished) current centroids the interval doubles, up
        to ``refine_backoff * refine_every`` batches; a winning restart resets it.
    warmup
        :attr:`is_warm` turns true once the model is initialised and has applied this many
        batches (its centroids have settled enough to announce assignments).
    """

    def __init__(
        self,
        n_clusters: int = 8,
        half_life: float = 50.0,
        time_unit: str = "batches",
        spherical: bool = True,
        init_size: int | None = None,
        reseed_fraction: float = 0.05,
        seed: int | None = 42,
        reservoir_size: int = 2048,
        seeds_per_batch: int = 64,
        refine_every: int = 5,
        refine_restarts: int = 5,
        refine_iterations: int = 20,
        refine_min_gain: float = 0.002,
        refine_backoff: int = 8,
        warmup: int = 0,
    ) -> None:
        if n_clusters < 1:
            raise ValueError("n_clusters must be >= 1")
        if time_unit not in ("batches", "points"):
            raise ValueError("time_unit must be 'batches' or 'points'")
        if not half_life > 0:
            raise ValueError("half_life must be positive")
        if init_size is not None and init_size < n_clusters:
            raise ValueError("init_size must be >= n_clusters")
        if refine_every < 0 or refine_restarts < 0 or refine_iterations < 1 or refine_backoff < 1:
            raise ValueError("refine_every, refine_restarts >= 0, refine_iterations, refine_backoff >= 1 required")
        if not refine_min_gain >= 0:
            raise ValueError("refine_min_gain must be >= 0")
        self.n_clusters = n_clusters
        self.half_life = half_life
        self.time_unit = time_unit
        self.spherical = spherical
        self.init_size = init_size
        self.reseed_fraction = reseed_fraction
        self.seed = seed
        self.reservoir_size = reservoir_size
        self.seeds_per_batch = seeds_per_batch
        self.refine_every = refine_every
        self.refine_restarts = refine_restarts
        self.refine_iterations = refine_iterations
        self.refine_min_gain = refine_min_gain
        self.refine_backoff = refine_backoff
        self.warmup = warmup
        if refine_every > 0:
            # Import the Hungarian solver now: importing scipy.optimize takes ~0.3 s, which would
            # otherwise land on whichever batch first adopts a refinement (a latency spike).
            import scipy.optimize  # noqa: F401

        self._rng = np.random.default_rng(seed)
        self._sample_rng = np.random.default_rng(None if seed is None else seed + 1)
        self._features: list[Any] | None = None
        self._dim: int | None = None
        self._centroids: np.ndarray | None = None  # (k, d) float64
        self._c32: np.ndarray | None = None  # float32 copy used for assignment
        self._counts = np.zeros(n_clusters, dtype=np.float64)
        # Decayed "time since reseed" marker: 1 right after a reseed, a cluster may only be
        # reseeded again once it has decayed to <= 0.5 (one half-life later).
        self._reseed_age = np.zeros(n_clusters, dtype=np.float64)
        self._buffer: np.ndarray | None = None  # distinct points seen before initialisation
        self._reservoir: np.ndarray | None = None
        self._reservoir_keys = np.zeros(0, dtype=np.float64)
        self._reservoir_age = np.zeros(0, dtype=np.float64)
        self._reservoir_ids = np.zeros(0, dtype=np.uint64)  # 0: anonymous point
        self._n_applied = 0
        # Refinement schedule: batches applied since the last refinement, the current interval
        # (0: refine_every), and how many refinements ran / were adopted.
        self._refine_wait = 0
        self._refine_interval = 0
        self.n_refines = 0
        self.n_refines_adopted = 0
        self._restart_won = False  # scratch: whether the last refinement's winner was a restart
        self.version = 0

    # ------------------------------------------------------------------ properties
    @property
    def is_initialised(self) -> bool:
        return self._centroids is not None

    @property
    def is_warm(self) -> bool:
        """Initialised and at least ``warmup`` batches applied (assignments may be announced)."""
        return self._centroids is not None and self._n_applied >= self.warmup

    @property
    def centroids(self) -> np.ndarray:
        """A float32 copy of the ``(k, d)`` centroids (``(k, 0)`` before initialisation)."""
        if self._centroids is None:
            return np.zeros((self.n_clusters, 0), dtype=np.float32)
        return self._centroids.astype(np.float32)

    @property
    def centers(self) -> dict[int, dict[Any, float]]:
        """Centroids as river-style dicts ``{cluster: {feature: value}}`` (for ``river.metrics.Silhouette``).

        Slow for wide vectors: meant for river's evaluation tools, not the hot path.
        """
        if self._centroids is None:
            return {}
        names = self._features if self._features is not None else list(range(self._centroids.shape[1]))
        return {j: dict(zip(names, map(float, row), strict=True)) for j, row in enumerate(self._centroids)}

    @property
    def counts(self) -> np.ndarray:
        """Decayed total weight of each cluster (a copy)."""
        return self._counts.copy()

    @property
    def dim(self) -> int | None:
        return self._dim

    @property
    def _init_size(self) -> int:
        return self.init_size if self.init_size is not None else 3 * self.n_clusters

    @property
    def _decay(self) -> float:
        return 0.5 ** (1.0 / self.half_life)

    # ------------------------------------------------------------------ input handling
    def _vector(self, x: dict) -> np.ndarray:
        if self._features is None:
            if self._dim is not None and len(x) != self._dim:
                raise ValueError(f"first dict has {len(x)} features, the model has dim {self._dim}")
            self._features = list(x)
        get = x.get
        return np.fromiter((get(f, 0.0) for f in self._features), dtype=np.float32, count=len(self._features))

    def _matrix(self, X: Any) -> np.ndarray:
        if hasattr(X, "columns") and hasattr(X, "to_numpy"):  # a pandas DataFrame
            if self._features is None:
                self._features = list(X.columns)
            else:
                X = X[self._features]
            X = X.to_numpy()
        arr = np.asarray(X, dtype=np.float32)
        if arr.ndim == 1:
            arr = arr.reshape(1, -1)
        if arr.ndim != 2:
            raise ValueError(f"expected a 2-d array, got shape {arr.shape}")
        if self._dim is None:
            self._dim = int(arr.shape[1])
        elif arr.shape[1] != self._dim:
            raise ValueError(f"expected {self._dim} features, got {arr.shape[1]}")
        return arr

    @staticmethod
    def _normalise(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        norms = np.linalg.norm(X, axis=1, keepdims=True)
        out = np.divide(X, norms, out=np.zeros_like(X), where=norms > 0)
        return out, norms[:, 0] > 0

    def _prepare(self, X: Any) -> np.ndarray:
        arr = self._matrix(X)
        if self.spherical:
            arr, _ = self._normalise(arr)
        return arr

    def _assign(self, X: np.ndarray) -> np.ndarray:
        """Nearest centroid of each (already prepared) row."""
        assert self._c32 is not None
        if self.spherical:
            return np.argmax(X @ self._c32.T, axis=1)
        c_sq = np.einsum("ij,ij->i", self._c32, self._c32)
        return np.argmin(c_sq[None, :] - 2.0 * (X @ self._c32.T), axis=1)

    # ------------------------------------------------------------------ river API
    def learn_one(self, x: dict, w: float = 1.0) -> None:
        """Learn from one point (a batch of one: with ``time_unit="batches"`` it decays once)."""
        self.learn_many(self._vector(x).reshape(1, -1), np.array([w], dtype=np.float64))

    def predict_one(self, x: dict) -> int:
        """Index of the nearest centroid (0 before the model is initialised)."""
        return int(self.predict_many(self._vector(x).reshape(1, -1))[0])

    def learn_many(self, X: Any, sample_weight: np.ndarray | None = None) -> ApplyResult:
        """Summarise ``X`` (numpy array or DataFrame) and apply it; returns the :class:`ApplyResult`."""
        return self.apply(self.summarise(X, sample_weight))

    def predict_many(self, X: Any) -> np.ndarray:
        """Nearest centroid of each row (zeros before the model is initialised)."""
        arr = self._prepare(X)
        if self._c32 is None:
            return np.zeros(arr.shape[0], dtype=np.int64)
        return self._assign(arr).astype(np.int64)

    def similarities(self, X: Any) -> np.ndarray:
        """``(n, k)`` float32 cosine similarities of the rows of ``X`` to the centroids.

        Zero rows get similarity 0 to every cluster. Raises ``RuntimeError`` before initialisation.
        """
        if self._c32 is None:
            raise RuntimeError("the model is not initialised yet")
        arr, _ = self._normalise(self._matrix(X))
        c = self._c32 if self.spherical else self._normalise(self._c32)[0]
        return arr @ c.T

    # ------------------------------------------------------------------ split update
    def summarise(
        self,
        X: Any,
        sample_weight: np.ndarray | None = None,
        similarities: np.ndarray | None = None,
        point_ids: np.ndarray | None = None,
    ) -> BatchStatistics:
        """Assign a batch to the current centroids and return its additive statistics.

        Does not change the centroids (it only advances the sampling RNG). With
        ``spherical=True`` zero rows are ignored. ``similarities`` (``(n, k)``, as
        returned by :meth:`similarities` for the same ``X``) may be passed to skip the
        assignment matmul when the caller already has it (spherical models only).
        ``point_ids`` (``(n,)`` non-zero uint64, e.g. hashed user ids) say which rows are
        new positions of the same entity: the reservoir then holds one, current, row per
        id (rows of ids it already holds travel as ``refresh``).
        """
        arr = self._matrix(X)
        n = arr.shape[0]
        w = (
            np.ones(n, dtype=np.float64)
            if sample_weight is None
            else np.asarray(sample_weight, dtype=np.float64)
        )
        if w.shape != (n,):
            raise ValueError(f"expected {n} sample weights, got shape {w.shape}")
        ids = np.zeros(n, dtype=np.uint64) if point_ids is None else np.asarray(point_ids, dtype=np.uint64)
        if ids.shape != (n,):
            raise ValueError(f"expected {n} point ids, got shape {ids.shape}")
        if self.spherical:
            arr, valid = self._normalise(arr)
            if not valid.all():
                arr, w, ids = arr[valid], w[valid], ids[valid]
                if similarities is not None:
                    similarities = np.asarray(similarities)[valid]
        k, d = self.n_clusters, arr.shape[1]
        capacity = self.seeds_per_batch if self.is_initialised else max(self.seeds_per_batch, self._init_size)
        seeds, keys, seed_ids = _top_keys(arr, _sample_keys(self._sample_rng, w), capacity, ids)
        refresh, refresh_ids = None, None
        if point_ids is not None:
            again = (self._reservoir_rows(ids) >= 0) & ~np.isin(ids, seed_ids)
            if again.any():
                refresh, refresh_ids = arr[again].astype(np.float32), ids[again]
        stats = BatchStatistics(
            n_clusters=k,
            dim=d,
            sums=None,
            weights=None,
            n_points=int(arr.shape[0]),
            seeds=seeds.copy(),
            seed_keys=keys,
            seed_capacity=capacity,
            model_version=self.version,
            seed_ids=seed_ids.copy(),
            refresh=refresh,
            refresh_ids=refresh_ids,
        )
        if not self.is_initialised:
            return stats
        if similarities is not None and self.spherical:
            labels = np.argmax(similarities, axis=1)
        else:
            labels = self._assign(arr) if arr.shape[0] else np.zeros(0, dtype=np.int64)
        stats.sums, stats.weights = self._cluster_sums(arr, w, labels)
        return stats

    def _cluster_sums(
        self, arr: np.ndarray, w: np.ndarray, labels: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        k, d = self.n_clusters, arr.shape[1]
        sums = np.zeros((k, d), dtype=np.float64)
        weights = np.bincount(labels, weights=w, minlength=k).astype(np.float64)
        if arr.shape[0]:
            order = np.argsort(labels, kind="stable")
            sorted_labels = labels[order]
            starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
            rows = arr[order]
            if not np.all(w == 1.0):
                rows = rows * w[order, None].astype(np.float32)
            sums[sorted_labels[starts]] = np.add.reduceat(rows, starts, axis=0, dtype=np.float64)
        return sums, weights

    def apply(self, stats: BatchStatistics) -> ApplyResult:
        """Fold (merged) statistics into the centroids with forgetting, then reseed starved clusters."""
        k = self.n_clusters
        if stats.n_clusters != k:
            raise ValueError(f"statistics are for {stats.n_clusters} clusters, the model has {k}")
        if self._dim is None:
            self._dim = stats.dim
        elif stats.dim != self._dim:
            raise ValueError(f"statistics have dim {stats.dim}, the model has {self._dim}")
        self._n_applied += 1

        if not self.is_initialised:
            return self._buffer_and_maybe_init(stats)

        a = self._decay if self.time_unit == "batches" else self._decay**stats.n_points
        assert self._centroids is not None
        old = self._centroids.copy()
        self._reservoir_add(stats, a)
        self._reseed_age *= a
        changed = False
        decayed = a * self._counts
        if stats.sums is not None and stats.weights is not None:
            m = stats.weights
            new_counts = decayed + m
            upd = (m != 0) & (new_counts > 0)
            if upd.any():
                c = (decayed[upd, None] * self._centroids[upd] + stats.sums[upd]) / new_counts[upd, None]
                if self.spherical:
                    c, ok = self._normalise(c)
                    c[~ok] = self._centroids[upd][~ok]  # points cancelled out exactly: keep the direction
                self._centroids[upd] = c
                changed = True
            self._counts = new_counts
            # A centre that got no points may be shadowed by an identical one (argmax ties):
            # check those against the centres the batch was assigned with.
            shadowed = self._duplicates(old, np.flatnonzero(m == 0))
        else:
            self._counts = decayed
            shadowed = None
        reseeded = self._reseed(shadowed)
        refined, replaced = self._maybe_refine()
        if replaced:
            reseeded = sorted(set(reseeded) | set(replaced))
        changed = changed or bool(reseeded) or refined
        self._c32 = self._centroids.astype(np.float32)
        if changed:
            self.version += 1
        return ApplyResult(
            movement=self._movement(old, self._centroids),
            reseeded=reseeded,
            version=self.version,
            initialised=True,
            n_points=stats.n_points,
            refined=refined,
        )

    def _movement(self, old: np.ndarray, new: np.ndarray) -> np.ndarray:
        if self.spherical:
            return np.clip(1.0 - np.einsum("ij,ij->i", old, new), 0.0, 2.0)
        return np.linalg.norm(new - old, axis=1)

    # ------------------------------------------------------------------ init & reseeding
    def _buffer_and_maybe_init(self, stats: BatchStatistics) -> ApplyResult:
        k = self.n_clusters
        self._reservoir_add(stats, 1.0)
        points = stats.seeds if self._buffer is None else np.concatenate([self._buffer, stats.seeds])
        self._buffer = np.unique(points, axis=0) if points.shape[0] else points
        # Bound the buffer: it only needs init_size distinct points.
        if self._buffer.shape[0] > max(self._init_size, self.reservoir_size):
            keep = self._rng.choice(
                self._buffer.shape[0], max(self._init_size, self.reservoir_size), replace=False
            )
            self._buffer = self._buffer[np.sort(keep)]
        if self._buffer.shape[0] < self._init_size:
            return ApplyResult(np.zeros(k), [], self.version, False, stats.n_points)

        buf = self._buffer
        self._centroids = self._kmeans_pp(buf, k)
        self._c32 = self._centroids.astype(np.float32)
        # The buffer is the first batch: every centre gets the mean of its points.
        sums, weights = self._cluster_sums(buf, np.ones(buf.shape[0]), self._assign(buf))
        has = weights > 0
        c = sums[has] / weights[has, None]
        if self.spherical:
            c, _ = self._normalise(c)
        self._centroids[has] = c
        self._counts = weights
        self._buffer = None
        reseeded = self._reseed(self._duplicates(self._centroids, None))
        self._c32 = self._centroids.astype(np.float32)
        self.version += 1
        return ApplyResult(np.zeros(k), reseeded, self.version, True, stats.n_points)

    def _sq_dist_to(self, points: np.ndarray, centres: np.ndarray) -> np.ndarray:
        """Squared distance of each point to its nearest centre, ``(n,)``."""
        if centres.shape[0] == 0:
            return np.ones(points.shape[0])
        p_sq = np.einsum("ij,ij->i", points, points)
        c_sq = np.einsum("ij,ij->i", centres, centres)
        d2 = p_sq[:, None] + c_sq[None, :] - 2.0 * (points @ centres.T)
        return np.maximum(d2.min(axis=1), 0.0)

    def _kmeans_pp(self, points: np.ndarray, k: int) -> np.ndarray:
        pts = points.astype(np.float64)
        n = pts.shape[0]
        chosen = [int(self._rng.integers(n))]
        d2 = self._sq_dist_to(pts, pts[chosen])
        for _ in range(1, k):
            total = d2.sum()
            idx = int(self._rng.choice(n, p=d2 / total)) if total > 0 else int(self._rng.integers(n))
            chosen.append(idx)
            d2 = np.minimum(d2, self._sq_dist_to(pts, pts[[idx]]))
        return pts[chosen].copy()

    def _reservoir_rows(self, ids: np.ndarray) -> np.ndarray:
        """The reservoir row holding each of ``ids``, or -1 (id 0, an anonymous point, never matches)."""
        held = self._reservoir_ids
        if ids.shape[0] == 0 or not held.any():
            return np.full(ids.shape[0], -1, dtype=np.int64)
        order = np.argsort(held, kind="stable")
        sorted_held = held[order]
        pos = np.minimum(np.searchsorted(sorted_held, ids), held.shape[0] - 1)
        found = (sorted_held[pos] == ids) & (ids != 0)
        return np.where(found, order[pos], -1)

    def _move_held(self, ids: np.ndarray, points: np.ndarray) -> np.ndarray:
        """Write ``points`` over the reservoir rows holding their ``ids`` (of an id given twice, the
        later wins) and mark those rows recent; returns each id's row, -1 where the reservoir lacks it."""
        rows = self._reservoir_rows(ids)
        hit = np.flatnonzero(rows >= 0)
        if hit.shape[0]:
            held, last = np.unique(rows[hit][::-1], return_index=True)
            self._reservoir[held] = points[hit[::-1][last]]
            self._reservoir_age[held] = 1.0
        return rows

    def _reservoir_add(self, stats: BatchStatistics, decay: float) -> None:
        """Age the reservoir by ``decay``, drop points older than a few half-lives, move the
        points ``stats`` refreshes, add its seeds.

        Ageing turns a key ``log(u)/w`` into ``log(u)/(w*decay)``, so a full reservoir
        prefers recent points (weighted A-Res with decayed weights). A seed or refresh whose
        id the reservoir holds replaces that row (and counts as recent again); other seeds
        overwrite the rows of evicted ones: O(len(seeds) * d), not O(reservoir_size * d).
        """
        seeds, keys, ids = stats.seeds, stats.seed_keys, stats.seed_ids
        d = seeds.shape[1]
        if self._reservoir is None:
            self._reservoir = np.zeros((0, d), dtype=np.float32)
        if decay < 1.0:
            self._reservoir_keys /= decay
            self._reservoir_age *= decay
            fresh = self._reservoir_age >= _RESERVOIR_MAX_AGE
            if not fresh.all():
                self._reservoir = self._reservoir[fresh]
                self._reservoir_keys = self._reservoir_keys[fresh]
                self._reservoir_age = self._reservoir_age[fresh]
                self._reservoir_ids = self._reservoir_ids[fresh]
        self._move_held(stats.refresh_ids, stats.refresh)
        rows = self._move_held(ids, seeds)
        hit = rows >= 0
        if hit.any():
            self._reservoir_keys[rows[hit]] = np.maximum(self._reservoir_keys[rows[hit]], keys[hit])
            seeds, keys, ids = seeds[~hit], keys[~hit], ids[~hit]
        n_old, n_new, cap = self._reservoir_keys.shape[0], keys.shape[0], self.reservoir_size
        if n_new == 0:
            return
        if n_old + n_new <= cap:
            self._reservoir = np.concatenate([self._reservoir, seeds.astype(np.float32)])
            self._reservoir_keys = np.concatenate([self._reservoir_keys, keys])
            self._reservoir_age = np.concatenate([self._reservoir_age, np.ones(n_new)])
            self._reservoir_ids = np.concatenate([self._reservoir_ids, ids])
            return
        all_keys = np.concatenate([self._reservoir_keys, keys])
        if n_old < cap:  # grow to full capacity first; the tail is filled below
            pad = cap - n_old
            self._reservoir = np.concatenate([self._reservoir, np.zeros((pad, d), np.float32)])
            self._reservoir_keys = np.concatenate([self._reservoir_keys, np.full(pad, -np.inf)])
            self._reservoir_age = np.concatenate([self._reservoir_age, np.zeros(pad)])
            self._reservoir_ids = np.concatenate([self._reservoir_ids, np.zeros(pad, dtype=np.uint64)])
            free = np.arange(n_old, cap)
        else:
            free = np.zeros(0, dtype=np.int64)
        keep = np.zeros(n_old + n_new, dtype=bool)
        keep[np.argpartition(-all_keys, cap - 1)[:cap]] = True
        evicted = np.flatnonzero(~keep[:n_old])
        entering = np.flatnonzero(keep[n_old:])
        rows = np.concatenate([free, evicted])[: entering.shape[0]]
        self._reservoir[rows] = seeds[entering]
        self._reservoir_keys[rows] = keys[entering]
        self._reservoir_age[rows] = 1.0
        self._reservoir_ids[rows] = ids[entering]

    def _duplicates(self, c: np.ndarray, candidates: np.ndarray | None) -> np.ndarray:
        """Mask of clusters among ``candidates`` (all if ``None``) whose centre duplicates another's.

        Duplicates are centres equal in float32, the precision assignment uses: of such
        a group only the first index can ever win a point (argmax ties), the others are
        shadowed. Of each group the heaviest (then lowest index) centre is kept. Centres
        that are merely close both receive points and are left to the starvation rule.
        """
        k = self.n_clusters
        dup = np.zeros(k, dtype=bool)
        if k < 2 or (candidates is not None and len(candidates) == 0):
            return dup
        rows = np.ascontiguousarray(c, dtype=np.float32)
        keys = rows.view(np.dtype((np.void, rows.shape[1] * 4))).reshape(-1)
        _, group, sizes = np.unique(keys, return_inverse=True, return_counts=True)
        shared = sizes[group] > 1
        if not shared.any():
            return dup
        for g in np.unique(group[shared]):
            members = np.flatnonzero(group == g)
            keep = max(members, key=lambda j: (self._counts[j], -j))
            dup[members[members != keep]] = True
        if candidates is not None:
            dup &= np.isin(np.arange(k), candidates)
        return dup

    def _reseed(self, duplicates: np.ndarray | None = None) -> list[int]:
        """Give starved or duplicated clusters a new centre from the reservoir; ids stay put."""
        assert self._centroids is not None
        k = self.n_clusters
        total = float(self._counts.sum())
        eligible = self._reseed_age <= 0.5
        dead = np.zeros(k, dtype=bool) if duplicates is None else duplicates.copy()
        if total > 0 and self.reseed_fraction > 0:
            dead |= self._counts < self.reseed_fraction * total / k
        c = self._centroids
        c_sq = np.einsum("ij,ij->i", c, c)
        dead &= eligible
        if not dead.any():
            return []
        live = ~dead
        reseeded = []
        pool = self._reservoir if self._reservoir is not None else np.zeros((0, c.shape[1]), dtype=np.float32)
        # Prefer points from the last half-life: older ones describe data that may be gone.
        recent = self._reservoir_age >= 0.5
        if recent.any() and pool.shape[0] == recent.shape[0]:
            pool = pool[recent]
        if pool.shape[0] > _RESEED_CANDIDATES:
            pool = pool[np.sort(self._rng.choice(pool.shape[0], _RESEED_CANDIDATES, replace=False))]
        d2 = (
            self._sq_dist_to(pool, c[live].astype(np.float32)).astype(np.float64)
            if pool.shape[0]
            else np.zeros(0)
        )
        for j in np.flatnonzero(dead):
            total_d2 = float(d2.sum())
            if total_d2 > 0:
                new = pool[int(self._rng.choice(pool.shape[0], p=d2 / total_d2))].copy()
            else:  # nothing new to seed from: split the heaviest live cluster with a small jitter
                heavy = int(np.argmax(np.where(live, self._counts, -np.inf)))
                spread = math.sqrt(max(float(c_sq.max()), 1e-12))
                new = c[heavy] + self._rng.normal(0.0, 1e-3 * spread, size=c.shape[1])
            if self.spherical:
                norm = np.linalg.norm(new)
                new = new / norm if norm > 0 else new
            c[j] = new
            self._counts[j] = 0.0
            self._reseed_age[j] = 1.0
            live[j] = True
            reseeded.append(int(j))
            if pool.shape[0]:
                d2 = np.minimum(d2, self._sq_dist_to(pool, new[None, :].astype(np.float32)))
        return reseeded


    # ------------------------------------------------------------------ refinement
    def _maybe_refine(self) -> tuple[bool, list[int]]:
        """Run a refinement when one is due; returns ``(adopted, clusters given a new centre)``."""
        if self.refine_every <= 0:
            return False, []
        self._refine_wait += 1
        # A young model refines after 1, 2, 4, ... batches until the interval reaches refine_every:
        # its first centroids come from a handful of points, and refining a small reservoir is cheap.
        interval = self._refine_interval or 1
        if self._refine_wait < interval:
            return False, []
        self._refine_wait = 0
        adopted, replaced = self.refine()
        if interval < self.refine_every:
            self._refine_interval = min(2 * interval, self.refine_every)
        elif self._restart_won:
            self._refine_interval = self.refine_every
        else:
            self._refine_interval = min(2 * interval, self.refine_backoff * self.refine_every)
        return adopted, replaced

    def refine(self) -> tuple[bool, list[int]]:
        """Re-cluster the reservoir now; adopt the result if it lowers the reservoir's inertia.

        Candidates: Lloyd from the current centroids and from ``refine_restarts`` greedy
        k-means++ seedings (drawn with the model's own generator, so the result depends on the
        model state only), weighted by the points' recency. The best candidate is adopted when
        its inertia is below ``(1 - refine_min_gain)`` times that of the current centroids (so
        the Lloyd polish of the current centroids alone usually wins when no restart finds a
        better optimum: mini-batch centroids lag the data); its centres are matched
        to the current ids by the Hungarian algorithm (largest total similarity), and the
        decayed counts are shared out in proportion to the reservoir weight each new cluster
        gets. Returns ``(adopted, ids whose centre changed so much it is a new one)``.
        Called by :meth:`apply` every ``refine_every`` batches; callable directly too
        (it changes the state exactly as a scheduled refinement would, minus the schedule).
        """
        k = self.n_clusters
        if self._centroids is None or self._reservoir is None or k < 2:
            return False, []
        n = self._reservoir.shape[0]
        if n < _REFINE_POINTS_PER_CLUSTER * k:
            return False, []
        self.n_refines += 1
        points = self._reservoir
        w = self._reservoir_age.astype(np.float32)
        current = self._centroids.astype(np.float32)
        best, best_cost = None, self._refine_cost(points, w, current) * (1.0 - self.refine_min_gain)
        self._restart_won = False
        for r in range(self.refine_restarts + 1):
            start = current if r == 0 else self._greedy_kmeans_pp(points, w, k)
            centres = self._lloyd(points, w, start)
            cost = self._refine_cost(points, w, centres)
            if cost < best_cost:
                best, best_cost = centres, cost
                self._restart_won = r > 0
        if best is None:
            return False, []
        from scipy.optimize import linear_sum_assignment

        if self.spherical:
            cost_matrix = -(current.astype(np.float64) @ best.astype(np.float64).T)
        else:
            cost_matrix = self._pair_d2(current.astype(np.float64), best.astype(np.float64))
        rows, cols = linear_sum_assignment(cost_matrix)
        new = np.empty_like(best)
        new[rows] = best[cols]
        new64 = new.astype(np.float64)
        if self.spherical:
            new64, _ = self._normalise(new64)
        labels = self._nearest(points, new64.astype(np.float32))
        share = np.bincount(labels, weights=w.astype(np.float64), minlength=k)
        total_w = float(share.sum())
        if total_w > 0:
            self._counts = float(self._counts.sum()) * share / total_w
        if self.spherical:
            sim = np.einsum("ij,ij->i", self._centroids, new64)
        else:
            scale = np.maximum(np.linalg.norm(self._centroids, axis=1) * np.linalg.norm(new64, axis=1), 1e-12)
            sim = np.einsum("ij,ij->i", self._centroids, new64) / scale
        replaced = [int(j) for j in np.flatnonzero(sim < _REFINE_NEW_CENTRE_SIM)]
        self._centroids = new64
        self._c32 = new64.astype(np.float32)
        self.n_refines_adopted += 1
        return True, replaced

    def _pair_d2(self, points: np.ndarray, centres: np.ndarray) -> np.ndarray:
        """``(n, m)`` squared distances (``2 - 2 cos`` for unit vectors when spherical)."""
        dots = points @ centres.T
        if self.spherical:
            return np.maximum(2.0 - 2.0 * dots, 0.0)
        p_sq = np.einsum("ij,ij->i", points, points)
        c_sq = np.einsum("ij,ij->i", centres, centres)
        return np.maximum(p_sq[:, None] + c_sq[None, :] - 2.0 * dots, 0.0)

    def _nearest(self, points: np.ndarray, centres: np.ndarray) -> np.ndarray:
        if self.spherical:
            return np.argmax(points @ centres.T, axis=1)
        c_sq = np.einsum("ij,ij->i", centres, centres)
        return np.argmin(c_sq[None, :] - 2.0 * (points @ centres.T), axis=1)

    def _refine_cost(self, points: np.ndarray, w: np.ndarray, centres: np.ndarray) -> float:
        """Weighted inertia of ``points`` (squared distance to the nearest centre)."""
        return float(np.dot(w.astype(np.float64), self._pair_d2(points, centres).min(axis=1).astype(np.float64)))

    def _greedy_kmeans_pp(self, points: np.ndarray, w: np.ndarray, k: int) -> np.ndarray:
        """Greedy k-means++ seeding (``2 + log k`` candidates per centre, as scikit-learn) on weighted points.

        Candidates are drawn by inverse CDF (``searchsorted`` on the cumulative mass), which
        is what ``Generator.choice(p=...)`` does minus its per-call validation of ``p``.
        """
        n = points.shape[0]
        w64 = w.astype(np.float64)
        trials = 2 + int(math.log(k))

        def draw(mass: np.ndarray, size: int) -> np.ndarray:
            cdf = np.cumsum(mass)
            total = float(cdf[-1])
            if not total > 0:
                return self._rng.integers(n, size=size)
            return np.minimum(np.searchsorted(cdf, self._rng.random(size) * total, side="right"), n - 1)

        first = int(draw(w64, 1)[0])
        chosen = [first]
        d2 = self._pair_d2(points, points[first : first + 1])[:, 0].astype(np.float64)
        for _ in range(1, k):
            idx = draw(w64 * d2, trials)
            cand = np.minimum(d2[None, :], self._pair_d2(points, points[idx]).T.astype(np.float64))
            b = int(np.argmin(cand @ w64))
            chosen.append(int(idx[b]))
            d2 = cand[b]
        return points[chosen].astype(np.float32)

    def _lloyd(self, points: np.ndarray, w: np.ndarray, centres: np.ndarray) -> np.ndarray:
        """Weighted Lloyd iterations from ``centres``; returns the new centres.

        A cluster left empty takes the point farthest from its centre (deterministic).
        Cluster sums are one ``(k, n) @ (n, d)`` float32 product per iteration (a weighted
        one-hot matrix), which BLAS does far faster than sorting and segment sums.
        """
        c = centres.astype(np.float32).copy()
        n, k = points.shape[0], c.shape[0]
        w32 = w.astype(np.float32)
        cols = np.arange(n)
        onehot = np.zeros((k, n), dtype=np.float32)
        labels = None
        for _ in range(self.refine_iterations):
            if self.spherical:
                sims = points @ c.T
                new_labels = np.argmax(sims, axis=1)
            else:
                d2 = self._pair_d2(points, c)
                new_labels = np.argmin(d2, axis=1)
            if labels is not None and np.array_equal(new_labels, labels):
                break
            if labels is not None:
                onehot[labels, cols] = 0.0
            labels = new_labels
            onehot[labels, cols] = w32
            sums = onehot @ points
            weights = onehot.sum(axis=1)
            empty = np.flatnonzero(weights <= 0)
            if empty.shape[0]:
                if self.spherical:
                    dist = 1.0 - sims[cols, labels]
                else:
                    dist = d2[cols, labels]
                far = np.argsort(-dist, kind="stable")[: empty.shape[0]]
                sums[empty[: far.shape[0]]] = points[far]
                weights[empty[: far.shape[0]]] = 1.0
            has = weights > 0
            upd = sums[has] / weights[has, None]
            if self.spherical:
                upd, _ = self._normalise(upd)
            c[has] = upd.astype(np.float32)
        return c

    # ------------------------------------------------------------------ state
    def to_bytes(self) -> bytes:
        """The full state (params, centroids, counts, reservoir, RNGs): magic ``ISKM``, version byte, msgpack."""
        k = self.n_clusters
        d = self._dim or 0
        buf = self._buffer if self._buffer is not None else np.zeros((0, d), dtype=np.float32)
        res = self._reservoir if self._reservoir is not None else np.zeros((0, d), dtype=np.float32)
        wire = _ModelWire(
            params=self._get_params(),
            dim=self._dim,
            features=self._features,
            version=self.version,
            n_applied=self._n_applied,
            centroids=None if self._centroids is None else _le(self._centroids, "<f8"),
            counts=_le(self._counts, "<f8"),
            reseed_age=_le(self._reseed_age, "<f8"),
            buffer=_le(buf, "<f4"),
            n_buffer=int(buf.shape[0]),
            reservoir=_le(res, "<f4"),
            reservoir_keys=_le(self._reservoir_keys, "<f8"),
            reservoir_age=_le(self._reservoir_age, "<f8"),
            n_reservoir=int(res.shape[0]),
            rng_state=json.dumps(self._rng.bit_generator.state),
            sample_rng_state=json.dumps(self._sample_rng.bit_generator.state),
            refine_wait=self._refine_wait,
            refine_interval=self._refine_interval,
            n_refines=self.n_refines,
            n_refines_adopted=self.n_refines_adopted,
            reservoir_ids=_le(self._reservoir_ids, "<u8"),
        )
        assert k == self._counts.shape[0]
        return _MODEL_MAGIC + bytes([_FORMAT_VERSION]) + msgspec.msgpack.encode(wire)

    @classmethod
    def from_bytes(cls, data: bytes) -> MiniBatchKMeans:
        if data[:4] != _MODEL_MAGIC:
            raise ValueError("not a MiniBatchKMeans state")
        if data[4] != _FORMAT_VERSION:
            raise ValueError(f"unsupported MiniBatchKMeans format version {data[4]}")
        w = msgspec.msgpack.decode(data[5:], type=_ModelWire)
        model = cls(**w.params)
        k = model.n_clusters
        d = w.dim or 0
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
        model._reservoir = _f32(w.reservoir, (w.n_reservoir, d)) if w.dim is not None else None
        model._reservoir_keys = _f64(w.reservoir_keys, (w.n_reservoir,))
        model._reservoir_age = _f64(w.reservoir_age, (w.n_reservoir,))
        model._reservoir_ids = _u64(w.reservoir_ids, w.n_reservoir)
        model._rng.bit_generator.state = json.loads(w.rng_state)
        model._sample_rng.bit_generator.state = json.loads(w.sample_rng_state)
        model._refine_wait = w.refine_wait
        model._refine_interval = w.refine_interval
        model.n_refines = w.n_refines
        model.n_refines_adopted = w.n_refines_adopted
        return model

    @classmethod
    def _unit_test_params(cls) -> Iterable[dict[str, Any]]:
        yield {"n_clusters": 3}
