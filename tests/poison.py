"""Malformed input for the events topic: a seeded generator of poison messages with the reason each
must be rejected for.

:func:`poison_messages` returns :class:`Poison` entries ``(key, value, expected, kind)``: the record
key and value to produce, the ``reason`` that :func:`stream.events.decode_event` (or, for
``unknown_item``, the embedding stage) gives it, or ``None`` where any rejection is acceptable
(arbitrary bytes), and the kind of damage, for diagnostics. No entry is a valid event: every one must
end on the dead-letter topic. Kinds (see ``KINDS``): arbitrary bytes, invalid UTF-8, broken JSON,
NaN/Infinity literals, JSON that is not an object, wrong types and values for every field
(``user_id``, ``type``, ``ts``, ``text``, ``item_id``, ``event_id``, ``weight``), numbers out of the
float range, missing keys, empty and null values, key/``user_id`` mismatches (including valid events
of real users under a non-UTF-8 key or another user's key), values over 64 KiB,
texts over 10,000 characters, deep nesting, and unknown items. Every value stays under 1 MiB (the
broker's default ``message.max.bytes``). Poison users are named ``poison-<n>``, so they never collide
with simulated users, except in ``foreign_key`` entries given ``real_users``; no entry is a ``forget``
event.

>>> batch = poison_messages(200, seed=1)
>>> len(batch), batch == poison_messages(200, seed=1), {p.kind for p in batch} == set(KINDS)
(200, True, True)
>>> from stream.events import Rejection, decode_event
>>> p = next(p for p in batch if p.kind == "weight")
>>> decode_event(p.value, key=p.key, record_ts_ms=RECORD_TS_MS).reason == p.expected == "bad_weight"
True
>>> all(p.expected is None or p.expected in REASONS for p in batch)
True
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable
from typing import NamedTuple

from stream.events import RejectReason

__all__ = ["KINDS", "REASONS", "RECORD_TS_MS", "Poison", "poison_messages"]

#: A plausible Kafka record timestamp, for checking entries with decode_event outside Kafka.
RECORD_TS_MS = 1_700_000_000_000
REASONS = frozenset(r.value for r in RejectReason)
MAX_VALUE_BYTES = 900 * 1024  # under the broker's default 1 MiB message.max.bytes


class Poison(NamedTuple):
    """One malformed record: key, value, the expected rejection reason (None: any), the kind of damage."""

    key: bytes | None
    value: bytes | None
    expected: str | None
    kind: str


def _dump(obj: object) -> bytes:
    # allow_nan: Python's json writes NaN / Infinity literals, which are not JSON
    return json.dumps(obj, allow_nan=True).encode()


class _Maker:
    """Builds one poison message of a kind; ``n`` numbers the poison users."""

    def __init__(self, rng: random.Random, known_items: frozenset[str], real_users: tuple[str, ...] = ()) -> None:
        self.rng = rng
        self.known_items = known_items
        self.real_users = real_users
        self.n = 0

    # -- helpers
    def user(self) -> str:
        self.n += 1
        return f"poison-{self.n}"

    def ts(self) -> int:
        return RECORD_TS_MS + self.rng.randrange(3_600_000)

    def text(self) -> str:
        words = ("shoes", "garden", "jazz", "sourdough", "tent", "router", "chess", "kayak", "novel", "yoga")
        return " ".join(self.rng.choice(words) for _ in range(self.rng.randint(1, 6)))

    def event(self, **fields: object) -> dict:
        """A valid event for a fresh poison user, with ``fields`` replaced (``_DROP`` removes a key)."""
        ev: dict[str, object] = {"user_id": self.user(), "ts": self.ts(), "type": "view", "text": self.text()}
        for name, value in fields.items():
            if value is _DROP:
                ev.pop(name, None)
            else:
                ev[name] = value
        return ev

    def keyed(self, ev: dict, value: bytes, expected: str | None, kind: str) -> Poison:
        """Key it by its user id (when that is a string) or not at all, at random: both are legal."""
        user = ev.get("user_id")
        key = user.encode() if isinstance(user, str) and self.rng.random() < 0.7 else None
        return Poison(key, value, expected, kind)

    def field(self, kind: str, name: str, bad: Iterable[tuple[object, str]]) -> Poison:
        value, reason = self.rng.choice(list(bad))
        ev = self.event(**{name: value})
        return self.keyed(ev, _dump(ev), reason, kind)

    # -- kinds
    def arbitrary_bytes(self) -> Poison:
        size = self.rng.choice((1, 2, 8, 64, 512, 4096))
        raw = self.rng.randbytes(size)
        key = self.rng.randbytes(self.rng.randint(1, 16)) if self.rng.random() < 0.5 else None
        return Poison(key, raw, None, "arbitrary_bytes")

    def invalid_utf8(self) -> Poison:
        bad = self.rng.choice((b"\xff", b"\xfe\xff", b"\xc0\xaf", b"\xe2\x82", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80",
                               b"\x80", b"caf\xe9"))
        ev = self.event()
        where = self.rng.choice(("text", "user_id", "extra", "key", "outside"))
        if where == "outside":  # between tokens, where only bytes can go
            value = _dump(ev)[:-1] + b", " + bad + b"}"
        elif where == "key":  # inside an object key
            value = _dump(ev)[:-1] + b', "' + bad + b'": 1}'
        else:
            marker = f"@@{where}@@"
            ev[where] = marker
            value = _dump(ev).replace(marker.encode(), b"x" + bad + b"y")
        return Poison(None, value, "not_utf8", "invalid_utf8")

    def broken_json(self) -> Poison:
        ev = _dump(self.event())
        value = self.rng.choice((
            ev[: self.rng.randint(1, len(ev) - 1)],  # truncated
            ev + b" trailing",
            ev.replace(b'"', b"'"),  # single quotes
            b"\xef\xbb\xbf" + ev,  # UTF-8 byte order mark
            ev[:-1] + b",}",  # trailing comma
            b"{user_id: 1, text: x}",
            b'{"user_id": "' + self.user().encode() + b'", "text": "x\\q"}',  # invalid escape
            b'{"user_id": "' + self.user().encode() + b'", "text": "line\nbreak"}',  # raw control character
            b'{"user_id": "' + self.user().encode() + b'", "text": "\\ud800"}',  # lone surrogate escape
            b"{" * self.rng.randint(1, 50),
        ))
        return Poison(None, value, "not_json", "broken_json")

    def nan_literal(self) -> Poison:
        literal = self.rng.choice((float("nan"), float("inf"), float("-inf")))
        name = self.rng.choice(("weight", "ts", "text", "extra", "user_id"))
        ev = self.event(**{name: literal})
        return self.keyed(ev, _dump(ev), "not_json", "nan_literal")  # NaN/Infinity are not JSON (RFC 8259)

    def not_object(self) -> Poison:
        value = self.rng.choice((
            [self.event()], [], 42, -1.5, "a string", None, True, False, [1, [2, [3]]],
            ["user_id", self.user(), "text", "x"],
        ))
        return Poison(None, _dump(value), "not_object", "not_object")

    def user_id(self) -> Poison:
        value, reason = self.rng.choice((
            ([self.user()], "bad_user_id"), ({"id": self.user()}, "bad_user_id"),
            ({"nested": {"deeper": [1, 2]}}, "bad_user_id"), (4.5, "bad_user_id"), (1e300, "bad_user_id"),
            (True, "bad_user_id"), (False, "bad_user_id"), ("", "bad_user_id"), ("   ", "bad_user_id"),
            ("u" * 257, "bad_user_id"), ("tab\there", "bad_user_id"), ("nul\x00byte", "bad_user_id"),
            ("line\nbreak", "bad_user_id"), ("9" * 300, "bad_user_id"), (None, "missing_user_id"),
            (_DROP, "missing_user_id"),
        ))
        ev = self.event(user_id=value)
        return Poison(None, _dump(ev), reason, "user_id")

    def type_field(self) -> Poison:
        return self.field("type", "type", (
            (7, "bad_type"), (["view"], "bad_type"), ({"name": "view"}, "bad_type"), (True, "bad_type"),
            ("", "bad_type"), ("   ", "bad_type"), ("Not A Type!", "bad_type"), ("1click", "bad_type"),
            ("v" * 33, "bad_type"), ("vi\u00efew", "bad_type"), ("\u212aick", "bad_type"), ("_view", "bad_type"),
        ))

    def ts_field(self) -> Poison:
        return self.field("ts", "ts", (
            (True, "bad_timestamp"), (False, "bad_timestamp"), ({"ms": 1}, "bad_timestamp"),
            ([RECORD_TS_MS], "bad_timestamp"), (10**20, "bad_timestamp"), (10**30, "bad_timestamp"),
            (1e300, "bad_timestamp"), (-1, "bad_timestamp"), (-1.5e12, "bad_timestamp"),
            (7_258_118_400_001, "bad_timestamp"), ("yesterday", "bad_timestamp"),
            ("2024-05-01T12:00:00", "bad_timestamp"), ("2024-13-01T00:00:00Z", "bad_timestamp"),
            ("2016-12-31T23:59:60Z", "bad_timestamp"), ("1700000000000", "bad_timestamp"),
            ("1969-12-31T23:59:59Z", "bad_timestamp"), ("2200-01-01T00:00:00.001Z", "bad_timestamp"),
            ("", "bad_timestamp"),
        ))

    def text_field(self) -> Poison:
        return self.field("text", "text", (
            (42, "bad_field"), (3.14, "bad_field"), (["a", "list"], "bad_field"), ({"t": "obj"}, "bad_field"),
            (True, "bad_field"),
        ))

    def item_field(self) -> Poison:
        return self.field("item_id", "item_id", (
            ([1], "bad_field"), ({"id": "x"}, "bad_field"), (1.5, "bad_field"), (True, "bad_field"),
            ("i" * 257, "bad_field"), ("ctrl\x07char", "bad_field"),
        ))

    def event_id_field(self) -> Poison:
        return self.field("event_id", "event_id", (
            ([1], "bad_field"), ({"id": 1}, "bad_field"), (0.5, "bad_field"), (False, "bad_field"),
            ("e" * 257, "bad_field"),
        ))

    def weight(self) -> Poison:
        return self.field("weight", "weight", (
            ("1.0", "bad_weight"), ("heavy", "bad_weight"), (0, "bad_weight"), (0.0, "bad_weight"),
            (-1, "bad_weight"), (-0.5, "bad_weight"), (1000.0001, "bad_weight"), (1e6, "bad_weight"),
            (10**30, "bad_weight"), (1e308, "bad_weight"), (True, "bad_weight"), ([1], "bad_weight"),
            ({"w": 1}, "bad_weight"),
        ))

    def out_of_range_number(self) -> Poison:
        name = self.rng.choice(("weight", "ts", "user_id", "text", "item_id"))
        marker = f"@@{self.n}@@"
        ev = self.event(**{name: marker})
        literal = self.rng.choice((b"1e400", b"-1e400", b"1" + b"0" * 400 + b".0"))
        return self.keyed(ev, _dump(ev).replace(f'"{marker}"'.encode(), literal), "bad_field",
                          "out_of_range_number")

    def missing_keys(self) -> Poison:
        choice = self.rng.randrange(5)
        if choice == 0:
            ev, reason = self.event(user_id=_DROP), "missing_user_id"
        elif choice == 1:
            ev, reason = self.event(text=_DROP), "no_text_or_item"
        elif choice == 2:
            ev, reason = self.event(text=None, item_id=None), "no_text_or_item"
        elif choice == 3:
            ev, reason = self.event(text=" \t\n ", item_id=self.rng.choice((_DROP, "  ", None))), "empty_text"
        else:
            ev, reason = self.event(text=_DROP, item_id="   "), "no_text_or_item"  # a blank item_id is absent
        return self.keyed(ev, _dump(ev), reason, "missing_keys")

    def empty(self) -> Poison:
        value = self.rng.choice((b"", None, b" ", b"\n", b"\t \r\n"))
        key = self.user().encode()  # a record needs a key or a value
        return Poison(key, value, "empty_message", "empty")

    def key_mismatch(self) -> Poison:
        ev = self.event()
        key = self.rng.choice((b"someone-else", b"\xff\xfe not utf-8", ev["user_id"].upper().encode() + b"x",
                               ev["user_id"].encode() + b" "))
        return Poison(key, _dump(ev), "key_mismatch", "key_mismatch")

    def foreign_key(self) -> Poison:
        """A *valid* event of a real user (when ``real_users`` are given) under a key that is not its
        user id: bytes that are not UTF-8, or another real user's id. Rejected as ``key_mismatch``; it
        must not touch either user's state, nor write state to the partition the key hashed to."""
        ev = self.event()
        if self.real_users:
            ev["user_id"] = self.rng.choice(self.real_users)
        others = [u for u in self.real_users if u != ev["user_id"]]
        if others and self.rng.random() < 0.3:
            key = self.rng.choice(others).encode()
        else:
            key = b"\xff\xfe" + str(self.rng.randrange(10**6)).encode()
        return Poison(key, _dump(ev), "key_mismatch", "foreign_key")

    def too_large_value(self) -> Poison:
        size = self.rng.randint(64 * 1024 + 1, 320 * 1024)
        where = self.rng.choice(("extra", "text", "user_id"))
        ev = self.event(**{where: "x" * size})
        return self.keyed(ev, _dump(ev), "too_large", "too_large_value")

    def long_text(self) -> Poison:
        n = self.rng.randint(10_001, 60_000)  # under 64 KiB as a whole, over max_text_chars
        text = ("word " * (n // 5 + 2))[: n - 1] + "x"  # no trailing blank: over the limit even when stripped
        ev = self.event(text=text)
        return self.keyed(ev, _dump(ev), "too_large", "long_text")

    def deep_nesting(self) -> Poison:
        depth = self.rng.choice((2_000, 5_000, 10_000))
        open_, close = self.rng.choice(((b"[", b"]"), (b'{"a":', b"}")))
        inner = open_ * depth + (b"1" if open_ == b'{"a":' else b"") + close * depth
        if self.rng.random() < 0.25:  # a top-level array: not an object before it is deep
            return Poison(None, b"[" * depth + b"]" * depth, "not_object", "deep_nesting")
        name = self.rng.choice(("extra", "user_id", "text", "weight"))
        marker = f"@@{self.n}@@"
        ev = self.event(**{name: marker})
        return self.keyed(ev, _dump(ev).replace(f'"{marker}"'.encode(), inner), "too_large", "deep_nesting")

    def unknown_item(self) -> Poison:
        item = f"no-such-item-{self.rng.randrange(10**9)}"
        while item in self.known_items:
            item += "-x"
        ev = self.event(text=_DROP, item_id=item, type=self.rng.choice(("view", "click", "purchase")))
        return self.keyed(ev, _dump(ev), "unknown_item", "unknown_item")


_DROP = object()  # "remove this key" in _Maker.event

#: Kind -> (maker method, relative frequency). Large kinds are rare, to keep a run's bytes modest.
KINDS: dict[str, tuple[Callable[[_Maker], Poison], float]] = {
    "arbitrary_bytes": (_Maker.arbitrary_bytes, 10),
    "invalid_utf8": (_Maker.invalid_utf8, 8),
    "broken_json": (_Maker.broken_json, 8),
    "nan_literal": (_Maker.nan_literal, 6),
    "not_object": (_Maker.not_object, 6),
    "user_id": (_Maker.user_id, 10),
    "type": (_Maker.type_field, 6),
    "ts": (_Maker.ts_field, 8),
    "text": (_Maker.text_field, 5),
    "item_id": (_Maker.item_field, 4),
    "event_id": (_Maker.event_id_field, 3),
    "weight": (_Maker.weight, 8),
    "out_of_range_number": (_Maker.out_of_range_number, 3),
    "missing_keys": (_Maker.missing_keys, 6),
    "empty": (_Maker.empty, 4),
    "key_mismatch": (_Maker.key_mismatch, 5),
    "foreign_key": (_Maker.foreign_key, 5),
    "unknown_item": (_Maker.unknown_item, 5),
    "too_large_value": (_Maker.too_large_value, 0.25),
    "long_text": (_Maker.long_text, 0.5),
    "deep_nesting": (_Maker.deep_nesting, 0.5),
}


def poison_messages(
    n: int = 10_000, seed: int = 0, *, known_items: Iterable[str] = (), real_users: Iterable[str] = ()
) -> list[Poison]:
    """``n`` malformed records, deterministic for ``seed``; every kind appears at least twice (n >= 42).

    ``known_items`` are catalog item ids that ``unknown_item`` entries must avoid. ``real_users``
    are the ids of the stream's real users: ``foreign_key`` entries carry valid events of theirs.
    """
    rng = random.Random(seed)
    maker = _Maker(rng, frozenset(known_items), tuple(sorted(set(real_users))))
    kinds = list(KINDS)
    weights = [KINDS[k][1] for k in kinds]
    plan = [k for k in kinds for _ in range(2)][:n]
    plan += rng.choices(kinds, weights=weights, k=n - len(plan))
    rng.shuffle(plan)
    out = []
    for kind in plan:
        poison = KINDS[kind][0](maker)
        assert poison.value is None or len(poison.value) <= MAX_VALUE_BYTES, (kind, len(poison.value))
        out.append(poison)
    return out
