"""``interest-stream demo``: the whole system on one machine, in one command.

1. find a Kafka cluster (``INTEREST_STREAM_BOOTSTRAP_SERVERS``, else ``KAFKA_BOOTSTRAP_SERVERS``, else
   the broker of ``interest-stream broker start``, else a throw-away local broker started here);
2. publish the built-in item catalog and start ``interest-stream run`` on fresh topics
   (their names start with ``demo-<time>``);
3. produce simulated users live (events stamped with the current time, a few broken
   records among them, some users drifting to a new interest midway);
4. show a live view for ``--duration`` seconds: clusters with their label terms and sizes,
   events/s, consumer lag, end-to-end latency, dead letters, and the metrics URL;
5. stop the producer, let the service catch up (until it has consumed every record sent and
   reports no lag; at most ``--drain-timeout`` seconds), stop it with SIGTERM (it finishes its
   batch, commits and leaves the group), print a summary, and stop the broker if the demo
   started it. The summary reconciles: records sent = events applied + records dead-lettered
   (+ users forgotten). It reports the end-to-end latency of the start-up backlog (events queued
   while the service warmed up, until it first kept up with the producer) apart from the
   steady-state latency after it.

The demo's topics get the partition counts of the service's settings (``events_partitions``,
``items_partitions``, defaults or ``INTEREST_STREAM_*``), so the service finds them as configured.

Example::

    $ interest-stream demo --duration 60 --users 300 --rate 200
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import typer

#: Deliberately broken records, to show the dead-letter topic: (key, value).
BROKEN_RECORDS: list[tuple[bytes | None, bytes]] = [
    (None, b'{"user_id": "user-0001", "text": "truncated'),
    (b"user-0002", b'{"user_id": "user-0002", "ts": "yesterday", "text": "when?"}'),
    (None, b'{"type": "view", "text": "whose view is this?"}'),
    (b"user-0003", b'{"user_id": "user-0003", "type": "like", "weight": -2, "item_id": "cook-001"}'),
    (b"user-0004", b'{"user_id": "user-0004", "item_id": "no-such-item"}'),
    (None, b"\xff\xfe\x00 binary garbage"),
]


class LiveProducer(threading.Thread):
    """Sends simulated events at a steady rate, stamping each with the current time."""

    def __init__(self, bootstrap: str, topic: str, events: list[dict], rate: float) -> None:
        super().__init__(name="demo-producer", daemon=True)
        self.bootstrap, self.topic, self.events, self.rate = bootstrap, topic, events, rate
        self.sent = 0
        self.broken = 0
        self.failed = 0  # sends the broker did not acknowledge (counted by the producer's I/O thread)
        self.started_at: float | None = None
        self.stop_event = threading.Event()

    @property
    def records(self) -> int:
        """Records written to the topic so far: events and broken records, less failed sends."""
        return self.sent + self.broken - self.failed

    def _on_error(self, _exc: BaseException) -> None:
        self.failed += 1

    def run(self) -> None:
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5,
                                 client_id="interest-stream-demo")
        start = self.started_at = time.monotonic()
        every = max(1, len(self.events) // (len(BROKEN_RECORDS) + 1))
        try:
            for i, event in enumerate(self.events):
                if self.stop_event.is_set():
                    break
                ahead = start + i / self.rate - time.monotonic()
                if ahead > 0 and self.stop_event.wait(ahead):
                    break
                event = {**event, "ts": int(time.time() * 1000)}
                future = producer.send(self.topic, key=event["user_id"].encode(), value=json.dumps(event).encode())
                future.add_errback(self._on_error)
                self.sent += 1
                if i % every == every - 1 and self.broken < len(BROKEN_RECORDS):
                    key, value = BROKEN_RECORDS[self.broken]
                    producer.send(self.topic, key=key, value=value).add_errback(self._on_error)
                    self.broken += 1
            producer.flush(timeout=30)
        finally:
            producer.close(timeout=10)


class MetricsView:
    """Reads the service's /metrics and turns counters into rates between two reads."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.prev: dict | None = None
        self.prev_t = 0.0
        self.now: dict = {}
        self.now_t = 0.0

    def scrape(self) -> bool:
        import urllib.request

        from prometheus_client.parser import text_string_to_metric_families

        try:
            with urllib.request.urlopen(self.url + "/metrics", timeout=2) as resp:
                body = resp.read().decode()
        except OSError:
            return False
        samples: dict = {}
        for family in text_string_to_metric_families(body):
            for s in family.samples:
                samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
        self.prev, self.prev_t = self.now, self.now_t
        self.now, self.now_t = samples, time.monotonic()
        return True

    def total(self, name: str, snapshot: dict | None = None) -> float:
        snap = self.now if snapshot is None else snapshot
        return sum(v for (n, _), v in snap.items() if n == name)

    def rate(self, name: str) -> float:
        if not self.prev or self.now_t <= self.prev_t:
            return 0.0
        return (self.total(name) - self.total(name, self.prev)) / (self.now_t - self.prev_t)

    def by_label(self, name: str, label: str) -> dict[str, float]:
        return {dict(labels)[label]: v for (n, labels), v in self.now.items() if n == name and label in dict(labels)}

    def buckets(self, name: str, snapshot: dict | None = None) -> dict[float, float]:
        """A histogram's cumulative bucket counts ``{le: count}`` in a snapshot (default: the last read)."""
        snap = self.now if snapshot is None else snapshot
        return {float(dict(labels)["le"]): v for (n, labels), v in snap.items() if n == name + "_bucket"}

    def quantile(self, name: str, q: float, recent: bool = True, since: dict | None = None) -> float | None:
        """A histogram quantile, like PromQL's histogram_quantile: over the last interval (``recent``),
        since the snapshot ``since`` (a past ``now``), or since the start."""
        now = self.buckets(name)
        base = since if since is not None else (self.prev if recent else None)
        if base:
            before = self.buckets(name, base)
            now = {le: v - before.get(le, 0.0) for le, v in now.items()}
        return histogram_quantile(now, q)


