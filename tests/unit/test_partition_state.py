"""Partition ownership, restore and rebuild, against a fake consumer and fake changelogs (no broker)."""

from __future__ import annotations

import numpy as np
import pytest
from kafka import TopicPartition

import consumers.partition_state as ps
from consumers.partition_state import PartitionState
from consumers.partitioning import UserPartitioner
from consumers.settings import ServiceSettings
from stream.metrics import ServiceMetrics
from stream.pipeline import Pipeline
from stream.settings import ClusteringSettings

TOPIC = "events"


class FakeConsumer:
    def __init__(self, assigned=()) -> None:
        self.assigned = {TopicPartition(TOPIC, p) for p in assigned}
        self.paused_set: set = set()
        self.committed_offsets = {0: 7, 1: None, 2: 3}
        self.seeks: list = []

    def assignment(self):
        return set(self.assigned)

    def pause(self, *tps):
        self.paused_set |= set(tps)

    def resume(self, *tps):
        self.paused_set -= set(tps)

    def paused(self):
        return set(self.paused_set)

    def committed(self, tp):
        return self.committed_offsets[tp.partition]

    def seek(self, tp, offset):
        self.seeks.append((tp.partition, offset))

    def seek_to_beginning(self, tp):
        self.seeks.append((tp.partition, "beginning"))


class Encoder:
    dim = 4

    def encode(self, texts):
        return np.ones((len(texts), 4), np.float32) / 2


@pytest.fixture
def state(monkeypatch):
    """A PartitionState whose changelogs hold one user per partition; restores are recorded."""
    users = UserPartitioner(3)
    by_partition = {}
    for i in range(40):
        by_partition.setdefault(users.owner(f"u{i}"), f"u{i}")
    restored: list = []

    def restore_profiles(opts, topic, partitions, profiles, **kw):
        restored.append(("profiles", tuple(partitions)))
        for p in partitions:
            profiles.put_raw(by_partition[p], np.ones(4, np.float32), 1, 1.0)
        return {by_partition[p]: p for p in partitions}

    monkeypatch.setattr(ps, "restore_profiles", restore_profiles)
    monkeypatch.setattr(ps, "restore_assignments", lambda *a, **kw: restored.append(("assignments", tuple(a[2]))) or 0)
    settings = ServiceSettings.load(overrides={"bootstrap_servers": "unused:9092", "events_topic": TOPIC})
    ready: list[bool] = []
    s = PartitionState(settings, ServiceMetrics(), retry=None, set_ready=ready.append)
    s.users = users
    s.restored, s.ready_calls, s.by_partition = restored, ready, by_partition
    return s


def _pipeline():
    return Pipeline(ClusteringSettings(n_clusters=2), Encoder())


def test_first_assignment_restores_partitions_then_resumes(state):
    consumer = FakeConsumer(assigned=[0, 2])
    state.consumer = consumer
    state.listener().on_partitions_assigned(consumer.assignment())
    assert consumer.paused() == consumer.assignment() and state.needs_apply
    pipe = _pipeline()
    assert state.apply_pending(consumer, pipe)
    assert state.restored == [("profiles", (0, 2)), ("assignments", (0, 2))]
    assert consumer.seeks == [(0, 7), (2, 3)]  # from scratch: re-read from the committed offsets
    assert consumer.paused() == set() and state.owned == {0, 2} and state.ready_calls[-1] is True
    assert set(pipe.profiles.user_ids()) == {state.by_partition[0], state.by_partition[2]}
    assert not state.needs_apply


def test_a_rebalance_drops_lost_users_and_restores_only_gained_partitions(state):
    consumer = FakeConsumer(assigned=[0, 2])
    state.consumer = consumer
    pipe = _pipeline()
    state.pending = {0, 2}
    state.apply_pending(consumer, pipe)
    state.restored.clear()
    consumer.seeks.clear()
    mark = state.rebalances
    state.listener().on_partitions_revoked([TopicPartition(TOPIC, 2)])
    consumer.assigned = {TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)}
    state.listener().on_partitions_assigned(consumer.assignment())
    assert state.rebalanced_since(mark)
    state.apply_pending(consumer, pipe)
    assert state.restored == [("profiles", (1,)), ("assignments", (1,))]  # no model, no partition 0 again
    assert consumer.seeks == [(1, "beginning")]  # only the gained partition, from its committed offset
    assert set(pipe.profiles.user_ids()) == {state.by_partition[0], state.by_partition[1]}
    assert state.owned == {0, 1}


