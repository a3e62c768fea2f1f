"""A real Apache Kafka broker: produce, consume with manual commits, resume; broker restarts keep data.

The broker comes from ``tests/conftest.py`` (a session DevBroker, or ``KAFKA_BOOTSTRAP_SERVERS``).
The first tests need no broker: they check the configuration rendering and the port choice.
"""

from __future__ import annotations

import base64
import random
import socket
import time
import uuid
from pathlib import Path

import pytest

from consumers import devbroker
from consumers.devbroker import Listener, broker_properties, free_port, render_server_properties

# ------------------------------------------------------------------------------ no broker needed


def _parse(text: str) -> dict[str, str]:
    pairs = (ln.split("=", 1) for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def test_rendered_properties_are_a_single_node_kraft_broker(tmp_path: Path) -> None:
    broker_port, controller_port = free_port(), 0
    controller_port = free_port(exclude={broker_port})
    props = _parse(render_server_properties(
        broker_properties(tmp_path / "kraft", broker_port=broker_port, controller_port=controller_port)))

    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == f"1@127.0.0.1:{controller_port}"
    assert props["listeners"] == f"PLAINTEXT://127.0.0.1:{broker_port},CONTROLLER://127.0.0.1:{controller_port}"
    assert props["advertised.listeners"] == f"PLAINTEXT://127.0.0.1:{broker_port}"  # never the controller
    assert props["listener.security.protocol.map"] == "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    assert props["log.dirs"] == str(tmp_path / "kraft")
    assert props["auto.create.topics.enable"] == "false"
    assert props["num.partitions"] == "3"
    for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor",
                "transaction.state.log.min.isr"):
        assert props[key] == "1", key
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert not any("$" in v for v in props.values()), "an unfilled placeholder is left"


def test_extra_listener_and_overrides_extend_the_template(tmp_path: Path) -> None:
    sasl = Listener("SASL_PLAINTEXT", 19094, protocol="SASL_PLAINTEXT")
    values = broker_properties(tmp_path, broker_port=19092, controller_port=19093, extra_listeners=(sasl,))
    text = render_server_properties(values, {"num.partitions": "6", "sasl.enabled.mechanisms": "SCRAM-SHA-512"})
    props = _parse(text)

    assert props["listeners"].split(",")[-1] == "SASL_PLAINTEXT://127.0.0.1:19094"
    assert "SASL_PLAINTEXT://127.0.0.1:19094" in props["advertised.listeners"]
    assert "SASL_PLAINTEXT:SASL_PLAINTEXT" in props["listener.security.protocol.map"]
    assert props["num.partitions"] == "6"  # replaced in place, not duplicated
    assert sum(ln.startswith("num.partitions=") for ln in text.splitlines()) == 1
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    with pytest.raises(devbroker.BrokerError):
        broker_properties(tmp_path, broker_port=19092, controller_port=19092)


def test_free_ports_are_distinct_and_bindable() -> None:
    ports: set[int] = set()
    for _ in range(5):
        ports.add(free_port(exclude=ports))
    assert len(ports) == 5
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # raises if the port were in use


def test_cluster_ids_are_kafka_uuids() -> None:
    ids = {devbroker.new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    for cid in ids:
        raw = base64.urlsafe_b64decode(cid + "==")
        assert len(raw) == 16 and not cid.startswith("-")


def test_pom_pins_a_kafka_4_broker() -> None:
    major, minor, *_ = devbroker.kafka_version().split(".")
    assert (int(major), int(minor)) >= (4, 1)


def test_external_cluster_wins_and_cli_state_round_trips(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka-a:9092, kafka-b:9092")
    assert devbroker.bootstrap_servers_or_start() == ("kafka-a:9092,kafka-b:9092", None)

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert devbroker.load_state() is None
    broker = devbroker.DevBroker(tmp_path / "data", broker_port=19092, controller_port=19093)
    broker.pid = 2**22 + 7  # above pid_max's default: no such process
    path = devbroker.save_state(broker)
    assert path == tmp_path / "interest-stream" / "broker.json"
    loaded = devbroker.load_state()
    assert loaded is not None and loaded.status() == {**broker.status(), "alive": False}
    assert loaded.bootstrap_servers == "127.0.0.1:19092" and not loaded.is_alive()
    devbroker.clear_state()
    assert devbroker.load_state() is None


# ------------------------------------------------------------------------------------ real broker


def _produce(bootstrap: str, topic: str, n: int, users: int, seed: int) -> dict[tuple[int, int], dict]:
    """Send ``n`` JSON events keyed by user id; return {(partition, offset): event} as acknowledged."""
    from kafka import KafkaProducer
    from kafka.serializer import DefaultSerializer, JsonSerializer

    rng = random.Random(seed)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                             key_serializer=DefaultSerializer(), value_serializer=JsonSerializer())
    try:
        pending = []
        for i in range(n):
            event = {"user_id": f"u{rng.randrange(users)}", "type": rng.choice(["view", "click", "search"]),
                     "text": f"event {seed}-{i}", "event_id": f"{seed}-{i}"}
            pending.append((event, producer.send(topic, key=event["user_id"], value=event)))
        producer.flush(timeout=30)
        acked = {}
        for event, future in pending:
            meta = future.get(timeout=30)
            acked[(meta.partition, meta.offset)] = event
        return acked
    finally:
        producer.close(timeout=10)


def _consumer(bootstrap: str, topic: str, group: str):
    from kafka import KafkaConsumer
    from kafka.serializer import DefaultSerializer, JsonSerializer

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                             auto_offset_reset="earliest", client_id=f"test-{group}",
                             value_deserializer=JsonSerializer(), key_deserializer=DefaultSerializer())
    consumer.subscribe([topic])
    return consumer


