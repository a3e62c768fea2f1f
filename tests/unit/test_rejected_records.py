"""A rejected record changes no state and routes nothing (issue: a non-UTF-8 key with a valid payload
moved a user's state to a foreign partition).

Property: for any batch of valid events plus one record that the decoder rejects (its key absent,
not UTF-8, another user's or a near miss; its payload a valid event of a real user or broken), the
pipeline ends with the same profiles, the same tracked assignments and the same ``updated_users`` as
without that record, the record is dead-lettered, and the partitioner never forwards it.
"""

from __future__ import annotations

import json

import numpy as np
from fake_encoders import HashEncoder
from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.partitioning import UserPartitioner
from stream.events import BehaviourEvent, ForgetEvent, decode_event
from stream.pipeline import Pipeline, SourceRecord
from stream.settings import ClusteringSettings

USERS = [f"user-{i}" for i in range(8)]
N_PARTITIONS = 4
TS = 1_700_000_000_000


def _event(user: str, i: int) -> bytes:
    return json.dumps({"user_id": user, "ts": TS + i * 1000, "text": f"topic {i % 5} item {i}"}).encode()


def _valid_batch(n: int) -> list[SourceRecord]:
    users = UserPartitioner(N_PARTITIONS)
    out = []
    for i in range(n):
        user = USERS[i % len(USERS)]
        out.append(SourceRecord(_event(user, i), user.encode(), TS, "events", users.owner(user), i))
    return out


keys = st.one_of(
    st.none(),
    st.binary(min_size=1, max_size=12).filter(lambda b: not _is_utf8(b)),  # not UTF-8
    st.sampled_from(USERS).map(str.encode),  # another (or the same) real user's id
    st.sampled_from([b"\xff\xfe17", b"user-1 ", b"USER-1"]),
)
payloads = st.one_of(
    st.builds(_event, st.sampled_from(USERS), st.integers(0, 10_000)),  # a valid event of a real user
    st.sampled_from([b"", b"not json", b"[1, 2]", b'{"user_id": null}', b'{"user_id": "user-1", "ts": "soon"}',
                     b'{"user_id": "user-2", "text": ""}', b'{"user_id": "user-3", "weight": -1, "text": "x"}']),
    st.binary(max_size=40),
)


def _is_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _state(pipe: Pipeline):
    users, vectors, refs, masses = pipe.profiles.export_arrays()
    order = np.argsort(users)
    return ([users[i] for i in order], vectors[order], refs[order], masses[order],
            {u: pipe.tracker.last(u) for u in USERS})


@settings(max_examples=150, deadline=None)
@given(key=keys, payload=payloads, position=st.integers(0, 24), partition=st.integers(0, N_PARTITIONS - 1))
def test_a_rejected_record_touches_no_state(key, payload, position, partition):
    decoded = decode_event(payload, record_ts_ms=TS, key=key)
    if isinstance(decoded, BehaviourEvent | ForgetEvent):
        return  # a valid record: not what this property is about
    valid = _valid_batch(24)
    poison = SourceRecord(payload, key, TS, "events", partition, 10_000)
    with_poison = valid[:position] + [poison] + valid[position:]

    clean = Pipeline(ClusteringSettings(n_clusters=3, warmup_batches=0), HashEncoder(dim=8))
    dirty = Pipeline(ClusteringSettings(n_clusters=3, warmup_batches=0), HashEncoder(dim=8))
    a = clean.process_batch(valid, now_ms=0)
    b = dirty.process_batch(with_poison, now_ms=0)
    # What the service writes for each batch: identical state records, all in their owner partitions.
    state_a, state_b = _state_sends(clean, a), _state_sends(dirty, b)
    assert state_a == state_b
    owner = UserPartitioner(N_PARTITIONS).owner_of_key
    assert all(partition == owner(key) for _, key, partition in state_b)

    assert [rec for rec, _ in b.dead_letters] == [poison]
    assert b.updated_users == a.updated_users
    sa, sb = _state(clean), _state(dirty)
    assert sa[0] == sb[0]
    for x, y in zip(sa[1:4], sb[1:4], strict=True):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-6)
    assert sa[4] == sb[4]
    # The service's routing step never forwards a record that will be rejected.
    as_consumed = _Rec(poison)
    local, misrouted = UserPartitioner(N_PARTITIONS).split([as_consumed])
    assert local == [as_consumed] and misrouted == []


