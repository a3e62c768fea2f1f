"""Simulated users: determinism, time order, interest shares, drift, content modes, files."""

from __future__ import annotations

import collections
import json

import pytest

from stream.corpora import Corpus, Document, demo_corpus
from stream.events import BehaviourEvent, decode_event
from stream.simulation import DEFAULT_EVENT_TYPE_MIX, Scenario, search_query, simulate

CORPUS = demo_corpus()
DOC_BY_ID = {d.item_id: d for d in CORPUS.documents}


@pytest.fixture(scope="module")
def big() -> Scenario:
    return simulate(CORPUS, n_users=400, mean_events_per_user=40, drift_fraction=0.25, seed=11)


def per_user(scenario: Scenario) -> dict[str, list[tuple[dict, str]]]:
    users: dict[str, list[tuple[dict, str]]] = collections.defaultdict(list)
    for event, topic in zip(scenario.events, scenario.event_topics, strict=True):
        users[event["user_id"]].append((event, topic))
    return users


def test_deterministic_per_seed():
    a = simulate(CORPUS, n_users=30, mean_events_per_user=10, seed=3)
    b = simulate(CORPUS, n_users=30, mean_events_per_user=10, seed=3)
    c = simulate(CORPUS, n_users=30, mean_events_per_user=10, seed=4)
    assert a.events == b.events and a.truth == b.truth and a.event_topics == b.event_topics
    assert a.events != c.events


def test_events_are_in_global_time_order_within_the_window(big):
    times = [e["ts"] for e in big.events]
    assert times == sorted(times)
    assert 1_700_000_000_000 <= times[0] and times[-1] <= 1_700_000_000_000 + 3_600_000
    assert len({e["event_id"] for e in big.events}) == len(big.events)


def test_every_user_has_events_and_the_mean_is_respected(big):
    users = per_user(big)
    assert set(users) == set(big.truth) and len(users) == 400
    counts = [len(v) for v in users.values()]
    assert abs(sum(counts) / len(counts) - 40) < 2
    tiny = simulate(CORPUS, n_users=50, mean_events_per_user=0.05, seed=1)
    assert collections.Counter(e["user_id"] for e in tiny.events) == {u: 1 for u in tiny.truth}


def test_interest_shares(big):
    hits = collections.Counter()
    for user_id, rows in per_user(big).items():
        truth = big.truth[user_id]
        for event, topic in rows:
            current = big.primary_at(user_id, event["ts"])
            hits["primary" if topic == current else "secondary" if topic == truth.secondary else "other"] += 1
    total = sum(hits.values())
    assert abs(hits["primary"] / total - 0.7) < 0.03
    assert abs(hits["secondary"] / total - 0.2) < 0.03
    assert abs(hits["other"] / total - 0.1) < 0.03


def test_drift(big):
    drifting = big.drifting_users
    assert len(drifting) == 100
    users = per_user(big)
    for user_id, truth in big.truth.items():
        rows = users[user_id]
        assert truth.secondary != truth.primary
        if truth.switch_to is None:
            assert truth.switch_ts_ms is None and truth.switch_event_index is None
            continue
        assert truth.switch_to not in {truth.primary, truth.secondary}
        assert truth.switch_event_index == len(rows) // 2
        assert truth.switch_ts_ms == rows[truth.switch_event_index][0]["ts"]
        assert truth.final_primary == truth.switch_to
        assert big.primary_at(user_id, truth.switch_ts_ms - 1) == truth.primary
        assert big.primary_at(user_id, truth.switch_ts_ms) == truth.switch_to
    before = collections.Counter()  # topic role -> events, before and after each drifting user's switch
    after = collections.Counter()
    for user_id in drifting:
        truth = big.truth[user_id]
        for i, (_, topic) in enumerate(users[user_id]):
            role = {truth.primary: "old", truth.switch_to: "new"}.get(topic, "rest")
            (before if i < truth.switch_event_index else after)[role] += 1
    assert before["old"] / before.total() > 0.6 and before["new"] / before.total() < 0.1
    assert after["new"] / after.total() > 0.6 and after["old"] / after.total() < 0.1


def test_no_drift_when_fraction_is_zero():
    scenario = simulate(CORPUS, n_users=50, mean_events_per_user=10, drift_fraction=0.0, seed=2)
    assert scenario.drifting_users == []


@pytest.mark.parametrize("content", ["text", "item_id", "both"])
def test_content_modes_and_decodability(content):
    scenario = simulate(CORPUS, n_users=40, mean_events_per_user=15, content=content, seed=5)
    kinds = collections.Counter()
    for event, topic in zip(scenario.events, scenario.event_topics, strict=True):
        kinds[event["type"]] += 1
        decoded = decode_event(json.dumps(event).encode(), key=event["user_id"].encode())
        assert isinstance(decoded, BehaviourEvent), (event, decoded)
        assert decoded.ts_ms == event["ts"]
        if event["type"] == "search":
            assert "item_id" not in event and len(event["text"].split()) <= 4
            continue
        assert ("text" in event) == (content != "item_id")
        assert ("item_id" in event) == (content != "text")
        if "item_id" in event:
            assert DOC_BY_ID[event["item_id"]].topic == topic
            if "text" in event:
                assert DOC_BY_ID[event["item_id"]].text == event["text"]
        else:
            assert event["text"] in {d.text for d in CORPUS.by_topic()[topic]}
    assert set(kinds) <= set(DEFAULT_EVENT_TYPE_MIX) and len(kinds) >= 4


def test_event_type_mix_and_time_window():
    scenario = simulate(
        CORPUS, n_users=10, mean_events_per_user=5, event_type_mix={"purchase": 1.0, "post": 0.0},
        start_ts_ms=1000, duration_s=1.0, seed=9,
    )
    assert {e["type"] for e in scenario.events} == {"purchase"}
    assert all(1000 <= e["ts"] <= 2000 for e in scenario.events)


def test_two_topic_corpus_still_works():
    corpus = Corpus([Document("a1", "apples", "a"), Document("b1", "bikes", "b")])
    scenario = simulate(corpus, n_users=20, mean_events_per_user=6, drift_fraction=1.0, seed=1)
    for truth in scenario.truth.values():
        assert {truth.primary, truth.secondary} == {"a", "b"}
        assert truth.switch_to in {"a", "b"} and truth.switch_to != truth.primary


@pytest.mark.parametrize(
    "kwargs",
    [
        {"content": "html"},
        {"mean_events_per_user": 0},
        {"primary_share": 0.9, "secondary_share": 0.2},
        {"drift_fraction": 1.5},
        {"event_type_mix": {"view": 0.0}},
    ],
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        simulate(CORPUS, n_users=3, **kwargs)


def test_files_round_trip(tmp_path):
    scenario = simulate(CORPUS, n_users=15, mean_events_per_user=8, seed=1)
    lines = scenario.to_jsonl(tmp_path / "events.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == scenario.events
    assert Scenario.read_truth(scenario.truth_to_json(tmp_path / "truth.json")) == scenario.truth


def test_search_query():
    assert search_query("Beginner's guide to sourdough starters") == "beginner's guide to sourdough"
    assert search_query("!!!") == "!!!"
