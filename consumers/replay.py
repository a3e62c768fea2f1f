"""Offline replay: run the clustering pipeline over a JSONL file of events, no Kafka needed.

:func:`run_replay` reads an events file (one Kafka message value per line, the wire format
of :mod:`stream.events`), cuts it into micro-batches of ``batch_size`` *lines* (batch ``i``
holds lines ``i*B+1 .. (i+1)*B``, so batches are a deterministic function of line numbers,
whatever the lines contain), and runs each through the same
:class:`stream.pipeline.Pipeline` the Kafka service runs. It writes

- the **changes file**: one JSON line per output record of the assignments topic, in order:
  an :class:`~stream.records.AssignmentChange`, or, for a forgotten user, a tombstone line
  ``{"schema_version": 1, "user_id": ..., "tombstone": true}`` (:func:`read_changes` reads both);
- the **rejects file**: one :class:`~stream.records.DeadLetter` JSON line per rejected line,
  with the original line in ``raw`` (undecodable bytes backslash-escaped) and its 1-based
  line number as ``source_offset`` (``source_topic`` is the input file name);
- optionally the **centroids file**: the final centroids, weights, sizes and label terms as
  one JSON document.

Nothing in the input aborts a replay: every line is applied, rejected (with a reason) or
skipped (empty lines, counted). A file has no record timestamps, so a line without ``ts``
is rejected ``bad_timestamp`` unless ``default_ts_ms`` is given. Emission times are event
times (the largest event time seen so far), so a replay is reproducible byte for byte.

Example (with a fake encoder; the CLI loads the sentence-transformers model):

>>> import json, tempfile
>>> import numpy as np
>>> from pathlib import Path
>>> from stream.settings import ClusteringSettings
>>> class Fake:
...     dim = 2
...     def encode(self, texts):
...         return np.array([[1.0, 0.01 * len(t)] for t in texts], np.float32)
>>> d = Path(tempfile.mkdtemp())
>>> lines = [json.dumps({"user_id": f"u{i}", "ts": i, "text": "x" * i}) for i in range(1, 9)]
>>> _ = (d / "events.jsonl").write_text("\\n".join(lines + ["oops"]) + "\\n")
>>> summary = run_replay(d / "events.jsonl", d / "changes.jsonl", ClusteringSettings(n_clusters=2),
...                      encoder=Fake(), batch_size=4)
>>> summary.lines, summary.applied, dict(summary.rejected), summary.batches
(9, 8, {'not_json': 1}, 3)
>>> [json.loads(x)["source_offset"] for x in (d / "changes.rejects.jsonl").read_text().splitlines()]
[9]
>>> sum(1 for _ in read_changes(d / "changes.jsonl")) == summary.changes
True
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from stream.catalog import ItemCatalog
from stream.records import SCHEMA_VERSION, AssignmentChange, DeadLetter, decode_change, encode_record
from stream.settings import ClusteringSettings

__all__ = ["ClusterSummary", "ReplaySummary", "default_rejects_path", "read_changes", "run_replay"]

ProgressFn = Callable[[int, int], None]  # (bytes read so far, lines so far)


@dataclass(slots=True)
class ClusterSummary:
    """One cluster at the end of a replay."""

    cluster: int
    users: int
    weight: float
    label_terms: list[str]


@dataclass(slots=True)
class ReplaySummary:
    """What a replay did (see :func:`run_replay`)."""

    input_path: Path
    output_path: Path
    rejects_path: Path
    centroids_path: Path | None
    lines: int = 0
    blank_lines: int = 0
    batches: int = 0
    applied: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    forget_events: int = 0
    superseded: int = 0
    changes: int = 0
    tombstones: int = 0
    users: int = 0
    model_version: int = 0
    clusters: list[ClusterSummary] = field(default_factory=list)
    seconds: float = 0.0
    embed_seconds: float = 0.0
    cache_hits: int = 0
    cache_misses: int = 0
    texts_encoded: int = 0
    truncated: int = 0
    catalog_items: int = 0

    @property
    def n_rejected(self) -> int:
        return sum(self.rejected.values())

    @property
    def events_per_s(self) -> float:
        """Input lines processed per second of wall time."""
        return self.lines / self.seconds if self.seconds > 0 else 0.0

    @property
    def cache_hit_ratio(self) -> float:
        total = self.cache_hits + self.cache_misses
        return self.cache_hits / total if total else 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (for benchmarks and scripts)."""
        return {
            "input": str(self.input_path),
            "output": str(self.output_path),
            "rejects": str(self.rejects_path),
            "centroids": None if self.centroids_path is None else str(self.centroids_path),
            "lines": self.lines,
            "blank_lines": self.blank_lines,
            "batches": self.batches,
            "applied": self.applied,
            "rejected": dict(self.rejected),
            "forget_events": self.forget_events,
            "superseded": self.superseded,
            "changes": self.changes,
            "tombstones": self.tombstones,
            "users": self.users,
            "model_version": self.model_version,
            "clusters": [
                {"cluster": c.cluster, "users": c.users, "weight": c.weight, "label_terms": c.label_terms}
                for c in self.clusters
            ],
            "seconds": self.seconds,
            "events_per_s": self.events_per_s,
            "embed_seconds": self.embed_seconds,
            "cache_hits": self.cache_hits,
            "cache_misses": self.cache_misses,
            "cache_hit_ratio": self.cache_hit_ratio,
            "texts_encoded": self.texts_encoded,
            "truncated": self.truncated,
            "catalog_items": self.catalog_items,
        }


