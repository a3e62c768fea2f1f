"""Simulated users over a labelled corpus, with the ground truth of their interests.

:func:`simulate` invents ``n_users`` users. Each has a *primary* topic (``primary_share``
of their events), a *secondary* topic (``secondary_share``) and reads random other topics
for the rest. A ``drift_fraction`` of the users (those with at least two events) switch
their primary topic to another topic midway through their events. Events are wire-format
dicts (see :mod:`stream.events`), in global time order, ready to be produced to the events
topic; the :class:`Scenario` keeps the truth (:class:`UserTruth`) and the true topic of every
event, for the quality benchmark and the fault tests.

Deterministic for a seed (one :class:`numpy.random.Generator`).

Example:

>>> from stream.corpora import demo_corpus
>>> scenario = simulate(demo_corpus(), n_users=20, mean_events_per_user=12, seed=7)
>>> event = scenario.events[0]
>>> sorted(event)
['event_id', 'text', 'ts', 'type', 'user_id']
>>> all(a["ts"] <= b["ts"] for a, b in zip(scenario.events, scenario.events[1:]))
True
>>> truth = scenario.truth["user-0003"]
>>> scenario.primary_at("user-0003", 0) == truth.primary
True
>>> simulate(demo_corpus(), n_users=20, mean_events_per_user=12, seed=7).events == scenario.events
True
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from stream.corpora import Corpus, Document, demo_corpus

__all__ = [
    "DEFAULT_EVENT_TYPE_MIX",
    "Corpus",
    "Document",
    "Scenario",
    "UserTruth",
    "demo_corpus",
    "search_query",
    "simulate",
]

#: Relative frequency of each event type.
DEFAULT_EVENT_TYPE_MIX: Mapping[str, float] = {
    "view": 0.50,
    "click": 0.20,
    "like": 0.10,
    "search": 0.10,
    "purchase": 0.05,
    "post": 0.05,
}
CONTENT_MODES = ("text", "item_id", "both")
_WORD = re.compile(r"[\w'-]+")


@dataclass
class UserTruth:
    """What a simulated user is really interested in, and when that changed."""

    user_id: str
    primary: str
    secondary: str
    switch_to: str | None = None
    switch_ts_ms: int | None = None
    switch_event_index: int | None = None

    def primary_at(self, ts_ms: int) -> str:
        """The primary topic at event time ``ts_ms``."""
        if self.switch_to is not None and self.switch_ts_ms is not None and ts_ms >= self.switch_ts_ms:
            return self.switch_to
        return self.primary

    @property
    def final_primary(self) -> str:
        """The primary topic after the last event."""
        return self.switch_to if self.switch_to is not None else self.primary


@dataclass
class Scenario:
    """Events (wire-format dicts, in time order) and the truth behind them."""

    events: list[dict]
    truth: dict[str, UserTruth]
    #: The true topic of the document behind each event (parallel to ``events``).
    event_topics: list[str] = field(default_factory=list)

    def primary_at(self, user_id: str, ts_ms: int) -> str:
        """The user's primary topic at event time ``ts_ms``."""
        return self.truth[user_id].primary_at(ts_ms)

    @property
    def drifting_users(self) -> list[str]:
        """Users whose primary topic switches."""
        return [u for u, t in self.truth.items() if t.switch_to is not None]

    def to_jsonl(self, path: str | Path) -> Path:
        """Write the events, one JSON object per line."""
        path = Path(path)
        with path.open("w", encoding="utf-8") as out:
            for event in self.events:
                out.write(json.dumps(event, ensure_ascii=False) + "\n")
        return path

    def truth_to_json(self, path: str | Path) -> Path:
        """Write ``{user_id: UserTruth fields}`` as one JSON object."""
        path = Path(path)
        path.write_text(json.dumps({u: asdict(t) for u, t in self.truth.items()}, indent=1) + "\n", encoding="utf-8")
        return path

    @staticmethod
    def read_truth(path: str | Path) -> dict[str, UserTruth]:
        """Read what :meth:`truth_to_json` wrote."""
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        return {u: UserTruth(**fields) for u, fields in raw.items()}


def search_query(text: str, max_words: int = 4) -> str:
    """A short lower-case search query from a document text (its first words).

    >>> search_query("Cast-iron skillet, 12-inch, pre-seasoned")
    'cast-iron skillet 12-inch pre-seasoned'
    """
    return " ".join(_WORD.findall(text.lower())[:max_words]) or text[:40]


def _other(rng: np.random.Generator, topics: list[str], *avoid: str) -> str:
    """A random topic not in ``avoid``; with too few topics, the later ``avoid`` entries are allowed."""
    for keep in range(len(avoid), -1, -1):
        choices = [t for t in topics if t not in avoid[:keep]]
        if choices:
            return choices[int(rng.integers(len(choices)))]
    raise ValueError("no topics")


