"""Fault tests on the real broker: a crash storm, a broker restart and a rebalance with a killed member;
with them the shared model's equivalence test (the same events through one member and through three).

Each compares the service's final state, as other processes see it in Kafka (the profiles
changelog, the assignments topic read with ``read_committed``, the model topic and the
statistics log), with a fault-free run of the same events through the same pipeline in this
process.
"""

from __future__ import annotations

import json
import random
import re
import signal
import threading
import time

import numpy as np
import pytest
from poison import poison_messages
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
    wait_settled,
)
from sklearn.metrics import normalized_mutual_info_score

from stream.corpora import demo_corpus
from stream.simulation import simulate

pytestmark = [pytest.mark.integration, pytest.mark.slow]

K = 10
HYSTERESIS = 0.02


@pytest.fixture(scope="module")
def encoder():
    """The encoder the service processes use (the default backend), for the fault-free reference."""
    from stream.encoders import make_encoder
    from stream.settings import ClusteringSettings

    return make_encoder(ClusteringSettings())


def _create(bootstrap: str, topics: Topics, partitions: int) -> None:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics({topics.events: {"num_partitions": partitions, "replication_factor": 1},
                         topics.items: {"num_partitions": 1, "replication_factor": 1,
                                        "configs": {"cleanup.policy": "compact"}}}, wait_for_metadata=True)
    admin.close()
    items = [(d.item_id.encode(), json.dumps({"item_id": d.item_id, "text": d.text}).encode())
             for d in demo_corpus().documents]
    send(bootstrap, topics.items, items)


def _records(scenario) -> list[tuple[bytes, bytes]]:
    return [(e["user_id"].encode(), json.dumps(e).encode()) for e in scenario.events]


class Feeder(threading.Thread):
    """Produces records at a steady rate in the background (the stream keeps flowing through faults)."""

    def __init__(self, bootstrap: str, topic: str, records: list, rate: float) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.records, self.rate = bootstrap, topic, records, rate
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        from kafka import KafkaProducer

        try:
            producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5,
                                     delivery_timeout_ms=180_000, request_timeout_ms=30_000,
                                     max_request_size=2 * 1024 * 1024)
            start = time.monotonic()
            futures = []
            for i, (key, value) in enumerate(self.records):
                ahead = start + i / self.rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
                futures.append(producer.send(self.topic, key=key, value=value))
                self.sent += 1
            producer.flush(timeout=180)
            for f in futures:
                f.get(timeout=0)
            producer.close()
        except BaseException as exc:  # reported by the test
            self.error = exc


def _reference(encoder, scenario, batch: int):
    """The fault-free run: the same pipeline over the same events, then settled like an idle service."""
    from stream.catalog import ItemCatalog
    from stream.pipeline import Pipeline, SourceRecord
    from stream.settings import ClusteringSettings

    catalog = ItemCatalog()
    for d in demo_corpus().documents:
        catalog.upsert(d.item_id, d.text)
    pipe = Pipeline(ClusteringSettings(n_clusters=K, hysteresis=HYSTERESIS), encoder, catalog)
    records = [SourceRecord(value=v, key=k, timestamp_ms=None) for k, v in _records(scenario)]
    for i in range(0, len(records), batch):
        pipe.process_batch(records[i:i + batch], now_ms=0)
    pipe.reassess(list(pipe.profiles.user_ids()), 0)
    return pipe


def _final_model(bootstrap: str, topics: Topics, encoder):
    """The model every member follows at the end: the newest version on the model topic."""
    from consumers.changelog import read_latest
    from stream.kmeans import MiniBatchKMeans
    from stream.shared_model import VERSION_KEY, decode_model_version

    latest = read_latest({"bootstrap_servers": bootstrap}, topics.model, [0])
    version = decode_model_version(latest[VERSION_KEY][1])
    model = MiniBatchKMeans(n_clusters=K)
    model.follow(version.centroid_matrix(), version.count_vector(), version.version, version.n_applied,
                 version.reservoir_id_vector())
    return model


