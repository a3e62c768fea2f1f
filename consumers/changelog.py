"""Reading state back from compacted topics: the profiles and model changelogs, the assignments.

A member restores *exactly the partitions it owns*: the profiles changelog and the
assignments topic are co-partitioned with the events topic (the service writes each
user's records to the partition its events come from), so partition ``p`` of each holds
the state of the users of events partition ``p``. Records are read with
``read_committed`` from the beginning to the end offsets taken at the start; the
latest value per key wins and a tombstone deletes the key, as compaction will.

Example (needs a broker; not run as a doctest)::

    latest = read_latest(options, "g-profiles-changelog", [0, 2])
    users = {k.decode(): partition for k, (partition, v) in latest.items() if v is not None}
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import msgspec
import numpy as np

from stream.profiles import profile_from_bytes


def _restore_consumer(options: Mapping[str, Any], max_fetch_bytes: int):
    """A group-less ``read_committed`` consumer for reading state topics to their end."""
    from kafka import KafkaConsumer

    return KafkaConsumer(
        group_id=None, enable_auto_commit=False, isolation_level="read_committed",
        max_partition_fetch_bytes=max_fetch_bytes, fetch_max_bytes=max_fetch_bytes,
        client_id="interest-stream-restore", **options,
    )


def read_latest(
    options: Mapping[str, Any],
    topic: str,
    partitions: list[int],
    *,
    progress: Callable[[int, int], None] | None = None,
    timeout_s: float = 600.0,
    max_fetch_bytes: int = 32 * 1024 * 1024,
) -> dict[bytes, tuple[int, bytes | None]]:
    """Latest ``(partition, value)`` per key of ``partitions`` of ``topic`` (value None = tombstone).

    ``options`` are kafka-python client options (bootstrap servers, security).
    ``progress(done, total)`` is called as records are read.
    """
    from kafka import TopicPartition

    if not partitions:
        return {}
    consumer = _restore_consumer(options, max_fetch_bytes)
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        begin = consumer.beginning_offsets(tps)
        end = consumer.end_offsets(tps)
        total = sum(max(0, end[tp] - begin[tp]) for tp in tps)
        latest: dict[bytes, tuple[int, bytes | None]] = {}
        done = 0
        deadline = time.monotonic() + timeout_s
        pending = [tp for tp in tps if end[tp] > begin[tp]]
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"restoring {topic} {partitions} did not reach the end in {timeout_s:.0f} s")
            for records in consumer.poll(timeout_ms=500, max_records=10_000).values():
                for rec in records:
                    latest[rec.key] = (rec.partition, rec.value)
                done += len(records)
            if progress is not None:
                progress(min(done, total), total)
            pending = [tp for tp in pending if consumer.position(tp) < end[tp]]
        return latest
    finally:
        consumer.close()


def read_from(
    options: Mapping[str, Any],
    topic: str,
    partition: int,
    start: int,
    *,
    key: bytes | None = None,
    timeout_s: float = 600.0,
    max_fetch_bytes: int = 32 * 1024 * 1024,
) -> list[bytes]:
    """Values of ``partition`` of ``topic`` from offset ``start`` to the end (read_committed), in order.

    With ``key``, only the records with that key. ``start`` beyond the log start is clamped.
    """
    from kafka import TopicPartition

    consumer = _restore_consumer(options, max_fetch_bytes)
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        begin = consumer.beginning_offsets([tp])[tp]
        end = consumer.end_offsets([tp])[tp]
        consumer.seek(tp, max(begin, min(start, end)))
        values: list[bytes] = []
        deadline = time.monotonic() + timeout_s
        while consumer.position(tp) < end:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic}[{partition}] did not reach the end in {timeout_s:.0f} s")
            for records in consumer.poll(timeout_ms=500, max_records=10_000).values():
                values.extend(r.value for r in records if r.value is not None and (key is None or r.key == key))
        return values
    finally:
        consumer.close()


def restore_profiles(
    options: Mapping[str, Any],
    topic: str,
    partitions: list[int],
    profiles,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, int]:
    """Load the latest profile of every user of ``partitions`` into a :class:`~stream.profiles.ProfileStore`.

    Returns ``{user_id: partition}`` for the users restored. Raises ``ValueError`` when the
    stored vectors do not have the store's dimension (another model wrote them).
    """
    latest = read_latest(options, topic, partitions, progress=progress)
    users: list[str] = []
    owners: dict[str, int] = {}
    rows: list[np.ndarray] = []
    refs: list[int] = []
    masses: list[float] = []
    for key, (partition, value) in latest.items():
        if key is None or value is None:
            continue
        vector, ref_ms, mass = profile_from_bytes(value)
        if vector.shape[0] != profiles.dim:
            raise ValueError(f"{topic} holds {vector.shape[0]}-d profiles, the encoder makes {profiles.dim}-d ones")
        user = key.decode()
        users.append(user)
        owners[user] = partition
        rows.append(vector)
        refs.append(ref_ms)
        masses.append(mass)
    if users:
        profiles.put_many(users, np.stack(rows), np.asarray(refs, dtype=np.int64), np.asarray(masses, dtype=np.float64))
    return owners


def restore_assignments(options: Mapping[str, Any], topic: str, partitions: list[int], tracker) -> int:
    """Load the last emitted assignment of every user of ``partitions`` into an AssignmentTracker."""
    restored = 0
    for key, (_, value) in read_latest(options, topic, partitions).items():
        if key is None or value is None:
            continue
        try:
            record = msgspec.json.decode(value)
            previous = record.get("previous_cluster")
            tracker.restore(key.decode(), int(record["cluster"]), float(record["score"]),
                            None if previous is None else int(previous))
            restored += 1
        except (msgspec.DecodeError, KeyError, TypeError, ValueError, UnicodeDecodeError):
            continue  # an unreadable record: that user is re-assessed on its next event
    return restored
