"""Reading state back from compacted topics: the profiles and model changelogs, the assignments.

A member restores *exactly the partitions it owns*: the profiles changelog and the
assignments topic are co-partitioned with the events topic (the service writes each
user's records to the user's owner partition, :mod:`consumers.partitioning`), so
partition ``p`` of each holds the state of the users of events partition ``p``. A record
in a partition that does not own its key (a *stray*, written by an older version) is
skipped and reported, never allowed to replace the owner's record. Records are read with
``read_committed`` from the beginning to the end offsets taken at the start; the
latest value per key wins and a tombstone deletes the key, as compaction will.

Example (needs a broker; not run as a doctest)::

    latest = read_latest(options, "g-profiles-changelog", [0, 2])
    users = {k.decode(): partition for k, (partition, v) in latest.items() if v is not None}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import msgspec
import numpy as np

from consumers.topic_reader import read_to_end
from stream.profiles import profile_record_from_bytes


def _restore_consumer(options: Mapping[str, Any], max_fetch_bytes: int):
    """A group-less ``read_committed`` consumer for reading state topics to their end."""
    from kafka import KafkaConsumer

    return KafkaConsumer(
        group_id=None, enable_auto_commit=False, isolation_level="read_committed",
        max_partition_fetch_bytes=max_fetch_bytes, fetch_max_bytes=max_fetch_bytes,
        client_id="interest-stream-restore", **options,
    )


def _high_watermarks(options: Mapping[str, Any], tps: list) -> dict:
    """The partitions' high watermarks (read_uncommitted end offsets): reading read_committed up to them
    waits until every transaction open now on those partitions has committed or aborted."""
    from kafka import KafkaConsumer

    probe = KafkaConsumer(group_id=None, enable_auto_commit=False, isolation_level="read_uncommitted",
                          client_id="interest-stream-restore-hw", **options)
    try:
        return probe.end_offsets(tps)
    finally:
        probe.close()


def read_latest(
    options: Mapping[str, Any],
    topic: str,
    partitions: list[int],
    *,
    progress: Callable[[int, int], None] | None = None,
    owner_of_key: Callable[[bytes], int] | None = None,
    on_stray: Callable[[str, bytes, int], None] | None = None,
    timeout_s: float = 600.0,
    max_fetch_bytes: int = 32 * 1024 * 1024,
    settle: bool = False,
) -> dict[bytes, tuple[int, bytes | None]]:
    """Latest ``(partition, value)`` per key of ``partitions`` of ``topic`` (value None = tombstone).

    ``options`` are kafka-python client options (bootstrap servers, security). With ``settle``, reading
    goes on until every transaction open on those partitions when the read starts has ended (a previous
    owner that died mid-commit): its records, if it committed, are then part of what is restored.
    ``progress(done, total)`` is called as records are read. With ``owner_of_key``, a record
    whose partition is not its key's owner is a stray: skipped (so it can never replace the
    owner partition's record, whatever the read order) and reported to ``on_stray(topic, key,
    partition)``.
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
        end = _high_watermarks(options, tps) if settle else consumer.end_offsets(tps)
        total = sum(max(0, end[tp] - begin[tp]) for tp in tps)
        latest: dict[bytes, tuple[int, bytes | None]] = {}
        done = 0

        def keep(_tp, records) -> None:
            nonlocal done
            for rec in records:
                if owner_of_key is not None and rec.key is not None and owner_of_key(rec.key) != rec.partition:
                    if on_stray is not None:
                        on_stray(topic, rec.key, rec.partition)
                    continue
                latest[rec.key] = (rec.partition, rec.value)
            done += len(records)
            if progress is not None:
                progress(min(done, total), total)

        read_to_end(consumer, tps, keep, end_offsets=end, timeout_s=timeout_s, max_records=10_000,
                    poll_timeout_ms=500, what=f"{topic} {partitions}")
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
    return [value for _, value in read_range(options, topic, partition, start, key=key, timeout_s=timeout_s,
                                             max_fetch_bytes=max_fetch_bytes)]


