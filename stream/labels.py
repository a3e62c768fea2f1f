"""Human-readable cluster labels: decayed class-based TF-IDF over the users' texts.

This is BERTopic's online c-TF-IDF with forgetting. Per cluster we keep decayed
term counts over a bounded vocabulary; a term's score in a cluster is::

    score(t, c) = tf(t, c) * log(1 + A / f(t))

where ``tf(t, c)`` is the term's share of the cluster's (decayed) words, ``A`` the
mean number of words per cluster and ``f(t)`` the term's count over all clusters:
words frequent in one cluster but rare elsewhere win. Like the k-means, updates
are split into :meth:`ClusterLabeler.summarise` (additive, mergeable
:class:`LabelStatistics`) and :meth:`ClusterLabeler.apply` (decay, then add).

The tokeniser is Unicode-aware (any script with word separators: Latin, Cyrillic,
Greek, ...), lowercases, and drops stop words, numbers and one-character tokens;
runs of Chinese/Japanese characters, which have no spaces, become character bigrams.

Example:

>>> labeler = ClusterLabeler(n_clusters=2, top_n=2)
>>> stats = labeler.summarise(
...     [0, 0, 1, 1],
...     ["Football match tonight", "the football league match",
...      "new python release", "python packaging release notes"])
>>> labeler.apply(stats)
>>> labeler.terms(0), labeler.terms(1)
(['football', 'match'], ['python', 'release'])
>>> tokenize("Ракета стартовала в 2024 году!")
['ракета', 'стартовала', 'году']
"""

from __future__ import annotations

import functools
import operator
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec
import numpy as np

__all__ = ["ENGLISH_STOP_WORDS", "ClusterLabeler", "LabelStatistics", "tokenize"]

_STATS_MAGIC = b"ISLS"
_STATE_MAGIC = b"ISLB"
_FORMAT_VERSION = 1

ENGLISH_STOP_WORDS = frozenset(
    """
    a about above after again against all almost also although always am among an and another any anyone
    anything are aren around as at back be became because become been before being below between both but
    by can cannot could couldn did didn do does doesn doing don done down during each either else enough
    etc even ever every few for from further get gets got had hadn has hasn have haven having he her here
    hers herself him himself his how however i if in into is isn it its itself just least less let like
    ll made make many may me might mine more most much must mustn my myself near need neither never new
    no nor not now of off often on once one only or other others otherwise our ours ourselves out over
    own per perhaps please put quite rather re really said same say says see seem seemed seems several
    shall shan she should shouldn since so some something sometimes still such than that the their theirs
    them themselves then there therefore these they thing things this those though through thus to too
    toward towards under until up upon us use used using ve very via was wasn way we well were weren what
    whatever when where whether which while who whom whose why will with within without won would wouldn
    yet you your yours yourself yourselves
    """.split()
)

_WORD = re.compile(r"[^\W_]+")
#: Texts without a key are cached only when at most this long (keys bound the memory otherwise).
_CACHE_TEXT_CHARS = 512
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")


def tokenize(text: str, stop_words: frozenset[str] | set[str] = ENGLISH_STOP_WORDS) -> list[str]:
    """Split ``text`` into lowercased terms (see the module docstring for the rules)."""
    lowered = text.lower()
    words = _WORD.findall(lowered)
    if not _CJK.search(lowered):
        # Fast path, same rules as _plain: a word of alphanumerics that is not all numeric has a letter.
        return [
            w for w in words if len(w) > 1 and w not in stop_words and (not w.isnumeric() or _has_alpha(w))
        ]
    out: list[str] = []
    for word in words:
        if _CJK.search(word):
            pos = 0
            for run in _CJK.finditer(word):
                out.extend(_plain(word[pos : run.start()], stop_words))
                chars = run.group()
                if len(chars) == 1:
                    out.append(chars)
                else:
                    out.extend(chars[i : i + 2] for i in range(len(chars) - 1))
                pos = run.end()
            out.extend(_plain(word[pos:], stop_words))
        else:
            out.extend(_plain(word, stop_words))
    return out


def _has_alpha(word: str) -> bool:
    return any(ch.isalpha() for ch in word)


def _plain(word: str, stop_words: frozenset[str] | set[str]) -> list[str]:
    if len(word) < 2 or word in stop_words or not _has_alpha(word):
        return []
    return [word]


class _LabelWire(msgspec.Struct):
    n_clusters: int
    counts: dict[int, dict[str, float]]


