"""The worker stage: the users' side of a micro-batch.

The worker owns users. For each micro-batch of input records it

1. :meth:`WorkerStage.prepare` — decodes every record (bad ones become dead letters),
   applies forget events, embeds the behaviour events (cache + catalog), folds them
   into the users' decayed profiles (and, when the profile store has an
   :class:`~stream.interests.InterestMixes` companion, each event's nearest centroid into
   the user's interest mix), and summarises the touched users' profile
   directions against the *current* centroids as additive
   :class:`~stream.kmeans.BatchStatistics` (plus label statistics: each event's text
   under the nearest centroid of its embedding);
2. (the trainer applies those statistics to the model — :mod:`stream.trainer`);
3. :meth:`WorkerStage.finish` — assesses the touched users against the *updated*
   centroids, re-assesses a bounded number of untouched users whose cluster moved,
   and returns the assignment changes, tombstones and dead letters to publish (the tracker
   reads the interest mixes from the same store).

Events applied before the model has centroids cannot be scored yet: they wait (at most
``MAX_UNSCORED`` of them) and are folded into the mixes, exactly, once it has.

Forget semantics, in record order inside a batch: a user's events *before* their
forget event are dropped with it; events *after* it start a fresh profile. A user
whose last word in the batch is a forget gets a tombstone; a user forgotten and
then active again gets no tombstone but a fresh change (``previous_cluster=None``)
that replaces the old record on the compacted topic. So the outputs of one batch
never name a user twice, and their publication order does not matter.

Example (a fake encoder that maps a text to one of two axes):

>>> import numpy as np
>>> from stream.assignments import AssignmentTracker
>>> from stream.embedder import EmbeddingCache, EventEmbedder
>>> from stream.kmeans import MiniBatchKMeans
>>> from stream.profiles import ProfileStore
>>> from stream.settings import ClusteringSettings
>>> class AxisEncoder:
...     dim = 2
...     def encode(self, texts):
...         return np.array([[1.0, 0.0] if "ball" in t else [0.0, 1.0] for t in texts], np.float32)
>>> settings = ClusteringSettings(n_clusters=2)
>>> model = MiniBatchKMeans(n_clusters=2, init_size=2, seed=0)
>>> worker = WorkerStage(settings, EventEmbedder(AxisEncoder(), EmbeddingCache(10)),
...                      ProfileStore(2, settings.half_life_s), AssignmentTracker())
>>> records = [SourceRecord(b'{"user_id": "a", "ts": 1, "text": "ball game"}', None, None),
...            SourceRecord(b'{"user_id": "b", "ts": 2, "text": "stock prices"}', None, None),
...            SourceRecord(b'not json', None, None)]
>>> prepared = worker.prepare(records, model)
>>> _ = model.apply(prepared.stats)     # the trainer's job
>>> out = worker.finish(prepared, model, now_ms=10)
>>> sorted(c.user_id for c in out.changes), [r.reason for _, r in out.dead_letters], out.n_applied
(['a', 'b'], ['not_json'], 2)
>>> len({c.cluster for c in out.changes})
2
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream.assignments import AssignmentTracker
from stream.embedder import EventEmbedder
from stream.events import BehaviourEvent, ForgetEvent, Rejection, decode_event
from stream.kmeans import BatchStatistics, MiniBatchKMeans, point_ids
from stream.profiles import ProfileStore
from stream.records import AssignmentChange
from stream.settings import ClusteringSettings

__all__ = ["MAX_UNSCORED", "PreparedBatch", "SourceRecord", "WorkerCounters", "WorkerOutput", "WorkerStage"]

#: Most applied events kept waiting for the model's first centroids to score them into the mixes.
MAX_UNSCORED = 100_000
#: Most users per batch whose changelog record is written again because a model change altered their mix.
MIX_REWRITE_BUDGET = 4096


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One input record, wherever it came from (a Kafka record, a line of a file)."""

    value: bytes | None
    key: bytes | None
    timestamp_ms: int | None
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None


@dataclass(slots=True)
class WorkerCounters:
    """Running totals of the worker, read by the metrics layer (plain ints, never reset).

    ``events`` counts input records by outcome: ``applied`` (folded into a profile),
    ``rejected`` (dead-lettered), ``forget`` (forget control events), ``superseded``
    (valid events followed by a forget of their user in the same batch).
    ``rejections`` counts dead letters by reason.
    """

    batches: int = 0
    records: int = 0
    events: Counter[str] = field(default_factory=Counter)
    rejections: Counter[str] = field(default_factory=Counter)
    users_forgotten: int = 0
    changes: int = 0
    rechecked: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    texts_encoded: int = 0
    truncated: int = 0
    embed_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """A flat snapshot (copies of the counters)."""
        return {
            "batches": self.batches,
            "records": self.records,
            "events": dict(self.events),
            "rejections": dict(self.rejections),
            "users_forgotten": self.users_forgotten,
            "changes": self.changes,
            "rechecked": self.rechecked,
            "cache_hits": self.cache_hits,
            "cache_misses": self.cache_misses,
            "texts_encoded": self.texts_encoded,
            "truncated": self.truncated,
            "embed_seconds": self.embed_seconds,
        }


