"""The Kafka clients of one service member, built from its settings.

- :func:`set_up_topics`: the topics the member needs, created when missing (``create_topics``)
  and checked when present (:func:`consumers.topics.ensure_topics`: cleanup policy, and the
  co-partitioned topics' partition counts against the events topic's); returns the events
  topic's partition count, which fixes every user's partition.
- :func:`make_producer`: acks=all; with ``exactly_once`` transactional (the member's fixed
  transactional id, so a restarted member fences its predecessor in ``init_transactions``).
- :func:`make_events_consumer`: the consumer-group member on the events topic, read_committed,
  offsets committed by the service only, subscribed with the given rebalance listener.
- :func:`transaction_wait_s`: the longest wait for one transactional step.
- :func:`make_trainer_producer`, :func:`make_trainer_consumer`: the trainer role's clients (a
  second consumer group on the one-partition statistics topic elects it; its producer's fixed
  transactional id fences a previous trainer).
- :func:`make_model_reader`: an assigned (group-less) read_committed reader of the model topic.

Example (the topic plan for the default settings; no broker needed):

>>> from consumers.settings import ServiceSettings
>>> settings = ServiceSettings.load(overrides={"bootstrap_servers": "kafka:9092"})
>>> [(t.role, t.partitions, t.cleanup_policy) for t in topic_plan(settings, n_events=6)][:3]
[('assignments', 6, 'compact'), ('profiles changelog', 6, 'compact'), ('model', 1, 'compact')]
"""

from __future__ import annotations

import logging
from typing import Any

from consumers.settings import ServiceSettings
from consumers.topics import COMPACT_TUNING, TopicSpec, ensure_topics

log = logging.getLogger("interest_stream.service")

__all__ = ["make_events_consumer", "make_model_reader", "make_producer", "make_trainer_consumer", "make_trainer_producer",
           "set_up_topics", "topic_plan", "transaction_wait_s"]


def topic_plan(settings: ServiceSettings, n_events: int) -> list[TopicSpec]:
    """Every topic but the events topic; the co-partitioned ones get its partition count ``n_events``."""
    s = settings
    profiles, model, statistics = s.changelog_topics()
    compact = COMPACT_TUNING
    big = {**compact, "max.message.bytes": str(s.max_request_size)}
    return [
        TopicSpec("assignments", s.assignments_topic, n_events, "compact", s.replication_factor, configs=compact),
        TopicSpec("profiles changelog", profiles, n_events, "compact", s.replication_factor, configs=compact),
        TopicSpec("model", model, 1, "compact", s.replication_factor, configs=big),
        TopicSpec("statistics", statistics, 1, "delete", s.replication_factor,
                  configs={"max.message.bytes": str(s.max_request_size), "retention.ms": str(7 * 86_400_000)}),
        TopicSpec("centroids", s.centroids_topic, s.centroids_partitions, "compact", s.replication_factor,
                  configs=compact),
        TopicSpec("dead_letters", s.dead_letter_topic, s.dead_letter_partitions, "delete", s.replication_factor),
        TopicSpec("items", s.items_topic, s.items_partitions, "compact", s.replication_factor, configs=compact),
    ]


def set_up_topics(settings: ServiceSettings, admin) -> int:
    """Create or check every topic of the member; returns the events topic's partition count.

    Raises :class:`consumers.topics.TopicMismatchError` when an existing topic cannot work
    (wrong cleanup policy, fewer partitions than the events topic where they are co-partitioned).
    """
    s = settings
    events = TopicSpec("events", s.events_topic, s.events_partitions, "delete", s.replication_factor)
    created = ensure_topics(admin, [events], create=s.create_topics)
    described = admin.describe_topics([s.events_topic])
    n_events = len(described[0].get("partitions") or []) or s.events_partitions
    created += ensure_topics(admin, topic_plan(s, n_events), create=s.create_topics)
    if created:
        log.info("created topics: %s", ", ".join(created))
    return n_events


