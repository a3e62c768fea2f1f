"""The batch committer's one policy, against fake Kafka clients (no broker)."""

from __future__ import annotations

import threading

import pytest
from kafka import errors as kerr

from consumers.batch_committer import BatchCommitter, Send, offsets_of
from consumers.kafka_retry import FatalKafkaError, KafkaRetry
from stream.metrics import ServiceMetrics


class Future:
    def __init__(self, offset: int) -> None:
        self.is_done, self.value = True, type("Meta", (), {"offset": offset})()

    def succeeded(self) -> bool:
        return True

    def get(self, timeout=None):
        return self.value


class FakeProducer:
    """Transactional producer that records what happened; ``fail_on`` names a step that raises once."""

    instances: list[FakeProducer] = []

    def __init__(self, fail_on: dict | None = None) -> None:
        self.fail_on = dict(fail_on or {})
        self.log: list = []
        self.published: list[Send] = []  # what a read_committed reader would see
        self._open: list[Send] = []
        self.closed = False
        FakeProducer.instances.append(self)

    def _maybe_fail(self, step: str) -> None:
        exc = self.fail_on.pop(step, None)
        if exc is not None:
            raise exc

    def begin_transaction(self):
        self.log.append("begin")
        self._open = []

    def send(self, topic, key=None, value=None, headers=None, partition=None, timestamp_ms=None):
        self._maybe_fail("send")
        self._open.append(Send(topic, key, value, headers or [], partition, timestamp_ms))
        return Future(len(self.published) + len(self._open))

    def send_offsets_to_transaction(self, offsets, group):
        self._maybe_fail("offsets")
        self.log.append(("offsets", dict(offsets), group))

    def commit_transaction(self):
        self._maybe_fail("commit")
        self.published.extend(self._open)
        self._open = []
        self.log.append("commit")

    def abort_transaction(self):
        self._open = []
        self.log.append("abort")

    def flush(self, timeout=None):
        self._maybe_fail("flush")
        self.published.extend(self._open)
        self._open = []

    def close(self, timeout=None):
        self.closed = True


class FakeConsumer:
    def __init__(self) -> None:
        self.commits: list = []

    def group_metadata(self):
        return "group-metadata"

    def commit(self, offsets):
        self.commits.append(offsets)


def _committer(exactly_once=True, producers=None, **kwargs):
    producers = list(producers or [])
    stop = threading.Event()
    metrics = ServiceMetrics()
    committer = BatchCommitter(
        exactly_once=exactly_once, make_producer=lambda: producers.pop(0) if producers else FakeProducer(),
        consumer=FakeConsumer(), metrics=metrics, retry=KafkaRetry(metrics, stop, cap_s=0.01, first_s=0.001),
        transaction_wait_s=5, **kwargs)
    assert committer.start()
    return committer


def _dlq(i: int) -> Send:
    return Send("dead-letters", f"item-{i}".encode(), b"not json", [("reason", b"bad_catalog_record")])


def test_a_batch_commits_outputs_queued_dead_letters_and_offsets_in_one_transaction():
    committer = _committer()
    committer.dead_letter("bad_catalog_record", _dlq(1))
    commit = committer.commit_or_recover([Send("assignments", b"u1", b"{}", [], 2)], {"tp": 5})
    assert commit.ok and commit.failure is None and len(commit.futures) == 2
    producer = committer.producer
    assert producer.log == ["begin", ("offsets", {"tp": 5}, "group-metadata"), "commit"]
    assert [s.topic for s in producer.published] == ["assignments", "dead-letters"]
    assert committer.pending_dead_letters == []
    assert committer.metrics.rejected.labels(reason="bad_catalog_record")._value.get() == 1


@pytest.mark.parametrize("step", ["send", "offsets", "commit"])
def test_a_failed_commit_keeps_queued_dead_letters_for_the_next_one(step):
    """Catalog dead letters must reach the topic exactly once whatever happens to the batch they rode with
    (before, they were drained from the queue before the commit and lost when it failed)."""
    first = FakeProducer(fail_on={step: kerr.KafkaTimeoutError("lost in a broker restart")})
    committer = _committer(producers=[first])
    committer.dead_letter("bad_catalog_record", _dlq(1))
    commit = committer.commit_or_recover([Send("assignments", b"u1", b"{}")], {"tp": 5})
    assert not commit.ok and isinstance(commit.failure, kerr.KafkaTimeoutError)
    assert first.published == [] and first.closed and "abort" in first.log
    assert committer.producer is not first, "the producer is replaced (its successor fences the old one)"
    assert committer.pending_dead_letters == [_dlq(1)]
    assert committer.metrics.kafka_retries.labels(operation="commit")._value.get() == 1
    # the redone batch (rebuilt from Kafka) commits, and the dead letter goes out with it, once
    committer.dead_letter("bad_catalog_record", _dlq(2))
    assert committer.commit_or_recover([Send("assignments", b"u1", b"{}")], {"tp": 5}).ok
    assert [s.key for s in committer.producer.published if s.topic == "dead-letters"] == [b"item-1", b"item-2"]
    assert committer.pending_dead_letters == []


def test_fatal_errors_stop_the_member():
    producer = FakeProducer(fail_on={"commit": kerr.TopicAuthorizationFailedError("no ACL")})
    committer = _committer(producers=[producer])
    with pytest.raises(FatalKafkaError, match="ACLs"):
        committer.commit_or_recover([Send("assignments", b"u1", b"{}")], {})


def test_a_bug_is_not_retried_for_ever():
    """A non-Kafka error (here: a record the client refuses) used to rebuild and fail again without end."""

    class Broken(FakeProducer):
        def send(self, *args, **kwargs):
            raise TypeError("headers must be list-type")

    committer = _committer(producers=[Broken(), Broken(), Broken()], max_bug_failures=3)
    for _ in range(2):
        commit = committer.commit_or_recover([Send("assignments", b"u1", b"{}")], {})
        assert not commit.ok and isinstance(commit.failure, TypeError)
    with pytest.raises(TypeError):
        committer.commit_or_recover([Send("assignments", b"u1", b"{}")], {})


def test_kafka_failures_are_retried_by_rebuilding_however_often():
    producers = [FakeProducer(fail_on={"commit": kerr.KafkaConnectionError("down")}) for _ in range(5)]
    committer = _committer(producers=producers, max_bug_failures=2)
    for _ in range(4):
        assert committer.commit_or_recover([Send("a", b"u", b"{}")], {}).failure is not None
    assert committer.commit_or_recover([Send("a", b"u", b"{}")], {}).failure is not None


def test_at_least_once_flushes_then_commits_offsets():
    committer = _committer(exactly_once=False)
    commit = committer.commit_or_recover([Send("assignments", b"u1", b"{}")], {"tp": 3})
    assert commit.ok
    assert [s.key for s in committer.producer.published] == [b"u1"]
    assert committer.consumer.commits == [{"tp": 3}]
    assert "begin" not in committer.producer.log


def test_offsets_of_records_are_the_next_offset_per_partition():
    from types import SimpleNamespace as R

    offsets = offsets_of([R(topic="e", partition=0, offset=4), R(topic="e", partition=0, offset=9),
                          R(topic="e", partition=2, offset=1)])
    assert {(tp.partition, meta.offset) for tp, meta in offsets.items()} == {(0, 10), (2, 2)}
