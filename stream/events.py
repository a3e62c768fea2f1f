"""Input events: the wire contract of the events topic, and its validation.

A record on the events topic (key = user id) is one JSON object::

    {"user_id": "u42", "ts": 1700000000000, "type": "view",
     "text": "Beginner's guide to sourdough starters", "item_id": "cook-007",
     "event_id": "e-1", "weight": 1.0}

:func:`decode_event` turns the raw record value into a :class:`BehaviourEvent`,
a :class:`ForgetEvent` (``{"type": "forget", "user_id": ...}``) or a
:class:`Rejection` naming a :class:`RejectReason`. It never raises, whatever the
bytes; rejected records go to the dead-letter topic with the reason.

Rules (the JSON Schema ``deploy/schemas/behaviour-event.schema.json`` says the same):

- ``user_id``: required; a string of 1..256 printable characters, not blank, or an
  integer (converted to its decimal string, so ``42`` and ``"42"`` are the same user).
  Missing or null -> ``missing_user_id``; anything else -> ``bad_user_id``.
- If the record has a non-empty key, it must equal ``user_id`` (UTF-8); else
  ``key_mismatch`` (partitioning by key is what keeps a user on one worker).
- ``type``: a string, default ``"view"``; stripped and lower-cased; 1..32 characters
  from ASCII ``a-z 0-9 _ . : -``, starting with a letter. Unknown types are accepted (their
  weight is configuration). Anything else -> ``bad_type``.
- ``ts``: epoch milliseconds (an integer, or a finite number, floored), or an RFC 3339
  string with a UTC offset (``"2024-05-01T12:00:00Z"``). Missing or null -> the Kafka
  record timestamp. Booleans, NaN, negative values, dates after 2200-01-01, strings
  that are not ``YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM)`` (no offset, digit strings, leap
  seconds) -> ``bad_timestamp``; so is an event with
  neither ``ts`` nor a record timestamp.
- ``text`` and/or ``item_id``: at least one. ``text`` is stripped; a blank text counts
  as absent. Neither given -> ``no_text_or_item``; only a blank text given ->
  ``empty_text``. A text longer than ``max_text_chars`` -> ``too_large`` (rejected,
  never truncated). ``item_id`` follows the id rules of ``user_id`` (a blank one counts
  as absent). Wrong types -> ``bad_field``.
- ``event_id``: optional id (same rules); ``weight``: optional finite number with
  ``0 < weight <= max_weight`` (default 1000), not a boolean -> else ``bad_weight``.
- ``{"type": "forget", "user_id": ...}`` -> :class:`ForgetEvent`. Its text/item fields
  are ignored, and it is accepted without any timestamp (``ts_ms = 0``): a deletion
  must not be lost for lack of a clock.
- Unknown extra fields are ignored. Whole values over ``max_bytes`` (64 KiB) and JSON
  nested deeper than the parser's limit (~1000 levels) -> ``too_large``. A null or
  empty value -> ``empty_message``; bytes that are not UTF-8 -> ``not_utf8``; broken
  JSON -> ``not_json``; a JSON value that is not an object -> ``not_object``; a number
  out of the float range in a contract field -> ``bad_field`` (ignored fields are only
  checked for UTF-8).

``unknown_item`` is not produced here (decoding does not know the catalog): the
embedding stage uses it for an ``item_id`` with no text that the catalog lacks.

Example:

>>> decode_event(b'{"user_id": "u1", "ts": 1700000000000, "text": "Trail running shoes"}')
BehaviourEvent(user_id='u1', ts_ms=1700000000000, type='view', text='Trail running shoes', item_id=None, event_id=None, weight=1.0)
>>> decode_event(b'{"user_id": 7, "type": "Purchase", "item_id": "sku-9"}', record_ts_ms=5)
BehaviourEvent(user_id='7', ts_ms=5, type='purchase', text=None, item_id='sku-9', event_id=None, weight=1.0)
>>> decode_event(b'{"type": "forget", "user_id": "u1"}')
ForgetEvent(user_id='u1', ts_ms=0)
>>> decode_event(b'{"user_id": "u1", "ts": 1}').reason
'no_text_or_item'
>>> decode_event(b'\\xff\\xfe').reason
'not_utf8'
>>> decode_event(b'{"user_id": "u1", "text": "x", "extra\\xff": 1}').reason  # anywhere, even in ignored fields
'not_utf8'
>>> event = decode_event(b'{"user_id": "u1", "ts": "2024-01-01T00:00:00Z", "text": "x"}')
>>> event.ts_ms, encode_event(event)
(1704067200000, b'{"user_id":"u1","ts":1704067200000,"type":"view","text":"x"}')
"""