def histogram_quantile(cumulative: dict[float, float], q: float) -> float | None:
    """The ``q`` quantile of cumulative bucket counts ``{upper bound: count}`` (None when empty).

    >>> histogram_quantile({0.1: 50.0, 0.5: 90.0, 1.0: 100.0, float("inf"): 100.0}, 0.5)
    0.1
    >>> round(histogram_quantile({0.1: 50.0, 0.5: 90.0, 1.0: 100.0, float("inf"): 100.0}, 0.7), 3)
    0.3
    >>> histogram_quantile({0.1: 0.0, float("inf"): 0.0}, 0.5) is None
    True
    """
    if not cumulative:
        return None
    bounds = sorted(cumulative)
    total = cumulative[bounds[-1]]
    if total <= 0:
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for le in bounds:
        if cumulative[le] >= rank:
            if le == float("inf"):
                return lower
            width = cumulative[le] - below
            return lower + (le - lower) * ((rank - below) / width if width > 0 else 1.0)
        lower, below = le, cumulative[le]
    return lower


@dataclass
class Backlog:
    """The start-up backlog: events queued while the service warmed up, until it first kept up.

    The service has kept up once it has consumed every record the producer had written by the
    previous read of its metrics (about a second earlier). ``snapshot`` is the metrics read at
    that moment: latencies observed after it are the steady state.
    """

    seconds: float | None = None
    snapshot: dict | None = None
    _written_before: int = 0

    def observe(self, view: MetricsView, producer: LiveProducer, written_before_read: int) -> None:
        """Call after each read of ``view``, with ``producer.records`` taken just before that read."""
        if self.snapshot is None and self._written_before > 0 and producer.started_at is not None:
            if view.total("interest_events_consumed_total") >= self._written_before:
                self.seconds = time.monotonic() - producer.started_at
                self.snapshot = view.now
        self._written_before = written_before_read