@dataclass(slots=True)
class PreparedBatch:
    """What :meth:`WorkerStage.prepare` hands to the trainer and back to :meth:`WorkerStage.finish`.

    ``stats`` and ``label_stats`` go to the trainer (``None`` when there is nothing to
    learn). ``user_ids``/``directions``/``event_ts_ms`` are the users whose profile an
    *applied* event changed (first-seen order), their normalised profiles and their latest
    event time in the batch. A rejected record never names a user here: whatever its key or
    payload says, it changes no state.
    """

    n_records: int
    dead_letters: list[tuple[SourceRecord, Rejection]]
    user_ids: list[str]
    directions: np.ndarray
    event_ts_ms: np.ndarray
    applied_ts_ms: np.ndarray
    stats: BatchStatistics | None
    label_stats: Any | None
    forgotten: list[str]
    reset: list[str]
    embed_seconds: float


@dataclass(slots=True)
class WorkerOutput:
    """What one batch produced on the users' side (see the module docstring for forgets).

    ``updated_users`` are the users whose profile this batch changed (applied events only;
    a forgotten user is in ``tombstones`` instead), plus (at most ``MIX_REWRITE_BUDGET``) users
    whose interest mix a model change altered: exactly the users whose state must be written back.
    """

    changes: list[AssignmentChange]
    tombstones: list[str]
    updated_users: list[str]
    dead_letters: list[tuple[SourceRecord, Rejection]]
    n_events: int
    n_applied: int
    n_forgotten: int
    n_rechecked: int
    embed_seconds: float
    applied_ts_ms: np.ndarray


