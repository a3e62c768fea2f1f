"""AssignmentTracker: first emission, hysteresis, top-k, rechecks, forget/restore."""

from __future__ import annotations

import numpy as np
import pytest

from stream.assignments import AssignmentTracker
from stream.records import AssignmentChange, decode_change, encode_record


def _one(tracker, user, row, version=1, event_ts=100, emit_ts=200):
    return tracker.assess([user], None, np.array([row], dtype=np.float32), version, event_ts, emit_ts)


def test_first_emission_has_full_record():
    tracker = AssignmentTracker(hysteresis=0.02, top_k=3)
    sims = np.array([[0.1, 0.7, 0.3, 0.5], [0.9, 0.2, 0.1, 0.0]], dtype=np.float32)
    changes = tracker.assess(["a", "b"], None, sims, 4, np.array([10, 20]), 99)
    assert [c.user_id for c in changes] == ["a", "b"]
    a = changes[0]
    assert isinstance(a, AssignmentChange)
    assert (a.cluster, a.previous_cluster, a.model_version, a.event_ts_ms, a.emit_ts_ms) == (
        1,
        None,
        4,
        10,
        99,
    )
    assert a.score == pytest.approx(0.7, abs=1e-6) and isinstance(a.score, float)
    assert [(t.cluster, t.score) for t in a.top] == [(1, 0.7), (3, 0.5), (2, 0.3)]
    assert changes[1].event_ts_ms == 20
    assert decode_change(encode_record(a)) == a
    assert tracker.last("a") == (1, 0.7) and len(tracker) == 2


def test_hysteresis_prevents_flapping_between_two_close_clusters():
    tracker = AssignmentTracker(hysteresis=0.05)
    assert len(_one(tracker, "u", [0.60, 0.58])) == 1
    rng = np.random.default_rng(0)
    emitted = 0
    for _ in range(200):  # best cluster wobbles between 0 and 1, margin always < 0.05
        jitter = rng.uniform(-0.02, 0.02)
        emitted += len(_one(tracker, "u", [0.59 + jitter, 0.59 - jitter]))
    assert emitted == 0
    assert tracker.last("u")[0] == 0
    changes = _one(tracker, "u", [0.50, 0.56])  # margin 0.06 > 0.05
    assert len(changes) == 1 and (changes[0].cluster, changes[0].previous_cluster) == (1, 0)
    assert _one(tracker, "u", [0.54, 0.50]) == []  # back, but only by 0.04
    assert len(_one(tracker, "u", [0.58, 0.50])) == 1


def test_same_best_cluster_never_re_emits():
    tracker = AssignmentTracker(hysteresis=0.0)
    _one(tracker, "u", [0.2, 0.9])
    assert _one(tracker, "u", [0.1, 0.3]) == []
    assert tracker.last("u") == (1, 0.9)  # the last *emitted* score


def test_assess_from_centroids_and_skips_zero_profiles():
    tracker = AssignmentTracker(top_k=2)
    centroids = np.array([[1, 0, 0], [0, 2, 0], [0, 0, 1]], dtype=np.float32)  # not normalised
    directions = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.6, 0.0, 0.8]], dtype=np.float32)
    changes = tracker.assess(
        ["x", "zero", "y"], directions, centroids=centroids, model_version=2, emit_ts_ms=5
    )
    assert [(c.user_id, c.cluster) for c in changes] == [("x", 1), ("y", 2)]
    assert changes[0].score == pytest.approx(1.0)
    assert [t.cluster for t in changes[1].top] == [2, 0]
    assert "zero" not in tracker
    # centroids also accepted positionally when the shape tells them apart (k != number of users)
    t2 = AssignmentTracker(top_k=2)
    again = t2.assess(["x", "y"], directions[[0, 2]], centroids, 2, 0, 5)
    assert [(c.user_id, c.cluster) for c in again] == [("x", 1), ("y", 2)]
    with pytest.raises(ValueError):
        tracker.assess(["x"], None)


def _populated(sizes):
    tracker = AssignmentTracker()
    for j, n in enumerate(sizes):
        for i in range(n):
            tracker.restore(f"{'abcdefgh'[j]}{i}", j, 0.5)
    return tracker


