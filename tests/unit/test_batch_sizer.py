"""The adaptive micro-batch limit (consumers/batch_sizer.py), with a fake consumer."""

from __future__ import annotations

from consumers.batch_sizer import BatchSizer, consumer_lag


class FakeConsumer:
    """Partitions with a high-water mark and a position; ``consume(n)`` moves positions forward."""

    def __init__(self, backlog: dict[int, int]) -> None:
        self.hw = dict(backlog)
        self.pos = dict.fromkeys(backlog, 0)

    def assignment(self):
        return set(self.hw)

    def highwater(self, tp):
        return self.hw[tp]

    def position(self, tp, timeout_ms=None):
        return self.pos[tp]

    def consume(self, n: int) -> int:
        taken = 0
        for tp in sorted(self.hw):
            k = min(n - taken, self.hw[tp] - self.pos[tp])
            self.pos[tp] += k
            taken += k
        return taken


def test_batches_grow_to_the_cap_under_a_backlog_and_shrink_when_it_is_gone():
    consumer = FakeConsumer({0: 30_000, 1: 30_000})
    sizer = BatchSizer(base_events=512, cap_events=4096, cap_bytes=1 << 30)
    sizes = []
    while consumer_lag(consumer):
        sizes.append(consumer.consume(sizer.limit))
        sizer.after_batch(consumer_lag(consumer))
    assert sizes[:4] == [512, 1024, 2048, 4096], sizes
    assert max(sizes) == 4096 and sum(sizes) == 60_000
    assert sizes.count(4096) >= 10, "most of the backlog goes in full batches"
    # caught up: events trickle in one by one, and the limit is back at the base within a few batches
    for _ in range(5):
        consumer.hw[0] += 1
        consumer.consume(sizer.limit)
        sizer.after_batch(consumer_lag(consumer))
    assert sizer.limit == 512


def test_a_batch_stops_at_the_byte_cap_and_an_unknown_lag_keeps_the_limit():
    sizer = BatchSizer(base_events=100, cap_events=1000, cap_bytes=10_000)
    assert not sizer.full(n_records=50, n_bytes=9_999)
    assert sizer.full(n_records=50, n_bytes=10_000) and sizer.full(n_records=100, n_bytes=0)
    assert sizer.after_batch(None) == 100
    assert consumer_lag(FakeConsumer({})) is None
    consumer = FakeConsumer({0: 5})
    consumer.hw[0] = None
    assert consumer_lag(consumer) is None, "no fetch yet: the lag is unknown"
