"""ProfileStore: exact decay (out of order, duplicates in a batch), growth, slot reuse, codec."""

from __future__ import annotations

import numpy as np
import pytest

from stream.profiles import ProfileStore, profile_from_bytes, profile_to_bytes

DIM = 8
HALF_LIFE_S = 30.0


def _reference(events, half_life_s=HALF_LIFE_S):
    """The closed form: sum_i w_i 2^(-(t_ref - t_i)/h) v_i with t_ref = max t_i (float64)."""
    t_ref = max(t for t, _, _ in events)
    vec = np.zeros(DIM)
    mass = 0.0
    for t, v, w in events:
        f = w * 2.0 ** (-(t_ref - t) / (half_life_s * 1000.0))
        vec += f * np.asarray(v, dtype=np.float64)
        mass += f
    return vec, t_ref, mass


@pytest.fixture
def events():
    rng = np.random.default_rng(7)
    n = 60
    users = [f"u{i}" for i in rng.integers(0, 6, n)]
    users[5], users[31], users[59] = "solo-a", "solo-b", "solo-c"  # users with a single event in the batch
    ts = (1_700_000_000_000 + rng.integers(0, 120_000, n)).astype(np.int64)  # shuffled times: out of order
    vecs = rng.normal(size=(n, DIM)).astype(np.float32)
    weights = rng.uniform(0.5, 3.0, n)
    return users, ts, vecs, weights


def test_batch_equals_one_by_one_and_closed_form(events):
    users, ts, vecs, weights = events
    batch = ProfileStore(DIM, HALF_LIFE_S)
    batch.fold_many(users, ts, vecs, weights)
    single = ProfileStore(DIM, HALF_LIFE_S)
    for i, user in enumerate(users):
        single.fold(user, int(ts[i]), vecs[i], float(weights[i]))
    assert len(batch) == len(single) == len(set(users))
    for user in set(users):
        got_vec, got_ref, got_mass = batch.raw(user)
        one_vec, one_ref, one_mass = single.raw(user)
        mine = [(int(ts[i]), vecs[i], float(weights[i])) for i in range(len(users)) if users[i] == user]
        ref_vec, ref_t, ref_mass = _reference(mine)
        assert got_ref == one_ref == ref_t
        np.testing.assert_allclose(got_vec, one_vec, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got_vec, ref_vec, rtol=1e-5, atol=1e-5)
        assert got_mass == pytest.approx(one_mass, rel=1e-9)
        assert got_mass == pytest.approx(ref_mass, rel=1e-9)


def test_batches_in_several_calls_match_closed_form(events):
    users, ts, vecs, weights = events
    store = ProfileStore(DIM, HALF_LIFE_S)
    for chunk in np.array_split(np.arange(len(users)), 7):
        store.fold_many([users[i] for i in chunk], ts[chunk], vecs[chunk], weights[chunk])
    for user in set(users):
        mine = [(int(ts[i]), vecs[i], float(weights[i])) for i in range(len(users)) if users[i] == user]
        ref_vec, ref_t, ref_mass = _reference(mine)
        vec, t_ref, mass = store.raw(user)
        assert t_ref == ref_t
        np.testing.assert_allclose(vec, ref_vec, rtol=1e-5, atol=1e-5)
        assert mass == pytest.approx(ref_mass, rel=1e-9)


def test_late_event_does_not_move_reference_time():
    store = ProfileStore(2, half_life_s=1.0)
    store.fold("a", 10_000, np.array([1.0, 0.0]))
    store.fold("a", 9_000, np.array([0.0, 1.0]))  # one half-life late
    vec, t_ref, mass = store.raw("a")
    assert t_ref == 10_000
    np.testing.assert_allclose(vec, [1.0, 0.5])
    assert mass == pytest.approx(1.5)
    store.fold("a", 12_000, np.array([0.0, 0.0]), weight=0.0)  # two half-lives later: rescale only
    vec, t_ref, mass = store.raw("a")
    assert t_ref == 12_000
    np.testing.assert_allclose(vec, [0.25, 0.125])
    assert mass == pytest.approx(0.375)


