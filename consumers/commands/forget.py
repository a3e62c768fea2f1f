"""``interest-stream forget USER_ID``: ask the service to delete a user everywhere.

Sends the control event ``{"type": "forget", "user_id": ...}`` keyed by the user id to
the events topic, so it lands on the partition (and member) that owns the user. The
service removes the profile and publishes a tombstone on the assignments topic.

The cluster is found as by every command (:func:`consumers.kafka_config.resolve_bootstrap`):
``--bootstrap-servers``, else ``INTEREST_STREAM_BOOTSTRAP_SERVERS``, else ``KAFKA_BOOTSTRAP_SERVERS``,
else the broker of ``interest-stream broker start``; with none of them it exits 2.

Example::

    $ interest-stream forget user-42 --bootstrap-servers 127.0.0.1:9092
"""

from __future__ import annotations

import time
from typing import Annotated

import typer

from consumers.kafka_config import NO_CLUSTER_HINT, bootstrap_help, resolve_bootstrap


def forget(
    user_ids: Annotated[list[str], typer.Argument(help="User id(s) to forget.")],
    bootstrap_servers: Annotated[str | None, typer.Option(help=bootstrap_help("an error (exit code 2)"))] = None,
    events_topic: Annotated[str, typer.Option(help="The service's events topic.", envvar="INTEREST_STREAM_EVENTS_TOPIC")] = "events",
) -> None:
    """Send a forget control event for each user id (the service deletes the profile and tombstones the assignment)."""
    from kafka import KafkaProducer

    from stream.events import ForgetEvent, encode_event

    servers = resolve_bootstrap(bootstrap_servers)
    if not servers:
        typer.echo(f"no Kafka bootstrap servers: {NO_CLUSTER_HINT}", err=True)
        raise typer.Exit(2)
    producer = KafkaProducer(bootstrap_servers=servers.split(","), acks="all")
    now = int(time.time() * 1000)
    for user_id in user_ids:
        producer.send(events_topic, key=user_id.encode(), value=encode_event(ForgetEvent(user_id=user_id, ts_ms=now)))
    producer.flush(timeout=30)
    producer.close()
    typer.echo(f"sent forget for {len(user_ids)} user(s) to {events_topic}")
