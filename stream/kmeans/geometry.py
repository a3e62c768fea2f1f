"""Distances between points and centres, and unit rows: what every part of the k-means measures with.

Squared distances come in two forms. With ``unit=True`` the rows are taken to be unit
vectors and the squared distance is the chord ``2 - 2 cos``; otherwise it is the
Euclidean ``|p|² + |c|² - 2 p·c``. Both are clamped at 0 (rounding can make them
slightly negative). The nearest centre is the most similar one on the sphere
(``spherical=True``) and the closest one otherwise.

Example: two centres on the axes, a point at 3-4-5.

>>> import numpy as np
>>> unit, nonzero = normalise(np.array([[3.0, 4.0], [0.0, 0.0]]))
>>> unit.tolist(), nonzero.tolist()
([[0.6, 0.8], [0.0, 0.0]], [True, False])
>>> centres = np.array([[1.0, 0.0], [0.0, 1.0]])
>>> np.round(sq_distances(unit[:1], centres, unit=True), 6).tolist()
[[0.8, 0.4]]
>>> nearest(unit[:1], centres, spherical=True).tolist(), nearest_sq_distance(unit[:1], centres).round(6).tolist()
([1], [0.4])
"""

from __future__ import annotations

import numpy as np

__all__ = ["nearest", "nearest_sq_distance", "normalise", "sq_distances"]


def normalise(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows scaled to unit length (zero rows stay zero), and the mask of non-zero rows."""
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    out = np.divide(X, norms, out=np.zeros_like(X), where=norms > 0)
    return out, norms[:, 0] > 0


def sq_distances(points: np.ndarray, centres: np.ndarray, unit: bool = False) -> np.ndarray:
    """``(n, m)`` squared distances of each point to each centre (``2 - 2 cos`` when ``unit``)."""
    dots = points @ centres.T
    if unit:
        return np.maximum(2.0 - 2.0 * dots, 0.0)
    p_sq = np.einsum("ij,ij->i", points, points)
    c_sq = np.einsum("ij,ij->i", centres, centres)
    return np.maximum(p_sq[:, None] + c_sq[None, :] - 2.0 * dots, 0.0)


def nearest_sq_distance(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """``(n,)`` Euclidean squared distance of each point to its nearest centre (1 when there is none)."""
    if centres.shape[0] == 0:
        return np.ones(points.shape[0])
    return sq_distances(points, centres).min(axis=1)


def nearest(points: np.ndarray, centres: np.ndarray, spherical: bool) -> np.ndarray:
    """Index of each point's nearest centre (most similar when ``spherical``: rows are unit vectors)."""
    if spherical:
        return np.argmax(points @ centres.T, axis=1)
    c_sq = np.einsum("ij,ij->i", centres, centres)
    return np.argmin(c_sq[None, :] - 2.0 * (points @ centres.T), axis=1)
