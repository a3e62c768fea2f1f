"""One model for the group, without a broker: the trainer's log semantics and the workers' following.

The broker-side behaviour (election, fencing, failover, rebalances) is tested on the real broker
in tests/integration/test_faults.py; here the pure parts: a restored trainer that replays the
same groups reaches the same model bit for bit, bad records are skipped, workers assess with
the version they follow.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from stream.group_trainer import GroupTrainer
from stream.kmeans import MiniBatchKMeans
from stream.kmeans.statistics import point_ids
from stream.pipeline import Pipeline, SourceRecord
from stream.settings import ClusteringSettings
from stream.shared_model import (
    SharedModelError,
    StatisticsRecord,
    decode_model_version,
    encode_model_version,
    encode_statistics,
)

DIM = 8
K = 3


def _log(n: int, seed: int = 0, users: int = 300) -> list[bytes]:
    """Statistics records of ``n`` worker batches around three directions, summarised as workers do
    (against a model that follows the trainer's versions as they appear)."""
    rng = np.random.default_rng(seed)
    centres = np.eye(K, DIM)
    worker = MiniBatchKMeans(n_clusters=K, seed=seed + 1)
    trainer = GroupTrainer(ClusteringSettings(n_clusters=K, warmup_batches=0), dim=DIM)
    out = []
    for i in range(n):
        ids = rng.choice(users, 30, replace=False)
        pts = centres[ids % K] + 0.3 * rng.normal(size=(30, DIM))
        pts = (pts / np.linalg.norm(pts, axis=1, keepdims=True)).astype(np.float32)
        stats = worker.summarise(pts, point_ids=point_ids([f"u{u}" for u in ids]))
        value = encode_statistics(StatisticsRecord(worker=f"w{i % 3}", stats=stats.to_bytes(), now_ms=i,
                                                   produced_ms=i))
        out.append(value)
        trainer.apply(i, value)
        version = trainer.version(emit_ms=i)
        if version is not None:
            worker.follow(version.centroid_matrix(), version.count_vector(), version.version, version.n_applied,
                          version.reservoir_id_vector())
    return out


def _settings(**kw) -> ClusteringSettings:
    return ClusteringSettings(n_clusters=K, warmup_batches=0, refine_every=2, **kw)


def _run(log: list[bytes], groups: list[int], trainer: GroupTrainer | None = None, start: int = 0) -> GroupTrainer:
    """Apply ``log`` (offset = index) in groups ending at ``groups``."""
    trainer = trainer or GroupTrainer(_settings(), dim=DIM)
    begin = start
    for end in groups:
        trainer.apply_group([(o, log[o]) for o in range(begin, end)], end)
        begin = end
    return trainer


def test_a_restored_trainer_replaying_the_same_groups_reaches_the_same_model_bit_for_bit():
    log = _log(40)
    groups = [1, 2, 5, 6, 12, 13, 20, 27, 28, 33, 40]
    straight = _run(log, groups)
    # A trainer that wrote its state after the group ending at 12, then died; the next one restores it
    # and replays the groups the committed offset's metadata names.
    first = _run(log, groups[:5])
    state = first.state_record()
    _run(log, groups[5:8], trainer=first)
    metadata = first.offset_metadata()
    restored = GroupTrainer.restore(_settings(), state, dim=DIM)
    ends = GroupTrainer.groups_from_metadata(metadata, restored.statistics_offset)
    assert ends == groups[5:8]
    _run(log, ends, trainer=restored, start=12)
    _run(log, groups[8:], trainer=restored, start=ends[-1])
    assert restored.model.version == straight.model.version
    np.testing.assert_array_equal(restored.model.centroids, straight.model.centroids)
    np.testing.assert_array_equal(restored.model.counts, straight.model.counts)
    assert (restored.applied_records, restored.applied_points) == (straight.applied_records, straight.applied_points)
    assert restored.labeler.all_terms() == straight.labeler.all_terms()
    assert straight.model.n_refines > 0, "the comparison covers refinements"


def test_metadata_from_another_state_is_not_used():
    trainer = _run(_log(6), [2, 4, 6])
    metadata = trainer.offset_metadata()
    assert GroupTrainer.groups_from_metadata(metadata, 0) == [2, 4, 6]
    assert GroupTrainer.groups_from_metadata(metadata, 4) is None
    assert GroupTrainer.groups_from_metadata("", 0) is None and GroupTrainer.groups_from_metadata("x:1", 0) is None


def test_a_group_is_the_update_of_its_summed_batches_and_forgets_as_many_batches():
    log = _log(12)
    one_by_one = _run(log, list(range(1, 9)))
    grouped = _run(log, list(range(1, 9)))
    # the same first 8 records; then 4 more as one group vs one at a time
    _run(log, [12], trainer=grouped, start=8)
    _run(log, [9, 10, 11, 12], trainer=one_by_one, start=8)
    assert grouped.model.n_applied == one_by_one.model.n_applied == 12
    assert grouped.applied_points == one_by_one.applied_points
    # the same statistics, folded with the same total forgetting: close, not equal (within a group
    # no record decays another)
    sims = np.einsum("ij,ij->i", grouped.model.centroids, one_by_one.model.centroids)
    assert sims.min() > 0.99


def test_bad_records_are_skipped_and_named():
    log = _log(4)
    trainer = GroupTrainer(_settings(), dim=DIM)
    other = GroupTrainer(ClusteringSettings(n_clusters=K + 1, warmup_batches=0), dim=DIM)
    wrong_k = encode_statistics(StatisticsRecord(
        stats=other.model.summarise(np.eye(4, DIM, dtype=np.float32)).to_bytes()))
    records = [(0, log[0]), (1, b"not msgpack"), (2, wrong_k), (3, log[1])]
    out, bad = trainer.apply_group(records, 4)
    assert [offset for offset, _ in bad] == [1, 2]
    assert isinstance(bad[0][1], SharedModelError) and "clusters" in str(bad[1][1])
    assert trainer.applied_records == 2 and trainer.statistics_offset == 4
    with pytest.raises(SharedModelError):
        trainer.apply(4, b"\x00")
    assert trainer.statistics_offset == 5, "a record that cannot be applied is skipped, not retried"
    assert trainer.apply(3, log[2]) is None, "records already in the model are skipped"


class AxisEncoder:
    dim = 2

    def encode(self, texts):
        return np.array([[1.0, 0.05 * (len(t) % 3)] if "ball" in t else [0.05 * (len(t) % 3), 1.0] for t in texts],
                        np.float32)


def _records(users: range, ts: int) -> list[SourceRecord]:
    return [SourceRecord(json.dumps({"user_id": f"u{i}", "ts": ts + i,
                                     "text": ("ball game " if i % 2 else "stock price ") + "x" * i}).encode(),
                         None, None) for i in users]


def test_a_worker_assesses_with_the_version_it_follows_and_never_trains():
    settings = ClusteringSettings(n_clusters=2, warmup_batches=0)
    worker = Pipeline(settings, AxisEncoder())
    trainer = GroupTrainer(settings, dim=2)
    out = worker.process_batch(_records(range(12), 0), now_ms=1, train=False)
    assert out.changes == [] and not worker.model.is_initialised, "no version yet: users wait"
    trainer.apply(0, encode_statistics(StatisticsRecord(stats=out.stats.to_bytes(), now_ms=1)))
    version = decode_model_version(encode_model_version(trainer.version(emit_ms=2)))
    assert worker.adopt(version) and not worker.adopt(version), "a version is adopted once"
    out = worker.process_batch(_records(range(12, 14), 10), now_ms=3, train=False)
    assert {c.model_version for c in out.changes} == {version.version}
    assert len(out.changes) == 14, "users held before the first version are assessed once it arrives"
    np.testing.assert_array_equal(worker.model.centroids, trainer.model.centroids)
    assert worker.model.version == trainer.model.version
    assert not any(worker.labeler.all_terms().values()), "a worker's labeler only summarises"
    ball = [c.cluster for c in out.changes if int(c.user_id[1:]) % 2]
    stock = [c.cluster for c in out.changes if not int(c.user_id[1:]) % 2]
    assert len(set(ball)) == len(set(stock)) == 1 and ball[0] != stock[0]


def test_a_grown_batch_counts_as_the_base_batches_it_holds():
    import msgspec

    from stream.shared_model import decode_statistics

    log = _log(6)
    plain = _run(log, [1, 2, 3, 4, 5])
    grown = _run(log, [1, 2, 3, 4])
    rec = decode_statistics(log[4])
    as_three = encode_statistics(msgspec.structs.replace(rec, batches=3))
    grown.apply_group([(4, as_three)], 5)
    assert grown.model.n_applied == plain.model.n_applied + 2, "warm-up counts base batches"
    decay = 0.5 ** (1 / grown.model.half_life)
    # the same statistics, with two more batches of forgetting before them
    np.testing.assert_allclose(grown.model.counts.sum(),
                               plain.model.counts.sum() - (1 - decay**2) * decay * _run(log, [1, 2, 3, 4]).model.counts.sum(),
                               rtol=1e-9)


def test_a_record_given_twice_in_a_group_is_applied_once():
    log = _log(3)
    once = _run(log, [3])
    twice = GroupTrainer(_settings(), dim=DIM)
    twice.apply_group([(0, log[0]), (1, log[1]), (1, log[1]), (2, log[2])], 3)
    assert (twice.applied_records, twice.applied_points) == (once.applied_records, once.applied_points)
    np.testing.assert_array_equal(twice.model.centroids, once.model.centroids)