def _check_final_state(bootstrap: str, topics: Topics, scenario, reference, encoder, settled: int,
                       nmi_tolerance: float):
    """Profiles exact, no duplicate change record, last records consistent with the final state, quality kept."""
    assert committed_offsets(bootstrap, topics.group, topics.events) == end_offsets(bootstrap, topics.events)
    # 0. every state record in its user's own partition (a rejected record never writes state elsewhere)
    assert stray_records(bootstrap, topics.profiles_changelog) == []
    assert stray_records(bootstrap, topics.assignments) == []
    # 1. every profile equal to the fault-free run's: nothing lost, nothing applied twice
    stored = latest_profiles(bootstrap, topics.profiles_changelog)
    assert set(stored) == set(reference.profiles.user_ids()) == set(scenario.truth)
    for user, (vector, ref_ms, mass) in stored.items():
        ref_vector, ref_ref_ms, ref_mass = reference.profiles.raw(user)
        assert ref_ms == ref_ref_ms, user
        a = vector / np.linalg.norm(vector)
        b = ref_vector / np.linalg.norm(ref_vector)
        np.testing.assert_allclose(a, b, atol=1e-5, err_msg=user)
        assert mass == pytest.approx(ref_mass, rel=1e-6), f"{user}: decayed event mass differs (lost or doubled)"
    # 2. a read_committed reader sees no duplicate change record
    history: dict[str, list[dict]] = {}
    for r in read_all(bootstrap, topics.assignments):
        history.setdefault(r.key.decode(), []).append(json.loads(r.value))
    for user, recs in history.items():
        for before, after in zip(recs, recs[1:], strict=False):
            interests = [{i["cluster"] for i in rec.get("interests", [])} for rec in (before, after)]
            assert before["cluster"] != after["cluster"] or interests[0] != interests[1], (
                f"{user}: repeated change record {after}")
            assert after["previous_cluster"] == before["cluster"], f"{user}: change does not follow the last one"
    # 3. each user's last record is the assignment the final state implies (up to the hysteresis margin)
    model = _final_model(bootstrap, topics, encoder)
    assert model.version == settled, "the newest version on the model topic is the one every member settled on"
    users = sorted(stored)
    directions = np.stack([stored[u][0] / np.linalg.norm(stored[u][0]) for u in users])
    sims = model.similarities(directions)
    last = {u: history[u][-1]["cluster"] for u in users}
    for i, user in enumerate(users):
        best = int(np.argmax(sims[i]))
        assert sims[i, best] - sims[i, last[user]] <= HYSTERESIS + 1e-5, (
            f"{user}: last record says {last[user]}, the final state says {best}")
    # 4. clustering quality against the scenario's truth, next to the fault-free run
    truth = [scenario.truth[u].final_primary for u in users]
    nmi_faults = normalized_mutual_info_score(truth, [last[u] for u in users])
    nmi_clean = normalized_mutual_info_score(truth, [reference.tracker.last(u)[0] for u in users])
    # Faults must not cost quality: at most nmi_tolerance below the fault-free run. A redone batch
    # has other boundaries, so the model takes another path; it may also land higher (measured
    # once: 0.776 with faults vs 0.766 without), which is no loss.
    assert nmi_faults >= nmi_clean - nmi_tolerance, (nmi_faults, nmi_clean)
    return nmi_faults, nmi_clean


def _check_model_log(bootstrap: str, topics: Topics):
    """The model topic's versions never go back, and the final one includes every committed statistics
    record exactly once: its applied counts equal the sums over the statistics log up to its offset."""
    from stream.kmeans import BatchStatistics
    from stream.shared_model import VERSION_KEY, decode_model_version, decode_statistics

    versions = [decode_model_version(r.value) for r in read_all(bootstrap, topics.model, timeout=60)
                if r.key == VERSION_KEY and r.value is not None]
    assert versions, "the trainer published model versions"
    numbers = [v.version for v in versions]
    assert numbers == sorted(numbers), f"model versions went back: {numbers}"
    final = versions[-1]
    committed = read_all(bootstrap, topics.statistics, timeout=60)
    log = [r for r in committed if r.offset < final.statistics_offset]
    assert len(log) == len(committed), "the final version includes every committed statistics record"
    points = sum(BatchStatistics.from_bytes(decode_statistics(r.value).stats).n_points for r in log)
    assert (final.applied_records, final.applied_points) == (len(log), points), (
        "a statistics record was applied twice or lost")
    return versions


