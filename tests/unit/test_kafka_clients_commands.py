"""Every command finds the cluster by the same rule (no broker: the Kafka side of each command is faked).

``--bootstrap-servers`` > ``INTEREST_STREAM_BOOTSTRAP_SERVERS`` > ``KAFKA_BOOTSTRAP_SERVERS`` > the live
broker of ``interest-stream broker start`` > the command's own last resort: exit 2 for ``run``,
``produce`` and ``forget``, ``localhost:9092`` for ``inspect`` and ``report``, a throw-away broker for
``demo``. ``run`` also reads ``bootstrap_servers`` from ``--config``, between the two variables.
"""

from __future__ import annotations

import contextlib
import sys
import types

import pytest
from typer.testing import CliRunner

from consumers import devbroker
from consumers.cli import app

SVC, KAFKA = "INTEREST_STREAM_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS"


class _Broker:
    """A ``broker start`` broker that is alive (``load_state``), or one a command starts (``DevBroker``)."""

    def __init__(self, *args, bootstrap: str = "started:9", **kwargs) -> None:
        self.bootstrap_servers = bootstrap
        self.stopped = False

    def is_alive(self) -> bool:
        return True

    def start(self):
        return self

    def stop(self, *args, **kwargs) -> None:
        self.stopped = True


class _Used(Exception):
    """Raised by a faked Kafka client once it has seen the bootstrap servers, to end a long command early."""


@pytest.fixture
def used(monkeypatch, tmp_path):
    """Fakes the Kafka side of every command; returns the list of bootstrap servers they were given."""
    import kafka

    from consumers import cluster_source, kafka_config
    from consumers.cluster_source import ClusterHistories
    from consumers.commands import produce
    from consumers.commands.produce import ProduceStats

    seen: list[str] = []

    @contextlib.contextmanager
    def admin(bootstrap, client_id, **options):
        seen.append(bootstrap)
        yield types.SimpleNamespace(list_topics=lambda: [])

    def send_records(bootstrap, topic, records, **kwargs):
        seen.append(bootstrap)
        return ProduceStats(sent=len(list(records)))

    def load_histories(bootstrap, *args, **kwargs):
        seen.append(bootstrap)
        return ClusterHistories([], [], 0)

    class Producer:
        def __init__(self, bootstrap_servers, **options) -> None:
            seen.append(",".join(bootstrap_servers))

        def send(self, *args, **kwargs):
            pass

        def flush(self, timeout=None):
            pass

        def close(self):
            pass

    class Service:
        def __init__(self, settings) -> None:
            seen.append(settings.bootstrap_servers)

        def run(self) -> int:
            return 0

    def demo_admin(bootstrap, client_id, **options):
        seen.append(bootstrap)
        raise _Used(bootstrap)

    for name in (SVC, KAFKA):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))  # no recorded broker unless a test says so
    monkeypatch.setattr(produce, "admin_client", admin)
    monkeypatch.setattr(produce, "ensure_topics", lambda admin, specs, **kw: [])
    monkeypatch.setattr(produce, "send_records", send_records)
    monkeypatch.setattr(cluster_source, "load_histories", load_histories)
    monkeypatch.setattr(kafka, "KafkaProducer", Producer)
    monkeypatch.setitem(sys.modules, "consumers.service", types.SimpleNamespace(InterestService=Service))
    monkeypatch.setattr(kafka_config, "admin_client", demo_admin)  # demo's first Kafka call
    monkeypatch.setattr(devbroker, "DevBroker", _Broker)
    monkeypatch.setattr("consumers.commands.demo.tempfile.mkdtemp", lambda prefix="": str(tmp_path))
    return seen


def _args(command: str, tmp_path) -> list[str]:
    events = tmp_path / "events.jsonl"
    events.write_text('{"user_id": "u1", "text": "hello"}\n')
    return {
        "run": ["run"],
        "produce": ["produce", "--file", str(events), "--quiet"],
        "forget": ["forget", "u1"],
        "inspect": ["inspect", "--json"],
        "report": ["report", "--output", str(tmp_path / "report.html")],
        "demo": ["demo"],
    }[command]


COMMANDS = ["run", "produce", "forget", "inspect", "report", "demo"]
WITH_OPTION = [c for c in COMMANDS if c != "demo"]  # the demo takes no --bootstrap-servers
NOTHING = {"run": None, "produce": None, "forget": None,  # None: exit 2, saying how to name a cluster
           "inspect": "localhost:9092", "report": "localhost:9092", "demo": "started:9"}


def _invoke(command: str, tmp_path, *extra: str):
    return CliRunner().invoke(app, [*_args(command, tmp_path), *extra])