class LabelStatistics:
    """Term counts per cluster for one batch of texts; additive and mergeable."""

    __slots__ = ("n_clusters", "counts")

    def __init__(self, n_clusters: int, counts: dict[int, dict[str, float]] | None = None) -> None:
        self.n_clusters = int(n_clusters)
        self.counts: dict[int, dict[str, float]] = counts if counts is not None else {}

    def __add__(self, other: LabelStatistics) -> LabelStatistics:
        if not isinstance(other, LabelStatistics):
            return NotImplemented
        if other.n_clusters != self.n_clusters:
            raise ValueError("cannot merge label statistics for different numbers of clusters")
        merged: dict[int, dict[str, float]] = {c: dict(t) for c, t in self.counts.items()}
        for c, terms in other.counts.items():
            into = merged.setdefault(c, {})
            for t, v in terms.items():
                into[t] = into.get(t, 0.0) + v
        return LabelStatistics(self.n_clusters, merged)

    @classmethod
    def merge(cls, stats: Iterable[LabelStatistics]) -> LabelStatistics:
        items = list(stats)
        if not items:
            raise ValueError("nothing to merge")
        return functools.reduce(operator.add, items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelStatistics) and (self.n_clusters, self.counts) == (
            other.n_clusters,
            other.counts,
        )

    def to_bytes(self) -> bytes:
        """Magic ``ISLS``, a format version byte, then msgpack."""
        return (
            _STATS_MAGIC
            + bytes([_FORMAT_VERSION])
            + msgspec.msgpack.encode(_LabelWire(self.n_clusters, self.counts))
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> LabelStatistics:
        if data[:4] != _STATS_MAGIC:
            raise ValueError("not a LabelStatistics record")
        if data[4] != _FORMAT_VERSION:
            raise ValueError(f"unsupported LabelStatistics format version {data[4]}")
        wire = msgspec.msgpack.decode(data[5:], type=_LabelWire)
        return cls(wire.n_clusters, wire.counts)


class _LabelerWire(msgspec.Struct):
    params: dict[str, Any]
    stop_words: list[str]
    terms: list[str]
    rows: bytes
    cols: bytes
    values: bytes


class ClusterLabeler:
    """Decayed c-TF-IDF label terms per cluster.

    Parameters
    ----------
    n_clusters
        Number of clusters.
    half_life
        Number of applied batches after which a term count is halved.
    max_vocab
        Vocabulary bound: when exceeded, the terms with the lowest total count are pruned
        (down to 90% of the bound, so pruning does not run on every batch).
    top_n
        Terms returned by :meth:`terms`.
    stop_words
        Terms never counted; ``None`` means the built-in English list.
    min_count
        A term whose decayed count in a cluster is below this is not a label of that cluster
        any more (and terms below it everywhere are dropped from the vocabulary).
    token_cache_size
        Tokenised texts kept between batches (by key; 0 disables the cache).
    """

    def __init__(
        self,
        n_clusters: int,
        half_life: float = 50.0,
        max_vocab: int = 20_000,
        top_n: int = 5,
        stop_words: Iterable[str] | None = None,
        min_count: float = 0.01,
        token_cache_size: int = 50_000,
    ) -> None:
        if n_clusters < 1:
            raise ValueError("n_clusters must be >= 1")
        if not half_life > 0:
            raise ValueError("half_life must be positive")
        self.n_clusters = int(n_clusters)
        self.half_life = float(half_life)
        self.max_vocab = int(max_vocab)
        self.top_n = int(top_n)
        self.stop_words = (
            ENGLISH_STOP_WORDS if stop_words is None else frozenset(s.lower() for s in stop_words)
        )
        self.min_count = float(min_count)
        self._vocab: dict[str, int] = {}
        self._terms: list[str] = []
        self._counts = np.zeros((self.n_clusters, 256), dtype=np.float64)
        #: Tokenised texts by key (see :meth:`summarise`); a cache, not state (never serialised).
        self.token_cache_size = int(token_cache_size)
        self._token_cache: dict[str, tuple[tuple[str, int], ...]] = {}
        self._text_token_cache: dict[str, tuple[tuple[str, int], ...]] = {}

    @property
    def vocab_size(self) -> int:
        return len(self._terms)

    # ------------------------------------------------------------------ updates
    def summarise(
        self, cluster_ids: Sequence[int], texts: Sequence[str], keys: Sequence[str] | None = None
    ) -> LabelStatistics:
        """Count the terms of each text under its cluster (ids outside ``0..k-1`` are skipped).

        ``keys`` (optional, one per text) name the texts: equal keys must mean equal texts
        (the embedding cache keys do). A text is tokenised once per batch, and once per key
        across batches while its key stays in a bounded cache; the counts are the same as
        tokenising every text.
        """
        if len(cluster_ids) != len(texts):
            raise ValueError(f"{len(cluster_ids)} cluster ids but {len(texts)} texts")
        if keys is not None and len(keys) != len(texts):
            raise ValueError(f"{len(keys)} keys but {len(texts)} texts")
        n_clusters = self.n_clusters
        if isinstance(cluster_ids, np.ndarray):
            cluster_ids = cluster_ids.tolist()
        # Each distinct (cluster, text) once, with its multiplicity, in first-seen order: the
        # terms then enter each cluster's counts in the same order as text by text.
        pairs: dict[tuple[int, str], int] = {}
        text_of: dict[str, str] = {}
        for j, (cluster, text) in enumerate(zip(cluster_ids, texts, strict=True)):
            c = int(cluster)
            if not (0 <= c < n_clusters) or not text:
                continue
            name = text if keys is None else keys[j]
            pair = (c, name)
            count = pairs.get(pair)
            if count is None:
                pairs[pair] = 1
                text_of[name] = text
            else:
                pairs[pair] = count + 1
        # A cluster takes its place at its first text, even one without terms (as text by text).
        per_cluster: dict[int, dict[str, int]] = {}
        for (c, name), mult in pairs.items():
            counts = per_cluster.get(c)
            if counts is None:
                counts = per_cluster[c] = {}
            get = counts.get
            for term, n in self._term_counts(name, text_of[name], keyed=keys is not None):
                counts[term] = get(term, 0) + n * mult
        return LabelStatistics(
            self.n_clusters,
            {c: {t: float(v) for t, v in cnt.items()} for c, cnt in per_cluster.items() if cnt},
        )

    def _term_counts(self, name: str, text: str, *, keyed: bool) -> tuple[tuple[str, int], ...]:
        """``(term, count)`` of a text in first-occurrence order; cached by key (or by short text)."""
        cache = self._token_cache if keyed else self._text_token_cache
        hit = cache.get(name)
        if hit is not None:
            return hit
        terms = tuple(Counter(tokenize(text, self.stop_words)).items())
        limit = self.token_cache_size
        if limit > 0 and (keyed or len(text) <= _CACHE_TEXT_CHARS):
            if len(cache) >= limit:
                del cache[next(iter(cache))]  # the oldest entry
            cache[name] = terms
        return terms

    def apply(self, stats: LabelStatistics, batches: int = 1) -> None:
        """Decay every count by ``batches`` batches (those ``stats`` merges), then add ``stats``; keep the
        vocabulary bounded."""
        if stats.n_clusters != self.n_clusters:
            raise ValueError(
                f"statistics are for {stats.n_clusters} clusters, the labeler has {self.n_clusters}"
            )
        self._counts *= 0.5 ** (batches / self.half_life)
        rows: list[int] = []
        cols: list[int] = []
        vals: list[float] = []
        for cluster, terms in stats.counts.items():
            for term, value in terms.items():
                col = self._vocab.get(term)
                if col is None:
                    col = self._add_term(term)
                rows.append(cluster)
                cols.append(col)
                vals.append(value)
        if rows:
            np.add.at(self._counts, (np.asarray(rows), np.asarray(cols)), np.asarray(vals))
        self._maybe_prune()

    def reset(self, clusters: Iterable[int]) -> None:
        """Forget the counts of some clusters (e.g. after the k-means reseeded them)."""
        for c in clusters:
            self._counts[int(c)] = 0.0

    def _add_term(self, term: str) -> int:
        col = len(self._terms)
        if col == self._counts.shape[1]:
            grown = np.zeros((self.n_clusters, 2 * col), dtype=np.float64)
            grown[:, :col] = self._counts
            self._counts = grown
        self._vocab[term] = col
        self._terms.append(term)
        return col

    def _maybe_prune(self) -> None:
        n = len(self._terms)
        if n == 0:
            return
        totals = self._counts[:, :n].sum(axis=0)
        dead = int((totals < self.min_count).sum())
        if n <= self.max_vocab and dead <= n // 10:
            return
        keep = totals >= self.min_count
        target = int(self.max_vocab * 0.9) if n > self.max_vocab else n
        if keep.sum() > target:
            # Highest totals survive; ties broken by age (older terms first).
            order = np.lexsort((np.arange(n), -totals))[:target]
            keep = np.zeros(n, dtype=bool)
            keep[order] = True
        cols = np.flatnonzero(keep)
        counts = np.zeros((self.n_clusters, max(256, cols.shape[0])), dtype=np.float64)
        counts[:, : cols.shape[0]] = self._counts[:, cols]
        self._counts = counts
        self._terms = [self._terms[i] for i in cols]
        self._vocab = {t: i for i, t in enumerate(self._terms)}

    # ------------------------------------------------------------------ reads
    def _scores(self) -> np.ndarray:
        n = len(self._terms)
        counts = self._counts[:, :n]
        totals = counts.sum(axis=0)
        words = counts.sum(axis=1)
        non_empty = int((words > 0).sum())
        if n == 0 or non_empty == 0:
            return np.zeros((self.n_clusters, n))
        mean_words = float(words.sum()) / non_empty
        idf = np.log1p(mean_words / np.maximum(totals, 1e-300))
        tf = counts / np.maximum(words, 1e-300)[:, None]
        scores = tf * idf[None, :]
        scores[counts < self.min_count] = 0.0
        return scores

    def terms(self, cluster: int) -> list[str]:
        """The ``top_n`` label terms of a cluster, best first (fewer, or none, for a quiet cluster)."""
        return self.all_terms().get(int(cluster), [])

    def all_terms(self) -> dict[int, list[str]]:
        """Label terms of every cluster ``0..k-1``."""
        scores = self._scores()
        out: dict[int, list[str]] = {}
        for c in range(self.n_clusters):
            row = scores[c]
            if row.shape[0] == 0:
                out[c] = []
                continue
            top = np.lexsort((np.arange(row.shape[0]), -row))[: self.top_n]
            out[c] = [self._terms[i] for i in top if row[i] > 0]
        return out

    def count(self, cluster: int, term: str) -> float:
        """Decayed count of ``term`` in ``cluster`` (0 if unknown)."""
        col = self._vocab.get(term)
        return 0.0 if col is None else float(self._counts[int(cluster), col])

    # ------------------------------------------------------------------ state
    def _params(self) -> dict[str, Any]:
        """The hyper-parameters a state records (the token cache is not state)."""
        return {
            "n_clusters": self.n_clusters,
            "half_life": self.half_life,
            "max_vocab": self.max_vocab,
            "top_n": self.top_n,
            "min_count": self.min_count,
        }

    def to_bytes(self) -> bytes:
        """Full state (params, vocabulary, sparse counts): magic ``ISLB``, version byte, msgpack."""
        n = len(self._terms)
        counts = self._counts[:, :n]
        r, c = np.nonzero(counts)
        wire = _LabelerWire(
            params=self._params(),
            stop_words=sorted(self.stop_words),
            terms=list(self._terms),
            rows=r.astype("<i4").tobytes(),
            cols=c.astype("<i4").tobytes(),
            values=counts[r, c].astype("<f8").tobytes(),
        )
        return _STATE_MAGIC + bytes([_FORMAT_VERSION]) + msgspec.msgpack.encode(wire)

    @classmethod
    def from_bytes(cls, data: bytes) -> ClusterLabeler:
        if data[:4] != _STATE_MAGIC:
            raise ValueError("not a ClusterLabeler state")
        if data[4] != _FORMAT_VERSION:
            raise ValueError(f"unsupported ClusterLabeler format version {data[4]}")
        wire = msgspec.msgpack.decode(data[5:], type=_LabelerWire)
        labeler = cls(stop_words=wire.stop_words, **wire.params)
        for term in wire.terms:
            labeler._add_term(term)
        rows = np.frombuffer(wire.rows, dtype="<i4").astype(np.int64)
        cols = np.frombuffer(wire.cols, dtype="<i4").astype(np.int64)
        labeler._counts[rows, cols] = np.frombuffer(wire.values, dtype="<f8")
        return labeler

    def load_state(self, other: ClusterLabeler) -> dict[str, tuple[Any, Any]]:
        """Continue from ``other``'s term counts, with this labeler's parameters.

        Takes a copy of the vocabulary and the decayed counts; keeps this labeler's
        parameters (half-life, vocabulary bound, top terms, minimum count, stop words), which
        take effect from the next batch, and its token cache (made with its own stop words).
        Returns those that differ, as ``{name: (other's, this labeler's)}``. Raises
        ``ValueError`` if ``n_clusters`` differs.
        """
        if other.n_clusters != self.n_clusters:
            raise ValueError(f"cannot continue a labeler of {other.n_clusters} clusters with {self.n_clusters}")
        mine = {**self._params(), "stop_words": self.stop_words}
        theirs = {**other._params(), "stop_words": other.stop_words}
        self._vocab = dict(other._vocab)
        self._terms = list(other._terms)
        self._counts = other._counts.copy()
        return {name: (theirs[name], value) for name, value in mine.items() if theirs[name] != value}