@pytest.mark.parametrize("n_members", [
    pytest.param(1, id="one-member"),
    pytest.param(3, id="three-members"),
])
def test_crash_storm(kafka_bootstrap, tmp_path, encoder, n_members):
    """20,000+ events with 1,000 malformed records of every kind mixed in (among them valid events of
    real users under non-UTF-8 or foreign keys), while members are SIGKILLed at random moments at
    least 10 times and restarted: profiles equal the fault-free run's, every bad record is
    dead-lettered exactly once, and no state record lands outside its user's partition. With three
    members any of them dies, the trainer included: the group still publishes one model whose
    quality is that of the fault-free run, and every user's last record agrees with it."""
    topics = Topics.fresh()
    _create(kafka_bootstrap, topics, partitions=3)
    corpus = demo_corpus()
    scenario = simulate(corpus, n_users=700, mean_events_per_user=30, content="item_id",
                        drift_fraction=0.2, seed=21)
    valid = _records(scenario)
    assert len(valid) >= 20_000
    bad = poison_messages(1000, seed=21, known_items=[d.item_id for d in corpus.documents],
                          real_users=scenario.truth)
    assert any(p.kind == "foreign_key" and p.key.startswith(b"\xff") for p in bad)
    rng_mix = random.Random(21)
    slots = sorted(rng_mix.sample(range(len(valid) + len(bad)), len(bad)))
    records, good, taken = [], iter(valid), 0
    for i in range(len(valid) + len(bad)):  # valid events keep their order; bad ones fall in between
        if taken < len(bad) and slots[taken] == i:
            records.append((bad[taken].key, bad[taken].value))
            taken += 1
        else:
            records.append(next(good))
    feeder = Feeder(kafka_bootstrap, topics.events, records, rate=300)
    feeder.start()
    args = ["--clusters", str(K), "--hysteresis", str(HYSTERESIS), "--batch-max-events", "200",
            "--model-snapshot-every", "5"]
    rng = random.Random(7)
    kills = 0
    members = {f"m{i}": ServiceProcess(kafka_bootstrap, topics, tmp_path, *args, name=f"storm-m{i}-0",
                                       instance_id=f"storm-m{i}") for i in range(n_members)}
    trainer_kills = 0
    try:
        for member in members.values():
            member.wait_ready()
        while kills < 10:
            time.sleep(rng.uniform(0.5, 4.0))
            name = rng.choice(sorted(members))
            victim = members[name]
            trainer_kills += victim.value("interest_trainer_role") == 1
            victim.stop(signal.SIGKILL)
            kills += 1
            members[name] = ServiceProcess(kafka_bootstrap, topics, tmp_path, *args, name=f"storm-{name}-{kills}",
                                           instance_id=f"storm-{name}")
            members[name].wait_ready()
        feeder.join(300)
        assert feeder.error is None and feeder.sent == len(records)
        wait_for(lambda: committed_offsets(kafka_bootstrap, topics.group, topics.events)
                 == end_offsets(kafka_bootstrap, topics.events), 300, interval=2, what="all events committed")
        consumed_final = sum(m.value("interest_events_consumed_total") for m in members.values())
        assert consumed_final < len(records), "the killed members did part of the work"
        settled = wait_settled(members.values())  # the last model version adopted and swept everywhere
        for member in members.values():
            assert member.stop(signal.SIGTERM) == 0, member.log_tail()
    finally:
        for member in members.values():
            member.stop(signal.SIGKILL)
    restored = sum(bool(re.search(r"restored partitions \[[\d, ]+\]: [1-9]\d* profiles", p.read_text()))
                   for p in tmp_path.glob("storm*.log"))
    assert restored >= 5, "most restarts restored state written by a killed predecessor"
    dead = read_all(kafka_bootstrap, topics.dead_letters, timeout=60)
    coordinates = {(r.headers["source_partition"], r.headers["source_offset"]) for r in dead}
    if len(dead) != len(coordinates):
        from collections import Counter

        seen = Counter((r.headers["source_partition"], r.headers["source_offset"]) for r in dead)
        dups = [r for r in dead if seen[(r.headers["source_partition"], r.headers["source_offset"])] > 1]
        detail = Counter((r.headers["source_topic"], r.headers["reason"], r.headers["source_partition"]) for r in dups)
        raise AssertionError(f"{len(dead)} dead letters for {len(coordinates)} records; duplicated: {dict(detail)}; "
                             f"first: {[(r.partition, r.offset, r.headers['source_offset']) for r in dups[:6]]}")
    if len(coordinates) != len(bad):
        from collections import Counter

        got = Counter(r.value for r in dead)
        missing = [p for p in bad if got[p.value if p.value is not None else b""] == 0]
        raise AssertionError(f"{len(coordinates)} records dead-lettered of {len(bad)} bad ones; never dead-lettered: "
                             f"{[(p.kind, p.expected, p.key[:20]) for p in missing[:5]]}")
    assert len(dead) == len(coordinates) == len(bad), "every bad record dead-lettered exactly once"
    assert sorted(r.value for r in dead) == sorted(p.value if p.value is not None else b"" for p in bad)
    reference = _reference(encoder, scenario, batch=200)
    nmi_faults, nmi_clean = _check_final_state(kafka_bootstrap, topics, scenario, reference, encoder, settled, 0.02)
    _check_model_log(kafka_bootstrap, topics)
    print(f"crash storm, {n_members} member(s): {kills} kills ({trainer_kills} of the trainer), {len(valid)} "
          f"events + {len(bad)} bad records, NMI {nmi_faults:.4f} vs fault-free {nmi_clean:.4f}")


