"""Per-user interest mixes: a time-decayed weight per cluster, beside the one profile vector.

A user's profile is one decayed mean vector, and a reader of football *and* cooking has a
profile halfway between the two. The interest mix keeps, per user, the decayed weight of
the events that fell in each cluster (each event's own embedding scored against the
current centroids, nearest centroid wins)::

    w_c(t_ref) = sum_{i: cluster(v_i) = c}  w_i * 2 ** (-(t_ref - t_i) / h)

with the profile's half-life ``h`` and event weights, and the user's total scored mass
``m(t_ref) = sum_i w_i * 2 ** (-(t_ref - t_i) / h)``. A cluster's *share* is ``w_c / m``;
shares do not change as time passes (every term decays alike), only with new events.
Folding is exact and order-free as in :mod:`stream.profiles` (late events are decayed to the
user's reference time) as long as a user's events fell in at most ``max_interests``
clusters. Beyond that the entries stay sparse: the ``max_interests`` largest weights are
kept (as if the union of old and new entries were sorted), the others are dropped while
their weight stays in ``m``, so the kept shares remain shares of everything the user did.

The **interest set** is the clusters whose share is at least ``min_share``, with
hysteresis against the set last announced: a cluster enters at ``min_share + hysteresis``
and leaves below ``min_share - hysteresis`` (a user's first set uses ``min_share``). A user
with scored events always has at least their largest cluster.

**Model changes.** When clusters get a new centre (a dead centroid reseeded, a refinement
that replaced a centre, a new shared model version adopted), the weights stored under those
ids described a region the id no longer names, and the event vectors are not kept to score
again. :meth:`InterestMixes.on_model_change` drops those entries and takes their weight out
of each user's mass (renormalising the remaining shares); new events refill the new
cluster. Re-scoring the dropped weight from the profile direction would hand it to whatever
cluster the user's *mean* is nearest, the very midpoint this module exists to avoid.
Clusters that keep their id (mini-batch updates, refinements matched to the old ids) keep
their weights: their region moves a little, their meaning does not.

Storage: one row per user (a *slot*), ``max_interests`` int32 cluster ids (``-1`` empty)
and float64 weights, the reference time and the mass; the rows double when full and the
slots of forgotten users are reused.

Example:

>>> import numpy as np
>>> mixes = InterestMixes(half_life_s=60.0, max_interests=3, min_share=0.2, hysteresis=0.05)
>>> _ = mixes.fold_many(["ann"] * 4, np.array([0, 0, 0, 60_000]), np.array([2, 2, 5, 5]), np.ones(4))
>>> [(c, round(s, 3)) for c, s in mixes.shares("ann")]     # 2 events in 2, decayed once; 2 in 5, one fresh
[(5, 0.6), (2, 0.4)]
>>> mixes.select("ann", announced=None)
[(5, 0.6), (2, 0.4)]
>>> mixes.on_model_change([5])          # cluster 5 got a new centre: its weight no longer means anything
>>> mixes.shares("ann")
[(2, 1.0)]
>>> again = InterestMixes.like(mixes)
>>> again.put_bytes("ann", mixes.to_bytes("ann")); again.shares("ann") == mixes.shares("ann")
True
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterable, Iterator, Sequence
from itertools import repeat

import numpy as np

__all__ = ["InterestMixes", "interest_set"]

_MAGIC = b"ISIM"
_CODEC_VERSION = 1
# magic, version, entries, ref_ms, mass
_HEADER = struct.Struct("<4sBBqd")
_ENTRY = np.dtype([("cluster", "<i4"), ("weight", "<f8")])


def interest_set(
    shares: Sequence[tuple[int, float]],
    announced: Iterable[int] | None,
    min_share: float,
    hysteresis: float,
) -> list[tuple[int, float]]:
    """The interest set from ``shares`` (``(cluster, share)``, largest first) with hysteresis.

    A cluster of ``announced`` stays while its share is ``>= min_share - hysteresis``; any
    other enters at ``>= min_share + hysteresis``; with nothing announced (``None``) the bar is
    ``min_share``. The largest cluster is always in a non-empty mix's set.

    >>> interest_set([(1, 0.6), (4, 0.17), (2, 0.13)], announced=[1, 2], min_share=0.15, hysteresis=0.03)
    [(1, 0.6), (2, 0.13)]
    """
    if announced is None:
        chosen = [(c, s) for c, s in shares if s >= min_share]
    else:
        held = set(announced)
        stay, enter = min_share - hysteresis, min_share + hysteresis
        chosen = [(c, s) for c, s in shares if s >= (stay if c in held else enter)]
    if not chosen and shares:
        chosen = [shares[0]]
    return chosen


class InterestMixes:
    """Sparse, time-decayed weight per cluster for each user (see the module docstring).

    Parameters
    ----------
    half_life_s
        Half-life of an event's weight, in seconds of event time (the profile's).
    max_interests
        Most clusters kept per user.
    min_share, hysteresis
        The interest set's bar and its hysteresis (:func:`interest_set`).
    initial_capacity
        Rows allocated up front; doubled whenever full.
    """

    def __init__(
        self,
        half_life_s: float,
        max_interests: int = 4,
        min_share: float = 0.08,
        hysteresis: float = 0.02,
        initial_capacity: int = 1024,
    ) -> None:
        if not half_life_s > 0:
            raise ValueError("half_life_s must be positive")
        if not 1 <= max_interests <= 255:
            raise ValueError("max_interests must be in 1..255")
        self.half_life_s = float(half_life_s)
        self._half_life_ms = self.half_life_s * 1000.0
        self.max_interests = int(max_interests)
        self.min_share = float(min_share)
        self.hysteresis = float(hysteresis)
        cap = max(int(initial_capacity), 1)
        self._cluster = np.full((cap, self.max_interests), -1, dtype=np.int32)
        self._weight = np.zeros((cap, self.max_interests), dtype=np.float64)
        self._ref = np.zeros(cap, dtype=np.int64)
        self._mass = np.zeros(cap, dtype=np.float64)
        self._index: dict[str, int] = {}
        self._free: list[int] = []
        self._next = 0
        #: Weight dropped by :meth:`on_model_change` so far (decayed to each user's reference time).
        self.dropped_weight = 0.0
        # Users whose mix a model change altered and whose changelog record is now stale.
        self._stale_records: dict[str, None] = {}

    @classmethod
    def like(cls, other: InterestMixes) -> InterestMixes:
        """An empty store with ``other``'s parameters."""
        return cls(other.half_life_s, other.max_interests, other.min_share, other.hysteresis)

    # ------------------------------------------------------------------ size & lookup
    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, user_id: object) -> bool:
        return user_id in self._index

    def user_ids(self) -> Iterator[str]:
        """The users with a mix (a snapshot)."""
        return iter(list(self._index))

    def _grow(self, needed: int) -> None:
        cap = self._cluster.shape[0]
        if needed <= cap:
            return
        new_cap = cap
        while new_cap < needed:
            new_cap *= 2
        cluster = np.full((new_cap, self.max_interests), -1, dtype=np.int32)
        cluster[:cap] = self._cluster
        weight = np.zeros((new_cap, self.max_interests), dtype=np.float64)
        weight[:cap] = self._weight
        ref = np.zeros(new_cap, dtype=np.int64)
        ref[:cap] = self._ref
        mass = np.zeros(new_cap, dtype=np.float64)
        mass[:cap] = self._mass
        self._cluster, self._weight, self._ref, self._mass = cluster, weight, ref, mass

    def _slot(self, user_id: str) -> int:
        slot = self._index.get(user_id)
        if slot is None:
            if self._free:
                slot = self._free.pop()
            else:
                self._grow(self._next + 1)
                slot = self._next
                self._next += 1
            self._index[user_id] = slot
        return slot

    def forget(self, user_id: str) -> bool:
        """Delete a user's mix. Returns whether the user had one."""
        slot = self._index.pop(user_id, None)
        if slot is None:
            return False
        self._cluster[slot] = -1
        self._weight[slot] = 0.0
        self._ref[slot] = 0
        self._mass[slot] = 0.0
        self._free.append(slot)
        self._stale_records.pop(user_id, None)
        return True

    # ------------------------------------------------------------------ updates
    def fold_many(
        self,
        user_ids: Sequence[str],
        ts_ms: np.ndarray,
        clusters: np.ndarray,
        weights: np.ndarray | None = None,
    ) -> int:
        """Fold a batch of scored events (their user, time, nearest cluster and weight).

        Events of one user, in any time order, give what folding them one by one would
        (see the module docstring for the ``max_interests`` bound). Returns the number of
        entries dropped to respect that bound.
        """
        n = len(user_ids)
        if n == 0:
            return 0
        ts = np.asarray(ts_ms, dtype=np.int64).reshape(-1)
        cl = np.asarray(clusters, dtype=np.int64).reshape(-1)
        w = np.ones(n, dtype=np.float64) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
        if ts.shape[0] != n or cl.shape[0] != n or w.shape[0] != n:
            raise ValueError(f"expected {n} timestamps, clusters and weights")
        if (cl < 0).any():
            raise ValueError("cluster ids must be >= 0")
        slots = np.fromiter(map(self._index.get, user_ids, repeat(-1)), dtype=np.int64, count=n)
        fresh_slots: set[int] = set()
        if (slots < 0).any():
            for i in np.flatnonzero(slots < 0):
                user = user_ids[i]
                known = self._index.get(user)
                if known is None:
                    known = self._slot(user)
                    fresh_slots.add(known)
                slots[i] = known
        uniq, inv = np.unique(slots, return_inverse=True)
        t_max = np.full(uniq.shape[0], np.iinfo(np.int64).min, dtype=np.int64)
        np.maximum.at(t_max, inv, ts)
        old_ref = self._ref[uniq]
        if fresh_slots:
            old_ref = np.where(np.isin(uniq, list(fresh_slots)), t_max, old_ref)
        t_ref = np.maximum(old_ref, t_max)
        h = self._half_life_ms
        scale_old = np.exp2(-(t_ref - old_ref).astype(np.float64) / h)
        factor = w * np.exp2(-(t_ref[inv] - ts).astype(np.float64) / h)
        self._mass[uniq] = self._mass[uniq] * scale_old + np.bincount(inv, weights=factor, minlength=uniq.shape[0])
        self._ref[uniq] = t_ref
        self._weight[uniq] *= scale_old[:, None]

        # One sum per (user, cluster) pair of the batch.
        span = int(cl.max()) + 1
        pair_key, pair_inv = np.unique(inv * span + cl, return_inverse=True)
        pair_w = np.bincount(pair_inv, weights=factor, minlength=pair_key.shape[0])
        pair_slot = uniq[pair_key // span]
        pair_cluster = (pair_key % span).astype(np.int32)
        match = self._cluster[pair_slot] == pair_cluster[:, None]
        found = match.any(axis=1)
        if found.any():
            pos = match.argmax(axis=1)
            self._weight[pair_slot[found], pos[found]] += pair_w[found]
        dropped = 0
        # Clusters new to their user, biggest first: into free entries (vectorised), then over the smallest.
        new = np.flatnonzero(~found)
        if new.shape[0]:
            new = new[np.lexsort((-pair_w[new], pair_slot[new]))]
            slots_new = pair_slot[new]
            first = np.flatnonzero(np.r_[True, slots_new[1:] != slots_new[:-1]])
            rank = np.arange(new.shape[0]) - np.repeat(first, np.diff(np.r_[first, new.shape[0]]))
            empty = self._cluster[slots_new] < 0
            fits = rank < empty.sum(axis=1)
            if fits.any():
                pos = (np.cumsum(empty[fits], axis=1) == (rank[fits] + 1)[:, None]).argmax(axis=1)
                self._cluster[slots_new[fits], pos] = pair_cluster[new[fits]]
                self._weight[slots_new[fits], pos] = pair_w[new[fits]]
            for j in new[~fits].tolist():
                slot = int(pair_slot[j])
                row_w = self._weight[slot]
                e = int(row_w.argmin())
                dropped += 1
                if row_w[e] >= pair_w[j]:
                    continue  # smaller than every kept entry: its weight stays in the mass only
                self._cluster[slot, e] = pair_cluster[j]
                row_w[e] = pair_w[j]
        return dropped

    def on_model_change(self, reseeded: Iterable[int], n_clusters: int | None = None) -> None:
        """The model changed: drop the entries of clusters given a new centre (and of ids ``>= n_clusters``).

        Their weight leaves each user's mass, so the remaining shares are renormalised over
        what still has a meaning. Call it whenever the centroids change for any reason with
        the ids whose centre was replaced (``TrainerOutput.reseeded``, or the reseeded ids of
        an adopted model version); ids that kept their centre keep their weights.
        """
        ids = np.asarray(sorted({int(c) for c in reseeded}), dtype=np.int32)
        top = self._next
        if top == 0 or (ids.shape[0] == 0 and n_clusters is None):
            return
        clusters = self._cluster[:top]
        stale = np.isin(clusters, ids) if ids.shape[0] else np.zeros(clusters.shape, dtype=bool)
        if n_clusters is not None:
            stale |= clusters >= int(n_clusters)
        if not stale.any():
            return
        weights = self._weight[:top]
        lost = np.where(stale, weights, 0.0).sum(axis=1)
        self.dropped_weight += float(lost.sum())
        self._mass[:top] = np.maximum(self._mass[:top] - lost, 0.0)
        weights[stale] = 0.0
        clusters[stale] = -1
        touched = set(np.flatnonzero(stale.any(axis=1)).tolist())
        self._stale_records.update(dict.fromkeys(u for u, slot in self._index.items() if slot in touched))
        # A user left with no entry has no mix to speak of: the rest of their mass was dropped by the bound.
        empty = (clusters < 0).all(axis=1) & lost.astype(bool)
        self._mass[:top][empty] = 0.0

    def take_stale_records(self, limit: int) -> list[str]:
        """Up to ``limit`` users whose mix a model change altered since their changelog record was written
        (the worker writes their record again, a bounded number per batch)."""
        out = []
        for user in list(self._stale_records)[: max(0, limit)]:
            del self._stale_records[user]
            out.append(user)
        return out

    def record_written(self, user_id: str) -> None:
        """The user's changelog record was just rewritten (it is no longer stale)."""
        self._stale_records.pop(user_id, None)

    # ------------------------------------------------------------------ reads
    def shares(self, user_id: str) -> list[tuple[int, float]]:
        """``(cluster, share)`` of every kept entry, largest share first (``[]`` for an unknown user)."""
        slot = self._index.get(user_id)
        if slot is None:
            return []
        mass = self._mass[slot]
        if not mass > 0:
            return []
        row_c, row_w = self._cluster[slot], self._weight[slot]
        keep = np.flatnonzero((row_c >= 0) & (row_w > 0))
        order = keep[np.lexsort((row_c[keep], -row_w[keep]))]
        return [(int(row_c[e]), float(row_w[e] / mass)) for e in order]

    def shares_many(self, user_ids: Sequence[str]) -> list[list[tuple[int, float]]]:
        """:meth:`shares` of many users at once (the tracker's path)."""
        slots = np.fromiter(map(self._index.get, user_ids, repeat(-1)), dtype=np.int64, count=len(user_ids))
        known = slots >= 0
        rows = np.where(known, slots, 0)
        clusters = self._cluster[rows]
        mass = self._mass[rows]
        weights = self._weight[rows]
        ok = (clusters >= 0) & (weights > 0) & known[:, None] & (mass > 0)[:, None]
        share = np.where(ok, weights / np.where(mass > 0, mass, 1.0)[:, None], -1.0)
        order = np.lexsort((clusters, -share), axis=-1) if share.shape[0] else share.astype(np.int64)
        share_sorted = np.take_along_axis(share, order, axis=1).tolist()
        cluster_sorted = np.take_along_axis(clusters, order, axis=1).tolist()
        return [
            [(c, s) for c, s in zip(cs, ss, strict=True) if s >= 0]
            for cs, ss in zip(cluster_sorted, share_sorted, strict=True)
        ]

    def select(self, user_id: str, announced: Iterable[int] | None) -> list[tuple[int, float]]:
        """The user's interest set against the ``announced`` one (:func:`interest_set`)."""
        return interest_set(self.shares(user_id), announced, self.min_share, self.hysteresis)

    def raw(self, user_id: str) -> tuple[np.ndarray, np.ndarray, int, float]:
        """``(clusters int32, weights float64, ref_ms, mass)`` of the kept entries (copies). ``KeyError`` if unknown."""
        slot = self._index[user_id]
        keep = self._cluster[slot] >= 0
        return (self._cluster[slot][keep].copy(), self._weight[slot][keep].copy(),
                int(self._ref[slot]), float(self._mass[slot]))

    def put_raw(self, user_id: str, clusters: np.ndarray, weights: np.ndarray, ref_ms: int, mass: float) -> None:
        """Set a user's mix as is (the restore path); the largest ``max_interests`` entries are kept."""
        c = np.asarray(clusters, dtype=np.int32).reshape(-1)
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        if c.shape != w.shape:
            raise ValueError("clusters and weights differ in length")
        if c.shape[0] > self.max_interests:
            top = np.argsort(-w, kind="stable")[: self.max_interests]
            c, w = c[top], w[top]
        slot = self._slot(user_id)
        self._cluster[slot] = -1
        self._weight[slot] = 0.0
        self._cluster[slot, : c.shape[0]] = c
        self._weight[slot, : c.shape[0]] = w
        self._ref[slot] = int(ref_ms)
        self._mass[slot] = float(mass)

    # ------------------------------------------------------------------ codec
    def to_bytes(self, user_id: str) -> bytes | None:
        """A user's mix as a small versioned binary record (``None`` for a user without one; no pickle).

        Layout (little endian): ``b"ISIM"``, codec version (u8), entries ``n`` (u8), ``ref_ms``
        (i64), ``mass`` (f64), then ``n`` times (cluster i32, weight f64).
        """
        if user_id not in self._index:
            return None
        clusters, weights, ref_ms, mass = self.raw(user_id)
        entries = np.empty(clusters.shape[0], dtype=_ENTRY)
        entries["cluster"], entries["weight"] = clusters, weights
        return _HEADER.pack(_MAGIC, _CODEC_VERSION, entries.shape[0], ref_ms, mass) + entries.tobytes()

    @staticmethod
    def decode(data: bytes) -> tuple[np.ndarray, np.ndarray, int, float]:
        """:meth:`to_bytes` output back to ``(clusters, weights, ref_ms, mass)``; ``ValueError`` if malformed."""
        if len(data) < _HEADER.size:
            raise ValueError(f"interest mix record too short: {len(data)} bytes")
        magic, version, n, ref_ms, mass = _HEADER.unpack_from(data)
        if magic != _MAGIC:
            raise ValueError(f"not an interest mix record (magic {magic!r})")
        if version != _CODEC_VERSION:
            raise ValueError(f"unsupported interest mix codec version {version}")
        if len(data) != _HEADER.size + n * _ENTRY.itemsize:
            raise ValueError(f"interest mix record has {len(data)} bytes, expected {_HEADER.size + n * _ENTRY.itemsize}")
        entries = np.frombuffer(data, dtype=_ENTRY, count=n, offset=_HEADER.size)
        return entries["cluster"].astype(np.int32), entries["weight"].astype(np.float64), int(ref_ms), float(mass)

    def put_bytes(self, user_id: str, data: bytes) -> None:
        """Restore one user's mix from :meth:`to_bytes` output."""
        self.put_raw(user_id, *self.decode(data))

    def bytes_per_user(self) -> float:
        """Measured memory per user: the rows (at current capacity) plus the index."""
        n = len(self._index)
        if n == 0:
            return 0.0
        arrays = self._cluster.nbytes + self._weight.nbytes + self._ref.nbytes + self._mass.nbytes
        index = sys.getsizeof(self._index) + sys.getsizeof(self._free)
        index += sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in self._index.items())
        return (arrays + index) / n
