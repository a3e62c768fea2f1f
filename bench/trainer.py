"""Trainer capacity: how many members one trainer of the group's shared model can serve.

The trainer applies every member's batch statistics in the statistics topic's order
(:class:`stream.group_trainer.GroupTrainer`). This measures, at k = 16 / 64 / 256 and
d = 384 (all-MiniLM-L6-v2), the statistics records it folds per second, each one the
bytes a worker publishes for a batch of ``users_per_batch`` users: decode, then one
merged apply per poll of 1, 10 or 100 records (reseeding and refinement on their default
schedule included), plus encoding a :class:`~stream.shared_model.ModelVersion` per poll
(one trainer transaction each). Under load the trainer's polls grow by themselves. Members served = records/s ÷ batches/s per member
(10: a member at 5,000 events/s with 512-event batches). Target: >= 100 members at k = 64.

The points are synthetic unit vectors around ``k`` random directions (the cost does not
depend on what the points mean); the workers summarise them against the trainer's
newest version, exactly as members do.

Example::

    python -m bench --only trainer
"""

from __future__ import annotations

import time

import numpy as np

from bench.common import Report, Target

KS = (16, 64, 256)
DIM = 384
BATCHES_PER_MEMBER_S = 10.0
#: Records per trainer poll: one member's batch, and the polls of a loaded trainer.
GROUPS = (1, 10, 100)


def _records(k: int, n_records: int, users_per_batch: int, seed: int):
    """Statistics records as workers publish them, summarised against an initialised shared model;
    returns them with that model's trainer and the offset of the first record."""
    from stream.group_trainer import GroupTrainer
    from stream.kmeans import MiniBatchKMeans
    from stream.kmeans.statistics import point_ids
    from stream.settings import ClusteringSettings
    from stream.shared_model import StatisticsRecord, encode_statistics

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, DIM))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    settings = ClusteringSettings(n_clusters=k, warmup_batches=0)
    warm = GroupTrainer(settings, dim=DIM)
    worker = MiniBatchKMeans(n_clusters=k, seed=seed + 1)
    n_users = 50 * users_per_batch

    def batch(i: int) -> bytes:
        users = rng.choice(n_users, users_per_batch, replace=False)
        pts = centres[users % k] + 0.6 * rng.normal(size=(users_per_batch, DIM)) / np.sqrt(DIM)
        pts = (pts / np.linalg.norm(pts, axis=1, keepdims=True)).astype(np.float32)
        sims = worker.similarities(pts) if worker.is_initialised else None
        stats = worker.summarise(pts, similarities=sims, point_ids=point_ids([f"u{u}" for u in users]))
        return encode_statistics(StatisticsRecord(worker="w", stats=stats.to_bytes(), now_ms=i, produced_ms=i))

    offset = 0
    while not warm.model.is_initialised:  # the shared model exists before the measured records
        warm.apply(offset, batch(offset))
        offset += 1
        version = warm.version(emit_ms=0)
        if version is not None:
            worker.follow(version.centroid_matrix(), version.count_vector(), version.version, version.n_applied,
                          version.reservoir_id_vector())
    return [batch(offset + i) for i in range(n_records)], warm, offset


def capacity(k: int, *, group: int, n_records: int = 300, users_per_batch: int = 256, seed: int = 0) -> dict:
    """Records/s one trainer folds at ``k`` clusters, ``group`` records per poll (decode, one merged
    apply, one model version encoded per group: one trainer transaction)."""
    from stream.group_trainer import GroupTrainer
    from stream.shared_model import encode_model_version

    records, warm, offset = _records(k, n_records, users_per_batch, seed)
    trainer = GroupTrainer.restore(warm.settings, warm.state_record(), dim=DIM)
    version_bytes, groups = 0, 0
    started = time.perf_counter()
    for i in range(0, len(records), group):
        chunk = [(offset + j, records[j]) for j in range(i, min(i + group, len(records)))]
        trainer.apply_group(chunk, chunk[-1][0] + 1)
        version = trainer.version(emit_ms=i)
        if version is not None:
            version_bytes = len(encode_model_version(version))
        groups += 1
    seconds = time.perf_counter() - started
    rate = len(records) / seconds
    return {"k": k, "group": group, "records": len(records), "seconds": seconds, "records_per_s": rate,
            "members": rate / BATCHES_PER_MEMBER_S, "group_ms": 1000 * seconds / groups,
            "record_bytes": float(np.mean([len(r) for r in records])), "version_bytes": version_bytes,
            "refines": trainer.model.n_refines - warm.model.n_refines}


def run(report: Report, *, quick: bool = False, seed: int = 0) -> list[dict]:
    rows = []
    results = []
    for k in KS:
        for group in GROUPS:
            n = max(group * (2 if quick else 4), 40 if quick else 200)
            r = capacity(k, group=group, n_records=n, seed=seed)
            results.append(r)
            rows.append([f"k = {k}, {group} per poll", r["records_per_s"], r["members"], r["group_ms"],
                         r["record_bytes"], r["version_bytes"], r["refines"]])
    report.table(
        f"Trainer capacity (d = {DIM}; 256 users per statistics record; one version per poll)",
        ["", "records/s", f"members at {BATCHES_PER_MEMBER_S:.0f} batches/s", "ms per poll", "record bytes",
         "version bytes", "refinements"], rows,
        caption="a poll's records are summed and applied once (decay, reservoir, reseeding, refinement on its "
                "schedule); the trainer's polls grow with the load, so its capacity is the large-poll figure",
    )
    best64 = max((r for r in results if r["k"] == 64), key=lambda r: r["members"])
    report.check("trainer", Target("members one trainer serves at k = 64", best64["members"], 100.0,
                                   note=f"{BATCHES_PER_MEMBER_S:.0f} batches/s per member, {best64['group']} "
                                        f"records per poll ({best64['group_ms']:.0f} ms each)"))
    return results


