"""Refinement: re-cluster a weighted sample and keep the result if it fits better.

Mini-batch updates get stuck in local optima (a starved cluster next to one that merges
two groups). A refinement runs weighted Lloyd iterations on a sample of recent points
from the current centres and from a few fresh k-means++ seedings
(:func:`kmeans_plus_plus`), and keeps the candidate of lowest inertia if it beats the
current centres by a margin (:func:`recluster`). The new centres are matched to the old
cluster ids by the Hungarian algorithm (:func:`match_ids`, :func:`adopt`), so ids stay stable.
:class:`RefineSchedule` says when a refinement is due.

Example: two tight groups, but both current centres sit in the second one.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> points = np.repeat(np.array([[1.0, 0.0], [0.0, 1.0]], np.float32), 20, axis=0)
>>> points = normalise(points + rng.normal(0, 0.01, points.shape).astype(np.float32))[0]
>>> weights = np.ones(40, np.float32)
>>> current = np.array([[0.0, 1.0], [0.1, 0.995]], np.float32)
>>> best, restart_won = recluster(points, weights, current, rng, restarts=2, iterations=10,
...                               min_gain=0.01, spherical=True)
>>> np.round(match_ids(current, best, spherical=True), 1).tolist()
[[0.0, 1.0], [1.0, 0.0]]

Young, the schedule refines after 1, 2, 4 batches; then, no fresh seeding having won, it backs off:

>>> schedule, due = RefineSchedule(), []
>>> for batch in range(1, 16):
...     if schedule.tick():
...         due.append(batch)
...         schedule.reschedule(every=4, backoff=2)
>>> due
[1, 3, 7, 15]
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from stream.kmeans.geometry import nearest, normalise, sq_distances

__all__ = ["RefineSchedule", "adopt", "inertia", "kmeans_plus_plus", "lloyd", "match_ids", "recluster"]

# A refined centre whose cosine similarity to the centre it replaces is below this counts as a
# new centre (its labels start afresh).
NEW_CENTRE_SIM = 0.5


def kmeans_plus_plus(
    points: np.ndarray,
    k: int,
    rng: np.random.Generator,
    weights: np.ndarray | None = None,
    trials: int = 1,
    unit: bool = False,
) -> np.ndarray:
    """``k`` rows of ``points`` chosen by (greedy) k-means++ seeding.

    The first centre is drawn in proportion to the weights (uniformly without them); each next
    one from ``trials`` candidates drawn in proportion to weight times squared distance to
    the nearest chosen centre, keeping the candidate that lowers the weighted potential most
    (``trials=1``: plain k-means++; scikit-learn's greedy variant uses ``2 + log k``).
    Distances are chords of unit vectors when ``unit``, Euclidean otherwise. Draws are by
    inverse CDF (``searchsorted`` on the cumulative mass), as ``Generator.choice(p=...)``
    draws, minus its per-call validation of ``p``.
    """
    n = points.shape[0]
    w = None if weights is None else weights.astype(np.float64)

    def draw(mass: np.ndarray | None, size: int) -> np.ndarray:
        if mass is not None:
            cdf = np.cumsum(mass)
            total = float(cdf[-1])
            if total > 0:
                return np.minimum(np.searchsorted(cdf, rng.random(size) * total, side="right"), n - 1)
        return rng.integers(n, size=size)

    first = int(draw(w, 1)[0])
    chosen = [first]
    d2 = sq_distances(points, points[first : first + 1], unit)[:, 0].astype(np.float64)
    for _ in range(1, k):
        idx = draw(d2 if w is None else w * d2, trials)
        candidates = np.minimum(d2[None, :], sq_distances(points, points[idx], unit).T.astype(np.float64))
        best = int(np.argmin(candidates.sum(axis=1) if w is None else candidates @ w)) if trials > 1 else 0
        chosen.append(int(idx[best]))
        d2 = candidates[best]
    return points[chosen]


def lloyd(points: np.ndarray, weights: np.ndarray, centres: np.ndarray, iterations: int, spherical: bool) -> np.ndarray:
    """Weighted Lloyd iterations from ``centres`` (at most ``iterations``, fewer once no point
    changes cluster); returns the new float32 centres, unit rows when ``spherical``.

    A cluster left empty takes the point farthest from its centre (deterministic). Cluster
    sums are one ``(k, n) @ (n, d)`` float32 product per iteration (a weighted one-hot
    matrix), which BLAS does far faster than sorting and segment sums.
    """
    c = centres.astype(np.float32).copy()
    n, k = points.shape[0], c.shape[0]
    w32 = weights.astype(np.float32)
    cols = np.arange(n)
    onehot = np.zeros((k, n), dtype=np.float32)
    labels = None
    for _ in range(iterations):
        if spherical:
            sims = points @ c.T
            new_labels = np.argmax(sims, axis=1)
        else:
            d2 = sq_distances(points, c)
            new_labels = np.argmin(d2, axis=1)
        if labels is not None and np.array_equal(new_labels, labels):
            break
        if labels is not None:
            onehot[labels, cols] = 0.0
        labels = new_labels
        onehot[labels, cols] = w32
        sums = onehot @ points
        totals = onehot.sum(axis=1)
        empty = np.flatnonzero(totals <= 0)
        if empty.shape[0]:
            dist = 1.0 - sims[cols, labels] if spherical else d2[cols, labels]
            far = np.argsort(-dist, kind="stable")[: empty.shape[0]]
            sums[empty[: far.shape[0]]] = points[far]
            totals[empty[: far.shape[0]]] = 1.0
        has = totals > 0
        upd = sums[has] / totals[has, None]
        if spherical:
            upd, _ = normalise(upd)
        c[has] = upd.astype(np.float32)
    return c


def inertia(points: np.ndarray, weights: np.ndarray, centres: np.ndarray, spherical: bool) -> float:
    """Weighted sum of each point's squared distance to its nearest centre."""
    nearest = sq_distances(points, centres, unit=spherical).min(axis=1)
    return float(np.dot(weights.astype(np.float64), nearest.astype(np.float64)))


def recluster(
    points: np.ndarray,
    weights: np.ndarray,
    current: np.ndarray,
    rng: np.random.Generator,
    *,
    restarts: int,
    iterations: int,
    min_gain: float,
    spherical: bool,
) -> tuple[np.ndarray | None, bool]:
    """The best of Lloyd from ``current`` and from ``restarts`` greedy k-means++ seedings.

    Returns ``(centres, restart_won)``: ``centres`` is ``None`` unless some candidate's inertia
    is below ``(1 - min_gain)`` times that of ``current`` (so the Lloyd polish of the current
    centres alone usually wins when no restart finds a better optimum: mini-batch centroids
    lag the data); ``restart_won`` tells whether the winner came from a fresh seeding.
    """
    k = current.shape[0]
    best, best_cost = None, inertia(points, weights, current, spherical) * (1.0 - min_gain)
    restart_won = False
    for r in range(restarts + 1):
        if r == 0:
            start = current
        else:
            start = kmeans_plus_plus(points, k, rng, weights=weights, trials=2 + int(math.log(k)), unit=spherical)
        centres = lloyd(points, weights, start, iterations, spherical)
        cost = inertia(points, weights, centres, spherical)
        if cost < best_cost:
            best, best_cost = centres, cost
            restart_won = r > 0
    return best, restart_won


def match_ids(current: np.ndarray, new: np.ndarray, spherical: bool) -> np.ndarray:
    """``new`` reordered so that row ``j`` is the new centre matched to ``current[j]``: the
    assignment of largest total similarity (least total squared distance), by the Hungarian algorithm."""
    # Imported here: scipy.optimize takes ~0.3 s to import (the estimator imports it when built).
    from scipy.optimize import linear_sum_assignment

    a, b = current.astype(np.float64), new.astype(np.float64)
    rows, cols = linear_sum_assignment(-(a @ b.T) if spherical else sq_distances(a, b))
    out = np.empty_like(new)
    out[rows] = new[cols]
    return out


def adopt(
    points: np.ndarray, weights: np.ndarray, centroids: np.ndarray, best: np.ndarray, counts: np.ndarray,
    spherical: bool,
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Take ``best`` (from :func:`recluster` on ``points``) in place of the float64 ``centroids``.

    Returns ``(centroids, counts, replaced)``: the new centres in float64, matched to the
    current ids (:func:`match_ids`; unit rows when ``spherical``); the total of ``counts``
    shared out in proportion to the weight of the points each new centre gets; and the ids
    whose new centre is so far from the old one (cosine below ``NEW_CENTRE_SIM``) that it is
    a new cluster.
    """
    new = match_ids(centroids.astype(np.float32), best, spherical).astype(np.float64)
    if spherical:
        new, _ = normalise(new)
    labels = nearest(points, new.astype(np.float32), spherical)
    share = np.bincount(labels, weights=weights.astype(np.float64), minlength=new.shape[0])
    total = float(share.sum())
    if total > 0:
        counts = float(counts.sum()) * share / total
    sim = np.einsum("ij,ij->i", centroids, new)
    if not spherical:
        sim /= np.maximum(np.linalg.norm(centroids, axis=1) * np.linalg.norm(new, axis=1), 1e-12)
    return new, counts, [int(j) for j in np.flatnonzero(sim < NEW_CENTRE_SIM)]


@dataclasses.dataclass
class RefineSchedule:
    """When the next refinement is due (part of the model's state).

    A young model refines after 1, 2, 4, ... batches until the interval reaches ``every``
    (its first centroids come from a handful of points, and refining a small sample is
    cheap); then every ``every`` batches while fresh seedings keep winning, and, while
    they don't, at doubling intervals up to ``backoff * every``. ``restart_won`` is whether
    the last refinement that ran was won by a fresh seeding; a refinement skipped for
    lack of points leaves it as it was.
    """

    wait: int = 0  # batches counted since the last due refinement
    interval: int = 0  # 0: not started (due after 1 batch)
    restart_won: bool = False

    def tick(self) -> bool:
        """Count one applied batch; true when a refinement is due now."""
        self.wait += 1
        if self.wait < (self.interval or 1):
            return False
        self.wait = 0
        return True

    def reschedule(self, every: int, backoff: int) -> None:
        """Set the next interval, after a due refinement (run or skipped)."""
        interval = self.interval or 1
        if interval < every:
            self.interval = min(2 * interval, every)
        elif self.restart_won:
            self.interval = every
        else:
            self.interval = min(2 * interval, backoff * every)

    def fit(self, every: int, backoff: int) -> None:
        """After a change of ``every`` or ``backoff``: cut an interval longer than the longest allowed."""
        self.interval = min(self.interval, backoff * every)
