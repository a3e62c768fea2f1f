"""Topic reader: read a (compacted) topic from its beginning to its end, then stop.

For tools that need a topic's current contents rather than a live feed (``inspect``, ``report``,
state rebuilds): all partitions are assigned by hand (no consumer group, nothing committed),
each is read from its beginning up to the end offset taken at the start, with
``isolation_level="read_committed"`` so aborted or still-open transactions are never seen
(with read_committed the end offset is the last stable offset).

:func:`read_to_end` is the loop under every such read (here, the state restores of
:mod:`consumers.changelog`, the service's catalog): it polls a consumer until each partition's
*position* reaches the end offset taken at the start. Not "until a record at end - 1 arrives": on
a transactional topic the last offsets are commit/abort markers (and, read_committed, aborted
records) that no poll ever returns, while the position moves past them.

The result holds the full history (every record still in the log, partitions merged by
timestamp while keeping each partition's order, so the same key's records stay in log order)
and the latest value per key, with tombstones removing keys as compaction will.

Example (``merge_partitions`` and ``latest_by_key`` need no broker)::

    >>> a = [TopicRecord(0, 0, 10, b"u1", b"x"), TopicRecord(0, 1, 30, b"u1", None)]
    >>> b = [TopicRecord(1, 0, 20, b"u2", b"y")]
    >>> history = merge_partitions([a, b])
    >>> [(r.partition, r.offset) for r in history]
    [(0, 0), (1, 0), (0, 1)]
    >>> latest_by_key(history)
    {b'u2': b'y'}

Against a broker::

    contents = read_topic("localhost:9092", "centroids")
    contents.latest, len(contents.history)
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple


class TopicRecord(NamedTuple):
    """One record as read: where it was, its timestamp (ms), raw key and value (None = tombstone)."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True)
class TopicContents:
    """What a topic held when it was read."""

    topic: str
    history: list[TopicRecord]
    latest: dict[bytes | None, bytes]
    end_offsets: dict[int, int]


class TopicNotFound(RuntimeError):
    """The topic does not exist (or has no partitions visible to this client)."""


def merge_partitions(partitions: Iterable[Sequence[TopicRecord]]) -> list[TopicRecord]:
    """Merge per-partition record lists by timestamp, keeping each partition's own order."""
    return list(heapq.merge(*partitions, key=lambda r: r.timestamp_ms))


def latest_by_key(history: Iterable[TopicRecord]) -> dict[bytes | None, bytes]:
    """The last value of each key; a tombstone (None value) deletes the key."""
    latest: dict[bytes | None, bytes] = {}
    for record in history:
        if record.value is None:
            latest.pop(record.key, None)
        else:
            latest[record.key] = record.value
    return latest


def read_to_end(
    consumer,
    partitions: Sequence[Any],
    on_records: Callable[[Any, list], None],
    *,
    timeout_s: float = 30.0,
    end_offsets: Mapping[Any, int] | None = None,
    past_end: bool = False,
    max_records: int | None = None,
    poll_timeout_ms: int = 200,
    what: str | None = None,
) -> dict[Any, int]:
    """Poll ``consumer`` until ``consumer.position(tp)`` reaches ``end_offsets[tp]`` for every partition.

    ``partitions`` (``TopicPartition``) must be assigned to ``consumer``, positioned where reading
    starts (``seek_to_beginning``, ``seek``) and not paused. ``end_offsets`` defaults to
    ``consumer.end_offsets(partitions)`` taken now (with read_committed, the last stable offsets).
    ``on_records(tp, records)`` gets each polled batch, in offset order; records at or past the
    end offset (written after the start) are left out unless ``past_end``, which a caller that keeps
    polling the same consumer afterwards needs, since the position has moved past them.

    Reading stops on positions, never on the last record's offset: transaction markers and aborted
    records move the position without being returned. A partition that reached its end is paused
    until all have; the partitions paused here are resumed before returning. Returns the end
    offsets; raises :class:`TimeoutError` (naming each partition's position and end) when the
    end is not reached within ``timeout_s``.
    """
    tps = list(partitions)
    if not tps:
        return {}
    deadline = time.monotonic() + timeout_s
    ends = dict(end_offsets) if end_offsets is not None else dict(consumer.end_offsets(tps))
    remaining = [tp for tp in tps if consumer.position(tp) < ends[tp]]
    paused_here = [tp for tp in tps if tp not in remaining]
    consumer.pause(*paused_here)
    try:
        while remaining:
            if time.monotonic() > deadline:
                left = {f"{tp.topic}[{tp.partition}]": (consumer.position(tp), ends[tp]) for tp in remaining}
                name = what or ", ".join(sorted({repr(tp.topic) for tp in tps}))
                raise TimeoutError(f"reading {name} did not reach the end within {timeout_s:.0f} s "
                                   f"(partition: (position, end) = {left})")
            for tp, records in consumer.poll(timeout_ms=poll_timeout_ms, max_records=max_records).items():
                if not past_end and tp in ends:
                    records = [r for r in records if r.offset < ends[tp]]
                if records:
                    on_records(tp, records)
            done = [tp for tp in remaining if consumer.position(tp) >= ends[tp]]
            if done:
                consumer.pause(*done)
                paused_here.extend(done)
                remaining = [tp for tp in remaining if tp not in done]
    finally:
        consumer.resume(*paused_here)
    return ends


def read_topic(
    bootstrap_servers: str,
    topic: str,
    *,
    timeout_s: float = 30.0,
    kafka_options: Mapping[str, Any] | None = None,
) -> TopicContents:
    """Read ``topic`` from the beginning to the end offsets taken at the start.

    Raises :class:`TopicNotFound` if the topic does not exist and :class:`TimeoutError` if the
    end is not reached within ``timeout_s`` (an unreachable broker, or a stuck partition).
    ``kafka_options`` are extra kafka-python consumer settings (security, timeouts).
    """
    from kafka import KafkaConsumer, TopicPartition

    options = {
        "bootstrap_servers": bootstrap_servers,
        "group_id": None,
        "enable_auto_commit": False,
        "isolation_level": "read_committed",
        "auto_offset_reset": "earliest",
        "client_id": "interest-stream-reader",
        **dict(kafka_options or {}),
    }
    deadline = time.monotonic() + timeout_s
    consumer = KafkaConsumer(**options)
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise TopicNotFound(f"topic {topic!r} does not exist on {bootstrap_servers}")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps, timeout_ms=max(1, int(timeout_s * 1000)))
        per_partition: dict[int, list[TopicRecord]] = {tp.partition: [] for tp in tps}

        def keep(tp, records) -> None:
            per_partition[tp.partition].extend(
                TopicRecord(tp.partition, r.offset, r.timestamp, r.key, r.value) for r in records)

        read_to_end(consumer, tps, keep, end_offsets=ends, timeout_s=max(0.0, deadline - time.monotonic()),
                    poll_timeout_ms=500, what=repr(topic))
    finally:
        consumer.close(autocommit=False)
    history = merge_partitions(per_partition[p] for p in sorted(per_partition))
    return TopicContents(
        topic=topic,
        history=history,
        latest=latest_by_key(history),
        end_offsets={tp.partition: off for tp, off in ends.items()},
    )