def default_rejects_path(output_path: str | Path) -> Path:
    """``changes.jsonl`` -> ``changes.rejects.jsonl`` (beside the output)."""
    out = Path(output_path)
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    return out.with_name(f"{stem}.rejects.jsonl")


class _Tombstone(msgspec.Struct):
    schema_version: int
    user_id: str
    tombstone: bool


_encoder = msgspec.json.Encoder()
_TOMBSTONE_KEYS = b'"tombstone":true'


def _tombstone_line(user_id: str) -> bytes:
    return _encoder.encode(_Tombstone(SCHEMA_VERSION, user_id, True))


def read_changes(path: str | Path) -> Iterator[tuple[str, AssignmentChange | None]]:
    """Read a changes file: ``(user_id, change)``, or ``(user_id, None)`` for a tombstone.

    Raises ``msgspec.ValidationError`` / ``DecodeError`` on a line that is neither.
    """
    with open(path, "rb") as fh:
        for line in fh:
            line = line.rstrip(b"\r\n")
            if not line:
                continue
            if _TOMBSTONE_KEYS in line:
                t = msgspec.json.decode(line, type=_Tombstone)
                yield t.user_id, None
            else:
                change = decode_change(line)
                yield change.user_id, change


def _batches(path: Path, batch_size: int) -> Iterator[tuple[list[tuple[int, bytes]], int, int, int]]:
    """``(non-blank (line number, line) pairs, blank lines, bytes read, last line number)`` per batch."""
    with path.open("rb") as fh:
        lineno = 0
        read = 0
        batch: list[tuple[int, bytes]] = []
        blank = 0
        for raw in fh:
            lineno += 1
            read += len(raw)
            line = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1] if raw.endswith(b"\n") else raw
            if line.strip():
                batch.append((lineno, line))
            else:
                blank += 1
            if lineno % batch_size == 0:
                yield batch, blank, read, lineno
                batch, blank = [], 0
        if batch or blank:
            yield batch, blank, read, lineno


