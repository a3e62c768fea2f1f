"""Service benchmarks (issue 4): the real streaming service on a real Kafka broker.

``python -m bench --only service``. The service is :class:`consumers.service.InterestService`,
run in a thread of the benchmark process with a pre-built :class:`stream.pipeline.Pipeline`
(the model is loaded once, before any timing; the service's own loop, consumer, producer,
catalog follower, metrics and commits run unchanged). The broker is the one named by
``KAFKA_BOOTSTRAP_SERVERS``, or a :class:`consumers.devbroker.DevBroker` started for the run.
Every run uses fresh topics and a fresh consumer group, deleted at the end.

1. **Throughput, embedding cache warm** — MovieLens 100K: every positive rating (4-5) is
   a ``view`` event keyed by user with ``item_id`` = movie id (``ts`` = rating time), and
   the catalog (title + genres) is published to the items topic. All events are produced
   first; then the service consumes them all. The cache is warmed by embedding the catalog
   texts once (the product encoder; kept on disk between runs). Events/s = events / (end
   of the last batch - start of the first batch), from the service's own
   ``interest_events_consumed_total`` increments and ``interest_batch_duration_seconds``
   observations (model load and group join excluded). Two runs, each in its own group over
   the same topic: the default settings (``processing_guarantee=exactly_once``: one Kafka
   transaction per batch), which the targets judge, and ``at_least_once``. Baseline, same
   run: a bare kafka-python loop over the same topic in its own group (poll up to
   ``batch_max_events``, produce one small record per input, flush, commit per batch; the
   service's consumer settings and at-least-once producer settings). Targets: >= 10,000
   events/s and >= 0.5x the bare loop.
2. **Throughput, every text new** — AG News test split, a random subset of distinct texts
   (1,000 by default, 300 with ``--quick``: the full 7,600 take minutes per pass on two
   cores), one ``text`` event per document (simulated users), empty cache. Baseline: the raw
   ``SentenceTransformer.encode`` on the same texts in the same chunks (``batch_max_events``)
   with the product's ``encode_batch_size``, run before and after the service (mean).
   Target: service events/s >= 0.9x raw texts/s.
3. **Latency at a steady rate** — a producer process sends MovieLens events (cache warm)
   at a fixed rate with ``ts`` = send time; latency is what the service observes into
   ``interest_end_to_end_latency_seconds`` (publish time - event time, every applied
   event). Reported: exact p50/p99 of those observations, and the p99 the histogram's
   buckets give (``histogram_quantile``). Target: p99 < 200 ms.
4. **The naive design** (reference row): each event encoded alone
   (``SentenceTransformer.encode([text])``) and learned by river ``cluster.KMeans.learn_one``
   on the 384-d dict.

Example (the parts that need no broker):

>>> window_rate([(10.0, 100), (10.5, 100), (11.0, 100)], [0.25, 0.2, 0.2])
(300, 1.25, 240.0)
>>> round(histogram_quantile(0.5, [0.1, 0.2, float("inf")], [5, 10, 10]), 3)
0.1
>>> round(exact_quantile([0.3, 0.1, 0.2, 0.4], 0.5), 2)
0.25
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.common import REPO_ROOT, Report, Target

EVENTS_TARGET = 10_000.0
BARE_RATIO_TARGET = 0.5
ENCODE_RATIO_TARGET = 0.9
P99_TARGET_S = 0.2
BENCH = "service"


# ----------------------------------------------------------------------------- arithmetic
def window_rate(incs: Sequence[tuple[float, int]], durations: Sequence[float]) -> tuple[int, float, float]:
    """``(events, seconds, events/s)`` from per-batch ``(end time, events)`` and batch durations.

    The window runs from the start of the first batch (its end minus its duration) to the
    end of the last one.
    """
    if not incs:
        return 0, 0.0, float("nan")
    n = int(sum(k for _, k in incs))
    start = incs[0][0] - (durations[0] if durations else 0.0)
    seconds = incs[-1][0] - start
    return n, seconds, (n / seconds if seconds > 0 else float("nan"))


def exact_quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile of the values (linear interpolation); NaN when empty."""
    if len(values) == 0:
        return float("nan")
    return float(np.quantile(np.asarray(values, dtype=np.float64), q))


