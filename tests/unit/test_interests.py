"""Interest mixes: exact out-of-order folding, decay, the max_interests bound, model changes,
changelog restore (and old records), and what the tracker publishes (one record per set change,
none for wiggles inside the hysteresis)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from jsonschema import Draft202012Validator

from stream.assignments import AssignmentTracker
from stream.interests import InterestMixes, interest_set
from stream.pipeline import Pipeline
from stream.profiles import ProfileStore, profile_from_bytes, profile_record_from_bytes, profile_to_bytes
from stream.records import decode_change, encode_record
from stream.settings import ClusteringSettings
from stream.simulation import simulate
from stream.worker import SourceRecord
from tests.unit.test_worker import TopicEncoder

HALF_LIFE_S = 30.0
SCHEMA = Path(__file__).resolve().parents[2] / "deploy" / "schemas" / "assignment-change.schema.json"
# A profile record written by the code before interest mixes (codec version 1):
# profile_to_bytes([0.5, -1.25, 3.0], 1_700_000_000_123, 2.75).
OLD_PROFILE_RECORD = bytes.fromhex(
    "495350460101030000007b68e5cf8b01000000000000000006400000003f0000a0bf00004040"
)


def _closed_form(events, half_life_s=HALF_LIFE_S):
    """w_c = sum over the events of c of w_i 2^(-(t_ref - t_i)/h), mass = the sum over all; t_ref = max t_i."""
    t_ref = max(t for t, _, _ in events)
    weights: dict[int, float] = {}
    mass = 0.0
    for t, c, w in events:
        f = w * 2.0 ** (-(t_ref - t) / (half_life_s * 1000.0))
        weights[c] = weights.get(c, 0.0) + f
        mass += f
    return {c: v / mass for c, v in weights.items()}


@pytest.fixture
def events():
    rng = np.random.default_rng(3)
    n = 400
    users = [f"u{i}" for i in rng.integers(0, 12, n)]
    ts = (1_700_000_000_000 + rng.integers(0, 200_000, n)).astype(np.int64)
    clusters = rng.integers(0, 4, n)  # at most 4 clusters per user: no entry ever dropped
    weights = rng.uniform(0.5, 5.0, n)
    return users, ts, clusters, weights


def test_out_of_order_equals_in_order_and_closed_form(events):
    users, ts, clusters, weights = events
    order = np.argsort(ts, kind="stable")
    in_order = InterestMixes(HALF_LIFE_S, max_interests=4)
    for i in order:  # one by one, in time order
        in_order.fold_many([users[i]], ts[i : i + 1], clusters[i : i + 1], weights[i : i + 1])
    shuffled = InterestMixes(HALF_LIFE_S, max_interests=4)
    perm = np.random.default_rng(9).permutation(len(users))
    for chunk in np.array_split(perm, 13):  # late events, several per user per batch
        shuffled.fold_many([users[i] for i in chunk], ts[chunk], clusters[chunk], weights[chunk])
    for user in set(users):
        expected = _closed_form([(ts[i], int(clusters[i]), weights[i]) for i in range(len(users)) if users[i] == user])
        for mixes in (in_order, shuffled):
            got = dict(mixes.shares(user))
            assert got.keys() == expected.keys()
            for c, share in expected.items():
                assert got[c] == pytest.approx(share, abs=1e-9)
        a, b = in_order.raw(user), shuffled.raw(user)
        assert a[2] == b[2] and a[3] == pytest.approx(b[3], rel=1e-12)


def test_decay_is_exact():
    mixes = InterestMixes(half_life_s=60.0, max_interests=4)
    mixes.fold_many(["ann"], np.array([0]), np.array([1]), np.array([3.0]))
    mixes.fold_many(["ann"], np.array([120_000]), np.array([2]), np.array([1.0]))  # two half-lives later
    clusters, weights, ref_ms, mass = mixes.raw("ann")
    got = dict(zip(clusters.tolist(), weights.tolist(), strict=True))
    assert ref_ms == 120_000
    assert got[1] == pytest.approx(0.75, abs=1e-12) and got[2] == pytest.approx(1.0, abs=1e-12)
    assert mass == pytest.approx(1.75, abs=1e-12)
    # shares do not change with time alone, only with events
    assert dict(mixes.shares("ann")) == pytest.approx({2: 1 / 1.75, 1: 0.75 / 1.75})


def test_max_interests_bounds_the_entries_and_keeps_the_largest():
    mixes = InterestMixes(HALF_LIFE_S, max_interests=3)
    rng = np.random.default_rng(0)
    n = 500
    users = [f"u{i}" for i in rng.integers(0, 20, n)]
    ts = rng.integers(0, 50_000, n)
    clusters = rng.integers(0, 12, n)
    for chunk in np.array_split(np.arange(n), 9):
        mixes.fold_many([users[i] for i in chunk], ts[chunk], clusters[chunk], np.ones(chunk.shape[0]))
    for user in mixes.user_ids():
        shares = mixes.shares(user)
        assert 1 <= len(shares) <= 3
        assert sum(s for _, s in shares) <= 1.0 + 1e-12  # dropped weight stays in the mass
    # one batch, more clusters than entries: the union's largest entries are kept
    one = InterestMixes(HALF_LIFE_S, max_interests=2)
    one.fold_many(["bo"] * 6, np.zeros(6), np.array([5, 1, 1, 9, 9, 9]), np.ones(6))
    assert [c for c, _ in one.shares("bo")] == [9, 1]
    assert dict(one.shares("bo"))[9] == pytest.approx(0.5)


def test_interest_set_hysteresis():
    shares = [(0, 0.80), (3, 0.09), (5, 0.07)]
    assert interest_set(shares, None, 0.08, 0.02) == [(0, 0.80), (3, 0.09)]
    assert interest_set(shares, [0, 5], 0.08, 0.02) == [(0, 0.80), (5, 0.07)]  # 5 stays (>= 0.06), 3 not in (< 0.10)
    assert interest_set([(2, 0.05), (4, 0.04)], None, 0.08, 0.02) == [(2, 0.05)]  # the largest always


def test_model_change_drops_reseeded_clusters_and_renormalises():
    mixes = InterestMixes(HALF_LIFE_S, max_interests=4)
    mixes.fold_many(["a"] * 4 + ["b"], np.zeros(5), np.array([0, 0, 1, 2, 1]), np.ones(5))
    mixes.on_model_change([1])
    assert mixes.shares("a") == [(0, pytest.approx(2 / 3)), (2, pytest.approx(1 / 3))]
    assert mixes.shares("b") == []
    assert mixes.dropped_weight == pytest.approx(2.0)
    mixes.on_model_change([], n_clusters=2)  # k shrank: cluster 2 is gone
    assert mixes.shares("a") == [(0, pytest.approx(1.0))]
    mixes.fold_many(["b"], np.zeros(1), np.array([1]))  # the new cluster 1 fills again
    assert mixes.shares("b") == [(1, 1.0)]


# ---------------------------------------------------------------------------------------------- state
def test_changelog_record_restores_bit_for_bit_and_old_records_decode(events):
    users, ts, clusters, weights = events
    vectors = np.random.default_rng(1).normal(size=(len(users), 4)).astype(np.float32)
    mixes = InterestMixes(HALF_LIFE_S, max_interests=3)
    store = ProfileStore(4, HALF_LIFE_S, interests=mixes)
    store.fold_many(users, ts, vectors, weights)
    mixes.fold_many(users, ts, clusters, weights)
    restored = ProfileStore(4, HALF_LIFE_S, interests=InterestMixes.like(mixes))
    for user in store.user_ids():
        data = store.record_bytes(user)
        restored.put_record(user, profile_record_from_bytes(data))
        assert restored.record_bytes(user) == data
        a, b = mixes.raw(user), restored.interests.raw(user)
        assert a[0].tolist() == b[0].tolist() and a[1].tobytes() == b[1].tobytes() and a[2:] == b[2:]
        assert restored.interests.shares(user) == mixes.shares(user)
    # a record written before interest mixes existed: decodes, restores without a mix
    vector, ref_ms, mass = profile_from_bytes(OLD_PROFILE_RECORD)
    assert vector.tolist() == [0.5, -1.25, 3.0] and ref_ms == 1_700_000_000_123 and mass == 2.75
    record = profile_record_from_bytes(OLD_PROFILE_RECORD)
    assert record.interests is None
    assert profile_to_bytes(vector, ref_ms, mass) == OLD_PROFILE_RECORD  # without a mix: still version 1
    old = ProfileStore(3, HALF_LIFE_S, interests=InterestMixes(HALF_LIFE_S))
    old.put_record("old", record)
    assert "old" in old and "old" not in old.interests
    with pytest.raises(ValueError):
        profile_record_from_bytes(OLD_PROFILE_RECORD[:4] + b"\x07" + OLD_PROFILE_RECORD[5:])


def test_forget_removes_the_mix():
    mixes = InterestMixes(HALF_LIFE_S)
    store = ProfileStore(2, HALF_LIFE_S, interests=mixes)
    store.fold_many(["a"], np.zeros(1), np.ones((1, 2)))
    mixes.fold_many(["a"], np.zeros(1), np.array([3]))
    assert store.forget("a") and "a" not in mixes and mixes.shares("a") == []


# ---------------------------------------------------------------------------------------------- tracker
def test_set_change_publishes_one_record_and_wiggles_publish_none():
    mixes = InterestMixes(3600.0, max_interests=4, min_share=0.2, hysteresis=0.05)
    tracker = AssignmentTracker(interests=mixes)
    sims = np.array([[0.9, 0.3, 0.1]])
    mixes.fold_many(["u"] * 3, np.zeros(3), np.array([0, 0, 0]))
    first = tracker.assess(["u"], None, sims)
    assert len(first) == 1 and [i.cluster for i in first[0].interests] == [0]
    # cluster 1 climbs to 0.25 of the weight: past min_share + hysteresis -> exactly one record
    mixes.fold_many(["u"], np.zeros(1), np.array([1]))
    changes = tracker.assess(["u"], None, sims)
    assert len(changes) == 1
    change = changes[0]
    assert change.cluster == change.previous_cluster == 0
    assert [(i.cluster, i.share) for i in change.interests] == [(0, 0.75), (1, 0.25)]
    assert tracker.interest_set_changes == 1
    assert tracker.assess(["u"], None, sims) == []  # nothing new: nothing published
    # wiggles inside the hysteresis (share of 1 between 0.15 and 0.25): no record
    for cluster, weight in ((0, 1.0), (1, 0.2), (0, 1.5), (1, 0.3)):
        mixes.fold_many(["u"], np.zeros(1), np.array([cluster]), np.array([weight]))
        share = dict(mixes.shares("u"))[1]
        assert 0.15 <= share < 0.25
        assert tracker.assess(["u"], None, sims) == []
    # the primary moving publishes one record, with the interests
    moved = tracker.assess(["u"], None, np.array([[0.3, 0.9, 0.1]]))
    assert len(moved) == 1 and moved[0].cluster == 1 and moved[0].previous_cluster == 0
    assert {i.cluster for i in moved[0].interests} == {0, 1}
    assert tracker.interest_set_changes == 1
    # the announced set survives the tracker's state and a restore from the record
    again = AssignmentTracker.from_bytes(tracker.to_bytes())
    assert again.announced_interests("u") == (0, 1)
    fresh = AssignmentTracker(interests=mixes)
    record = decode_change(encode_record(moved[0]))
    fresh.restore("u", record.cluster, record.score, record.previous_cluster, [i.cluster for i in record.interests])
    assert fresh.assess(["u"], None, np.array([[0.3, 0.9, 0.1]])) == []
    assert fresh.forget("u") and fresh.announced_interests("u") is None


# ---------------------------------------------------------------------------------------------- pipeline
def _records(events, start=0):
    return [SourceRecord(json.dumps(e).encode(), e["user_id"].encode(), None, "events", 0, start + i)
            for i, e in enumerate(events)]


def test_pipeline_records_carry_interests_and_model_changes_drop_weights():
    from stream.corpora import demo_corpus

    corpus = demo_corpus()
    scenario = simulate(corpus, n_users=40, mean_events_per_user=20, drift_fraction=0.0, seed=5)
    settings = ClusteringSettings(n_clusters=len(corpus.topics), warmup_batches=0, seed=1)
    pipe = Pipeline.from_settings(settings, encoder=TopicEncoder(corpus))
    schema = Draft202012Validator(json.loads(SCHEMA.read_text()))
    changes = []
    for start in range(0, len(scenario.events), 50):
        changes += pipe.process_batch(_records(scenario.events[start : start + 50], start)).changes
    assert changes
    for change in changes:
        schema.validate(json.loads(encode_record(change)))
        assert change.interests and change.schema_version == 2
    # every user has a mix whose primary interest mostly agrees with the profile's cluster
    assert set(pipe.interests.user_ids()) == set(pipe.profiles.user_ids())
    # the model change rule: the pipeline calls on_model_change with the reseeded ids
    user = next(iter(pipe.interests.user_ids()))
    top = pipe.interests.shares(user)[0][0]
    pipe.interests.on_model_change([top])
    assert top not in dict(pipe.interests.shares(user))


def test_mixes_off_publish_empty_interests():
    from stream.corpora import demo_corpus

    corpus = demo_corpus()
    scenario = simulate(corpus, n_users=10, mean_events_per_user=6, seed=2)
    settings = ClusteringSettings(n_clusters=3, warmup_batches=0, max_interests=0)
    pipe = Pipeline.from_settings(settings, encoder=TopicEncoder(corpus))
    result = pipe.process_batch(_records(scenario.events))
    assert pipe.interests is None and result.changes and all(c.interests == [] for c in result.changes)


def test_events_before_the_first_centroids_are_scored_once_there_are_some():
    from stream.corpora import demo_corpus

    corpus = demo_corpus()
    scenario = simulate(corpus, n_users=30, mean_events_per_user=4, seed=4)
    settings = ClusteringSettings(n_clusters=3, warmup_batches=0)
    pipe = Pipeline.from_settings(settings, encoder=TopicEncoder(corpus))
    pipe.process_batch(_records(scenario.events[:6]))  # 6 events: too few users for the first centroids
    assert not pipe.model.is_initialised and len(pipe.interests) == 0
    pipe.process_batch(_records(scenario.events[6:], 6))
    assert pipe.model.is_initialised
    total = sum(pipe.interests.raw(u)[3] for u in pipe.interests.user_ids())
    assert total == pytest.approx(sum(pipe.profiles.raw(u)[2] for u in pipe.profiles.user_ids()), rel=1e-9)


def test_a_model_change_rewrites_the_changelog_records_it_altered():
    from stream.corpora import demo_corpus

    corpus = demo_corpus()
    scenario = simulate(corpus, n_users=30, mean_events_per_user=8, seed=6)
    pipe = Pipeline.from_settings(ClusteringSettings(n_clusters=3, warmup_batches=0), encoder=TopicEncoder(corpus))
    pipe.process_batch(_records(scenario.events))
    holders = {u for u in pipe.interests.user_ids() if 1 in dict(pipe.interests.shares(u))}
    assert holders
    pipe.interests.on_model_change([1])  # what the pipeline does when cluster 1 gets a new centre
    result = pipe.process_batch([])  # an empty batch: no user has events
    assert holders <= set(result.updated_users)
    assert pipe.process_batch([]).updated_users == []  # written once


def test_users_restored_from_version_1_records_publish_once_their_mix_has_events():
    mixes = InterestMixes(3600.0)
    tracker = AssignmentTracker(interests=mixes)
    tracker.restore("old", 0, 0.9, None, None)  # a version 1 record: no interests; its profile had no mix
    sims = np.array([[0.9, 0.3]])
    assert tracker.assess(["old"], None, sims) == []  # an idle sweep publishes no empty interest sets
    mixes.fold_many(["old"], np.zeros(1), np.array([0]))
    (change,) = tracker.assess(["old"], None, sims)
    assert change.cluster == change.previous_cluster == 0 and [i.cluster for i in change.interests] == [0]