def demo(
    duration: float = typer.Option(60.0, "--duration", min=5, help="Seconds of live view before the clean stop."),
    users: int = typer.Option(300, "--users", min=1, help="Simulated users."),
    events_per_user: float = typer.Option(40.0, "--events-per-user", min=1, help="Mean events per user."),
    rate: float = typer.Option(200.0, "--rate", min=1, help="Events per second sent by the demo producer."),
    clusters: int = typer.Option(10, "--clusters", "-k", min=2, help="Number of interest clusters."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the simulation."),
    metrics_port: int = typer.Option(0, "--metrics-port", help="Port of the service's /metrics (0: a free one)."),
    drain_timeout: float = typer.Option(
        120.0, "--drain-timeout", min=0,
        help="After the live view: longest wait for the service to consume every record sent before it is stopped."),
) -> None:
    """The full experience: broker, topics, demo producer, the clusterer and a live view; then a clean stop."""
    from rich.console import Console

    from consumers import devbroker
    from consumers.commands.produce import publish_catalog
    from consumers.settings import ServiceSettings
    from stream.corpora import demo_corpus
    from stream.simulation import simulate

    console = Console()
    with console.status("Finding or starting a Kafka broker (the first run fetches its jars with Maven)..."):
        try:
            bootstrap, started = devbroker.bootstrap_servers_or_start()
        except devbroker.BrokerError as exc:
            console.print(f"[red]Could not start a local Kafka broker:[/red] {exc}")
            raise typer.Exit(1) from None
    console.print(f"Kafka at [bold]{bootstrap}[/bold]" + (" (started for this demo)" if started else ""))
    prefix = time.strftime("demo-%Y%m%d-%H%M%S")
    topics = {name: f"{prefix}.{name}" for name in ("events", "assignments", "centroids", "dead-letters", "items")}
    workdir = Path(tempfile.mkdtemp(prefix="interest-stream-demo-"))
    port = metrics_port or devbroker.free_port()
    # The partition counts the service checks its topics against: its defaults, or INTEREST_STREAM_*
    # (the service below inherits this environment).
    settings = ServiceSettings.load(overrides={"bootstrap_servers": bootstrap})
    service = None
    producer = None
    backlog = Backlog()
    url = f"http://127.0.0.1:{port}"
    try:
        from consumers.kafka_config import admin_client
        from consumers.topics import TopicSpec, ensure_topics

        with admin_client(bootstrap, "interest-stream-demo-admin") as admin:
            ensure_topics(admin, [TopicSpec("events", topics["events"], settings.events_partitions, "delete")])
        n_items = publish_catalog(bootstrap, topics["items"], partitions=settings.items_partitions)
        console.print(f"published {n_items} catalog items on [bold]{topics['items']}[/bold]")
        cmd = [sys.executable, "-m", "consumers.cli", "run", "--bootstrap-servers", bootstrap,
               "--events-topic", topics["events"], "--assignments-topic", topics["assignments"],
               "--centroids-topic", topics["centroids"], "--dead-letter-topic", topics["dead-letters"],
               "--items-topic", topics["items"], "--group-id", f"{prefix}.group", "--clusters", str(clusters),
               "--metrics-host", "127.0.0.1", "--metrics-port", str(port), "--instance-id", "demo"]
        log_path = workdir / "service.log"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        with open(log_path, "wb") as log:
            service = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        console.print(f"service starting (log: {log_path}); metrics at [bold]{url}/metrics[/bold]")
        view = MetricsView(url)
        with console.status("Loading the embedding model and joining the consumer group..."):
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                if service.poll() is not None:
                    console.print(f"[red]the service exited ({service.returncode})[/red]; see {log_path}")
                    raise typer.Exit(1)
                if view.scrape() and view.total("interest_ready") == 1:
                    break
                time.sleep(0.5)
        scenario = simulate(demo_corpus(), n_users=users, mean_events_per_user=events_per_user,
                            content="item_id", drift_fraction=0.2, seed=seed)
        producer = LiveProducer(bootstrap, topics["events"], scenario.events, rate)
        producer.start()
        console.print(f"producing {len(scenario.events)} events of {users} users at {rate:.0f}/s "
                      f"(20% drift to a new interest midway); live view for {duration:.0f} s, Ctrl-C stops early")
        _live(console, view, bootstrap, topics["centroids"], producer, duration, backlog)
    except KeyboardInterrupt:
        console.print("interrupted: stopping cleanly")
    finally:
        if producer is not None:
            producer.stop_event.set()
            producer.join(30)
        code = None
        if service is not None:
            final = MetricsView(url)
            caught_up = False
            if producer is not None and service.poll() is None:
                try:
                    caught_up = _drain(console, final, producer, service, drain_timeout)
                except KeyboardInterrupt:
                    console.print("interrupted: not waiting for the service to catch up")
                if not caught_up:
                    console.print("[yellow]the service had not consumed every record sent; the summary will not "
                                  "reconcile[/yellow]")
            with console.status("Stopping the service (SIGTERM: finish the batch, commit, leave the group)..."):
                final.scrape()
                service.send_signal(signal.SIGTERM)
                try:
                    code = service.wait(60)
                except subprocess.TimeoutExpired:
                    service.kill()
                    code = service.wait(10)
            _summary(console, final, bootstrap, topics, producer, code, backlog)
        if started is not None:
            with console.status("Stopping the broker started for this demo..."):
                started.stop()
    console.print(f"done. Service log: {workdir / 'service.log'}")
    if code not in (0, None):
        raise typer.Exit(1)


def _labels(bootstrap: str, topic: str) -> dict[int, list[str]]:
    from consumers.topic_reader import TopicNotFound, read_topic

    try:
        contents = read_topic(bootstrap, topic, timeout_s=5)
    except (TopicNotFound, TimeoutError):
        return {}
    out = {}
    for value in contents.latest.values():
        try:
            snap = json.loads(value)
            out[int(snap["cluster"])] = list(snap.get("label_terms") or [])
        except (ValueError, KeyError, TypeError):
            continue
    return out


def _render(view: MetricsView, labels: dict[int, list[str]], producer: LiveProducer, elapsed: float, duration: float):
    from rich.console import Group
    from rich.table import Table

    head = Table.grid(padding=(0, 3))
    for _ in range(4):
        head.add_column()
    p50 = view.quantile("interest_end_to_end_latency_seconds", 0.5)
    p99 = view.quantile("interest_end_to_end_latency_seconds", 0.99)
    lat = "-" if p50 is None else f"{p50 * 1000:.0f} / {p99 * 1000:.0f} ms"
    head.add_row(f"[bold]{elapsed:.0f}[/bold]/{duration:.0f} s", f"sent [bold]{producer.sent}[/bold]",
                 f"consumed [bold]{view.total('interest_events_consumed_total'):.0f}[/bold] "
                 f"({view.rate('interest_events_consumed_total'):.0f}/s)",
                 f"lag [bold]{view.total('interest_consumer_lag_messages'):.0f}[/bold]")
    rejected = view.by_label("interest_events_rejected_total", "reason")
    head.add_row(f"users [bold]{view.total('interest_users_tracked'):.0f}[/bold]",
                 f"model v[bold]{view.total('interest_model_version'):.0f}[/bold]",
                 f"latency p50/p99 [bold]{lat}[/bold]",
                 f"dead letters [bold]{sum(rejected.values()):.0f}[/bold]")
    table = Table(title="clusters", title_style="bold", expand=False)
    table.add_column("cluster", justify="right")
    table.add_column("users", justify="right")
    table.add_column("", min_width=20)
    table.add_column("label terms")
    sizes = {int(c): v for c, v in view.by_label("interest_cluster_size_users", "cluster").items()}
    biggest = max(sizes.values(), default=1) or 1
    for cluster in sorted(sizes, key=lambda c: -sizes[c]):
        bar = "█" * int(round(20 * sizes[cluster] / biggest))
        table.add_row(str(cluster), f"{sizes[cluster]:.0f}", f"[cyan]{bar}[/cyan]", ", ".join(labels.get(cluster, [])))
    return Group(head, table)


def _live(console, view: MetricsView, bootstrap: str, centroids_topic: str, producer: LiveProducer,
          duration: float, backlog: Backlog) -> None:
    from rich.live import Live

    start = time.monotonic()
    labels: dict[int, list[str]] = {}
    labels_at = 0.0
    with Live(console=console, refresh_per_second=2, transient=False) as live:
        while (elapsed := time.monotonic() - start) < duration:
            written = producer.records
            if view.scrape():
                backlog.observe(view, producer, written)
            if time.monotonic() - labels_at > 5:
                labels = _labels(bootstrap, centroids_topic) or labels
                labels_at = time.monotonic()
            live.update(_render(view, labels, producer, elapsed, duration))
            time.sleep(1)


def _drain(console, view: MetricsView, producer: LiveProducer, service: subprocess.Popen, timeout: float) -> bool:
    """With the producer stopped: wait until the service has consumed every record written and
    reports no consumer lag (at most ``timeout`` seconds). True when it caught up."""
    target = producer.records
    deadline = time.monotonic() + timeout
    with console.status("Letting the service catch up with the producer...") as status:
        while True:
            if view.scrape():
                consumed = view.total("interest_events_consumed_total")
                lag = view.total("interest_consumer_lag_messages")
                if consumed >= target and lag == 0:
                    return True
                status.update(f"Letting the service catch up: {consumed:.0f} of {target} records consumed, "
                              f"lag {lag:.0f}...")
            if service.poll() is not None or time.monotonic() >= deadline:
                return False
            time.sleep(0.5)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


def _summary(console, view: MetricsView, bootstrap: str, topics: dict, producer, code, backlog: Backlog) -> None:
    from rich.table import Table

    table = Table(title="demo summary", title_style="bold", show_header=False)
    table.add_column()
    table.add_column(justify="right")
    sent = producer.sent if producer else 0
    broken = producer.broken if producer else 0
    written = producer.records if producer else 0
    table.add_row("events sent (+ broken records)", f"{sent} (+{broken})")
    if producer is not None and producer.failed:
        table.add_row("[red]sends that failed[/red]", str(producer.failed))
    table.add_row("records consumed by the service", f"{view.total('interest_events_consumed_total'):.0f}")
    applied = view.total("interest_events_applied_total")
    table.add_row("events applied to profiles", f"{applied:.0f}")
    rejected = view.by_label("interest_events_rejected_total", "reason")
    for reason, n in sorted(rejected.items()):
        if n:
            table.add_row(f"dead-lettered: {reason}", f"{n:.0f}")
    forgotten = view.total("interest_users_forgotten_total")
    dead = sum(rejected.values())
    if written == applied + dead + forgotten:
        parts = f"{applied:.0f} applied + {dead:.0f} dead-lettered" + (f" + {forgotten:.0f} forgotten" if forgotten else "")
        table.add_row("reconciled", f"yes: {written} records = {parts}")
    else:
        table.add_row("reconciled", f"[red]no[/red]: {written} records written, "
                      f"{applied + dead + forgotten:.0f} applied or dead-lettered")
    table.add_row("assignment changes published", f"{view.total('interest_assignment_changes_total'):.0f}")
    table.add_row("users", f"{view.total('interest_users_tracked'):.0f}")
    table.add_row("model version", f"{view.total('interest_model_version'):.0f}")
    latency = "interest_end_to_end_latency_seconds"
    if backlog.snapshot is not None:
        start = backlog.snapshot
        n_start = view.total(latency + "_count", start)
        p99_start = histogram_quantile(view.buckets(latency, start), 0.99)
        table.add_row("start-up backlog (until the service kept up)",
                      f"{backlog.seconds:.0f} s, {n_start:.0f} events, p99 {_ms(p99_start)} ms")
        n_steady = view.total(latency + "_count") - n_start
        p50, p99 = view.quantile(latency, 0.5, since=start), view.quantile(latency, 0.99, since=start)
        table.add_row("end-to-end latency p50 / p99 (steady state)",
                      f"{_ms(p50)} / {_ms(p99)} ms ({n_steady:.0f} events)")
    else:
        table.add_row("start-up backlog (until the service kept up)", "not drained while producing")
    p99 = view.quantile(latency, 0.99, recent=False)
    table.add_row("end-to-end latency p99 (whole run)", f"{_ms(p99)} ms")
    table.add_row("service exit code", str(code))
    console.print(table)
    console.print("topics: " + ", ".join(topics.values()))
    console.print(f"look again any time: interest-stream inspect -b {bootstrap} "
                  f"--centroids-topic {topics['centroids']} --assignments-topic {topics['assignments']}")
