"""The records a batch publishes: each user's state in the user's own partition (no broker)."""

from __future__ import annotations

import json
from types import SimpleNamespace as NS

import numpy as np

from consumers.batch_outputs import BatchOutputs
from consumers.partitioning import UserPartitioner
from stream.pipeline import Pipeline, SourceRecord
from stream.settings import ClusteringSettings

TOPICS = NS(profiles="p", assignments="a", centroids="c", dead_letters="d", model="m", updates="u")


class Encoder:
    dim = 4

    def encode(self, texts):  # near one of two axes, a little apart per text
        rows = [[1.0, 0.01 * (int(t.split()[-1]) % 7), 0, 0] if "ball" in t else [0, 1.0, 0.01 * (int(t.split()[-1]) % 5), 0]
                for t in texts]
        return np.asarray(rows, np.float32)


def _batch(pipe, users, n=12):
    recs = [SourceRecord(json.dumps({"user_id": f"u{i % users}", "ts": 1000 + i,
                                     "text": f"{'ball' if i % 2 else 'stocks'} {i}"}).encode(), None, None)
            for i in range(n)]
    recs.append(SourceRecord(json.dumps({"type": "forget", "user_id": "gone"}).encode(), None, None))
    return pipe.process_batch(recs, now_ms=5)


def test_state_records_go_to_each_users_partition_and_the_model_is_snapshotted_on_schedule():
    users = UserPartitioner(4)
    outputs = BatchOutputs(TOPICS, users, writer=b"g-m", model_snapshot_every=2)
    pipe = Pipeline(ClusteringSettings(n_clusters=2, warmup_batches=0), Encoder())
    out = _batch(pipe, users=30, n=60)
    sends = outputs.batch(out, pipe, now_ms=5)
    state = [s for s in sends if s.topic in ("p", "a")]
    assert {s.key.decode() for s in state if s.topic == "p" and s.value is not None} == set(out.updated_users)
    assert all(s.partition == users.owner_of_key(s.key) for s in state)
    tombstones = [(s.topic, s.key) for s in sends if s.value is None]
    assert sorted(tombstones) == [("a", b"gone"), ("p", b"gone")]
    assert [s.topic for s in sends].count("u") == 1 and "m" not in [s.topic for s in sends]
    assert pipe.model.is_initialised
    sends = outputs.batch(_batch(pipe, users=30, n=60), pipe, now_ms=6)
    assert [s.topic for s in sends][-1] == "m", "every second batch carries the model"
    assert not outputs.snapshot_pending()


def test_events_off_their_users_partition_are_dead_lettered_as_they_came():
    users = UserPartitioner(4)
    outputs = BatchOutputs(TOPICS, users, writer=b"g-m", model_snapshot_every=100)
    rec = NS(topic="events", partition=(users.owner("bob") + 1) % 4, offset=17, key=None,
             value=b'{"user_id": "bob", "text": "x"}', timestamp=1234)
    (send,) = outputs.misrouted([(rec, "bob")])
    assert (send.topic, send.key, send.value, send.partition) == ("d", None, rec.value, None)
    headers = dict(send.headers)
    assert headers["reason"] == b"wrong_partition" and headers["source_offset"] == b"17"
    assert f"belongs to partition {users.owner('bob')} of 4".encode() in headers["detail"]


def test_committed_notes_the_offset_of_the_trainer_step():
    outputs = BatchOutputs(TOPICS, UserPartitioner(2), writer=b"g-m", model_snapshot_every=100)
    done = NS(is_done=True, succeeded=lambda: True, value=NS(offset=41))
    outputs.committed([NS(topic="a"), NS(topic="u")], [done, done])
    assert outputs.updates_offset == 41