def histogram_quantile(q: float, uppers: Sequence[float], cumulative: Sequence[float]) -> float:
    """Prometheus' ``histogram_quantile`` over cumulative bucket counts (``le`` upper bounds)."""
    total = cumulative[-1] if cumulative else 0
    if total <= 0:
        return float("nan")
    rank = q * total
    prev_upper, prev_count = 0.0, 0.0
    for upper, count in zip(uppers, cumulative, strict=True):
        if count >= rank:
            if upper == float("inf"):
                return prev_upper
            if count == prev_count:
                return upper
            return prev_upper + (upper - prev_upper) * (rank - prev_count) / (count - prev_count)
        prev_upper, prev_count = upper, count
    return prev_upper


# ----------------------------------------------------------------------------- metric recorders
class _Recorder:
    """Wraps one Prometheus metric: every call is forwarded, and ``inc``/``observe`` are also kept
    as ``(perf_counter, value)`` so the benchmark reads exactly what the service reported."""

    def __init__(self, metric) -> None:
        self._metric = metric
        self.calls: list[tuple[float, float]] = []

    def inc(self, amount: float = 1) -> None:
        self.calls.append((time.perf_counter(), amount))
        self._metric.inc(amount)

    def observe(self, value: float) -> None:
        self.calls.append((time.perf_counter(), value))
        self._metric.observe(value)

    def total(self) -> float:
        return sum(v for _, v in self.calls)

    def __getattr__(self, name: str):
        return getattr(self._metric, name)


# ----------------------------------------------------------------------------- broker and topics
@contextlib.contextmanager
def kafka_cluster() -> Iterator[str]:
    """Bootstrap servers: ``KAFKA_BOOTSTRAP_SERVERS`` when set, else a DevBroker for the run."""
    from consumers.kafka_config import bootstrap_from_env

    env = bootstrap_from_env()
    if env:
        yield env
        return
    from consumers.devbroker import DevBroker

    with DevBroker() as broker:
        yield broker.bootstrap_servers


@dataclass
class Topics:
    """A fresh set of the service's topic names and group for one run."""

    prefix: str = field(default_factory=lambda: f"svcbench-{uuid.uuid4().hex[:8]}")

    def name(self, role: str) -> str:
        return f"{self.prefix}.{role}"

    @property
    def group(self) -> str:
        return f"{self.prefix}.group"

    def overrides(self, run: str = "") -> dict:
        """Settings naming these topics; ``run`` gives a run its own outputs, group and changelogs."""
        tag = f"{run}." if run else ""
        return {
            "events_topic": self.name("events"),
            "items_topic": self.name("items"),
            "assignments_topic": self.name(f"{tag}assignments"),
            "centroids_topic": self.name(f"{tag}centroids"),
            "dead_letter_topic": self.name(f"{tag}dead-letters"),
            "group_id": self.name(f"{tag}group"),
            "client_id": self.name(f"{tag}client"),
        }

    def create(self, bootstrap: str, events_partitions: int = 6, extra: Sequence[str] = ()) -> None:
        """Create the input topics (events, items) as the service wants them (it creates its own
        outputs), and ``extra`` topics (``delete`` policy, ``events_partitions`` partitions)."""
        from kafka import KafkaAdminClient

        from consumers.topics import COMPACT_TUNING, TopicSpec, ensure_topics

        specs = [
            TopicSpec("events", self.name("events"), events_partitions, "delete"),
            TopicSpec("items", self.name("items"), 3, "compact", configs=COMPACT_TUNING),
            *[TopicSpec("extra", self.name(x), events_partitions, "delete") for x in extra],
        ]
        admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","), client_id=f"{self.prefix}-admin")
        try:
            ensure_topics(admin, specs, create=True)
        finally:
            admin.close()

    def delete(self, bootstrap: str) -> None:
        """Delete every topic whose name starts with this run's prefix (outputs and changelogs too)."""
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","), client_id=f"{self.prefix}-admin")
        try:
            gone = [n for n in admin.list_topics() if n.startswith(self.prefix)]
            if gone:
                admin.delete_topics(gone)
        except Exception:  # cleaning up is best effort
            pass
        finally:
            admin.close()


def produce(bootstrap: str, topic: str, records: Sequence[tuple[bytes | None, bytes | None]]) -> float:
    """Produce ``(key, value)`` records as fast as possible and wait for every ack; returns records/s."""
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=bootstrap.split(","), acks="all", linger_ms=20, batch_size=256 * 1024
    )
    started = time.perf_counter()
    futures = [producer.send(topic, key=k, value=v) for k, v in records]
    producer.flush(timeout=120)
    for f in futures:
        f.get(timeout=0)
    took = time.perf_counter() - started
    producer.close()
    return len(records) / took if took > 0 else float("nan")