from __future__ import annotations

import enum
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

__all__ = [
    "MAX_TS_MS",
    "BehaviourEvent",
    "DecodeLimits",
    "ForgetEvent",
    "RejectReason",
    "Rejection",
    "decode_event",
    "encode_event",
]

#: Latest accepted event time: 2200-01-01T00:00:00Z in epoch milliseconds.
MAX_TS_MS = 7_258_118_400_000

FORGET = "forget"
DEFAULT_TYPE = "view"


class BehaviourEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One validated behaviour event: a user did ``type`` with a text and/or an item."""

    user_id: str
    ts_ms: int
    type: str
    text: str | None = None
    item_id: str | None = None
    event_id: str | None = None
    weight: float = 1.0


class ForgetEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A control event: delete everything known about ``user_id``."""

    user_id: str
    ts_ms: int


class Rejection(msgspec.Struct, frozen=True):
    """Why a record was not accepted: a :class:`RejectReason` value and a human detail."""

    reason: str
    detail: str


class RejectReason(enum.StrEnum):
    """Machine-readable rejection reasons (the ``reason`` header of the dead-letter topic)."""

    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"
    NOT_OBJECT = "not_object"
    MISSING_USER_ID = "missing_user_id"
    BAD_USER_ID = "bad_user_id"
    NO_TEXT_OR_ITEM = "no_text_or_item"
    BAD_TIMESTAMP = "bad_timestamp"
    BAD_WEIGHT = "bad_weight"
    BAD_TYPE = "bad_type"
    BAD_FIELD = "bad_field"
    TOO_LARGE = "too_large"
    EMPTY_TEXT = "empty_text"
    UNKNOWN_ITEM = "unknown_item"
    EMPTY_MESSAGE = "empty_message"
    KEY_MISMATCH = "key_mismatch"
    #: A valid event on a partition its user does not own (see consumers.partitioning); set by the service.
    WRONG_PARTITION = "wrong_partition"
    INTERNAL = "internal"


class DecodeLimits(msgspec.Struct, frozen=True, kw_only=True):
    """Size and range limits applied by :func:`decode_event`."""

    max_bytes: int = 64 * 1024
    max_text_chars: int = 10_000
    max_id_chars: int = 256
    max_weight: float = 1000.0


DEFAULT_LIMITS = DecodeLimits()

Event = BehaviourEvent | ForgetEvent


class _Wire(msgspec.Struct):
    """The object as it arrives: every field lax, validated by hand for precise reasons."""

    user_id: Any = None
    ts: Any = None
    type: Any = None
    text: Any = None
    item_id: Any = None
    event_id: Any = None
    weight: Any = None


class _WireOut(msgspec.Struct, omit_defaults=True):
    user_id: str
    ts: int
    type: str
    text: str | None = None
    item_id: str | None = None
    event_id: str | None = None
    weight: float = 1.0


class _WireForget(msgspec.Struct):
    user_id: str
    ts: int
    type: str = FORGET


_decoder = msgspec.json.Decoder(_Wire)
_encoder = msgspec.json.Encoder()
_TYPE_RE = re.compile(r"[a-z][a-z0-9_.:\-]{0,31}")
_RFC3339_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_MAX_DETAIL = 200


def _reject(reason: RejectReason, detail: str) -> Rejection:
    return Rejection(reason.value, detail[:_MAX_DETAIL])


def _check_id(value: Any, what: str, max_chars: int) -> str | Rejection | None:
    """An id as a string; ``None`` for absent/null/blank is the caller's business."""
    if value is None:
        return None
    if isinstance(value, str):
        if len(value) > max_chars:
            return Rejection("", f"{what} longer than {max_chars} characters")
        if not value.isprintable():
            return Rejection("", f"{what} contains control or non-printable characters")
        if not value.strip():
            return None
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
        if len(text) > max_chars:
            return Rejection("", f"{what} longer than {max_chars} characters")
        return text
    return Rejection("", f"{what} must be a string or an integer, got {type(value).__name__}")


