"""Poison input: over ten thousand malformed records interleaved with a simulated stream, on a real
broker, through ``interest-stream run`` as a child process.

The service must survive all of it (the process is alive and healthy afterwards), put every bad
record on the dead-letter topic exactly once with its reason, its source coordinates and its original
key and bytes, apply every valid event, and report metrics that add up to what the topics hold.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter

import numpy as np
import pytest
from poison import Poison, poison_messages
from service_harness import (
    ServiceProcess,
    Topics,
    committed_offsets,
    end_offsets,
    latest_profiles,
    read_all,
    send,
    stray_records,
    wait_for,
)

from consumers.partitioning import UserPartitioner
from stream.corpora import demo_corpus
from stream.events import BehaviourEvent, decode_event
from stream.simulation import simulate

pytestmark = pytest.mark.integration

N_POISON = 10_000
SEED = 20261127


def _create(bootstrap: str, topics: Topics) -> None:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics({
            topics.events: {"num_partitions": 3, "replication_factor": 1},
            topics.items: {"num_partitions": 1, "replication_factor": 1, "configs": {"cleanup.policy": "compact"}},
        }, wait_for_metadata=True)
    finally:
        admin.close()


def _interleave(good: list, bad: list, rng: random.Random) -> list[tuple[str, int]]:
    """A random merge of the two lists that keeps each list's own order: ``("good"|"bad", index)``."""
    tags = ["good"] * len(good) + ["bad"] * len(bad)
    rng.shuffle(tags)
    counters = {"good": 0, "bad": 0}
    order = []
    for tag in tags:
        order.append((tag, counters[tag]))
        counters[tag] += 1
    return order


def test_poison_input_is_dead_lettered_exactly_once_and_valid_events_are_applied(kafka_bootstrap, tmp_path):
    topics = Topics.fresh()
    _create(kafka_bootstrap, topics)
    corpus = demo_corpus()
    send(kafka_bootstrap, topics.items,
         [(d.item_id.encode(), json.dumps({"item_id": d.item_id, "text": d.text}).encode()) for d in corpus.documents])
    scenario = simulate(corpus, n_users=40, mean_events_per_user=6, content="both", drift_fraction=0.2, seed=13)
    good = [(e["user_id"].encode(), json.dumps(e).encode()) for e in scenario.events]
    bad = poison_messages(N_POISON, seed=SEED, known_items=[d.item_id for d in corpus.documents],
                          real_users=scenario.truth)
    assert len(bad) >= 10_000

    from kafka import KafkaProducer

    began = time.monotonic()
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=20,
                             max_request_size=2 * 1024 * 1024)
    good_futures, bad_futures = [], []
    for tag, i in _interleave(good, bad, random.Random(SEED)):
        if tag == "good":
            good_futures.append(producer.send(topics.events, key=good[i][0], value=good[i][1]))
        else:
            bad_futures.append(producer.send(topics.events, key=bad[i].key, value=bad[i].value))
    producer.flush(timeout=120)
    for f in good_futures:
        f.get(timeout=0)
    coords: dict[tuple[int, int], Poison] = {}
    for p, f in zip(bad, bad_futures, strict=True):
        meta = f.get(timeout=0)
        coords[(meta.partition, meta.offset)] = p
    producer.close()
    total = len(good) + len(bad)
    produced_s = time.monotonic() - began

    svc = ServiceProcess(kafka_bootstrap, topics, tmp_path, "--clusters", "6")
    try:
        svc.wait_ready()
        t0 = time.monotonic()
        svc.wait_consumed(total, timeout=150)
        consumed_s = time.monotonic() - t0
        # zero crashes: the same process is alive and healthy after all of it
        assert svc.proc.poll() is None, svc.log_tail()
        assert svc.get("/healthz")[0] == 200

        deadline = time.monotonic() + 30  # outputs are acknowledged before offsets move; a margin anyway
        while True:
            dead = read_all(kafka_bootstrap, topics.dead_letters, timeout=60)
            if len(dead) >= len(bad) or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        seen = Counter((int(r.headers["source_partition"]), int(r.headers["source_offset"])) for r in dead)
        duplicates = {c: n for c, n in seen.items() if n > 1}
        assert not duplicates, f"{len(duplicates)} records dead-lettered more than once"
        missing = set(coords) - set(seen)
        extra = set(seen) - set(coords)
        assert not missing, f"{len(missing)} bad records never reached the dead-letter topic, e.g. " \
                            f"{[coords[c] for c in sorted(missing)[:3]]}"
        assert not extra, f"{len(extra)} valid events were dead-lettered, e.g. {sorted(extra)[:3]}"

        owner = UserPartitioner(3).owner

        def expected(p: Poison, partition: int) -> str | None:
            """A payload that decodes as a valid event on a partition its user does not own (a keyless
            record, e.g. an unknown item) is rejected for that first: ``wrong_partition``."""
            event = decode_event(p.value, record_ts_ms=None, key=p.key)
            if isinstance(event, BehaviourEvent) and owner(event.user_id) != partition:
                return "wrong_partition"
            return p.expected

        wrong_reason = []
        for r in dead:
            partition = int(r.headers["source_partition"])
            p = coords[(partition, int(r.headers["source_offset"]))]
            reason = r.headers["reason"].decode()
            assert r.headers["source_topic"].decode() == topics.events
            assert r.headers["detail"], "every dead letter says why"
            assert r.value == (p.value if p.value is not None else b""), f"original bytes kept ({p.kind})"
            assert r.key == p.key, f"original key kept ({p.kind})"
            want = expected(p, partition)
            if reason == "internal" or (want is not None and reason != want):
                wrong_reason.append((p.kind, want, reason, r.headers["detail"].decode()[:100]))
        assert not wrong_reason, f"{len(wrong_reason)} wrong reasons, e.g. {wrong_reason[:5]}"

        # metrics add up to the topics
        by_reason = Counter(r.headers["reason"].decode() for r in dead)
        assert svc.value("interest_events_consumed_total") == total
        assert svc.value("interest_events_applied_total") == len(good)
        assert svc.value("interest_users_tracked") == len(scenario.truth)
        rejected = {reason: svc.value("interest_events_rejected_total", reason=reason) for reason in by_reason}
        assert rejected == {reason: float(n) for reason, n in by_reason.items()}
        assert svc.sum_of("interest_events_rejected_total") == len(bad)
        assert svc.stop() == 0, svc.log_tail()
        # no rejected record wrote any state, anywhere: every state record sits in its owner partition
        assert stray_records(kafka_bootstrap, topics.profiles_changelog) == []
        assert stray_records(kafka_bootstrap, topics.assignments) == []
    finally:
        svc.stop()
    print(f"\npoison: {len(bad)} bad + {len(good)} good records; produced in {produced_s:.1f} s, "
          f"consumed in {consumed_s:.1f} s; reasons {dict(sorted(by_reason.items()))}")