# ----------------------------------------------------------------------------- datasets
def movielens_events(movielens_dir: str | Path) -> tuple[list[dict], dict[str, str]]:
    """Every positive rating (4-5) of MovieLens 100K as a wire event in time order, and the catalog."""
    from bench import movielens

    d = Path(movielens_dir)
    ratings = movielens.load_ratings(d / "u.data")
    positives = sorted((r for r in ratings if r[2] >= 4), key=lambda r: (r[3], r[0], r[1]))
    events = [
        {"user_id": str(u), "ts": ts * 1000, "type": "view", "item_id": item} for u, item, _r, ts in positives
    ]
    return events, movielens.load_items(d / "u.item", d / "u.genre")


def ag_news_events(path: str | Path, n: int, *, n_users: int = 500, seed: int = 0) -> list[dict]:
    """``n`` distinct AG News documents (random subset), one ``text`` event each, of ``n_users`` users."""
    from stream.corpora import load_ag_news

    docs = load_ag_news(path).documents
    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    picked: list[str] = []
    for i in rng.permutation(len(docs)):
        text = docs[int(i)].text
        if text not in seen:
            seen.add(text)
            picked.append(text)
        if len(picked) == n:
            break
    start = 1_700_000_000_000
    users = rng.integers(n_users, size=len(picked))
    return [
        {"user_id": f"user-{int(u):04d}", "ts": start + 1000 * i, "type": "view", "text": t}
        for i, (u, t) in enumerate(zip(users, picked, strict=True))
    ]


def keyed(events: Sequence[dict]) -> list[tuple[bytes, bytes]]:
    import msgspec

    enc = msgspec.json.Encoder().encode
    return [(e["user_id"].encode(), enc(e)) for e in events]


# ----------------------------------------------------------------------------- the service in a thread
class ServiceRun:
    """``InterestService`` with a given pipeline, running in a thread; metrics recorded."""

    def __init__(self, bootstrap: str, topics: Topics, pipeline, run: str = "", **overrides) -> None:
        from consumers.service import InterestService
        from consumers.settings import ServiceSettings
        from stream.metrics import ServiceMetrics

        settings = ServiceSettings.load(
            overrides={
                "bootstrap_servers": bootstrap,
                "metrics_host": "127.0.0.1",
                "metrics_port": 0,
                "log_level": "WARNING",
                **topics.overrides(run),
                **overrides,
            }
        )
        self.settings = settings
        self.metrics = ServiceMetrics()
        self.consumed = self.metrics.events_consumed = _Recorder(self.metrics.events_consumed)
        self.batch_seconds = self.metrics.batch_seconds = _Recorder(self.metrics.batch_seconds)
        self.latency = self.metrics.latency = _Recorder(self.metrics.latency)
        self.service = InterestService(settings, metrics=self.metrics, pipeline=pipeline)
        self.exit_code: int | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="interest-service", daemon=True)

    def _main(self) -> None:
        try:
            self.exit_code = self.service.run()
        except BaseException as exc:  # reported by wait_* / stop
            self.error = exc

    def start(self) -> ServiceRun:
        self._thread.start()
        return self

    def _check(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"the service failed: {self.error!r}") from self.error
        if not self._thread.is_alive():
            raise RuntimeError(f"the service stopped early (exit code {self.exit_code})")

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while self.metrics.registry.get_sample_value("interest_ready") != 1.0:
            self._check()
            if time.monotonic() > deadline:
                raise TimeoutError("the service did not become ready")
            time.sleep(0.05)

    def wait_consumed(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.consumed.total() < n:
            self._check()
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the service consumed {self.consumed.total():.0f} of {n} events in {timeout:.0f} s"
                )
            time.sleep(0.05)

    def rate(self) -> tuple[int, float, float]:
        return window_rate(
            [(t, int(v)) for t, v in self.consumed.calls], [v for _, v in self.batch_seconds.calls]
        )

    def stop(self, timeout: float = 60.0) -> None:
        self.service.request_stop()
        self._thread.join(timeout)
        if self.error is not None:
            raise RuntimeError(f"the service failed: {self.error!r}") from self.error


