"""Throughput of :func:`stream.events.decode_event` on demo events: ``python -m bench.decode``.

Prints events/s for valid events (with and without the key check), for a mix with 5 % broken
records, and for plain ``msgspec.json.decode`` to a dict as a reference. Numbers only, no targets
asserted.
"""

from __future__ import annotations

import time

import msgspec

from stream.corpora import demo_corpus
from stream.events import decode_event
from stream.simulation import simulate

BROKEN = [
    b'{"user_id": "u1", "text": "trunc',
    b'{"text": "no user"}',
    b'{"user_id": "u", "ts": "soon", "text": "x"}',
    b"\xff\xfe",
    b'{"user_id": "u", "text": "x", "weight": -1}',
]


def _rate(fn, items, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn(items)
        best = min(best, time.perf_counter() - started)
    return len(items) / best


def main(n: int = 200_000) -> None:
    scenario = simulate(
        demo_corpus(), n_users=max(1, n // 40), mean_events_per_user=40, content="both", seed=0
    )
    raws = [msgspec.json.encode(e) for e in scenario.events][:n]
    keys = [e["user_id"].encode() for e in scenario.events][:n]
    mixed = [BROKEN[i % len(BROKEN)] if i % 20 == 0 else r for i, r in enumerate(raws)]
    print(f"{len(raws):,} demo events, mean {sum(map(len, raws)) / len(raws):.0f} bytes (text + item_id)")

    def plain(items):
        for raw in items:
            decode_event(raw, record_ts_ms=1)

    def keyed(items):
        for raw, key in zip(items, keys, strict=False):
            decode_event(raw, record_ts_ms=1, key=key)

    def reference(items):
        for raw in items:
            msgspec.json.decode(raw)

    print(f"decode_event, valid events          : {_rate(plain, raws):>12,.0f} events/s")
    print(f"decode_event, valid events + key    : {_rate(keyed, raws):>12,.0f} events/s")
    print(f"decode_event, 5 % broken records    : {_rate(plain, mixed):>12,.0f} events/s")
    print(f"msgspec.json.decode to dict (ref.)  : {_rate(reference, raws):>12,.0f} events/s")


if __name__ == "__main__":
    main()
