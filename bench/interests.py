"""Interest mixes: do several interests per user recommend better, find both topics, stay calm, stay cheap?

Four measurements of the per-user interest mixes (:mod:`stream.interests`), each through
the real product path (:mod:`bench.product`, ``Pipeline.process_batch``):

- **Recommending (MovieLens 100K)**, the split and events of :mod:`bench.movielens`: a
  *multi-interest* recommender (for each interest cluster of the user's last record, the
  popular unseen training movies among the users holding that cluster as an interest,
  weighted by their share; the lists interleaved in proportion to the user's shares,
  D'Hondt style) against the *single-cluster* recommender of :mod:`bench.movielens` (the
  user's primary cluster) and global popularity; recall@10 at k = 8 / 16 / 32. Target:
  multi >= 1.1x single-cluster at k = 16 and 32.
- **Finding both interests (AG News, MIND)**, the simulated readers of :mod:`bench.quality`
  (70 % primary topic, 20 % secondary, 10 % others): a topic's cluster is where most
  never-switched readers of that primary topic end up (as the quality benchmark maps it);
  among never-switched users with at least 10 events, the share whose last interest set holds
  the cluster of their primary topic, of their secondary one, and of both; and the same by
  events per user. Targets: >= 0.95 primary, >= 0.8 secondary.
- **Stability**: interest-set changes (records whose set differs from the user's previous
  record, first records not counted) per event of never-switched users, next to their
  primary churn (best-cluster changes beyond the first per event), and how many clusters
  were given a new centre (the mixes drop their weight: see ``on_model_change``).
- **Cost**: replay events/s of MovieLens with mixes on and off (``max_interests = 0``; best
  of two runs each; target >= 0.9x) and bytes per user (memory, changelog record growth).

Example (the multi-interest recommender on a toy log):

>>> train = {1: ["a", "b"], 2: ["a", "c"], 3: ["d", "e"], 4: ["d", "f"], 5: ["a", "d"]}
>>> mixes = {1: [(0, 1.0)], 2: [(0, 1.0)], 3: [(1, 1.0)], 4: [(1, 1.0)], 5: [(0, 0.5), (1, 0.5)]}
>>> recs = mix_recommend(mixes, train, n=4)
>>> recs[5]
['b', 'e', 'c', 'f']
>>> interleave([(0, 0.75), (1, 0.25)], {0: ["x1", "x2", "x3"], 1: ["y1", "y2"]}, set(), n=4)
['x1', 'x2', 'x3', 'y1']
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.common import Report, Stopwatch, Target

KS = (8, 16, 32)
TOP_N = 10
MULTI_RATIO_TARGET = 1.1
PRIMARY_FOUND_TARGET = 0.95
SECONDARY_FOUND_TARGET = 0.8
SPEED_RATIO_TARGET = 0.9
MIN_EVENTS = 10


# ----------------------------------------------------------------------------- recommender
def interleave(
    shares: Sequence[tuple[int, float]], ranked: Mapping[int, Sequence[str]], seen: set[str], n: int = TOP_N
) -> list[str]:
    """``n`` items from the clusters' ranked lists, each cluster's turn in proportion to its share.

    The next item comes from the cluster with the largest ``share / (items taken + 1)``
    (D'Hondt); items already seen or taken are skipped; an exhausted cluster drops out.
    """
    taken = {c: 0 for c, _ in shares}
    cursor = {c: 0 for c, _ in shares}
    live = [c for c, s in shares if s > 0 and c in ranked]
    share = dict(shares)
    out: list[str] = []
    chosen: set[str] = set()
    while len(out) < n and live:
        c = max(live, key=lambda j: (share[j] / (taken[j] + 1), share[j], -j))
        items = ranked[c]
        while cursor[c] < len(items) and (items[cursor[c]] in seen or items[cursor[c]] in chosen):
            cursor[c] += 1
        if cursor[c] >= len(items):
            live.remove(c)
            continue
        item = items[cursor[c]]
        cursor[c] += 1
        taken[c] += 1
        chosen.add(item)
        out.append(item)
    return out


def mix_recommend(
    mixes: Mapping[int, Sequence[tuple[int, float]]], train_items: Mapping[int, Sequence[str]], n: int = TOP_N
) -> dict[int, list[str]]:
    """Top ``n`` unseen items per user, interleaving the popular items of each of their interest clusters.

    A cluster's popularity counts the training items of every user holding it as an
    interest, weighted by that user's share; global popularity breaks ties and fills up.
    """
    overall = Counter(i for items in train_items.values() for i in items)
    by_cluster: dict[int, Counter] = defaultdict(Counter)
    for u, shares in mixes.items():
        items = train_items.get(u, ())
        for c, s in shares:
            cnt = by_cluster[c]
            for i in items:
                cnt[i] += s
    ranked = {
        c: sorted(overall, key=lambda i, cnt=cnt: (-cnt.get(i, 0.0), -overall[i], i)) for c, cnt in by_cluster.items()
    }
    out = {}
    for u, shares in mixes.items():
        seen = set(train_items.get(u, ()))
        recs = interleave(shares, ranked, seen, n)
        if len(recs) < n:  # fill up with global popularity
            have = set(recs)
            recs += [i for i, _ in overall.most_common() if i not in seen and i not in have][: n - len(recs)]
        out[u] = recs
    return out


# ----------------------------------------------------------------------------- replay helpers
@dataclass
class ReplayLog:
    """What a replay published, per user, and what it cost."""

    last: dict[str, object] = field(default_factory=dict)  # user -> last AssignmentChange
    records: dict[str, list[tuple[int, int, int | None, tuple[int, ...]]]] = field(
        default_factory=lambda: defaultdict(list)
    )  # user -> [(events seen, cluster, previous cluster, interest set)]
    event_count: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    reseeded: int = 0
    seconds: float = 0.0
    events: int = 0


def replay(driver, events: Sequence[dict], batch_size: int) -> ReplayLog:
    """Run ``events`` through the driver's pipeline in micro-batches; log every record."""
    log = ReplayLog()
    pipe = driver.pipeline
    for start in range(0, len(events), batch_size):
        batch = events[start : start + batch_size]
        records = driver.records(batch)
        now = max(int(e["ts"]) for e in batch)
        with Stopwatch() as sw:
            result = pipe.process_batch(records, now_ms=now)
        log.seconds += sw.seconds
        log.reseeded += len(result.reseeded)
        for e in batch:
            log.event_count[e["user_id"]] += 1
        for c in result.changes:
            log.last[c.user_id] = c
            log.records[c.user_id].append(
                (log.event_count[c.user_id], c.cluster, c.previous_cluster, tuple(sorted(i.cluster for i in c.interests)))
            )
    log.events = len(events)
    return log


# ----------------------------------------------------------------------------- MovieLens
@dataclass
class RecommendRow:
    k: int
    multi: float
    single: float
    global_pop: float
    mean_interests: float
    events_per_s: float


def movielens(data_dir: Path, report: Report, *, ks: Sequence[int] = KS, seed: int = 0, use_disk_cache: bool = True,
              overrides: Mapping | None = None, speed_k: int = 16) -> list[RecommendRow]:
    from bench import product
    from bench.movielens import (
        catalog_of,
        cluster_popularity,
        global_popularity,
        load,
        prefill_items,
        recall_at,
    )

    if not (data_dir / "u.data").exists():
        report.print(f"[yellow]MovieLens 100K not found at {data_dir}: skipped[/]")
        return []
    data = load(data_dir)
    encoder = product.sentence_encoder()
    vectors = product.corpus_vectors(list(data.items.values()), encoder, label="movielens-items",
                                     use_disk_cache=use_disk_cache)

    def driver_for(k: int, **extra):
        d = product.make_driver(n_clusters=k, encoder=encoder, seed=seed, catalog=catalog_of(data.items),
                                **{**dict(overrides or {}), **extra})
        prefill_items(d, data.items, vectors)
        return d

    rows = []
    for k in ks:
        driver = driver_for(k)
        log = replay(driver, data.events, batch_size=512)
        clusters = {int(u): c.cluster for u, c in log.last.items()}
        mixes = {int(u): [(i.cluster, i.share) for i in c.interests] or [(c.cluster, 1.0)] for u, c in log.last.items()}
        test = {u: items for u, items in data.split.test.items() if u in clusters}
        rows.append(RecommendRow(
            k=k,
            multi=recall_at(mix_recommend(mixes, data.split.train_items), test),
            single=recall_at(cluster_popularity(clusters, data.split.train_items), test),
            global_pop=recall_at(global_popularity(data.split.train_items, test), test),
            mean_interests=float(np.mean([len(v) for v in mixes.values()])),
            events_per_s=log.events / log.seconds,
        ))
    table = []
    for r in rows:
        table.append([r.k, r.multi, r.single, r.global_pop, r.multi / r.single, r.multi / r.global_pop,
                      r.mean_interests, r.events_per_s])
        if r.k in (16, 32):
            report.check("interests", Target(f"MovieLens k={r.k}: multi-interest / single-cluster recall@10",
                                             r.multi / r.single, MULTI_RATIO_TARGET))
    report.table(
        "MovieLens 100K — recall@10: multi-interest vs single-cluster vs global popularity",
        ["k", "multi-interest", "single cluster", "global popularity", "x single", "x global",
         "interests/user", "replay events/s"],
        table,
        caption="multi-interest: popular unseen movies of each interest cluster of the user's last record (cluster "
        "popularity over the users holding it, weighted by share), interleaved in proportion to the shares; single "
        "cluster: bench.movielens's recommender on the last record's cluster.",
    )

    # Cost: replay with and without mixes (best of two each; the machine is shared: noisy).
    speeds: dict[str, float] = {}
    sizes: dict[str, float] = {}
    for label, extra in (("mixes on", {}), ("mixes off", {"max_interests": 0}),
                         ("mixes on (2)", {}), ("mixes off (2)", {"max_interests": 0})):
        driver = driver_for(speed_k, **extra)
        log = replay(driver, data.events, batch_size=512)
        key = label.replace(" (2)", "")
        speeds[key] = max(speeds.get(key, 0.0), log.events / log.seconds)
        if key == "mixes on" and driver.pipeline.interests is not None:
            pipe = driver.pipeline
            users = list(pipe.profiles.user_ids())
            sizes["memory"] = pipe.interests.bytes_per_user()
            sizes["profile memory"] = pipe.profiles.bytes_per_user()
            sizes["record"] = float(np.mean([len(pipe.profiles.mix_bytes(u) or b"") for u in users]))
            sizes["profile record"] = float(np.mean([len(pipe.profiles.record_bytes(u)) for u in users])) - sizes["record"]
    ratio = speeds["mixes on"] / speeds["mixes off"]
    report.table(
        f"Cost — MovieLens replay at k={speed_k} ({len(data.events):,} events, micro-batch 512; best of 2)",
        ["events/s with mixes", "events/s without", "ratio", "mix bytes/user (memory)", "profile bytes/user",
         "changelog bytes/user added", "profile record bytes"],
        [[speeds["mixes on"], speeds["mixes off"], ratio, sizes.get("memory", float("nan")),
          sizes.get("profile memory", float("nan")), sizes.get("record", float("nan")),
          sizes.get("profile record", float("nan"))]],
        caption="2 shared cores: timings vary by +-10 % between runs.",
    )
    report.check("interests", Target("replay events/s with / without mixes", ratio, SPEED_RATIO_TARGET))
    return rows


# ----------------------------------------------------------------------------- news readers
@dataclass
class FoundRow:
    name: str
    users: int
    primary: float
    secondary: float
    both: float
    by_events: list[tuple[str, int, float, float, float]]
    set_changes_per_event: float
    primary_churn: float
    mean_interests: float
    reseeded: int
    dropped_share: float
    event_agreement: float = float("nan")
    #: Mean share, in the users' last records, of interests that are neither topic's cluster.
    other_share: float = float("nan")


def _topic_clusters(scenario, log: ReplayLog) -> dict[str, int]:
    """Each topic's cluster: where most never-switched readers of that primary topic end up."""
    votes: dict[str, Counter] = defaultdict(Counter)
    for u, t in scenario.truth.items():
        if t.switch_to is None and u in log.last:
            votes[t.primary][log.last[u].cluster] += 1
    return {topic: v.most_common(1)[0][0] for topic, v in votes.items() if v}


def evaluate_news(scenario, log: ReplayLog, name: str, dropped_share: float) -> FoundRow:
    truth = scenario.truth
    last = log.last
    target = _topic_clusters(scenario, log)
    buckets = [("1-4", 1, 4), ("5-9", 5, 9), ("10-14", 10, 14), ("15-19", 15, 19), ("20+", 20, 10**9)]
    per_bucket: dict[str, list[tuple[bool, bool]]] = defaultdict(list)
    found: list[tuple[bool, bool]] = []
    set_changes = primary_changes = events = 0
    n_interests = []
    other_shares = []
    for u, t in truth.items():
        if t.switch_to is not None or u not in last:
            continue
        n = log.event_count[u]
        interests = {i.cluster for i in last[u].interests}
        n_interests.append(len(interests))
        mine = {target.get(t.primary), target.get(t.secondary)}
        other_shares.append(sum(i.share for i in last[u].interests if i.cluster not in mine))
        hit = (target.get(t.primary) in interests, target.get(t.secondary) in interests)
        for label, lo, hi in buckets:
            if lo <= n <= hi:
                per_bucket[label].append(hit)
        if n >= MIN_EVENTS:
            found.append(hit)
        recs = log.records[u]
        events += n
        set_changes += sum(1 for a, b in zip(recs, recs[1:], strict=False) if a[3] != b[3])
        primary_changes += sum(1 for r in recs[1:] if r[1] != r[2])
    arr = np.array(found or [(False, False)], dtype=bool).reshape(-1, 2)
    by_events = []
    for label, _, _ in buckets:
        b = np.array(per_bucket[label], dtype=bool).reshape(-1, 2)
        if b.shape[0]:
            by_events.append((label, b.shape[0], b[:, 0].mean(), b[:, 1].mean(), (b[:, 0] & b[:, 1]).mean()))
    return FoundRow(
        name=name, users=arr.shape[0], primary=float(arr[:, 0].mean()), secondary=float(arr[:, 1].mean()),
        both=float((arr[:, 0] & arr[:, 1]).mean()), by_events=by_events,
        set_changes_per_event=set_changes / max(events, 1), primary_churn=primary_changes / max(events, 1),
        mean_interests=float(np.mean(n_interests)) if n_interests else float("nan"),
        other_share=float(np.mean(other_shares)) if other_shares else float("nan"), reseeded=log.reseeded, dropped_share=dropped_share,
    )


def news(options, report: Report) -> list[FoundRow]:
    """AG News and MIND readers (the quality benchmark's scenarios), whichever corpora are present."""
    from bench import product
    from stream.corpora import load_ag_news, load_mind
    from stream.simulation import simulate

    corpora = []
    if Path(options.ag_news).exists():
        corpora.append(("AG News", "ag-news", load_ag_news(options.ag_news), None))
    else:
        report.print(f"[yellow]AG News not found at {options.ag_news}: skipped[/]")
    if Path(options.mind).exists():
        corpora.append((f"MIND top-{options.mind_categories}", "mind", load_mind(options.mind), options.mind_categories))
    else:
        report.print(f"[yellow]MIND not found at {options.mind}: skipped[/]")
    encoder = product.sentence_encoder() if corpora else None
    rows = []
    for name, label, corpus, top in corpora:
        if top:
            sizes = {t: len(docs) for t, docs in corpus.by_topic().items()}
            corpus = corpus.filter_topics(topics=sorted(sizes, key=lambda t: (-sizes[t], t))[:top])
        k = len(corpus.topics)
        scenario = simulate(corpus, n_users=options.n_users, mean_events_per_user=options.mean_events,
                            primary_share=0.7, secondary_share=0.2, drift_fraction=0.2,
                            duration_s=options.duration_days * 86_400, content="text", seed=options.seed)
        texts = [d.text for d in corpus.documents]
        known = set(texts)
        extra = sorted({e["text"] for e in scenario.events if "text" in e and e["text"] not in known})
        driver = product.make_driver(n_clusters=k, encoder=encoder, seed=options.seed, **options.overrides)
        text_vectors = product.corpus_vectors(texts, encoder, label=label, use_disk_cache=options.use_disk_cache)
        extra_vectors = product.corpus_vectors(extra, encoder, label=f"{label}-queries",
                                               use_disk_cache=options.use_disk_cache)
        driver.prefill(texts, text_vectors)
        driver.prefill(extra, extra_vectors)
        log = replay(driver, scenario.events, options.batch_size)
        mixes = driver.pipeline.interests
        total = sum(float(mixes.raw(u)[3]) for u in mixes.user_ids()) if mixes is not None else 0.0
        dropped = mixes.dropped_weight / (total + mixes.dropped_weight) if mixes is not None and total else 0.0
        row = evaluate_news(scenario, log, name, dropped)
        # How often one event lands in its topic's cluster (final centroids): what bounds finding a minor topic.
        lookup = dict(zip(texts, text_vectors, strict=True)) | dict(zip(extra, extra_vectors, strict=True))
        nearest = driver.model.predict_many(np.stack([lookup[e["text"]] for e in scenario.events]))
        target = _topic_clusters(scenario, log)
        row.event_agreement = float(np.mean([target.get(t) == c for t, c in
                                             zip(scenario.event_topics, nearest.tolist(), strict=True)]))
        rows.append(row)
    for r in rows:
        report.table(
            f"Finding both interests — {r.name}: never-switched readers with >= {MIN_EVENTS} events ({r.users:,})",
            ["primary topic's cluster in set", "secondary's", "both", "interests/user", "share of other interests",
             "interest-set changes/event",
             "primary churn/event", "clusters given a new centre", "mix weight dropped by them",
             "events in their topic's cluster"],
            [[r.primary, r.secondary, r.both, r.mean_interests, r.other_share, r.set_changes_per_event, r.primary_churn,
              r.reseeded, r.dropped_share, r.event_agreement]],
            caption="a topic's cluster: where most never-switched readers of that primary topic end up (as in the "
            "quality benchmark); set = the interests of each user's last record; share of other interests: the "
            "mean summed share of listed interests that are neither topic's cluster; churn and set changes count "
            "records beyond the first, per event of never-switched users; events in their topic's cluster: share of "
            "all events whose nearest final centroid is their topic's cluster (a single event's chance to count for "
            "its topic: what bounds finding a 20 % topic from a dozen events).",
        )
        report.table(
            f"… by events per user — {r.name} (never-switched readers)",
            ["events", "users", "primary found", "secondary found", "both"],
            [list(row) for row in r.by_events],
        )
        report.check("interests", Target(f"{r.name}: primary topic's cluster in the interest set", r.primary,
                                         PRIMARY_FOUND_TARGET))
        report.check("interests", Target(f"{r.name}: secondary topic's cluster in the interest set", r.secondary,
                                         SECONDARY_FOUND_TARGET))
    return rows


def run(options, movielens_dir: Path, report: Report, *, quick: bool = False) -> None:
    """Every measurement of this benchmark (see the module docstring)."""
    news(options, report)
    movielens(Path(movielens_dir), report, ks=(8, 16) if quick else KS, seed=options.seed,
              use_disk_cache=options.use_disk_cache, overrides=options.overrides)