def _parse_ts(value: Any) -> int | str:
    """Epoch ms from a wire ``ts``; a string is the error detail."""
    if isinstance(value, bool):
        return "ts must be epoch milliseconds or an RFC 3339 string, got a boolean"
    if isinstance(value, int):
        ms = value
    elif isinstance(value, float):
        if not math.isfinite(value):
            return "ts is not a finite number"
        if value < 0 or value > MAX_TS_MS:
            return f"ts {value!r} out of range [0, {MAX_TS_MS}]"
        ms = math.floor(value)
    elif isinstance(value, str):
        stamp = value.strip() if len(value) <= 64 else ""
        if not _RFC3339_RE.fullmatch(stamp):
            return f"ts {value[:40]!r} is not an RFC 3339 date-time with a UTC offset"
        try:
            moment = datetime.fromisoformat(stamp.upper())
        except ValueError as exc:
            return f"ts {value[:40]!r}: {exc}"
        try:
            ms = (moment - _EPOCH) // _MS
        except OverflowError:
            return f"ts {value[:40]!r} out of range"
    else:
        return f"ts must be epoch milliseconds or an RFC 3339 string, got {type(value).__name__}"
    if ms < 0 or ms > MAX_TS_MS:
        return f"ts {ms} out of range [0, {MAX_TS_MS}] (epoch milliseconds, up to year 2200)"
    return ms