def _run_group(bootstrap: str, tmp_path, scenario, n_members: int, name: str):
    """The scenario's events, fed at a steady rate, through ``n_members`` fault-free member processes.
    Returns the topics, the settled model version and the events each member consumed."""
    topics = Topics.fresh()
    _create(bootstrap, topics, partitions=6)
    feeder = Feeder(bootstrap, topics.events, _records(scenario), rate=300)
    args = ["--clusters", str(K), "--hysteresis", str(HYSTERESIS), "--batch-max-events", "200"]
    members = [ServiceProcess(bootstrap, topics, tmp_path, *args, name=f"{name}-{i}", instance_id=f"{name}-{i}")
               for i in range(n_members)]
    try:
        for member in members:
            member.wait_ready()
        feeder.start()
        feeder.join(300)
        assert feeder.error is None and feeder.sent == len(scenario.events)
        wait_for(lambda: committed_offsets(bootstrap, topics.group, topics.events)
                 == end_offsets(bootstrap, topics.events), 300, interval=2, what="all events committed")
        settled = wait_settled(members)
        consumed = [member.value("interest_events_consumed_total") for member in members]
        for member in members:
            assert member.stop(signal.SIGTERM) == 0, member.log_tail()
    finally:
        for member in members:
            member.stop(signal.SIGKILL)
    return topics, settled, consumed


def test_three_members_publish_the_one_id_space_of_one_member(kafka_bootstrap, tmp_path, encoder):
    """The same events through one member and through three (one process each, no faults): the three
    share one model, so every user's last record, whichever member published it, is the nearest
    centroid (within the hysteresis) of the one final model version all members settled on; profiles
    are exact in both runs, and the three-member clustering is as good as the single member's (NMI
    against the truth at most 0.02 below)."""
    scenario = simulate(demo_corpus(), n_users=700, mean_events_per_user=30, content="item_id",
                        drift_fraction=0.2, seed=21)
    reference = _reference(encoder, scenario, batch=200)
    nmi = {}
    for n_members in (1, 3):
        topics, settled, consumed = _run_group(kafka_bootstrap, tmp_path, scenario, n_members, f"equal{n_members}")
        assert sum(consumed) >= len(scenario.events) and min(consumed) > 0, consumed  # each member worked
        nmi[n_members], nmi_clean = _check_final_state(kafka_bootstrap, topics, scenario, reference, encoder,
                                                       settled, 0.02)
        _check_model_log(kafka_bootstrap, topics)
    # No quality lost by sharing the model: at most 0.02 below the single member. Batches of three members
    # hold other events than one member's, so the model takes another path; measured, it can also land
    # higher than that (0.784 against 0.763 in one of the first two runs), which is no loss.
    assert nmi[3] >= nmi[1] - 0.02, nmi
    print(f"equivalence: NMI one member {nmi[1]:.4f}, three members {nmi[3]:.4f}, in-process {nmi_clean:.4f}")


