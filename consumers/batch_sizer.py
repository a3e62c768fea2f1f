"""How many records the next micro-batch may hold: small while the member keeps up, large under backlog.

Every batch costs a transaction round trip (and a statistics record, a model-version check)
whatever its size. At a low rate batches must stay small, or events wait for company and
latency suffers; under a backlog the events are already there, and each transaction should
carry as many as it can. :class:`BatchSizer` decides between the two from the consumer lag
the member sees after each batch (the high-water marks its own fetches brought, so no extra
request):

- lag above the current limit (another full batch is already waiting): the limit doubles,
  up to ``cap_events``;
- lag below half the limit: it halves, back down to ``base_events``;
- a batch also stops at ``cap_bytes`` of record values, whatever the limit, so a backlog of
  large events cannot build a batch that takes minutes to embed.

Example:

>>> sizer = BatchSizer(base_events=512, cap_events=4096, cap_bytes=8 << 20)
>>> [sizer.after_batch(lag) for lag in (100_000, 100_000, 100_000, 100_000, 1000, 100, 0)]
[1024, 2048, 4096, 4096, 2048, 1024, 512]
>>> sizer.full(n_records=511, n_bytes=1000)
False
>>> sizer.full(n_records=10, n_bytes=9 << 20)
True
"""

from __future__ import annotations

from typing import Any

__all__ = ["BatchSizer", "consumer_lag"]


class BatchSizer:
    """The record limit of the next batch (see the module docstring)."""

    def __init__(self, *, base_events: int, cap_events: int, cap_bytes: int) -> None:
        if base_events < 1 or cap_bytes < 1:
            raise ValueError("base_events and cap_bytes must be >= 1")
        self.base_events = int(base_events)
        self.cap_events = max(int(cap_events), self.base_events)
        self.cap_bytes = int(cap_bytes)
        #: The record limit of the next batch.
        self.limit = self.base_events

    def after_batch(self, lag: int | None) -> int:
        """Adjust the limit to the lag seen after a batch (None: unknown, keep it); returns the new limit."""
        if lag is None:
            return self.limit
        if lag > self.limit:
            self.limit = min(self.limit * 2, self.cap_events)
        elif lag < self.limit // 2:
            self.limit = max(self.limit // 2, self.base_events)
        return self.limit

    def full(self, *, n_records: int, n_bytes: int) -> bool:
        """Whether a batch of ``n_records`` records and ``n_bytes`` value bytes must stop collecting."""
        return n_records >= self.limit or n_bytes >= self.cap_bytes


def consumer_lag(consumer: Any) -> int | None:
    """Records waiting on the member's partitions: high-water marks (from its own fetches) minus positions.

    None when unknown (no fetch yet). Cheap: ``highwater`` reads what the last fetch response
    said, and ``position`` of an assigned partition is local.
    """
    total, known = 0, False
    for tp in consumer.assignment():
        hw = consumer.highwater(tp)
        if hw is None:
            continue
        try:
            pos = consumer.position(tp, timeout_ms=0)
        except Exception:  # noqa: BLE001 - a position not known yet is an unknown lag
            continue
        if pos is None:
            continue
        total += max(0, hw - pos)
        known = True
    return total if known else None