# ----------------------------------------------------------------------------- the bare baseline
def bare_loop(
    bootstrap: str, topic: str, n: int, *, batch: int, out_topic: str, group: str, timeout: float = 300.0
) -> tuple[int, float, float]:
    """A bare kafka-python consume-and-produce loop: ``(events, seconds, events/s)``.

    A consumer in its own group reads ``topic`` (up to ``batch`` records a poll); each record
    becomes one small record on ``out_topic``; the producer is flushed and the offsets
    committed per batch. Consumer and producer settings are the service's.
    """
    from kafka import KafkaConsumer, KafkaProducer

    servers = bootstrap.split(",")
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=servers,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=batch,
        isolation_level="read_committed",
        client_id=f"{group}-events",
    )
    producer = KafkaProducer(
        bootstrap_servers=servers,
        acks="all",
        linger_ms=5,
        retries=5,
        max_in_flight_requests_per_connection=1,
        client_id=f"{group}-producer",
    )
    seen = 0
    start = end = None
    deadline = time.monotonic() + timeout
    try:
        while seen < n and time.monotonic() < deadline:
            polled = consumer.poll(timeout_ms=200, max_records=batch)
            if not polled:
                continue
            if start is None:
                start = time.perf_counter()
            send = producer.send
            for records in polled.values():
                for r in records:
                    send(out_topic, key=r.key, value=b"1")
                seen += len(records)
            producer.flush(timeout=30)
            consumer.commit()
            end = time.perf_counter()
    finally:
        consumer.close(autocommit=False)
        producer.close(timeout=10)
    if start is None or end is None or end <= start:
        return seen, 0.0, float("nan")
    return seen, end - start, seen / (end - start)


# ----------------------------------------------------------------------------- paced producer (latency)
def paced_producer(bootstrap: str, topic: str, payload_file: str, rate: float, seconds: float) -> int:
    """Send events at ``rate``/s for ``seconds`` with ``ts`` = send time (epoch ms); returns events sent.

    ``payload_file`` holds one JSON ``[key, event]`` per line (cycled when too short). Runs in
    its own process (``python -m bench.service paced-producer ...``) so it never competes with
    the service for the GIL; prints ``ready`` once connected.
    """
    import msgspec
    from kafka import KafkaProducer

    with open(payload_file, "rb") as fh:
        payloads = [(k.encode(), e) for k, e in (msgspec.json.decode(line) for line in fh if line.strip())]
    enc = msgspec.json.Encoder().encode
    producer = KafkaProducer(bootstrap_servers=bootstrap.split(","), acks="all", linger_ms=0)
    producer.partitions_for(topic)
    print("ready", flush=True)
    start = time.perf_counter()
    sent = 0
    while True:
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
        due = min(int(rate * seconds), int(rate * (elapsed + 0.005)) + 1)
        while sent < due:
            key, event = payloads[sent % len(payloads)]
            event["ts"] = int(time.time() * 1000)
            producer.send(topic, key=key, value=enc(event))
            sent += 1
        time.sleep(max(0.0, start + sent / rate - time.perf_counter()))
    producer.flush(timeout=30)
    producer.close()
    return sent


# ----------------------------------------------------------------------------- results
@dataclass
class ServiceRate:
    """One service configuration's run over the input of benchmark 1."""

    label: str
    overrides: dict
    events: int
    events_per_s: float
    seconds: float
    batches: int
    changes: int
    cache_misses: int


@dataclass
class WarmResult:
    runs: list[ServiceRate]
    bare_events_per_s: float
    bare_events: int
    bare_seconds: float
    produce_per_s: float


@dataclass
class ColdResult:
    events: int
    service_events_per_s: float
    service_seconds: float
    raw_texts_per_s: list[float]
    encode_batch_size: int
    batch_max_events: int
    texts_encoded: int
    embed_seconds: float = float("nan")

    @property
    def raw_mean(self) -> float:
        return float(np.mean(self.raw_texts_per_s)) if self.raw_texts_per_s else float("nan")

    @property
    def ratio(self) -> float:
        return self.service_events_per_s / self.raw_mean


@dataclass
class LatencyResult:
    rate: float
    seconds: float
    events: int
    p50: float
    p99: float
    p999: float
    max: float
    hist_p50: float
    hist_p99: float
    batches: int
    mean_batch: float
    batch_p99: float = float("nan")
    batch_max: float = float("nan")


@dataclass
class NaiveResult:
    events: int
    events_per_s: float


# ----------------------------------------------------------------------------- the benchmarks
def _pipeline(encoder, catalog=None, **clustering):
    from stream.pipeline import Pipeline
    from stream.settings import ClusteringSettings

    return Pipeline(ClusteringSettings(**clustering), encoder, catalog)


