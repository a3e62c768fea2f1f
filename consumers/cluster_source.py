"""Cluster source: the centroids and assignments topics, read and decoded for ``inspect`` and ``report``.

Reads both compacted topics to their ends with :func:`consumers.topic_reader.read_topic` and
decodes them with :mod:`stream.records`. Records that fail to decode are counted and skipped,
never fatal: a viewer must still show what it can.

Example (decoding needs no broker)::

    >>> from consumers.topic_reader import TopicRecord
    >>> from stream.records import CentroidSnapshot, encode_record
    >>> snap = CentroidSnapshot(cluster=2, vector=[0.1], weight=1.0, label_terms=["a"],
    ...                         model_version=3, emit_ts_ms=5)
    >>> snaps, changes, bad = decode_histories(
    ...     [TopicRecord(0, 0, 5, b"2", encode_record(snap)), TopicRecord(0, 1, 6, b"3", b"{oops")],
    ...     [TopicRecord(0, 0, 7, b"u1", None)])
    >>> [s.cluster for s in snaps], [(c.user_id, c.change) for c in changes], bad
    ([2], [('u1', None)], 1)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from consumers.kafka_config import resolve_bootstrap
from consumers.topic_reader import TopicRecord, read_topic
from stream.cluster_view import UserRecord
from stream.records import CentroidSnapshot, decode_centroid, decode_change

#: Where ``inspect`` and ``report`` look when nothing names a cluster (see :func:`resolve_bootstrap`).
DEFAULT_BOOTSTRAP = "localhost:9092"


def load_for_command(bootstrap_servers: str | None, centroids_topic: str, assignments_topic: str,
                     timeout: float, kafka_option: list[str]):
    """What ``inspect`` and ``report`` share: resolve the cluster and read both topics (or exit 1 saying why).

    Returns ``(bootstrap_servers, histories)``.
    """
    import typer
    from rich.console import Console

    from consumers.settings import parse_kafka_options
    from consumers.topic_reader import TopicNotFound

    err = Console(stderr=True)
    bootstrap = resolve_bootstrap(bootstrap_servers) or DEFAULT_BOOTSTRAP
    try:
        options = parse_kafka_options(kafka_option)
        with err.status(f"reading {centroids_topic!r} and {assignments_topic!r} from {bootstrap}"):
            return bootstrap, load_histories(bootstrap, centroids_topic, assignments_topic, timeout_s=timeout,
                                             kafka_options=options)
    except (TopicNotFound, TimeoutError, ValueError) as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc


def decode_histories(
    centroid_records: Iterable[TopicRecord], assignment_records: Iterable[TopicRecord]
) -> tuple[list[CentroidSnapshot], list[UserRecord], int]:
    """Decode both histories; returns ``(snapshots, user records, number of undecodable records)``.

    Centroid tombstones are skipped (a cluster is never deleted today); assignment tombstones
    become ``UserRecord(user, None, ts)``.
    """
    bad = 0
    snapshots: list[CentroidSnapshot] = []
    for record in centroid_records:
        if record.value is None:
            continue
        try:
            snapshots.append(decode_centroid(record.value))
        except (msgspec.ValidationError, msgspec.DecodeError):
            bad += 1
    changes: list[UserRecord] = []
    for record in assignment_records:
        if record.key is None:
            bad += 1
            continue
        user = record.key.decode("utf-8", errors="replace")
        if record.value is None:
            changes.append(UserRecord(user, None, record.timestamp_ms))
            continue
        try:
            change = decode_change(record.value)
        except (msgspec.ValidationError, msgspec.DecodeError):
            bad += 1
            continue
        changes.append(UserRecord(user, change, record.timestamp_ms))
    return snapshots, changes, bad


@dataclass(frozen=True)
class ClusterHistories:
    """Decoded contents of the two topics, in log order."""

    snapshots: list[CentroidSnapshot]
    changes: list[UserRecord]
    undecodable: int


def load_histories(
    bootstrap_servers: str,
    centroids_topic: str,
    assignments_topic: str,
    *,
    timeout_s: float = 30.0,
    kafka_options: Mapping[str, Any] | None = None,
) -> ClusterHistories:
    """Read both topics to their current ends and decode them."""
    centroids = read_topic(
        bootstrap_servers, centroids_topic, timeout_s=timeout_s, kafka_options=kafka_options
    )
    assignments = read_topic(
        bootstrap_servers, assignments_topic, timeout_s=timeout_s, kafka_options=kafka_options
    )
    snapshots, changes, bad = decode_histories(centroids.history, assignments.history)
    return ClusterHistories(snapshots, changes, bad)
