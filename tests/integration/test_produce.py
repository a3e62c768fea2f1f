"""``interest-stream produce`` against a real broker: counts, keys, decodability, bad lines unchanged."""

from __future__ import annotations

import json
import time

import pytest
from typer.testing import CliRunner

from consumers.cli import app
from consumers.commands.produce import demo_records, send_records
from stream.events import BehaviourEvent, Rejection, decode_event

pytestmark = pytest.mark.integration


def read_all(bootstrap: str, topic: str, expected: int, timeout_s: float = 30.0) -> list:
    """Every record of ``topic`` from the beginning, waiting until ``expected`` have arrived."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=1000)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        assert parts, f"topic {topic} has no partitions"
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        records: list = []
        deadline = time.monotonic() + timeout_s
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        # anything beyond the expected count would be a bug too: one more short poll
        for batch in consumer.poll(timeout_ms=300).values():
            records.extend(batch)
        return records
    finally:
        consumer.close()


def invoke(*args: str) -> None:
    result = CliRunner().invoke(app, ["produce", *args])
    assert result.exit_code == 0, result.output


def test_demo_events_and_catalog(kafka_bootstrap, topic_factory):
    events, items = topic_factory(partitions=3, suffix="events"), topic_factory(partitions=2, suffix="items")
    invoke("--demo", "--users", "12", "--events-per-user", "6", "--seed", "5", "--quiet",
           "--bootstrap-servers", kafka_bootstrap, "--topic", events, "--catalog-topic", items)

    _, expected = demo_records(users=12, events_per_user=6, seed=5)
    records = read_all(kafka_bootstrap, events, expected)
    assert len(records) == expected
    users = set()
    for record in records:
        event = decode_event(record.value, key=record.key, record_ts_ms=record.timestamp)
        assert isinstance(event, BehaviourEvent), event
        assert record.key == event.user_id.encode()
        users.add(event.user_id)
    assert len(users) == 12
    by_user: dict[str, list[int]] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        by_user.setdefault(record.key.decode(), []).append(json.loads(record.value)["ts"])
    assert all(ts == sorted(ts) for ts in by_user.values())  # one partition per user keeps their order

    catalog = read_all(kafka_bootstrap, items, 320)
    assert len(catalog) >= 320
    values = {r.key.decode(): json.loads(r.value) for r in catalog}
    assert len(values) >= 300 and all(v["item_id"] == k and v["text"] and v["topic"] for k, v in values.items())


def test_file_replay_sends_every_line_unchanged(kafka_bootstrap, topic_factory, tmp_path):
    topic = topic_factory(partitions=1)
    lines = [
        b'{"user_id": "u1", "ts": 1700000000000, "type": "view", "text": "Trail running shoes"}',
        b'{"user_id": 42, "text": "Dutch oven", "type": "purchase"}',
        b'{"user_id": "u1", "text": "broken", ',  # not JSON: no key, sent anyway
        b"\xff\xfe not utf-8",
        b'{"type": "click", "text": "no user"}',
        b'{"user_id": "u2", "ts": "yesterday", "text": "bad timestamp"}',
        b'{"type": "forget", "user_id": "u1"}',
    ]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines[:3]) + b"\r\n" + b"\n".join(lines[3:]) + b"\n\n")
    invoke("--file", str(path), "--quiet", "--bootstrap-servers", kafka_bootstrap, "--topic", topic)

    records = read_all(kafka_bootstrap, topic, len(lines))
    assert [r.value for r in records] == lines
    assert [r.key for r in records] == [b"u1", b"42", None, None, None, b"u2", b"u1"]
    decoded = [decode_event(r.value, key=r.key, record_ts_ms=r.timestamp) for r in records]
    assert [getattr(d, "reason", type(d).__name__) for d in decoded] == [
        "BehaviourEvent", "BehaviourEvent", "not_json", "not_utf8", "missing_user_id", "bad_timestamp", "ForgetEvent",
    ]
    assert all(isinstance(d, Rejection) for d in decoded[2:6])


def test_missing_topic_is_created(kafka_bootstrap, tmp_path):
    import uuid

    from kafka import KafkaAdminClient

    topic = f"it.produce-created.{uuid.uuid4().hex[:8]}"
    path = tmp_path / "e.jsonl"
    path.write_text("".join(json.dumps({"user_id": f"u{i}", "text": "x"}) + "\n" for i in range(10)))
    invoke("--file", str(path), "-q", "-b", kafka_bootstrap, "--topic", topic, "--partitions", "2")
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        assert len(admin.describe_topics([topic])[0]["partitions"]) == 2
        assert len(read_all(kafka_bootstrap, topic, 10)) == 10
    finally:
        admin.delete_topics([topic])
        admin.close()


def test_rate_limit(kafka_bootstrap, topic_factory):
    topic = topic_factory(partitions=1)
    records = [(b"u", b'{"user_id": "u", "text": "x"}')] * 10
    stats = send_records(kafka_bootstrap, topic, records, total=10, rate=20, progress=False)
    assert (stats.sent, stats.failed) == (10, 0)
    assert stats.seconds >= 9 / 20  # the 10th record may not leave before 0.45 s