def test_first_seen_order_of_slots_and_directions():
    store = ProfileStore(3, 60.0)
    slots = store.fold_many(
        ["b", "a", "b", "c"],
        np.array([1, 2, 3, 4], dtype=np.int64),
        np.array([[3, 4, 0], [0, 0, 0], [0, 0, 0], [0, 0, 2]], dtype=np.float32),
        np.ones(4),
    )
    assert [store.user_of(int(s)) for s in slots] == ["b", "a", "c"]
    d = store.directions(slots)
    np.testing.assert_allclose(d[0], [0.6, 0.8, 0.0], atol=1e-6)
    np.testing.assert_array_equal(d[1], [0.0, 0.0, 0.0])  # zero profile stays zero
    np.testing.assert_allclose(d[2], [0.0, 0.0, 1.0])
    assert store.slots_of(["c", "nobody", "b"]).tolist() == [int(slots[2]), -1, int(slots[0])]
    assert store.direction("nobody") is None


def test_growth_keeps_data_and_forget_reuses_slots():
    store = ProfileStore(4, 60.0, initial_capacity=2)
    rng = np.random.default_rng(1)
    vecs = rng.normal(size=(50, 4)).astype(np.float32)
    users = [f"u{i}" for i in range(50)]
    store.fold_many(users, np.arange(50, dtype=np.int64), vecs, np.ones(50))
    assert store.capacity == 64  # doubled 2 -> 64
    assert len(store) == 50
    for i in (0, 17, 49):
        np.testing.assert_allclose(store.raw(users[i])[0], vecs[i])
    slot = int(store.slots_of(["u17"])[0])
    assert store.forget("u17") is True
    assert store.forget("u17") is False
    assert "u17" not in store and len(store) == 49
    new_slot = store.fold("newcomer", 100, np.ones(4, dtype=np.float32))
    assert new_slot == slot
    np.testing.assert_allclose(store.raw("newcomer")[0], np.ones(4))  # nothing left over from u17
    assert store.capacity == 64
    assert sorted(store.user_ids()) == sorted(set(users) - {"u17"} | {"newcomer"})
    assert store.bytes_per_user() > 4 * 4


def test_put_raw_and_codec_round_trip():
    store = ProfileStore(5, 60.0)
    vec = np.array([0.5, -1.25, 3.0, 0.0, 1e-3], dtype=np.float32)
    store.put_raw("x", vec, 1_700_000_000_123, 2.75)
    data = profile_to_bytes(*store.raw("x"))
    got_vec, got_ref, got_mass = profile_from_bytes(data)
    np.testing.assert_array_equal(got_vec, vec)
    assert got_vec.dtype == np.float32
    assert (got_ref, got_mass) == (1_700_000_000_123, 2.75)
    other = ProfileStore(5, 60.0)
    other.put_raw("x", got_vec, got_ref, got_mass)
    other.fold("x", 1_700_000_000_123, vec)
    store.fold("x", 1_700_000_000_123, vec)
    np.testing.assert_array_equal(other.raw("x")[0], store.raw("x")[0])


@pytest.mark.parametrize(
    "mangle",
    [lambda b: b"XXXX" + b[4:], lambda b: b[:4] + b"\x09" + b[5:], lambda b: b[:-1], lambda b: b[:10]],
)
def test_codec_rejects_bad_input(mangle):
    data = profile_to_bytes(np.ones(3, dtype=np.float32), 1, 1.0)
    with pytest.raises(ValueError):
        profile_from_bytes(mangle(data))


def test_shape_errors():
    store = ProfileStore(3, 60.0)
    with pytest.raises(ValueError):
        store.fold_many(["a"], np.array([1]), np.ones((1, 4), dtype=np.float32), np.ones(1))
    with pytest.raises(ValueError):
        store.fold_many(["a", "b"], np.array([1, 2]), np.ones((2, 3), dtype=np.float32), np.ones(3))


def test_export_and_put_many_round_trip(events):
    users, ts, vecs, weights = events
    store = ProfileStore(DIM, HALF_LIFE_S, initial_capacity=4)
    store.fold_many(users, ts, vecs, weights)
    store.forget(users[0])
    ids, sums, refs, mass = store.export_arrays()
    assert sorted(ids) == sorted(set(users) - {users[0]})
    other = ProfileStore(DIM, HALF_LIFE_S)
    other.put_raw(ids[0], np.zeros(DIM), 0, 0.0)  # an existing user is overwritten
    other.put_many(ids, sums, refs, mass)
    assert len(other) == len(store)
    for user in ids:
        a, b = store.raw(user), other.raw(user)
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1:] == b[1:]
