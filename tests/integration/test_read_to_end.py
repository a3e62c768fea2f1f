"""``read_to_end`` on a real transactional topic: committed records only, and a prompt end.

A transactional producer writes committed transactions and then one aborted transaction, so each
partition ends in aborted records and an abort marker: offsets no read_committed poll returns. The
reader must return exactly the committed records and stop as soon as its positions reach the end
offsets (the last stable offsets), not wait for a record at ``end - 1`` that never comes.
"""

from __future__ import annotations

import time
import uuid

import pytest

from consumers import changelog
from consumers.topic_reader import read_to_end, read_topic

pytestmark = pytest.mark.integration

PARTITIONS = 2
COMMITTED_TRANSACTIONS = 3
PER_TRANSACTION = 10


@pytest.fixture
def transactional_topic(kafka_bootstrap, topic_factory):
    """A topic holding committed transactions then an aborted one; returns (name, committed records)."""
    from kafka import KafkaProducer

    topic = topic_factory(partitions=PARTITIONS)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all",
                             transactional_id=f"test-read-to-end-{uuid.uuid4().hex[:8]}")
    committed: list[tuple[int, bytes, bytes]] = []
    try:
        producer.init_transactions()
        for t in range(COMMITTED_TRANSACTIONS):
            producer.begin_transaction()
            for i in range(PER_TRANSACTION):
                key, value, partition = f"k{i}".encode(), f"t{t}-r{i}".encode(), i % PARTITIONS
                producer.send(topic, key=key, value=value, partition=partition)
                committed.append((partition, key, value))
            producer.commit_transaction()
        producer.begin_transaction()
        for i in range(PER_TRANSACTION):
            producer.send(topic, key=f"k{i}".encode(), value=b"aborted", partition=i % PARTITIONS)
        producer.flush()
        producer.abort_transaction()
    finally:
        producer.close()
    return topic, committed


def _read(bootstrap: str, topic: str, isolation_level: str, check=None) -> tuple[list, float]:
    """``read_to_end`` over every partition of ``topic`` from the beginning: (records, seconds taken).

    ``check(consumer, tps, ends, records)`` runs before the consumer is closed.
    """
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             isolation_level=isolation_level, client_id="test-read-to-end")
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        got: list = []
        started = time.monotonic()
        ends = read_to_end(consumer, tps, lambda tp, records: got.extend(records), timeout_s=30)
        elapsed = time.monotonic() - started
        if check is not None:
            check(consumer, tps, ends, got)
        return got, elapsed
    finally:
        consumer.close()


def test_read_committed_returns_the_committed_records_and_ends_promptly(kafka_bootstrap, transactional_topic):
    topic, committed = transactional_topic

    def positions_at_the_end(consumer, tps, ends, got):
        for tp in tps:
            assert consumer.position(tp) == ends[tp]
            last_record = max(r.offset for r in got if r.partition == tp.partition)
            # the end lies past the last committed record: commit markers, aborted records, the abort marker
            assert ends[tp] > last_record + 1
        assert consumer.paused() == set()

    got, elapsed = _read(kafka_bootstrap, topic, "read_committed", positions_at_the_end)
    assert sorted((r.partition, r.key, r.value) for r in got) == sorted(committed)
    assert elapsed < 10, f"read_to_end took {elapsed:.1f} s"


def test_read_uncommitted_sees_the_aborted_records_too(kafka_bootstrap, transactional_topic):
    topic, committed = transactional_topic
    got, _ = _read(kafka_bootstrap, topic, "read_uncommitted")
    assert sum(r.value == b"aborted" for r in got) == PER_TRANSACTION
    assert len(got) == len(committed) + PER_TRANSACTION


def test_the_readers_built_on_it_see_only_committed_records(kafka_bootstrap, transactional_topic):
    topic, committed = transactional_topic
    started = time.monotonic()
    contents = read_topic(kafka_bootstrap, topic, timeout_s=30)
    assert sorted((r.partition, r.key, r.value) for r in contents.history) == sorted(committed)
    last = {key: value for _, key, value in committed}
    assert contents.latest == last

    options = {"bootstrap_servers": kafka_bootstrap}
    latest = changelog.read_latest(options, topic, list(range(PARTITIONS)), timeout_s=30)
    assert {key: value for key, (_, value) in latest.items()} == last
    assert changelog.read_from(options, topic, 0, 0, key=b"k0", timeout_s=30) == [
        f"t{t}-r0".encode() for t in range(COMMITTED_TRANSACTIONS)]
    assert time.monotonic() - started < 20
