"""State and delivery-guarantee benchmarks of the Kafka service (issue: durable state, exactly-once).

Through a real broker (``KAFKA_BOOTSTRAP_SERVERS``, else a :class:`consumers.devbroker.DevBroker`
started for the run):

1. **restore time** of 10,000 and 100,000 users: profiles written to a 6-partition compacted
   changelog (plus one assignment record per user), then read back by the service's own restore
   functions (:func:`consumers.changelog.restore_profiles` / ``restore_assignments``);
2. **changelog bytes per user**: the record value, and the partition log size on the broker;
3. **exactly-once vs at-least-once throughput**: the same pre-produced events consumed by
   ``interest-stream run`` twice, once per guarantee, each with its own group and output topics;
   events/s measured from the service's own counters between the first and the last consumed
   record (model loading excluded). Target: exactly-once costs at most 25 %.

Example::

    python -m bench --only state
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np

from bench.common import REPO_ROOT, Report, Target


def _admin(bootstrap: str):
    from kafka import KafkaAdminClient

    return KafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench-state")


def _produce(bootstrap: str, topic: str, records, partition_of=None) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, batch_size=1 << 20)
    for i, (key, value) in enumerate(records):
        producer.send(topic, key=key, value=value, partition=partition_of(i) if partition_of else None)
    producer.flush(timeout=300)
    producer.close()


def _log_bytes(bootstrap: str, topic: str) -> int | None:
    """Total size of the topic's partition logs on the broker (None if the broker won't say)."""
    try:
        admin = _admin(bootstrap)
        result = admin.describe_log_dirs()
        admin.close()
    except Exception:  # noqa: BLE001 - optional figure
        return None
    total = 0
    text = json.dumps(result, default=str)
    if topic not in text:
        return None
    for log_dir in result.get("results", result) if isinstance(result, dict) else result:
        for t in (log_dir.get("topics") or []) if isinstance(log_dir, dict) else []:
            if t.get("name") == topic:
                total += sum(int(p.get("partition_size", 0)) for p in t.get("partitions", []))
    return total or None


def restore_benchmark(bootstrap: str, n_users: int, partitions: int = 6, dim: int = 384) -> dict:
    """Write ``n_users`` profiles and assignments, then time the service's restore of all partitions."""
    from consumers.changelog import restore_assignments, restore_profiles
    from stream.assignments import AssignmentTracker
    from stream.profiles import ProfileStore, profile_to_bytes
    from stream.records import AssignmentChange, ClusterScore, encode_record

    run = uuid.uuid4().hex[:8]
    profiles_topic, assignments_topic = f"stbench-{run}-profiles", f"stbench-{run}-assignments"
    admin = _admin(bootstrap)
    admin.create_topics({t: {"num_partitions": partitions, "replication_factor": 1,
                             "configs": {"cleanup.policy": "compact"}} for t in (profiles_topic, assignments_topic)},
                        wait_for_metadata=True)
    admin.close()
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(n_users, dim)).astype(np.float32)
    users = [f"user-{i:07d}" for i in range(n_users)]
    values = [profile_to_bytes(vectors[i], 1_700_000_000_000 + i, 3.5) for i in range(n_users)]
    _produce(bootstrap, profiles_topic, ((u.encode(), v) for u, v in zip(users, values, strict=True)),
             partition_of=lambda i: i % partitions)
    changes = (encode_record(AssignmentChange(user_id=u, cluster=i % 16, previous_cluster=None, score=0.8,
                                              top=[ClusterScore(cluster=i % 16, score=0.8)], model_version=1,
                                              event_ts_ms=0, emit_ts_ms=0)) for i, u in enumerate(users))
    _produce(bootstrap, assignments_topic, ((u.encode(), c) for u, c in zip(users, changes, strict=True)),
             partition_of=lambda i: i % partitions)
    options = {"bootstrap_servers": bootstrap}
    store = ProfileStore(dim, 86_400.0)
    tracker = AssignmentTracker()
    t0 = time.perf_counter()
    owners = restore_profiles(options, profiles_topic, list(range(partitions)), store)
    t_profiles = time.perf_counter() - t0
    restored = restore_assignments(options, assignments_topic, list(range(partitions)), tracker)
    total = time.perf_counter() - t0
    assert len(owners) == n_users == restored == len(store)
    np.testing.assert_allclose(store.raw(users[-1])[0], vectors[-1])
    log_bytes = _log_bytes(bootstrap, profiles_topic)
    admin = _admin(bootstrap)
    admin.delete_topics([profiles_topic, assignments_topic], raise_errors=False)
    admin.close()
    return {"users": n_users, "seconds": total, "profile_seconds": t_profiles,
            "users_per_s": n_users / total, "value_bytes": len(values[0]) + len(users[0]),
            "log_bytes_per_user": None if log_bytes is None else log_bytes / n_users}


