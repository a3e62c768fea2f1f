"""The streaming service on the real broker: outputs, replay agreement, dead letters, metrics,
forget, and a graceful stop that loses nothing.

Each test runs ``interest-stream run`` as a child process on its own topics and group.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time

import numpy as np
import pytest
from service_harness import (
    CLI,
    REPO,
    ServiceProcess,
    Topics,
    committed_offsets,
    end_offsets,
    latest_assignments,
    latest_profiles,
    read_all,
    send,
    wait_for,
    wait_settled,
)
from sklearn.metrics import normalized_mutual_info_score

from stream.corpora import demo_corpus
from stream.simulation import simulate

pytestmark = pytest.mark.integration


def _create(bootstrap: str, topics: Topics, events_partitions: int) -> None:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics({topics.events: {"num_partitions": events_partitions, "replication_factor": 1},
                         topics.items: {"num_partitions": 1, "replication_factor": 1,
                                        "configs": {"cleanup.policy": "compact"}}}, wait_for_metadata=True)
    admin.close()


def _catalog_records() -> list[tuple[bytes, bytes]]:
    return [(d.item_id.encode(), json.dumps({"item_id": d.item_id, "text": d.text, "topic": d.topic}).encode())
            for d in demo_corpus().documents]


def _scenario(n_users: int, events_per_user: float, seed: int, content: str = "item_id"):
    return simulate(demo_corpus(), n_users=n_users, mean_events_per_user=events_per_user, content=content,
                    drift_fraction=0.2, seed=seed)


def _event_records(scenario) -> list[tuple[bytes, bytes]]:
    return [(e["user_id"].encode(), json.dumps(e).encode()) for e in scenario.events]


def test_service_agrees_with_replay_on_the_same_events(kafka_bootstrap, tmp_path):
    """Same events, same batch boundaries: the service clusters as well as replay, in one consistent id space.

    The events are produced before the service starts, to a single partition, the batch
    wait is long and batches do not grow under the backlog (``batch_cap_events`` = ``batch``),
    so every service batch holds exactly ``batch`` records, as in replay. Replay
    trains in memory, each batch assessed with the model that includes it; the service's
    member assesses a batch with the newest version the group's trainer had committed (the
    round trip through the statistics and model topics), so the two take slightly different
    paths: their quality against the truth must agree, and every published assignment must be
    the nearest centroid of the final published model (within the hysteresis).
    """
    from stream.kmeans import MiniBatchKMeans
    from stream.settings import ClusteringSettings
    from stream.shared_model import VERSION_KEY, decode_model_version

    topics = Topics.fresh()
    _create(kafka_bootstrap, topics, events_partitions=1)
    scenario = _scenario(n_users=120, events_per_user=12, seed=11)
    send(kafka_bootstrap, topics.items, _catalog_records())
    n = send(kafka_bootstrap, topics.events, _event_records(scenario))
    batch = 256
    svc = ServiceProcess(kafka_bootstrap, topics, tmp_path, "--clusters", "10", "--batch-max-events", str(batch),
                         "--batch-max-wait-ms", "3000", env={"INTEREST_STREAM_BATCH_CAP_EVENTS": str(batch)})
    try:
        svc.wait_ready()
        svc.wait_consumed(n)
        wait_for(lambda: committed_offsets(kafka_bootstrap, topics.group, topics.events) == {0: n}, 30,
                 what="offsets committed")
        assert svc.value("interest_events_applied_total") == n
        assert svc.value("interest_trainer_role") == 1, "a lone member is its group's trainer"
        # Fewer batches than the model's warm-up: the idle sweep assigns everyone (replay settles at its end).
        svc.wait_all_assigned(len(scenario.truth))
        wait_for(lambda: svc.value("interest_trainer_statistics_applied_total") >= -(-n // batch), 30,
                 what="every batch's statistics applied")
        wait_settled([svc], timeout=60)  # the last version adopted and its idle sweep done
        assert svc.stop() == 0, svc.log_tail()
    finally:
        svc.stop()
    records = read_all(kafka_bootstrap, topics.assignments)
    service_final = latest_assignments(records)

    from consumers.changelog import read_latest
    from consumers.replay import run_replay

    events_file = scenario.to_jsonl(tmp_path / "events.jsonl")
    catalog_file = demo_corpus().to_catalog_jsonl(tmp_path / "items.jsonl")
    out = tmp_path / "changes.jsonl"
    settings = ClusteringSettings(n_clusters=10)
    run_replay(events_file, out, settings, batch_size=batch, catalog_path=catalog_file)
    replay_final: dict[str, dict] = {}
    for line in out.read_text().splitlines():
        rec = json.loads(line)
        replay_final[rec["user_id"]] = rec

    assert set(service_final) == set(replay_final) == set(scenario.truth)
    users = sorted(replay_final)
    truth = [scenario.truth[u].final_primary for u in users]
    nmi_service = normalized_mutual_info_score(truth, [service_final[u]["cluster"] for u in users])
    nmi_replay = normalized_mutual_info_score(truth, [replay_final[u]["cluster"] for u in users])
    assert nmi_service >= nmi_replay - 0.05, (nmi_service, nmi_replay)
    assert nmi_service > 0.5
    # One id space: the final published model, and every user's last record is its nearest centroid.
    version = decode_model_version(read_latest({"bootstrap_servers": kafka_bootstrap}, topics.model, [0])[VERSION_KEY][1])
    model = MiniBatchKMeans(n_clusters=10)
    model.follow(version.centroid_matrix(), version.count_vector(), version.version, version.n_applied,
                 version.reservoir_id_vector())
    profiles = latest_profiles(kafka_bootstrap, topics.profiles_changelog)
    directions = np.stack([profiles[u][0] / np.linalg.norm(profiles[u][0]) for u in users])
    sims = model.similarities(directions)
    for i, user in enumerate(users):
        last = service_final[user]
        assert last["model_version"] <= version.version
        assert sims[i].max() - sims[i, last["cluster"]] <= settings.hysteresis + 1e-5, user
    centroids = latest_assignments(read_all(kafka_bootstrap, topics.centroids))
    assert sorted(int(k) for k in centroids) == list(range(10))
    # (No check on label terms here: the whole stream waits before the member starts, so every batch may be
    # summarised before the first model version exists, and label statistics need centroids.)
    assert all(len(v["vector"]) == 384 for v in centroids.values())


BAD_INPUT: list[tuple[str, bytes | None, bytes]] = [
    ("not_utf8", b"u-bad", b'{"user_id": "u-bad", "text": "caf\xe9"}'),
    ("not_json", b"u-bad", b'{"user_id": "u-bad", "text": '),
    ("not_object", None, b'["a", "list"]'),
    ("missing_user_id", None, b'{"text": "no user here", "ts": 1700000000000}'),
    ("no_text_or_item", b"u-bad", b'{"user_id": "u-bad", "ts": 1700000000000}'),
    ("bad_timestamp", b"u-bad", b'{"user_id": "u-bad", "text": "x y", "ts": "yesterday"}'),
    ("bad_weight", b"u-bad", b'{"user_id": "u-bad", "text": "x y", "weight": -3}'),
    ("too_large", b"u-bad", b'{"user_id": "u-bad", "text": "' + b"a" * 70_000 + b'"}'),
    ("unknown_item", b"u-bad", b'{"user_id": "u-bad", "item_id": "no-such-item"}'),
    ("empty_text", b"u-bad", b'{"user_id": "u-bad", "text": "   "}'),
    ("empty_message", b"u-bad", b""),
    ("bad_user_id", None, b'{"user_id": true, "text": "bool user"}'),
    ("key_mismatch", b"someone-else", b'{"user_id": "u-bad", "text": "mismatched key"}'),
]


def test_bad_input_dead_letters_metrics_and_forget(kafka_bootstrap, tmp_path):
    """Every kind of bad input lands on the dead-letter topic with its reason and coordinates,
    good events around it are applied, /metrics agrees with what was produced, and forget
    removes the user and tombstones the assignment."""
    from kafka import KafkaProducer

    topics = Topics.fresh()
    _create(kafka_bootstrap, topics, events_partitions=3)
    send(kafka_bootstrap, topics.items, _catalog_records())
    scenario = _scenario(n_users=40, events_per_user=6, seed=3, content="both")
    good = _event_records(scenario)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", max_request_size=2_000_000)
    sent_bad = []  # (reason, value, metadata)
    step = max(1, len(good) // (len(BAD_INPUT) + 1))
    futures = []
    for i, (key, value) in enumerate(good):
        futures.append(producer.send(topics.events, key=key, value=value))
        if i % step == 0 and i // step < len(BAD_INPUT):
            reason, bkey, bvalue = BAD_INPUT[i // step]
            sent_bad.append((reason, bvalue, producer.send(topics.events, key=bkey, value=bvalue)))
    producer.flush()
    sent_bad = [(r, v, f.get(timeout=10)) for r, v, f in sent_bad]
    for f in futures:
        f.get(timeout=10)
    producer.close()
    assert len(sent_bad) == len(BAD_INPUT)
    total = len(good) + len(sent_bad)

    svc = ServiceProcess(kafka_bootstrap, topics, tmp_path, "--clusters", "6")
    try:
        svc.wait_ready()
        svc.wait_consumed(total)
        dead = read_all(kafka_bootstrap, topics.dead_letters)
        assert len(dead) == len(BAD_INPUT)
        by_coords = {(r.headers["source_partition"], r.headers["source_offset"]): r for r in dead}
        for reason, value, meta in sent_bad:
            rec = by_coords[(str(meta.partition).encode(), str(meta.offset).encode())]
            assert rec.headers["reason"].decode() == reason
            assert rec.headers["source_topic"].decode() == topics.events
            assert rec.value == value
            assert rec.headers["detail"]
        # metrics agree with what was produced and consumed
        assert svc.value("interest_events_consumed_total") == total
        assert svc.value("interest_events_applied_total") == len(good)
        for reason, _, _ in sent_bad:
            assert svc.value("interest_events_rejected_total", reason=reason) == 1, reason
        assert svc.value("interest_users_tracked") == len(scenario.truth)
        assert svc.value("interest_end_to_end_latency_seconds_count") == len(good)
        svc.wait_all_assigned(len(scenario.truth))
        changes = read_all(kafka_bootstrap, topics.assignments)
        assert svc.value("interest_assignment_changes_total") == len(changes)
        wait_for(lambda: svc.value("interest_consumer_lag_messages", topic=topics.events, partition="0") == 0
                 and svc.value("interest_last_commit_timestamp_seconds") > 0, 30, what="lag 0 and a commit")

        # forget one user
        victim = sorted(scenario.truth)[0]
        done = subprocess.run([*CLI, "forget", victim, "--bootstrap-servers", kafka_bootstrap,
                               "--events-topic", topics.events], cwd=REPO, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        wait_for(lambda: svc.value("interest_users_forgotten_total") == 1, 60, what="forget applied")
        assert svc.value("interest_users_tracked") == len(scenario.truth) - 1
        latest = latest_assignments(read_all(kafka_bootstrap, topics.assignments))
        assert latest[victim] is None, "the forgotten user's assignment is tombstoned"
        assert sum(v is None for v in latest.values()) == 1
        assert svc.stop() == 0
    finally:
        svc.stop()


def test_sigterm_mid_stream_loses_nothing(kafka_bootstrap, tmp_path):
    """SIGTERM mid-stream: the member finishes its batch, commits and exits 0; a restart restores its
    state from the changelogs and continues, and the final state equals an uninterrupted run."""
    from stream.pipeline import Pipeline, SourceRecord
    from stream.settings import ClusteringSettings

    topics = Topics.fresh()
    _create(kafka_bootstrap, topics, events_partitions=1)
    scenario = _scenario(n_users=100, events_per_user=12, seed=5, content="text")
    n = send(kafka_bootstrap, topics.events, _event_records(scenario))
    batch = ["--clusters", "8", "--batch-max-events", "100", "--batch-max-wait-ms", "3000"]
    fixed = {"INTEREST_STREAM_BATCH_CAP_EVENTS": "100"}  # batches of exactly 100, as the reference's

    first = ServiceProcess(kafka_bootstrap, topics, tmp_path, *batch, name="first", env=fixed)
    try:
        first.wait_ready()
        wait_for(lambda: first.value("interest_events_consumed_total") >= 300, 120, what="300 events")
        assert first.stop(signal.SIGTERM) == 0, first.log_tail()
    finally:
        first.stop()
    consumed_first = sum(committed_offsets(kafka_bootstrap, topics.group, topics.events).values())
    assert 300 <= consumed_first < n, "stopped mid-stream"
    assert consumed_first % 100 == 0, "stopped at a batch boundary"

    second = ServiceProcess(kafka_bootstrap, topics, tmp_path, *batch, name="second", env=fixed)
    try:
        second.wait_ready()
        assert second.value("interest_users_tracked") > 0, "profiles restored from the changelog"
        second.wait_consumed(n - consumed_first)
        assert second.value("interest_events_consumed_total") == n - consumed_first, "nothing read twice"
        # This stream is shorter than the model's warm-up: users are assigned by the idle sweep.
        second.wait_all_assigned(len(scenario.truth))
        assert second.stop(signal.SIGTERM) == 0, second.log_tail()
    finally:
        second.stop()
    assert committed_offsets(kafka_bootstrap, topics.group, topics.events) == end_offsets(kafka_bootstrap, topics.events)

    # The uninterrupted run: the same pipeline over the same records in the same batches.
    reference = Pipeline.from_settings(ClusteringSettings(n_clusters=8))
    records = [SourceRecord(value=v, key=k, timestamp_ms=None) for k, v in _event_records(scenario)]
    for i in range(0, n, 100):
        reference.process_batch(records[i:i + 100], now_ms=0)
    reference.reassess(list(reference.profiles.user_ids()), now_ms=0)  # the service's idle sweep at the end
    stored = latest_profiles(kafka_bootstrap, topics.profiles_changelog)
    assert set(stored) == set(reference.profiles.user_ids()) == set(scenario.truth)
    for user, (vector, ref_ms, mass) in stored.items():
        ref_vector, ref_ref_ms, ref_mass = reference.profiles.raw(user)
        assert ref_ms == ref_ref_ms
        np.testing.assert_allclose(vector, ref_vector, atol=1e-5)
        assert mass == pytest.approx(ref_mass, rel=1e-9)
    # The member assesses with the versions its trainer committed (one round trip behind the in-memory
    # reference), so the two models take slightly different paths: compare their quality.
    final = latest_assignments(read_all(kafka_bootstrap, topics.assignments))
    users = sorted(scenario.truth)
    truth = [scenario.truth[u].final_primary for u in users]
    nmi_service = normalized_mutual_info_score(truth, [final[u]["cluster"] for u in users])
    nmi_reference = normalized_mutual_info_score(truth, [reference.tracker.last(u)[0] for u in users])
    assert nmi_service >= nmi_reference - 0.05, (nmi_service, nmi_reference)


def test_batches_grow_under_a_backlog_and_shrink_when_it_is_gone(kafka_bootstrap, tmp_path):
    """20,000 events waiting before the member starts: its batches double up to batch_cap_events; once
    it has caught up, events trickling in at a low rate go out in small batches again."""
    topics = Topics.fresh()
    _create(kafka_bootstrap, topics, events_partitions=2)
    send(kafka_bootstrap, topics.items, _catalog_records())
    scenario = _scenario(n_users=800, events_per_user=25, seed=5)
    records = _event_records(scenario)
    backlog, trickle = records[:20_000], records[20_000:20_200]
    n = send(kafka_bootstrap, topics.events, backlog)
    svc = ServiceProcess(kafka_bootstrap, topics, tmp_path, "--clusters", "8", "--batch-max-events", "256",
                         env={"INTEREST_STREAM_BATCH_CAP_EVENTS": "2048"})
    try:
        svc.wait_ready()
        svc.wait_consumed(n, timeout=240)
        sizes = {labels: v for (name, labels), v in svc.metrics().items() if name == "interest_batch_size_events_bucket"}
        over_1024 = svc.value("interest_batch_size_events_count") - sizes[(("le", "1024.0"),)]
        assert over_1024 >= 3, "under the backlog, batches grew past 1,024 records"
        assert sizes[(("le", "2048.0"),)] == svc.value("interest_batch_size_events_count"), "never past the cap"
        before = svc.value("interest_batch_size_events_count")
        for key, value in trickle:  # a low rate: about 40 events/s
            send(kafka_bootstrap, topics.events, [(key, value)])
            time.sleep(0.025)
        svc.wait_consumed(n + len(trickle), timeout=60)
        assert svc.value("interest_batch_limit_events") == 256, "back to batch_max_events once the lag is gone"
        small = svc.value("interest_batch_size_events_count") - before
        assert small >= 10, "the trickle went out in many small batches"
        assert svc.stop() == 0, svc.log_tail()
    finally:
        svc.stop()
