"""MiniBatchKMeans: init, decay, reseeding, additive statistics, river API, state round trip.

Refinement and the reservoir: test_kmeans_refine.py; restores and old records: test_kmeans_restore.py;
river's estimator checks: test_kmeans_river_checks.py. They share the data helpers defined here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from river import metrics, stream

from stream.kmeans import BatchStatistics, MiniBatchKMeans

DIM = 16


def make_blobs(rng, directions, n_each, noise=0.05):
    """Points around the given unit directions, shuffled; returns (X, labels)."""
    xs, ys = [], []
    for label, direction in enumerate(directions):
        xs.append(direction + rng.normal(0.0, noise, size=(n_each, direction.shape[0])))
        ys.append(np.full(n_each, label))
    X, y = np.vstack(xs).astype(np.float32), np.concatenate(ys)
    order = rng.permutation(X.shape[0])
    return X[order], y[order]


def unit_axes(k, dim=DIM):
    return [np.eye(dim)[i] for i in range(k)]


def cosine(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_buffers_until_enough_distinct_points():
    rng = np.random.default_rng(0)
    model = MiniBatchKMeans(n_clusters=3, init_size=10)
    same = np.tile(rng.normal(size=(1, DIM)), (20, 1))
    result = model.learn_many(same)  # 20 copies of one point: one distinct point
    assert not result.initialised and not model.is_initialised
    assert model.version == 0
    stats = model.summarise(rng.normal(size=(4, DIM)))
    assert stats.sums is None and stats.weights is None and stats.seeds.shape == (4, DIM)
    model.apply(stats)
    assert not model.is_initialised  # 5 distinct so far
    assert model.predict_many(rng.normal(size=(2, DIM))).tolist() == [0, 0]
    with pytest.raises(RuntimeError):
        model.similarities(rng.normal(size=(2, DIM)))
    result = model.learn_many(rng.normal(size=(5, DIM)))
    assert result.initialised and model.is_initialised and model.version == 1
    c = model.centroids
    assert c.shape == (3, DIM) and c.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1.0, rtol=1e-5)
    assert model.counts.sum() == pytest.approx(10.0)  # the buffer was the first batch


@pytest.mark.parametrize("seed", range(5))
def test_kmeans_plus_plus_init_finds_every_blob(seed):
    rng = np.random.default_rng(seed)
    X, y = make_blobs(rng, unit_axes(4), 30)
    model = MiniBatchKMeans(n_clusters=4, seed=seed)
    model.learn_many(X)
    assert model.is_initialised
    pred = model.predict_many(X)
    # Every blob maps to its own cluster.
    mapping = {int(label): set(pred[y == label].tolist()) for label in range(4)}
    assert all(len(v) == 1 for v in mapping.values())
    assert len({next(iter(v)) for v in mapping.values()}) == 4


def test_infinite_half_life_is_the_running_mean():
    rng = np.random.default_rng(3)
    centres = [np.full(4, 10.0), np.full(4, -10.0)]
    first, _ = make_blobs(rng, centres, 20, noise=1.0)
    model = MiniBatchKMeans(n_clusters=2, half_life=math.inf, spherical=False, init_size=40, seed=0)
    model.learn_many(first)
    batches = [make_blobs(rng, centres, 15, noise=1.0)[0] for _ in range(6)]
    weights = [rng.uniform(0.5, 2.0, b.shape[0]) for b in batches]
    for batch, w in zip(batches, weights, strict=True):
        model.learn_many(batch, sample_weight=w)
    everything = np.vstack([first, *batches])
    all_w = np.concatenate([np.ones(first.shape[0]), *weights])
    for sign in (1, -1):
        mask = np.sign(everything[:, 0]) == sign
        expected = np.average(everything[mask], axis=0, weights=all_w[mask])
        j = int(model.predict_many(expected[None, :])[0])
        np.testing.assert_allclose(model.centroids[j], expected, rtol=1e-5, atol=1e-5)
        assert model.counts[j] == pytest.approx(all_w[mask].sum())


def test_centroid_follows_a_drifting_blob_only_with_decay():
    def run(half_life):
        rng = np.random.default_rng(11)
        model = MiniBatchKMeans(n_clusters=2, half_life=half_life, seed=0, reseed_fraction=0.0)
        other = np.eye(DIM)[5]
        for step in range(120):
            angle = (math.pi / 2) * step / 119  # rotates from axis 0 to axis 1
            centre = math.cos(angle) * np.eye(DIM)[0] + math.sin(angle) * np.eye(DIM)[1]
            X, _ = make_blobs(rng, [centre, other], 20, noise=0.02)
            model.learn_many(X)
        j = int(model.predict_many(np.eye(DIM)[1][None, :])[0])
        return cosine(model.centroids[j], np.eye(DIM)[1])

    assert run(half_life=3.0) > 0.99
    assert run(half_life=math.inf) < 0.95


def test_time_unit_points_decays_per_point():
    rng = np.random.default_rng(5)
    X, _ = make_blobs(rng, unit_axes(2), 20)
    model = MiniBatchKMeans(n_clusters=2, half_life=10.0, time_unit="points", seed=0)
    model.learn_many(X)
    before = model.counts
    batch, _ = make_blobs(rng, unit_axes(2), 7)
    stats = model.summarise(batch)
    model.apply(stats)
    a = 0.5 ** (1 / 10.0)
    np.testing.assert_allclose(model.counts, a**14 * before + stats.weights)


def test_starved_cluster_is_reseeded_with_a_stable_id():
    rng = np.random.default_rng(2)
    axes = unit_axes(3)
    model = MiniBatchKMeans(n_clusters=3, half_life=5.0, seed=0, refine_every=0)  # the reseed rule alone
    X, _ = make_blobs(rng, axes, 30)
    model.learn_many(X)
    ids = [int(model.predict_many(a[None, :])[0]) for a in axes]
    assert sorted(ids) == [0, 1, 2]
    reseeded_at = None
    for step in range(60):  # blob 2 disappears
        X, _ = make_blobs(rng, axes[:2], 30)
        result = model.learn_many(X)
        if ids[2] in result.reseeded and reseeded_at is None:
            reseeded_at = step
            new_centre = model.centroids[ids[2]]
            # Reseeded from recent points (blobs 0 and 1), not from the vanished blob 2.
            assert max(cosine(new_centre, axes[0]), cosine(new_centre, axes[1])) > 0.9
        assert set(result.reseeded) <= {ids[2]}
    assert reseeded_at is not None and reseeded_at >= 5  # only after a half-life at least
    c = model.centroids
    assert c.shape == (3, DIM) and np.isfinite(c).all()
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1.0, rtol=1e-5)
    # The surviving clusters keep their ids.
    assert cosine(c[ids[0]], axes[0]) > 0.9 and cosine(c[ids[1]], axes[1]) > 0.9
    assert int(model.predict_many(axes[0][None, :])[0]) in {ids[0], ids[2]}


def test_all_clusters_survive_when_data_collapses_to_one_blob():
    rng = np.random.default_rng(4)
    model = MiniBatchKMeans(n_clusters=4, half_life=2.0, seed=1)
    X, _ = make_blobs(rng, unit_axes(4), 30)
    model.learn_many(X)
    last_reseed: dict[int, int] = {}
    for step in range(40):
        for j in model.learn_many(make_blobs(rng, unit_axes(1), 40)[0]).reseeded:
            # a reseeded cluster gets one half-life of grace before it can be reseeded again
            assert step - last_reseed.get(j, -100) >= 2
            last_reseed[j] = step
    assert last_reseed  # the starved clusters were reseeded
    c = model.centroids
    assert c.shape == (4, DIM) and np.isfinite(c).all()
    sims = c @ c.T
    assert (sims[~np.eye(4, dtype=bool)] < 1 - 1e-9).all()  # no two identical centroids


def test_duplicate_centroid_is_reseeded():
    rng = np.random.default_rng(8)
    model = MiniBatchKMeans(n_clusters=3, seed=0)
    model.learn_many(make_blobs(rng, unit_axes(3), 30)[0])
    model._centroids[2] = model._centroids[0]  # force a duplicate
    model._c32 = model._centroids.astype(np.float32)
    result = model.learn_many(make_blobs(rng, unit_axes(3), 30)[0])
    assert result.reseeded == [2]  # the lighter of the two (it got no points: argmax ties)
    c = model.centroids
    assert cosine(c[0], c[2]) < 0.99


def _separated_model(seed=0):
    rng = np.random.default_rng(seed)
    model = MiniBatchKMeans(n_clusters=4, half_life=20.0, seed=seed)
    model.learn_many(make_blobs(rng, unit_axes(4), 40)[0])
    return model, rng


def test_merged_statistics_equal_the_concatenated_batch():
    model, rng = _separated_model()
    twin = MiniBatchKMeans.from_bytes(model.to_bytes())
    X, _ = make_blobs(rng, unit_axes(4), 60)
    w = rng.uniform(0.1, 2.0, X.shape[0])
    parts = np.array_split(np.arange(X.shape[0]), 3)
    stats = [model.summarise(X[p], w[p]) for p in parts]
    merged = BatchStatistics.merge(stats)
    assert merged.n_points == X.shape[0]
    np.testing.assert_allclose((stats[2] + stats[0] + stats[1]).sums, merged.sums)  # order-free
    r1 = model.apply(merged)
    r2 = twin.learn_many(X, sample_weight=w)
    assert r1.reseeded == r2.reseeded == []
    np.testing.assert_allclose(model.centroids, twin.centroids, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(model.counts, twin.counts, rtol=1e-9)
    np.testing.assert_allclose(r1.movement, r2.movement, atol=1e-7)
    assert r1.version == r2.version == 2
    assert r1.movement.shape == (4,) and (r1.movement > 0).all()


def test_statistics_bytes_round_trip_and_bounded_seeds():
    model, rng = _separated_model()
    X, _ = make_blobs(rng, unit_axes(4), 100)
    stats = model.summarise(X)
    assert stats.seeds.shape == (model.seeds_per_batch, DIM)
    back = BatchStatistics.from_bytes(stats.to_bytes())
    np.testing.assert_array_equal(back.sums, stats.sums)
    np.testing.assert_array_equal(back.weights, stats.weights)
    np.testing.assert_array_equal(back.seeds, stats.seeds)
    np.testing.assert_array_equal(back.seed_keys, stats.seed_keys)
    assert (back.n_points, back.model_version, back.seed_capacity) == (
        400,
        model.version,
        stats.seed_capacity,
    )
    merged = stats + back
    assert merged.seeds.shape[0] == model.seeds_per_batch
    pre = MiniBatchKMeans(n_clusters=2).summarise(X[:5])
    assert BatchStatistics.from_bytes(pre.to_bytes()).sums is None
    with pytest.raises(ValueError):
        BatchStatistics.from_bytes(b"nope" + stats.to_bytes()[4:])


def test_similarities_and_precomputed_assignment():
    model, rng = _separated_model()
    X, _ = make_blobs(rng, unit_axes(4), 10)
    sims = model.similarities(X)
    assert sims.shape == (40, 4)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    np.testing.assert_allclose(sims, Xn @ model.centroids.T, rtol=1e-5, atol=1e-6)
    assert (np.argmax(sims, axis=1) == model.predict_many(X)).all()
    a, b = model.summarise(X), model.summarise(X, similarities=sims)
    np.testing.assert_allclose(a.sums, b.sums)


def test_learn_one_predict_one_through_river():
    rng = np.random.default_rng(9)
    X, y = make_blobs(rng, unit_axes(3, dim=5), 100)
    model = MiniBatchKMeans(n_clusters=3, half_life=200.0, seed=0)
    ari = metrics.AdjustedRand()
    silhouette = metrics.Silhouette()
    for i, (x, label) in enumerate(stream.iter_array(X, y)):
        y_pred = model.predict_one(x)
        if i >= 100:
            ari.update(label, y_pred)
            silhouette.update(x, y_pred, model.centers)
        model.learn_one(x)
    assert model.is_initialised
    assert ari.get() > 0.95
    assert silhouette.get() < 0.5  # river's Silhouette: smaller is better
    assert isinstance(model.clone(), MiniBatchKMeans) and not model.clone().is_initialised
    # dict keys are matched by name, not position
    x = dict(zip(range(5), X[0].tolist(), strict=True))
    shuffled = {k: x[k] for k in reversed(x)}
    assert model.predict_one(shuffled) == model.predict_one(x)


class _FrameLike:
    """The slice of the pandas DataFrame API the model uses (pandas itself is not a dependency)."""

    def __init__(self, data, columns):
        self._data, self.columns = np.asarray(data), list(columns)

    def __getitem__(self, names):
        return _FrameLike(self._data[:, [self.columns.index(n) for n in names]], names)

    def to_numpy(self):
        return self._data


def test_dataframe_input_is_matched_by_column_name():
    rng = np.random.default_rng(1)
    X, _ = make_blobs(rng, unit_axes(2, dim=3), 20)
    model = MiniBatchKMeans(n_clusters=2)
    model.learn_many(_FrameLike(X, ["a", "b", "c"]))
    assert model.is_initialised
    shuffled = _FrameLike(X[:, [2, 0, 1]], ["c", "a", "b"])
    assert (model.predict_many(shuffled) == model.predict_many(X)).all()
    assert model.predict_one({"c": X[0, 2], "a": X[0, 0], "b": X[0, 1]}) == model.predict_many(X[:1])[0]


@pytest.mark.parametrize("initialised", [False, True])
def test_state_round_trip(initialised):
    rng = np.random.default_rng(6)
    model = MiniBatchKMeans(n_clusters=4, half_life=7.0, seed=3, init_size=200 if not initialised else None)
    model.learn_many(make_blobs(rng, unit_axes(4), 20)[0])
    assert model.is_initialised == initialised
    copy = MiniBatchKMeans.from_bytes(model.to_bytes())
    assert copy._get_params() == model._get_params()
    assert (copy.version, copy.is_initialised) == (model.version, model.is_initialised)
    np.testing.assert_array_equal(copy.centroids, model.centroids)
    np.testing.assert_array_equal(copy.counts, model.counts)
    for _ in range(5):  # identical futures, reseeding randomness included
        X, _ = make_blobs(rng, unit_axes(2), 50)
        r1, r2 = model.learn_many(X), copy.learn_many(X)
        assert r1.reseeded == r2.reseeded
    np.testing.assert_array_equal(copy.centroids, model.centroids)
    assert copy.to_bytes() == model.to_bytes()
    with pytest.raises(ValueError):
        MiniBatchKMeans.from_bytes(b"ISKM\x63" + model.to_bytes()[5:])


def test_rejects_mismatched_input():
    model, rng = _separated_model()
    with pytest.raises(ValueError):
        model.learn_many(np.ones((3, DIM + 1)))
    with pytest.raises(ValueError):
        model.apply(MiniBatchKMeans(n_clusters=5).summarise(np.ones((2, DIM))))
    with pytest.raises(ValueError):
        MiniBatchKMeans(time_unit="hours")


def test_zero_weight_points_are_never_seeds_and_zero_rows_are_ignored():
    model = MiniBatchKMeans(n_clusters=2, init_size=4)
    X = np.vstack([np.eye(DIM)[:4], np.eye(DIM)[4:8] * 3, np.zeros((2, DIM))]).astype(np.float32)
    w = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1], dtype=np.float64)
    stats = model.summarise(X, w)
    assert stats.n_points == 8  # the two zero rows have no direction
    np.testing.assert_allclose(np.sort(np.argmax(stats.seeds, axis=1)), [4, 5, 6, 7])
    model.apply(stats)
    assert model.is_initialised
    assert set(np.argmax(model.centroids, axis=1).tolist()) <= {4, 5, 6, 7}