def read_range(
    options: Mapping[str, Any],
    topic: str,
    partition: int,
    start: int,
    stop: int | None = None,
    *,
    key: bytes | None = None,
    timeout_s: float = 600.0,
    max_fetch_bytes: int = 32 * 1024 * 1024,
) -> list[tuple[int, bytes]]:
    """``(offset, value)`` of ``partition`` of ``topic`` from ``start`` up to ``stop`` (default: the end),
    read_committed, in order. ``start`` before the log start is clamped; tombstones are skipped."""
    from kafka import TopicPartition

    consumer = _restore_consumer(options, max_fetch_bytes)
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        begin = consumer.beginning_offsets([tp])[tp]
        end = consumer.end_offsets([tp])[tp]
        if stop is not None:
            end = min(end, stop)
        out: list[tuple[int, bytes]] = []
        if max(begin, start) >= end:
            return out
        consumer.seek(tp, max(begin, start))

        def keep(_tp, records) -> None:
            out.extend((r.offset, r.value) for r in records
                       if r.value is not None and r.offset < end and (key is None or r.key == key))

        read_to_end(consumer, [tp], keep, end_offsets={tp: end}, timeout_s=timeout_s, max_records=10_000,
                    poll_timeout_ms=500, what=f"{topic}[{partition}]")
        return out
    finally:
        consumer.close()


def restore_profiles(
    options: Mapping[str, Any],
    topic: str,
    partitions: list[int],
    profiles,
    *,
    progress: Callable[[int, int], None] | None = None,
    owner_of_key: Callable[[bytes], int] | None = None,
    on_stray: Callable[[str, bytes, int], None] | None = None,
) -> dict[str, int]:
    """Load the latest profile of every user of ``partitions`` into a :class:`~stream.profiles.ProfileStore`.

    Returns ``{user_id: partition}`` for the users restored. Raises ``ValueError`` when the
    stored vectors do not have the store's dimension (another model wrote them). A store with
    interest mixes (``profiles.interests``) gets each user's mix back from the same record
    (records written before mixes existed restore without one).
    """
    latest = read_latest(options, topic, partitions, progress=progress, owner_of_key=owner_of_key,
                         on_stray=on_stray)
    users: list[str] = []
    owners: dict[str, int] = {}
    rows: list[np.ndarray] = []
    refs: list[int] = []
    masses: list[float] = []
    mixes: list[tuple[str, bytes]] = []
    for key, (partition, value) in latest.items():
        if key is None or value is None:
            continue
        vector, ref_ms, mass, mix = profile_record_from_bytes(value)
        if vector.shape[0] != profiles.dim:
            raise ValueError(f"{topic} holds {vector.shape[0]}-d profiles, the encoder makes {profiles.dim}-d ones")
        user = key.decode()
        users.append(user)
        owners[user] = partition
        rows.append(vector)
        refs.append(ref_ms)
        masses.append(mass)
        if mix is not None:
            mixes.append((user, mix))
    if users:
        profiles.put_many(users, np.stack(rows), np.asarray(refs, dtype=np.int64), np.asarray(masses, dtype=np.float64))
    interests = getattr(profiles, "interests", None)
    if interests is not None:
        for user, mix in mixes:
            interests.put_bytes(user, mix)
    return owners


def restore_assignments(
    options: Mapping[str, Any],
    topic: str,
    partitions: list[int],
    tracker,
    *,
    owner_of_key: Callable[[bytes], int] | None = None,
    on_stray: Callable[[str, bytes, int], None] | None = None,
) -> int:
    """Load the last emitted assignment of every user of ``partitions`` into an AssignmentTracker
    (strays skipped as in :func:`read_latest`)."""
    restored = 0
    latest = read_latest(options, topic, partitions, owner_of_key=owner_of_key, on_stray=on_stray)
    for key, (_, value) in latest.items():
        if key is None or value is None:
            continue
        try:
            record = msgspec.json.decode(value)
            previous = record.get("previous_cluster")
            interests = record.get("interests")
            tracker.restore(key.decode(), int(record["cluster"]), float(record["score"]),
                            None if previous is None else int(previous),
                            None if interests is None else [int(i["cluster"]) for i in interests])
            restored += 1
        except (msgspec.DecodeError, KeyError, TypeError, ValueError, UnicodeDecodeError):
            continue  # an unreadable record: that user is re-assessed on its next event
    return restored
