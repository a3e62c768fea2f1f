"""The records a batch publishes: each user's state in the user's own partition (no broker)."""

from __future__ import annotations

import json
from types import SimpleNamespace as NS

import numpy as np

from consumers.batch_outputs import BatchOutputs
from consumers.partitioning import UserPartitioner
from stream.pipeline import Pipeline, SourceRecord
from stream.settings import ClusteringSettings
from stream.shared_model import decode_statistics

TOPICS = NS(profiles="p", assignments="a", centroids="c", dead_letters="d", statistics="s")


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
    return pipe.process_batch(recs, now_ms=5, train=False)


def test_state_records_go_to_each_users_partition_and_the_statistics_to_the_trainer():
    users = UserPartitioner(4)
    outputs = BatchOutputs(TOPICS, users, writer=b"g-m")
    pipe = Pipeline(ClusteringSettings(n_clusters=2, warmup_batches=0), Encoder())
    out = _batch(pipe, users=30, n=60)
    sends = outputs.batch(out, pipe, now_ms=5)
    state = [s for s in sends if s.topic in ("p", "a")]
    assert {s.key.decode() for s in state if s.topic == "p" and s.value is not None} == set(out.updated_users)
    assert all(s.partition == users.owner_of_key(s.key) for s in state)
    tombstones = [(s.topic, s.key) for s in sends if s.value is None]
    assert sorted(tombstones) == [("a", b"gone"), ("p", b"gone")]
    (stats,) = [s for s in sends if s.topic == "s"]
    assert (stats.key, stats.partition) == (b"g-m", 0)
    record = decode_statistics(stats.value)
    assert (record.worker, record.now_ms, record.model_version) == ("g-m", 5, 0)
    assert record.stats == out.stats.to_bytes()
    assert not pipe.model.is_initialised, "a worker never trains: the group's trainer does"


def test_events_off_their_users_partition_are_dead_lettered_as_they_came():
    users = UserPartitioner(4)
    outputs = BatchOutputs(TOPICS, users, writer=b"g-m")
    rec = NS(topic="events", partition=(users.owner("bob") + 1) % 4, offset=17, key=None,
             value=b'{"user_id": "bob", "text": "x"}', timestamp=1234)
    (send,) = outputs.misrouted([(rec, "bob")])
    assert (send.topic, send.key, send.value, send.partition) == ("d", None, rec.value, None)
    headers = dict(send.headers)
    assert headers["reason"] == b"wrong_partition" and headers["source_offset"] == b"17"
    assert f"belongs to partition {users.owner('bob')} of 4".encode() in headers["detail"]