def _warm_pipeline(encoder, items: dict[str, str], vectors: np.ndarray):
    """A pipeline whose catalog holds the items and whose cache holds their embeddings."""
    from bench import movielens

    pipe = _pipeline(encoder, movielens.catalog_of(items))
    for (item_id, _text), vec in zip(items.items(), vectors, strict=True):
        pipe.cache.put(f"item:{item_id}@{pipe.catalog.get(item_id).version}", np.asarray(vec, np.float32))
    return pipe


def _catalog_records(items: dict[str, str]) -> list[tuple[bytes, bytes]]:
    import msgspec

    enc = msgspec.json.Encoder().encode
    return [(k.encode(), enc({"item_id": k, "text": v})) for k, v in items.items()]


#: Service configurations of benchmark 1; the first (the defaults) is the one the targets judge.
WARM_CONFIGS: tuple[tuple[str, dict], ...] = (
    ("default settings", {}),
    ("processing_guarantee=at_least_once", {"processing_guarantee": "at_least_once"}),
)


def warm_throughput(
    bootstrap: str,
    encoder,
    movielens_dir,
    *,
    limit: int | None = None,
    configs: Sequence[tuple[str, dict]] = WARM_CONFIGS,
    timeout: float = 600.0,
) -> WarmResult:
    """Benchmark 1 (see the module docstring): each configuration, then the bare loop, on one topic."""
    from bench import product
    from consumers.settings import ServiceSettings

    events, items = movielens_events(movielens_dir)
    if limit:
        events = events[:limit]
    vectors = product.corpus_vectors(list(items.values()), encoder, label="movielens-items")
    topics = Topics()
    topics.create(bootstrap, extra=["bare-out"])
    try:
        produce(bootstrap, topics.name("items"), _catalog_records(items))
        produce_rate = produce(bootstrap, topics.name("events"), keyed(events))
        runs: list[ServiceRate] = []
        batch = ServiceSettings.model_fields["batch_max_events"].default
        for i, (label, overrides) in enumerate(configs):
            pipe = _warm_pipeline(encoder, items, vectors)
            run = ServiceRun(bootstrap, topics, pipe, run=f"r{i}", **overrides).start()
            try:
                run.wait_consumed(len(events), timeout)
            finally:
                run.stop()
            n, seconds, rate = run.rate()
            stats = pipe.counters_snapshot()
            runs.append(
                ServiceRate(
                    label,
                    dict(overrides),
                    n,
                    rate,
                    seconds,
                    len(run.consumed.calls),
                    int(stats["changes"]),
                    int(stats["cache_misses"]),
                )
            )
        b_n, b_seconds, b_rate = bare_loop(
            bootstrap,
            topics.name("events"),
            len(events),
            batch=batch,
            out_topic=topics.name("bare-out"),
            group=topics.name("bare.group"),
        )
        if b_n < len(events):
            b_rate = float("nan")
        return WarmResult(runs, b_rate, b_n, b_seconds, produce_rate)
    finally:
        topics.delete(bootstrap)


