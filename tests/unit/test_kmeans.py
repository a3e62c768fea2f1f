"""MiniBatchKMeans: init, decay, reseeding, additive statistics, river API, state round trip."""

from __future__ import annotations

import math

import numpy as np
import pytest
from river import metrics, stream

from stream.kmeans import BatchStatistics, MiniBatchKMeans

DIM = 16


def _blobs(rng, directions, n_each, noise=0.05):
    """Points around the given unit directions, shuffled; returns (X, labels)."""
    xs, ys = [], []
    for label, direction in enumerate(directions):
        xs.append(direction + rng.normal(0.0, noise, size=(n_each, direction.shape[0])))
        ys.append(np.full(n_each, label))
    X, y = np.vstack(xs).astype(np.float32), np.concatenate(ys)
    order = rng.permutation(X.shape[0])
    return X[order], y[order]


def _axes(k, dim=DIM):
    return [np.eye(dim)[i] for i in range(k)]


def _cos(a, b):
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
    X, y = _blobs(rng, _axes(4), 30)
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
    first, _ = _blobs(rng, centres, 20, noise=1.0)
    model = MiniBatchKMeans(n_clusters=2, half_life=math.inf, spherical=False, init_size=40, seed=0)
    model.learn_many(first)
    batches = [_blobs(rng, centres, 15, noise=1.0)[0] for _ in range(6)]
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
            X, _ = _blobs(rng, [centre, other], 20, noise=0.02)
            model.learn_many(X)
        j = int(model.predict_many(np.eye(DIM)[1][None, :])[0])
        return _cos(model.centroids[j], np.eye(DIM)[1])

    assert run(half_life=3.0) > 0.99
    assert run(half_life=math.inf) < 0.95


def test_time_unit_points_decays_per_point():
    rng = np.random.default_rng(5)
    X, _ = _blobs(rng, _axes(2), 20)
    model = MiniBatchKMeans(n_clusters=2, half_life=10.0, time_unit="points", seed=0)
    model.learn_many(X)
    before = model.counts
    batch, _ = _blobs(rng, _axes(2), 7)
    stats = model.summarise(batch)
    model.apply(stats)
    a = 0.5 ** (1 / 10.0)
    np.testing.assert_allclose(model.counts, a**14 * before + stats.weights)


def test_starved_cluster_is_reseeded_with_a_stable_id():
    rng = np.random.default_rng(2)
    axes = _axes(3)
    model = MiniBatchKMeans(n_clusters=3, half_life=5.0, seed=0, refine_every=0)  # the reseed rule alone
    X, _ = _blobs(rng, axes, 30)
    model.learn_many(X)
    ids = [int(model.predict_many(a[None, :])[0]) for a in axes]
    assert sorted(ids) == [0, 1, 2]
    reseeded_at = None
    for step in range(60):  # blob 2 disappears
        X, _ = _blobs(rng, axes[:2], 30)
        result = model.learn_many(X)
        if ids[2] in result.reseeded and reseeded_at is None:
            reseeded_at = step
            new_centre = model.centroids[ids[2]]
            # Reseeded from recent points (blobs 0 and 1), not from the vanished blob 2.
            assert max(_cos(new_centre, axes[0]), _cos(new_centre, axes[1])) > 0.9
        assert set(result.reseeded) <= {ids[2]}
    assert reseeded_at is not None and reseeded_at >= 5  # only after a half-life at least
    c = model.centroids
    assert c.shape == (3, DIM) and np.isfinite(c).all()
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1.0, rtol=1e-5)
    # The surviving clusters keep their ids.
    assert _cos(c[ids[0]], axes[0]) > 0.9 and _cos(c[ids[1]], axes[1]) > 0.9
    assert int(model.predict_many(axes[0][None, :])[0]) in {ids[0], ids[2]}