def test_a_valid_payload_under_a_non_utf8_key_never_moves_a_users_state(kafka_bootstrap, tmp_path):
    """The trigger found from outside: a real user's valid event under a key that is not UTF-8, on a
    partition the user does not own, between the user's real events; then a restart. Before the fix
    the rejected record wrote the user's profile to that foreign partition, and the restore could pick
    that stale copy (every event folded since was lost). Now the record is dead-lettered and nothing
    else: after the restart every profile equals the fault-free run's."""
    from kafka import KafkaProducer

    from stream.encoders import make_encoder
    from stream.pipeline import Pipeline, SourceRecord
    from stream.settings import ClusteringSettings

    topics = Topics.fresh()
    _create(kafka_bootstrap, topics)
    owner = UserPartitioner(3).owner
    users = [f"reader-{i}" for i in range(12)]
    topics_of = ["football match report", "sourdough bread recipe", "jazz concert review", "mountain hiking trail"]
    ts0 = 1_700_000_000_000

    def event(user: str, j: int) -> bytes:
        i = int(user.split("-")[1])
        return json.dumps({"user_id": user, "ts": ts0 + j * 60_000 + i,
                           "text": f"{topics_of[(i + j // 3) % 4]} part {j}"}).encode()

    valid: list[tuple[bytes, bytes]] = []
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5)

    def produce(j: int) -> None:
        for user in users:
            valid.append((user.encode(), event(user, j)))
            producer.send(topics.events, key=user.encode(), value=event(user, j))

    for j in range(4):
        produce(j)
    poison = []
    for n, user in enumerate(users):  # a valid payload of this user, a key that is not UTF-8, a foreign partition
        value = event(user, 100)
        foreign = (owner(user) + 1) % 3
        producer.send(topics.events, key=b"\xff\xfe" + str(n).encode(), value=value, partition=foreign)
        poison.append(value)
    for j in range(4, 8):
        produce(j)
    producer.flush(timeout=60)

    args = ("--clusters", "3", "--batch-max-events", "16")
    first = ServiceProcess(kafka_bootstrap, topics, tmp_path, *args, name="first", instance_id="m")
    try:
        first.wait_ready()
        first.wait_consumed(len(valid) + len(poison), timeout=120)
        assert first.stop() == 0, first.log_tail()
    finally:
        first.stop()
    second = ServiceProcess(kafka_bootstrap, topics, tmp_path, *args, name="second", instance_id="m")
    try:
        second.wait_ready()  # restored every partition from the changelogs
        for j in range(8, 10):
            produce(j)
        producer.flush(timeout=60)
        wait_for(lambda: committed_offsets(kafka_bootstrap, topics.group, topics.events)
                 == end_offsets(kafka_bootstrap, topics.events), 120, interval=1, what="all events committed")
        assert second.stop() == 0, second.log_tail()
    finally:
        second.stop()
        producer.close()

    dead = read_all(kafka_bootstrap, topics.dead_letters)
    assert sorted(r.value for r in dead) == sorted(poison)
    assert {r.headers["reason"] for r in dead} == {b"key_mismatch"}
    assert stray_records(kafka_bootstrap, topics.profiles_changelog) == []
    assert stray_records(kafka_bootstrap, topics.assignments) == []

    reference = Pipeline(ClusteringSettings(n_clusters=3), make_encoder(ClusteringSettings()))
    reference.process_batch([SourceRecord(v, k, None) for k, v in valid], now_ms=0)
    stored = latest_profiles(kafka_bootstrap, topics.profiles_changelog)
    assert set(stored) == set(users)
    for user, (vector, ref_ms, mass) in stored.items():
        ref_vector, ref_ref_ms, ref_mass = reference.profiles.raw(user)
        assert ref_ms == ref_ref_ms, user
        assert mass == pytest.approx(ref_mass, rel=1e-6), f"{user}: profile mass lost after the restart"
        np.testing.assert_allclose(vector / np.linalg.norm(vector), ref_vector / np.linalg.norm(ref_vector),
                                   atol=1e-5, err_msg=user)
