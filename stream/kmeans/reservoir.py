"""A weighted, decayed reservoir of recent points, one row per point id.

The model keeps a bounded sample of the points it has seen, to reseed starved clusters
and to refine the centroids. Sampling is weighted reservoir sampling (A-Res,
Efraimidis & Spirakis): each point gets the key ``log(u) / w`` and the largest keys are
kept. Ageing divides the keys by the decay factor, so a full reservoir prefers recent
points, and a row whose age (1 when added, then decayed) falls below three half-lives is
dropped. A point with an id (a user, say) occupies one row, moved to its latest position
each time it comes back.

Example: a reservoir of two rows, fed three points; then one of them moves.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> points = np.eye(3, dtype=np.float32)
>>> ids = np.array([11, 12, 13], dtype=np.uint64)
>>> reservoir = Reservoir()
>>> reservoir.insert(points, sample_keys(rng, np.ones(3)), ids, capacity=2)
>>> len(reservoir), sorted(reservoir.ids.tolist())
(2, [11, 12])
>>> reservoir.age_by(0.5)  # one half-life passes
>>> reservoir.age.tolist()
[0.5, 0.5]
>>> moved = reservoir.move(np.array([12], dtype=np.uint64), np.array([[0.0, 0.6, 0.8]], dtype=np.float32))
>>> row = int(moved[0])
>>> reservoir.points[row].tolist(), float(reservoir.age[row])
([0.0, 0.6000000238418579, 0.800000011920929], 1.0)
"""

from __future__ import annotations

import numpy as np

__all__ = ["Reservoir", "sample_keys", "top_keys"]

# Rows whose age has decayed below this (three half-lives) are dropped, so reseeding never
# revives a centre from long-gone data.
MAX_AGE = 0.125


def sample_keys(rng: np.random.Generator, weights: np.ndarray) -> np.ndarray:
    """A-Res keys ``log(u) / w`` (larger is kept); points of weight <= 0 are never kept."""
    u = rng.random(weights.shape[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        keys = np.log(u) / weights
    keys[~(weights > 0)] = -np.inf
    return keys


def top_keys(
    points: np.ndarray, keys: np.ndarray, capacity: int, ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (at most) ``capacity`` rows with the largest keys, in their order, with their keys and ids."""
    usable = keys > -np.inf
    if not usable.all():
        points, keys, ids = points[usable], keys[usable], ids[usable]
    if keys.shape[0] <= capacity:
        return points, keys, ids
    if capacity <= 0:
        return points[:0], keys[:0], ids[:0]
    keep = np.sort(np.argpartition(-keys, capacity - 1)[:capacity])
    return points[keep], keys[keep], ids[keep]


class Reservoir:
    """Rows of recent points: ``points`` (float32), their A-Res ``keys``, ``age`` and ``ids``.

    ``points`` is ``None`` until the first :meth:`add` (the dimension is not known before).
    An id of 0 is an anonymous point: it never matches another row.
    """

    def __init__(self) -> None:
        self.points: np.ndarray | None = None
        self.keys = np.zeros(0, dtype=np.float64)
        self.age = np.zeros(0, dtype=np.float64)
        self.ids = np.zeros(0, dtype=np.uint64)

    def __len__(self) -> int:
        return self.keys.shape[0]

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """The row holding each of ``ids``, or -1 (id 0, an anonymous point, never matches)."""
        held = self.ids
        if ids.shape[0] == 0 or not held.any():
            return np.full(ids.shape[0], -1, dtype=np.int64)
        order = np.argsort(held, kind="stable")
        sorted_held = held[order]
        pos = np.minimum(np.searchsorted(sorted_held, ids), held.shape[0] - 1)
        found = (sorted_held[pos] == ids) & (ids != 0)
        return np.where(found, order[pos], -1)

    def move(self, ids: np.ndarray, points: np.ndarray) -> np.ndarray:
        """Write ``points`` over the rows holding their ``ids`` (of an id given twice, the later wins)
        and mark those rows recent; returns each id's row, -1 where the reservoir lacks it."""
        rows = self.rows_of(ids)
        hit = np.flatnonzero(rows >= 0)
        if hit.shape[0]:
            held, last = np.unique(rows[hit][::-1], return_index=True)
            self.points[held] = points[hit[::-1][last]]
            self.age[held] = 1.0
        return rows

    def recent(self, min_age: float) -> np.ndarray | None:
        """The points at least ``min_age`` old (all of them when none is); ``None`` before the first add."""
        if self.points is None:
            return None
        recent = self.age >= min_age
        return self.points[recent] if recent.any() else self.points

    def age_by(self, decay: float) -> None:
        """Age every row by ``decay`` (keys ``log(u)/(w*decay)``) and drop the rows grown too old."""
        if decay >= 1.0:
            return
        self.keys /= decay
        self.age *= decay
        fresh = self.age >= MAX_AGE
        if not fresh.all():
            self._keep(fresh)

    def insert(self, seeds: np.ndarray, keys: np.ndarray, ids: np.ndarray, capacity: int) -> None:
        """Add ``seeds`` with their A-Res ``keys`` and ``ids``, keeping at most ``capacity`` rows.

        A seed whose id the reservoir holds replaces that row (which counts as recent again and
        keeps the larger key); other seeds compete by key for the rows and overwrite the rows of
        evicted ones: O(len(seeds) * d), not O(capacity * d).
        """
        if self.points is None:
            self.points = np.zeros((0, seeds.shape[1]), dtype=np.float32)
        rows = self.move(ids, seeds)
        hit = rows >= 0
        if hit.any():
            self.keys[rows[hit]] = np.maximum(self.keys[rows[hit]], keys[hit])
            seeds, keys, ids = seeds[~hit], keys[~hit], ids[~hit]
        n_old, n_new = self.keys.shape[0], keys.shape[0]
        if n_new == 0:
            return
        if n_old + n_new <= capacity:
            self._append(seeds.astype(np.float32), keys, np.ones(n_new), ids)
            return
        all_keys = np.concatenate([self.keys, keys])
        free = np.arange(n_old, capacity)  # grow to full capacity first; the tail is filled below
        if free.shape[0]:
            pad = free.shape[0]
            self._append(np.zeros((pad, self.points.shape[1]), np.float32), np.full(pad, -np.inf), np.zeros(pad),
                         np.zeros(pad, dtype=np.uint64))
        keep = np.zeros(n_old + n_new, dtype=bool)
        keep[np.argpartition(-all_keys, capacity - 1)[:capacity]] = True
        evicted = np.flatnonzero(~keep[:n_old])
        entering = np.flatnonzero(keep[n_old:])
        rows = np.concatenate([free, evicted])[: entering.shape[0]]
        self.points[rows] = seeds[entering]
        self.keys[rows] = keys[entering]
        self.age[rows] = 1.0
        self.ids[rows] = ids[entering]

    def _append(self, points: np.ndarray, keys: np.ndarray, age: np.ndarray, ids: np.ndarray) -> None:
        self.points = np.concatenate([self.points, points])
        self.keys = np.concatenate([self.keys, keys])
        self.age = np.concatenate([self.age, age])
        self.ids = np.concatenate([self.ids, ids])

    def _keep(self, mask: np.ndarray) -> None:
        self.points, self.keys, self.age, self.ids = self.points[mask], self.keys[mask], self.age[mask], self.ids[mask]
