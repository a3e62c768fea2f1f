"""The JSON Schemas under deploy/schemas/ agree with the code: records, events and their validation."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from stream.events import (
    MAX_TS_MS,
    BehaviourEvent,
    ForgetEvent,
    Rejection,
    RejectReason,
    decode_event,
    encode_event,
)
from stream.records import AssignmentChange, CentroidSnapshot, ClusterScore, DeadLetter, encode_record

SCHEMAS = Path(__file__).resolve().parents[2] / "deploy" / "schemas"
NAMES = ["behaviour-event", "assignment-change", "centroid-snapshot", "dead-letter"]


def load(name: str) -> dict:
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text())


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(load(name))


EVENT = validator("behaviour-event")
CHANGE = validator("assignment-change")
CENTROID = validator("centroid-snapshot")
DEAD = validator("dead-letter")


@pytest.mark.parametrize("name", NAMES)
def test_schema_is_valid_draft_2020_12_and_its_examples_pass(name):
    schema = load(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)
    assert schema["examples"]
    for example in schema["examples"]:
        Draft202012Validator(schema).validate(example)


# ---------------------------------------------------------------- output records mirror stream/records.py


def _types(prop: dict, defs: dict) -> set[str]:
    """The JSON types a property allows, following $ref and anyOf (msgspec and hand-written styles)."""
    if "$ref" in prop:
        return _types(defs[prop["$ref"].split("/")[-1]], defs)
    if "anyOf" in prop:
        return set().union(*(_types(p, defs) for p in prop["anyOf"]))
    kinds = prop["type"]
    found = {kinds} if isinstance(kinds, str) else set(kinds)
    if "array" in found:
        found = (found - {"array"}) | {f"array<{','.join(sorted(_types(prop['items'], defs)))}>"}
    if "object" in found and "properties" in prop:
        inner = ";".join(f"{k}:{sorted(_types(v, defs))}" for k, v in sorted(prop["properties"].items()))
        found = (found - {"object"}) | {f"object<{inner}|{sorted(prop['required'])}>"}
    return found


@pytest.mark.parametrize(
    ("name", "struct"),
    [("assignment-change", AssignmentChange), ("centroid-snapshot", CentroidSnapshot), ("dead-letter", DeadLetter)],
)
def test_record_schema_matches_the_struct(name, struct):
    ours = load(name)
    generated = msgspec.json.schema(struct)
    gen_defs = generated["$defs"]
    theirs = gen_defs[struct.__name__]
    assert list(ours["properties"]) == list(theirs["properties"])  # same fields, same order
    assert sorted(ours["required"]) == sorted(theirs["required"])
    for field, prop in ours["properties"].items():
        assert _types(prop, ours.get("$defs", {})) == _types(theirs["properties"][field], gen_defs), field
        assert prop.get("default", "<none>") == theirs["properties"][field].get("default", "<none>"), field
        assert prop.get("description"), field


def _change(**kw) -> AssignmentChange:
    base = dict(
        user_id="u1", cluster=3, previous_cluster=1, score=0.8,
        top=[ClusterScore(cluster=3, score=0.8), ClusterScore(cluster=1, score=0.5)],
        model_version=2, event_ts_ms=1_700_000_000_000, emit_ts_ms=1_700_000_000_010,
    )
    return AssignmentChange(**{**base, **kw})


@pytest.mark.parametrize(
    "record",
    [
        _change(),
        _change(previous_cluster=None, top=[]),
        CentroidSnapshot(cluster=0, vector=[0.1] * 384, weight=3.5, label_terms=["jazz"], model_version=1, emit_ts_ms=5),
        CentroidSnapshot(cluster=9, vector=[], weight=0.0, label_terms=[], model_version=0, emit_ts_ms=0),
        DeadLetter(reason="not_json", detail="x", source_topic="events", source_partition=0, source_offset=12),
        DeadLetter(reason="bad_type", detail="x", raw='{"user_id": 1}'),
    ],
)
def test_encoded_records_validate(record):
    schema = {AssignmentChange: CHANGE, CentroidSnapshot: CENTROID, DeadLetter: DEAD}[type(record)]
    schema.validate(json.loads(encode_record(record)))


@pytest.mark.parametrize(
    ("schema", "broken"),
    [
        (CHANGE, {"user_id": "u1"}),
        (CHANGE, {**json.loads(encode_record(_change())), "cluster": "3"}),
        (CHANGE, {**json.loads(encode_record(_change())), "previous_cluster": 1.5}),
        (CHANGE, {**json.loads(encode_record(_change())), "top": [{"cluster": 1}]}),
        (CHANGE, {**json.loads(encode_record(_change())), "score": None}),
        (CENTROID, {"cluster": 0, "vector": ["a"], "weight": 1, "label_terms": [], "model_version": 1, "emit_ts_ms": 1}),
        (CENTROID, {"cluster": 0, "vector": [0.1], "weight": 1, "label_terms": [1], "model_version": 1, "emit_ts_ms": 1}),
        (CENTROID, {"cluster": 0, "vector": [0.1], "weight": 1, "label_terms": []}),
        (DEAD, {"detail": "no reason"}),
        (DEAD, {"reason": "x", "detail": "y", "source_offset": "12"}),
        (DEAD, {"reason": "", "detail": "y"}),
    ],
)
def test_broken_records_fail(schema, broken):
    assert not schema.is_valid(broken)


# ---------------------------------------------------------------- the event schema agrees with decode_event


@pytest.mark.parametrize(
    "obj",
    [
        {"user_id": "u1", "ts": 1_700_000_000_000, "text": "a"},
        {"user_id": 7, "item_id": 9},
        {"user_id": "u", "ts": "2024-01-01T00:00:00+02:00", "type": " Like ", "text": " hi ", "weight": 1000},
        {"user_id": "u", "ts": 1.5e12, "text": "a", "item_id": "", "event_id": None, "weight": 0.001, "x": [1]},
        {"user_id": "u", "text": "  ", "item_id": "i"},
        {"user_id": "u", "type": "forget"},
        {"user_id": "u", "type": "Forget", "text": 5, "weight": -1},
    ],
)
def test_accepted_examples_validate(obj):
    assert isinstance(decode_event(json.dumps(obj).encode(), record_ts_ms=1), BehaviourEvent | ForgetEvent)
    EVENT.validate(obj)


@pytest.mark.parametrize(
    "obj",
    [
        {"ts": 1, "text": "a"},
        {"user_id": None, "ts": 1, "text": "a"},
        {"user_id": "", "ts": 1, "text": "a"},
        {"user_id": " ", "ts": 1, "text": "a"},
        {"user_id": "a\tb", "ts": 1, "text": "a"},
        {"user_id": "x" * 257, "ts": 1, "text": "a"},
        {"user_id": True, "ts": 1, "text": "a"},
        {"user_id": 1.5, "ts": 1, "text": "a"},
        {"user_id": "u", "ts": 1},
        {"user_id": "u", "ts": 1, "text": "   "},
        {"user_id": "u", "ts": 1, "text": None, "item_id": " "},
        {"user_id": "u", "ts": -1, "text": "a"},
        {"user_id": "u", "ts": MAX_TS_MS + 1, "text": "a"},
        {"user_id": "u", "ts": True, "text": "a"},
        {"user_id": "u", "ts": "2024-01-01T00:00:00", "text": "a"},
        {"user_id": "u", "ts": "1700000000000", "text": "a"},
        {"user_id": "u", "ts": 1, "text": "a", "weight": 0},
        {"user_id": "u", "ts": 1, "text": "a", "weight": 1001},
        {"user_id": "u", "ts": 1, "text": "a", "weight": False},
        {"user_id": "u", "ts": 1, "text": "a", "weight": "1"},
        {"user_id": "u", "ts": 1, "text": "a", "type": 1},
        {"user_id": "u", "ts": 1, "text": "a", "type": "no spaces allowed"},
        {"user_id": "u", "ts": 1, "text": "a", "type": "\u212a"},
        {"user_id": "u", "ts": 1, "text": 5},
        {"user_id": "u", "ts": 1, "text": "x" * 10_001},
        {"user_id": "u", "ts": 1, "item_id": ["i"]},
        {"user_id": "u", "ts": 1, "text": "a", "event_id": {}},
        {"type": "forget"},
        [{"user_id": "u", "ts": 1, "text": "a"}],
        "u",
    ],
)
def test_rejected_examples_fail(obj):
    assert isinstance(decode_event(json.dumps(obj).encode()), Rejection)
    assert not EVENT.is_valid(obj)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)
def mostly(good: st.SearchStrategy, bad: st.SearchStrategy) -> st.SearchStrategy:
    """Valid values most of the time, so that both accepted and rejected events are common."""
    return st.sampled_from([good, good, good, good, good, bad]).flatmap(lambda strategy: strategy)


event_objects = st.fixed_dictionaries(
    {"user_id": mostly(st.sampled_from(["u1", "user 2", 42, -7]), st.sampled_from(["", " ", "a\x00", True, None]))},
    optional={
        "ts": mostly(
            st.integers(0, MAX_TS_MS) | st.floats(0, MAX_TS_MS)
            | st.sampled_from(["2024-03-01T10:00:00Z", "2024-03-01 10:00:00.5-05:00", None]),
            st.integers(-5, 0) | st.sampled_from(["2024-03-01T10:00:00", MAX_TS_MS + 1]) | json_values,
        ),
        "type": mostly(
            st.sampled_from(["view", " Search", "forget", "FoRgEt ", "a.b:c-d_1", None]),
            st.sampled_from(["", "a b", "x" * 33, "\u212a", "1a"]) | json_values,
        ),
        "text": mostly(st.sampled_from(["hello", "\u3000 x "]) | st.text(max_size=10), json_values),
        "item_id": mostly(st.sampled_from(["i1", "", " ", 5, None]), st.sampled_from(["\x7f", "\t"]) | json_values),
        "event_id": mostly(st.sampled_from(["e1", 3, None]), json_values),
        "weight": mostly(st.floats(0.001, 1000) | st.integers(1, 1000), st.floats() | st.integers(-2, 1002) | json_values),
    },
)
# Reasons whose rule the schema states exactly (others depend on the key, the record timestamp, byte limits
# or calendar checks the schema cannot express).
SCHEMA_EXPRESSIBLE = {
    RejectReason.MISSING_USER_ID, RejectReason.BAD_TYPE, RejectReason.BAD_WEIGHT,
    RejectReason.NO_TEXT_OR_ITEM, RejectReason.EMPTY_TEXT, RejectReason.NOT_OBJECT,
}


@settings(max_examples=400, deadline=None)
@given(mostly(event_objects, json_values))
def test_decoder_and_schema_agree(obj):
    result = decode_event(json.dumps(obj).encode(), record_ts_ms=1)
    if isinstance(result, BehaviourEvent | ForgetEvent):
        EVENT.validate(obj)
        EVENT.validate(json.loads(encode_event(result)))
    elif result.reason in SCHEMA_EXPRESSIBLE:
        assert not EVENT.is_valid(obj), result
