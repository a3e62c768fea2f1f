"""Which events partition owns a user: the one rule that keeps each user's state in one place.

The events topic, the assignments topic and the profiles changelog are co-partitioned: the
member that owns events partition ``p`` holds the state of the users of ``p`` and writes their
records to partition ``p`` of the other two. That only works if every user has exactly one
partition, so the rule is fixed: a user's partition is where **Kafka's default partitioner**
puts a record keyed by the user id (murmur2 of the UTF-8 bytes, as the Java client, Kafka
Streams, kafka-python and ``interest-stream produce`` do). librdkafka-based producers
(confluent-kafka) must set ``partitioner=murmur2_random`` to match.

A valid event that arrives on another partition (produced without a key, or with a custom
partitioner) is not applied there: that would put the user's state in two partitions, held by
two members. :meth:`UserPartitioner.split` sets it aside and the service dead-letters it with
the reason ``wrong_partition`` (re-routing it through the input topic was tried and dropped: it
makes the service a writer of its own input, needing write access there, and leaves transaction
markers at the end of the input partitions, so offset-based lag tools never read zero). Records
that will be rejected anyway (bad payload, key that is not the user id) stay in the batch: the
worker dead-letters them with their own reason, and they touch no state.

On restore, a changelog record found in a partition that does not own its key (a stray left by
an older version) is skipped and counted: the owner partition's record is the user's state.

Example:

>>> from types import SimpleNamespace as Rec
>>> users = UserPartitioner(6)
>>> users.owner("alice"), users.owner("bob")
(3, 0)
>>> good = Rec(key=b"alice", value=b'{"user_id": "alice", "text": "x"}', partition=3, timestamp=1)
>>> keyless = Rec(key=None, value=b'{"user_id": "bob", "text": "y"}', partition=1, timestamp=1)
>>> bad_key = Rec(key=b"\\xff\\xfe17", value=b'{"user_id": "bob", "text": "z"}', partition=1, timestamp=1)
>>> local, moved = users.split([good, keyless, bad_key])
>>> [r.key for r in local], [(user, r.partition) for r, user in moved]
([b'alice', b'\\xff\\xfe17'], [('bob', 1)])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stream.events import BehaviourEvent, ForgetEvent, decode_event

__all__ = ["UserPartitioner"]


class UserPartitioner:
    """Owner partitions of users over ``n_partitions`` partitions (Kafka's default, murmur2)."""

    def __init__(self, n_partitions: int) -> None:
        if n_partitions < 1:
            raise ValueError(f"n_partitions must be >= 1, got {n_partitions}")
        from kafka.partitioner.default import murmur2

        self.n_partitions = int(n_partitions)
        self._murmur2 = murmur2
        self._cache: dict[bytes, int] = {}

    def owner_of_key(self, key: bytes) -> int:
        """The partition that owns the records keyed ``key`` (the UTF-8 user id)."""
        owner = self._cache.get(key)
        if owner is None:
            owner = (self._murmur2(key) & 0x7FFFFFFF) % self.n_partitions
            if len(self._cache) >= 1_000_000:  # bounded: a user id is hashed again after a reset
                self._cache.clear()
            self._cache[key] = owner
        return owner

    def owner(self, user_id: str) -> int:
        """The events partition that owns ``user_id`` (and its co-partitioned state)."""
        return self.owner_of_key(user_id.encode("utf-8"))

    def split(self, records: Sequence[Any]) -> tuple[list[Any], list[tuple[Any, str]]]:
        """``(local, misrouted)``: records to process here, and ``(record, user_id)`` pairs of valid
        events (behaviour or forget) that sit on a partition their user does not own.

        A keyed record on its key's owner partition is local without decoding (a mismatching
        payload is rejected later as ``key_mismatch``). Any other record is decoded exactly as the
        worker will decode it; only a valid event is set aside, so an invalid record is always
        dead-lettered where it arrived.
        """
        local: list[Any] = []
        misrouted: list[tuple[Any, str]] = []
        for rec in records:
            key = rec.key
            if key and self.owner_of_key(bytes(key)) == rec.partition:
                local.append(rec)
                continue
            event = decode_event(rec.value, record_ts_ms=rec.timestamp, key=key)
            if isinstance(event, BehaviourEvent | ForgetEvent) and self.owner(event.user_id) != rec.partition:
                misrouted.append((rec, event.user_id))
            else:
                local.append(rec)
        return local, misrouted
