"""Publishing a batch's records and committing its offsets: one transaction, one failure policy.

Everything the service publishes goes through :meth:`BatchCommitter.commit_or_recover`: a
batch's outputs with its consumed offsets, an idle sweep's assignment changes, the dead
letters of the item catalog, the final model snapshot at shutdown. The policy is the same
for all of them:

- ``exactly_once``: ``begin_transaction``, send everything, ``send_offsets_to_transaction``
  with the consumer's group metadata, commit. Every transactional wait is bounded
  (:func:`consumers.kafka_compat.finish_transaction_step`), so a request lost in a broker
  restart cannot stall the member.
- ``at_least_once``: send and flush (retried while Kafka is unreachable), then commit the
  offsets. A crash in between repeats the batch, which is what at-least-once allows.
- **On failure** (anything but a fatal error): the transaction is aborted and the producer
  replaced (its successor's ``init_transactions`` fences whatever the old one left open),
  and the caller is told to rebuild its state from Kafka (:class:`Commit` with ``failure``).
  The in-memory state is then ahead of what Kafka holds, and the changelogs plus the
  committed offsets are the only truth: the member restores its partitions and re-reads
  from the committed offsets. A dead-lettered record rides in the same transaction as
  the batch that rejected it, so it is published exactly once with the batch that is
  finally committed. Dead letters queued outside a batch (the catalog's bad records) stay
  queued until a commit that carried them succeeds: a failed commit never drops them.
- A **fatal** error (authentication, authorisation) raises
  :class:`~consumers.kafka_retry.FatalKafkaError`: the process exits 2.
- An error that is not a Kafka error at all (a bug in building a record) is not retried
  for ever: after ``max_bug_failures`` failed commits in a row it is re-raised, so the
  process dies loudly instead of rebuilding and failing again without end.

Example (a fake transactional producer and consumer):

>>> from stream.metrics import ServiceMetrics
>>> class Producer:
...     def __init__(self): self.log = []
...     def begin_transaction(self): self.log.append("begin")
...     def send(self, topic, **kw):
...         self.log.append(("send", topic, kw["key"]))
...         return None
...     def send_offsets_to_transaction(self, offsets, group): self.log.append("offsets")
...     def commit_transaction(self): self.log.append("commit")
>>> class Consumer:
...     def group_metadata(self): return "group"
>>> producer = Producer()
>>> committer = BatchCommitter(exactly_once=True, make_producer=lambda: producer, consumer=Consumer(),
...                            metrics=ServiceMetrics(), retry=None, transaction_wait_s=5)
>>> committer.start()
True
>>> committer.dead_letter("dlq", Send("dlq", b"k", b"bad"))
>>> committer.commit_or_recover([Send("out", b"u1", b"{}")], {"tp": 1}).ok
True
>>> producer.log
['begin', ('send', 'out', b'u1'), ('send', 'dlq', b'k'), 'offsets', 'commit']
>>> committer.pending_dead_letters
[]
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from consumers.kafka_compat import finish_transaction_step
from consumers.kafka_config import is_fatal
from consumers.kafka_retry import FatalKafkaError, KafkaRetry, call, fatal
from stream.metrics import ServiceMetrics

log = logging.getLogger("interest_stream.service")

__all__ = ["BatchCommitter", "Commit", "Send", "dlq_headers", "offsets_of"]


class Send(NamedTuple):
    """One record to publish in a batch's transaction."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list | None = None  # (str, bytes) pairs
    partition: int | None = None
    timestamp_ms: int | None = None


@dataclass(slots=True)
class Commit:
    """What :meth:`BatchCommitter.commit_or_recover` did.

    ``ok``: published and committed (``futures`` are the acknowledged sends). Otherwise
    ``failure`` is the error that aborted it (the producer was replaced; the caller must
    rebuild its state from Kafka), or None when a stop was requested while Kafka was
    unreachable (nothing to rebuild: the process is exiting and re-reads on restart).
    """

    ok: bool
    futures: list = field(default_factory=list)
    failure: BaseException | None = None


def dlq_headers(topic, partition, offset, reason: str, detail: str) -> list[tuple[str, bytes]]:
    """The dead-letter record's headers: why, and where the original record came from."""
    return [("reason", reason.encode()), ("detail", detail[:1000].encode("utf-8", "replace")),
            ("source_topic", str(topic).encode()), ("source_partition", str(partition).encode()),
            ("source_offset", str(offset).encode())]


def offsets_of(records: Iterable[Any]) -> dict:
    """The offsets to commit after ``records`` (Kafka records): the next offset of each partition."""
    from kafka import TopicPartition
    from kafka.structs import OffsetAndMetadata

    offsets: dict = {}
    for r in records:
        tp = TopicPartition(r.topic, r.partition)
        offsets[tp] = max(offsets.get(tp, 0), r.offset + 1)
    return {tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()}


