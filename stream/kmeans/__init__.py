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

The parts, one module each:

- :mod:`~stream.kmeans.estimator`: :class:`MiniBatchKMeans` itself (summarise, apply, state);
- :mod:`~stream.kmeans.statistics`: :class:`BatchStatistics`, what a batch contributes;
- :mod:`~stream.kmeans.reservoir`: the weighted, decayed sample of recent points;
- :mod:`~stream.kmeans.seeding`: the first centres, and reseeding starved or duplicated clusters;
- :mod:`~stream.kmeans.refinement`: Lloyd, k-means++, Hungarian matching, the schedule;
- :mod:`~stream.kmeans.geometry`: distances, nearest centres, unit rows;
- :mod:`~stream.kmeans.features`: dicts, DataFrames and arrays as rows;
- :mod:`~stream.kmeans.codec`: the byte formats.

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

from stream.kmeans.estimator import ApplyResult, MiniBatchKMeans
from stream.kmeans.statistics import BatchStatistics, point_ids

__all__ = ["ApplyResult", "BatchStatistics", "MiniBatchKMeans", "point_ids"]