def simulate(
    corpus: Corpus,
    *,
    n_users: int,
    mean_events_per_user: float = 20.0,
    primary_share: float = 0.7,
    secondary_share: float = 0.2,
    drift_fraction: float = 0.2,
    start_ts_ms: int = 1_700_000_000_000,
    duration_s: float = 3600.0,
    event_type_mix: Mapping[str, float] | None = None,
    content: str = "text",
    seed: int = 0,
) -> Scenario:
    """Simulate users reading ``corpus``; see the module docstring.

    ``content`` says what events carry: ``"text"`` (the document text), ``"item_id"`` (only the
    id, to be resolved through the catalog) or ``"both"``. Search events always carry a short
    query (:func:`search_query`) instead. Events per user: Poisson(``mean_events_per_user``),
    at least 1; timestamps uniform over ``duration_s`` from ``start_ts_ms``. Drifting users switch
    at their middle event (``switch_event_index = n // 2``) to a topic that is neither their
    primary nor their secondary one (when the corpus has three topics or more); ``switch_ts_ms`` is
    the time of that event, and other events of the user in the same millisecond count as after it.
    """
    if content not in CONTENT_MODES:
        raise ValueError(f"content must be one of {CONTENT_MODES}, got {content!r}")
    if n_users < 0 or mean_events_per_user <= 0 or duration_s < 0:
        raise ValueError("n_users >= 0, mean_events_per_user > 0 and duration_s >= 0 are required")
    if not (0 <= primary_share and 0 <= secondary_share and primary_share + secondary_share <= 1):
        raise ValueError("primary_share and secondary_share must be >= 0 with a sum <= 1")
    if not 0 <= drift_fraction <= 1:
        raise ValueError("drift_fraction must be in [0, 1]")
    by_topic = corpus.by_topic()
    topics = list(by_topic)
    if not topics:
        raise ValueError("the corpus is empty")
    mix = dict(event_type_mix or DEFAULT_EVENT_TYPE_MIX)
    kinds = list(mix)
    probs = np.array([mix[k] for k in kinds], dtype=float)
    if (probs < 0).any() or probs.sum() <= 0:
        raise ValueError("event_type_mix weights must be >= 0 with a positive sum")
    probs /= probs.sum()

    rng = np.random.default_rng(seed)
    width = max(4, len(str(max(n_users - 1, 0))))
    counts = np.maximum(1, rng.poisson(mean_events_per_user, size=n_users))
    drifting = set(rng.permutation(n_users)[: round(drift_fraction * n_users)].tolist())
    span_ms = int(duration_s * 1000)

    truth: dict[str, UserTruth] = {}
    rows: list[tuple[int, int, int, dict, str]] = []
    for u in range(n_users):
        user_id = f"user-{u:0{width}d}"
        n = int(counts[u])
        primary = topics[int(rng.integers(len(topics)))]
        secondary = _other(rng, topics, primary)
        user = UserTruth(user_id=user_id, primary=primary, secondary=secondary)
        if u in drifting and n >= 2 and len(topics) >= 2:
            user.switch_to = _other(rng, topics, primary, secondary)
            user.switch_event_index = n // 2
        times = np.sort(rng.integers(0, span_ms + 1, size=n)) + start_ts_ms
        draws = rng.random(n)
        type_ids = rng.choice(len(kinds), size=n, p=probs)
        for i in range(n):
            ts = int(times[i])
            current = user.switch_to if user.switch_event_index is not None and i >= user.switch_event_index else primary
            if i == user.switch_event_index:
                user.switch_ts_ms = ts
            if draws[i] < primary_share:
                topic = current
            elif draws[i] < primary_share + secondary_share:
                topic = secondary
            else:
                topic = _other(rng, topics, current, secondary)
            docs = by_topic[topic]
            doc: Document = docs[int(rng.integers(len(docs)))]
            kind = kinds[int(type_ids[i])]
            event: dict = {"user_id": user_id, "ts": ts, "type": kind, "event_id": f"{user_id}-{i}"}
            if kind == "search":
                event["text"] = search_query(doc.text)
            else:
                if content in ("text", "both"):
                    event["text"] = doc.text
                if content in ("item_id", "both"):
                    event["item_id"] = doc.item_id
            rows.append((ts, u, i, event, topic))
        truth[user_id] = user

    rows.sort(key=lambda row: row[:3])
    return Scenario(events=[r[3] for r in rows], truth=truth, event_topics=[r[4] for r in rows])
