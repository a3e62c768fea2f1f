"""``produce`` without a broker: record keys, file lines, demo records, where the cluster is."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from consumers.cli import app
from consumers.commands.produce import demo_records, file_records, key_of, resolve_bootstrap
from stream.events import BehaviourEvent, decode_event


@pytest.mark.parametrize(
    ("line", "key"),
    [
        (b'{"user_id": "u1", "text": "x"}', b"u1"),
        (b'{"user_id": 42}', b"42"),
        (b'{"user_id": "\xc3\xa9l\xc3\xa8ve"}', "élève".encode()),
        (b'{"user_id": ""}', None),
        (b'{"user_id": true}', None),
        (b'{"user_id": null}', None),
        (b'{"user_id": ["u1"]}', None),
        (b'{"text": "no user"}', None),
        (b"[1, 2]", None),
        (b'{"user_id": "u1", ', None),
        (b"\xff\xfe", None),
        (b"[" * 5000, None),
    ],
)
def test_key_of(line, key):
    assert key_of(line) == key


def test_file_records_keep_lines_and_skip_empty_ones(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_bytes(b'{"user_id": "a"}\r\n\n  \nnot json\n\xff\n{"user_id": "b"}')
    records, total = file_records(path)
    assert list(records) == [(b"a", b'{"user_id": "a"}'), (None, b"  "), (None, b"not json"), (None, b"\xff"),
                             (b"b", b'{"user_id": "b"}')]
    assert total == 5


def test_demo_records_are_keyed_decodable_and_deterministic(tmp_path):
    records, total = demo_records(users=8, events_per_user=5, seed=2, truth_out=tmp_path / "truth.json")
    records = list(records)
    assert len(records) == total > 8
    for key, value in records:
        event = decode_event(value, key=key)
        assert isinstance(event, BehaviourEvent) and key == event.user_id.encode()
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert set(truth) == {key.decode() for key, _ in records}
    again, _ = demo_records(users=8, events_per_user=5, seed=2)
    assert [json.loads(v)["text"] for _, v in again] == [json.loads(v)["text"] for _, v in records]


def test_bootstrap_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "env:9092")
    assert resolve_bootstrap(" a:1, b:2 ") == "a:1,b:2"
    assert resolve_bootstrap(None) == "env:9092"
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS")
    assert resolve_bootstrap(None) is None
    state = tmp_path / "interest-stream" / "broker.json"
    state.parent.mkdir()
    state.write_text("{not json")
    assert resolve_bootstrap(None) is None
    state.write_text(json.dumps({"pid": 2**22 + 12345, "data_dir": str(tmp_path / "d"), "broker_port": 1,
                                 "controller_port": 2, "bootstrap_servers": "127.0.0.1:1"}))
    assert resolve_bootstrap(None) is None  # recorded, but that broker is not running


def test_cli_needs_a_cluster_and_one_source(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    runner = CliRunner()
    result = runner.invoke(app, ["produce", "--demo"])
    assert result.exit_code == 2 and "interest-stream broker start" in result.output
    path = tmp_path / "e.jsonl"
    path.write_text("{}\n")
    for args in ([], ["--demo", "--file", str(path)]):
        result = runner.invoke(app, ["produce", *args])
        assert result.exit_code == 2 and "exactly one of --demo or --file" in result.output
    result = runner.invoke(app, ["produce", "--demo", "--content", "pictures", "-b", "x:1"])
    assert result.exit_code == 2 and "--content" in result.output