def test_all_clusters_survive_when_data_collapses_to_one_blob():
    rng = np.random.default_rng(4)
    model = MiniBatchKMeans(n_clusters=4, half_life=2.0, seed=1)
    X, _ = _blobs(rng, _axes(4), 30)
    model.learn_many(X)
    last_reseed: dict[int, int] = {}
    for step in range(40):
        for j in model.learn_many(_blobs(rng, _axes(1), 40)[0]).reseeded:
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
    model.learn_many(_blobs(rng, _axes(3), 30)[0])
    model._centroids[2] = model._centroids[0]  # force a duplicate
    model._c32 = model._centroids.astype(np.float32)
    result = model.learn_many(_blobs(rng, _axes(3), 30)[0])
    assert result.reseeded == [2]  # the lighter of the two (it got no points: argmax ties)
    c = model.centroids
    assert _cos(c[0], c[2]) < 0.99


def _separated_model(seed=0):
    rng = np.random.default_rng(seed)
    model = MiniBatchKMeans(n_clusters=4, half_life=20.0, seed=seed)
    model.learn_many(_blobs(rng, _axes(4), 40)[0])
    return model, rng


def test_merged_statistics_equal_the_concatenated_batch():
    model, rng = _separated_model()
    twin = MiniBatchKMeans.from_bytes(model.to_bytes())
    X, _ = _blobs(rng, _axes(4), 60)
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
    X, _ = _blobs(rng, _axes(4), 100)
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
    X, _ = _blobs(rng, _axes(4), 10)
    sims = model.similarities(X)
    assert sims.shape == (40, 4)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    np.testing.assert_allclose(sims, Xn @ model.centroids.T, rtol=1e-5, atol=1e-6)
    assert (np.argmax(sims, axis=1) == model.predict_many(X)).all()
    a, b = model.summarise(X), model.summarise(X, similarities=sims)
    np.testing.assert_allclose(a.sums, b.sums)


def test_learn_one_predict_one_through_river():
    rng = np.random.default_rng(9)
    X, y = _blobs(rng, _axes(3, dim=5), 100)
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
    X, _ = _blobs(rng, _axes(2, dim=3), 20)
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
    model.learn_many(_blobs(rng, _axes(4), 20)[0])
    assert model.is_initialised == initialised
    copy = MiniBatchKMeans.from_bytes(model.to_bytes())
    assert copy._get_params() == model._get_params()
    assert (copy.version, copy.is_initialised) == (model.version, model.is_initialised)
    np.testing.assert_array_equal(copy.centroids, model.centroids)
    np.testing.assert_array_equal(copy.counts, model.counts)
    for _ in range(5):  # identical futures, reseeding randomness included
        X, _ = _blobs(rng, _axes(2), 50)
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


# ---------------------------------------------------------------------------- refinement


def _stuck_model(refine_every, seed=0):
    """Three blobs, but the model starts with two centres in blob 0 and one between blobs 1 and 2."""
    model = MiniBatchKMeans(n_clusters=3, half_life=50.0, seed=seed, refine_every=refine_every, reseed_fraction=0.0)
    axes = _axes(3)
    rng = np.random.default_rng(seed)
    init = np.vstack([
        axes[0] + rng.normal(0, 0.05, (4, DIM)),
        axes[0] + rng.normal(0, 0.05, (4, DIM)) + 0.3 * axes[1],
        np.tile((axes[1] + axes[2]) / np.sqrt(2), (4, 1)) + rng.normal(0, 0.01, (4, DIM)),
    ]).astype(np.float32)
    model.learn_many(init[[0, 4, 8, 1, 5, 9, 2, 6, 10]])  # init_size 9: k-means++ on these points
    return model, axes, rng


