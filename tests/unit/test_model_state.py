"""The model changelog record: restore continues the model, takes the current settings, reports changes."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from stream.model_state import (
    ModelStateError,
    apply_model_update,
    model_state_to_bytes,
    model_update_to_bytes,
    restore_model_state,
)
from stream.pipeline import Pipeline
from stream.settings import ClusteringSettings
from stream.worker import SourceRecord

TOPICS = ("football", "python", "baking")


class TopicEncoder:
    """``"<topic> <n>"`` -> near that topic's axis, with noise seeded by ``n`` (deterministic)."""

    dim = 8

    def encode(self, texts):
        rows = []
        for text in texts:
            topic, n = text.split()[:2]
            noise = np.random.default_rng(int(n)).normal(0.0, 0.2, self.dim)
            rows.append(np.eye(self.dim)[TOPICS.index(topic)] + noise)
        return np.array(rows, dtype=np.float32)


def _batch(step: int, n: int = 30) -> list[SourceRecord]:
    records = []
    for i in range(n):
        user, topic = f"u{(step * 31 + i) % 90}", TOPICS[i % 3]
        value = f'{{"user_id": "{user}", "ts": {1000 * step + i}, "text": "{topic} {step * 100 + i} words"}}'
        records.append(SourceRecord(value.encode(), user.encode(), None))
    return records


def _settings(**changes) -> ClusteringSettings:
    base = {"n_clusters": 3, "warmup_batches": 2, "refine_every": 2, "kmeans_half_life": 50.0, "seed": 42}
    return ClusteringSettings(**{**base, **changes})


def _trained(settings: ClusteringSettings, n_batches: int = 12) -> Pipeline:
    pipe = Pipeline(settings, TopicEncoder())
    for step in range(n_batches):
        pipe.process_batch(_batch(step), now_ms=step)
    return pipe


def test_restore_with_unchanged_settings_continues_exactly():
    pipe = _trained(_settings())
    data = model_state_to_bytes(pipe, writer="member-1", updates_offset=17)
    fresh = Pipeline(_settings(), TopicEncoder())
    restored = restore_model_state(fresh, data)
    writer, offset = restored  # still unpacks like the (writer, offset) pair it used to be
    assert (writer, offset) == ("member-1", 17) and restored.changes == []
    assert model_state_to_bytes(fresh, writer="member-1", updates_offset=17) == data
    assert (fresh.trainer.updates, fresh.trainer.snapshots_published) == (12, pipe.trainer.snapshots_published)
    for step in range(12, 18):  # replaying the logged steps continues the model exactly
        result = pipe.process_batch(_batch(step), now_ms=step)
        step_bytes = model_update_to_bytes(pipe.trainer.updates, result.stats, result.label_stats, step)
        assert apply_model_update(fresh, step_bytes) == pipe.trainer.updates
    assert pipe.model.n_refines > 0 and fresh.model.version == pipe.model.version
    np.testing.assert_array_equal(fresh.model.centroids, pipe.model.centroids)
    np.testing.assert_array_equal(fresh.model.counts, pipe.model.counts)
    assert fresh.labeler.to_bytes() == pipe.labeler.to_bytes()


def test_changed_half_life_takes_effect_after_restore():
    """An operator changes kmeans_half_life and restarts: the restored model decays with the new value."""
    data = model_state_to_bytes(_trained(_settings(kmeans_half_life=50.0)))
    fresh = Pipeline(_settings(kmeans_half_life=5.0), TopicEncoder())
    restored = restore_model_state(fresh, data)
    assert fresh.model.half_life == 5.0
    assert [(c.setting, c.old, c.new) for c in restored.changes] == [("kmeans_half_life", 50.0, 5.0)]
    assert str(restored.changes[0]) == "setting kmeans_half_life changed from 50.0 to 5.0, taking effect now"
    before = fresh.model.counts
    result = fresh.process_batch(_batch(12), now_ms=12)
    np.testing.assert_allclose(fresh.model.counts, 0.5 ** (1 / 5.0) * before + result.stats.weights, rtol=1e-12)


def test_every_live_setting_is_taken_and_reported():
    old = _settings()
    data = model_state_to_bytes(_trained(old))
    new = _settings(seed=7, kmeans_time_unit="points", refine_every=4, refine_restarts=2, refine_iterations=9,
                    refine_min_gain=0.01, refine_backoff=2, warmup_batches=30, label_half_life=9.0,
                    label_top_n=2, label_max_vocab=500)
    fresh = Pipeline(new, TopicEncoder())
    stored = Pipeline(old, TopicEncoder())
    restore_model_state(stored, data)
    changes = restore_model_state(fresh, data).changes
    reported = {c.setting: (c.old, c.new) for c in changes}
    expected_names = {"seed", "kmeans_time_unit", "refine_every", "refine_restarts", "refine_iterations",
                      "refine_min_gain", "refine_backoff", "warmup_batches", "label_half_life", "label_top_n",
                      "label_max_vocab"}
    assert set(reported) == expected_names
    for name in expected_names:
        assert reported[name] == (getattr(old, name), getattr(new, name)), name
    model = fresh.model
    assert (model.seed, model.time_unit, model.refine_every, model.refine_restarts, model.refine_iterations,
            model.refine_min_gain, model.refine_backoff, model.warmup) == (7, "points", 4, 2, 9, 0.01, 2, 30)
    assert (fresh.labeler.half_life, fresh.labeler.top_n, fresh.labeler.max_vocab) == (9.0, 2, 500)
    assert not model.is_warm  # 12 batches applied < the new warmup of 30
    # The learned state is the stored one: centroids, counts, version, labels.
    assert model.version == stored.model.version
    np.testing.assert_array_equal(model.centroids, stored.model.centroids)
    np.testing.assert_array_equal(model.counts, stored.model.counts)
    assert fresh.labeler.all_terms() == {c: t[:2] for c, t in stored.labeler.all_terms().items()}


def test_cluster_count_and_encoder_dimension_cannot_change():
    data = model_state_to_bytes(_trained(_settings()))
    with pytest.raises(ModelStateError, match=r"3 clusters.*asks? for 4.*new group id.*replay"):
        restore_model_state(Pipeline(_settings(n_clusters=4), TopicEncoder()), data)

    class WiderEncoder(TopicEncoder):
        dim = 16

    with pytest.raises(ModelStateError, match=r"dim(ension)? 8.*16.*new group id.*replay"):
        restore_model_state(Pipeline(_settings(), WiderEncoder()), data)
    with pytest.raises(ModelStateError):
        restore_model_state(Pipeline(_settings(), TopicEncoder()), b"not msgpack at all \xc1")


def test_record_written_before_the_refinement_flag_was_serialised_still_decodes():
    """A record whose model bytes lack the fields added since (as the previous code wrote them)."""
    pipe = _trained(_settings())
    data = model_state_to_bytes(pipe)
    record = msgspec.msgpack.decode(data)
    model_body = msgspec.msgpack.decode(record["model"][5:])
    assert "refine_restart_won" in model_body
    del model_body["refine_restart_won"]
    record["model"] = record["model"][:5] + msgspec.msgpack.encode(model_body)
    fresh = Pipeline(_settings(), TopicEncoder())
    assert restore_model_state(fresh, msgspec.msgpack.encode(record)).changes == []
    assert fresh.model.version == pipe.model.version
    np.testing.assert_array_equal(fresh.model.centroids, pipe.model.centroids)
    assert fresh.trainer.updates == pipe.trainer.updates
