"""MiniBatchKMeans refinement (Lloyd, k-means++ restarts, id matching, schedule) and its reservoir of points."""

from __future__ import annotations

import numpy as np
import pytest
from test_kmeans import DIM, cosine, make_blobs, unit_axes

from stream.kmeans import BatchStatistics, MiniBatchKMeans, point_ids


def _stuck_model(refine_every, seed=0):
    """Three blobs, but the model starts with two centres in blob 0 and one between blobs 1 and 2."""
    model = MiniBatchKMeans(n_clusters=3, half_life=50.0, seed=seed, refine_every=refine_every, reseed_fraction=0.0)
    axes = unit_axes(3)
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
        X, _ = make_blobs(rng, axes, 40)
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
        model.learn_many(make_blobs(rng, axes, 40)[0])
    assert [int(model.predict_many(a[None, :])[0]) for a in axes] == before
    np.testing.assert_allclose(np.linalg.norm(model.centroids, axis=1), 1.0, rtol=1e-5)
    assert model.counts.sum() > 0 and np.isfinite(model.counts).all()


def test_refine_keeps_matching_ids_when_centres_are_permuted():
    rng = np.random.default_rng(3)
    axes = unit_axes(4)
    model = MiniBatchKMeans(n_clusters=4, seed=2, refine_every=0)
    for _ in range(20):
        model.learn_many(make_blobs(rng, axes, 30)[0])
    ids = [int(model.predict_many(a[None, :])[0]) for a in axes]
    assert sorted(ids) == [0, 1, 2, 3]
    model._centroids = model._centroids + 0.2 * np.ones(DIM) / np.sqrt(DIM)  # knock them off-centre
    model._centroids /= np.linalg.norm(model._centroids, axis=1, keepdims=True)
    adopted, replaced = model.refine()
    assert adopted and replaced == []
    assert [int(model.predict_many(a[None, :])[0]) for a in axes] == ids
    for j, a in zip(ids, axes, strict=True):
        assert cosine(model.centroids[j], a) > 0.99


def test_refine_needs_enough_reservoir_points_and_can_be_disabled():
    rng = np.random.default_rng(1)
    model = MiniBatchKMeans(n_clusters=8, seed=0, refine_every=1, reservoir_size=64)
    model.learn_many(make_blobs(rng, unit_axes(8), 10)[0])
    for _ in range(5):
        assert not model.learn_many(make_blobs(rng, unit_axes(8), 10)[0]).refined
    assert model.n_refines == 0  # 64 points < 16 per cluster
    with pytest.raises(ValueError):
        MiniBatchKMeans(refine_iterations=0)


def test_refine_backs_off_while_not_adopted():
    rng = np.random.default_rng(5)
    axes = unit_axes(3)
    model = MiniBatchKMeans(n_clusters=3, seed=0, refine_every=2, refine_backoff=4, refine_min_gain=0.5)
    runs = []
    for step in range(40):
        before = model.n_refines
        model.learn_many(make_blobs(rng, axes, 40)[0])
        if model.n_refines > before:
            runs.append(step)
    assert model.n_refines_adopted == 0  # a 50% gain is never reached on clean blobs
    gaps = np.diff(runs).tolist()
    # young: after 1 batch, then every refine_every (2); not adopted: 4, then capped at 2 * 4
    assert gaps[:3] == [2, 4, 8] and set(gaps[3:]) == {8}, gaps


def test_reservoir_keeps_one_current_row_per_point_id():
    """Named points (users) that move: the reservoir holds each id once, at its latest position."""
    rng = np.random.default_rng(5)
    km = MiniBatchKMeans(n_clusters=2, seed=1, reservoir_size=64, seeds_per_batch=64, refine_every=0)
    names = [f"user-{i}" for i in range(20)]
    ids = point_ids(names)
    X, _ = make_blobs(rng, unit_axes(2), 10)
    km.learn_many(X)  # initialise from anonymous points (id 0)
    for step in range(5):
        Y = X + rng.normal(0.0, 0.01, size=X.shape).astype(np.float32) * (step + 1)
        stats = km.summarise(Y, point_ids=ids)
        km.apply(stats)
        last = Y / np.linalg.norm(Y, axis=1, keepdims=True)
    held = km._reservoir.ids
    named = held[held != 0]
    assert named.shape[0] == np.unique(named).shape[0] == len(names), "each id held once"
    for i, name_id in enumerate(ids):
        row = int(np.flatnonzero(held == name_id)[0])
        np.testing.assert_allclose(km._reservoir.points[row], last[i], atol=1e-6)


def test_point_ids_travel_through_merge_and_bytes():
    rng = np.random.default_rng(6)
    km = MiniBatchKMeans(n_clusters=2, seed=1, reservoir_size=64, seeds_per_batch=4, refine_every=0)
    X, _ = make_blobs(rng, unit_axes(2), 20)
    ids = point_ids([f"u{i}" for i in range(40)])
    km.apply(km.summarise(X, point_ids=ids))
    a = km.summarise(X[:20], point_ids=ids[:20])
    b = km.summarise(X[20:], point_ids=ids[20:])
    held = set(km._reservoir.ids.tolist()) - {0}
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
    np.testing.assert_array_equal(km._reservoir.ids, twin._reservoir.ids)
    np.testing.assert_array_equal(km._reservoir.points, twin._reservoir.points)
    assert km.to_bytes() == twin.to_bytes()


def test_kmeans_plus_plus_draws_as_generator_choice_does():
    """Unweighted with one candidate a step it is plain k-means++, drawing what ``Generator.choice(p=...)`` draws."""
    from stream.kmeans.refinement import kmeans_plus_plus

    for seed in range(20):
        points = np.random.default_rng(100 + seed).normal(size=(50, 4))
        ours, reference = np.random.default_rng(seed), np.random.default_rng(seed)
        chosen = [int(reference.integers(50))]
        d2 = ((points - points[chosen[0]]) ** 2).sum(axis=1)
        for _ in range(4):
            chosen.append(int(reference.choice(50, p=d2 / d2.sum())))
            d2 = np.minimum(d2, ((points - points[chosen[-1]]) ** 2).sum(axis=1))
        np.testing.assert_array_equal(kmeans_plus_plus(points, 5, ours), points[chosen])
        assert ours.random() == reference.random(), "the same number of draws"


def test_weighted_kmeans_plus_plus_never_picks_a_weightless_point():
    from stream.kmeans.refinement import kmeans_plus_plus

    rng = np.random.default_rng(0)
    points = rng.normal(size=(40, 3)).astype(np.float32)
    weights = np.where(np.arange(40) % 2 == 0, 1.0, 0.0).astype(np.float32)
    for _ in range(10):
        picked = kmeans_plus_plus(points, 6, rng, weights=weights, trials=3)
        rows = [int(np.flatnonzero((points == p).all(axis=1))[0]) for p in picked]
        assert all(r % 2 == 0 for r in rows) and len(set(rows)) == 6