class WorkerStage:
    """Decode → embed → fold → summarise (:meth:`prepare`), then assess → emit (:meth:`finish`)."""

    def __init__(
        self,
        settings: ClusteringSettings,
        event_embedder: EventEmbedder,
        profiles: ProfileStore,
        tracker: AssignmentTracker,
        labeler: Any | None = None,
    ) -> None:
        self.settings = settings
        self.embedder = event_embedder
        self.profiles = profiles
        self.tracker = tracker
        self.labeler = labeler
        self.counters = WorkerCounters()
        self._type_weights = dict(settings.type_weights)
        self._default_weight = float(settings.default_type_weight)
        # Users touched while the model was not initialised yet: assessed once it is.
        self._pending: dict[str, None] = {}
        # Applied events waiting for centroids to be scored into the interest mixes:
        # (user ids, ts_ms, vectors, weights) per batch.
        self._unscored: list[tuple[list[str], np.ndarray, np.ndarray, np.ndarray]] = []

    # ------------------------------------------------------------------ prepare
    def prepare(self, records: Sequence[SourceRecord], model: MiniBatchKMeans) -> PreparedBatch:
        """Decode, embed and fold a batch; summarise the touched users for the trainer."""
        counters = self.counters
        dead: list[tuple[int, Rejection]] = []  # (record index, why)
        events: list[BehaviourEvent] = []
        event_records: list[int] = []
        last_forget: dict[str, int] = {}
        n_forget_events = 0
        for i, rec in enumerate(records):
            ev = decode_event(rec.value, record_ts_ms=rec.timestamp_ms, key=rec.key)
            if type(ev) is BehaviourEvent:
                events.append(ev)
                event_records.append(i)
            elif type(ev) is ForgetEvent:
                last_forget[ev.user_id] = i
                n_forget_events += 1
            else:
                dead.append((i, ev))

        # Forgets: events before a user's last forget in the batch go with it.
        n_superseded = 0
        if last_forget:
            keep = [
                j
                for j, ev in enumerate(events)
                if ev.user_id not in last_forget or event_records[j] > last_forget[ev.user_id]
            ]
            n_superseded = len(events) - len(keep)
            events = [events[j] for j in keep]
            event_records = [event_records[j] for j in keep]
            for user in last_forget:
                self.profiles.forget(user)
                self._pending.pop(user, None)
            if self._unscored:
                self._drop_unscored(last_forget)

        # Embed.
        cache = self.embedder.cache
        hits0, misses0 = cache.hits, cache.misses
        started = time.perf_counter()
        emb = self.embedder.embed(events)
        embed_seconds = time.perf_counter() - started
        if emb.rejections:
            dead.extend((event_records[j], rejection) for j, rejection in emb.rejections)
            dead.sort(key=lambda pair: pair[0])  # dead letters in record order
        dead_letters = [(records[i], rejection) for i, rejection in dead]

        # Fold.
        ok = emb.ok_index.tolist()
        n_ok = len(ok)
        applied = [events[j] for j in ok]
        user_of_event = [ev.user_id for ev in applied]
        ts = np.fromiter((ev.ts_ms for ev in applied), dtype=np.int64, count=n_ok)
        tw, dw = self._type_weights, self._default_weight
        weights = np.fromiter((tw.get(ev.type, dw) * ev.weight for ev in applied), dtype=np.float64, count=n_ok)
        dim = self.embedder.dim
        if n_ok:
            slots = self.profiles.fold_many(user_of_event, ts, emb.vectors, weights)
            first_seen = {u: None for u in user_of_event}
            user_ids = list(first_seen)
            index = {u: j for j, u in enumerate(user_ids)}
            inv = np.fromiter((index[u] for u in user_of_event), dtype=np.int64, count=n_ok)
            event_ts = np.full(len(user_ids), np.iinfo(np.int64).min, dtype=np.int64)
            np.maximum.at(event_ts, inv, ts)
            directions = self.profiles.directions(slots)
        else:
            user_ids = []
            event_ts = np.zeros(0, dtype=np.int64)
            directions = np.zeros((0, dim), dtype=np.float32)

        # Each event's nearest centroid: the interest mixes and the labels use it.
        mixes = self.profiles.interests
        event_clusters = None
        if n_ok and model.is_initialised and (mixes is not None or self.labeler is not None):
            event_clusters = model.predict_many(emb.vectors)
        if mixes is not None and n_ok:
            if event_clusters is not None:
                mixes.fold_many(user_of_event, ts, event_clusters, weights)
            else:
                self._keep_unscored(user_of_event, ts, emb.vectors, weights)

        # Summarise for the trainer (against the current centroids).
        stats = None
        label_stats = None
        if user_ids:
            sims = model.similarities(directions) if model.is_initialised else None
            stats = model.summarise(directions, similarities=sims, point_ids=point_ids(user_ids))
            if self.labeler is not None and event_clusters is not None:
                label_stats = self.labeler.summarise(event_clusters, emb.texts, emb.keys)

        forgotten = [u for u in last_forget if u not in self.profiles]
        reset = [u for u in last_forget if u in self.profiles]

        counters.batches += 1
        counters.records += len(records)
        counters.events["applied"] += n_ok
        counters.events["rejected"] += len(dead)
        counters.events["forget"] += n_forget_events
        counters.events["superseded"] += n_superseded
        for _, rejection in dead:
            counters.rejections[rejection.reason] += 1
        counters.users_forgotten += len(last_forget)
        counters.cache_hits += cache.hits - hits0
        counters.cache_misses += cache.misses - misses0
        counters.texts_encoded += emb.n_encoded
        counters.truncated = int(getattr(self.embedder.encoder, "truncated", 0))
        counters.embed_seconds += embed_seconds

        return PreparedBatch(
            n_records=len(records),
            dead_letters=dead_letters,
            user_ids=user_ids,
            directions=directions,
            event_ts_ms=event_ts,
            applied_ts_ms=ts,
            stats=stats,
            label_stats=label_stats,
            forgotten=forgotten,
            reset=reset,
            embed_seconds=embed_seconds,
        )

    # ------------------------------------------------------------------ finish
    def finish(
        self,
        prepared: PreparedBatch,
        model: MiniBatchKMeans,
        now_ms: int,
        movement: np.ndarray | None = None,
    ) -> WorkerOutput:
        """Assess touched users against the (updated) model; recheck users of moved clusters.

        ``movement`` is the per-cluster movement of the trainer's last update; with it, at
        most ``settings.recheck_budget`` untouched users of the clusters that moved are
        re-assessed.
        """
        tracker = self.tracker
        for user in prepared.forgotten:
            tracker.forget(user)
        for user in prepared.reset:
            tracker.forget(user)
        if self._unscored and model.is_initialised:
            self._score_unscored(model)

        changes: list[AssignmentChange] = []
        n_rechecked = 0
        if model.is_warm:
            user_ids, directions, event_ts = prepared.user_ids, prepared.directions, prepared.event_ts_ms
            if self._pending:
                # Users seen before the model existed: assess them now, with their own latest event time.
                touched = set(user_ids)
                late = [u for u in self._pending if u not in touched and u in self.profiles]
                self._pending.clear()
                if late:
                    slots = self.profiles.slots_of(late)
                    user_ids = list(user_ids) + late
                    directions = np.vstack([directions, self.profiles.directions(slots)])
                    late_ts = np.fromiter((self.profiles.ref_ms(u) for u in late), dtype=np.int64, count=len(late))
                    event_ts = np.concatenate([event_ts, late_ts])
            if user_ids:
                sims = model.similarities(directions)
                changes = tracker.assess(
                    user_ids, directions, sims, model.version, event_ts, now_ms, maturity=self.maturity(user_ids)
                )
            if movement is not None and self.settings.recheck_budget > 0:
                rechecked, n_rechecked = self._recheck(model, movement, set(user_ids), now_ms)
                changes += rechecked
        else:
            self._pending.update(dict.fromkeys(prepared.user_ids))

        self.counters.changes += len(changes)
        self.counters.rechecked += n_rechecked
        updated = list(prepared.user_ids)
        mixes = self.profiles.interests
        if mixes is not None:
            # A model change dropped entries of these users' mixes: their changelog record must follow.
            for user in prepared.user_ids:
                mixes.record_written(user)
            touched = set(updated)
            updated += [u for u in mixes.take_stale_records(MIX_REWRITE_BUDGET)
                        if u not in touched and u in self.profiles]
        return WorkerOutput(
            changes=changes,
            tombstones=list(prepared.forgotten),
            updated_users=updated,
            dead_letters=prepared.dead_letters,
            n_events=prepared.n_records,
            n_applied=int(prepared.applied_ts_ms.shape[0]),
            n_forgotten=len(prepared.forgotten) + len(prepared.reset),
            n_rechecked=n_rechecked,
            embed_seconds=prepared.embed_seconds,
            applied_ts_ms=prepared.applied_ts_ms,
        )

    # ------------------------------------------------------------------ interest mixes
    def _keep_unscored(self, users: list[str], ts: np.ndarray, vectors: np.ndarray, weights: np.ndarray) -> None:
        """Keep events the model cannot score yet (the oldest go beyond ``MAX_UNSCORED``)."""
        self._unscored.append((list(users), ts.copy(), np.asarray(vectors, dtype=np.float32).copy(), weights.copy()))
        while sum(len(chunk[0]) for chunk in self._unscored) > MAX_UNSCORED and len(self._unscored) > 1:
            self._unscored.pop(0)

    def _drop_unscored(self, users: dict[str, int] | set[str]) -> None:
        """Forget the waiting events of ``users``."""
        kept = []
        for names, ts, vecs, w in self._unscored:
            keep = [j for j, u in enumerate(names) if u not in users]
            if keep:
                kept.append(([names[j] for j in keep], ts[keep], vecs[keep], w[keep]))
        self._unscored = kept

    def _score_unscored(self, model: MiniBatchKMeans) -> None:
        """Fold the waiting events into the mixes, scored against the model's first centroids."""
        mixes = self.profiles.interests
        chunks, self._unscored = self._unscored, []
        if mixes is None:
            return
        for names, ts, vecs, w in chunks:
            keep = [j for j, u in enumerate(names) if u in self.profiles]
            if keep:
                mixes.fold_many([names[j] for j in keep], ts[keep], model.predict_many(vecs[keep]), w[keep])

    def _recheck(
        self, model: MiniBatchKMeans, movement: np.ndarray, exclude: set[str], now_ms: int
    ) -> tuple[list[AssignmentChange], int]:
        """Re-assess untouched users of the clusters that moved (at most ``recheck_budget``)."""
        candidates = self.tracker.recheck_candidates(movement, self.settings.recheck_budget)
        users = [u for u in candidates if u not in exclude and u in self.profiles]
        if not users:
            return [], 0
        slots = self.profiles.slots_of(users)
        directions = self.profiles.directions(slots)
        sims = model.similarities(directions)
        event_ts = np.fromiter((self.profiles.ref_ms(u) for u in users), dtype=np.int64, count=len(users))
        changes = self.tracker.assess(
            users, directions, sims, model.version, event_ts, now_ms, maturity=self.maturity(users, slots)
        )
        return changes, len(users)

    def maturity(self, user_ids: Sequence[str], slots: np.ndarray | None = None) -> np.ndarray | None:
        """How much evidence each user's profile holds (its decayed sum of event weights), for the
        tracker's maturity margin; ``None`` when ``settings.maturity_margin`` is 0 (not needed).

        Every user must have a profile; ``slots`` (their profile slots) may be passed when known.
        """
        if self.settings.maturity_margin <= 0:
            return None
        if slots is None:
            slots = self.profiles.slots_of(user_ids)
        return self.profiles.masses(slots)
