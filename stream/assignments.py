"""Which cluster each user was last announced in, and when to announce a change.

The tracker remembers, per user, the last *emitted* ``(cluster, score)`` and, per
cluster, the users last emitted in it. :meth:`AssignmentTracker.assess` turns fresh
similarities into :class:`~stream.records.AssignmentChange` records, with
hysteresis: a user moves only when the new best cluster beats the announced one by
more than ``hysteresis`` (in cosine similarity), so users sitting between two
nearly equal clusters do not flap. :meth:`AssignmentTracker.recheck_candidates`
picks users without new events whose cluster's centroid moved, so they can be
re-assessed against the new centroids within a budget.

Example:

>>> import numpy as np
>>> tracker = AssignmentTracker(hysteresis=0.05, top_k=2)
>>> sims = np.array([[0.90, 0.10, 0.20]])
>>> [c.cluster for c in tracker.assess(["ann"], None, sims, model_version=1, event_ts_ms=0, emit_ts_ms=5)]
[0]
>>> tracker.assess(["ann"], None, np.array([[0.50, 0.52, 0.1]]), 2, 0, 5)   # within the hysteresis
[]
>>> change = tracker.assess(["ann"], None, np.array([[0.40, 0.60, 0.1]]), 3, 0, 5)[0]
>>> change.cluster, change.previous_cluster, change.score, [t.cluster for t in change.top]
(1, 0, 0.6, [1, 0])
>>> tracker.last("ann")
(1, 0.6)

With an :class:`~stream.interests.InterestMixes` store (``interests=``), every record also
carries the user's interest set, and a change of that set (a cluster enters or leaves it,
past the share hysteresis) is published even when the best cluster stays:

>>> from stream.interests import InterestMixes
>>> mixes = InterestMixes(half_life_s=3600.0, min_share=0.2, hysteresis=0.05)
>>> tracker = AssignmentTracker(interests=mixes)
>>> _ = mixes.fold_many(["bo"] * 4, np.zeros(4), np.array([0, 0, 0, 1]))
>>> [(i.cluster, i.share) for i in tracker.assess(["bo"], None, np.array([[0.9, 0.3]]))[0].interests]
[(0, 0.75), (1, 0.25)]
>>> _ = mixes.fold_many(["bo"], np.zeros(1), np.array([0]))       # cluster 1 now at 0.2: inside the hysteresis
>>> tracker.assess(["bo"], None, np.array([[0.9, 0.3]]))
[]
>>> _ = mixes.fold_many(["bo"] * 2, np.zeros(2), np.array([0, 0]))  # 1/7 < 0.15: cluster 1 leaves
>>> change = tracker.assess(["bo"], None, np.array([[0.9, 0.3]]))[0]
>>> change.cluster, change.previous_cluster, [i.cluster for i in change.interests]
(0, 0, [0])
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

import msgspec
import numpy as np

from stream.interests import interest_set
from stream.records import AssignmentChange, ClusterScore, InterestShare

if TYPE_CHECKING:
    from stream.interests import InterestMixes

__all__ = ["AssignmentTracker"]

_MOVEMENT_EPS = 1e-9
_MAGIC = b"ISAT"
_FORMAT_VERSION = 1


class _TrackerWire(msgspec.Struct):
    params: dict[str, float]
    users: list[str]
    clusters: list[int]
    scores: list[float]
    members: list[tuple[int, list[str], int]]
    debt: bytes
    # Challengers waiting for confirmation: user -> (cluster, wins so far). Absent in older states.
    pending_users: list[str] = []
    pending_clusters: list[int] = []
    pending_wins: list[int] = []
    # The cluster each user left with its last change (absent in older states).
    left_users: list[str] = []
    left_clusters: list[int] = []
    # The interest set of each user's last record (absent in older states).
    interest_users: list[str] = []
    interest_sets: list[list[int]] = []


_DIGITS = 6


class _Members:
    """The users of one cluster: O(1) add/remove and a cursor that cycles through them."""

    __slots__ = ("users", "pos", "cursor")

    def __init__(self) -> None:
        self.users: list[str] = []
        self.pos: dict[str, int] = {}
        self.cursor = 0

    def add(self, user: str) -> None:
        if user not in self.pos:
            self.pos[user] = len(self.users)
            self.users.append(user)

    def remove(self, user: str) -> None:
        i = self.pos.pop(user, None)
        if i is None:
            return
        last = self.users.pop()
        if i < len(self.users):
            self.users[i] = last
            self.pos[last] = i

    def take(self, n: int) -> list[str]:
        size = len(self.users)
        n = min(n, size)
        if n <= 0:
            return []
        start = self.cursor % size
        out = self.users[start : start + n]
        if len(out) < n:
            out += self.users[: n - len(out)]
        self.cursor = (start + n) % size
        return out


class AssignmentTracker:
    """Last emitted cluster per user, with hysteresis and centroid-movement rechecks.

    Parameters
    ----------
    hysteresis
        A user is moved only when ``sim(best) - sim(announced) > margin``, where
        ``margin = hysteresis + maturity_margin / sqrt(max(maturity, 1))``.
    top_k
        How many clusters (with scores, best first) each change record lists.
    maturity_margin
        Extra margin for young profiles: ``maturity`` (passed to :meth:`assess`, e.g. the
        profile's decayed event weight) measures how much evidence the profile holds, and
        the few-events profiles whose direction still swings with every event need to win
        by more. ``0`` (or no ``maturity`` given) leaves only ``hysteresis``.
    confirmations
        A challenger cluster must win (by the margin) this many assessments in a row
        before the user moves; ``1`` moves at the first win. A first assignment is never
        delayed.
    return_margin
        Extra margin for a move *back* to the cluster the user left with their last change:
        a profile sitting on the border of two clusters otherwise flaps between them
        (A → B → A → B), while a user whose interest really moved goes on to the new
        cluster and is not held back. The cluster left is the ``previous_cluster`` of the
        user's last change record, so it survives a restore from the assignments topic.
    """

    def __init__(
        self,
        hysteresis: float = 0.005,
        top_k: int = 3,
        maturity_margin: float = 0.0,
        confirmations: int = 1,
        return_margin: float = 0.0,
        interests: InterestMixes | None = None,
    ) -> None:
        if confirmations < 1:
            raise ValueError("confirmations must be >= 1")
        self.hysteresis = float(hysteresis)
        self.top_k = int(top_k)
        self.maturity_margin = float(maturity_margin)
        self.confirmations = int(confirmations)
        self.return_margin = float(return_margin)
        # user -> the cluster they left with their last change (for return_margin)
        self._left: dict[str, int] = {}
        # user -> (challenger cluster, consecutive wins so far), while below `confirmations`
        self._pending: dict[str, tuple[int, int]] = {}
        self._last: dict[str, tuple[int, float]] = {}
        self._members: dict[int, _Members] = {}
        self._debt = np.zeros(0, dtype=np.float64)  # outstanding centroid movement per cluster
        self.interests = interests
        # user -> the clusters of the interest set of their last record (sorted)
        self._announced: dict[str, tuple[int, ...]] = {}
        #: Records published because the interest set changed (first records not counted).
        self.interest_set_changes = 0
        #: Records published, by the number of interests they list (running totals, for metrics).
        self.records_by_interests: Counter[int] = Counter()

    def __len__(self) -> int:
        return len(self._last)

    def __contains__(self, user_id: object) -> bool:
        return user_id in self._last

    def last(self, user_id: str) -> tuple[int, float] | None:
        """The last emitted ``(cluster, score)`` of a user, or ``None``."""
        return self._last.get(user_id)

    def users_in(self, cluster: int) -> list[str]:
        """The users last emitted in ``cluster`` (a copy, in no particular order)."""
        members = self._members.get(cluster)
        return list(members.users) if members else []

    def cluster_sizes(self, k: int) -> np.ndarray:
        """Number of users last emitted in each of clusters ``0..k-1``."""
        sizes = np.zeros(k, dtype=np.int64)
        for cluster, members in self._members.items():
            if 0 <= cluster < k:
                sizes[cluster] = len(members.users)
        return sizes

    def _set(self, user_id: str, cluster: int, score: float, left: int | None = None) -> None:
        self._pending.pop(user_id, None)
        previous = self._last.get(user_id)
        if previous is not None and previous[0] != cluster:
            self._members[previous[0]].remove(user_id)
            left = previous[0]
        if left is not None and left != cluster:
            self._left[user_id] = left
        self._last[user_id] = (cluster, score)
        self._members.setdefault(cluster, _Members()).add(user_id)

    def restore(
        self,
        user_id: str,
        cluster: int,
        score: float,
        previous_cluster: int | None = None,
        interests: list[int] | None = None,
    ) -> None:
        """Set a user's last emission without emitting (rebuilding from the assignments topic).

        ``previous_cluster`` is the record's ``previous_cluster`` (the cluster the user left);
        ``interests`` the clusters of its interest set (``None`` for a record without one).
        """
        self._set(user_id, int(cluster), float(score), None if previous_cluster is None else int(previous_cluster))
        if interests is not None:
            self._announced[user_id] = tuple(sorted(int(c) for c in interests))

    def announced_interests(self, user_id: str) -> tuple[int, ...] | None:
        """The clusters of the interest set of the user's last record (``None`` if none was published)."""
        return self._announced.get(user_id)

    def forget(self, user_id: str) -> bool:
        """Drop a user (the caller publishes the tombstone). Returns whether it was known."""
        self._pending.pop(user_id, None)
        self._left.pop(user_id, None)
        self._announced.pop(user_id, None)
        previous = self._last.pop(user_id, None)
        if previous is None:
            return False
        self._members[previous[0]].remove(user_id)
        return True

    # ------------------------------------------------------------------ state
    def to_bytes(self) -> bytes:
        """Full state (last emissions, per-cluster members and cursors, outstanding movement).

        Magic ``ISAT``, a format version byte, then msgpack; no pickle.
        """
        wire = _TrackerWire(
            params={
                "hysteresis": self.hysteresis,
                "top_k": self.top_k,
                "maturity_margin": self.maturity_margin,
                "confirmations": self.confirmations,
                "return_margin": self.return_margin,
            },
            users=list(self._last),
            clusters=[c for c, _ in self._last.values()],
            scores=[s for _, s in self._last.values()],
            members=[(c, list(m.users), m.cursor) for c, m in self._members.items()],
            debt=self._debt.astype("<f8").tobytes(),
            pending_users=list(self._pending),
            pending_clusters=[c for c, _ in self._pending.values()],
            pending_wins=[n for _, n in self._pending.values()],
            left_users=list(self._left),
            left_clusters=list(self._left.values()),
            interest_users=list(self._announced),
            interest_sets=[list(v) for v in self._announced.values()],
        )
        return _MAGIC + bytes([_FORMAT_VERSION]) + msgspec.msgpack.encode(wire)

    @classmethod
    def from_bytes(cls, data: bytes) -> AssignmentTracker:
        if data[:4] != _MAGIC:
            raise ValueError("not an AssignmentTracker state")
        if data[4] != _FORMAT_VERSION:
            raise ValueError(f"unsupported AssignmentTracker format version {data[4]}")
        wire = msgspec.msgpack.decode(data[5:], type=_TrackerWire)
        params = dict(wire.params)
        for name in ("top_k", "confirmations"):
            if name in params:
                params[name] = int(params[name])
        tracker = cls(**params)
        tracker._pending = {
            u: (int(c), int(n))
            for u, c, n in zip(wire.pending_users, wire.pending_clusters, wire.pending_wins, strict=True)
        }
        tracker._last = {u: (c, s) for u, c, s in zip(wire.users, wire.clusters, wire.scores, strict=True)}
        tracker._left = dict(zip(wire.left_users, wire.left_clusters, strict=True))
        tracker._announced = {u: tuple(c) for u, c in zip(wire.interest_users, wire.interest_sets, strict=True)}
        for cluster, users, cursor in wire.members:
            members = _Members()
            for user in users:
                members.add(user)
            members.cursor = cursor
            tracker._members[cluster] = members
        tracker._debt = np.frombuffer(wire.debt, dtype="<f8").astype(np.float64)
        return tracker

    def assess(
        self,
        user_ids: Sequence[str],
        directions: np.ndarray | None,
        similarities: np.ndarray | None = None,
        model_version: int = 0,
        event_ts_ms: np.ndarray | int = 0,
        emit_ts_ms: int = 0,
        *,
        centroids: np.ndarray | None = None,
        maturity: np.ndarray | None = None,
    ) -> list[AssignmentChange]:
        """Compare users' similarities with what was last emitted; return the changes.

        Pass either ``similarities`` ``(m, k)`` or ``centroids`` ``(k, d)`` (then
        ``directions`` ``(m, d)``, L2-normalised, are needed; ``centroids`` may also be
        given as the third positional argument when its shape tells it apart). Users
        whose similarities are all zero (an all-zero profile) or not finite are skipped.
        ``maturity`` ``(m,)`` (e.g. each profile's decayed event weight) scales the extra
        margin of young profiles (see ``maturity_margin``); without it every user is
        treated as mature.
        """
        m = len(user_ids)
        if similarities is not None and centroids is None and directions is not None:
            arr = np.asarray(similarities)
            d = np.asarray(directions).shape[1]
            if arr.ndim == 2 and arr.shape[1] == d and arr.shape[0] != m:
                similarities, centroids = None, arr
        if similarities is None:
            if centroids is None or directions is None:
                raise ValueError("assess needs similarities, or directions and centroids")
            c = np.asarray(centroids, dtype=np.float32)
            norms = np.linalg.norm(c, axis=1, keepdims=True)
            c = np.divide(c, norms, out=np.zeros_like(c), where=norms > 0)
            sims = np.asarray(directions, dtype=np.float32) @ c.T
        else:
            sims = np.asarray(similarities)
        if sims.shape[0] != m:
            raise ValueError(f"{m} users but {sims.shape[0]} rows of similarities")
        if m == 0:
            return []
        k = sims.shape[1]
        ev = np.broadcast_to(np.asarray(event_ts_ms, dtype=np.int64), (m,))
        top_k = min(self.top_k, k)
        best = np.argmax(sims, axis=1)
        usable = np.isfinite(sims).all(axis=1) & (np.abs(sims).max(axis=1) > 0)
        if maturity is not None and self.maturity_margin > 0:
            mat = np.asarray(maturity, dtype=np.float64).reshape(-1)
            if mat.shape[0] != m:
                raise ValueError(f"{m} users but {mat.shape[0]} maturity values")
            margins = self.hysteresis + self.maturity_margin / np.sqrt(np.maximum(np.nan_to_num(mat), 1.0))
        else:
            margins = np.full(m, self.hysteresis)
        pending = self._pending
        confirmations = self.confirmations
        return_margin, left = self.return_margin, self._left

        mixes = self.interests
        announced = self._announced
        user_shares = mixes.shares_many(user_ids) if mixes is not None else None
        changes: list[AssignmentChange] = []
        for i in range(m):
            if not usable[i]:
                continue
            user = user_ids[i]
            row = sims[i]
            b = int(best[i])
            prev = self._last.get(user)
            moves = True
            if prev is not None:
                if prev[0] == b:
                    if pending:
                        pending.pop(user, None)
                    moves = False
                else:
                    prev_sim = float(row[prev[0]]) if 0 <= prev[0] < k else -np.inf
                    margin = margins[i]
                    if return_margin and left.get(user) == b:
                        margin += return_margin
                    if float(row[b]) - prev_sim <= margin:
                        if pending:
                            pending.pop(user, None)
                        moves = False
                    elif confirmations > 1 and 0 <= prev[0] < k:
                        challenger, wins = pending.get(user, (-1, 0))
                        wins = wins + 1 if challenger == b else 1
                        if wins < confirmations:
                            pending[user] = (b, wins)
                            moves = False
            interest_list: list[InterestShare] = []
            set_changed = False
            if mixes is not None:
                was = announced.get(user)
                chosen = interest_set(user_shares[i], was, mixes.min_share, mixes.hysteresis)  # type: ignore[index]
                now = tuple(sorted(c for c, _ in chosen))
                set_changed = now != was and (was is not None or bool(now))  # no mix yet: nothing to announce
                if not moves and not set_changed:
                    continue
                interest_list = [InterestShare(cluster=c, share=round(sh, _DIGITS)) for c, sh in chosen]
                announced[user] = now
                if set_changed and was is not None:
                    self.interest_set_changes += 1
            elif not moves:
                continue
            cluster = b if moves else prev[0]  # type: ignore[index]
            order = np.argpartition(-row, top_k - 1)[:top_k] if top_k < k else np.arange(k)
            order = order[np.argsort(-row[order], kind="stable")]
            score = round(float(row[cluster]), _DIGITS) if 0 <= cluster < k else 0.0
            changes.append(
                AssignmentChange(
                    user_id=user,
                    cluster=cluster,
                    previous_cluster=None if prev is None else prev[0],
                    score=score,
                    top=[ClusterScore(cluster=int(j), score=round(float(row[j]), _DIGITS)) for j in order],
                    model_version=int(model_version),
                    event_ts_ms=int(ev[i]),
                    emit_ts_ms=int(emit_ts_ms),
                    interests=interest_list,
                )
            )
            self.records_by_interests[len(interest_list)] += 1
            if moves:
                self._set(user, b, score)
            else:
                self._last[user] = (cluster, score)
        return changes

    def recheck_candidates(self, movement: np.ndarray, budget: int) -> list[str]:
        """Users to re-assess because their cluster's centroid moved, at most ``budget`` of them.

        ``movement`` (one value per cluster, e.g. :attr:`ApplyResult.movement`) is added
        to each cluster's outstanding movement, which shrinks again as the cluster's
        members are handed out (to zero after a full cycle). Clusters with more
        outstanding movement come first and get a larger share of the budget (in
        proportion, at least one user each while the budget lasts); inside a cluster a
        cursor cycles, so repeated calls visit every member in turn. Clusters whose
        outstanding movement is below a tiny epsilon are skipped.
        """
        mv = np.asarray(movement, dtype=np.float64).reshape(-1)
        if mv.shape[0] > self._debt.shape[0]:
            self._debt = np.concatenate([self._debt, np.zeros(mv.shape[0] - self._debt.shape[0])])
        self._debt[: mv.shape[0]] += np.where(mv > _MOVEMENT_EPS, mv, 0.0)
        if budget <= 0:
            return []
        debt = self._debt
        moved = [
            int(j)
            for j in np.argsort(-debt, kind="stable")
            if debt[j] > _MOVEMENT_EPS and int(j) in self._members and self._members[int(j)].users
        ]
        if not moved:
            return []
        sizes = {j: len(self._members[j].users) for j in moved}
        total = float(sum(debt[j] for j in moved))
        share = {j: min(sizes[j], int(budget * debt[j] / total)) for j in moved}
        left = budget - sum(share.values())
        # Hand out what rounding and small clusters left over: first one user to each cluster
        # that got none, then fill up, largest movement first.
        for j in moved:
            if left == 0:
                break
            if share[j] == 0:
                share[j] = 1
                left -= 1
        for j in moved:
            if left == 0:
                break
            extra = min(sizes[j] - share[j], left)
            share[j] += extra
            left -= extra
        out: list[str] = []
        for j in moved:
            taken = self._members[j].take(share[j])
            out.extend(taken)
            debt[j] *= 1.0 - len(taken) / sizes[j]
        return out
