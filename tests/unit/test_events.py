"""The input contract: decode_event examples for every reason, and properties over arbitrary input."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.events import (
    MAX_TS_MS,
    BehaviourEvent,
    DecodeLimits,
    ForgetEvent,
    Rejection,
    RejectReason,
    decode_event,
    encode_event,
)

TS = 1_700_000_000_000


def dumps(obj: object) -> bytes:
    return json.dumps(obj).encode()


def reason_of(raw: bytes | None, **kwargs: object) -> str:
    result = decode_event(raw, **kwargs)
    assert isinstance(result, Rejection), result
    assert result.detail
    return result.reason


# ---------------------------------------------------------------- accepted events


def test_full_event_is_decoded_with_every_field():
    raw = dumps(
        {"user_id": "u1", "ts": TS, "type": "Click ", "text": "  Trail shoes  ", "item_id": "run-1",
         "event_id": "e-9", "weight": 2.5, "extra": {"ignored": [1, 2]}}
    )
    assert decode_event(raw) == BehaviourEvent(
        user_id="u1", ts_ms=TS, type="click", text="Trail shoes", item_id="run-1", event_id="e-9", weight=2.5
    )


def test_defaults_type_view_weight_one_and_record_timestamp():
    event = decode_event(dumps({"user_id": "u1", "item_id": "x"}), record_ts_ms=123)
    assert event == BehaviourEvent(user_id="u1", ts_ms=123, type="view", item_id="x")


def test_event_ts_wins_over_record_timestamp():
    assert decode_event(dumps({"user_id": "u", "ts": TS, "text": "a"}), record_ts_ms=5).ts_ms == TS


def test_null_fields_mean_absent():
    raw = dumps({"user_id": "u", "ts": None, "type": None, "text": "a", "item_id": None, "weight": None})
    assert decode_event(raw, record_ts_ms=9) == BehaviourEvent(user_id="u", ts_ms=9, type="view", text="a")


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("2024-01-01T00:00:00Z", 1_704_067_200_000),
        ("2024-01-01T01:00:00+01:00", 1_704_067_200_000),
        ("2024-01-01T00:00:00.250Z", 1_704_067_200_250),
        ("2024-01-01 00:00:00+00:00", 1_704_067_200_000),
        (0, 0),
        (MAX_TS_MS, MAX_TS_MS),
        (1.7e12, 1_700_000_000_000),
        (1234.9, 1234),
    ],
)
def test_timestamps_accepted(ts, expected):
    assert decode_event(dumps({"user_id": "u", "ts": ts, "text": "a"})).ts_ms == expected


def test_integer_ids_become_strings():
    event = decode_event(dumps({"user_id": 42, "item_id": 7, "event_id": 3, "ts": 1}))
    assert (event.user_id, event.item_id, event.event_id) == ("42", "7", "3")


def test_unknown_types_are_allowed():
    assert decode_event(dumps({"user_id": "u", "ts": 1, "text": "a", "type": "Share.v2"})).type == "share.v2"


def test_blank_text_with_item_keeps_the_item():
    event = decode_event(dumps({"user_id": "u", "ts": 1, "text": "   ", "item_id": "i"}))
    assert (event.text, event.item_id) == (None, "i")


def test_forget_event_needs_no_text_nor_timestamp():
    assert decode_event(dumps({"type": "forget", "user_id": "u1"})) == ForgetEvent(user_id="u1", ts_ms=0)
    assert decode_event(dumps({"type": "FORGET", "user_id": "u1", "text": 5}), record_ts_ms=7) == ForgetEvent(
        user_id="u1", ts_ms=7
    )


def test_matching_key_is_accepted():
    assert isinstance(decode_event(dumps({"user_id": "u1", "ts": 1, "text": "a"}), key=b"u1"), BehaviourEvent)
    assert isinstance(decode_event(dumps({"user_id": "u1", "ts": 1, "text": "a"}), key=b""), BehaviourEvent)


def test_buffer_and_str_inputs():
    raw = dumps({"user_id": "u", "ts": 1, "text": "a"})
    assert decode_event(memoryview(raw)) == decode_event(bytearray(raw)) == decode_event(raw.decode())


# ---------------------------------------------------------------- every rejection reason

GOOD = {"user_id": "u1", "ts": TS, "text": "hello"}


def bad(**changes: object) -> bytes:
    obj = dict(GOOD)
    for name, value in changes.items():
        if value is ...:
            obj.pop(name, None)
        else:
            obj[name] = value
    return dumps(obj)


@pytest.mark.parametrize(
    ("raw", "kwargs", "reason"),
    [
        (b"\xff\xfe{}", {}, RejectReason.NOT_UTF8),
        (b'{"user_id": "u\xe9"}', {}, RejectReason.NOT_UTF8),
        (b'{"user_id": "u1", ', {}, RejectReason.NOT_JSON),
        (b"{'user_id': 'u1'}", {}, RejectReason.NOT_JSON),
        (b'{"user_id": NaN, "text": "a"}', {}, RejectReason.NOT_JSON),
        (b'{"a":1}{"b":2}', {}, RejectReason.NOT_JSON),
        (b"[1, 2]", {}, RejectReason.NOT_OBJECT),
        (b'"u1"', {}, RejectReason.NOT_OBJECT),
        (b"null", {}, RejectReason.NOT_OBJECT),
        (bad(user_id=...), {}, RejectReason.MISSING_USER_ID),
        (bad(user_id=None), {}, RejectReason.MISSING_USER_ID),
        (bad(user_id=""), {}, RejectReason.BAD_USER_ID),
        (bad(user_id="   "), {}, RejectReason.BAD_USER_ID),
        (bad(user_id="x" * 257), {}, RejectReason.BAD_USER_ID),
        (bad(user_id="a\nb"), {}, RejectReason.BAD_USER_ID),
        (bad(user_id=True), {}, RejectReason.BAD_USER_ID),
        (bad(user_id=1.5), {}, RejectReason.BAD_USER_ID),
        (bad(user_id=["u1"]), {}, RejectReason.BAD_USER_ID),
        (bad(text=...), {}, RejectReason.NO_TEXT_OR_ITEM),
        (bad(text=None, item_id=""), {}, RejectReason.NO_TEXT_OR_ITEM),
        (bad(text=" \t\n"), {}, RejectReason.EMPTY_TEXT),
        (bad(ts=...), {}, RejectReason.BAD_TIMESTAMP),
        (bad(ts=...), {"record_ts_ms": -1}, RejectReason.BAD_TIMESTAMP),
        (bad(ts=True), {}, RejectReason.BAD_TIMESTAMP),
        (bad(ts=-1), {}, RejectReason.BAD_TIMESTAMP),
        (bad(ts=MAX_TS_MS + 1), {}, RejectReason.BAD_TIMESTAMP),
        (bad(ts=10**30), {}, RejectReason.BAD_TIMESTAMP),
        (bad(ts=-0.5), {}, RejectReason.BAD_TIMESTAMP),
        (bad(ts="2024-01-01T00:00:00"), {}, RejectReason.BAD_TIMESTAMP),
        (bad(ts="yesterday"), {}, RejectReason.BAD_TIMESTAMP),
        (bad(ts="1700000000000"), {}, RejectReason.BAD_TIMESTAMP),
        (bad(ts="9999-12-31T23:59:59Z"), {}, RejectReason.BAD_TIMESTAMP),
        (bad(ts="1969-12-31T23:59:59Z"), {}, RejectReason.BAD_TIMESTAMP),
        (bad(ts=[TS]), {}, RejectReason.BAD_TIMESTAMP),
        (b'{"user_id": "u1", "ts": 1e400, "text": "a"}', {}, RejectReason.BAD_FIELD),
        (bad(weight=0), {}, RejectReason.BAD_WEIGHT),
        (bad(weight=-1), {}, RejectReason.BAD_WEIGHT),
        (bad(weight=1000.5), {}, RejectReason.BAD_WEIGHT),
        (bad(weight=True), {}, RejectReason.BAD_WEIGHT),
        (bad(weight="2"), {}, RejectReason.BAD_WEIGHT),
        (bad(type=3), {}, RejectReason.BAD_TYPE),
        (bad(type=""), {}, RejectReason.BAD_TYPE),
        (bad(type="a very long type name that goes on and on"), {}, RejectReason.BAD_TYPE),
        (bad(type="click!"), {}, RejectReason.BAD_TYPE),
        (bad(text=5), {}, RejectReason.BAD_FIELD),
        (bad(text={"t": "a"}), {}, RejectReason.BAD_FIELD),
        (bad(item_id=["i"]), {}, RejectReason.BAD_FIELD),
        (bad(item_id="i" * 300), {}, RejectReason.BAD_FIELD),
        (bad(event_id=1.5), {}, RejectReason.BAD_FIELD),
        (bad(text="x" * 10_001), {}, RejectReason.TOO_LARGE),
        (dumps({**GOOD, "pad": "x" * 70_000}), {}, RejectReason.TOO_LARGE),
        (b'{"user_id": "u1", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}", {}, RejectReason.TOO_LARGE),
        (None, {}, RejectReason.EMPTY_MESSAGE),
        (b"", {}, RejectReason.EMPTY_MESSAGE),
        (b" \n ", {}, RejectReason.EMPTY_MESSAGE),
        (bad(), {"key": b"u2"}, RejectReason.KEY_MISMATCH),
        (bad(), {"key": b"\xff"}, RejectReason.KEY_MISMATCH),
        (dumps({"type": "forget"}), {}, RejectReason.MISSING_USER_ID),
        (dumps({"type": "forget", "user_id": "u", "ts": "soon"}), {}, RejectReason.BAD_TIMESTAMP),
    ],
)
def test_rejections(raw, kwargs, reason):
    assert reason_of(raw, **kwargs) == reason


def test_limits_are_configurable():
    raw = bad(text="x" * 50)
    assert isinstance(decode_event(raw), BehaviourEvent)
    assert reason_of(raw, limits=DecodeLimits(max_text_chars=10)) == RejectReason.TOO_LARGE
    assert reason_of(raw, limits=DecodeLimits(max_bytes=20)) == RejectReason.TOO_LARGE
    assert reason_of(bad(weight=5), limits=DecodeLimits(max_weight=2)) == RejectReason.BAD_WEIGHT


def test_unknown_item_is_a_reason_for_later_stages():
    # decode does not know the catalog; the embedding stage rejects uncatalogued items with this value.
    assert RejectReason.UNKNOWN_ITEM == "unknown_item"
    assert isinstance(decode_event(bad(text=None, item_id="never-seen")), BehaviourEvent)


# ---------------------------------------------------------------- properties

REASONS = {r.value for r in RejectReason}
FIELDS = ["user_id", "ts", "type", "text", "item_id", "event_id", "weight"]

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
def mostly(good: st.SearchStrategy, bad: st.SearchStrategy) -> st.SearchStrategy:
    """Plausible values five times in six, so accepted events are common too."""
    return st.sampled_from([good, good, good, good, good, bad]).flatmap(lambda strategy: strategy)


plausible = {
    "user_id": mostly(st.text(min_size=1, max_size=6) | st.integers(-5, 10**6), json_values),
    "ts": mostly(
        st.integers(0, MAX_TS_MS) | st.floats(0, MAX_TS_MS) | st.sampled_from(["2024-02-29T12:00:00Z", None]),
        st.integers(-10, 2 * MAX_TS_MS) | st.floats() | st.sampled_from(["x", "2024-02-30T00:00:00Z"]) | json_values,
    ),
    "type": mostly(st.sampled_from(["view", "Click", "forget", "FORGET", None]), st.sampled_from(["", "??"]) | json_values),
    "text": mostly(st.text(max_size=20), json_values),
    "item_id": mostly(st.text(max_size=6) | st.integers(), json_values),
    "event_id": mostly(st.text(max_size=6) | st.integers(), json_values),
    "weight": mostly(st.floats(1e-9, 1000) | st.integers(1, 1000), st.floats() | st.integers(-3, 2000) | json_values),
}
optional = {name: value for name, value in plausible.items() if name != "user_id"}
event_objects = st.fixed_dictionaries({"user_id": plausible["user_id"]}, optional=optional).flatmap(
    lambda d: st.dictionaries(st.text(max_size=6), json_values, max_size=3).map(lambda extra: {**extra, **d})
)
event_objects = mostly(event_objects, st.fixed_dictionaries({}, optional=plausible))


def check_total(result: object) -> None:
    assert isinstance(result, BehaviourEvent | ForgetEvent | Rejection)
    if isinstance(result, Rejection):
        assert result.reason in REASONS
        assert result.reason != RejectReason.INTERNAL, result.detail
        assert result.detail


def check_round_trip(result: object) -> None:
    if isinstance(result, BehaviourEvent | ForgetEvent):
        again = decode_event(encode_event(result))
        assert again == result


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(raw):
    check_total(decode_event(raw, record_ts_ms=1))


@settings(max_examples=400, deadline=None)
@given(json_values, st.one_of(st.none(), st.integers(-1, MAX_TS_MS)))
def test_arbitrary_json_never_raises(value, record_ts):
    raw = json.dumps(value).encode()
    check_total(decode_event(raw, record_ts_ms=record_ts))


@settings(max_examples=500, deadline=None)
@given(event_objects, st.one_of(st.none(), st.integers(-1, MAX_TS_MS)), st.sampled_from([None, b"", b"u", b"1"]))
def test_event_like_objects_never_raise_and_round_trip(obj, record_ts, key):
    raw = json.dumps(obj, allow_nan=True).encode()
    result = decode_event(raw, record_ts_ms=record_ts, key=key)
    check_total(result)
    check_round_trip(result)
    if isinstance(result, BehaviourEvent):
        assert result.text is not None or result.item_id is not None
        assert 0 < result.weight <= 1000 and 0 <= result.ts_ms <= MAX_TS_MS


@settings(max_examples=300, deadline=None)
@given(
    user_id=st.text(min_size=1, max_size=20).filter(lambda s: s.strip() and s.isprintable()),
    ts=st.integers(0, MAX_TS_MS),
    kind=st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True).filter(lambda s: s != "forget"),
    text=st.none() | st.text(max_size=40).filter(lambda s: s.strip() == s and s),
    item_id=st.none() | st.text(min_size=1, max_size=10).filter(lambda s: s.strip() and s.isprintable()),
    weight=st.floats(min_value=1e-6, max_value=1000),
)
def test_valid_events_round_trip_exactly(user_id, ts, kind, text, item_id, weight):
    if text is None and item_id is None:
        item_id = "fallback"
    event = BehaviourEvent(user_id=user_id, ts_ms=ts, type=kind, text=text, item_id=item_id, weight=weight)
    assert decode_event(encode_event(event)) == event
    assert decode_event(encode_event(event), key=user_id.encode()) == event


def test_encode_uses_contract_field_names():
    event = BehaviourEvent(user_id="u", ts_ms=5, type="like", item_id="i", event_id="e", weight=2.0)
    assert msgspec.json.decode(encode_event(event)) == {
        "user_id": "u", "ts": 5, "type": "like", "item_id": "i", "event_id": "e", "weight": 2.0
    }
    assert msgspec.json.decode(encode_event(ForgetEvent(user_id="u", ts_ms=3))) == {
        "user_id": "u", "ts": 3, "type": "forget"
    }