def transaction_wait_s(settings: ServiceSettings) -> float:
    """Longest wait for a transactional step before the producer is dropped and the batch redone."""
    return max(15.0, 2 * settings.transaction_timeout_ms / 1000.0)


def make_producer(settings: ServiceSettings, *, transactional_id: str | None = None, client: str = "producer"):
    """The member's producer: transactional under ``exactly_once`` (fencing its predecessor), else idempotent-ish.

    ``transactional_id`` (the trainer's) makes it transactional whatever the guarantee.
    """
    from kafka import KafkaProducer

    s = settings
    transactional = transactional_id is not None or s.processing_guarantee == "exactly_once"
    options: dict[str, Any] = {
        "client_id": f"{s.client_id}-{client}", "acks": "all", "linger_ms": 5,
        "max_request_size": s.max_request_size, **s.kafka_client_options(),
    }
    if transactional:
        # A new transaction right after a commit often meets CONCURRENT_TRANSACTIONS while the
        # markers are written: retry it in 20 ms, not the default 100 ms.
        options.update(transactional_id=transactional_id or s.transactional_id,
                       transaction_timeout_ms=s.transaction_timeout_ms, retry_backoff_ms=20)
    else:
        options.update(retries=5, max_in_flight_requests_per_connection=1)
    producer = KafkaProducer(**options)
    if transactional:
        try:
            producer.init_transactions()  # fences a predecessor with the same id, aborting its open transaction
        except Exception:
            producer.close(timeout=0)
            raise
    return producer


def make_trainer_producer(settings: ServiceSettings):
    """The trainer's producer: always transactional, with the group's fixed trainer transactional id."""
    return make_producer(settings, transactional_id=settings.trainer_transactional_id, client="trainer")


def make_trainer_consumer(settings: ServiceSettings, listener):
    """A member of the trainer's consumer group on the one-partition statistics topic: its owner trains."""
    from kafka import KafkaConsumer

    s = settings
    _, _, statistics = s.changelog_topics()
    consumer = KafkaConsumer(
        group_id=s.trainer_group_id, client_id=f"{s.client_id}-trainer", enable_auto_commit=False,
        auto_offset_reset="earliest", max_poll_records=s.trainer_max_records,
        max_poll_interval_ms=s.max_poll_interval_ms, session_timeout_ms=s.session_timeout_ms,
        heartbeat_interval_ms=max(1000, s.session_timeout_ms // 3), fetch_max_bytes=2 * s.max_request_size,
        max_partition_fetch_bytes=2 * s.max_request_size,
        isolation_level="read_committed", **s.kafka_client_options())
    consumer.subscribe([statistics], listener=listener)
    return consumer


def make_model_reader(settings: ServiceSettings):
    """A group-less read_committed consumer of the model topic's partition 0, from its beginning."""
    from kafka import KafkaConsumer, TopicPartition

    s = settings
    _, model, _ = s.changelog_topics()
    consumer = KafkaConsumer(
        client_id=f"{s.client_id}-model", enable_auto_commit=False, group_id=None,
        isolation_level="read_committed", fetch_max_bytes=2 * s.max_request_size,
        max_partition_fetch_bytes=2 * s.max_request_size, **s.kafka_client_options())
    tp = TopicPartition(model, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    return consumer


def make_events_consumer(settings: ServiceSettings, listener):
    """The consumer-group member on the events topic (read_committed; the service commits offsets)."""
    from kafka import KafkaConsumer

    s = settings
    consumer = KafkaConsumer(
        group_id=s.group_id, client_id=f"{s.client_id}-events", enable_auto_commit=False,
        auto_offset_reset="earliest", max_poll_records=s.batch_max_events,
        max_poll_interval_ms=s.max_poll_interval_ms, session_timeout_ms=s.session_timeout_ms,
        heartbeat_interval_ms=max(1000, s.session_timeout_ms // 3),
        isolation_level="read_committed", **s.kafka_client_options())
    consumer.subscribe([s.events_topic], listener=listener)
    return consumer