def _drain(consumer, expected: int, timeout: float = 30.0, settle: float = 1.5) -> list:
    """Poll until ``expected`` records came, then ``settle`` s more to catch any extra (duplicates)."""
    records: list = []
    deadline = time.monotonic() + timeout
    settle_until = None
    while time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=200).values():
            records.extend(batch)
        if len(records) >= expected and settle_until is None:
            settle_until = time.monotonic() + settle
        if settle_until is not None and time.monotonic() >= settle_until:
            break
    return records


def _positions(records) -> list[tuple[int, int]]:
    return [(r.partition, r.offset) for r in records]


@pytest.mark.integration
def test_committed_group_resumes_without_rereading_or_losing(kafka_bootstrap: str, topic_factory) -> None:
    from kafka import TopicPartition

    topic = topic_factory(partitions=3)
    group = f"g-{uuid.uuid4().hex[:8]}"
    first = _produce(kafka_bootstrap, topic, n=120, users=17, seed=1)
    assert {p for p, _ in first} == {0, 1, 2}, "keys should spread over every partition"

    consumer = _consumer(kafka_bootstrap, topic, group)
    got = _drain(consumer, len(first))
    consumer.commit()
    committed = {p: consumer.committed(TopicPartition(topic, p)) for p in range(3)}
    consumer.close(autocommit=False)

    assert sorted(_positions(got)) == sorted(first)  # everything once, nothing twice
    assert all(r.value == first[(r.partition, r.offset)] and r.key == r.value["user_id"] for r in got)
    partitions_of_user: dict[str, set[int]] = {}
    for r in got:
        partitions_of_user.setdefault(r.key, set()).add(r.partition)
    assert all(len(ps) == 1 for ps in partitions_of_user.values()), "a user's events must share a partition"
    assert committed == {p: 1 + max(o for q, o in first if q == p) for p in range(3)}

    second = _produce(kafka_bootstrap, topic, n=60, users=17, seed=2)
    resumed = _consumer(kafka_bootstrap, topic, group)
    try:
        got2 = _drain(resumed, len(second))
        resumed.commit()
    finally:
        resumed.close(autocommit=False)

    positions2 = _positions(got2)
    assert len(positions2) == len(set(positions2)), "duplicates after resuming"
    assert set(positions2) == set(second), "the resumed consumer must read exactly the new events"
    assert not set(positions2) & set(first)


@pytest.mark.integration
def test_uncommitted_records_are_delivered_again(kafka_bootstrap: str, topic_factory) -> None:
    topic = topic_factory(partitions=2)
    group = f"g-{uuid.uuid4().hex[:8]}"
    sent = _produce(kafka_bootstrap, topic, n=40, users=5, seed=3)

    consumer = _consumer(kafka_bootstrap, topic, group)
    got = _drain(consumer, len(sent), settle=0.5)
    consumer.close(autocommit=False)  # crashed before committing
    again = _consumer(kafka_bootstrap, topic, group)
    try:
        got_again = _drain(again, len(sent), settle=0.5)
    finally:
        again.close(autocommit=False)

    assert sorted(_positions(got)) == sorted(sent)
    assert sorted(_positions(got_again)) == sorted(sent)


@pytest.mark.integration
def test_restart_keeps_topics_records_and_committed_offsets(kafka_broker, kafka_bootstrap: str,
                                                          topic_factory) -> None:
    from kafka import TopicPartition

    if kafka_broker is None:
        pytest.skip("KAFKA_BOOTSTRAP_SERVERS names an external cluster: it is not ours to restart")
    topic = topic_factory(partitions=3)
    group = f"g-{uuid.uuid4().hex[:8]}"
    sent = _produce(kafka_bootstrap, topic, n=50, users=9, seed=4)
    consumer = _consumer(kafka_bootstrap, topic, group)
    got = _drain(consumer, 30, settle=0)[:30]  # commit part of it only
    offsets = {}
    for r in got:
        offsets[r.partition] = max(offsets.get(r.partition, 0), r.offset + 1)
    from kafka.structs import OffsetAndMetadata

    consumer.commit({TopicPartition(topic, p): OffsetAndMetadata(o, "", -1) for p, o in offsets.items()})
    consumer.close(autocommit=False)
    ports, data_dir, old_pid = (kafka_broker.broker_port, kafka_broker.controller_port), kafka_broker.data_dir, \
        kafka_broker.pid

    kafka_broker.restart()

    assert (kafka_broker.broker_port, kafka_broker.controller_port) == ports
    assert kafka_broker.data_dir == data_dir and kafka_broker.pid != old_pid and kafka_broker.is_alive()
    everything = _consumer(kafka_bootstrap, topic, f"g-{uuid.uuid4().hex[:8]}")
    try:
        reread = _drain(everything, len(sent), settle=0.5)
    finally:
        everything.close(autocommit=False)
    assert {(r.partition, r.offset): r.value for r in reread} == sent

    resumed = _consumer(kafka_bootstrap, topic, group)
    try:
        rest = _drain(resumed, len(sent) - sum(1 for p, o in sent if o < offsets.get(p, 0)), settle=0.5)
    finally:
        resumed.close(autocommit=False)
    assert sorted(_positions(rest)) == sorted(k for k in sent if k[1] >= offsets.get(k[0], 0))