def test_a_partition_handed_away_and_back_before_an_apply_is_restored_again(state):
    """Two rebalances before the loop applies one: partition 2 went to another member (who may have
    applied and committed its events) and came back. The state held for it is stale: dropped,
    restored from the changelogs and re-read from the committed offset, like a gained partition."""
    consumer = FakeConsumer(assigned=[0, 2])
    state.consumer = consumer
    pipe = _pipeline()
    state.pending = {0, 2}
    state.apply_pending(consumer, pipe)
    stale = state.by_partition[2]
    pipe.profiles.put_raw(stale, np.full(4, 9.0, np.float32), 5, 3.0)  # applied here before the hand-over
    state.restored.clear()
    consumer.seeks.clear()
    listener = state.listener()
    listener.on_partitions_revoked(consumer.assignment())
    consumer.assigned = {TopicPartition(TOPIC, 0)}
    listener.on_partitions_assigned(consumer.assignment())  # generation n+1: partition 2 elsewhere
    listener.on_partitions_revoked(consumer.assignment())
    consumer.assigned = {TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 2)}
    listener.on_partitions_assigned(consumer.assignment())  # generation n+2: back here
    state.apply_pending(consumer, pipe)
    assert state.restored == [("profiles", (2,)), ("assignments", (2,))]  # partition 0 was held throughout
    assert consumer.seeks == [(2, 3)]
    assert pipe.profiles.raw(stale)[1:] == (1, 1.0)  # the changelog's state, not the stale one
    assert state.owned == {0, 2} and not state.released
    # the next rebalance that keeps both partitions restores nothing
    state.restored.clear()
    listener.on_partitions_revoked(consumer.assignment())
    listener.on_partitions_assigned(consumer.assignment())
    state.apply_pending(consumer, pipe)
    assert state.restored == []
    # evicted from the group and handed the same partitions back: everything held is stale
    listener.on_partitions_lost(consumer.assignment())
    listener.on_partitions_assigned(consumer.assignment())
    state.apply_pending(consumer, pipe)
    assert state.restored == [("profiles", (0, 2)), ("assignments", (0, 2))]


def test_rebuild_restores_everything_owned_from_scratch(state):
    consumer = FakeConsumer(assigned=[1])
    state.consumer = consumer
    state.pending = {1}
    state.apply_pending(consumer, _pipeline())
    state.restored.clear()
    consumer.seeks.clear()
    state.rebuild(consumer)
    assert state.needs_apply and state.owned == set() and consumer.paused() == consumer.assignment()
    assert state.ready_calls[-1] is False
    fresh = _pipeline()
    state.apply_pending(consumer, fresh)
    assert state.restored == [("profiles", (1,)), ("assignments", (1,))]
    assert consumer.seeks == [(1, "beginning")]  # partition 1 has no committed offset yet
    assert set(fresh.profiles.user_ids()) == {state.by_partition[1]}



def test_after_a_revocation_nothing_is_applied_until_the_next_assignment(state):
    """A batch dropped after a revocation rebuilds state: the member must not restore and process the
    revoked partitions on its own (another member may get them in this rebalance, or in one this
    member misses while it is busy); it waits, paused, for the assignment and applies that."""
    consumer = FakeConsumer(assigned=[0, 1])
    state.consumer = consumer
    state.pending = {0, 1}
    state.apply_pending(consumer, _pipeline())
    state.restored.clear()
    consumer.seeks.clear()
    listener = state.listener()
    listener.on_partitions_revoked(consumer.assignment())
    assert consumer.paused() == consumer.assignment()
    state.rebuild(consumer)  # the batch in flight was dropped
    assert not state.needs_apply and not state.settled  # the loop keeps polling, applies nothing
    consumer.assigned = {TopicPartition(TOPIC, 2)}
    listener.on_partitions_assigned(consumer.assignment())
    assert state.needs_apply
    fresh = _pipeline()
    state.apply_pending(consumer, fresh)
    assert state.restored == [("profiles", (2,)), ("assignments", (2,))]
    assert consumer.seeks == [(2, 3)]
    assert set(fresh.profiles.user_ids()) == {state.by_partition[2]} and state.settled
