"""What one mini-batch contributes to the centroids: additive statistics.

Per cluster, the weighted sum of the points assigned to it and their total weight, plus
a small weighted sample of the batch's points (to initialise, reseed and refine the
model). Statistics add up (``a + b``, :meth:`BatchStatistics.merge`): many workers
summarise their own users' batches and the trainer applies the merged statistics,
exactly the update the concatenated batch would have given.

Example: two halves of a batch, summed per cluster, merged.

>>> import numpy as np
>>> points = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], np.float32)
>>> sums, weights = cluster_sums(points, np.array([1.0, 2.0, 3.0]), np.array([0, 1, 0]), 2)
>>> sums.tolist(), weights.tolist()
([[4.0, 0.0], [0.0, 2.0]], [4.0, 2.0])
>>> def half(sums, weights):
...     return BatchStatistics(n_clusters=2, dim=2, sums=sums, weights=weights, n_points=3,
...                            seeds=np.zeros((0, 2), np.float32), seed_keys=np.zeros(0), seed_capacity=4)
>>> both = BatchStatistics.merge([half(sums, weights), half(sums, weights)])
>>> both.weights.tolist(), both.n_points
([8.0, 4.0], 6)
>>> BatchStatistics.from_bytes(both.to_bytes()).sums.tolist()
[[8.0, 0.0], [0.0, 4.0]]
>>> ids = point_ids(["alice", "bob", "alice"])
>>> ids.dtype, bool(ids[0] == ids[2]), bool(ids[0] != ids[1]), bool((ids != 0).all())
(dtype('uint64'), True, True, True)
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import operator
from collections.abc import Iterable

import numpy as np

from stream.kmeans import codec
from stream.kmeans.reservoir import top_keys

__all__ = ["BatchStatistics", "cluster_sums", "point_ids"]


def point_ids(names: Iterable[str]) -> np.ndarray:
    """Stable non-zero uint64 ids of named points (e.g. user ids), for :meth:`MiniBatchKMeans.summarise`."""
    digests = b"".join(hashlib.blake2b(n.encode("utf-8", "surrogatepass"), digest_size=8).digest() for n in names)
    return np.frombuffer(digests, dtype="<u8").astype(np.uint64) | np.uint64(1)


def cluster_sums(points: np.ndarray, weights: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(k, d)`` float64 weighted sums of the points of each cluster and ``(k,)`` their total weights."""
    sums = np.zeros((k, points.shape[1]), dtype=np.float64)
    totals = np.bincount(labels, weights=weights, minlength=k).astype(np.float64)
    if points.shape[0]:
        order = np.argsort(labels, kind="stable")
        sorted_labels = labels[order]
        starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
        rows = points[order]
        if not np.all(weights == 1.0):
            rows = rows * weights[order, None].astype(np.float32)
        sums[sorted_labels[starts]] = np.add.reduceat(rows, starts, axis=0, dtype=np.float64)
    return sums, totals


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
        seeds, keys, ids = top_keys(
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
        """Sum several statistics (order-free for the sums and weights); the same as ``a + b + ...``,
        in one pass (a trainer merges hundreds of workers' batches at once)."""
        items = list(stats)
        if not items:
            raise ValueError("nothing to merge")
        if len(items) == 1:
            return functools.reduce(operator.add, items)
        first = items[0]
        for other in items[1:]:
            if (other.n_clusters, other.dim) != (first.n_clusters, first.dim):
                raise ValueError(f"cannot merge statistics of shape {(first.n_clusters, first.dim)} and "
                                 f"{(other.n_clusters, other.dim)}")
        summed = [st for st in items if st.sums is not None]
        sums = weights = None
        if summed:
            sums = summed[0].sums.astype(np.float64, copy=True)
            weights = summed[0].weights.astype(np.float64, copy=True)
            for st in summed[1:]:
                sums += st.sums
                weights += st.weights
        capacity = max(st.seed_capacity for st in items)
        seeds, keys, ids = top_keys(
            np.concatenate([st.seeds for st in items]),
            np.concatenate([st.seed_keys for st in items]),
            capacity,
            np.concatenate([st.seed_ids for st in items]),
        )
        return BatchStatistics(
            n_clusters=first.n_clusters,
            dim=first.dim,
            sums=sums,
            weights=weights,
            n_points=sum(st.n_points for st in items),
            seeds=seeds,
            seed_keys=keys,
            seed_capacity=capacity,
            model_version=max(st.model_version for st in items),
            seed_ids=ids,
            refresh=np.concatenate([st.refresh for st in items]),  # applied in order: the later wins
            refresh_ids=np.concatenate([st.refresh_ids for st in items]),
        )

    def to_bytes(self) -> bytes:
        """Magic ``ISBS``, a format version byte, then a msgpack array (see :mod:`stream.kmeans.codec`)."""
        return codec.statistics_to_bytes(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> BatchStatistics:
        return codec.statistics_from_bytes(cls, data)