def group_staleness(bootstrap: str, encoder, movielens_dir, *, members: int = 3, rate: float = 1000.0,
                    seconds: float = 30.0, skip_s: float = 5.0) -> dict:
    """Model staleness with ``members`` members of one group at ``rate`` events/s (MovieLens, cache warm).

    The members are :class:`consumers.service.InterestService` instances in threads of this
    process (each its own pipeline, consumer, producer, trainer-role thread and metrics), in one
    consumer group on a 6-partition events topic. Reported: the trainer's
    ``interest_model_staleness_seconds`` observations (a statistics record built by a worker ->
    the commit of the model version that includes it), every member's versions behind sampled
    every 100 ms, and the end-to-end latency of every applied event.
    """
    from bench.service import (
        ServiceRun,
        _Recorder,
        _warm_pipeline,
        exact_quantile,
        movielens_stream,
        paced_producer_process,
    )

    items, vectors, payloads, topics = movielens_stream(bootstrap, encoder, movielens_dir, rate, seconds)
    runs: list = []
    try:
        for i in range(members):
            run = ServiceRun(bootstrap, topics, _warm_pipeline(encoder, items, vectors), instance_id=f"m{i}")
            run.staleness = run.metrics.model_staleness = _Recorder(run.metrics.model_staleness)
            runs.append(run.start())
        for run in runs:
            run.wait_ready()
        with paced_producer_process(bootstrap, topics.name("events"), payloads, rate, seconds) as proc:
            t0 = time.perf_counter()
            behind: list[float] = []
            while proc.poll() is None:
                if time.perf_counter() - t0 >= skip_s:
                    behind.extend(r.metrics.registry.get_sample_value("interest_model_versions_behind") or 0.0
                                  for r in runs)
                time.sleep(0.1)
            n_sent = int(proc.stdout.read().strip() or 0)
        deadline = time.monotonic() + 60
        while sum(r.consumed.total() for r in runs) < n_sent and time.monotonic() < deadline:
            time.sleep(0.1)
        stale = [v for run in runs for t, v in run.staleness.calls if t - t0 >= skip_s]
        latency = [v for run in runs for t, v in run.latency.calls if t - t0 >= skip_s]
        trainers = sum(1 for r in runs if r.metrics.registry.get_sample_value("interest_trainer_role") == 1.0)
        return {"members": members, "rate": rate, "events": n_sent, "trainers": trainers,
                "staleness_p50_ms": 1000 * exact_quantile(stale, 0.5), "staleness_p99_ms": 1000 * exact_quantile(stale, 0.99),
                "versions": len(stale), "behind_p50": exact_quantile(behind, 0.5), "behind_p99": exact_quantile(behind, 0.99),
                "behind_max": max(behind) if behind else float("nan"),
                "latency_p50_ms": 1000 * exact_quantile(latency, 0.5), "latency_p99_ms": 1000 * exact_quantile(latency, 0.99)}
    finally:
        for run in runs:
            try:
                run.stop()
            except Exception:  # noqa: BLE001 - a failed member is reported by the numbers
                pass
        topics.delete(bootstrap)


def run_staleness(report: Report, *, movielens_dir, quick: bool = False) -> dict | None:
    """The staleness table (needs a broker and MovieLens; skipped with a message otherwise)."""
    from pathlib import Path

    from threadpoolctl import threadpool_limits

    from bench import product
    from bench.service import kafka_cluster

    if not (Path(movielens_dir) / "u.data").exists():
        report.print("[yellow]MovieLens 100K not found: the group staleness benchmark is skipped[/]")
        return None
    threadpool_limits(1, user_api="blas")
    encoder = product.sentence_encoder()
    with kafka_cluster() as bootstrap:
        r = group_staleness(bootstrap, encoder, movielens_dir, seconds=10.0 if quick else 30.0)
    report.table(
        f"Model staleness, {r['members']} members of one group at {r['rate']:.0f} events/s (MovieLens, cache warm)",
        ["trainers", "events", "statistics applied", "staleness p50 ms", "staleness p99 ms", "versions behind p50",
         "versions behind p99", "max", "latency p50 ms", "latency p99 ms"],
        [[r["trainers"], r["events"], r["versions"], r["staleness_p50_ms"], r["staleness_p99_ms"], r["behind_p50"],
          r["behind_p99"], r["behind_max"], r["latency_p50_ms"], r["latency_p99_ms"]]],
        caption="staleness: a worker builds a statistics record -> the trainer commits the version that includes "
                "it; versions behind sampled every 100 ms on every member; the members share this process's 2 cores",
    )
    report.check("trainer", Target("model staleness p99 with 3 members (ms)", r["staleness_p99_ms"], 1000.0,
                                   higher=False, note="< 1 s"))
    return r