def raw_encode_rate(encoder, texts: Sequence[str], chunk: int) -> float:
    """Texts/s of the bare ``SentenceTransformer.encode`` on ``texts`` in chunks of ``chunk``."""
    model = encoder.model
    started = time.perf_counter()
    for i in range(0, len(texts), chunk):
        model.encode(
            list(texts[i : i + chunk]),
            batch_size=encoder.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
    return len(texts) / (time.perf_counter() - started)


def cold_throughput(
    bootstrap: str, encoder, ag_news, *, n_texts: int, seed: int = 0, timeout: float = 1200.0
) -> ColdResult:
    """Benchmark 2 (see the module docstring)."""
    events = ag_news_events(ag_news, n_texts, seed=seed)
    texts = [e["text"] for e in events]
    topics = Topics()
    topics.create(bootstrap)
    try:
        produce(bootstrap, topics.name("events"), keyed(events))
        pipe = _pipeline(encoder)
        encoder.encode(["warm-up text"] * 8)  # first-call overhead out of every timing
        run = ServiceRun(bootstrap, topics, pipe)
        chunk = run.settings.batch_max_events
        raw = [raw_encode_rate(encoder, texts, chunk)]
        run.start()
        try:
            run.wait_consumed(len(events), timeout)
        finally:
            run.stop()
        raw.append(raw_encode_rate(encoder, texts, chunk))
        n, seconds, rate = run.rate()
        return ColdResult(
            events=n,
            service_events_per_s=rate,
            service_seconds=seconds,
            raw_texts_per_s=raw,
            encode_batch_size=encoder.batch_size,
            batch_max_events=chunk,
            texts_encoded=int(pipe.counters_snapshot()["texts_encoded"]),
            embed_seconds=float(pipe.counters_snapshot()["embed_seconds"]),
        )
    finally:
        topics.delete(bootstrap)


# ----------------------------------------------------------------------------- paced MovieLens streams
def movielens_stream(bootstrap: str, encoder, movielens_dir, rate: float, seconds: float):
    """What a paced benchmark streams: MovieLens items and their vectors, the events of ``seconds`` at
    ``rate`` and fresh topics with the item catalog published. Returns ``(items, vectors, payloads,
    topics)``; the caller deletes the topics."""
    from bench import product

    events, items = movielens_events(movielens_dir)
    vectors = product.corpus_vectors(list(items.values()), encoder, label="movielens-items")
    topics = Topics()
    topics.create(bootstrap)
    try:
        produce(bootstrap, topics.name("items"), _catalog_records(items))
    except BaseException:
        topics.delete(bootstrap)
        raise
    return items, vectors, events[: int(rate * seconds) + 1], topics


@contextlib.contextmanager
def paced_producer_process(bootstrap: str, topic: str, payloads: list[dict], rate: float, seconds: float):
    """The paced producer (``python -m bench.service paced-producer``) in a subprocess, started and
    ready to send ``payloads`` at ``rate`` for ``seconds``: yields the process, whose last stdout line
    is the count it sent, and kills it on exit if it still runs."""
    import msgspec

    with tempfile.TemporaryDirectory(prefix="bench-paced-") as scratch:
        payload_file = Path(scratch) / "payloads.jsonl"
        enc = msgspec.json.Encoder().encode
        payload_file.write_bytes(b"\n".join(enc([e["user_id"], e]) for e in payloads))
        cmd = [sys.executable, "-m", "bench.service", "paced-producer", bootstrap, topic, str(payload_file),
               str(rate), str(seconds)]
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
        try:
            line = proc.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"the paced producer did not start: {line!r}")
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()


def steady_latency(
    bootstrap: str,
    encoder,
    movielens_dir,
    *,
    rate: float = 1000.0,
    seconds: float = 30.0,
    skip_s: float = 2.0,
    **service_overrides,
) -> LatencyResult:
    """Benchmark 3 (see the module docstring). The first ``skip_s`` seconds are not counted."""
    from stream.metrics import LATENCY_BUCKETS

    items, vectors, payloads, topics = movielens_stream(bootstrap, encoder, movielens_dir, rate, seconds)
    try:
        pipe = _warm_pipeline(encoder, items, vectors)
        run = ServiceRun(bootstrap, topics, pipe, **service_overrides).start()
        try:
            run.wait_ready()
            with paced_producer_process(bootstrap, topics.name("events"), payloads, rate, seconds) as proc:
                t0 = time.perf_counter()
                proc.wait(seconds + 90)
                n_sent = int(proc.stdout.read().strip() or 0)
            run.wait_consumed(n_sent, 60)
        finally:
            run.stop()
        values = [v for t, v in run.latency.calls if t - t0 >= skip_s]
        # the histogram's own view of the same observations
        uppers = [*LATENCY_BUCKETS, float("inf")]
        counts = np.zeros(len(uppers))
        idx = np.searchsorted(np.asarray(LATENCY_BUCKETS), np.asarray(values), side="left")
        np.add.at(counts, idx, 1)
        cumulative = np.cumsum(counts).tolist()
        sizes = [v for t, v in run.consumed.calls if t - t0 >= skip_s]
        durations = [v for t, v in run.batch_seconds.calls if t - t0 >= skip_s]
        return LatencyResult(
            rate=rate,
            seconds=seconds,
            events=len(values),
            p50=exact_quantile(values, 0.5),
            p99=exact_quantile(values, 0.99),
            p999=exact_quantile(values, 0.999),
            max=max(values) if values else float("nan"),
            hist_p50=histogram_quantile(0.5, uppers, cumulative),
            hist_p99=histogram_quantile(0.99, uppers, cumulative),
            batches=len(sizes),
            mean_batch=float(np.mean(sizes)) if sizes else float("nan"),
            batch_p99=exact_quantile(durations, 0.99),
            batch_max=max(durations) if durations else float("nan"),
        )
    finally:
        topics.delete(bootstrap)


