"""The records one batch publishes, each in its place.

:class:`BatchOutputs` turns a :class:`stream.pipeline.BatchResult` into the records of the
batch's transaction:

- the **profiles changelog**: the new profile of every user the batch *applied* an event of
  (``updated_users``), a tombstone for every forgotten user;
- the **assignments topic**: the changes, and a tombstone for every forgotten user;
- both in the user's own partition (:class:`consumers.partitioning.UserPartitioner`), never
  in the partition of some record that named the user: a rejected record writes nothing;
- the **centroids topic**: the snapshots;
- the **dead-letter topic**: every rejected record, its original key and bytes, with the
  reason and source coordinates as headers;
- the **statistics topic**: the batch's model statistics (a
  :class:`~stream.shared_model.StatisticsRecord`), for the group's trainer
  (:mod:`consumers.trainer_role`), which applies every member's in the topic's order.

Valid events found off their user's partition are dead-lettered as ``wrong_partition``
(:meth:`BatchOutputs.misrouted`).

Example (the centroid and dead-letter records of a result; no users):

>>> from types import SimpleNamespace as NS
>>> from consumers.partitioning import UserPartitioner
>>> topics = NS(profiles="p", assignments="a", centroids="c", dead_letters="d", statistics="s")
>>> outputs = BatchOutputs(topics, UserPartitioner(3), writer=b"g-1")
>>> rec = NS(key=b"k", value=b"oops", topic="events", partition=0, offset=7)
>>> result = NS(updated_users=[], tombstones=[], changes=[], snapshots=[], stats=None,
...             dead_letters=[(rec, NS(reason="not_json", detail="expected value"))])
>>> [(s.topic, s.key, s.value) for s in outputs.batch(result, pipeline=None, now_ms=0)]
[('d', b'k', b'oops')]
"""

from __future__ import annotations

import time
from typing import Any

from consumers.batch_committer import Send, dlq_headers
from consumers.partitioning import UserPartitioner
from stream.events import RejectReason
from stream.profiles import profile_to_bytes
from stream.records import encode_record
from stream.shared_model import StatisticsRecord, encode_statistics

__all__ = ["BatchOutputs"]

WRONG_PARTITION = RejectReason.WRONG_PARTITION.value


class BatchOutputs:
    """Builds the records of a batch (see the module docstring).

    ``topics`` names ``profiles``, ``assignments``, ``centroids``, ``dead_letters`` and
    ``statistics``; ``writer`` (the member's transactional id) keys the statistics records.
    """

    def __init__(self, topics: Any, users: UserPartitioner, *, writer: bytes) -> None:
        self.topics = topics
        self.users = users
        self.writer = writer

    def batch(self, out: Any, pipeline: Any, now_ms: int) -> list[Send]:
        """Every record of one batch's result, in the order they are published."""
        t, owner = self.topics, self.users.owner
        sends: list[Send] = []
        for user in out.updated_users:
            sends.append(Send(t.profiles, user.encode(), profile_to_bytes(*pipeline.profiles.raw(user), interests=pipeline.profiles.mix_bytes(user)),
                              partition=owner(user)))
        for user in out.tombstones:
            sends.append(Send(t.profiles, user.encode(), None, partition=owner(user)))
            sends.append(Send(t.assignments, user.encode(), None, partition=owner(user)))
        sends.extend(self.changes(out.changes))
        for snap in out.snapshots:
            sends.append(Send(t.centroids, str(snap.cluster).encode(), encode_record(snap)))
        for rec, rejection in out.dead_letters:
            sends.append(Send(t.dead_letters, rec.key, rec.value if rec.value is not None else b"",
                              dlq_headers(rec.topic, rec.partition, rec.offset, rejection.reason, rejection.detail)))
        if out.stats is not None:  # for the group's trainer, in the same transaction as the rest
            record = StatisticsRecord(
                worker=self.writer.decode(), stats=out.stats.to_bytes(),
                label_stats=out.label_stats.to_bytes() if out.label_stats is not None else None,
                now_ms=int(now_ms), event_clock_ms=int(pipeline.event_clock_ms),
                produced_ms=int(time.time() * 1000), model_version=int(pipeline.model.version))
            sends.append(Send(t.statistics, self.writer, encode_statistics(record), partition=0))
        return sends

    def changes(self, changes: list) -> list[Send]:
        """Assignment-change records, each in its user's partition (also the idle sweep's)."""
        owner = self.users.owner
        return [Send(self.topics.assignments, c.user_id.encode(), encode_record(c), partition=owner(c.user_id))
                for c in changes]

    def misrouted(self, misrouted: list) -> list[Send]:
        """Dead letters for valid events found off their user's partition (``wrong_partition``)."""
        owner, n = self.users.owner, self.users.n_partitions
        return [Send(self.topics.dead_letters, rec.key, rec.value if rec.value is not None else b"",
                     dlq_headers(rec.topic, rec.partition, rec.offset, WRONG_PARTITION,
                                 f"user {user[:60]!r} belongs to partition {owner(user)} of {n} (Kafka's default "
                                 f"partitioner on the user id), not {rec.partition}: produce events keyed by user_id"))
                for rec, user in misrouted]
