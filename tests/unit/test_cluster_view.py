"""Unit tests of stream.cluster_view: the cluster table, sizes over time and the 2-D projection."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stream.cluster_view import (
    UserRecord,
    build_view,
    latest_assignments,
    place_users,
    project_centroids,
    sizes_over_time,
    weights_over_time,
)
from stream.records import AssignmentChange, CentroidSnapshot, ClusterScore

T0 = 1_700_000_000_000


def snap(
    cluster: int, *, vector=None, weight=1.0, terms=("a", "b"), version=1, ts=T0, d=8
) -> CentroidSnapshot:
    if vector is None:
        vector = np.eye(d)[cluster % d].tolist()
    return CentroidSnapshot(
        cluster=cluster,
        vector=list(vector),
        weight=weight,
        label_terms=list(terms),
        model_version=version,
        emit_ts_ms=ts,
    )


def change(user: str, cluster: int, ts: int, previous: int | None = None, score: float = 0.8) -> UserRecord:
    body = AssignmentChange(
        user_id=user,
        cluster=cluster,
        previous_cluster=previous,
        score=score,
        top=[ClusterScore(cluster=cluster, score=score)],
        model_version=1,
        event_ts_ms=ts - 5,
        emit_ts_ms=ts,
    )
    return UserRecord(user, body, ts + 1)


def tombstone(user: str, ts: int) -> UserRecord:
    return UserRecord(user, None, ts)


def random_history(rng: np.random.Generator, users: int, records: int, clusters: int) -> list[UserRecord]:
    """Log order agrees with time (as it does for one producer), with ties."""
    out = []
    times = np.sort(rng.integers(0, 100_000, size=records))
    for i in range(records):
        user = f"u{rng.integers(users)}"
        ts = T0 + int(times[i])
        if rng.random() < 0.1:
            out.append(tombstone(user, ts))
        else:
            out.append(change(user, int(rng.integers(clusters)), ts, score=float(rng.random())))
    return out


def test_sizes_count_each_users_latest_assignment_only():
    history = [
        change("a", 0, T0),
        change("b", 0, T0 + 1),
        change("c", 1, T0 + 2),
        change("a", 2, T0 + 3),
        change("b", 2, T0 + 4),
        change("b", 1, T0 + 5),
    ]
    view = build_view([snap(0), snap(1), snap(2)], history)
    assert {r.cluster: r.users for r in view.rows} == {0: 0, 1: 2, 2: 1}
    assert view.total_users == 3
    assert sum(r.users for r in view.rows) == view.total_users


def test_tombstone_removes_user_and_a_later_change_brings_it_back():
    history = [change("a", 0, T0), change("b", 0, T0 + 1), tombstone("a", T0 + 2)]
    view = build_view([snap(0)], history)
    assert view.total_users == 1 and "a" not in view.assignments
    assert view.rows[0].users == 1

    view = build_view([snap(0)], [*history, change("a", 0, T0 + 3)])
    assert view.total_users == 2 and view.rows[0].users == 2


def test_tombstone_of_unknown_user_is_harmless():
    view = build_view([snap(0)], [tombstone("ghost", T0), change("a", 0, T0 + 1)])
    assert view.total_users == 1


def test_latest_snapshot_per_cluster_wins_in_log_order_not_by_version():
    # Log order is the truth of a compacted topic: the later record wins even with a lower version.
    snaps = [
        snap(0, weight=1.0, terms=("old",), version=5, ts=T0),
        snap(1, weight=7.0, terms=("one",), version=5, ts=T0),
        snap(0, weight=3.0, terms=("new", "terms"), version=4, ts=T0 + 10),
    ]
    view = build_view(snaps, [])
    row0 = view.rows[0]
    assert (row0.weight, row0.label_terms, row0.model_version) == (3.0, ("new", "terms"), 4)
    assert view.model_version == 5
    assert view.last_centroid_ms == T0 + 10


def test_cluster_with_users_but_no_centroid_still_has_a_row():
    view = build_view([snap(0)], [change("a", 0, T0), change("b", 5, T0 + 1)])
    rows = {r.cluster: r for r in view.rows}
    assert rows[5].users == 1 and rows[5].weight is None and rows[5].label_terms == ()


def test_last_change_counts_moves_out_of_the_cluster():
    history = [change("a", 0, T0 + 100), change("a", 1, T0 + 500, previous=0)]
    view = build_view([snap(0, ts=T0), snap(1, ts=T0)], history)
    rows = {r.cluster: r for r in view.rows}
    assert rows[0].last_change_ms == T0 + 500  # "a" left cluster 0 then
    assert rows[1].last_change_ms == T0 + 500
    view = build_view([snap(0, ts=T0), snap(1, ts=T0)], [*history, tombstone("a", T0 + 900)])
    rows = {r.cluster: r for r in view.rows}
    assert rows[1].last_change_ms == T0 + 900 and rows[0].last_change_ms == T0 + 500


def test_latest_assignments_matches_a_plain_replay():
    rng = np.random.default_rng(3)
    history = random_history(rng, users=40, records=400, clusters=5)
    expected: dict[str, int] = {}
    for rec in history:
        if rec.change is None:
            expected.pop(rec.user_id, None)
        else:
            expected[rec.user_id] = rec.change.cluster
    got = {u: c.cluster for u, c in latest_assignments(history).items()}
    assert got == expected


def test_to_dict_is_json_and_carries_iso_times():
    view = build_view([snap(0, ts=1_700_000_000_000)], [change("a", 0, 1_700_000_000_000)])
    payload = json.loads(json.dumps(view.to_dict()))
    assert payload["totals"]["users"] == 1
    assert payload["clusters"][0]["last_change"] == "2023-11-14T22:13:20Z"


def _sizes_at(history: list[UserRecord], t: float) -> dict[int, int]:
    current: dict[str, int] = {}
    for rec in sorted(history, key=lambda r: r.time_ms):
        if rec.time_ms > t:
            break
        if rec.change is None:
            current.pop(rec.user_id, None)
        else:
            current[rec.user_id] = rec.change.cluster
    counts: dict[int, int] = {}
    for c in current.values():
        counts[c] = counts.get(c, 0) + 1
    return counts


@pytest.mark.parametrize("buckets", [1, 7, 40])
def test_sizes_over_time_matches_recount_at_each_sample(buckets):
    rng = np.random.default_rng(buckets)
    history = random_history(rng, users=60, records=500, clusters=4)
    series = sizes_over_time(history, buckets=buckets)
    assert series.sizes.shape == (buckets, len(series.clusters))
    assert np.all(np.diff(series.times_ms) > 0)
    for i, t in enumerate(series.times_ms):
        expected = _sizes_at(history, t)
        got = {c: int(series.sizes[i, j]) for j, c in enumerate(series.clusters) if series.sizes[i, j]}
        assert got == expected
    # the last sample is the state after everything: the table's sizes
    view = build_view([], history)
    last = {c: int(series.sizes[-1, j]) for j, c in enumerate(series.clusters) if series.sizes[-1, j]}
    assert last == {r.cluster: r.users for r in view.rows if r.users}


def test_sizes_over_time_edge_cases():
    empty = sizes_over_time([])
    assert empty.sizes.shape == (0, 0)
    same_time = sizes_over_time([change("a", 1, T0), change("b", 1, T0)], buckets=10)
    assert same_time.sizes.tolist() == [[2]]
    with pytest.raises(ValueError):
        sizes_over_time([change("a", 0, T0)], buckets=0)


def test_weights_over_time_sorted_per_cluster():
    snaps = [snap(1, weight=2.0, ts=T0 + 20), snap(0, weight=1.0, ts=T0), snap(1, weight=1.5, ts=T0 + 10)]
    series = weights_over_time(snaps)
    assert list(series) == [0, 1]
    assert series[1][0].tolist() == [T0 + 10, T0 + 20] and series[1][1].tolist() == [1.5, 2.0]


def test_projection_shape_and_variance_shares():
    rng = np.random.default_rng(0)
    centroids = {c: snap(c, vector=rng.normal(size=384)) for c in (3, 1, 7, 9, 2)}
    proj = project_centroids(centroids)
    assert proj.clusters == [1, 2, 3, 7, 9]
    assert proj.points.shape == (5, 2)
    assert np.all(proj.explained >= 0) and proj.explained.sum() <= 1 + 1e-9
    assert proj.explained[0] >= proj.explained[1]
    np.testing.assert_allclose(proj.points.mean(axis=0), 0, atol=1e-9)


def test_projection_keeps_distances_of_centroids_lying_in_a_plane():
    rng = np.random.default_rng(1)
    plane = rng.normal(size=(6, 2)) * [3.0, 1.0]
    basis, _ = np.linalg.qr(rng.normal(size=(384, 2)))  # a random 2-D plane in 384-D
    vectors = plane @ basis.T + rng.normal(size=384)
    proj = project_centroids({c: snap(c, vector=v) for c, v in enumerate(vectors)})

    def dists(p):
        return np.sqrt(((p[:, None] - p[None]) ** 2).sum(-1))

    np.testing.assert_allclose(dists(proj.points), dists(plane), atol=1e-8)
    np.testing.assert_allclose(proj.explained.sum(), 1.0, atol=1e-9)


def test_projection_small_cases_and_determinism():
    assert project_centroids({}).points.shape == (0, 2)
    one = project_centroids({4: snap(4)})
    assert one.points.tolist() == [[0.0, 0.0]]
    two = project_centroids({0: snap(0), 1: snap(1)})
    assert two.points.shape == (2, 2)
    # two centroids span one axis: the second coordinate is zero up to rounding (SVD/BLAS builds differ,
    # e.g. [-5.55e-17, 5.55e-17]), and the first keeps their distance
    np.testing.assert_allclose(two.points[:, 1], 0.0, atol=1e-9)
    gap = np.linalg.norm(np.subtract(snap(0).vector, snap(1).vector))
    np.testing.assert_allclose(abs(two.points[0, 0] - two.points[1, 0]), gap, rtol=1e-9)
    rng = np.random.default_rng(2)
    cents = {c: snap(c, vector=rng.normal(size=16)) for c in range(4)}
    np.testing.assert_array_equal(project_centroids(cents).points, project_centroids(dict(cents)).points)
    with pytest.raises(ValueError):
        project_centroids({0: snap(0, vector=[1.0, 0.0]), 1: snap(1, vector=[1.0])})


def test_place_users_samples_and_jitters_by_score():
    proj = project_centroids({0: snap(0), 1: snap(1), 2: snap(2)})
    assignments = {}
    for i in range(600):
        cluster = i % 4  # cluster 3 has no centroid: left off the map
        score = 0.99 if i % 2 else 0.2
        assignments[f"u{i}"] = change(f"u{i}", cluster, T0, score=score).change
    placed = place_users(assignments, proj, sample=200, seed=5)
    assert len(placed.user_ids) == 200 == len(set(placed.user_ids))
    assert placed.points.shape == (200, 2)
    assert 3 not in set(placed.clusters.tolist())
    assert all(assignments[u].cluster == c for u, c in zip(placed.user_ids, placed.clusters, strict=True))

    everyone = place_users(assignments, proj, sample=10_000, seed=5)
    assert len(everyone.user_ids) == 450
    centre = {c: proj.points[i] for i, c in enumerate(proj.clusters)}
    offsets = np.linalg.norm(everyone.points - np.array([centre[c] for c in everyone.clusters]), axis=1)
    confident = np.array([assignments[u].score > 0.9 for u in everyone.user_ids])
    assert offsets[confident].mean() * 4 < offsets[~confident].mean()

    again = place_users(assignments, proj, sample=200, seed=5)
    assert again.user_ids == placed.user_ids and np.array_equal(again.points, placed.points)
    assert place_users(assignments, proj, sample=0).user_ids == []
