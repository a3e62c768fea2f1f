"""Usefulness on MovieLens 100K: are the product's clusters good for recommending?

Positive ratings (4 and 5) become ``view`` events in time order, each naming the movie
(``item_id`` = movie id) whose catalog text is its title and genres. Each user's last
20% positives (by time; ``round(0.2 * n)``, users with fewer than 3 positives are not
evaluated) are held out; the rest is replayed through the product (:mod:`bench.product`).

Three recommenders, each recommending 10 movies the user has no training positive for:

- **cluster popularity (product)**: the most popular training movies among the users of
  the user's cluster (the last cluster the product emitted for the user);
- **global popularity**: the most popular training movies overall;
- **cluster popularity (offline KMeans)**: the same recommender on the clusters of
  ``sklearn.cluster.KMeans(k, n_init=10)`` fitted on the same final profile directions.

Reported: recall@10 (held-out positives found in the top 10 / held-out positives,
averaged over users), for k in {4, 8, 16, 32}. Targets: product >= 1.5x global
popularity and >= 0.9x offline KMeans.

Example (a toy log: users 1-2 like items a/b/e, users 3-4 like items c/d/f):

>>> log = [(1, "a"), (2, "a"), (3, "c"), (4, "c"), (1, "b"), (2, "e"), (3, "d"), (4, "f"),
...        (1, "e"), (2, "b"), (3, "f"), (4, "d")]
>>> split = temporal_split([(u, i, 5, t) for t, (u, i) in enumerate(log)], test_share=0.34)
>>> sorted(split.test.items())
[(1, {'e'}), (2, {'b'}), (3, {'f'}), (4, {'d'})]
>>> recs = cluster_popularity({1: 0, 2: 0, 3: 1, 4: 1}, split.train_items, n=1)
>>> recs[1], recs[4], recall_at(recs, split.test)
(['e'], ['d'], 1.0)
>>> recall_at(global_popularity(split.train_items, split.test, n=1), split.test)
0.0
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.common import Report, Stopwatch, Target

KS = (4, 8, 16, 32)
TOP_N = 10
GLOBAL_RATIO_TARGET = 1.5
OFFLINE_RATIO_TARGET = 0.9


# ----------------------------------------------------------------------------- data
def load_ratings(path: str | Path) -> list[tuple[int, str, int, int]]:
    """``u.data`` rows as ``(user, item_id, rating, ts_seconds)``."""
    rows = []
    with open(path, encoding="ascii") as f:
        for line in f:
            parts = line.split("\t")
            if len(parts) == 4:
                rows.append((int(parts[0]), parts[1], int(parts[2]), int(parts[3])))
    return rows


def load_items(item_path: str | Path, genre_path: str | Path) -> dict[str, str]:
    """``item_id -> "Title (year). Genres: A, B"`` from ``u.item`` (latin-1) and ``u.genre``."""
    genres = []
    with open(genre_path, encoding="latin-1") as f:
        for line in f:
            if "|" in line:
                name, idx = line.strip().split("|")
                genres.append((int(idx), name))
    names = [n for _, n in sorted(genres)]
    items = {}
    with open(item_path, encoding="latin-1") as f:
        for line in f:
            parts = line.rstrip("\n").split("|")
            if len(parts) < 5 + len(names):
                continue
            flags = parts[5 : 5 + len(names)]
            tags = [n for n, flag in zip(names, flags, strict=True) if flag == "1" and n != "unknown"]
            items[parts[0]] = f"{parts[1]}. Genres: {', '.join(tags)}" if tags else parts[1]
    return items


@dataclass
class Split:
    train: list[tuple[int, str, int, int]]  # time-ordered positives
    test: dict[int, set[str]]
    train_items: dict[int, list[str]] = field(default_factory=dict)


def temporal_split(ratings: Iterable[tuple[int, str, int, int]], test_share: float = 0.2) -> Split:
    """Positives (rating >= 4) in time order; each user's last ``test_share`` held out."""
    pos = sorted((r for r in ratings if r[2] >= 4), key=lambda r: (r[3], r[0], r[1]))
    per_user: dict[int, list] = defaultdict(list)
    for r in pos:
        per_user[r[0]].append(r)
    held: set[tuple[int, str]] = set()
    test: dict[int, set[str]] = {}
    for user, rows in per_user.items():
        n_test = int(round(test_share * len(rows)))
        if len(rows) < 3 or n_test == 0:
            continue
        test[user] = {r[1] for r in rows[-n_test:]}
        held.update((user, r[1]) for r in rows[-n_test:])
    train = [r for r in pos if (r[0], r[1]) not in held]
    train_items: dict[int, list[str]] = defaultdict(list)
    for r in train:
        train_items[r[0]].append(r[1])
    return Split(train, test, dict(train_items))