def test_recheck_prioritises_moved_clusters_within_budget():
    tracker = _populated([10, 4, 3])
    assert tracker.recheck_candidates(np.zeros(3), budget=100) == []
    assert tracker.recheck_candidates(np.array([0.01, 0.04, 0.0]), budget=0) == []
    first = tracker.recheck_candidates(np.zeros(3), budget=5)  # the movement above is still owed
    assert len(first) == 5
    assert sorted(first[:4]) == ["b0", "b1", "b2", "b3"]  # larger movement first, and its larger share
    assert first[4].startswith("a")
    assert not any(u.startswith("c") for u in first)  # cluster 2 did not move
    # Cluster 1 is fully rechecked: nothing owed; cluster 0 still owes the users it has not visited.
    rest = tracker.recheck_candidates(np.zeros(3), budget=100)
    assert set(rest) >= {f"a{i}" for i in range(10)} - {first[4]}
    assert len(rest) <= 10 and all(u.startswith("a") for u in rest)
    assert tracker.recheck_candidates(np.zeros(3), budget=100) == []


def test_recheck_cursor_cycles_through_everyone():
    tracker = _populated([10])
    seen: list[str] = []
    for _ in range(10):
        seen += tracker.recheck_candidates(np.array([1.0]), budget=3)
    assert len(seen) == 30
    assert set(seen) == {f"a{i}" for i in range(10)}
    assert max(seen.count(u) for u in set(seen)) - min(seen.count(u) for u in set(seen)) <= 1


def test_small_movement_clusters_get_their_turn():
    tracker = _populated([50, 50, 50, 50])
    picked = tracker.recheck_candidates(np.array([1.0, 0.001, 0.001, 0.001]), budget=20)
    assert len(picked) == 20
    assert picked[0].startswith("a") and sum(u.startswith("a") for u in picked) >= 15
    later: set[str] = set()
    for _ in range(10):  # cluster 0 keeps moving; the small movers are still visited
        later.update(u[0] for u in tracker.recheck_candidates(np.array([0.01, 0.0, 0.0, 0.0]), budget=20))
    assert {"b", "c", "d"} <= later


def test_forget_restore_and_cluster_sizes():
    tracker = AssignmentTracker()
    tracker.restore("a", 2, 0.8)
    tracker.restore("b", 2, 0.7)
    tracker.restore("c", 0, 0.9)
    np.testing.assert_array_equal(tracker.cluster_sizes(4), [1, 0, 2, 0])
    tracker.restore("b", 3, 0.6)  # moved
    np.testing.assert_array_equal(tracker.cluster_sizes(4), [1, 0, 1, 1])
    assert tracker.forget("a") is True and tracker.forget("a") is False
    assert tracker.last("a") is None
    np.testing.assert_array_equal(tracker.cluster_sizes(4), [1, 0, 0, 1])
    assert sorted(tracker.recheck_candidates(np.ones(4), budget=10)) == ["b", "c"]
    # A forgotten user is new again.
    changes = _one(tracker, "a", [0.1, 0.2, 0.9, 0.0])
    assert changes[0].previous_cluster is None


def test_state_round_trip():
    tracker = _populated([5, 3, 0, 2])
    _one(tracker, "new", [0.1, 0.2, 0.3, 0.9])
    tracker.recheck_candidates(np.array([0.5, 0.1, 0.0, 0.2]), budget=3)
    copy = AssignmentTracker.from_bytes(tracker.to_bytes())
    assert (copy.hysteresis, copy.top_k, len(copy)) == (tracker.hysteresis, tracker.top_k, len(tracker))
    assert copy.last("new") == tracker.last("new") == (3, 0.9)
    np.testing.assert_array_equal(copy.cluster_sizes(4), tracker.cluster_sizes(4))
    for _ in range(3):  # same cursors and outstanding movement: same future
        assert copy.recheck_candidates(np.zeros(4), budget=2) == tracker.recheck_candidates(
            np.zeros(4), budget=2
        )
    assert copy.to_bytes() == tracker.to_bytes()
    with pytest.raises(ValueError):
        AssignmentTracker.from_bytes(b"nope" + tracker.to_bytes()[4:])