def _expect(result, used, command: str, bootstrap: str) -> None:
    if command == "demo":
        assert isinstance(result.exception, _Used), result.output
        assert f"Kafka at {bootstrap}" in result.output
    else:
        assert result.exit_code == 0, result.output
    assert used and set(used) == {bootstrap}, used


@pytest.mark.parametrize("command", WITH_OPTION)
def test_the_option_beats_both_variables(command, used, tmp_path, monkeypatch):
    monkeypatch.setenv(SVC, "svc:1")
    monkeypatch.setenv(KAFKA, "kafka:2")
    monkeypatch.setattr(devbroker, "load_state", lambda: _Broker(bootstrap="dev:3"))
    _expect(_invoke(command, tmp_path, "--bootstrap-servers", " opt:0 "), used, command, "opt:0")


@pytest.mark.parametrize("command", COMMANDS)
def test_interest_stream_bootstrap_servers_beats_kafka_bootstrap_servers(command, used, tmp_path, monkeypatch):
    monkeypatch.setenv(SVC, "svc:1")
    monkeypatch.setenv(KAFKA, "kafka:2")
    monkeypatch.setattr(devbroker, "load_state", lambda: _Broker(bootstrap="dev:3"))
    _expect(_invoke(command, tmp_path), used, command, "svc:1")


@pytest.mark.parametrize("command", COMMANDS)
def test_kafka_bootstrap_servers_beats_the_dev_broker(command, used, tmp_path, monkeypatch):
    monkeypatch.setenv(KAFKA, "kafka:2")
    monkeypatch.setattr(devbroker, "load_state", lambda: _Broker(bootstrap="dev:3"))
    _expect(_invoke(command, tmp_path), used, command, "kafka:2")


@pytest.mark.parametrize("command", COMMANDS)
def test_the_running_dev_broker_comes_next(command, used, tmp_path, monkeypatch):
    monkeypatch.setattr(devbroker, "load_state", lambda: _Broker(bootstrap="dev:3"))
    _expect(_invoke(command, tmp_path), used, command, "dev:3")


@pytest.mark.parametrize("command", COMMANDS)
def test_with_nothing_each_command_does_its_documented_last_resort(command, used, tmp_path):
    result = _invoke(command, tmp_path)
    if NOTHING[command] is None:
        assert result.exit_code == 2, result.output
        assert "interest-stream broker start" in result.output and used == []
    else:
        _expect(result, used, command, NOTHING[command])


@pytest.mark.parametrize("command", COMMANDS)
def test_help_states_the_rule(command):
    text = " ".join(CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "400"}).output.split())
    if command == "demo":
        return  # no --bootstrap-servers: the demo's docstring and README state the rule
    for word in ("INTEREST_STREAM_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS", "broker start"):
        assert word in text, (command, text)
    assert text.index("INTEREST_STREAM_BOOTSTRAP_SERVERS") < text.index("$KAFKA_BOOTSTRAP_SERVERS")


def test_run_ranks_its_config_file_after_interest_stream_and_before_kafka(used, tmp_path, monkeypatch):
    config = tmp_path / "c.toml"
    config.write_text('bootstrap_servers = "file:5"\n')
    monkeypatch.setattr(devbroker, "load_state", lambda: _Broker(bootstrap="dev:3"))
    monkeypatch.setenv(KAFKA, "kafka:2")
    assert CliRunner().invoke(app, ["run", "--config", str(config)]).exit_code == 0
    monkeypatch.setenv(SVC, "svc:1")
    assert CliRunner().invoke(app, ["run", "--config", str(config)]).exit_code == 0
    assert used == ["file:5", "svc:1"]


def test_run_reports_invalid_settings_not_the_dev_broker(used, tmp_path, monkeypatch):
    monkeypatch.setattr(devbroker, "load_state", lambda: _Broker(bootstrap="dev:3"))
    result = CliRunner().invoke(app, ["run", "--clusters", "0"])
    assert result.exit_code == 2 and "n_clusters" in result.output and used == []


@pytest.mark.parametrize(("name", "value"), [(SVC, "svc:1"), (KAFKA, "kafka:2")])
def test_broker_start_starts_nothing_when_a_variable_names_the_cluster(name, value, used, monkeypatch):
    monkeypatch.setenv(name, value)
    result = CliRunner().invoke(app, ["broker", "start"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and f"{name} is set ({value})" in result.output
    status = CliRunner().invoke(app, ["broker", "status"], env={"COLUMNS": "200"})
    assert f"{name}={value}" in status.output and status.exit_code == 0