def naive_rate(
    encoder, movielens_dir, *, n_events: int = 300, n_clusters: int = 8, seed: int = 0
) -> NaiveResult:
    """Benchmark 4: encode each event alone, river ``KMeans.learn_one`` on the 384-d dict."""
    from river import cluster as river_cluster

    events, items = movielens_events(movielens_dir)
    texts = [items[e["item_id"]] for e in events[:n_events]]
    model = encoder.model
    km = river_cluster.KMeans(n_clusters=n_clusters, seed=seed)
    model.encode(["warm-up"], normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    started = time.perf_counter()
    for text in texts:
        vec = model.encode([text], normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)[
            0
        ]
        km.learn_one(dict(enumerate(vec.tolist())))
    return NaiveResult(len(texts), len(texts) / (time.perf_counter() - started))


# ----------------------------------------------------------------------------- driver
def run(
    report: Report,
    *,
    movielens_dir,
    ag_news,
    quick: bool = False,
    seed: int = 0,
    ag_texts: int = 1000,
    latency_seconds: float = 30.0,
    latency_rate: float = 1000.0,
) -> dict:
    """Run the four service benchmarks and print their tables."""
    from threadpoolctl import threadpool_limits

    from bench import product

    out: dict = {}
    have_ml = (Path(movielens_dir) / "u.data").exists()
    have_ag = Path(ag_news).exists()
    if quick:
        ag_texts, latency_seconds = min(ag_texts, 300), min(latency_seconds, 10.0)
    threadpool_limits(1, user_api="blas")  # what the service sets for itself, set before every run
    encoder = product.sentence_encoder()
    with contextlib.ExitStack() as stack:
        try:
            bootstrap = stack.enter_context(kafka_cluster())
        except Exception as exc:  # only starting the broker: failures of the benchmarks themselves propagate
            report.print(f"[yellow]no Kafka broker ({type(exc).__name__}: {exc}): service benchmarks skipped[/]")
            return out
        report.print(
            f"broker {bootstrap}; service: InterestService in a thread of this process, "
            f"pre-built Pipeline (model loaded once, untimed); default settings (k=8, batches of "
            f"<= 512 records or 50 ms)"
        )
        if have_ml:
            w = warm_throughput(bootstrap, encoder, movielens_dir, limit=10_000 if quick else None)
            out["warm"] = w
            rows = [
                [
                    f"service, {r.label}",
                    r.events,
                    r.seconds,
                    r.events_per_s,
                    r.events_per_s / w.bare_events_per_s,
                    r.batches,
                    r.changes,
                ]
                for r in w.runs
            ]
            rows.append(
                [
                    "bare kafka-python loop: consume, produce 1:1, flush + commit per batch",
                    w.bare_events,
                    w.bare_seconds,
                    w.bare_events_per_s,
                    1.0,
                    "-",
                    "-",
                ]
            )
            report.table(
                "1. Throughput, embedding cache warm (MovieLens 100K positives as item_id events)",
                ["run", "events", "seconds", "events/s", "x bare", "batches", "changes"],
                rows,
                caption=f"cache misses: {', '.join(str(r.cache_misses) for r in w.runs)}; events produced "
                f"beforehand at {w.produce_per_s:,.0f}/s; each run reads the same topic in its own group.",
            )
            main = w.runs[0]
            report.check(
                BENCH, Target(f"1. events/s, cache warm ({main.label})", main.events_per_s, EVENTS_TARGET)
            )
            report.check(
                BENCH,
                Target(
                    f"1. service / bare kafka-python loop ({main.label})",
                    main.events_per_s / w.bare_events_per_s,
                    BARE_RATIO_TARGET,
                    note=f"bare loop {w.bare_events_per_s:,.0f}/s",
                ),
            )
        else:
            report.print(
                f"[yellow]MovieLens 100K not found at {movielens_dir}: benchmarks 1, 3, 4 skipped[/]"
            )
        if have_ag:
            c = cold_throughput(bootstrap, encoder, ag_news, n_texts=ag_texts, seed=seed)
            out["cold"] = c
            report.table(
                f"2. Throughput, every text new (AG News test split, {c.events:,} distinct texts)",
                ["run", "texts", "seconds", "texts/s"],
                [
                    ["service (empty cache)", c.events, c.service_seconds, c.service_events_per_s],
                    *[
                        [f"raw SentenceTransformer.encode ({when})", c.events, c.events / r, r]
                        for when, r in zip(("before", "after"), c.raw_texts_per_s, strict=False)
                    ],
                ],
                caption=f"raw: chunks of {c.batch_max_events} (the service's batch), batch_size="
                f"{c.encode_batch_size}; service encoded {c.texts_encoded:,} texts; ratio "
                f"{c.ratio:.3f} of the raw mean. Within the service's own window (immune to load drift "
                f"between runs): {c.embed_seconds:.1f} s of {c.service_seconds:.1f} s were spent embedding "
                f"({c.embed_seconds / c.service_seconds:.3f}).",
            )
            report.check(
                BENCH, Target("2. every text new: service / raw encode", c.ratio, ENCODE_RATIO_TARGET)
            )
        else:
            report.print(f"[yellow]AG News not found at {ag_news}: benchmark 2 skipped[/]")
        if have_ml:
            lats = [
                (
                    label,
                    steady_latency(
                        bootstrap,
                        encoder,
                        movielens_dir,
                        rate=latency_rate,
                        seconds=latency_seconds,
                        **overrides,
                    ),
                )
                for label, overrides in WARM_CONFIGS
            ]
            out["latency"] = lats
            lat = lats[0][1]
            rows = [
                [name, *[getattr(r, attr) for _, r in lats]]
                for name, attr in (
                    ("p50 (exact, over the histogram's observations)", "p50"),
                    ("p99 (exact)", "p99"),
                    ("p99.9 (exact)", "p999"),
                    ("max", "max"),
                    ("p50 (histogram_quantile over the buckets)", "hist_p50"),
                    ("p99 (histogram_quantile over the buckets)", "hist_p99"),
                    ("batch duration p99 (poll to commit)", "batch_p99"),
                    ("batch duration max", "batch_max"),
                    ("mean events per batch", "mean_batch"),
                )
            ]
            report.table(
                f"3. Event-to-publish latency (seconds) at a steady {lat.rate:,.0f} events/s for "
                f"{lat.seconds:.0f} s (cache warm)",
                ["statistic", *[label for label, _ in lats]],
                rows,
                caption=f"{lat.events:,} events after the first 2 s per run; producer in its own process, "
                "ts = send time; latency = publish time - ts as the service observes it.",
            )
            report.check(
                BENCH,
                Target(
                    f"3. p99 event-to-publish latency, s ({lats[0][0]})",
                    lat.p99,
                    P99_TARGET_S,
                    higher=False,
                    note=f"histogram p99 {lat.hist_p99:.3f} s; "
                    + "; ".join(f"{label}: p99 {r.p99:.3f} s" for label, r in lats[1:]),
                ),
            )
            nv = naive_rate(encoder, movielens_dir, n_events=100 if quick else 300)
            out["naive"] = nv
            rows = [
                [
                    "naive: encode([text]) per event + river KMeans.learn_one (384-d dict)",
                    nv.events,
                    nv.events_per_s,
                    1.0,
                ]
            ]
            if "warm" in out:
                main = out["warm"].runs[0]
                rows.append(
                    [
                        f"service, cache warm (1., {main.label})",
                        main.events,
                        main.events_per_s,
                        main.events_per_s / nv.events_per_s,
                    ]
                )
            if "cold" in out:
                rows.append(
                    [
                        "service, every text new (2.)",
                        out["cold"].events,
                        out["cold"].service_events_per_s,
                        out["cold"].service_events_per_s / nv.events_per_s,
                    ]
                )
            report.table(
                "4. The naive design as a reference (MovieLens catalog texts)",
                ["design", "events", "events/s", "x naive"],
                rows,
            )
        report.targets_table(BENCH, title="Service targets")
    return out


def _main(argv: Sequence[str]) -> int:
    """The paced producer of benchmark 3, in its own process (see :func:`paced_producer`)."""
    if len(argv) != 6 or argv[0] != "paced-producer":
        print("usage: python -m bench.service paced-producer SERVERS TOPIC PAYLOAD_FILE RATE SECONDS\n"
              "(the service benchmarks themselves: python -m bench --only service)", file=sys.stderr)
        return 2
    _, servers, topic_name, payload_path, rate_arg, seconds_arg = argv
    print(paced_producer(servers, topic_name, payload_path, float(rate_arg), float(seconds_arg)))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_main(sys.argv[1:]))
