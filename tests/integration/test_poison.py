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

import pytest
from poison import Poison, poison_messages
from service_harness import ServiceProcess, Topics, read_all, send

from stream.corpora import demo_corpus
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
    bad = poison_messages(N_POISON, seed=SEED, known_items=[d.item_id for d in corpus.documents])
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

        wrong_reason = []
        for r in dead:
            p = coords[(int(r.headers["source_partition"]), int(r.headers["source_offset"]))]
            reason = r.headers["reason"].decode()
            assert r.headers["source_topic"].decode() == topics.events
            assert r.headers["detail"], "every dead letter says why"
            assert r.value == (p.value if p.value is not None else b""), f"original bytes kept ({p.kind})"
            assert r.key == p.key, f"original key kept ({p.kind})"
            if reason == "internal" or (p.expected is not None and reason != p.expected):
                wrong_reason.append((p.kind, p.expected, reason, r.headers["detail"].decode()[:100]))
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
    finally:
        svc.stop()
    print(f"\npoison: {len(bad)} bad + {len(good)} good records; produced in {produced_s:.1f} s, "
          f"consumed in {consumed_s:.1f} s; reasons {dict(sorted(by_reason.items()))}")