def to_events(train: Sequence[tuple[int, str, int, int]]) -> list[dict]:
    """Wire-format events (``item_id`` only, type ``view``) in time order."""
    return [
        {"user_id": str(u), "ts": ts * 1000, "type": "view", "item_id": item, "event_id": f"{u}-{item}"}
        for u, item, _r, ts in train
    ]


# ----------------------------------------------------------------------------- recommenders
def global_popularity(train_items: Mapping[int, Sequence[str]], users: Iterable[int], n: int = TOP_N):
    counts = Counter(i for items in train_items.values() for i in items)
    ranked = [i for i, _ in counts.most_common()]
    out = {}
    for u in users:
        seen = set(train_items.get(u, ()))
        out[u] = [i for i in ranked if i not in seen][:n]
    return out


def cluster_popularity(clusters: Mapping[int, int], train_items: Mapping[int, Sequence[str]], n: int = TOP_N):
    """Top ``n`` unseen items of each user's cluster (global popularity breaks ties / fills up)."""
    overall = Counter(i for items in train_items.values() for i in items)
    by_cluster: dict[int, Counter] = defaultdict(Counter)
    for u, c in clusters.items():
        by_cluster[c].update(train_items.get(u, ()))
    ranked_cache: dict[int, list[str]] = {}
    out = {}
    for u, c in clusters.items():
        if c not in ranked_cache:
            cnt = by_cluster[c]
            ranked_cache[c] = sorted(overall, key=lambda i: (-cnt.get(i, 0), -overall[i], i))
        seen = set(train_items.get(u, ()))
        out[u] = [i for i in ranked_cache[c] if i not in seen][:n]
    return out


def recall_at(recs: Mapping[int, Sequence[str]], test: Mapping[int, set[str]]) -> float:
    """Mean over test users of |recommended ∩ held out| / |held out| (users without recommendations count 0)."""
    vals = [len(set(recs.get(u, ())) & items) / len(items) for u, items in test.items() if items]
    return float(np.mean(vals)) if vals else float("nan")


# ----------------------------------------------------------------------------- evaluation
@dataclass
class MovieLensRow:
    k: int
    recall_product: float
    recall_global: float
    recall_offline: float
    users_emitted: float
    seconds: float
    events_per_s: float


def evaluate_k(split: Split, events: Sequence[dict], driver, k: int, *, batch_size: int = 512, seed: int = 0):
    """Replay ``events`` through ``driver`` (k clusters) and score the three recommenders."""
    from sklearn.cluster import KMeans

    last: dict[str, int] = {}
    with Stopwatch() as sw:
        for start in range(0, len(events), batch_size):
            for c in driver.process(events[start : start + batch_size]):
                last[c.user_id] = c.cluster
    users, X = driver.all_directions()
    # a user with no emitted record yet (should not happen once the model is initialised)
    # falls back to the model's nearest centroid
    missing = [i for i, u in enumerate(users) if u not in last]
    fallback = driver.model.predict_many(X[missing]) if missing else []
    clusters = {int(u): last.get(u, -1) for u in users}
    for i, lab in zip(missing, fallback, strict=True):
        clusters[int(users[i])] = int(lab)
    km = KMeans(n_clusters=k, init="k-means++", n_init=10, random_state=seed).fit(X)
    offline = {int(u): int(lab) for u, lab in zip(users, km.labels_, strict=True)}
    test = {u: items for u, items in split.test.items() if u in clusters}
    return MovieLensRow(
        k=k,
        recall_product=recall_at(cluster_popularity(clusters, split.train_items), test),
        recall_global=recall_at(global_popularity(split.train_items, test), test),
        recall_offline=recall_at(cluster_popularity(offline, split.train_items), test),
        users_emitted=1.0 - len(missing) / max(1, len(users)),
        seconds=sw.seconds,
        events_per_s=len(events) / sw.seconds if sw.seconds > 0 else float("inf"),
    )


