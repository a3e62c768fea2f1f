"""Worker and trainer stages and the in-memory pipeline, with a fake deterministic encoder."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import msgspec
import numpy as np
import pytest
from jsonschema import Draft202012Validator

from stream.corpora import demo_corpus
from stream.events import encode_event
from stream.kmeans import MiniBatchKMeans
from stream.labels import ClusterLabeler
from stream.pipeline import Pipeline
from stream.records import AssignmentChange, decode_centroid, decode_change, encode_record
from stream.settings import ClusteringSettings
from stream.simulation import simulate
from stream.trainer import TrainerStage
from stream.worker import SourceRecord

SCHEMAS = Path(__file__).resolve().parents[2] / "deploy" / "schemas"
_WORD = re.compile(r"\w+")


def _unit(seed_text: str, dim: int) -> np.ndarray:
    seed = int.from_bytes(hashlib.blake2b(seed_text.encode(), digest_size=8).digest(), "little")
    v = np.random.default_rng(seed).normal(size=dim)
    return v / np.linalg.norm(v)


class TopicEncoder:
    """Fake encoder: each word maps to a random unit vector of its (majority) topic, plus word noise.

    A text's vector is the normalised sum over its words, so texts of one topic point the same way.
    """

    def __init__(self, corpus, dim: int = 32, noise: float = 0.3) -> None:
        self.dim = dim
        votes: dict[str, Counter] = {}
        for doc in corpus.documents:
            for w in _WORD.findall(doc.text.lower()):
                votes.setdefault(w, Counter())[doc.topic] += 1
        self.word_topic = {w: c.most_common(1)[0][0] for w, c in votes.items()}
        self.noise = noise
        self.calls = 0

    def _word(self, w: str) -> np.ndarray:
        topic = self.word_topic.get(w)
        base = _unit(f"topic:{topic}", self.dim) if topic else np.zeros(self.dim)
        return base + self.noise * _unit(f"word:{w}", self.dim)

    def encode(self, texts):
        self.calls += 1
        rows = []
        for t in texts:
            v = sum((self._word(w) for w in _WORD.findall(t.lower())), np.zeros(self.dim)) + 1e-3 * _unit(t, self.dim)
            rows.append(v / np.linalg.norm(v))
        return np.asarray(rows, dtype=np.float32).reshape(len(texts), self.dim)


@pytest.fixture(scope="module")
def corpus():
    return demo_corpus()


def make_pipeline(corpus, **overrides) -> Pipeline:
    """A pipeline over the topic encoder; no warm-up unless asked (these tests run a few batches)."""
    settings = ClusteringSettings(**{"n_clusters": len(corpus.topics), "seed": 3, "warmup_batches": 0, **overrides})
    return Pipeline(settings, TopicEncoder(corpus))


def rec(obj: dict | bytes, offset: int = 0, key: bytes | None = None, ts: int | None = None) -> SourceRecord:
    value = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return SourceRecord(value=value, key=key, timestamp_ms=ts, topic="events", partition=0, offset=offset)


def run_scenario(pipe: Pipeline, events: list[dict], batch: int = 64):
    results = []
    for start in range(0, len(events), batch):
        chunk = [rec(e, offset=start + i) for i, e in enumerate(events[start : start + batch])]
        now = max(e["ts"] for e in events[start : start + batch])
        results.append(pipe.process_batch(chunk, now_ms=now))
    return results


# ---------------------------------------------------------------------------------------------- scenario
def test_scenario_changes_validate_and_clusters_follow_topics(corpus):
    scenario = simulate(corpus, n_users=60, mean_events_per_user=25, drift_fraction=0.0, seed=11)
    pipe = make_pipeline(corpus)
    results = run_scenario(pipe, scenario.events)
    changes = [c for r in results for c in r.changes]
    assert changes, "no assignment changes at all"
    schema = Draft202012Validator(json.loads((SCHEMAS / "assignment-change.schema.json").read_text()))
    last: dict[str, AssignmentChange] = {}
    for change in changes:
        raw = encode_record(change)
        schema.validate(json.loads(raw))
        decoded = decode_change(raw)
        assert decoded == change
        assert 0 <= change.cluster < pipe.model.n_clusters
        assert len(change.top) == pipe.settings.top_k
        prev = last.get(change.user_id)
        assert change.previous_cluster == (None if prev is None else prev.cluster)
        if change.cluster != change.previous_cluster:  # the best cluster moved
            assert change.top[0].cluster == change.cluster
        else:  # an interests-only record: the interest set changed
            assert {i.cluster for i in change.interests} != {i.cluster for i in prev.interests}
        assert change.interests and [i.share for i in change.interests] == sorted(
            (i.share for i in change.interests), reverse=True)
        last[change.user_id] = change
    # every user ends up assigned, and the tracker agrees with the last emitted record
    assert set(last) == set(scenario.truth)
    assert all(pipe.tracker.last(u)[0] == c.cluster for u, c in last.items())
    # the clusters mean something: users sharing a primary topic mostly share a cluster
    by_topic: dict[str, Counter] = {}
    for user, change in last.items():
        by_topic.setdefault(scenario.truth[user].primary, Counter())[change.cluster] += 1
    purity = sum(c.most_common(1)[0][1] for c in by_topic.values()) / len(last)
    assert purity >= 0.7, f"purity {purity:.2f}"
    # snapshots decode and carry label terms
    snaps = [s for r in results for s in r.snapshots]
    assert snaps and all(decode_centroid(encode_record(s)) == s for s in snaps)
    assert any(s.label_terms for s in snaps[-pipe.model.n_clusters :])
    # counters add up
    c = pipe.counters
    assert c.records == len(scenario.events) == sum(c.events.values())
    assert c.events["applied"] == len(scenario.events) and c.changes == len(changes)
    assert c.cache_misses == pipe.embedder.texts_encoded and c.cache_hits > 0


def test_pipeline_is_deterministic(corpus):
    scenario = simulate(corpus, n_users=20, mean_events_per_user=10, seed=5)
    a = [encode_record(c) for r in run_scenario(make_pipeline(corpus), scenario.events) for c in r.changes]
    b = [encode_record(c) for r in run_scenario(make_pipeline(corpus), scenario.events) for c in r.changes]
    assert a == b and a


# ---------------------------------------------------------------------------------------------- rejections
def test_dead_letters_keep_record_order_reason_and_source(corpus):
    pipe = make_pipeline(corpus)
    pipe.catalog.upsert("known", "football match tonight")
    batch = [
        rec({"user_id": "a", "ts": 1, "text": "football match"}, 0),
        rec(b"{not json", 1),
        rec({"user_id": "b", "ts": 2, "item_id": "missing"}, 2),
        rec({"user_id": "c", "ts": 3, "item_id": "known"}, 3),
        rec({"user_id": "d", "ts": 4, "text": "x"}, 4, key=b"someone-else"),
        rec({"user_id": "e", "text": "no timestamp anywhere"}, 5),
        rec({"user_id": "f", "text": "record time used"}, 6, ts=77),
    ]
    out = pipe.process_batch(batch, now_ms=10)
    got = [(r.offset, rej.reason) for r, rej in out.dead_letters]
    assert got == [(1, "not_json"), (2, "unknown_item"), (4, "key_mismatch"), (5, "bad_timestamp")]
    assert all(r is batch[r.offset] for r, _ in out.dead_letters)
    assert out.n_applied == 3 and out.n_events == 7
    assert sorted(out.applied_ts_ms.tolist()) == [1, 3, 77]
    assert pipe.counters.rejections == Counter(not_json=1, unknown_item=1, key_mismatch=1, bad_timestamp=1)


# ---------------------------------------------------------------------------------------------- forget
def _warm(pipe: Pipeline, corpus, n_users: int = 30) -> None:
    scenario = simulate(corpus, n_users=n_users, mean_events_per_user=6, seed=2)
    run_scenario(pipe, scenario.events)
    assert pipe.model.is_initialised


def test_forget_removes_user_and_tombstones(corpus):
    pipe = make_pipeline(corpus)
    _warm(pipe, corpus)
    user = next(iter(pipe.profiles.user_ids()))
    assert pipe.tracker.last(user) is not None
    out = pipe.process_batch([rec({"type": "forget", "user_id": user}, 0)], now_ms=2_000_000_000_000)
    assert out.tombstones == [user] and out.changes == [] and out.n_forgotten == 1
    assert user not in pipe.profiles and pipe.tracker.last(user) is None
    # forgetting an unknown user still publishes a tombstone (idempotent deletion)
    out = pipe.process_batch([rec({"type": "forget", "user_id": "never-seen"}, 1)], now_ms=2_000_000_000_000)
    assert out.tombstones == ["never-seen"]


def test_forget_then_events_in_one_batch_starts_fresh(corpus):
    pipe = make_pipeline(corpus)
    _warm(pipe, corpus)
    user = next(iter(pipe.profiles.user_ids()))
    old_cluster = pipe.tracker.last(user)[0]
    texts = [d.text for d in corpus.documents]
    t = 1_800_000_000_000
    batch = [
        rec({"user_id": user, "ts": t, "text": texts[0]}, 0),  # superseded by the forget
        rec({"type": "forget", "user_id": user}, 1),
        rec({"user_id": user, "ts": t + 1, "text": texts[-1]}, 2),
        rec({"type": "forget", "user_id": "gone"}, 3),
        rec({"user_id": "gone", "ts": t, "text": texts[5]}, 4),  # after gone's forget: a fresh profile
    ]
    out = pipe.process_batch(batch, now_ms=t + 10)
    assert out.tombstones == []  # both users are active again after their forget
    fresh = {c.user_id: c for c in out.changes}
    assert fresh[user].previous_cluster is None and fresh["gone"].previous_cluster is None
    assert pipe.counters.events["superseded"] == 1 and out.n_applied == 2
    # the profile holds only the post-forget event
    direction = pipe.profiles.direction(user)
    expected = pipe.encoder.encode([texts[-1]])[0]
    np.testing.assert_allclose(direction, expected, atol=1e-5)
    assert old_cluster is not None


def test_users_seen_before_initialisation_are_assigned_once_it_happens(corpus):
    pipe = make_pipeline(corpus)
    texts = [d.text for d in corpus.documents]
    first = pipe.process_batch([rec({"user_id": "early", "ts": 1, "text": texts[0]}, 0)], now_ms=1)
    assert not pipe.model.is_initialised and first.changes == []
    later = [rec({"user_id": f"u{i}", "ts": 2 + i, "text": texts[(i * 7) % len(texts)]}, i) for i in range(60)]
    out = pipe.process_batch(later, now_ms=100)
    assert pipe.model.is_initialised
    users = {c.user_id: c for c in out.changes}
    assert "early" in users and users["early"].event_ts_ms == 1
    assert len(users) == 61


# ---------------------------------------------------------------------------------------------- weights & rechecks
def test_type_weights_pull_profiles(corpus):
    pipe = make_pipeline(corpus, type_weights={"purchase": 9.0, "view": 1.0})
    a, b = corpus.documents[0].text, corpus.documents[-1].text
    pipe.process_batch(
        [rec({"user_id": "w", "ts": 1, "type": "view", "text": a}, 0),
         rec({"user_id": "w", "ts": 1, "type": "purchase", "text": b}, 1),
         rec({"user_id": "x", "ts": 1, "type": "unlisted", "text": a}, 2),
         rec({"user_id": "x", "ts": 1, "type": "view", "text": b, "weight": 9}, 3)],
        now_ms=1,
    )
    va, vb = pipe.encoder.encode([a, b])
    expected = va + 9 * vb
    expected /= np.linalg.norm(expected)
    np.testing.assert_allclose(pipe.profiles.direction("w"), expected, atol=1e-5)
    np.testing.assert_allclose(pipe.profiles.direction("x"), expected, atol=1e-5)  # default 1.0 x event weight


def test_recheck_is_bounded_and_reaches_untouched_users(corpus):
    pipe = make_pipeline(corpus, recheck_budget=5)
    _warm(pipe, corpus, n_users=60)
    texts = [d.text for d in corpus.documents]
    before = pipe.counters.rechecked
    total = 0
    for i in range(5):
        batch = [rec({"user_id": f"new{i}-{j}", "ts": 3_000_000_000_000 + j, "text": texts[(j * 11 + i) % len(texts)]}, j)
                 for j in range(40)]
        out = pipe.process_batch(batch, now_ms=3_000_000_000_100)
        assert 0 <= out.n_rechecked <= 5
        total += out.n_rechecked
        assert out.movement is not None and out.movement.shape == (pipe.model.n_clusters,)
    assert total > 0
    assert pipe.counters.rechecked - before == total


# ---------------------------------------------------------------------------------------------- trainer
def test_trainer_snapshot_policy():
    rng = np.random.default_rng(0)
    model = MiniBatchKMeans(n_clusters=3, init_size=6, seed=0)
    labeler = ClusterLabeler(3)
    trainer = TrainerStage(model, labeler, snapshot_every=4, snapshot_min_movement=0.5)
    centres = np.eye(3, 8)
    pts = lambda: (centres[rng.integers(3, size=30)] + 0.01 * rng.normal(size=(30, 8))).astype(np.float32)  # noqa: E731

    assert trainer.apply(None, None, 0).movement is None and model.version == 0
    out = trainer.apply(model.summarise(pts()), None, 1)
    assert out.initialised and len(out.snapshots) == 3  # published on initialisation
    published = []
    for t in range(2, 14):
        out = trainer.apply(model.summarise(pts()), labeler.summarise([0], ["football"]), t)
        published.append(bool(out.snapshots))
        assert out.movement.max() < 0.5  # stable clusters: only the periodic snapshots
    assert published == [False, False, False, True] * 3
    snap = trainer.snapshot(99)
    assert [s.cluster for s in snap] == [0, 1, 2] and all(s.model_version == model.version for s in snap)
    assert any("football" in s.label_terms for s in snap)
    np.testing.assert_allclose([s.vector for s in snap], model.centroids, atol=1e-6)

    # a big move publishes at once
    trainer2 = TrainerStage(model, None, snapshot_every=1000, snapshot_min_movement=0.01)
    trainer2.apply(model.summarise(pts()), None, 1)  # first call always publishes
    far = np.tile(np.eye(1, 8, 5), (60, 1)).astype(np.float32) + 0.01 * rng.normal(size=(60, 8)).astype(np.float32)
    moved = [bool(trainer2.apply(model.summarise(far), None, t).snapshots) for t in range(2, 6)]
    assert any(moved)


def test_event_wire_roundtrip_through_pipeline(corpus):
    """Events written by encode_event are accepted unchanged by the worker."""
    from stream.events import BehaviourEvent

    pipe = make_pipeline(corpus)
    ev = BehaviourEvent(user_id="z", ts_ms=5, type="click", text="football tonight", event_id="e1", weight=2.0)
    out = pipe.process_batch([SourceRecord(encode_event(ev), b"z", None)], now_ms=5)
    assert out.n_applied == 1 and out.dead_letters == []
    assert msgspec.json.decode(encode_event(ev))["user_id"] == "z"


def test_empty_and_all_bad_batches_are_harmless(corpus):
    pipe = make_pipeline(corpus)
    out = pipe.process_batch([], now_ms=1)
    assert (out.changes, out.tombstones, out.dead_letters, out.n_applied, out.movement) == ([], [], [], 0, None)
    out = pipe.process_batch([rec(b"", 0), SourceRecord(None, None, None)], now_ms=1)
    assert [r.reason for _, r in out.dead_letters] == ["empty_message", "empty_message"]
    assert pipe.model.version == 0 and len(pipe.profiles) == 0


def test_settings_validation():
    from pydantic import ValidationError

    s = ClusteringSettings(type_weights={"view": 2.0}, default_type_weight=0.5)
    assert s.type_weight("view") == 2.0 and s.type_weight("click") == 0.5 and s.type_weight(None) == 0.5
    for bad in ({"type_weights": {"view": -1.0}}, {"hysteresis": -0.1}, {"encode_batch_size": 0},
                {"kmeans_time_unit": "hours"}, {"no_such_field": 1}):
        with pytest.raises(ValidationError):
            ClusteringSettings(**bad)


# ---------------------------------------------------------------------------------------------- stability knobs
def test_warmup_holds_first_assignments_until_the_model_has_learned(corpus):
    scenario = simulate(corpus, n_users=40, mean_events_per_user=8, drift_fraction=0.0, seed=4)
    pipe = make_pipeline(corpus, warmup_batches=3)
    results = run_scenario(pipe, scenario.events, batch=32)
    assert pipe.model.is_initialised
    assert [bool(r.changes) for r in results[:2]] == [False, False]
    assert results[2].changes  # everyone seen so far is assessed at once
    early_users = {e["user_id"] for e in scenario.events[: 3 * 32]}
    assert early_users <= {c.user_id for c in results[2].changes}


def test_maturity_margin_uses_profile_weight_and_cuts_flapping(corpus):
    scenario = simulate(corpus, n_users=60, mean_events_per_user=20, drift_fraction=0.0, seed=8)
    plain = make_pipeline(corpus)
    held = make_pipeline(corpus, maturity_margin=0.3, confirmations=2)
    assert plain.worker.maturity(["x"]) is None
    n_plain = sum(len(r.changes) for r in run_scenario(plain, scenario.events))
    n_held = sum(len(r.changes) for r in run_scenario(held, scenario.events))
    users = sorted(scenario.truth)[:5]
    masses = held.worker.maturity(users)
    assert masses.tolist() == [held.profiles.raw(u)[2] for u in users]
    assert len(held.tracker) == len(plain.tracker) == len(scenario.truth)  # everyone still assigned
    assert n_held < n_plain
