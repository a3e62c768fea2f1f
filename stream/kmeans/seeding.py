"""Seeding: the first centres, and new centres for starved or duplicated clusters.

The model starts from k-means++ on the points it buffered, followed by one Lloyd step
(the buffer is its first batch: each centre takes the mean of its points). Later, a
cluster whose decayed weight falls below a fraction of the average, or whose centre
duplicates another's, is *reseeded*: it gets a new centre drawn k-means++ style (far from
the live centres) from recent points, and keeps its id.

Example: three points, two clusters; then cluster 1 starves and is reseeded.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> points = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], np.float32)
>>> centres, counts = initial_centres(points, 2, rng, spherical=True)
>>> sorted(counts.tolist())
[1.0, 2.0]
>>> counts[:] = [10.0, 0.1]
>>> age = np.zeros(2)
>>> pool = np.array([[0.6, 0.8]], np.float32)
>>> reseed(centres, counts, age, pool, rng, reseed_fraction=0.05, spherical=True)
[1]
>>> np.round(centres[1], 2).tolist(), counts.tolist(), age.tolist()
([0.6, 0.8], [10.0, 0.0], [0.0, 1.0])
>>> duplicate_centres(np.array([[1.0, 0.0], [1.0, 0.0]]), np.array([1.0, 2.0]), None).tolist()
[True, False]
"""

from __future__ import annotations

import math

import numpy as np

from stream.kmeans.geometry import nearest, nearest_sq_distance, normalise
from stream.kmeans.refinement import kmeans_plus_plus
from stream.kmeans.statistics import cluster_sums

__all__ = ["duplicate_centres", "initial_centres", "reseed"]

# Reseeding samples its k-means++ candidates from at most this many recent points.
_CANDIDATES = 512


def initial_centres(points: np.ndarray, k: int, rng: np.random.Generator, spherical: bool) -> tuple[np.ndarray, np.ndarray]:
    """k-means++ on ``points``, then every centre the mean of its points: ``(float64 centres, counts)``."""
    centres = kmeans_plus_plus(points.astype(np.float64), k, rng)
    labels = nearest(points, centres.astype(np.float32), spherical)
    sums, counts = cluster_sums(points, np.ones(points.shape[0]), labels, k)
    has = counts > 0
    means = sums[has] / counts[has, None]
    if spherical:
        means, _ = normalise(means)
    centres[has] = means
    return centres, counts


def duplicate_centres(centres: np.ndarray, counts: np.ndarray, candidates: np.ndarray | None) -> np.ndarray:
    """Mask of clusters among ``candidates`` (all if ``None``) whose centre duplicates another's.

    Duplicates are centres equal in float32, the precision assignment uses: of such a group
    only the first index can ever win a point (argmax ties), the others are shadowed. Of each
    group the heaviest (then lowest index) centre is kept. Centres that are merely close both
    receive points and are left to the starvation rule.
    """
    k = centres.shape[0]
    dup = np.zeros(k, dtype=bool)
    if k < 2 or (candidates is not None and len(candidates) == 0):
        return dup
    rows = np.ascontiguousarray(centres, dtype=np.float32)
    keys = rows.view(np.dtype((np.void, rows.shape[1] * 4))).reshape(-1)
    _, group, sizes = np.unique(keys, return_inverse=True, return_counts=True)
    shared = sizes[group] > 1
    if not shared.any():
        return dup
    for g in np.unique(group[shared]):
        members = np.flatnonzero(group == g)
        keep = max(members, key=lambda j: (counts[j], -j))
        dup[members[members != keep]] = True
    if candidates is not None:
        dup &= np.isin(np.arange(k), candidates)
    return dup


def reseed(
    centres: np.ndarray,
    counts: np.ndarray,
    reseed_age: np.ndarray,
    pool: np.ndarray,
    rng: np.random.Generator,
    *,
    reseed_fraction: float,
    spherical: bool,
    duplicates: np.ndarray | None = None,
) -> list[int]:
    """Give starved or duplicated clusters a new centre drawn from ``pool``; returns their ids.

    A cluster is starved when its count is below ``reseed_fraction`` of the average count.
    Only clusters whose ``reseed_age`` (1 right after a reseed, then decayed) is at most 0.5
    qualify: a cluster is reseeded at most once per half-life. New centres are drawn in
    proportion to the squared distance to the nearest live centre; with no point to draw
    from, the heaviest live cluster is split with a small jitter. Updates ``centres``,
    ``counts`` (0 for a new centre) and ``reseed_age`` (1) in place.
    """
    k = centres.shape[0]
    total = float(counts.sum())
    dead = np.zeros(k, dtype=bool) if duplicates is None else duplicates.copy()
    if total > 0 and reseed_fraction > 0:
        dead |= counts < reseed_fraction * total / k
    c_sq = np.einsum("ij,ij->i", centres, centres)
    dead &= reseed_age <= 0.5
    if not dead.any():
        return []
    live = ~dead
    reseeded = []
    if pool.shape[0] > _CANDIDATES:
        pool = pool[np.sort(rng.choice(pool.shape[0], _CANDIDATES, replace=False))]
    d2 = nearest_sq_distance(pool, centres[live].astype(np.float32)).astype(np.float64) if pool.shape[0] else np.zeros(0)
    for j in np.flatnonzero(dead):
        total_d2 = float(d2.sum())
        if total_d2 > 0:
            new = pool[int(rng.choice(pool.shape[0], p=d2 / total_d2))].copy()
        else:  # nothing new to seed from: split the heaviest live cluster with a small jitter
            heavy = int(np.argmax(np.where(live, counts, -np.inf)))
            spread = math.sqrt(max(float(c_sq.max()), 1e-12))
            new = centres[heavy] + rng.normal(0.0, 1e-3 * spread, size=centres.shape[1])
        if spherical:
            norm = np.linalg.norm(new)
            new = new / norm if norm > 0 else new
        centres[j] = new
        counts[j] = 0.0
        reseed_age[j] = 1.0
        live[j] = True
        reseeded.append(int(j))
        if pool.shape[0]:
            d2 = np.minimum(d2, nearest_sq_distance(pool, new[None, :].astype(np.float32)))
    return reseeded
