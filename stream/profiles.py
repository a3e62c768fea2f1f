"""Per-user, time-decayed interest profiles.

A user's profile is the weighted, exponentially decayed sum of the embeddings of
that user's events::

    p(t_ref) = sum_i  w_i * 2 ** (-(t_ref - t_i) / h) * v_i

where ``h`` is the half-life and ``t_ref`` (the profile's reference time) is the
latest event time seen for the user. An event at ``t >= t_ref`` rescales the sum
by ``2 ** (-(t - t_ref) / h)``, adds ``w * v`` and moves ``t_ref`` to ``t``; a late
(out-of-order) event at ``t < t_ref`` adds ``w * 2 ** (-(t_ref - t) / h) * v`` and
leaves ``t_ref`` alone. Either way the result is exactly the formula above, so the
order in which events arrive does not matter.

Profiles live in one contiguous float32 matrix (one row, a *slot*, per user), with
the reference time and the decayed total weight (*mass*) in side arrays. The
matrix doubles when full, and the slots of forgotten users are reused.

Example:

>>> import numpy as np
>>> store = ProfileStore(dim=2, half_life_s=60.0)
>>> slots = store.fold_many(
...     ["ann", "bob", "ann"],
...     np.array([0, 0, 60_000], dtype=np.int64),          # ms; ann's 2nd event is one half-life later
...     np.array([[1, 0], [0, 1], [0, 1]], dtype=np.float32),
...     np.ones(3),
... )
>>> slots.tolist()
[0, 1]
>>> vector, ref_ms, mass = store.raw("ann")
>>> vector.tolist(), ref_ms, mass
([0.5, 1.0], 60000, 1.5)
>>> [round(float(x), 3) for x in store.direction("ann")]
[0.447, 0.894]
>>> profile_from_bytes(profile_to_bytes(vector, ref_ms, mass))[1:]
(60000, 1.5)

A store can carry a companion :class:`~stream.interests.InterestMixes` (``interests=``): it is
part of the user's state, so :meth:`ProfileStore.forget` forgets it too and
:meth:`ProfileStore.record_bytes` writes both into one changelog record (codec version 2;
version 1 records, written before interest mixes existed, still decode, with no mix):

>>> record = profile_record_from_bytes(profile_to_bytes(vector, ref_ms, mass, interests=b"ISIM..."))
>>> record.ref_ms, record.interests
(60000, b'ISIM...')
>>> profile_record_from_bytes(profile_to_bytes(vector, ref_ms, mass)).interests is None
True
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterator, Sequence
from itertools import repeat
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from stream.interests import InterestMixes

__all__ = ["ProfileRecord", "ProfileStore", "profile_from_bytes", "profile_record_from_bytes", "profile_to_bytes"]

_MAGIC = b"ISPF"
_CODEC_VERSION = 2  # 2: an optional interest-mix trailer; version 1 records still decode
_DTYPE_FLOAT32 = 1
# magic, version, dtype code, dim, ref_ms, mass
_HEADER = struct.Struct("<4sBBIqd")
_TRAILER = struct.Struct("<I")


class ProfileRecord(NamedTuple):
    """One decoded profiles-changelog record; ``interests`` is the mix blob (``None`` if absent)."""

    vector_sum: np.ndarray
    ref_ms: int
    mass: float
    interests: bytes | None


def profile_to_bytes(vector_sum: np.ndarray, ref_ms: int, mass: float, interests: bytes | None = None) -> bytes:
    """Encode one profile (and the user's interest mix, if any) as a small versioned binary record (no pickle).

    Layout (little endian): ``b"ISPF"``, codec version (u8), dtype code (u8, 1 =
    float32), dim (u32), ``ref_ms`` (i64), ``mass`` (f64), then ``dim`` float32s. Without
    ``interests`` this is exactly codec version 1; with it the version is 2 and a trailer
    follows: its length (u32) and the bytes of
    :meth:`stream.interests.InterestMixes.to_bytes`.
    """
    vec = np.ascontiguousarray(vector_sum, dtype="<f4").reshape(-1)
    version = 1 if interests is None else _CODEC_VERSION
    out = _HEADER.pack(_MAGIC, version, _DTYPE_FLOAT32, vec.shape[0], int(ref_ms), float(mass)) + vec.tobytes()
    if interests is not None:
        out += _TRAILER.pack(len(interests)) + interests
    return out


def profile_record_from_bytes(data: bytes) -> ProfileRecord:
    """Decode :func:`profile_to_bytes` output (codec version 1 or 2) into a :class:`ProfileRecord`.

    Raises ``ValueError`` on a wrong magic, an unknown version or dtype, or a bad length.
    """
    if len(data) < _HEADER.size:
        raise ValueError(f"profile record too short: {len(data)} bytes")
    magic, version, dtype_code, dim, ref_ms, mass = _HEADER.unpack_from(data)
    if magic != _MAGIC:
        raise ValueError(f"not a profile record (magic {magic!r})")
    if version not in (1, _CODEC_VERSION):
        raise ValueError(f"unsupported profile codec version {version}")
    if dtype_code != _DTYPE_FLOAT32:
        raise ValueError(f"unsupported profile dtype code {dtype_code}")
    expected = _HEADER.size + 4 * dim
    interests = None
    if version >= 2:
        if len(data) < expected + _TRAILER.size:
            raise ValueError(f"profile record has {len(data)} bytes, too short for dim={dim} and its trailer")
        (size,) = _TRAILER.unpack_from(data, expected)
        interests = bytes(data[expected + _TRAILER.size : expected + _TRAILER.size + size])
        expected += _TRAILER.size + size
    if len(data) != expected:
        raise ValueError(f"profile record has {len(data)} bytes, expected {expected} for dim={dim}")
    vec = np.frombuffer(data, dtype="<f4", count=dim, offset=_HEADER.size).astype(np.float32)
    return ProfileRecord(vec, int(ref_ms), float(mass), interests)


def profile_from_bytes(data: bytes) -> tuple[np.ndarray, int, float]:
    """Decode :func:`profile_to_bytes` output into ``(vector_sum, ref_ms, mass)`` (any interest mix is ignored)."""
    record = profile_record_from_bytes(data)
    return record.vector_sum, record.ref_ms, record.mass


class ProfileStore:
    """Time-decayed, weighted sums of event embeddings, one row per user.

    Parameters
    ----------
    dim
        Embedding dimension.
    half_life_s
        Half-life of an event's weight, in seconds (event times are epoch milliseconds).
    initial_capacity
        Number of rows allocated up front; the matrix doubles whenever it is full.
    interests
        The users' interest mixes, kept with the profiles: forgotten with them and written
        with them into the changelog record (:meth:`record_bytes`). ``None``: no mixes.
    """

    def __init__(
        self, dim: int, half_life_s: float, initial_capacity: int = 1024, interests: InterestMixes | None = None
    ) -> None:
        if dim <= 0:
            raise ValueError("dim must be positive")
        if not half_life_s > 0:
            raise ValueError("half_life_s must be positive")
        self.dim = int(dim)
        self.half_life_s = float(half_life_s)
        self._half_life_ms = self.half_life_s * 1000.0
        cap = max(int(initial_capacity), 1)
        self._vec = np.zeros((cap, self.dim), dtype=np.float32)
        self._ref = np.zeros(cap, dtype=np.int64)
        self._mass = np.zeros(cap, dtype=np.float64)
        self._index: dict[str, int] = {}
        self._slot_user: list[str | None] = [None] * cap
        self._free: list[int] = []
        self._next = 0  # first never-used slot
        self.interests = interests

    # ------------------------------------------------------------------ size & lookup
    @property
    def capacity(self) -> int:
        """Rows currently allocated."""
        return self._vec.shape[0]

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, user_id: object) -> bool:
        return user_id in self._index

    def user_ids(self) -> Iterator[str]:
        """Iterate over the known user ids (a snapshot: forgetting while iterating is safe)."""
        return iter(list(self._index))

    def slots_of(self, user_ids: Sequence[str]) -> np.ndarray:
        """Slot of each user id, ``-1`` for unknown users."""
        return np.fromiter(map(self._index.get, user_ids, repeat(-1)), dtype=np.int64, count=len(user_ids))

    def user_of(self, slot: int) -> str | None:
        """The user id held in ``slot`` (``None`` for a free slot)."""
        return self._slot_user[slot] if 0 <= slot < self._next else None

    def ref_ms(self, user_id: str) -> int:
        """The profile's reference time (its latest event time), epoch ms. ``KeyError`` if unknown."""
        return int(self._ref[self._index[user_id]])

    # ------------------------------------------------------------------ slot management
    def _grow(self, needed: int) -> None:
        cap = self.capacity
        if needed <= cap:
            return
        new_cap = cap
        while new_cap < needed:
            new_cap *= 2
        vec = np.zeros((new_cap, self.dim), dtype=np.float32)
        vec[:cap] = self._vec
        ref = np.zeros(new_cap, dtype=np.int64)
        ref[:cap] = self._ref
        mass = np.zeros(new_cap, dtype=np.float64)
        mass[:cap] = self._mass
        self._vec, self._ref, self._mass = vec, ref, mass
        self._slot_user.extend([None] * (new_cap - cap))

    def _allocate(self, user_ids: Sequence[str]) -> list[int]:
        """Give each (new, distinct) user a zeroed slot."""
        n_new = len(user_ids) - min(len(self._free), len(user_ids))
        self._grow(self._next + n_new)
        slots = []
        for user in user_ids:
            if self._free:
                slot = self._free.pop()
            else:
                slot = self._next
                self._next += 1
            self._index[user] = slot
            self._slot_user[slot] = user
            slots.append(slot)
        return slots

    def forget(self, user_id: str) -> bool:
        """Delete a user's profile; its slot is reused later. Returns whether the user existed."""
        if self.interests is not None:
            self.interests.forget(user_id)
        slot = self._index.pop(user_id, None)
        if slot is None:
            return False
        self._vec[slot] = 0.0
        self._ref[slot] = 0
        self._mass[slot] = 0.0
        self._slot_user[slot] = None
        self._free.append(slot)
        return True

    # ------------------------------------------------------------------ updates
    def fold_many(
        self,
        user_ids: Sequence[str],
        ts_ms: np.ndarray,
        vectors: np.ndarray,
        weights: np.ndarray | None = None,
    ) -> np.ndarray:
        """Fold a batch of events into the profiles; returns the touched slots in first-seen order.

        Several events of one user in the batch, in any time order, give exactly the
        result of folding them one by one: every event's decay factor is taken
        relative to the user's final reference time ``max(t_ref, max ts)``.
        """
        n = len(user_ids)
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        ts = np.asarray(ts_ms, dtype=np.int64).reshape(-1)
        vecs = np.asarray(vectors, dtype=np.float32)
        if vecs.ndim != 2 or vecs.shape != (n, self.dim) or ts.shape[0] != n:
            raise ValueError(
                f"expected {n} timestamps and vectors of shape ({n}, {self.dim}), got {vecs.shape}"
            )
        w = (
            np.ones(n, dtype=np.float64)
            if weights is None
            else np.asarray(weights, dtype=np.float64).reshape(-1)
        )
        if w.shape[0] != n:
            raise ValueError(f"expected {n} weights, got {w.shape[0]}")

        slots = np.fromiter(map(self._index.get, user_ids, repeat(-1)), dtype=np.int64, count=n)
        is_new = slots < 0
        new_first: np.ndarray | None = None
        if is_new.any():
            new_pos = np.flatnonzero(is_new)
            new_users: dict[str, None] = dict.fromkeys(user_ids[i] for i in new_pos)
            new_slots = self._allocate(list(new_users))
            lookup = dict(zip(new_users, new_slots, strict=True))
            slots[new_pos] = [lookup[user_ids[i]] for i in new_pos]
            new_first = np.asarray(new_slots, dtype=np.int64)

        uniq, first, inv = np.unique(slots, return_index=True, return_inverse=True)
        # Final reference time per touched slot: max of the old one (new users: none) and the events'.
        t_max = np.full(uniq.shape[0], np.iinfo(np.int64).min, dtype=np.int64)
        np.maximum.at(t_max, inv, ts)
        old_ref = self._ref[uniq]
        if new_first is not None:
            fresh = np.isin(uniq, new_first, assume_unique=True)
            old_ref = np.where(fresh, t_max, old_ref)
        t_ref = np.maximum(old_ref, t_max)

        h = self._half_life_ms
        scale_old = np.exp2(-(t_ref - old_ref).astype(np.float64) / h)
        factor = w * np.exp2(-(t_ref[inv] - ts).astype(np.float64) / h)

        self._mass[uniq] = self._mass[uniq] * scale_old + np.bincount(
            inv, weights=factor, minlength=uniq.shape[0]
        )
        self._ref[uniq] = t_ref
        weighted = vecs * factor.astype(np.float32)[:, None]
        acc = np.empty((uniq.shape[0], self.dim), dtype=np.float32)
        if uniq.shape[0] == n:  # no user twice in the batch: one row per slot
            acc[inv] = weighted
        else:  # users with one event: copy; users with several: segment sums over those rows only
            per_slot = np.bincount(inv, minlength=uniq.shape[0])
            single = per_slot[inv] == 1
            acc[inv[single]] = weighted[single]
            multi = np.flatnonzero(~single)
            order = multi[np.argsort(inv[multi], kind="stable")]
            grouped = inv[order]
            starts = np.flatnonzero(np.r_[True, grouped[1:] != grouped[:-1]])
            acc[grouped[starts]] = np.add.reduceat(weighted[order], starts, axis=0)
        rows = self._vec[uniq]
        rows *= scale_old.astype(np.float32)[:, None]
        rows += acc
        self._vec[uniq] = rows
        return uniq[np.argsort(first, kind="stable")]

    def fold(self, user_id: str, ts_ms: int, vector: np.ndarray, weight: float = 1.0) -> int:
        """Fold one event (convenience wrapper over :meth:`fold_many`); returns the slot."""
        slots = self.fold_many(
            [user_id],
            np.array([ts_ms], dtype=np.int64),
            np.asarray(vector, dtype=np.float32).reshape(1, -1),
            np.array([weight], dtype=np.float64),
        )
        return int(slots[0])

    # ------------------------------------------------------------------ reads
    def directions(self, slots: np.ndarray | Sequence[int]) -> np.ndarray:
        """L2-normalised profile rows for ``slots`` (a zero profile stays zero), shape ``(m, dim)``."""
        rows = self._vec[np.asarray(slots, dtype=np.int64)]
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        np.divide(rows, norms, out=rows, where=norms > 0)
        return rows

    def direction(self, user_id: str) -> np.ndarray | None:
        """The user's normalised profile, or ``None`` for an unknown user."""
        slot = self._index.get(user_id)
        if slot is None:
            return None
        return self.directions([slot])[0]

    def masses(self, slots: Sequence[int] | np.ndarray) -> np.ndarray:
        """The decayed event mass (sum of event weights) of each slot, as of its own reference time (a copy)."""
        return self._mass[np.asarray(slots, dtype=np.int64)].copy()

    def raw(self, user_id: str) -> tuple[np.ndarray, int, float]:
        """``(vector_sum, ref_ms, mass)`` of a user (copies). ``KeyError`` if unknown."""
        slot = self._index[user_id]
        return self._vec[slot].copy(), int(self._ref[slot]), float(self._mass[slot])

    def mix_bytes(self, user_id: str) -> bytes | None:
        """The user's interest mix as bytes for the changelog record (``None`` without one)."""
        return self.interests.to_bytes(user_id) if self.interests is not None else None

    def record_bytes(self, user_id: str) -> bytes:
        """The user's changelog record: the profile and, with a companion store, the interest mix."""
        return profile_to_bytes(*self.raw(user_id), interests=self.mix_bytes(user_id))

    def put_record(self, user_id: str, record: ProfileRecord) -> int:
        """Restore a user from a decoded changelog record (profile, and the mix when both have one)."""
        slot = self.put_raw(user_id, record.vector_sum, record.ref_ms, record.mass)
        if self.interests is not None:
            self.interests.forget(user_id)
            if record.interests is not None:
                self.interests.put_bytes(user_id, record.interests)
        return slot

    def put_raw(self, user_id: str, vector_sum: np.ndarray, ref_ms: int, mass: float) -> int:
        """Set a user's profile as is (the restore path from a changelog); returns the slot."""
        vec = np.asarray(vector_sum, dtype=np.float32).reshape(-1)
        if vec.shape[0] != self.dim:
            raise ValueError(f"vector has dim {vec.shape[0]}, store has {self.dim}")
        slot = self._index.get(user_id)
        if slot is None:
            slot = self._allocate([user_id])[0]
        self._vec[slot] = vec
        self._ref[slot] = int(ref_ms)
        self._mass[slot] = float(mass)
        return slot

    def export_arrays(self) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
        """Every profile at once: ``(user_ids, vector_sums (n, dim) float32, ref_ms (n,), mass (n,))``."""
        users = list(self._index)
        slots = np.fromiter(self._index.values(), dtype=np.int64, count=len(users))
        return users, self._vec[slots].copy(), self._ref[slots].copy(), self._mass[slots].copy()

    def put_many(
        self, user_ids: Sequence[str], vector_sums: np.ndarray, ref_ms: np.ndarray, mass: np.ndarray
    ) -> np.ndarray:
        """Bulk :meth:`put_raw` (restoring a checkpoint or a changelog); returns the slots."""
        vecs = np.asarray(vector_sums, dtype=np.float32)
        n = len(user_ids)
        if vecs.shape != (n, self.dim):
            raise ValueError(f"expected vectors of shape ({n}, {self.dim}), got {vecs.shape}")
        slots = self.slots_of(user_ids)
        missing = np.flatnonzero(slots < 0)
        if missing.shape[0]:
            new_users = list(dict.fromkeys(user_ids[i] for i in missing))
            lookup = dict(zip(new_users, self._allocate(new_users), strict=True))
            slots[missing] = [lookup[user_ids[i]] for i in missing]
        self._vec[slots] = vecs
        self._ref[slots] = np.asarray(ref_ms, dtype=np.int64)
        self._mass[slots] = np.asarray(mass, dtype=np.float64)
        return slots

    def bytes_per_user(self) -> float:
        """Measured memory per user: matrix and side arrays (at current capacity) plus the index."""
        n = len(self._index)
        if n == 0:
            return 0.0
        arrays = self._vec.nbytes + self._ref.nbytes + self._mass.nbytes
        index = sys.getsizeof(self._index) + sys.getsizeof(self._slot_user) + sys.getsizeof(self._free)
        index += sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in self._index.items())
        return (arrays + index) / n
