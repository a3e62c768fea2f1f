"""``interest-stream run``: the streaming service (one consumer-group member).

Settings come from flags, ``INTEREST_STREAM_*`` environment variables and an optional
TOML file (``--config``), in that order of precedence; see :mod:`consumers.settings`. The
cluster follows the rule every command follows (:func:`consumers.kafka_config.resolve_bootstrap`),
with the file in its place among the settings: ``--bootstrap-servers``, else
``INTEREST_STREAM_BOOTSTRAP_SERVERS``, else ``bootstrap_servers`` in the file, else
``KAFKA_BOOTSTRAP_SERVERS``, else the broker of ``interest-stream broker start``, else exit 2.

Example::

    $ interest-stream run --bootstrap-servers 127.0.0.1:9092 --clusters 8 --metrics-port 9108
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from consumers.kafka_config import BOOTSTRAP_ENV, SERVICE_BOOTSTRAP_ENV, normalise_servers, running_dev_broker

Opt = typer.Option
BOOTSTRAP_HELP = (
    f"Kafka bootstrap servers host:port[,...]. Default: ${SERVICE_BOOTSTRAP_ENV}, else bootstrap_servers in "
    f"--config, else ${BOOTSTRAP_ENV}, else the broker of `interest-stream broker start`, else an error (exit code 2)."
)


def run(
    config: Annotated[Path | None, Opt("--config", "-c", help="TOML config file (top-level keys = setting names; [kafka] and [clustering] tables).", exists=True, dir_okay=False)] = None,
    bootstrap_servers: Annotated[str | None, Opt(help=BOOTSTRAP_HELP)] = None,
    group_id: Annotated[str | None, Opt(help="Consumer group id [default: interest-stream].")] = None,
    events_topic: Annotated[str | None, Opt(help="Input events topic [default: events].")] = None,
    assignments_topic: Annotated[str | None, Opt(help="Assignment-change output topic, compacted [default: assignments].")] = None,
    centroids_topic: Annotated[str | None, Opt(help="Centroid snapshot topic, compacted [default: centroids].")] = None,
    dead_letter_topic: Annotated[str | None, Opt(help="Dead-letter topic [default: dead-letters].")] = None,
    items_topic: Annotated[str | None, Opt(help="Item catalog topic, compacted [default: items].")] = None,
    events_partitions: Annotated[int | None, Opt(help="Partitions of the events topic if it is created [default: 6].")] = None,
    clusters: Annotated[int | None, Opt("--clusters", "-k", help="Number of interest clusters [default: 8].")] = None,
    half_life_s: Annotated[float | None, Opt(help="Half-life of user profiles, seconds of event time [default: 604800].")] = None,
    kmeans_half_life: Annotated[float | None, Opt(help="Half-life of centroid statistics, in batches [default: 50].")] = None,
    hysteresis: Annotated[float | None, Opt(help="Cosine margin a new cluster must win by before a change is published [default: 0.005].")] = None,
    model: Annotated[str | None, Opt(help="Local sentence-transformers model directory [default: packaged all-MiniLM-L6-v2].")] = None,
    device: Annotated[str | None, Opt(help="torch device, e.g. cpu or cuda [default: cuda when available].")] = None,
    backend: Annotated[str | None, Opt(help="Encoder backend: torch, openvino or openvino-int8 [default: openvino-int8]; a non-CPU --device selects torch.")] = None,
    batch_max_events: Annotated[int | None, Opt(help="Largest micro-batch in records [default: 512].")] = None,
    batch_max_wait_ms: Annotated[int | None, Opt(help="Longest wait for a batch to fill after its first record [default: 50].")] = None,
    unknown_item_policy: Annotated[str | None, Opt(help="Events naming an unknown item: dead_letter or wait [default: dead_letter].")] = None,
    processing_guarantee: Annotated[str | None, Opt(help="exactly_once (outputs, changelogs and offsets in one transaction) or at_least_once (faster; a crash can repeat a batch) [default: exactly_once].")] = None,
    instance_id: Annotated[str | None, Opt(help="Stable identity of this member; the transactional id is <group-id>-<instance-id> [default: host name].")] = None,
    model_snapshot_every: Annotated[int | None, Opt(help="The trainer writes its whole state to the model topic every N model transactions; the statistics log covers the ones between [default: 100].")] = None,
    metrics_host: Annotated[str | None, Opt(help="Bind address of /metrics, /healthz, /readyz [default: 0.0.0.0].")] = None,
    metrics_port: Annotated[int | None, Opt(help="Port of /metrics, /healthz, /readyz [default: 9108].")] = None,
    kafka_option: Annotated[list[str] | None, Opt("--kafka-option", "-X", help="Extra kafka-python client setting KEY=VALUE (repeatable), e.g. -X security_protocol=SASL_SSL -X sasl_mechanism=SCRAM-SHA-512. Java-style dotted names work too.")] = None,
    log_level: Annotated[str | None, Opt(help="DEBUG, INFO, WARNING or ERROR [default: INFO].")] = None,
) -> None:
    """Run the streaming clusterer: consume events, publish assignment changes, centroids and dead letters.

    Exactly-once by default: each micro-batch's outputs, changelog writes and consumed offsets commit in
    one Kafka transaction. State (profiles, model, last assignments) is restored from the changelog and
    assignments topics on start and on every partition assignment.
    SIGTERM/SIGINT finish the current batch, commit and leave the group (exit 0).
    Exit code 2: invalid settings or Kafka refused the credentials.
    """
    from pydantic import ValidationError

    from consumers.settings import parse_kafka_options

    overrides = {
        "bootstrap_servers": normalise_servers(bootstrap_servers), "group_id": group_id, "events_topic": events_topic,
        "assignments_topic": assignments_topic, "centroids_topic": centroids_topic,
        "dead_letter_topic": dead_letter_topic, "items_topic": items_topic,
        "events_partitions": events_partitions, "batch_max_events": batch_max_events,
        "batch_max_wait_ms": batch_max_wait_ms, "unknown_item_policy": unknown_item_policy,
        "processing_guarantee": processing_guarantee, "instance_id": instance_id,
        "model_snapshot_every": model_snapshot_every,
        "metrics_host": metrics_host, "metrics_port": metrics_port, "log_level": log_level,
        "kafka": parse_kafka_options(kafka_option) if kafka_option else None,
        "clustering": {"n_clusters": clusters, "half_life_s": half_life_s, "kmeans_half_life": kmeans_half_life,
                       "hysteresis": hysteresis, "model_path": model, "device": device,
                       "backend": backend},
    }
    try:
        settings = load_settings(config, overrides)
    except (ValidationError, ValueError) as exc:
        typer.echo(f"invalid settings: {exc}", err=True)
        raise typer.Exit(2) from None
    logging.basicConfig(
        level=settings.log_level, stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("kafka").setLevel(logging.WARNING if settings.log_level != "DEBUG" else logging.DEBUG)
    from consumers.service import InterestService

    raise typer.Exit(InterestService(settings).run())


def load_settings(config: Path | None, overrides: dict):
    """``ServiceSettings.load``; when nothing names the cluster, the live ``broker start`` broker does.

    Flags, ``INTEREST_STREAM_BOOTSTRAP_SERVERS``, the file and ``KAFKA_BOOTSTRAP_SERVERS`` are the
    settings' own business; only when they leave the bootstrap servers empty (and loading fails) is
    the development broker tried, by loading again with its address as the flag.
    """
    from pydantic import ValidationError

    from consumers.settings import ServiceSettings

    try:
        return ServiceSettings.load(config, overrides)
    except (ValidationError, ValueError):
        broker = None if overrides.get("bootstrap_servers") else running_dev_broker()
        if broker is None:
            raise
        return ServiceSettings.load(config, {**overrides, "bootstrap_servers": broker})
