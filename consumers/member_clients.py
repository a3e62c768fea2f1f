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

Example (the topic plan for the default settings; no broker needed):

>>> from consumers.settings import ServiceSettings
>>> settings = ServiceSettings.load(overrides={"bootstrap_servers": "kafka:9092"})
>>> [(t.role, t.partitions, t.cleanup_policy) for t in topic_plan(settings, n_events=6)][:3]
[('assignments', 6, 'compact'), ('profiles changelog', 6, 'compact'), ('model changelog', 1, 'compact')]
"""

from __future__ import annotations

import logging
from typing import Any

from consumers.settings import ServiceSettings
from consumers.topics import COMPACT_TUNING, TopicSpec, ensure_topics

log = logging.getLogger("interest_stream.service")

__all__ = ["make_events_consumer", "make_producer", "set_up_topics", "topic_plan", "transaction_wait_s"]


def topic_plan(settings: ServiceSettings, n_events: int) -> list[TopicSpec]:
    """Every topic but the events topic; the co-partitioned ones get its partition count ``n_events``."""
    s = settings
    profiles, model, updates = s.changelog_topics()
    compact = COMPACT_TUNING
    big = {**compact, "max.message.bytes": str(s.max_request_size)}
    return [
        TopicSpec("assignments", s.assignments_topic, n_events, "compact", s.replication_factor, configs=compact),
        TopicSpec("profiles changelog", profiles, n_events, "compact", s.replication_factor, configs=compact),
        TopicSpec("model changelog", model, 1, "compact", s.replication_factor, configs=big),
        TopicSpec("model updates", updates, 1, "delete", s.replication_factor,
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


def make_producer(settings: ServiceSettings):
    """The member's producer: transactional under ``exactly_once`` (fencing its predecessor), else idempotent-ish."""
    from kafka import KafkaProducer

    s = settings
    exactly_once = s.processing_guarantee == "exactly_once"
    options: dict[str, Any] = {
        "client_id": f"{s.client_id}-producer", "acks": "all", "linger_ms": 5,
        "max_request_size": s.max_request_size, **s.kafka_client_options(),
    }
    if exactly_once:
        # A new transaction right after a commit often meets CONCURRENT_TRANSACTIONS while the
        # markers are written: retry it in 20 ms, not the default 100 ms.
        options.update(transactional_id=s.transactional_id, transaction_timeout_ms=s.transaction_timeout_ms,
                       retry_backoff_ms=20)
    else:
        options.update(retries=5, max_in_flight_requests_per_connection=1)
    producer = KafkaProducer(**options)
    if exactly_once:
        try:
            producer.init_transactions()  # fences a predecessor with the same id, aborting its open transaction
        except Exception:
            producer.close(timeout=0)
            raise
    return producer


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