def run_replay(
    input_path: str | Path,
    output_path: str | Path,
    settings: ClusteringSettings,
    *,
    batch_size: int = 256,
    rejects_path: str | Path | None = None,
    centroids_path: str | Path | None = None,
    catalog_path: str | Path | None = None,
    default_ts_ms: int | None = None,
    encoder: Any | None = None,
    pipeline: Any | None = None,
    progress: ProgressFn | None = None,
) -> ReplaySummary:
    """Replay ``input_path`` through a fresh pipeline; see the module docstring.

    ``encoder`` replaces the sentence-transformers model (tests); ``pipeline`` continues an
    existing :class:`~stream.pipeline.Pipeline` (warm cache and state) instead of a fresh one.
    ``progress(bytes_read, lines)`` is called after every batch.
    """
    from stream.pipeline import Pipeline
    from stream.worker import SourceRecord

    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    input_path = Path(input_path)
    output_path = Path(output_path)
    rejects = Path(rejects_path) if rejects_path is not None else default_rejects_path(output_path)
    centroids = Path(centroids_path) if centroids_path is not None else None
    if pipeline is None:
        catalog = ItemCatalog()
        pipeline = Pipeline.from_settings(settings, encoder=encoder, catalog=catalog)
    if catalog_path is not None:
        pipeline.catalog.load_jsonl(catalog_path)

    summary = ReplaySummary(input_path, output_path, rejects, centroids, catalog_items=len(pipeline.catalog))
    counters0 = pipeline.counters.as_dict()
    source_name = input_path.name
    started = time.perf_counter()
    output_path.parent.mkdir(parents=True, exist_ok=True)
    rejects.parent.mkdir(parents=True, exist_ok=True)
    with output_path.open("wb") as out, rejects.open("wb") as rej:
        for lines, blank, read, lineno in _batches(input_path, batch_size):
            summary.lines = lineno
            summary.blank_lines += blank
            summary.batches += 1
            records = [
                SourceRecord(value=line, key=None, timestamp_ms=default_ts_ms, topic=source_name, offset=n)
                for n, line in lines
            ]
            result = pipeline.process_batch(records, now_ms=None)
            summary.applied += result.n_applied
            for change in result.changes:
                out.write(encode_record(change))
                out.write(b"\n")
            for user_id in result.tombstones:
                out.write(_tombstone_line(user_id))
                out.write(b"\n")
            summary.changes += len(result.changes)
            summary.tombstones += len(result.tombstones)
            for record, rejection in result.dead_letters:
                summary.rejected[rejection.reason] += 1
                dead = DeadLetter(
                    reason=rejection.reason,
                    detail=rejection.detail,
                    source_topic=record.topic,
                    source_partition=None,
                    source_offset=record.offset,
                    raw=(record.value or b"").decode("utf-8", "backslashreplace"),
                )
                rej.write(encode_record(dead))
                rej.write(b"\n")
            if progress is not None:
                progress(read, lineno)
        # The input is over: settle every user against the final model, as the service does when idle.
        settled = pipeline.reassess(list(pipeline.profiles.user_ids()), pipeline.event_clock_ms)
        for change in settled:
            out.write(encode_record(change))
            out.write(b"\n")
        summary.changes += len(settled)

    counters = pipeline.counters.as_dict()
    events1, events0 = counters["events"], counters0["events"]
    summary.forget_events = events1.get("forget", 0) - events0.get("forget", 0)
    summary.superseded = events1.get("superseded", 0) - events0.get("superseded", 0)
    for key in ("cache_hits", "cache_misses", "texts_encoded", "truncated", "embed_seconds"):
        setattr(summary, key, counters[key] - counters0[key])
    summary.users = len(pipeline.profiles)
    summary.model_version = pipeline.model.version
    sizes = pipeline.tracker.cluster_sizes(pipeline.model.n_clusters)
    now_ms = pipeline.event_clock_ms
    snapshots = pipeline.snapshot(now_ms)
    summary.clusters = [
        ClusterSummary(cluster=s.cluster, users=int(sizes[s.cluster]), weight=s.weight, label_terms=s.label_terms)
        for s in snapshots
    ]
    if centroids is not None:
        centroids.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "schema_version": SCHEMA_VERSION,
            "model_version": pipeline.model.version,
            "n_clusters": pipeline.model.n_clusters,
            "dim": pipeline.model.dim,
            "emit_ts_ms": now_ms,
            "clusters": [
                {**msgspec.to_builtins(s), "users": int(sizes[s.cluster])} for s in snapshots
            ],
        }
        centroids.write_text(json.dumps(doc) + "\n", encoding="utf-8")
    summary.seconds = time.perf_counter() - started
    return summary