def test_maturity_margin_holds_young_profiles_and_frees_mature_ones():
    tracker = AssignmentTracker(hysteresis=0.02, maturity_margin=0.2)
    sims = np.array([[0.6, 0.1], [0.6, 0.1]], dtype=np.float32)
    assert len(tracker.assess(["young", "old"], None, sims, 1, 0, 0, maturity=np.array([1.0, 1.0]))) == 2
    gap = np.array([[0.5, 0.6], [0.5, 0.6]], dtype=np.float32)  # cluster 1 wins by 0.1
    changes = tracker.assess(["young", "old"], None, gap, 2, 0, 0, maturity=np.array([1.0, 100.0]))
    # young: margin 0.02 + 0.2 = 0.22 > 0.1; old: 0.02 + 0.02 = 0.04 < 0.1
    assert [c.user_id for c in changes] == ["old"]
    assert tracker.last("young")[0] == 0
    # Without maturity every user counts as mature.
    assert [c.user_id for c in tracker.assess(["young"], None, gap[:1], 3, 0, 0)] == ["young"]
    with pytest.raises(ValueError):
        tracker.assess(["a", "b"], None, gap, 4, 0, 0, maturity=np.ones(3))


def test_confirmations_need_consecutive_wins():
    tracker = AssignmentTracker(hysteresis=0.02, confirmations=2)
    assert len(_one(tracker, "u", [0.9, 0.1])) == 1  # a first assignment is never delayed
    assert _one(tracker, "u", [0.3, 0.8]) == []  # first win
    assert _one(tracker, "u", [0.8, 0.3]) == []  # streak broken
    assert _one(tracker, "u", [0.3, 0.8]) == []  # first win again
    copy = AssignmentTracker.from_bytes(tracker.to_bytes())  # the streak survives a restart
    assert copy.confirmations == 2 and copy.to_bytes() == tracker.to_bytes()
    for t in (tracker, copy):
        changes = _one(t, "u", [0.3, 0.8])
        assert len(changes) == 1 and (changes[0].cluster, changes[0].previous_cluster) == (1, 0)
    tracker.forget("u")
    assert tracker._pending == {}
    with pytest.raises(ValueError):
        AssignmentTracker(confirmations=0)


def test_return_margin_damps_flapping_but_not_a_real_move():
    tracker = AssignmentTracker(hysteresis=0.02, top_k=2, return_margin=0.1)
    assess = lambda sims: tracker.assess(["u"], None, np.array([sims]), 1, 0, 0)  # noqa: E731
    assert [c.cluster for c in assess([0.9, 0.1, 0.0])] == [0]
    assert [c.cluster for c in assess([0.5, 0.6, 0.0])] == [1]  # 0 -> 1: hysteresis only
    assert assess([0.6, 0.5, 0.0]) == []  # back to 0 needs 0.02 + 0.1
    assert assess([0.64, 0.55, 0.0]) == []
    assert [c.cluster for c in assess([0.7, 0.55, 0.2])] == [0]  # wins by 0.15: moves back
    assert [c.cluster for c in assess([0.5, 0.2, 0.55])] == [2]  # onward to a new cluster: hysteresis only


def test_return_margin_survives_state_and_restore():
    tracker = AssignmentTracker(return_margin=0.1)
    tracker.assess(["u"], None, np.array([[0.9, 0.1]]), 1, 0, 0)
    tracker.assess(["u"], None, np.array([[0.3, 0.9]]), 1, 0, 0)
    twin = AssignmentTracker.from_bytes(tracker.to_bytes())
    restored = AssignmentTracker(return_margin=0.1)
    restored.restore("u", 1, 0.9, previous_cluster=0)
    for t in (tracker, twin, restored):
        assert t.assess(["u"], None, np.array([[0.6, 0.55]]), 1, 0, 0) == [], "held: a return needs the extra margin"
        assert [c.cluster for c in t.assess(["u"], None, np.array([[0.8, 0.55]]), 1, 0, 0)] == [0]
