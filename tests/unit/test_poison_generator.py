"""The poison generator (tests/poison.py) itself: deterministic, big enough, every kind present, and
every entry rejected by the decoder for exactly the reason it expects (no Kafka, no model)."""

from __future__ import annotations

from collections import Counter

from poison import KINDS, REASONS, RECORD_TS_MS, poison_messages

from stream.corpora import demo_corpus
from stream.events import BehaviourEvent, Rejection, decode_event


def test_poison_is_deterministic_and_covers_every_kind():
    batch = poison_messages(10_000, seed=3)
    assert len(batch) == 10_000
    assert batch == poison_messages(10_000, seed=3)
    assert batch != poison_messages(10_000, seed=4)
    kinds = Counter(p.kind for p in batch)
    assert set(kinds) == set(KINDS)
    assert min(kinds.values()) >= 2
    sizes = [len(p.value) for p in batch if p.value is not None]
    assert sum(s > 64 * 1024 for s in sizes) >= 2, "values over 64 KiB"
    assert max(sizes) < 1024 * 1024, "every value fits the broker's default 1 MiB"
    assert all(p.key is not None or p.value is not None for p in batch), "Kafka needs a key or a value"


def test_decoder_rejects_every_poison_for_the_expected_reason():
    catalog = {d.item_id for d in demo_corpus().documents}
    batch = poison_messages(10_000, seed=3, known_items=catalog)
    wrong = []
    reasons = Counter()
    for p in batch:
        got = decode_event(p.value, key=p.key, record_ts_ms=RECORD_TS_MS)
        if p.expected == "unknown_item":  # decoding accepts it; the embedding stage knows the catalog
            ok = type(got) is BehaviourEvent and got.text is None and got.item_id not in catalog
            reason = "unknown_item" if ok else getattr(got, "reason", repr(got))
        else:
            ok = isinstance(got, Rejection) and got.reason in REASONS and got.reason != "internal" and (
                p.expected is None or got.reason == p.expected)
            reason = getattr(got, "reason", repr(got))
        reasons[reason] += 1
        if not ok:
            wrong.append((p.kind, p.expected, reason, (p.value or b"")[:120]))
    assert not wrong, f"{len(wrong)} entries decoded unexpectedly, e.g. {wrong[:5]}"
    # the generator reaches every reason the decoder and the embedder can give for an event
    # (wrong_partition depends on where a record lands, so only the service can give it)
    assert set(reasons) >= REASONS - {"internal", "wrong_partition"}, REASONS - set(reasons)
