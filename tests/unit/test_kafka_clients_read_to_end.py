"""``read_to_end``: reading stops when every position reaches the end offset taken at the start.

A fake consumer serves a log in which some offsets hold no record a poll can return: commit and
abort markers, and (read_committed) the records of an aborted transaction. Like kafka-python's
fetcher, it moves the position past them, sometimes in a poll that returns nothing at all. A loop
that waited for the record at ``end - 1`` would wait forever on such a partition.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import pytest

from consumers import changelog, topic_reader
from consumers.topic_reader import read_to_end

MARKER = object()  # a commit/abort marker, or a record of an aborted transaction: never returned


class TP(NamedTuple):
    topic: str
    partition: int


class Rec(NamedTuple):
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None


class FakeConsumer:
    """A consumer over fixed logs: ``{partition: [value, MARKER, ...]}`` (the index is the offset).

    Each poll hands out at most ``chunk`` log entries per partition (records and markers alike), so
    the trailing markers of a partition arrive in a poll of their own that returns no record.
    """

    def __init__(self, logs: dict[int, list], topic: str = "t", chunk: int = 2, **options) -> None:
        self.topic, self.chunk, self.options = topic, chunk, options
        self.logs = {TP(topic, p): list(entries) for p, entries in logs.items()}
        self.positions: dict[TP, int] = {}
        self.paused_set: set[TP] = set()
        self.polls = 0
        self.closed = False

    # --- what the readers call
    def partitions_for_topic(self, topic):
        return {tp.partition for tp in self.logs if tp.topic == topic} or None

    def assign(self, tps):
        self.positions = {tp: 0 for tp in tps}

    def seek_to_beginning(self, *tps):
        for tp in tps or self.positions:
            self.positions[tp] = 0

    def seek(self, tp, offset):
        self.positions[tp] = offset

    def beginning_offsets(self, tps):
        return {tp: 0 for tp in tps}

    def end_offsets(self, tps, timeout_ms=None):
        return {tp: len(self.logs[tp]) for tp in tps}

    def position(self, tp):
        return self.positions[tp]

    def pause(self, *tps):
        self.paused_set.update(tps)

    def resume(self, *tps):
        self.paused_set.difference_update(tps)

    def paused(self):
        return set(self.paused_set)

    def poll(self, timeout_ms=0, max_records=None):
        self.polls += 1
        out = {}
        for tp, start in self.positions.items():
            if tp in self.paused_set:
                continue
            entries = self.logs[tp][start:start + self.chunk]
            records = [Rec(tp.topic, tp.partition, start + i, 1000 + start + i, b"p%d-k%d" % (tp.partition, start + i),
                           value)
                       for i, value in enumerate(entries) if value is not MARKER]
            self.positions[tp] = start + len(entries)
            if records:
                out[tp] = records
        return out

    def close(self, autocommit=True):
        self.closed = True


def _collect():
    got: list[Rec] = []
    return got, lambda tp, records: got.extend(records)


def test_trailing_transaction_markers_end_the_read_on_position():
    # p0: two committed transactions, each closed by its commit marker (the last offset is a marker).
    # p1: a committed record, its marker, then an aborted transaction: two hidden records and the abort marker.
    consumer = FakeConsumer({0: [b"a", b"b", MARKER, b"c", MARKER], 1: [b"x", MARKER, MARKER, MARKER, MARKER]})
    tps = [TP("t", 0), TP("t", 1)]
    consumer.assign(tps)
    got, keep = _collect()
    ends = read_to_end(consumer, tps, keep, timeout_s=5)
    assert ends == {TP("t", 0): 5, TP("t", 1): 5}
    assert [(r.partition, r.value) for r in got] == [(0, b"a"), (0, b"b"), (1, b"x"), (0, b"c")]
    assert max(r.offset for r in got if r.partition == 1) == 0  # "last record + 1" would be 1, not 5
    assert all(consumer.position(tp) == 5 for tp in tps)
    assert consumer.polls == 3  # the last poll returned no record, only moved the positions
    assert consumer.paused() == set()  # what it paused at the end is resumed


def test_a_partition_of_markers_only_terminates():
    consumer = FakeConsumer({0: [MARKER, MARKER, MARKER]}, chunk=1)
    consumer.assign([TP("t", 0)])
    got, keep = _collect()
    assert read_to_end(consumer, [TP("t", 0)], keep, timeout_s=5) == {TP("t", 0): 3}
    assert got == [] and consumer.polls == 3


def test_empty_and_already_read_partitions_need_no_poll():
    consumer = FakeConsumer({0: [], 1: [b"a"]})
    tps = [TP("t", 0), TP("t", 1)]
    consumer.assign(tps)
    consumer.seek(TP("t", 1), 1)
    got, keep = _collect()
    assert read_to_end(consumer, tps, keep, timeout_s=5) == {TP("t", 0): 0, TP("t", 1): 1}
    assert consumer.polls == 0 and got == []
    assert read_to_end(consumer, [], keep) == {}


def test_records_written_after_the_start_are_left_out_unless_asked_for():
    consumer = FakeConsumer({0: [b"a", MARKER, b"late-1", b"late-2"]}, chunk=3)
    tp = TP("t", 0)
    consumer.assign([tp])
    got, keep = _collect()
    read_to_end(consumer, [tp], keep, end_offsets={tp: 2}, timeout_s=5)
    assert [r.value for r in got] == [b"a"]  # late-1 came in the same poll, past the end: dropped

    consumer.seek(tp, 0)
    got, keep = _collect()
    read_to_end(consumer, [tp], keep, end_offsets={tp: 2}, timeout_s=5, past_end=True)
    assert [r.value for r in got] == [b"a", b"late-1"]  # a follower keeps what its position moved past
    got.extend(consumer.poll()[tp])  # ... and goes on from there: nothing lost, nothing twice
    assert [r.value for r in got] == [b"a", b"late-1", b"late-2"]


def test_a_partition_done_early_is_paused_until_the_others_finish():
    consumer = FakeConsumer({0: [b"a", MARKER], 1: [b"x", b"y", b"z", MARKER, b"late"]}, chunk=2)
    tps = [TP("t", 0), TP("t", 1)]
    consumer.assign(tps)
    ends = {TP("t", 0): 2, TP("t", 1): 4}
    paused_during = []
    got: list[Rec] = []

    def keep(tp, records):
        got.extend(records)
        paused_during.append(consumer.paused())

    consumer.logs[TP("t", 0)].append(b"late-0")  # written after the ends were taken
    read_to_end(consumer, tps, keep, end_offsets=ends, timeout_s=5)
    assert [r.value for r in got] == [b"a", b"x", b"y", b"z"]
    assert paused_during[-1] == {TP("t", 0)}  # p0 was at its end: not fetched while p1 caught up
    assert consumer.position(TP("t", 0)) == 2 and consumer.paused() == set()


def test_a_stuck_partition_times_out_naming_position_and_end():
    class Stuck(FakeConsumer):
        def poll(self, timeout_ms=0, max_records=None):
            self.polls += 1
            time.sleep(timeout_ms / 1000)
            return {}  # the broker never answers

    consumer = Stuck({0: [b"a", MARKER]})
    consumer.assign([TP("t", 0)])
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"'t'.*t\[0\]': \(0, 2\)"):
        read_to_end(consumer, [TP("t", 0)], lambda tp, records: None, timeout_s=0.2, poll_timeout_ms=20)
    assert time.monotonic() - started < 2
    assert consumer.paused() == set()


# ------------------------------------------------------------------ the readers built on read_to_end


@pytest.fixture
def fake_kafka(monkeypatch):
    """``kafka.KafkaConsumer`` replaced by a FakeConsumer over a transactional log."""
    import kafka

    made: list[FakeConsumer] = []
    logs = {0: [b"v0", b"v1", MARKER, MARKER, MARKER], 1: [b"w0", MARKER, b"w1", MARKER]}

    def factory(**options):
        consumer = FakeConsumer(logs, topic="state", **options)
        made.append(consumer)
        return consumer

    monkeypatch.setattr(kafka, "KafkaConsumer", factory)
    monkeypatch.setattr(kafka, "TopicPartition", TP)
    return made


def test_read_topic_returns_the_committed_records_and_stops(fake_kafka):
    contents = topic_reader.read_topic("b:1", "state", timeout_s=5)
    assert sorted((r.partition, r.offset, r.value) for r in contents.history) == [
        (0, 0, b"v0"), (0, 1, b"v1"), (1, 0, b"w0"), (1, 2, b"w1")]
    assert contents.end_offsets == {0: 5, 1: 4}
    assert fake_kafka[0].options["isolation_level"] == "read_committed" and fake_kafka[0].closed


def test_changelog_readers_stop_at_the_end(fake_kafka):
    opts = {"bootstrap_servers": ["b:1"]}
    seen = []
    latest = changelog.read_latest(opts, "state", [0, 1], progress=lambda done, total: seen.append((done, total)))
    assert latest == {b"p0-k0": (0, b"v0"), b"p0-k1": (0, b"v1"), b"p1-k0": (1, b"w0"), b"p1-k2": (1, b"w1")}
    assert seen[-1] == (4, 9)
    assert changelog.read_from(opts, "state", 1, 1) == [b"w1"]
    assert changelog.read_from(opts, "state", 0, 0, key=b"p0-k1") == [b"v1"]
    assert all(c.closed and c.options["isolation_level"] == "read_committed" for c in fake_kafka)
