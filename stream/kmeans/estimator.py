"""The estimator: mini-batch k-means with forgetting, a river clusterer on numpy.

An update is split in two: :meth:`MiniBatchKMeans.summarise` assigns a batch to the
current centroids and returns its additive :class:`~stream.kmeans.BatchStatistics`;
:meth:`MiniBatchKMeans.apply` folds (merged) statistics into the model with forgetting,
reseeds starved clusters and, on schedule, refines the centroids.
``learn_many`` is the two in a row.

Example: a stream of two groups; the model keeps its state across a byte round trip.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> model = MiniBatchKMeans(n_clusters=2, seed=0)
>>> for _ in range(3):
...     result = model.learn_many(rng.normal([[1.0, 0.0]] * 10 + [[0.0, 1.0]] * 10, 0.05))
>>> result.version, result.initialised
(3, True)
>>> twin = MiniBatchKMeans.from_bytes(model.to_bytes())
>>> batch = rng.normal([[1.0, 0.0], [0.0, 1.0]], 0.05)
>>> model.learn_many(batch).movement.tolist() == twin.learn_many(batch).movement.tolist()
True
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable
from typing import Any

import numpy as np
from river import base

from stream.kmeans import codec
from stream.kmeans.features import as_matrix, dict_row
from stream.kmeans.geometry import nearest, normalise
from stream.kmeans.refinement import RefineSchedule, adopt, recluster
from stream.kmeans.reservoir import Reservoir, sample_keys, top_keys
from stream.kmeans.seeding import duplicate_centres, initial_centres, reseed
from stream.kmeans.statistics import BatchStatistics, cluster_sums

__all__ = ["ApplyResult", "MiniBatchKMeans"]

# A refinement needs at least this many reservoir points per cluster (fewer: k-means on the
# reservoir would fit its noise, so the refinement is skipped).
_REFINE_POINTS_PER_CLUSTER = 16
# What a model has learned, as opposed to its hyper-parameters: what load_state takes over.
_LEARNED = ("_features", "_dim", "_centroids", "_c32", "_counts", "_reseed_age", "_buffer", "_reservoir",
            "_n_applied", "_rng", "_sample_rng", "_schedule", "n_refines", "n_refines_adopted", "version")
# Hyper-parameters the learned state is made of: a model cannot continue another whose differ.
_FIXED_PARAMS = ("n_clusters", "spherical")


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

    Dicts are matched by feature name, numpy rows by position (see :mod:`~stream.kmeans.features`).
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

        self._rng, self._sample_rng = self._generators()
        self._features: list[Any] | None = None
        self._dim: int | None = None
        self._centroids: np.ndarray | None = None  # (k, d) float64
        self._c32: np.ndarray | None = None  # float32 copy used for assignment
        self._counts = np.zeros(n_clusters, dtype=np.float64)
        # Decayed "time since reseed" marker: 1 right after a reseed, a cluster may only be
        # reseeded again once it has decayed to <= 0.5 (one half-life later).
        self._reseed_age = np.zeros(n_clusters, dtype=np.float64)
        self._buffer: np.ndarray | None = None  # distinct points seen before initialisation
        self._reservoir = Reservoir()
        self._n_applied = 0
        self._schedule = RefineSchedule()
        self.n_refines = 0  # refinements run
        self.n_refines_adopted = 0  # ... and adopted
        self.version = 0

    def _generators(self) -> tuple[np.random.Generator, np.random.Generator]:
        """The model's generators (k-means++, reseeding; sampling), fresh from ``seed``."""
        seed = self.seed
        return np.random.default_rng(seed), np.random.default_rng(None if seed is None else seed + 1)

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
        row, self._features = dict_row(x, self._features, self._dim)
        return row

    def _matrix(self, X: Any) -> np.ndarray:
        arr, self._features, self._dim = as_matrix(X, self._features, self._dim)
        return arr

    def _prepare(self, X: Any) -> np.ndarray:
        arr = self._matrix(X)
        if self.spherical:
            arr, _ = normalise(arr)
        return arr

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
        return nearest(arr, self._c32, self.spherical).astype(np.int64)

    def similarities(self, X: Any) -> np.ndarray:
        """``(n, k)`` float32 cosine similarities of the rows of ``X`` to the centroids.

        Zero rows get similarity 0 to every cluster. Raises ``RuntimeError`` before initialisation.
        """
        if self._c32 is None:
            raise RuntimeError("the model is not initialised yet")
        arr, _ = normalise(self._matrix(X))
        c = self._c32 if self.spherical else normalise(self._c32)[0]
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
        w = np.ones(n, dtype=np.float64) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        if w.shape != (n,):
            raise ValueError(f"expected {n} sample weights, got shape {w.shape}")
        ids = np.zeros(n, dtype=np.uint64) if point_ids is None else np.asarray(point_ids, dtype=np.uint64)
        if ids.shape != (n,):
            raise ValueError(f"expected {n} point ids, got shape {ids.shape}")
        if self.spherical:
            arr, valid = normalise(arr)
            if not valid.all():
                arr, w, ids = arr[valid], w[valid], ids[valid]
                if similarities is not None:
                    similarities = np.asarray(similarities)[valid]
        capacity = self.seeds_per_batch if self.is_initialised else max(self.seeds_per_batch, self._init_size)
        seeds, keys, seed_ids = top_keys(arr, sample_keys(self._sample_rng, w), capacity, ids)
        refresh, refresh_ids = None, None
        if point_ids is not None:
            again = (self._reservoir.rows_of(ids) >= 0) & ~np.isin(ids, seed_ids)
            if again.any():
                refresh, refresh_ids = arr[again].astype(np.float32), ids[again]
        stats = BatchStatistics(
            n_clusters=self.n_clusters,
            dim=arr.shape[1],
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
        elif arr.shape[0]:
            labels = nearest(arr, self._c32, self.spherical)
        else:
            labels = np.zeros(0, dtype=np.int64)
        stats.sums, stats.weights = cluster_sums(arr, w, labels, self.n_clusters)
        return stats

    def apply(self, stats: BatchStatistics, batches: int = 1) -> ApplyResult:
        """Fold (merged) statistics into the centroids with forgetting, then reseed starved clusters.

        ``batches``: how many batches ``stats`` merges (a trainer folding several workers'
        batches at once); with ``time_unit="batches"`` the model forgets as much as that many
        batches would have made it forget, and the warm-up counts them all.
        """
        k = self.n_clusters
        if stats.n_clusters != k:
            raise ValueError(f"statistics are for {stats.n_clusters} clusters, the model has {k}")
        if self._dim is None:
            self._dim = stats.dim
        elif stats.dim != self._dim:
            raise ValueError(f"statistics have dim {stats.dim}, the model has {self._dim}")
        if batches < 1:
            raise ValueError("batches must be >= 1")
        self._n_applied += int(batches)

        if not self.is_initialised:
            return self._buffer_and_maybe_init(stats)

        a = self._decay**batches if self.time_unit == "batches" else self._decay**stats.n_points
        assert self._centroids is not None
        old = self._centroids.copy()
        self._sample(stats, a)
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
                    c, ok = normalise(c)
                    c[~ok] = self._centroids[upd][~ok]  # points cancelled out exactly: keep the direction
                self._centroids[upd] = c
                changed = True
            self._counts = new_counts
            # A centre that got no points may be shadowed by an identical one (argmax ties):
            # check those against the centres the batch was assigned with.
            shadowed = duplicate_centres(old, self._counts, np.flatnonzero(m == 0))
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

    def _sample(self, stats: BatchStatistics, decay: float) -> None:
        """Age the reservoir by ``decay``, move the points ``stats`` refreshes, add its seeds."""
        self._reservoir.age_by(decay)
        self._reservoir.move(stats.refresh_ids, stats.refresh)
        self._reservoir.insert(stats.seeds, stats.seed_keys, stats.seed_ids, self.reservoir_size)

    # ------------------------------------------------------------------ init & reseeding
    def _buffer_and_maybe_init(self, stats: BatchStatistics) -> ApplyResult:
        k = self.n_clusters
        self._sample(stats, 1.0)
        points = stats.seeds if self._buffer is None else np.concatenate([self._buffer, stats.seeds])
        self._buffer = np.unique(points, axis=0) if points.shape[0] else points
        # Bound the buffer: it only needs init_size distinct points.
        limit = max(self._init_size, self.reservoir_size)
        if self._buffer.shape[0] > limit:
            self._buffer = self._buffer[np.sort(self._rng.choice(self._buffer.shape[0], limit, replace=False))]
        if self._buffer.shape[0] < self._init_size:
            return ApplyResult(np.zeros(k), [], self.version, False, stats.n_points)

        self._centroids, self._counts = initial_centres(self._buffer, k, self._rng, self.spherical)
        self._buffer = None
        reseeded = self._reseed(duplicate_centres(self._centroids, self._counts, None))
        self._c32 = self._centroids.astype(np.float32)
        self.version += 1
        return ApplyResult(np.zeros(k), reseeded, self.version, True, stats.n_points)

    def _reseed(self, duplicates: np.ndarray | None = None) -> list[int]:
        """Give starved or duplicated clusters a new centre from recent reservoir points; ids stay put."""
        assert self._centroids is not None
        pool = self._reservoir.recent(0.5)  # older points describe data that may be gone
        if pool is None:
            pool = np.zeros((0, self._centroids.shape[1]), dtype=np.float32)
        return reseed(self._centroids, self._counts, self._reseed_age, pool, self._rng,
                      reseed_fraction=self.reseed_fraction, spherical=self.spherical, duplicates=duplicates)

    # ------------------------------------------------------------------ refinement
    def _maybe_refine(self) -> tuple[bool, list[int]]:
        """Run a refinement when one is due; returns ``(adopted, clusters given a new centre)``."""
        if self.refine_every <= 0 or not self._schedule.tick():
            return False, []
        adopted, replaced = self.refine()
        self._schedule.reschedule(self.refine_every, self.refine_backoff)
        return adopted, replaced

    def refine(self) -> tuple[bool, list[int]]:
        """Re-cluster the reservoir now; adopt the result if it lowers the reservoir's inertia.

        Candidates: Lloyd from the current centroids and from ``refine_restarts`` greedy
        k-means++ seedings (drawn with the model's own generator, so the result depends on the
        model state only), weighted by the points' recency (:mod:`~stream.kmeans.refinement`).
        The winner's centres are matched to the current ids and the decayed counts shared out.
        Returns ``(adopted, ids whose centre changed so much it is a new one)``. Called by
        :meth:`apply` every ``refine_every`` batches; callable directly too (it changes the
        state as a scheduled refinement would, except for the time of the next one).
        """
        k = self.n_clusters
        points = self._reservoir.points
        if self._centroids is None or k < 2 or len(self._reservoir) < _REFINE_POINTS_PER_CLUSTER * k:
            return False, []
        self.n_refines += 1
        w = self._reservoir.age.astype(np.float32)
        current = self._centroids.astype(np.float32)
        best, self._schedule.restart_won = recluster(
            points, w, current, self._rng, restarts=self.refine_restarts, iterations=self.refine_iterations,
            min_gain=self.refine_min_gain, spherical=self.spherical,
        )
        if best is None:
            return False, []
        self._centroids, self._counts, replaced = adopt(points, w, self._centroids, best, self._counts, self.spherical)
        self._c32 = self._centroids.astype(np.float32)
        self.n_refines_adopted += 1
        return True, replaced

    # ------------------------------------------------------------------ following a shared model
    def follow(
        self, centroids: np.ndarray, counts: np.ndarray, version: int, n_applied: int, reservoir_ids: np.ndarray
    ) -> np.ndarray | None:
        """Become a copy of another model's centroids, for assigning and summarising only.

        A worker of a consumer group assigns users with the model a single trainer publishes
        (:mod:`stream.shared_model`): ``centroids`` (float32, what :meth:`similarities` uses),
        decayed ``counts``, ``version``, the trainer's ``n_applied`` (warm-up) and the point ids
        its reservoir holds (so :meth:`summarise` knows which rows are refreshes). The worker's
        own sampling generator is kept: each worker draws its own reservoir keys. Returns the
        per-cluster movement from the centroids held before (``None`` if there were none).
        """
        c32 = np.ascontiguousarray(centroids, dtype=np.float32)
        if c32.shape[0] != self.n_clusters:
            raise ValueError(f"a model of {c32.shape[0]} clusters cannot be followed by one of {self.n_clusters}")
        old = self._centroids
        self._dim = int(c32.shape[1])
        self._centroids = c32.astype(np.float64)
        self._c32 = c32
        self._counts = np.array(counts, dtype=np.float64)
        self._buffer = None
        self._n_applied = int(n_applied)
        self.version = int(version)
        reservoir = Reservoir()
        reservoir.ids = np.array(reservoir_ids, dtype=np.uint64)
        reservoir.keys = np.zeros(reservoir.ids.shape[0], dtype=np.float64)
        reservoir.age = np.zeros(reservoir.ids.shape[0], dtype=np.float64)
        self._reservoir = reservoir
        if old is None or old.shape != self._centroids.shape:
            return None
        return self._movement(old, self._centroids)

    @property
    def reservoir_ids(self) -> np.ndarray:
        """The point ids the reservoir holds (a copy; 0 = anonymous)."""
        return self._reservoir.ids.copy()

    @property
    def n_applied(self) -> int:
        """Statistics applied so far (the warm-up counts these)."""
        return self._n_applied

    # ------------------------------------------------------------------ state
    def to_bytes(self) -> bytes:
        """The full state (params, centroids, counts, reservoir, schedule, RNGs): see :mod:`stream.kmeans.codec`."""
        return codec.model_to_bytes(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> MiniBatchKMeans:
        return codec.model_from_bytes(cls, data)

    def load_state(self, other: MiniBatchKMeans) -> dict[str, tuple[Any, Any]]:
        """Continue from what ``other`` has learned, with this model's hyper-parameters.

        Takes a copy of ``other``'s learned state (centroids, counts, buffer, reservoir,
        refinement schedule, random generators, version) and keeps this model's
        hyper-parameters, which take effect from the next batch; a changed ``seed`` restarts
        the generators from it. Returns the hyper-parameters that differ, as
        ``{name: (other's, this model's)}``; with none, this model is now an exact copy of
        ``other``. Raises ``ValueError`` if ``n_clusters`` or ``spherical`` differ: the
        learned state is made of them.
        """
        mine, theirs = self._get_params(), other._get_params()
        fixed = [name for name in _FIXED_PARAMS if mine[name] != theirs[name]]
        if fixed:
            differ = ", ".join(f"{n}={theirs[n]}" for n in fixed)
            raise ValueError(f"cannot continue a model of {differ} as one of " + ", ".join(f"{n}={mine[n]}" for n in fixed))
        for name in _LEARNED:
            setattr(self, name, copy.deepcopy(getattr(other, name)))
        changed = {name: (theirs[name], value) for name, value in mine.items() if theirs[name] != value}
        if "seed" in changed:
            self._rng, self._sample_rng = self._generators()
        self._schedule.fit(self.refine_every, self.refine_backoff)
        return changed

    @classmethod
    def _unit_test_params(cls) -> Iterable[dict[str, Any]]:
        yield {"n_clusters": 3}
        yield {"n_clusters": 2, "spherical": False, "time_unit": "points", "refine_every": 1}
