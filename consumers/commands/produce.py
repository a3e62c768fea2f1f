"""``interest-stream produce``: write behaviour events to the events topic.

Two sources:

- ``--demo``: simulated users reading the built-in demo catalog (:func:`stream.simulation.simulate`
  over :func:`stream.corpora.demo_corpus`); with ``--catalog-topic`` the catalog itself is also
  published (key = item id, value ``{"item_id", "text", "topic"}``).
- ``--file events.jsonl``: replays a JSONL file line by line. Lines are sent unchanged (only the
  line ending is removed; empty lines are skipped), keyed by the line's ``user_id`` when it has one,
  without a key otherwise: broken lines still reach the service, which dead-letters them.

Records are keyed by user id, so one user's events stay in order on one partition. The topic is
created when missing. The cluster is ``--bootstrap-servers``, else ``INTEREST_STREAM_BOOTSTRAP_SERVERS``,
else ``KAFKA_BOOTSTRAP_SERVERS``, else the broker started by ``interest-stream broker start``
(:func:`consumers.kafka_config.resolve_bootstrap`); with none of them it exits 2.

Example::

    $ interest-stream broker start
    $ interest-stream produce --demo --users 200 --events-per-user 30 --catalog-topic items
    $ interest-stream produce --file my-events.jsonl --topic events --rate 500

The record sources work without Kafka:

>>> records = list(demo_records(users=3, events_per_user=4, seed=1)[0])
>>> key, value = records[0]
>>> key == json.loads(value)["user_id"].encode()
True
>>> key_of(b'{"user_id": 42, "text": "x"}'), key_of(b'{"user_id": ""}'), key_of(b"not json")
(b'42', None, None)
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import typer

from consumers.kafka_config import NO_CLUSTER_HINT, admin_client, bootstrap_help, resolve_bootstrap
from consumers.topics import COMPACT_TUNING, TopicMismatchError, TopicSpec, ensure_topics

__all__ = [
    "ProduceStats",
    "demo_records",
    "file_records",
    "key_of",
    "produce",
    "publish_catalog",
    "send_records",
]

Record = tuple[bytes | None, bytes]


class _UserOnly(msgspec.Struct):
    user_id: Any = None


_user_decoder = msgspec.json.Decoder(_UserOnly)


def key_of(line: bytes) -> bytes | None:
    """The record key for a raw event: its ``user_id`` (a string or an integer) as UTF-8, else None."""
    try:
        user_id = _user_decoder.decode(line).user_id
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    if isinstance(user_id, bool) or not isinstance(user_id, str | int):
        return None
    text = str(user_id)
    return text.encode("utf-8") if text else None


def demo_records(
    *, users: int, events_per_user: float, seed: int, drift_fraction: float = 0.2, content: str = "text",
    truth_out: Path | None = None,
) -> tuple[Iterator[Record], int]:
    """Simulated demo events as ``(key, value)`` records, and how many there are."""
    from stream.corpora import demo_corpus
    from stream.simulation import simulate

    duration_s = 3600.0
    start = int(time.time() * 1000) - int(duration_s * 1000)
    scenario = simulate(
        demo_corpus(), n_users=users, mean_events_per_user=events_per_user, drift_fraction=drift_fraction,
        start_ts_ms=start, duration_s=duration_s, content=content, seed=seed,
    )
    if truth_out is not None:
        scenario.truth_to_json(truth_out)
    encoder = msgspec.json.Encoder()
    records = ((e["user_id"].encode("utf-8"), encoder.encode(e)) for e in scenario.events)
    return records, len(scenario.events)


def _lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        for line in handle:
            if line.endswith(b"\n"):
                line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
            if line:
                yield line


def file_records(path: Path) -> tuple[Iterator[Record], int]:
    """The non-empty lines of a JSONL file as ``(key_of(line), line)`` records, and how many there are."""
    total = sum(1 for _ in _lines(path))
    return ((key_of(line), line) for line in _lines(path)), total


def _create_if_missing(bootstrap: str, spec: TopicSpec) -> bool:
    """Create ``spec``'s topic with :func:`consumers.topics.ensure_topics` unless it exists; True when created.

    An existing topic is written to as it is: ``produce`` is no judge of its partitions or policy.
    """
    with admin_client(bootstrap, "interest-stream-produce-admin") as admin:
        if spec.name in set(admin.list_topics()):
            return False
        return spec.name in ensure_topics(admin, [spec])


@dataclass
class ProduceStats:
    """What :func:`send_records` did."""

    sent: int = 0
    keyed: int = 0
    failed: int = 0
    bytes: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


def _producer(bootstrap: str, **overrides: Any):
    from kafka import KafkaProducer

    options: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "acks": "all",
        "linger_ms": 5,
        "client_id": "interest-stream-produce",
        **overrides,
    }
    return KafkaProducer(**options)


def send_records(
    bootstrap: str,
    topic: str,
    records: Iterable[Record],
    *,
    total: int | None = None,
    rate: float = 0.0,
    progress: bool = True,
    producer_options: dict[str, Any] | None = None,
) -> ProduceStats:
    """Send ``(key, value)`` records to ``topic``; at most ``rate`` records/s when ``rate > 0``.

    Every record is acknowledged by all in-sync replicas (``acks=all``) before this returns;
    failures are counted (and the first few kept) rather than raised.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    stats = ProduceStats()

    def failed(exc: BaseException) -> None:
        stats.failed += 1
        if len(stats.errors) < 5:
            stats.errors.append(repr(exc))

    producer = _producer(bootstrap, **(producer_options or {}))
    started = time.perf_counter()
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    try:
        with Progress(*columns, disable=not progress, transient=False) as bar:
            task = bar.add_task(f"producing to {topic}", total=total)
            for key, value in records:
                if rate > 0:
                    ahead = started + stats.sent / rate - time.perf_counter()
                    if ahead > 0:
                        time.sleep(ahead)
                producer.send(topic, value=value, key=key).add_errback(failed)
                stats.sent += 1
                stats.keyed += key is not None
                stats.bytes += len(value)
                if stats.sent % 256 == 0:
                    bar.update(task, completed=stats.sent)
            producer.flush()
            bar.update(task, completed=stats.sent)
    finally:
        producer.close()
    stats.seconds = time.perf_counter() - started
    return stats