def _state_sends(pipe: Pipeline, out) -> list[tuple[str, bytes, int]]:
    """(topic, key, partition) of the profile and assignment records the service builds for a batch."""
    from types import SimpleNamespace

    from consumers.batch_outputs import BatchOutputs

    topics = SimpleNamespace(profiles="profiles", assignments="assignments", centroids="centroids",
                             dead_letters="dead-letters", statistics="statistics")
    outputs = BatchOutputs(topics, UserPartitioner(N_PARTITIONS), writer=b"g-m")
    sends = outputs.batch(out, pipe, now_ms=0)
    return sorted((s.topic, s.key, s.partition) for s in sends if s.topic in ("profiles", "assignments"))


def test_updated_users_are_only_users_with_applied_events():
    pipe = Pipeline(ClusteringSettings(n_clusters=2, warmup_batches=0), HashEncoder(dim=8))
    records = [
        SourceRecord(_event("user-1", 1), b"user-1", TS, "events", 0, 0),
        SourceRecord(_event("user-2", 2), b"\xff\xfe17", TS, "events", 0, 1),  # key not UTF-8: rejected
        SourceRecord(_event("user-3", 3), b"user-4", TS, "events", 0, 2),  # another user's key: rejected
        SourceRecord(b'{"user_id": "user-5", "ts": "never"}', None, TS, "events", 0, 3),  # bad ts
    ]
    out = pipe.process_batch(records, now_ms=0)
    assert out.updated_users == ["user-1"]
    assert sorted(r.reason for _, r in out.dead_letters) == ["bad_timestamp", "key_mismatch", "key_mismatch"]
    assert set(pipe.profiles.user_ids()) == {"user-1"}


def test_valid_events_off_their_owner_partition_are_set_aside_with_their_user():
    users = UserPartitioner(N_PARTITIONS)
    owner = users.owner("user-1")
    elsewhere = (owner + 1) % N_PARTITIONS
    records = [
        SourceRecord(_event("user-1", 1), b"user-1", TS, "events", owner, 0),  # keyed, home
        SourceRecord(_event("user-1", 2), None, TS, "events", owner, 1),  # keyless, home
        SourceRecord(_event("user-1", 3), None, TS, "events", elsewhere, 2),  # keyless, away
        SourceRecord(_event("user-1", 4), b"user-1", TS, "events", elsewhere, 3),  # keyed, custom partitioner
        SourceRecord(b'{"type": "forget", "user_id": "user-1"}', None, TS, "events", elsewhere, 4),
    ]
    # SourceRecord names the record time timestamp_ms; the service hands kafka ConsumerRecords (timestamp).
    records = [_Rec(r) for r in records]
    local, misrouted = users.split(records)
    assert [r.offset for r in local] == [0, 1]
    assert [(r.offset, u) for r, u in misrouted] == [(2, "user-1"), (3, "user-1"), (4, "user-1")]


class _Rec:
    """A Kafka ConsumerRecord's shape (``timestamp``) over a SourceRecord."""

    def __init__(self, rec: SourceRecord) -> None:
        self.key, self.value, self.partition, self.offset = rec.key, rec.value, rec.partition, rec.offset
        self.timestamp = rec.timestamp_ms


def test_owner_partition_is_where_kafkas_default_partitioner_puts_a_keyed_record():
    from kafka.partitioner.default import DefaultPartitioner

    class Cluster:
        def topics(self):
            return {"events"}

        def partitions_for_topic(self, topic):
            return set(range(7))

        available_partitions_for_topic = partitions_for_topic

    users = UserPartitioner(7)
    producer_side = DefaultPartitioner()
    owners = set()
    for user in USERS + ["ü-ñicode", "a" * 300, "42"]:
        key = user.encode()
        owners.add(users.owner(user))
        assert users.owner(user) == producer_side.partition("events", user, key, None, None, Cluster())
    assert len(owners) > 1