def test_refine_escapes_a_local_optimum_and_keeps_ids():
    stuck, axes, rng = _stuck_model(refine_every=0)
    model = MiniBatchKMeans.from_bytes(stuck.to_bytes())
    model.refine_every = 5
    found = {}
    for step in range(40):
        X, _ = _blobs(rng, axes, 40)
        r_stuck, r_model = stuck.learn_many(X), model.learn_many(X)
        assert not r_stuck.refined
        if r_model.refined:
            found.setdefault("first", step)
            assert step % 5 == 4 or model.refine_backoff > 1
    assert "first" in found and model.n_refines_adopted >= 1
    # The refined model separates the three blobs; the stuck one did not.
    refined_ids = {int(model.predict_many(a[None, :])[0]) for a in axes}
    stuck_ids = {int(stuck.predict_many(a[None, :])[0]) for a in axes}
    assert len(refined_ids) == 3 and len(stuck_ids) < 3
    # Ids stay put across later refinements: each blob keeps its cluster.
    before = [int(model.predict_many(a[None, :])[0]) for a in axes]
    for _ in range(30):
        model.learn_many(_blobs(rng, axes, 40)[0])
    assert [int(model.predict_many(a[None, :])[0]) for a in axes] == before
    np.testing.assert_allclose(np.linalg.norm(model.centroids, axis=1), 1.0, rtol=1e-5)
    assert model.counts.sum() > 0 and np.isfinite(model.counts).all()


def test_refine_keeps_matching_ids_when_centres_are_permuted():
    rng = np.random.default_rng(3)
    axes = _axes(4)
    model = MiniBatchKMeans(n_clusters=4, seed=2, refine_every=0)
    for _ in range(20):
        model.learn_many(_blobs(rng, axes, 30)[0])
    ids = [int(model.predict_many(a[None, :])[0]) for a in axes]
    assert sorted(ids) == [0, 1, 2, 3]
    model._centroids = model._centroids + 0.2 * np.ones(DIM) / np.sqrt(DIM)  # knock them off-centre
    model._centroids /= np.linalg.norm(model._centroids, axis=1, keepdims=True)
    adopted, replaced = model.refine()
    assert adopted and replaced == []
    assert [int(model.predict_many(a[None, :])[0]) for a in axes] == ids
    for j, a in zip(ids, axes, strict=True):
        assert _cos(model.centroids[j], a) > 0.99


def test_refine_needs_enough_reservoir_points_and_can_be_disabled():
    rng = np.random.default_rng(1)
    model = MiniBatchKMeans(n_clusters=8, seed=0, refine_every=1, reservoir_size=64)
    model.learn_many(_blobs(rng, _axes(8), 10)[0])
    for _ in range(5):
        assert not model.learn_many(_blobs(rng, _axes(8), 10)[0]).refined
    assert model.n_refines == 0  # 64 points < 16 per cluster
    with pytest.raises(ValueError):
        MiniBatchKMeans(refine_iterations=0)


def test_refine_backs_off_while_not_adopted():
    rng = np.random.default_rng(5)
    axes = _axes(3)
    model = MiniBatchKMeans(n_clusters=3, seed=0, refine_every=2, refine_backoff=4, refine_min_gain=0.5)
    runs = []
    for step in range(40):
        before = model.n_refines
        model.learn_many(_blobs(rng, axes, 40)[0])
        if model.n_refines > before:
            runs.append(step)
    assert model.n_refines_adopted == 0  # a 50% gain is never reached on clean blobs
    gaps = np.diff(runs).tolist()
    # young: after 1 batch, then every refine_every (2); not adopted: 4, then capped at 2 * 4
    assert gaps[:3] == [2, 4, 8] and set(gaps[3:]) == {8}, gaps


def test_replaying_statistics_is_bit_exact_across_a_state_round_trip():
    """What the service relies on: logged statistics replayed on a restored model give the same model."""
    rng = np.random.default_rng(11)
    axes = _axes(4)
    a = MiniBatchKMeans(n_clusters=4, seed=7, refine_every=3)
    producer = MiniBatchKMeans(n_clusters=4, seed=7, refine_every=0)  # summarises like a worker would
    stats = []
    for step in range(30):
        X, _ = _blobs(rng, axes[: 2 + step % 3], 25)
        s = a.summarise(X) if a.is_initialised else producer.summarise(X)
        stats.append(BatchStatistics.from_bytes(s.to_bytes()))
    b = MiniBatchKMeans(n_clusters=4, seed=7, refine_every=3)
    results_a = []
    for i, s in enumerate(stats):
        results_a.append(a.apply(s))
        if i == 13:
            a = MiniBatchKMeans.from_bytes(a.to_bytes())  # restart mid-way
    results_b = [b.apply(s) for s in stats]
    assert sum(r.refined for r in results_b) >= 2
    assert [r.refined for r in results_a] == [r.refined for r in results_b]
    assert [r.reseeded for r in results_a] == [r.reseeded for r in results_b]
    np.testing.assert_array_equal(a._centroids, b._centroids)
    np.testing.assert_array_equal(a._counts, b._counts)
    assert a.to_bytes() == b.to_bytes()