def test_broker_restart_mid_stream(kafka_bootstrap, kafka_broker, tmp_path, encoder):
    """The broker stops and comes back (same data) mid-stream: the member rides through and ends exact."""
    if kafka_broker is None:
        pytest.skip("KAFKA_BOOTSTRAP_SERVERS names an external cluster: this test restarts its own broker")
    topics = Topics.fresh()
    _create(kafka_bootstrap, topics, partitions=3)
    scenario = simulate(demo_corpus(), n_users=200, mean_events_per_user=20, content="item_id", seed=4)
    records = _records(scenario)
    feeder = Feeder(kafka_bootstrap, topics.events, records, rate=250)
    member = ServiceProcess(kafka_bootstrap, topics, tmp_path, "--clusters", str(K), "--hysteresis",
                            str(HYSTERESIS), "--batch-max-events", "200", instance_id="survivor")
    try:
        member.wait_ready()
        feeder.start()
        wait_for(lambda: member.value("interest_events_consumed_total") >= 1000, 120, what="1000 events")
        kafka_broker.restart(keep_data=True, down_seconds=5)
        feeder.join(300)
        assert feeder.error is None and feeder.sent == len(records)

        def all_committed() -> bool:
            assert member.proc.poll() is None, "the member survived the broker restart"
            return committed_offsets(kafka_bootstrap, topics.group, topics.events) == end_offsets(
                kafka_bootstrap, topics.events)

        wait_for(all_committed, 300, interval=2, what="all events committed")
        settled = wait_settled([member])
        assert member.stop(signal.SIGTERM) == 0, member.log_tail()
    finally:
        member.stop(signal.SIGKILL)
    reference = _reference(encoder, scenario, batch=200)
    # State is compared exactly (profiles, event mass, records). The model is not: the batch cut by
    # the outage is redone with other boundaries, and on 200 users and k=10 two trajectories that
    # differ only in batch boundaries were measured up to 0.09 NMI apart (crash storm: 21k events,
    # 0.01). So the quality bound here only catches a model that was lost or broken by the restart.
    _check_final_state(kafka_bootstrap, topics, scenario, reference, encoder, settled, 0.15)


def test_rebalance_then_kill(kafka_bootstrap, tmp_path, encoder):
    """A second member joins mid-stream, then the first is SIGKILLed: the survivor restores every
    partition's profiles, nothing is lost, and the final profiles equal the single-member run's."""
    topics = Topics.fresh()
    _create(kafka_bootstrap, topics, partitions=4)
    scenario = simulate(demo_corpus(), n_users=300, mean_events_per_user=25, content="item_id", seed=9)
    records = _records(scenario)
    feeder = Feeder(kafka_bootstrap, topics.events, records, rate=150)
    args = ["--clusters", str(K), "--hysteresis", str(HYSTERESIS), "--batch-max-events", "200"]
    first = ServiceProcess(kafka_bootstrap, topics, tmp_path, *args, name="first", instance_id="a")
    second = None
    try:
        first.wait_ready()
        feeder.start()
        wait_for(lambda: first.value("interest_events_consumed_total") >= 1000, 120, what="1000 events")
        second = ServiceProcess(kafka_bootstrap, topics, tmp_path, *args, name="second", instance_id="b")
        second.wait_ready()
        wait_for(lambda: second.value("interest_events_consumed_total") >= 100, 120, what="second member working")
        # both members hold partitions (the first one may still be restoring what it gained back)
        wait_for(lambda: first.value("interest_ready") == 1, 60, what="the first member ready again")
        assert feeder.is_alive(), "the first member dies mid-stream"
        first.stop(signal.SIGKILL)
        wait_for(lambda: second.value("interest_users_tracked") == len(scenario.truth), 120,
                 what="the survivor restored every partition")
        feeder.join(300)
        assert feeder.error is None
        wait_for(lambda: committed_offsets(kafka_bootstrap, topics.group, topics.events)
                 == end_offsets(kafka_bootstrap, topics.events), 300, interval=2, what="all events committed")
        settled = wait_settled([second])
        assert second.stop(signal.SIGTERM) == 0, second.log_tail()
    finally:
        first.stop(signal.SIGKILL)
        if second is not None:
            second.stop(signal.SIGKILL)
    log = (tmp_path / next(p.name for p in tmp_path.glob("second-*.log"))).read_text()
    assert re.search(r"restored partitions \[[\d, ]+\]: [1-9]\d* profiles", log), "the survivor restored state"
    reference = _reference(encoder, scenario, batch=200)
    # Two members train two models for a while, so cluster quality may differ more than in one process.
    _check_final_state(kafka_bootstrap, topics, scenario, reference, encoder, settled, 0.05)


