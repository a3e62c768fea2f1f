"""Following the item catalog: a compacted topic of item id -> text (and metadata).

Events may name an ``item_id`` instead of carrying a text; the service resolves it through the
pipeline's :class:`stream.catalog.ItemCatalog`, which this follower fills from the items topic.
It reads every partition to its end before the first event is processed (:meth:`load_all`,
ending on the consumer's position reaching the end offsets, so transaction markers cannot stall
it), then keeps following between batches (:meth:`follow`). A tombstone removes an item. A bad
record (not JSON, no id, no text) is handed to ``on_bad(record, reason, detail)``: the service
dead-letters it with the next commit.

Example (needs a broker, so not run as a doctest)::

    follower = CatalogFollower(settings, pipeline.catalog, on_bad=dead_letter)
    follower.load_all()
    ...
    follower.follow(timeout_ms=0)  # between batches
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import msgspec

from consumers.settings import ServiceSettings
from consumers.topic_reader import read_to_end

log = logging.getLogger("interest_stream.service")

__all__ = ["CatalogFollower"]


class CatalogFollower:
    """Reads the compacted item catalog topic into the pipeline's catalog and follows it."""

    def __init__(self, settings: ServiceSettings, catalog, on_bad: Callable[[Any, str, str], None]) -> None:
        from kafka import KafkaConsumer, TopicPartition

        self.catalog = catalog
        self.on_bad = on_bad
        self.consumer = KafkaConsumer(
            client_id=f"{settings.client_id}-catalog",
            max_partition_fetch_bytes=settings.max_request_size,
            enable_auto_commit=False,
            group_id=None,
            isolation_level="read_committed",
            **settings.kafka_client_options(),
        )
        parts = self.consumer.partitions_for_topic(settings.items_topic) or set()
        self.partitions = [TopicPartition(settings.items_topic, p) for p in sorted(parts)]
        self.consumer.assign(self.partitions)
        if self.partitions:
            self.consumer.seek_to_beginning(*self.partitions)

    def load_all(self, timeout_s: float = 120.0) -> int:
        """Read every partition up to the end offsets taken now; returns items loaded."""
        applied = 0

        def apply(_tp, records) -> None:
            nonlocal applied
            applied += sum(self._apply(rec) for rec in records)

        try:
            read_to_end(self.consumer, self.partitions, apply, timeout_s=timeout_s, past_end=True, max_records=5000)
        except TimeoutError as exc:
            log.warning("item catalog not read to its end (%s); following it from here", exc)
        return applied

    def follow(self, timeout_ms: int = 0) -> int:
        polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=5000)
        n = 0
        for records in polled.values():
            for rec in records:
                n += self._apply(rec)
        return n

    def _apply(self, rec) -> int:
        item_id = rec.key.decode("utf-8", "replace") if rec.key else None
        if rec.value is None:
            if item_id:
                self.catalog.remove(item_id)
            return 0
        try:
            value = msgspec.json.decode(rec.value)
        except (msgspec.DecodeError, UnicodeDecodeError):
            self.on_bad(rec, "bad_catalog_record", "catalog value is not JSON")
            return 0
        if isinstance(value, str):
            value = {"text": value}
        if not isinstance(value, dict):
            self.on_bad(rec, "bad_catalog_record", "catalog value is not a JSON object or string")
            return 0
        item_id = str(value.get("item_id") or item_id or "")
        text = value.get("text")
        if not item_id or not isinstance(text, str) or not text.strip():
            self.on_bad(rec, "bad_catalog_record", "catalog record needs an item id (key) and a non-empty text")
            return 0
        meta = {k: v for k, v in value.items() if k not in ("item_id", "text")}
        self.catalog.upsert(item_id, text, meta or None)
        return 1

    def close(self) -> None:
        self.consumer.close()
