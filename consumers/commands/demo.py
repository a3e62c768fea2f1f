"""``interest-stream demo``: the whole system on one machine, in one command.

1. find a Kafka cluster (``KAFKA_BOOTSTRAP_SERVERS``, else the broker of
   ``interest-stream broker start``, else a throw-away local broker started here);
2. publish the built-in item catalog and start ``interest-stream run`` on fresh topics
   (their names start with ``demo-<time>``);
3. produce simulated users live (events stamped with the current time, a few broken
   records among them, some users drifting to a new interest midway);
4. show a live view for ``--duration`` seconds: clusters with their label terms and sizes,
   events/s, consumer lag, end-to-end latency, dead letters, and the metrics URL;
5. stop the producer, stop the service with SIGTERM (it finishes its batch, commits and
   leaves the group), print a summary, and stop the broker if the demo started it.

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
        self.stop_event = threading.Event()

    def run(self) -> None:
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5,
                                 client_id="interest-stream-demo")
        start = time.monotonic()
        every = max(1, len(self.events) // (len(BROKEN_RECORDS) + 1))
        try:
            for i, event in enumerate(self.events):
                if self.stop_event.is_set():
                    break
                ahead = start + i / self.rate - time.monotonic()
                if ahead > 0 and self.stop_event.wait(ahead):
                    break
                event = {**event, "ts": int(time.time() * 1000)}
                producer.send(self.topic, key=event["user_id"].encode(), value=json.dumps(event).encode())
                self.sent += 1
                if i % every == every - 1 and self.broken < len(BROKEN_RECORDS):
                    key, value = BROKEN_RECORDS[self.broken]
                    producer.send(self.topic, key=key, value=value)
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

    def quantile(self, name: str, q: float, recent: bool = True) -> float | None:
        """A histogram quantile over the last interval (or since start), like PromQL's histogram_quantile."""
        def buckets(snap: dict) -> dict[float, float]:
            return {float(dict(labels)["le"]): v for (n, labels), v in snap.items() if n == name + "_bucket"}

        now = buckets(self.now)
        if recent and self.prev:
            before = buckets(self.prev)
            now = {le: v - before.get(le, 0.0) for le, v in now.items()}
        if not now:
            return None
        bounds = sorted(now)
        total = now[bounds[-1]]
        if total <= 0:
            return None
        rank, lower, below = q * total, 0.0, 0.0
        for le in bounds:
            if now[le] >= rank:
                if le == float("inf"):
                    return lower
                width = now[le] - below
                return lower + (le - lower) * ((rank - below) / width if width > 0 else 1.0)
            lower, below = le, now[le]
        return lower


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def demo(
    duration: float = typer.Option(60.0, "--duration", min=5, help="Seconds of live view before the clean stop."),
    users: int = typer.Option(300, "--users", min=1, help="Simulated users."),
    events_per_user: float = typer.Option(40.0, "--events-per-user", min=1, help="Mean events per user."),
    rate: float = typer.Option(200.0, "--rate", min=1, help="Events per second sent by the demo producer."),
    clusters: int = typer.Option(10, "--clusters", "-k", min=2, help="Number of interest clusters."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the simulation."),
    metrics_port: int = typer.Option(0, "--metrics-port", help="Port of the service's /metrics (0: a free one)."),
) -> None:
    """The full experience: broker, topics, demo producer, the clusterer and a live view; then a clean stop."""
    from rich.console import Console

    from consumers import devbroker
    from consumers.commands.produce import publish_catalog
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
    port = metrics_port or _free_port()
    service = None
    producer = None
    try:
        from consumers.commands.produce import ensure_topic

        ensure_topic(bootstrap, topics["events"], partitions=3)
        n_items = publish_catalog(bootstrap, topics["items"], partitions=1)
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
        url = f"http://127.0.0.1:{port}"
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
        _live(console, view, bootstrap, topics["centroids"], producer, duration)
    except KeyboardInterrupt:
        console.print("interrupted: stopping cleanly")
    finally:
        if producer is not None:
            producer.stop_event.set()
            producer.join(30)
        code = None
        if service is not None:
            with console.status("Stopping the service (SIGTERM: finish the batch, commit, leave the group)..."):
                final = MetricsView(f"http://127.0.0.1:{port}")
                final.scrape()
                service.send_signal(signal.SIGTERM)
                try:
                    code = service.wait(60)
                except subprocess.TimeoutExpired:
                    service.kill()
                    code = service.wait(10)
            _summary(console, final, bootstrap, topics, producer, code)
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
          duration: float) -> None:
    from rich.live import Live

    start = time.monotonic()
    labels: dict[int, list[str]] = {}
    labels_at = 0.0
    with Live(console=console, refresh_per_second=2, transient=False) as live:
        while (elapsed := time.monotonic() - start) < duration:
            view.scrape()
            if time.monotonic() - labels_at > 5:
                labels = _labels(bootstrap, centroids_topic) or labels
                labels_at = time.monotonic()
            live.update(_render(view, labels, producer, elapsed, duration))
            time.sleep(1)


def _summary(console, view: MetricsView, bootstrap: str, topics: dict, producer, code) -> None:
    from rich.table import Table

    table = Table(title="demo summary", title_style="bold", show_header=False)
    table.add_column()
    table.add_column(justify="right")
    sent = producer.sent if producer else 0
    broken = producer.broken if producer else 0
    table.add_row("events sent (+ broken records)", f"{sent} (+{broken})")
    table.add_row("records consumed by the service", f"{view.total('interest_events_consumed_total'):.0f}")
    table.add_row("events applied to profiles", f"{view.total('interest_events_applied_total'):.0f}")
    for reason, n in sorted(view.by_label("interest_events_rejected_total", "reason").items()):
        if n:
            table.add_row(f"dead-lettered: {reason}", f"{n:.0f}")
    table.add_row("assignment changes published", f"{view.total('interest_assignment_changes_total'):.0f}")
    table.add_row("users", f"{view.total('interest_users_tracked'):.0f}")
    table.add_row("model version", f"{view.total('interest_model_version'):.0f}")
    p99 = view.quantile("interest_end_to_end_latency_seconds", 0.99, recent=False)
    table.add_row("end-to-end latency p99 (whole run)", "-" if p99 is None else f"{p99 * 1000:.0f} ms")
    table.add_row("service exit code", str(code))
    console.print(table)
    console.print("topics: " + ", ".join(topics.values()))
    console.print(f"look again any time: interest-stream inspect -b {bootstrap} "
                  f"--centroids-topic {topics['centroids']} --assignments-topic {topics['assignments']}")
