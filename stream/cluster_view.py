"""Cluster view: what the output topics say about the clusters, as tables and series.

Pure functions over decoded records (no Kafka here): ``consumers.topic_reader`` reads the
compacted ``centroids`` and ``assignments`` topics, this module turns their contents into

- :func:`build_view`: one row per cluster (users whose *latest* assignment is that cluster,
  users holding it as a *secondary* interest, centroid weight, label terms, last change time)
  plus totals and the distribution of interests per user;
- :func:`sizes_over_time`: cluster sizes replayed from the assignment history, bucketed in time;
- :func:`weights_over_time`: centroid weights from the snapshot history;
- :func:`project_centroids` and :func:`place_users`: a 2-D map. Centroids are projected with PCA
  (numpy SVD). Assignment records carry no user vectors, so users are *placed* near their
  cluster's point, with a jitter proportional to ``1 - score`` (a picture of membership and
  confidence, not of the users' true positions).

Records are given in log order (the order of the topic, partitions merged); for each key
the last record wins, and a tombstone (``change=None``) removes the user, as compaction would.

Example:

>>> from stream.records import AssignmentChange, CentroidSnapshot, ClusterScore
>>> snaps = [CentroidSnapshot(cluster=c, vector=[1.0 * (c == 0), 1.0 * (c == 1), 0.5],
...                           weight=10.0 + c, label_terms=[f"t{c}"], model_version=1,
...                           emit_ts_ms=1_000) for c in (0, 1)]
>>> def change(user, cluster, ts):
...     return UserRecord(user, AssignmentChange(
...         user_id=user, cluster=cluster, previous_cluster=None, score=0.9,
...         top=[ClusterScore(cluster=cluster, score=0.9)], model_version=1,
...         event_ts_ms=ts, emit_ts_ms=ts), ts)
>>> history = [change("a", 0, 10), change("b", 0, 20), change("a", 1, 30),
...            UserRecord("b", None, 40)]
>>> view = build_view(snaps, history)
>>> [(r.cluster, r.users) for r in view.rows], view.total_users
([(0, 0), (1, 1)], 1)
>>> from stream.records import InterestShare
>>> mixed = UserRecord("c", AssignmentChange(
...     user_id="c", cluster=0, previous_cluster=None, score=0.8, top=[], model_version=1, event_ts_ms=50,
...     emit_ts_ms=50, interests=[InterestShare(0, 0.7), InterestShare(1, 0.3)]), 50)
>>> view = build_view(snaps, history + [mixed])
>>> [(r.cluster, r.users, r.secondary_users) for r in view.rows], view.interests_per_user
([(0, 1, 0), (1, 1, 1)], {0: 1, 2: 1})
>>> sizes_over_time(history, buckets=2).sizes.tolist()
[[2, 0], [0, 1]]
>>> project_centroids(view.centroids).points.shape
(2, 2)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

import numpy as np

from stream.records import AssignmentChange, CentroidSnapshot


class UserRecord(NamedTuple):
    """One record of the assignments topic: a change, or a tombstone (``change is None``).

    ``ts_ms`` is the Kafka record timestamp; it dates tombstones, which carry no body.
    """

    user_id: str
    change: AssignmentChange | None
    ts_ms: int

    @property
    def time_ms(self) -> int:
        """When this record happened: the change's emit time, or the record time of a tombstone."""
        return self.change.emit_ts_ms if self.change is not None else self.ts_ms


@dataclass(frozen=True)
class ClusterRow:
    """One cluster as the tables show it."""

    cluster: int
    users: int
    weight: float | None
    label_terms: tuple[str, ...]
    model_version: int | None
    last_change_ms: int | None
    #: Users whose interests include this cluster while their primary cluster is another one.
    secondary_users: int = 0

    def to_dict(self) -> dict:
        """A JSON-ready dict (times also as ISO 8601 UTC)."""
        return {
            "cluster": self.cluster,
            "users": self.users,
            "secondary_users": self.secondary_users,
            "weight": self.weight,
            "label_terms": list(self.label_terms),
            "model_version": self.model_version,
            "last_change_ms": self.last_change_ms,
            "last_change": iso_time(self.last_change_ms),
        }


