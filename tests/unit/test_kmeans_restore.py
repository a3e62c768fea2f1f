"""A restored MiniBatchKMeans continues bit for bit like the one that kept running; old states decode."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest
from test_kmeans import make_blobs, unit_axes

from stream.kmeans import BatchStatistics, MiniBatchKMeans, codec

DIM = 8


def _moving_blobs(seed: int, sizes: list[int], n_blobs: int = 4) -> list[np.ndarray]:
    """Blobs that rotate a little every batch, so fresh k-means++ restarts often win a refinement."""
    rng = np.random.default_rng(seed)
    axes = np.eye(DIM)
    batches = []
    for step, n in enumerate(sizes):
        phase = step / 3 + np.arange(n_blobs)
        centres = np.cos(phase)[:, None] * axes[:n_blobs] + np.sin(phase)[:, None] * axes[n_blobs - 1 : 2 * n_blobs - 1]
        X = centres[rng.integers(0, n_blobs, n)] + rng.normal(0.0, 0.1, (n, DIM))
        batches.append(X.astype(np.float32))
    return batches


def _run(model: MiniBatchKMeans, batches: list[np.ndarray], restore_at: int | None = None) -> MiniBatchKMeans:
    for i, X in enumerate(batches):
        if i == restore_at:
            model = MiniBatchKMeans.from_bytes(model.to_bytes())
        model.learn_many(X)
    return model


def test_restored_model_schedules_refinements_like_the_running_one():
    """Big batches, then tiny ones (the reservoir shrinks below what a refinement needs, so the due
    refinements are skipped), then big ones again. The schedule after a skipped refinement depends
    on whether the last refinement that ran was won by a k-means++ restart: a restored model must
    know that too, or it refines at other batches than the model that kept running."""
    sizes = [200] * 10 + [6] * 8 + [200] * 12
    batches = _moving_blobs(6, sizes)
    params = {"n_clusters": 3, "seed": 6, "half_life": 1.0, "refine_every": 1, "refine_backoff": 8}
    half = len(batches) // 2
    at_half = _run(MiniBatchKMeans(**params), batches[:half])
    # The case in point: the last refinement that ran was won by a restart, and now the reservoir
    # is too small to refine (16 points per cluster), so the due refinements are skipped.
    assert at_half._schedule.restart_won and len(at_half._reservoir) < 16 * 3
    kept = _run(MiniBatchKMeans(**params), batches)
    restored = _run(MiniBatchKMeans(**params), batches, restore_at=half)
    assert kept.n_refines >= 5 and kept.n_refines_adopted >= 1
    assert (restored.n_refines, restored.version) == (kept.n_refines, kept.version)
    assert restored.to_bytes() == kept.to_bytes()


@pytest.mark.parametrize(
    "params",
    [
        {"n_clusters": 4, "seed": 1, "half_life": 4.0, "refine_every": 2, "refine_backoff": 3},
        {"n_clusters": 3, "seed": 2, "half_life": 400.0, "time_unit": "points", "spherical": False,
         "refine_every": 1, "reservoir_size": 256, "seeds_per_batch": 16},
    ],
)
def test_restore_at_any_batch_continues_bit_for_bit(params):
    """Restore-then-continue equals continue-without-restore, wherever the restore happens
    (before initialisation, during warm-up, between refinements, after reseeding)."""
    rng = np.random.default_rng(3)
    sizes = [int(n) for n in rng.choice([5, 30, 120], size=36)]
    batches = _moving_blobs(7, sizes)
    kept = _run(MiniBatchKMeans(**params), batches)
    assert kept.n_refines >= 3
    for restore_at in range(0, len(batches), 3):
        restored = _run(MiniBatchKMeans(**params), batches, restore_at=restore_at)
        assert restored.to_bytes() == kept.to_bytes(), f"restored at batch {restore_at}"


def test_replaying_statistics_is_bit_exact_across_a_state_round_trip():
    """What the service relies on: logged statistics replayed on a restored model give the same model."""
    rng = np.random.default_rng(11)
    axes = unit_axes(4)
    a = MiniBatchKMeans(n_clusters=4, seed=7, refine_every=3)
    producer = MiniBatchKMeans(n_clusters=4, seed=7, refine_every=0)  # summarises like a worker would
    stats = []
    for step in range(30):
        X, _ = make_blobs(rng, axes[: 2 + step % 3], 25)
        s = a.summarise(X) if a.is_initialised else producer.summarise(X)
        stats.append(BatchStatistics.from_bytes(s.to_bytes()))
    b = MiniBatchKMeans(n_clusters=4, seed=7, refine_every=3)
    results_a = []
    for i, s in enumerate(stats):
        results_a.append(a.apply(s))
        if i == 13:
            a = MiniBatchKMeans.from_bytes(a.to_bytes())  # restart mid-way
    results_b = [b.apply(s) for s in stats]
    assert sum(r.refined for r in results_b) >= 2
    assert [r.refined for r in results_a] == [r.refined for r in results_b]
    assert [r.reseeded for r in results_a] == [r.reseeded for r in results_b]
    np.testing.assert_array_equal(a._centroids, b._centroids)
    np.testing.assert_array_equal(a._counts, b._counts)
    assert a.to_bytes() == b.to_bytes()



def test_statistics_without_point_ids_decode_as_anonymous():
    """Statistics written before point ids existed (no trailing fields) still decode."""
    rng = np.random.default_rng(7)
    km = MiniBatchKMeans(n_clusters=2, seed=1, refine_every=0)
    X, _ = make_blobs(rng, unit_axes(2), 10)
    stats = km.summarise(X)
    wire = msgspec.msgpack.decode(stats.to_bytes()[5:])
    old = codec.STATS_MAGIC + bytes([codec.FORMAT_VERSION]) + msgspec.msgpack.encode(wire[:10])
    back = BatchStatistics.from_bytes(old)
    assert back.seed_ids.shape == (back.seeds.shape[0],) and not back.seed_ids.any()
    assert back.refresh.shape == (0, X.shape[1]) and back.refresh_ids.shape == (0,)


def _without(data: bytes, *fields: str) -> bytes:
    """The model record as the code before ``fields`` existed wrote it (they were appended at the end)."""
    body = msgspec.msgpack.decode(data[5:])
    assert list(body)[-len(fields):] == list(fields)
    return data[:5] + msgspec.msgpack.encode({k: v for k, v in body.items() if k not in fields})


def test_model_records_written_before_the_schedule_flag_still_decode():
    params = {"n_clusters": 3, "seed": 6, "half_life": 1.0, "refine_every": 1}
    model = _run(MiniBatchKMeans(**params), _moving_blobs(6, [200] * 6))
    data = model.to_bytes()
    old = _without(data, "refine_restart_won")
    back = MiniBatchKMeans.from_bytes(old)
    assert back._schedule.restart_won is False  # what the old code assumed after a restore
    model._schedule.restart_won = False
    assert back.to_bytes() == model.to_bytes()
    older = _without(old, "refine_wait", "refine_interval", "n_refines", "n_refines_adopted", "reservoir_ids")
    back = MiniBatchKMeans.from_bytes(older)
    assert (back.n_refines, back._schedule.interval) == (0, 0) and not back._reservoir.ids.any()
    np.testing.assert_array_equal(back.centroids, model.centroids)


# ---------------------------------------------------------------------------- load_state


def _trained(**params) -> MiniBatchKMeans:
    return _run(MiniBatchKMeans(**params), _moving_blobs(4, [60] * 12))


def test_load_state_with_the_same_parameters_is_a_copy():
    stored = _trained(n_clusters=3, seed=5)
    model = MiniBatchKMeans(n_clusters=3, seed=5)
    assert model.load_state(MiniBatchKMeans.from_bytes(stored.to_bytes())) == {}
    assert model.to_bytes() == stored.to_bytes()
    batch = _moving_blobs(9, [50])[0]
    model.learn_many(batch)
    assert model.to_bytes() != stored.to_bytes(), "a copy: the stored model is not touched"
    stored.learn_many(batch)
    assert model.to_bytes() == stored.to_bytes()


def test_load_state_keeps_the_new_parameters_and_reports_them():
    stored = _trained(n_clusters=3, seed=5, half_life=50.0, refine_every=5, refine_backoff=8)
    stored._schedule.interval = 40  # backed off
    model = MiniBatchKMeans(n_clusters=3, seed=9, half_life=2.0, refine_every=2, refine_backoff=3, warmup=99)
    changed = model.load_state(stored)
    assert changed == {"half_life": (50.0, 2.0), "seed": (5, 9), "refine_every": (5, 2),
                       "refine_backoff": (8, 3), "warmup": (0, 99)}
    assert (model.half_life, model.seed, model.refine_every, model.warmup) == (2.0, 9, 2, 99)
    assert model._schedule.interval == 6, "an interval beyond the new longest one (backoff * every) is cut"
    assert model.version == stored.version and not model.is_warm
    np.testing.assert_array_equal(model.centroids, stored.centroids)
    # A changed seed restarts the generators from it.
    assert model._rng.bit_generator.state == np.random.default_rng(9).bit_generator.state
    before = model.counts
    stats = model.summarise(_moving_blobs(9, [50])[0])
    model.apply(stats)
    np.testing.assert_allclose(model.counts, 0.5**0.5 * before + stats.weights, rtol=1e-12)


@pytest.mark.parametrize("other", [{"n_clusters": 4}, {"spherical": False}])
def test_load_state_refuses_a_model_of_another_shape(other):
    stored = _trained(n_clusters=3, seed=5)
    model = MiniBatchKMeans(**{"n_clusters": 3, **other})
    with pytest.raises(ValueError, match=next(iter(other))):
        model.load_state(stored)
    assert not model.is_initialised
