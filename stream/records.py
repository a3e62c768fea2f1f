"""Output record formats: what downstream subscribers read.

Every record published by the service is one of these structs, encoded as JSON
with :func:`encode_record`. Their JSON Schemas live in ``deploy/schemas/`` and the
tests validate encoded examples against them.

Example:

>>> change = AssignmentChange(
...     user_id="u1", cluster=3, previous_cluster=None, score=0.81,
...     top=[ClusterScore(cluster=3, score=0.81), ClusterScore(cluster=0, score=0.42)],
...     model_version=7, event_ts_ms=1_700_000_000_000, emit_ts_ms=1_700_000_000_050)
>>> encode_record(change)[:35]
b'{"schema_version":2,"user_id":"u1",'
>>> decode_change(encode_record(change)) == change
True

Assignment changes are at schema version 2: they gained ``interests`` (the user's interest
set with shares, largest first). A version 1 record (no ``interests``) still decodes:

>>> decode_change(b'{"schema_version":1,"user_id":"u1","cluster":3,"previous_cluster":null,"score":0.8,'
...               b'"top":[],"model_version":7,"event_ts_ms":1,"emit_ts_ms":2}').interests
[]
"""

from __future__ import annotations

import msgspec

SCHEMA_VERSION = 1
#: Version of the assignment-change format: 2 added ``interests`` (an additive field).
ASSIGNMENT_SCHEMA_VERSION = 2


class ClusterScore(msgspec.Struct, frozen=True):
    """One cluster and the user's cosine similarity to its centroid."""

    cluster: int
    score: float


class InterestShare(msgspec.Struct, frozen=True):
    """One of a user's interests: a cluster and its share of the user's decayed event weight."""

    cluster: int
    share: float


class AssignmentChange(msgspec.Struct, frozen=True, kw_only=True):
    """A user's best cluster or interest set changed (or was set for the first time).

    Published on the compacted assignments topic, key = ``user_id``. A user who is
    forgotten gets a tombstone (a record with a null value) instead. ``cluster`` is the
    profile's best cluster; ``interests`` the clusters holding at least
    ``min_interest_share`` of the user's events, largest share first. A record whose
    ``previous_cluster`` equals ``cluster`` announces a change of the interest set only.
    """

    schema_version: int = ASSIGNMENT_SCHEMA_VERSION
    user_id: str
    cluster: int
    previous_cluster: int | None
    score: float
    top: list[ClusterScore]
    model_version: int
    event_ts_ms: int
    emit_ts_ms: int
    interests: list[InterestShare] = []


class CentroidSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """The state of one cluster, published on the compacted centroids topic (key = cluster id)."""

    schema_version: int = SCHEMA_VERSION
    cluster: int
    vector: list[float]
    weight: float
    label_terms: list[str]
    model_version: int
    emit_ts_ms: int


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """Why an input record was rejected, and where it came from.

    On the dead-letter topic the record's value is the *original bytes* and these
    fields travel as headers (``reason``, ``detail``, ``source_topic``,
    ``source_partition``, ``source_offset``). The rejects file of ``replay`` writes
    the same fields as one JSON object per line, with the original line in ``raw``.
    """

    schema_version: int = SCHEMA_VERSION
    reason: str
    detail: str
    source_topic: str | None = None
    source_partition: int | None = None
    source_offset: int | None = None
    raw: str | None = None


_encoder = msgspec.json.Encoder()


def encode_record(record: AssignmentChange | CentroidSnapshot | DeadLetter) -> bytes:
    """Encode an output record as compact JSON bytes."""
    return _encoder.encode(record)


def decode_change(raw: bytes) -> AssignmentChange:
    """Decode an assignment-change record (raises ``msgspec.ValidationError`` on bad input)."""
    return msgspec.json.decode(raw, type=AssignmentChange)


def decode_centroid(raw: bytes) -> CentroidSnapshot:
    """Decode a centroid snapshot (raises ``msgspec.ValidationError`` on bad input)."""
    return msgspec.json.decode(raw, type=CentroidSnapshot)