@dataclass(frozen=True)
class ClusterView:
    """The clusters now: rows sorted by cluster id, totals, and the latest records behind them."""

    rows: list[ClusterRow]
    total_users: int
    model_version: int | None
    last_centroid_ms: int | None
    centroids: dict[int, CentroidSnapshot] = field(repr=False)
    assignments: dict[str, AssignmentChange] = field(repr=False)
    #: How many users' latest record lists each number of interests (0: records without interests).
    interests_per_user: dict[int, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """A JSON-ready dict: ``clusters`` (the rows), ``totals`` and ``interests_per_user``."""
        return {
            "interests_per_user": {str(n): users for n, users in sorted(self.interests_per_user.items())},
            "clusters": [row.to_dict() for row in self.rows],
            "totals": {
                "clusters": len(self.rows),
                "users": self.total_users,
                "model_version": self.model_version,
                "last_centroid_ms": self.last_centroid_ms,
                "last_centroid": iso_time(self.last_centroid_ms),
            },
        }


def iso_time(ts_ms: int | None) -> str | None:
    """Epoch milliseconds as ISO 8601 UTC, to the second (None stays None).

    >>> iso_time(1_700_000_000_000)
    '2023-11-14T22:13:20Z'
    """
    if ts_ms is None:
        return None
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def latest_centroids(snapshots: Iterable[CentroidSnapshot]) -> dict[int, CentroidSnapshot]:
    """The last snapshot of each cluster, in log order."""
    latest: dict[int, CentroidSnapshot] = {}
    for snap in snapshots:
        latest[snap.cluster] = snap
    return latest


def latest_assignments(history: Iterable[UserRecord]) -> dict[str, AssignmentChange]:
    """Each user's last change, in log order; a tombstone removes the user."""
    latest: dict[str, AssignmentChange] = {}
    for record in history:
        if record.change is None:
            latest.pop(record.user_id, None)
        else:
            latest[record.user_id] = record.change
    return latest


def build_view(snapshots: Iterable[CentroidSnapshot], history: Iterable[UserRecord]) -> ClusterView:
    """The cluster table from the centroid snapshots and the assignment history (both in log order).

    A cluster appears if it has a snapshot or at least one user. ``last_change_ms`` is the latest
    of its last snapshot and of the changes that moved a user into or out of it.
    """
    snapshots = list(snapshots)
    history = list(history)
    centroids = latest_centroids(snapshots)
    assignments = latest_assignments(history)

    sizes: dict[int, int] = {}
    secondary: dict[int, int] = {}
    per_user: dict[int, int] = {}
    for change in assignments.values():
        sizes[change.cluster] = sizes.get(change.cluster, 0) + 1
        per_user[len(change.interests)] = per_user.get(len(change.interests), 0) + 1
        for interest in change.interests:
            if interest.cluster != change.cluster:
                secondary[interest.cluster] = secondary.get(interest.cluster, 0) + 1

    last_change: dict[int, int] = {}

    def touch(cluster: int | None, ts: int) -> None:
        if cluster is not None and ts > last_change.get(cluster, -1):
            last_change[cluster] = ts

    for snap in centroids.values():
        touch(snap.cluster, snap.emit_ts_ms)
    previous: dict[str, int] = {}
    for record in history:
        # A tombstone moves the user out of the cluster it was in last.
        old = previous.pop(record.user_id, None)
        if record.change is None:
            touch(old, record.time_ms)
            continue
        touch(record.change.cluster, record.time_ms)
        touch(record.change.previous_cluster if old is None else old, record.time_ms)
        previous[record.user_id] = record.change.cluster

    rows = []
    for cluster in sorted(set(centroids) | set(sizes) | set(secondary)):
        snap = centroids.get(cluster)
        rows.append(
            ClusterRow(
                cluster=cluster,
                users=sizes.get(cluster, 0),
                weight=snap.weight if snap is not None else None,
                label_terms=tuple(snap.label_terms) if snap is not None else (),
                model_version=snap.model_version if snap is not None else None,
                last_change_ms=last_change.get(cluster),
                secondary_users=secondary.get(cluster, 0),
            )
        )
    return ClusterView(
        rows=rows,
        total_users=len(assignments),
        model_version=max((s.model_version for s in centroids.values()), default=None),
        last_centroid_ms=max((s.emit_ts_ms for s in centroids.values()), default=None),
        centroids=centroids,
        assignments=assignments,
        interests_per_user=dict(sorted(per_user.items())),
    )


@dataclass(frozen=True)
class SizeSeries:
    """Cluster sizes sampled at ``times_ms`` (ascending): ``sizes[i, j]`` users in ``clusters[j]``."""

    times_ms: np.ndarray
    clusters: list[int]
    sizes: np.ndarray


def sizes_over_time(history: Iterable[UserRecord], buckets: int = 40) -> SizeSeries:
    """Replay the assignment history in time order and count each cluster's users at bucket ends.

    The span from the first to the last record is cut into ``buckets`` equal intervals; each
    sample counts the state after every record up to that interval's end. On a compacted
    topic older records may be gone, so the replay shows what survives.
    """
    if buckets < 1:
        raise ValueError("buckets must be >= 1")
    ordered = sorted(history, key=lambda r: r.time_ms)  # stable: log order among equal times
    clusters = sorted({r.change.cluster for r in ordered if r.change is not None})
    if not ordered:
        return SizeSeries(np.zeros(0, dtype=np.int64), [], np.zeros((0, 0), dtype=np.int64))
    column = {c: j for j, c in enumerate(clusters)}
    start, end = ordered[0].time_ms, ordered[-1].time_ms
    edges = np.linspace(start, end, buckets + 1)[1:] if end > start else np.array([float(end)])
    edges[-1] = end  # float rounding must not drop the last record
    current: dict[str, int] = {}
    counts = np.zeros(len(clusters), dtype=np.int64)
    sizes = np.zeros((len(edges), len(clusters)), dtype=np.int64)
    i = 0
    for b, edge in enumerate(edges):
        while i < len(ordered) and ordered[i].time_ms <= edge:
            record = ordered[i]
            old = current.pop(record.user_id, None)
            if old is not None:
                counts[column[old]] -= 1
            if record.change is not None:
                current[record.user_id] = record.change.cluster
                counts[column[record.change.cluster]] += 1
            i += 1
        sizes[b] = counts
    return SizeSeries(np.round(edges).astype(np.int64), clusters, sizes)


def weights_over_time(snapshots: Iterable[CentroidSnapshot]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per cluster, its snapshots' ``(emit times ms, weights)``, sorted by time.

    >>> from stream.records import CentroidSnapshot
    >>> snaps = [CentroidSnapshot(cluster=0, vector=[1.0], weight=w, label_terms=[],
    ...                           model_version=1, emit_ts_ms=t) for t, w in [(20, 3.0), (10, 1.0)]]
    >>> times, weights = weights_over_time(snaps)[0]
    >>> times.tolist(), weights.tolist()
    ([10, 20], [1.0, 3.0])
    """
    series: dict[int, list[tuple[int, float]]] = {}
    for snap in snapshots:
        series.setdefault(snap.cluster, []).append((snap.emit_ts_ms, snap.weight))
    out = {}
    for cluster in sorted(series):
        points = sorted(series[cluster], key=lambda p: p[0])
        out[cluster] = (
            np.array([p[0] for p in points], dtype=np.int64),
            np.array([p[1] for p in points], dtype=np.float64),
        )
    return out


@dataclass(frozen=True)
class Projection:
    """Centroids in 2-D: ``points[i]`` is cluster ``clusters[i]``; ``explained``: each axis' variance share."""

    clusters: list[int]
    points: np.ndarray
    explained: np.ndarray


def project_centroids(centroids: Mapping[int, CentroidSnapshot]) -> Projection:
    """Project the centroid vectors on their first two principal components (numpy SVD).

    Signs are fixed (largest loading positive) so the same centroids always give the same picture.
    Fewer than two non-trivial components leave the missing axes at zero.
    """
    clusters = sorted(centroids)
    if not clusters:
        return Projection([], np.zeros((0, 2)), np.zeros(2))
    lengths = {len(centroids[c].vector) for c in clusters}
    if len(lengths) != 1:
        raise ValueError(f"centroid vectors differ in length: {sorted(lengths)}")
    x = np.asarray([centroids[c].vector for c in clusters], dtype=np.float64)
    x = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    n = min(2, vt.shape[0])
    components = vt[:n]
    signs = np.sign(components[np.arange(n), np.abs(components).argmax(axis=1)])
    signs[signs == 0] = 1.0
    components = components * signs[:, None]
    points = np.zeros((len(clusters), 2))
    points[:, :n] = x @ components.T
    variance = s**2
    explained = np.zeros(2)
    total = variance.sum()
    if total > 0:
        explained[:n] = variance[:n] / total
    return Projection(clusters, points, explained)


@dataclass(frozen=True)
class PlacedUsers:
    """A sample of users placed on the map: ``points[i]`` is ``user_ids[i]`` in ``clusters[i]``."""

    user_ids: list[str]
    clusters: np.ndarray
    points: np.ndarray


def place_users(
    assignments: Mapping[str, AssignmentChange],
    projection: Projection,
    sample: int = 2000,
    seed: int = 0,
) -> PlacedUsers:
    """Place a sample of users around their cluster's point, jittered by ``1 - score``.

    Assignment records carry no user vectors, so this is an illustration: the jitter is normal with
    a standard deviation of ``(1 - score)`` (clipped to [0.05, 1]) times a quarter of the distance
    between the two closest centroids. Users of clusters without a centroid are left out.
    Same inputs, same picture.

    >>> proj = Projection([0, 1], np.array([[0.0, 0.0], [4.0, 0.0]]), np.array([1.0, 0.0]))
    >>> from stream.records import AssignmentChange
    >>> users = {u: AssignmentChange(user_id=u, cluster=int(u) % 2, previous_cluster=None,
    ...          score=1.0, top=[], model_version=1, event_ts_ms=0, emit_ts_ms=0) for u in "0123"}
    >>> placed = place_users(users, proj, sample=3)
    >>> len(placed.user_ids), bool(np.abs(placed.points - proj.points[placed.clusters]).max() < 1.0)
    (3, True)
    """
    where = {c: i for i, c in enumerate(projection.clusters)}
    users = sorted(u for u, change in assignments.items() if change.cluster in where)
    rng = np.random.default_rng(seed)
    if sample < len(users):
        picked = np.sort(rng.choice(len(users), size=max(sample, 0), replace=False))
        users = [users[i] for i in picked]
    if not users:
        return PlacedUsers([], np.zeros(0, dtype=np.int64), np.zeros((0, 2)))
    clusters = np.array([assignments[u].cluster for u in users], dtype=np.int64)
    centres = projection.points[[where[c] for c in clusters]]
    scale = _spread(projection.points) / 4
    doubt = np.clip(1.0 - np.array([assignments[u].score for u in users]), 0.05, 1.0)
    jitter = rng.normal(size=(len(users), 2)) * (doubt * scale)[:, None]
    return PlacedUsers(users, clusters, centres + jitter)


def _spread(points: np.ndarray) -> float:
    """Distance between the two closest distinct points, or 1.0 when there are none."""
    if len(points) < 2:
        return 1.0
    d = np.sqrt(((points[:, None, :] - points[None, :, :]) ** 2).sum(-1))
    d = d[np.triu_indices(len(points), k=1)]
    d = d[d > 1e-12]
    return float(d.min()) if d.size else 1.0


def top_terms(terms: Sequence[str], n: int = 2) -> str:
    """The first ``n`` label terms joined for display.

    >>> top_terms(["space", "nasa", "orbit"])
    'space, nasa'
    """
    return ", ".join(terms[:n])