def _trainer(members: dict) -> str | None:
    """The name of the member that holds the trainer role now (None if none does)."""
    holders = [name for name, m in members.items() if m.proc.poll() is None and m.value("interest_trainer_role") == 1]
    assert len(holders) <= 1, f"two trainers at once: {holders}"
    return holders[0] if holders else None


def test_trainer_failover_and_membership_changes(kafka_bootstrap, tmp_path, encoder):
    """Three members share one model; the trainer is SIGKILLed twice mid-stream, then a fourth member
    joins and one leaves. Another member takes the role within the session timeout plus a few
    seconds, model versions never go back, no statistics record is applied twice or lost, users
    move with their partitions and nothing is lost, and every member's users are assigned in the
    one id space of the final model, with the quality of the fault-free single-process run."""
    topics = Topics.fresh()
    _create(kafka_bootstrap, topics, partitions=6)
    scenario = simulate(demo_corpus(), n_users=400, mean_events_per_user=30, content="item_id", seed=13)
    records = _records(scenario)
    feeder = Feeder(kafka_bootstrap, topics.events, records, rate=80)
    session_s = 6
    args = ["--clusters", str(K), "--hysteresis", str(HYSTERESIS), "--batch-max-events", "200",
            "--model-snapshot-every", "5"]
    env_session = {"INTEREST_STREAM_SESSION_TIMEOUT_MS": str(session_s * 1000)}

    def start(name: str, generation: int = 0) -> ServiceProcess:
        return ServiceProcess(kafka_bootstrap, topics, tmp_path, *args, name=f"{name}-{generation}",
                              instance_id=name, env=env_session)

    members = {name: start(name) for name in ("a", "b", "c")}
    takeovers = []
    try:
        for m in members.values():
            m.wait_ready()
        feeder.start()
        for kill in range(2):
            wait_for(lambda k=kill: sum(m.value("interest_events_consumed_total") for m in members.values())
                     >= 2000 * (k + 1), 180, what="events flowing")
            trainer = wait_for(lambda: _trainer(members), 60, what="a trainer")
            members[trainer].stop(signal.SIGKILL)
            killed_at = time.monotonic()
            survivors = {n: m for n, m in members.items() if n != trainer}
            new = wait_for(lambda s=survivors: _trainer(s), session_s + 30, what="another member takes the role")
            takeovers.append((trainer, new, time.monotonic() - killed_at))
            members[trainer] = start(trainer, kill + 1)
            if kill == 0:
                members["d"] = start("d")  # a fourth member joins mid-stream ...
            for m in members.values():
                m.wait_ready()
            if kill == 0:
                wait_for(lambda: members["d"].value("interest_users_tracked") > 0, 120, what="d owns users")
                assert feeder.is_alive(), "the fourth member joined mid-stream"
        leaver = next(n for n in ("a", "b", "c") if n != _trainer(members))
        assert feeder.is_alive(), "one member leaves mid-stream"
        assert members[leaver].stop(signal.SIGTERM) == 0, members[leaver].log_tail()  # ... and one leaves
        del members[leaver]
        feeder.join(300)
        assert feeder.error is None and feeder.sent == len(records)
        wait_for(lambda: committed_offsets(kafka_bootstrap, topics.group, topics.events)
                 == end_offsets(kafka_bootstrap, topics.events), 300, interval=2, what="all events committed")
        assert sum(m.value("interest_users_tracked") for m in members.values()) == len(scenario.truth)
        settled = wait_settled(members.values())  # includes: no member behind the newest version
        for m in members.values():
            assert m.stop(signal.SIGTERM) == 0, m.log_tail()
    finally:
        for m in members.values():
            m.stop(signal.SIGKILL)
    for old, new, seconds in takeovers:
        assert seconds <= session_s + 10, f"{new} took the role {seconds:.1f} s after {old} died"
    logs = "".join(p.read_text() for p in tmp_path.glob("*.log"))
    assert logs.count("took the trainer role") >= 3
    reference = _reference(encoder, scenario, batch=200)
    nmi_group, nmi_clean = _check_final_state(kafka_bootstrap, topics, scenario, reference, encoder, settled, 0.02)
    versions = _check_model_log(kafka_bootstrap, topics)
    print(f"shared model: takeovers {[(o, n, round(s, 1)) for o, n, s in takeovers]}, {len(versions)} versions, "
          f"NMI {nmi_group:.4f} vs fault-free single process {nmi_clean:.4f}")