def _service_rate(bootstrap: str, events_topic: str, items_topic: str, n: int, guarantee: str,
                  workdir: Path) -> dict:
    """Run ``interest-stream run`` over the pre-produced events; events/s from its own counters."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    from consumers.devbroker import free_port

    prefix = f"stbench-{uuid.uuid4().hex[:8]}"
    port = free_port()
    cmd = [sys.executable, "-m", "consumers.cli", "run", "--bootstrap-servers", bootstrap,
           "--events-topic", events_topic, "--items-topic", items_topic, "--group-id", f"{prefix}.group",
           "--assignments-topic", f"{prefix}.assignments", "--centroids-topic", f"{prefix}.centroids",
           "--dead-letter-topic", f"{prefix}.dlq", "--clusters", "10", "--processing-guarantee", guarantee,
           "--metrics-host", "127.0.0.1", "--metrics-port", str(port), "--log-level", "WARNING"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    log = open(workdir / f"{guarantee}.log", "wb")
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    def consumed() -> float:
        try:
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
        except OSError:
            return -1.0
        for family in text_string_to_metric_families(body):
            for s in family.samples:
                if s.name == "interest_events_consumed_total":
                    return s.value
        return -1.0

    try:
        deadline = time.monotonic() + 900
        first_t = first_n = None
        while time.monotonic() < deadline and proc.poll() is None:
            c = consumed()
            now = time.perf_counter()
            if c > 0 and first_t is None:
                first_t, first_n = now, c
            if c >= n:
                return {"guarantee": guarantee, "events": n - first_n, "seconds": now - first_t,
                        "events_per_s": (n - first_n) / (now - first_t)}
            time.sleep(0.05)
        raise RuntimeError(f"{guarantee} run did not finish; see {workdir / (guarantee + '.log')}")
    finally:
        proc.terminate()
        proc.wait(60)
        log.close()


def guarantee_benchmark(bootstrap: str, n_users: int = 1500, events_per_user: float = 20.0) -> list[dict]:
    from stream.corpora import demo_corpus
    from stream.simulation import simulate

    run = uuid.uuid4().hex[:8]
    events_topic, items_topic = f"stbench-{run}-events", f"stbench-{run}-items"
    admin = _admin(bootstrap)
    admin.create_topics({events_topic: {"num_partitions": 6, "replication_factor": 1},
                         items_topic: {"num_partitions": 1, "replication_factor": 1,
                                       "configs": {"cleanup.policy": "compact"}}}, wait_for_metadata=True)
    admin.close()
    corpus = demo_corpus()
    _produce(bootstrap, items_topic, ((d.item_id.encode(), json.dumps({"text": d.text}).encode())
                                      for d in corpus.documents))
    scenario = simulate(corpus, n_users=n_users, mean_events_per_user=events_per_user, content="item_id", seed=3)
    _produce(bootstrap, events_topic, ((e["user_id"].encode(), json.dumps(e).encode()) for e in scenario.events))
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"interest-stream-bench-{run}"
    workdir.mkdir(parents=True, exist_ok=True)
    n = len(scenario.events)
    # Alternate the two guarantees twice and keep each one's best run: the machine is shared and noisy.
    runs = [_service_rate(bootstrap, events_topic, items_topic, n, g, workdir)
            for g in ("at_least_once", "exactly_once", "at_least_once", "exactly_once")]
    best = {}
    for r in runs:
        if r["guarantee"] not in best or r["events_per_s"] > best[r["guarantee"]]["events_per_s"]:
            best[r["guarantee"]] = r
    return [best["at_least_once"], best["exactly_once"]]


def run(report: Report, *, quick: bool = False) -> None:
    from consumers.devbroker import bootstrap_servers_or_start

    bootstrap, started = bootstrap_servers_or_start()
    try:
        sizes = (2_000, 10_000) if quick else (10_000, 100_000)
        rows = []
        results = [restore_benchmark(bootstrap, n) for n in sizes]
        for r in results:
            rows.append([f"{r['users']:,} users", r["seconds"], r["users_per_s"], r["value_bytes"],
                         r["log_bytes_per_user"]])
        report.table("Restore from the changelogs (6 partitions; profiles + last assignments)",
                     ["", "seconds", "users/s", "record bytes (key+value)", "log bytes per user"], rows)
        big = results[-1]
        report.check("state", Target(f"restore of {big['users']:,} users (s)", big["seconds"], 60.0, higher=False,
                                     note="seconds, not minutes"))
        rates = guarantee_benchmark(bootstrap, n_users=500 if quick else 1500)
        report.table("Throughput by processing guarantee (same events, same run, best of 2 alternating runs each)",
                     ["guarantee", "events", "seconds", "events/s"],
                     [[r["guarantee"], r["events"], r["seconds"], r["events_per_s"]] for r in rates])
        alos, eos = rates
        ratio = eos["events_per_s"] / alos["events_per_s"]
        report.check("state", Target("exactly-once / at-least-once throughput", ratio, 0.75,
                                     note="exactly-once may cost at most 25%"))
    finally:
        if started is not None:
            started.stop()