def publish_catalog(bootstrap: str, topic: str, *, partitions: int = 3) -> int:
    """Publish the demo catalog on a compacted topic (key = item id); return the number of items."""
    from stream.corpora import demo_corpus

    _create_if_missing(bootstrap, TopicSpec("items", topic, partitions, "compact", configs=COMPACT_TUNING))
    records = [
        (doc.item_id.encode(), json.dumps({"item_id": doc.item_id, "text": doc.text, "topic": doc.topic}).encode())
        for doc in demo_corpus().documents
    ]
    stats = send_records(bootstrap, topic, records, total=len(records), progress=False)
    if stats.failed:
        raise RuntimeError(f"{stats.failed} catalog records failed: {stats.errors}")
    return stats.sent


def produce(
    demo: bool = typer.Option(False, "--demo", help="Produce simulated users reading the built-in demo catalog."),
    file: Path | None = typer.Option(
        None, "--file", "-f", exists=True, dir_okay=False, readable=True,
        help="Replay this JSONL file: every non-empty line is sent unchanged, keyed by its user_id when it has one."),
    bootstrap_servers: str | None = typer.Option(
        None, "--bootstrap-servers", "-b", help=bootstrap_help("an error (exit code 2)")),
    topic: str = typer.Option("events", "--topic", "-t", help="Topic to write the events to."),
    partitions: int = typer.Option(6, min=1, help="Partitions of the events topic if it has to be created."),
    users: int = typer.Option(200, "--users", min=1, help="--demo: number of simulated users."),
    events_per_user: float = typer.Option(
        30.0, "--events-per-user", min=0.01, help="--demo: mean events per user (Poisson, at least 1)."),
    drift: float = typer.Option(
        0.2, "--drift", min=0.0, max=1.0, help="--demo: share of users whose main interest switches midway."),
    content: str = typer.Option(
        "text", "--content", help="--demo: what events carry: text, item_id (resolved via the catalog) or both."),
    seed: int = typer.Option(0, "--seed", help="--demo: random seed (same seed, same events)."),
    truth_out: Path | None = typer.Option(
        None, "--truth-out", dir_okay=False, help="--demo: write the simulated users' true interests to this JSON file."),
    rate: float = typer.Option(0.0, "--rate", min=0.0, help="Events per second; 0 = as fast as possible."),
    catalog_topic: str | None = typer.Option(
        None, "--catalog-topic",
        help="--demo: also publish the demo catalog to this compacted topic (key item_id, value {item_id, text, topic})."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Write behaviour events (simulated demo users, or a JSONL file) to the events topic, keyed by user id."""
    from rich.console import Console

    console = Console(stderr=True)
    if demo == (file is not None):
        console.print("[red]Give exactly one of --demo or --file.[/red]")
        raise typer.Exit(2)
    if content not in ("text", "item_id", "both"):
        console.print(f"[red]--content must be text, item_id or both, not {content!r}.[/red]")
        raise typer.Exit(2)
    bootstrap = resolve_bootstrap(bootstrap_servers)
    if bootstrap is None:
        console.print(f"[red]No Kafka cluster:[/red] {NO_CLUSTER_HINT}.", highlight=False, soft_wrap=True)
        raise typer.Exit(2)

    from kafka.errors import KafkaError

    try:
        if _create_if_missing(bootstrap, TopicSpec("events", topic, partitions, "delete")):
            console.print(f"created topic [bold]{topic}[/bold] ({partitions} partitions)")
        if demo and catalog_topic:
            n_items = publish_catalog(bootstrap, catalog_topic)
            console.print(f"published {n_items} catalog items to [bold]{catalog_topic}[/bold]")
        if demo:
            records, total = demo_records(
                users=users, events_per_user=events_per_user, seed=seed, drift_fraction=drift, content=content,
                truth_out=truth_out,
            )
            source = f"demo: {users} users, seed {seed}"
        else:
            assert file is not None
            records, total = file_records(file)
            source = str(file)
        stats = send_records(bootstrap, topic, records, total=total, rate=rate, progress=not quiet)
    except KafkaError as exc:
        console.print(f"[red]Kafka error talking to {bootstrap}:[/red] {exc!r}")
        raise typer.Exit(1) from None
    except TopicMismatchError as exc:
        console.print(f"[red]Topic configuration:[/red] {exc}")
        raise typer.Exit(1) from None

    from rich.table import Table

    table = Table(title=f"produced to {topic} on {bootstrap}", show_header=False)
    table.add_row("source", source)
    table.add_row("records sent", f"{stats.sent:,}")
    table.add_row("with a user_id key", f"{stats.keyed:,}")
    table.add_row("failed", f"{stats.failed:,}")
    table.add_row("bytes", f"{stats.bytes:,}")
    table.add_row("time", f"{stats.seconds:.2f} s ({stats.rate:,.0f} records/s)")
    if truth_out is not None and demo:
        table.add_row("truth", str(truth_out))
    Console().print(table)
    if stats.failed:
        console.print(f"[red]{stats.failed} records were not delivered[/red], e.g. {stats.errors[0]}")
        raise typer.Exit(1)