def catalog_of(items: Mapping[str, str]):
    from stream.catalog import ItemCatalog

    catalog = ItemCatalog()
    for item_id, text in items.items():
        catalog.upsert(item_id, text)
    return catalog


def prefill_items(driver, items: Mapping[str, str], vectors: np.ndarray) -> None:
    """Put precomputed item embeddings into the driver's EmbeddingCache under the product's item keys."""
    catalog = driver.embedder.catalog
    for (item_id, _text), vec in zip(items.items(), vectors, strict=True):
        entry = catalog.get(item_id)
        driver.cache.put(f"item:{item_id}@{entry.version}", np.asarray(vec, dtype=np.float32))


@dataclass
class MovieLensData:
    split: Split
    items: dict[str, str]
    events: list[dict]


def load(data_dir: str | Path) -> MovieLensData:
    d = Path(data_dir)
    split = temporal_split(load_ratings(d / "u.data"))
    items = load_items(d / "u.item", d / "u.genre")
    return MovieLensData(split, items, to_events(split.train))


def run(
    data_dir: str | Path,
    report: Report,
    *,
    ks: Sequence[int] = KS,
    seed: int = 0,
    use_disk_cache: bool = True,
    overrides: Mapping | None = None,
):
    from bench import product

    d = Path(data_dir)
    if not (d / "u.data").exists():
        report.print(f"[yellow]MovieLens 100K not found at {d}: skipped[/]")
        return []
    data = load(d)
    encoder = product.sentence_encoder(overrides=overrides)
    with Stopwatch() as sw:
        vectors = product.corpus_vectors(
            list(data.items.values()), encoder, label="movielens-items", use_disk_cache=use_disk_cache
        )
    report.print(
        f"[dim]MovieLens: {len(data.split.train):,} training positives of {len(data.split.train_items):,} users, "
        f"{sum(len(v) for v in data.split.test.values()):,} held out ({len(data.split.test):,} users), "
        f"{len(data.items):,} catalog items embedded in {sw.seconds:.1f} s; the product's EmbeddingCache is "
        "pre-filled with them (its embedder still runs on every event)[/]"
    )
    rows = []
    for k in ks:
        driver = product.make_driver(
            n_clusters=k, encoder=encoder, seed=seed, catalog=catalog_of(data.items), **dict(overrides or {})
        )
        prefill_items(driver, data.items, vectors)
        rows.append(evaluate_k(data.split, data.events, driver, k, seed=seed))
    table = []
    for r in rows:
        table.append(
            [
                r.k,
                r.recall_product,
                r.recall_global,
                r.recall_offline,
                r.recall_product / r.recall_global,
                r.recall_product / r.recall_offline,
                f"{r.users_emitted:.1%}",
                r.events_per_s,
            ]
        )
        report.check(
            "movielens",
            Target(f"k={r.k}: recall / global popularity", r.recall_product / r.recall_global, 1.5),
        )
        report.check(
            "movielens",
            Target(f"k={r.k}: recall / offline KMeans rec", r.recall_product / r.recall_offline, 0.9),
        )
    report.table(
        "MovieLens 100K — recall@10 of cluster-popularity recommenders (temporal split, last 20% of positives)",
        [
            "k",
            "product clusters",
            "global popularity",
            "offline KMeans clusters",
            "x global",
            "x offline",
            "users with a record",
            "replay events/s",
        ],
        table,
        caption="product clusters = last emitted cluster per user; offline KMeans = sklearn KMeans(k, n_init=10) "
        "on the same final profile directions; seen = the user's training positives.",
    )
    return rows