def test_reservoir_keeps_one_current_row_per_point_id():
    """Named points (users) that move: the reservoir holds each id once, at its latest position."""
    from stream.kmeans import point_ids

    rng = np.random.default_rng(5)
    km = MiniBatchKMeans(n_clusters=2, seed=1, reservoir_size=64, seeds_per_batch=64, refine_every=0)
    names = [f"user-{i}" for i in range(20)]
    ids = point_ids(names)
    X, _ = _blobs(rng, _axes(2), 10)
    km.learn_many(X)  # initialise from anonymous points (id 0)
    for step in range(5):
        Y = X + rng.normal(0.0, 0.01, size=X.shape).astype(np.float32) * (step + 1)
        stats = km.summarise(Y, point_ids=ids)
        km.apply(stats)
        last = Y / np.linalg.norm(Y, axis=1, keepdims=True)
    held = km._reservoir_ids
    named = held[held != 0]
    assert named.shape[0] == np.unique(named).shape[0] == len(names), "each id held once"
    for i, name_id in enumerate(ids):
        row = int(np.flatnonzero(held == name_id)[0])
        np.testing.assert_allclose(km._reservoir[row], last[i], atol=1e-6)


def test_point_ids_travel_through_merge_and_bytes():
    from stream.kmeans import point_ids

    rng = np.random.default_rng(6)
    km = MiniBatchKMeans(n_clusters=2, seed=1, reservoir_size=64, seeds_per_batch=4, refine_every=0)
    X, _ = _blobs(rng, _axes(2), 20)
    ids = point_ids([f"u{i}" for i in range(40)])
    km.apply(km.summarise(X, point_ids=ids))
    a = km.summarise(X[:20], point_ids=ids[:20])
    b = km.summarise(X[20:], point_ids=ids[20:])
    held = set(km._reservoir_ids.tolist()) - {0}
    assert held, "the first batch's sample is in the reservoir"
    expected = (set(ids[:20].tolist()) & held) - set(a.seed_ids.tolist())
    assert set(a.refresh_ids.tolist()) == expected, "rows the reservoir holds come back as refreshes"
    merged = a + b
    back = BatchStatistics.from_bytes(merged.to_bytes())
    for name in ("seeds", "seed_keys", "seed_ids", "refresh", "refresh_ids"):
        np.testing.assert_array_equal(getattr(back, name), getattr(merged, name))
    twin = MiniBatchKMeans.from_bytes(km.to_bytes())
    km.apply(merged)
    twin.apply(back)
    np.testing.assert_array_equal(km._reservoir_ids, twin._reservoir_ids)
    np.testing.assert_array_equal(km._reservoir, twin._reservoir)
    assert km.to_bytes() == twin.to_bytes()


def test_statistics_without_point_ids_decode_as_anonymous():
    """Statistics written before point ids existed (no trailing fields) still decode."""
    import msgspec

    from stream import kmeans as mod

    rng = np.random.default_rng(7)
    km = MiniBatchKMeans(n_clusters=2, seed=1, refine_every=0)
    X, _ = _blobs(rng, _axes(2), 10)
    stats = km.summarise(X)
    wire = msgspec.msgpack.decode(stats.to_bytes()[5:])
    old = mod._STATS_MAGIC + bytes([mod._FORMAT_VERSION]) + msgspec.msgpack.encode(wire[:10])
    back = BatchStatistics.from_bytes(old)
    assert back.seed_ids.shape == (back.seeds.shape[0],) and not back.seed_ids.any()
    assert back.refresh.shape == (0, DIM) and back.refresh_ids.shape == (0,)