def _decode(
    raw: bytes | bytearray | memoryview | str | None,
    record_ts_ms: int | None,
    key: bytes | None,
    limits: DecodeLimits,
) -> Event | Rejection:
    if raw is None:
        return _reject(RejectReason.EMPTY_MESSAGE, "null record value (tombstone)")
    if isinstance(raw, str):
        try:
            raw = raw.encode("utf-8")
        except UnicodeEncodeError:
            return _reject(RejectReason.NOT_UTF8, "text contains lone surrogates")
    elif not isinstance(raw, bytes):
        raw = bytes(raw)
    if len(raw) > limits.max_bytes:
        return _reject(RejectReason.TOO_LARGE, f"{len(raw)} bytes > max_bytes {limits.max_bytes}")
    if not raw or raw.isspace():
        return _reject(RejectReason.EMPTY_MESSAGE, "empty record value")
    if not raw.isascii():  # msgspec skips unknown fields without checking their UTF-8
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return _reject(RejectReason.NOT_UTF8, str(exc))
    try:
        wire = _decoder.decode(raw)
    except UnicodeDecodeError as exc:
        return _reject(RejectReason.NOT_UTF8, str(exc))
    except msgspec.ValidationError as exc:
        message = str(exc)
        if message.startswith("Expected `object`"):
            return _reject(RejectReason.NOT_OBJECT, message)
        return _reject(RejectReason.BAD_FIELD, message)
    except msgspec.DecodeError as exc:
        return _reject(RejectReason.NOT_JSON, str(exc))
    except RecursionError:
        return _reject(RejectReason.TOO_LARGE, "JSON nested too deeply")

    # user_id
    if wire.user_id is None:
        return _reject(RejectReason.MISSING_USER_ID, "user_id is missing or null")
    user_id = _check_id(wire.user_id, "user_id", limits.max_id_chars)
    if user_id is None:
        return _reject(RejectReason.BAD_USER_ID, "user_id is blank")
    if isinstance(user_id, Rejection):
        return _reject(RejectReason.BAD_USER_ID, user_id.detail)

    # type
    kind = wire.type
    if kind is None:
        kind = DEFAULT_TYPE
    elif isinstance(kind, str):
        kind = kind.strip()
        kind = kind.lower() if kind.isascii() else ""  # no Unicode case folding: "\u212a".lower() == "k"
        if not _TYPE_RE.fullmatch(kind):
            return _reject(RejectReason.BAD_TYPE, f"type {wire.type[:40]!r} is not a short lower-case name")
    else:
        return _reject(RejectReason.BAD_TYPE, f"type must be a string, got {type(kind).__name__}")

    # key
    if key and key != user_id.encode("utf-8"):
        try:
            key_text = bytes(key).decode("utf-8")
        except UnicodeDecodeError:
            return _reject(RejectReason.KEY_MISMATCH, "record key is not UTF-8")
        return _reject(RejectReason.KEY_MISMATCH, f"record key {key_text[:60]!r} != user_id {user_id[:60]!r}")

    # timestamp
    if wire.ts is not None:
        ts = _parse_ts(wire.ts)
        if isinstance(ts, str):
            return _reject(RejectReason.BAD_TIMESTAMP, ts)
    elif record_ts_ms is not None and 0 <= record_ts_ms <= MAX_TS_MS:
        ts = int(record_ts_ms)
    elif kind == FORGET:
        ts = 0
    else:
        return _reject(RejectReason.BAD_TIMESTAMP, "no ts field and no record timestamp")

    if kind == FORGET:
        return ForgetEvent(user_id=user_id, ts_ms=ts)

    # text
    text = wire.text
    blank_text = False
    if text is not None:
        if not isinstance(text, str):
            return _reject(RejectReason.BAD_FIELD, f"text must be a string, got {type(text).__name__}")
        if len(text) > limits.max_text_chars:
            return _reject(
                RejectReason.TOO_LARGE, f"text has {len(text)} characters > max_text_chars {limits.max_text_chars}"
            )
        text = text.strip()
        if not text:
            text = None
            blank_text = True

    # item_id, event_id
    item_id = _check_id(wire.item_id, "item_id", limits.max_id_chars)
    if isinstance(item_id, Rejection):
        return _reject(RejectReason.BAD_FIELD, item_id.detail)
    if text is None and item_id is None:
        if blank_text:
            return _reject(RejectReason.EMPTY_TEXT, "text is blank and there is no item_id")
        return _reject(RejectReason.NO_TEXT_OR_ITEM, "an event needs a text or an item_id")
    event_id = _check_id(wire.event_id, "event_id", limits.max_id_chars)
    if isinstance(event_id, Rejection):
        return _reject(RejectReason.BAD_FIELD, event_id.detail)

    # weight
    weight = wire.weight
    if weight is None:
        weight = 1.0
    elif isinstance(weight, bool) or not isinstance(weight, int | float):
        return _reject(RejectReason.BAD_WEIGHT, f"weight must be a number, got {type(weight).__name__}")
    elif not (0 < weight <= limits.max_weight):  # also false for NaN
        return _reject(RejectReason.BAD_WEIGHT, f"weight {weight!r} not in (0, {limits.max_weight}]")
    else:
        weight = float(weight)

    return BehaviourEvent(
        user_id=user_id, ts_ms=ts, type=kind, text=text, item_id=item_id, event_id=event_id, weight=weight
    )


def decode_event(
    raw: bytes | bytearray | memoryview | str | None,
    *,
    record_ts_ms: int | None = None,
    key: bytes | None = None,
    limits: DecodeLimits = DEFAULT_LIMITS,
) -> BehaviourEvent | ForgetEvent | Rejection:
    """Validate one record value; never raises (see the module docstring for the rules).

    ``record_ts_ms`` is the Kafka record timestamp (used when the event has no ``ts``;
    negative means none), ``key`` the record key (checked against ``user_id`` when
    non-empty).
    """
    try:
        return _decode(raw, record_ts_ms, key, limits)
    except Exception as exc:  # safety net: a bug here must dead-letter one record, not stop the stream
        return _reject(RejectReason.INTERNAL, f"{type(exc).__name__}: {exc}")


def encode_event(event: BehaviourEvent | ForgetEvent) -> bytes:
    """Wire JSON for an event (contract field names; ``ts`` in epoch ms; defaults omitted)."""
    if isinstance(event, ForgetEvent):
        return _encoder.encode(_WireForget(user_id=event.user_id, ts=event.ts_ms))
    return _encoder.encode(
        _WireOut(
            user_id=event.user_id,
            ts=event.ts_ms,
            type=event.type,
            text=event.text,
            item_id=event.item_id,
            event_id=event.event_id,
            weight=event.weight,
        )
    )
