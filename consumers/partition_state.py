"""Which events partitions this member owns, and the state it holds for them.

The consumer group decides which partitions of the events topic a member owns; the member holds
the state (profiles, last assignments) of exactly the users of those partitions, restored from the
co-partitioned changelogs (:mod:`consumers.changelog`). The model is the group's, not the
member's: it follows the model topic (:mod:`consumers.model_follower`).

:class:`PartitionState` keeps that straight with two pieces of state:

- ``pending``: an assignment the group handed over (noted by :meth:`listener`'s callback,
  which runs inside ``poll`` on the client's network loop, so it only notes it and pauses the
  partitions) and not applied yet. :meth:`apply_pending` applies it between batches: drops the
  users of partitions lost, restores the partitions gained, resumes, reports ready. Events are
  never processed for a partition whose state is not loaded: its partitions stay paused;
- ``from_scratch``: the in-memory state is empty and must be rebuilt from Kafka, and every owned partition re-read from its committed offset. True at start-up, and again after
  :meth:`rebuild`: a batch that was not committed leaves the in-memory state ahead of what Kafka
  holds, and the changelogs plus the committed offsets are the only truth.

``released``: held partitions that an assignment since the last apply left out, or that were lost
when the group evicted this member. Another member may have applied their events meanwhile, so
even when they come back their held state is stale: :meth:`apply_pending` drops and restores them
(and reads them again from the committed offset) like any gained partition.

``awaiting_assignment``: a revocation was seen and the assignment that ends the rebalance not yet.
Meanwhile the revoked partitions are paused and nothing is applied, restored or swept: the group
may give them to another member (a member busy restoring can even miss a whole generation), and
a commit made now could carry no valid generation for Kafka to fence.

``rebalances`` counts revocations: a batch polled before a revocation and committed after it could
lose or double events on the partition's new owner, so the service drops such a batch
(:meth:`rebalanced_since`) and rebuilds instead.

Example (a fake consumer; no partitions change hands, so nothing needs Kafka):

>>> from types import SimpleNamespace as NS
>>> from stream.metrics import ServiceMetrics
>>> state = PartitionState(NS(events_topic="events"), ServiceMetrics(), retry=None, set_ready=lambda ok: None)
>>> state.from_scratch, state.pending
(True, None)
>>> mark = state.rebalances
>>> state.listener().on_partitions_revoked([])
>>> state.rebalanced_since(mark)
True
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from consumers.changelog import restore_assignments, restore_profiles
from consumers.kafka_retry import FatalKafkaError, KafkaRetry, call
from consumers.partitioning import UserPartitioner
from stream.metrics import ServiceMetrics

log = logging.getLogger("interest_stream.service")

__all__ = ["PartitionState"]


class PartitionState:
    """Owned partitions, their restore, and the rebuild after a failed commit (see the module docstring)."""

    def __init__(self, settings: Any, metrics: ServiceMetrics, *, retry: KafkaRetry | None,
                 set_ready: Callable[[bool], None], on_revoked: Callable[[list], None] | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.retry = retry
        self.set_ready = set_ready
        self.on_revoked = on_revoked
        self.users: UserPartitioner | None = None  # known once the events topic's partition count is
        self.consumer: Any = None  # the events consumer, paused by the listener on an assignment
        self.owned: set[int] = set()
        self.pending: set[int] | None = None
        self.from_scratch = True
        self.rebalances = 0
        self.released: set[int] = set()  # held partitions some assignment since the last apply left out
        self.awaiting_assignment = False  # revoked, the next assignment not handed out yet

    # ------------------------------------------------------------------ the group's callbacks
    def listener(self):
        """A kafka-python rebalance listener that notes assignments for :meth:`apply_pending`."""
        from kafka.consumer.subscription_state import ConsumerRebalanceListener

        state = self
        topic = self.settings.events_topic

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):
                state.rebalances += 1
                log.info("partitions revoked: %s", sorted((tp.topic, tp.partition) for tp in revoked))
                # Until the group hands out the next assignment nothing is processed or committed for
                # these partitions: they may be another member's by then (see awaiting_assignment).
                state.awaiting_assignment = True
                if revoked and state.consumer is not None:
                    state.consumer.pause(*revoked)
                state.set_ready(False)
                if state.on_revoked is not None:
                    state.on_revoked(list(revoked))

            def on_partitions_lost(self, lost):
                # Evicted from the group (session expired, fenced): other members may own these
                # partitions now, so whatever is held for them is stale even if they come back.
                log.warning("partitions lost (evicted from the group): %s",
                            sorted((tp.topic, tp.partition) for tp in lost))
                state.released |= state.owned | {tp.partition for tp in lost if tp.topic == topic}
                self.on_partitions_revoked(lost)

            def on_partitions_assigned(self, assigned):
                # Runs inside poll, on the client's network loop: only note the assignment and pause the
                # partitions; the loop restores their state before resuming them (heartbeats go on).
                log.info("partitions assigned: %s", sorted((tp.topic, tp.partition) for tp in assigned))
                if assigned:
                    state.consumer.pause(*assigned)
                state.pending = {tp.partition for tp in assigned if tp.topic == topic}
                state.awaiting_assignment = False
                # A held partition missing from this assignment may have had another owner since (even
                # if a later assignment hands it back before the loop applies one): its state is stale.
                state.released |= state.owned - state.pending

        return Listener()

    def rebalanced_since(self, mark: int) -> bool:
        """Whether a revocation happened since ``rebalances`` was ``mark``."""
        return self.rebalances != mark

    # ------------------------------------------------------------------ applying an assignment
    def apply_pending(self, consumer, pipeline) -> bool:
        """Drop the users of partitions lost, restore those gained (all, when rebuilding), resume, report
        ready. False when a stop was requested while Kafka was unreachable (nothing applied)."""
        assigned = self.pending if self.pending is not None else set(self.owned)
        # Kept: held and in every assignment since the last apply, so no other member owned it meanwhile.
        kept = (self.owned - self.released) & assigned
        lost, gained = self.owned - kept, assigned - kept
        if lost:
            self._drop(pipeline, lost)
            self.owned -= lost
        if gained or self.from_scratch:
            if self._call("restore", lambda: self._restore(pipeline, sorted(gained))) is None:
                return False
        # Read each restored partition from its committed offset, the point its restored state is at
        # (the client may keep a position from an earlier assignment of the partition).
        if self._call("recover", lambda: self._seek_to_committed(consumer, assigned if self.from_scratch
                                                                  else gained)) is None:
            return False
        self.from_scratch = False
        self.released = set()
        self.pending = None
        self.owned = set(assigned)
        paused = consumer.paused()
        if paused:
            consumer.resume(*paused)
        self.set_ready(bool(assigned))
        return True

    def rebuild(self, consumer) -> None:
        """After a failed commit: forget what is held; the next :meth:`apply_pending` restores every owned
        partition from Kafka and re-reads each partition from its committed offset."""
        self.set_ready(False)
        if self.pending is None and not self.awaiting_assignment:
            self.pending = set(self.owned)
        self.owned = set()
        self.from_scratch = True
        assigned = consumer.assignment()
        if assigned:
            consumer.pause(*assigned)

    @property
    def needs_apply(self) -> bool:
        """Whether :meth:`apply_pending` must run before the next batch (not while the group is still
        handing out the assignment that follows a revocation: the loop keeps polling for it)."""
        return (self.pending is not None or self.from_scratch) and not self.awaiting_assignment

    @property
    def settled(self) -> bool:
        """Whether the held state is exactly that of the partitions the group assigned: no revocation
        awaiting its assignment, nothing to apply. Only then may writes outside a batch (an idle sweep)
        go out, since a revoked partition may be another member's already."""
        return not self.awaiting_assignment and self.pending is None and not self.from_scratch

    # ------------------------------------------------------------------ the work
    def _drop(self, pipeline, partitions: set[int]) -> None:
        owner = self.users.owner
        users = [u for u in pipeline.profiles.user_ids() if owner(u) in partitions]
        for user in users:
            pipeline.profiles.forget(user)
            pipeline.tracker.forget(user)
        log.info("dropped the state of %d users of partitions %s (no longer owned)", len(users), sorted(partitions))

    def _restore(self, pipeline, partitions: list[int]) -> bool:
        """Restore profiles and last assignments of ``partitions``."""
        s, m = self.settings, self.metrics
        profiles_topic, _, _ = s.changelog_topics()
        opts = s.kafka_client_options()
        t0 = time.monotonic()
        m.restore_progress.set(0.0)
        self.set_ready(False)
        self._wait_for_stable_offsets(partitions)

        def progress(done: int, total: int) -> None:
            m.restore_progress.set(done / total if total else 1.0)

        strays: dict[str, int] = {}

        def stray(topic: str, key: bytes, partition: int) -> None:
            # A record in a partition that does not own its key (an older version wrote it there, see
            # consumers/partitioning.py): the owner partition's record is the user's state; skip it.
            strays[topic] = strays.get(topic, 0) + 1
            m.restore_strays.labels(topic=topic).inc()
            if strays[topic] <= 5:
                log.warning("restore: %s[%d] holds a record for %r, whose owner partition is %d: skipped "
                            "(the owner partition's record wins)", topic, partition, key[:60],
                            self.users.owner_of_key(key))

        owner = self.users.owner_of_key
        try:
            restored = restore_profiles(opts, profiles_topic, partitions, pipeline.profiles, progress=progress,
                                        owner_of_key=owner, on_stray=stray)
        except ValueError as exc:
            raise FatalKafkaError(f"cannot restore profiles: {exc}; use a new group id or changelog topic") from exc
        n_assigned = restore_assignments(opts, s.assignments_topic, partitions, pipeline.tracker,
                                         owner_of_key=owner, on_stray=stray)
        if strays:
            log.warning("restore skipped stray records (key not owned by their partition): %s", strays)
        took = time.monotonic() - t0
        m.restore_progress.set(1.0)
        m.restore_seconds.set(took)
        m.users.set(len(pipeline.profiles))
        log.info("restored partitions %s: %d profiles, %d assignments, model version %d, %.2f s",
                 partitions, len(restored), n_assigned, pipeline.model.version, took)
        return True

    def _wait_for_stable_offsets(self, partitions: list[int]) -> None:
        """Wait until no transaction of the partitions' previous owner is still open (KIP-447).

        A batch's transaction commits the offsets of its partitions, and a read_committed
        consumer's offset fetch waits while such a commit is pending. A previous owner that died after asking to commit leaves its
        transaction open until it completes (or, aborted, until ``transaction.timeout.ms``); read
        before it completes, the restore would miss what it wrote, and its records would appear
        afterwards: an event applied twice, a change published twice.
        """
        consumer = self.consumer
        if consumer is None or not partitions:
            return
        from kafka import TopicPartition

        for p in partitions:
            consumer.committed(TopicPartition(self.settings.events_topic, p))

    def _seek_to_committed(self, consumer, partitions: set[int]) -> bool:
        from kafka import TopicPartition

        for p in partitions:
            tp = TopicPartition(self.settings.events_topic, p)
            if tp not in consumer.assignment():
                continue
            committed = consumer.committed(tp)
            if committed is None:
                consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, committed)
        return True

    def _call(self, operation: str, fn: Callable[[], Any]) -> Any:
        return call(self.retry, operation, fn)