class BatchCommitter:
    """Publishes and commits with one failure policy (see the module docstring)."""

    def __init__(self, *, exactly_once: bool, make_producer: Callable[[], Any], consumer: Any,
                 metrics: ServiceMetrics, retry: KafkaRetry | None, transaction_wait_s: float,
                 max_bug_failures: int = 3) -> None:
        self.exactly_once = exactly_once
        self.make_producer = make_producer
        self.consumer = consumer
        self.metrics = metrics
        self.retry = retry
        self.transaction_wait_s = transaction_wait_s
        self.max_bug_failures = max_bug_failures
        self.producer: Any = None
        self.pending_dead_letters: list[Send] = []
        self._failures_in_a_row = 0

    # ------------------------------------------------------------------ producer
    def start(self) -> bool:
        """Create the producer (retrying); False if a stop was requested meanwhile."""
        self.producer = self._call("connect", self.make_producer)
        return self.producer is not None

    def close(self, timeout_s: float = 10) -> None:
        if self.producer is not None:
            self.producer.close(timeout=timeout_s)
            self.producer = None

    def replace_producer(self) -> bool:
        """Abort what the producer has open, drop it and create a new one (which fences the old)."""
        old, self.producer = self.producer, None
        if old is not None:
            if self.exactly_once:
                try:
                    finish_transaction_step(old, "abort", self.transaction_wait_s)
                except Exception as exc:
                    log.info("abort failed (%s); the new producer fences the transaction instead", exc)
            try:
                old.close(timeout=0)
            except Exception:  # noqa: BLE001 - the old producer is gone either way
                pass
        self.producer = self._call("recover", self.make_producer)
        return self.producer is not None

    # ------------------------------------------------------------------ dead letters
    def dead_letter(self, reason: str, send: Send) -> None:
        """Queue a dead letter found outside a batch; it is published with the next commit."""
        self.metrics.rejected.labels(reason=reason).inc()
        self.pending_dead_letters.append(send)

    # ------------------------------------------------------------------ committing
    def commit_or_recover(self, sends: list[Send], offsets: dict) -> Commit:
        """Publish ``sends`` plus the queued dead letters and commit ``offsets``, with the module's policy."""
        carried = len(self.pending_dead_letters)
        try:
            futures = self.commit([*sends, *self.pending_dead_letters], offsets)
        except FatalKafkaError:
            raise
        except Exception as exc:
            if is_fatal(exc):
                raise fatal("the transaction", exc) from exc
            self._failures_in_a_row += 1
            if not _is_kafka_error(exc) and self._failures_in_a_row >= self.max_bug_failures:
                log.error("%d commits in a row failed with %s, which is not a Kafka error: giving up",
                          self._failures_in_a_row, type(exc).__name__)
                raise
            self.metrics.kafka_retries.labels(operation="commit").inc()
            log.warning("batch not committed (%s: %s): rebuilding state from the changelogs",
                        type(exc).__name__, exc)
            self.replace_producer()
            return Commit(ok=False, failure=exc)
        if futures is None:
            return Commit(ok=False)
        self._failures_in_a_row = 0
        del self.pending_dead_letters[:carried]
        return Commit(ok=True, futures=futures)

    def commit(self, sends: list[Send], offsets: dict) -> list | None:
        """Publish ``sends`` and commit ``offsets`` (one transaction, or flush-then-commit); raises on failure.

        Returns the send futures (all acknowledged), or None when stopped while Kafka is unreachable.
        """
        if self.exactly_once:
            producer = self.producer
            if producer is None:
                raise RuntimeError("no producer (a previous recovery was interrupted)")
            producer.begin_transaction()
            futures = self._send(sends)
            if offsets:
                finish_transaction_step(producer, "send_offsets", self.transaction_wait_s, offsets,
                                        self.consumer.group_metadata())
            finish_transaction_step(producer, "commit", self.transaction_wait_s)
            return futures
        futures = self._call("produce", lambda: self._send_and_flush(sends)) if sends else []
        if futures is None:
            return None
        if offsets:
            from kafka.errors import CommitFailedError

            def commit_offsets() -> bool:
                try:
                    self.consumer.commit(offsets)
                except CommitFailedError as exc:
                    # The group rebalanced under us: the new owner re-reads these records (at-least-once).
                    log.warning("offset commit rejected after a rebalance (%s); records will be re-delivered", exc)
                return True

            if self._call("commit", commit_offsets) is None:
                return None
        return futures

    def _send(self, sends: list[Send]) -> list:
        return [self.producer.send(topic, key=key, value=value, headers=headers, partition=partition,
                                   timestamp_ms=timestamp_ms)
                for topic, key, value, headers, partition, timestamp_ms in sends]

    def _send_and_flush(self, sends: list[Send]) -> list:
        futures = self._send(sends)
        self.producer.flush(timeout=30)
        for f in futures:
            f.get(timeout=0)  # raises the delivery error, if any
        return futures

    def _call(self, operation: str, fn: Callable[[], Any]) -> Any:
        return call(self.retry, operation, fn)


def _is_kafka_error(exc: BaseException) -> bool:
    from kafka.errors import KafkaError

    return isinstance(exc, KafkaError | ConnectionError | TimeoutError | OSError)
