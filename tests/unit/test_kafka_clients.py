"""The Kafka client plumbing of :mod:`consumers.kafka_config`: where the cluster is, final errors, backoff,
free ports, the admin client. No broker: fake clients only."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
from kafka import errors as kerr

from consumers import devbroker, kafka_config
from consumers.kafka_config import (
    Backoff,
    admin_client,
    bootstrap_from_env,
    configured_bootstrap,
    is_fatal,
    resolve_bootstrap,
)

BOTH = {"INTEREST_STREAM_BOOTSTRAP_SERVERS": "svc:1", "KAFKA_BOOTSTRAP_SERVERS": "kafka:2"}


class _LiveBroker:
    bootstrap_servers = "dev:3"

    def is_alive(self) -> bool:
        return True


@pytest.fixture
def dev_broker(monkeypatch):
    """A live ``broker start`` broker at dev:3 (its recorded state, without a process)."""
    monkeypatch.setattr(devbroker, "load_state", lambda: _LiveBroker())


@pytest.fixture
def no_dev_broker(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))  # an empty state directory: no recorded broker


# ------------------------------------------------------------------------------- the bootstrap rule


@pytest.mark.usefixtures("dev_broker")
@pytest.mark.parametrize(
    ("option", "env", "expected"),
    [
        (" opt:0 , opt:9 ", BOTH, "opt:0,opt:9"),  # the option wins, spaces removed
        (None, BOTH, "svc:1"),  # INTEREST_STREAM_BOOTSTRAP_SERVERS beats KAFKA_BOOTSTRAP_SERVERS
        ("  ", BOTH, "svc:1"),  # a blank option is no option
        (None, {"KAFKA_BOOTSTRAP_SERVERS": " kafka:2, kafka:4 "}, "kafka:2,kafka:4"),
        (None, {"INTEREST_STREAM_BOOTSTRAP_SERVERS": " ", "KAFKA_BOOTSTRAP_SERVERS": "kafka:2"}, "kafka:2"),
        (None, {}, "dev:3"),  # then the live `broker start` broker
        (None, {"INTEREST_STREAM_BOOTSTRAP_SERVERS": "", "KAFKA_BOOTSTRAP_SERVERS": ","}, "dev:3"),
    ],
)
def test_the_one_precedence_rule(option, env, expected):
    assert resolve_bootstrap(option, env) == expected


def test_dev_broker_step_can_be_left_out(dev_broker):
    assert resolve_bootstrap(None, {}, dev_broker=False) is None
    assert resolve_bootstrap(None, {}) == "dev:3"


def test_the_environment_is_read_when_no_mapping_is_given(monkeypatch, no_dev_broker):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:2")
    monkeypatch.delenv("INTEREST_STREAM_BOOTSTRAP_SERVERS", raising=False)
    assert resolve_bootstrap() == "kafka:2"
    monkeypatch.setenv("INTEREST_STREAM_BOOTSTRAP_SERVERS", "svc:1")
    assert resolve_bootstrap() == "svc:1"
    assert configured_bootstrap() == ("INTEREST_STREAM_BOOTSTRAP_SERVERS", "svc:1")


def test_no_cluster_at_all_is_none(no_dev_broker, tmp_path):
    assert resolve_bootstrap(None, {}) is None
    state = tmp_path / "interest-stream" / "broker.json"
    state.parent.mkdir()
    state.write_text("{half written")
    assert resolve_bootstrap(None, {}) is None  # an unreadable state file is no broker
    state.write_text(json.dumps({"pid": 2**22 + 12345, "data_dir": str(tmp_path / "d"), "broker_port": 1,
                                 "controller_port": 2, "bootstrap_servers": "127.0.0.1:1"}))
    assert resolve_bootstrap(None, {}) is None  # recorded, but not running


def test_kafka_bootstrap_servers_alone_means_an_external_cluster_for_the_test_fixtures():
    assert bootstrap_from_env(BOTH) == "kafka:2"
    assert bootstrap_from_env({"INTEREST_STREAM_BOOTSTRAP_SERVERS": "svc:1"}) is None
    assert configured_bootstrap({}) is None
    assert configured_bootstrap({"KAFKA_BOOTSTRAP_SERVERS": "kafka:2"}) == ("KAFKA_BOOTSTRAP_SERVERS", "kafka:2")


def test_demo_finds_its_cluster_by_the_same_rule(monkeypatch, dev_broker):
    def no_start(*args, **kwargs):
        raise AssertionError("a broker was started although one was named")

    monkeypatch.setattr(devbroker.DevBroker, "start", no_start)
    for name, value in BOTH.items():
        monkeypatch.setenv(name, value)
    assert devbroker.bootstrap_servers_or_start() == ("svc:1", None)
    monkeypatch.delenv("INTEREST_STREAM_BOOTSTRAP_SERVERS")
    assert devbroker.bootstrap_servers_or_start() == ("kafka:2", None)
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS")
    assert devbroker.bootstrap_servers_or_start() == ("dev:3", None)


def test_help_and_hint_name_the_rule():
    text = kafka_config.bootstrap_help("localhost:9092")
    order = ["INTEREST_STREAM_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS", "broker start", "localhost:9092"]
    assert [text.index(word) for word in order] == sorted(text.index(word) for word in order)
    for word in ("--bootstrap-servers", "INTEREST_STREAM_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS",
                 "interest-stream broker start"):
        assert word in kafka_config.NO_CLUSTER_HINT


# ------------------------------------------------------------------------------------- final errors


@pytest.mark.parametrize(
    "error",
    [kerr.SaslAuthenticationFailedError, kerr.UnsupportedSaslMechanismError, kerr.IllegalSaslStateError,
     kerr.TopicAuthorizationFailedError, kerr.GroupAuthorizationFailedError, kerr.ClusterAuthorizationFailedError,
     kerr.TransactionalIdAuthorizationFailedError, kerr.DelegationTokenAuthorizationFailedError],
)
def test_refused_credentials_and_missing_acls_are_fatal(error):
    assert is_fatal(error("refused"))


@pytest.mark.parametrize(
    "error",
    [kerr.KafkaTimeoutError, kerr.KafkaConnectionError, kerr.NotLeaderForPartitionError,
     kerr.CoordinatorNotAvailableError, kerr.ProducerFencedError, kerr.UnknownTopicOrPartitionError],
)
def test_everything_else_is_worth_a_retry(error):
    assert not is_fatal(error())
    assert not is_fatal(RuntimeError("boom")) and not is_fatal(OSError("reset"))


def test_the_table_names_real_error_classes():
    names = set(kafka_config.FATAL_ERROR_NAMES)
    assert {t.__name__ for t in kafka_config.fatal_error_types()} <= names
    assert all(issubclass(t, kerr.KafkaError) for t in kafka_config.fatal_error_types())


class _Connection:
    """Stands for ``kafka.net.connection.KafkaConnection``: its ``initialize`` closes on any error."""

    def __init__(self, error: BaseException) -> None:
        self.error, self.closed_with = error, []

    async def initialize(self, timeout_at=None):
        self.close(self.error)

    def close(self, error=None):
        self.closed_with.append(error)


@pytest.mark.parametrize(
    ("error", "raised"),
    [(kerr.SaslAuthenticationFailedError("bad password"), True),
     (kerr.TopicAuthorizationFailedError("no ACL"), True),
     (kerr.IllegalSaslStateError("odd"), True),
     (kerr.KafkaConnectionError("socket disconnected"), False)],
)
def test_the_kafka_compat_patch_uses_the_same_table(error, raised):
    from consumers import kafka_compat

    class Conn(_Connection):
        pass

    kafka_compat._patch_initialize(Conn)
    conn = Conn(error)
    if raised:
        with pytest.raises(type(error)):
            asyncio.run(conn.initialize())
    else:
        asyncio.run(conn.initialize())  # a retriable error: closed, left to the retry loop
    assert conn.closed_with == [error]


# ------------------------------------------------------------------------------------------ backoff


def test_backoff_doubles_up_to_its_cap_with_jitter_and_resets(monkeypatch):
    monkeypatch.setattr(kafka_config.random, "random", lambda: 0.5)  # jitter factor exactly 1
    backoff = Backoff(cap=4.0, first=0.5)
    assert [backoff.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.next_delay() == 0.5
    monkeypatch.setattr(kafka_config.random, "random", lambda: 0.0)
    assert Backoff(cap=30.0).next_delay() == pytest.approx(0.4)  # -20 %
    monkeypatch.setattr(kafka_config.random, "random", lambda: 0.999999)
    assert Backoff(cap=30.0).next_delay() == pytest.approx(0.6, abs=1e-6)  # +20 %


# ---------------------------------------------------------------------------------------- free_port


def test_one_free_port_for_code_and_tests():
    import promtools
    import service_harness

    assert promtools.free_port is devbroker.free_port
    assert service_harness.free_port is devbroker.free_port
    ports: set[int] = set()
    for _ in range(5):
        ports.add(devbroker.free_port(exclude=ports))
    assert len(ports) == 5
    for port in ports:
        with socket.socket() as sock:
            sock.bind((devbroker.HOST, port))


# ------------------------------------------------------------------------------------- admin client


def test_admin_client_is_closed_even_when_the_block_fails(monkeypatch):
    import kafka

    made = []

    class FakeAdmin:
        def __init__(self, **options) -> None:
            self.options, self.closed = options, False
            made.append(self)

        def close(self) -> None:
            self.closed = True

    monkeypatch.setattr(kafka, "KafkaAdminClient", FakeAdmin)
    with admin_client("a:1", "me", request_timeout_ms=5) as admin:
        assert admin.options == {"bootstrap_servers": "a:1", "client_id": "me", "request_timeout_ms": 5}
    with pytest.raises(ValueError), admin_client("a:1", "me"):
        raise ValueError("inside")
    assert [a.closed for a in made] == [True, True]


# ------------------------------------------------------------------------------------ ensure_topics


class _TopicAdmin:
    """Enough of ``KafkaAdminClient`` for :func:`consumers.topics.ensure_topics` to create topics."""

    def __init__(self, existing: set[str]) -> None:
        self.existing, self.created, self.closed = set(existing), [], False

    def list_topics(self):
        return sorted(self.existing)

    def create_topics(self, requests, wait_for_metadata=False):
        for name, request in requests.items():
            self.created.append((name, request))
            self.existing.add(name)

    def close(self) -> None:
        self.closed = True


def test_produce_creates_missing_topics_with_ensure_topics_and_writes_to_existing_ones_as_they_are(monkeypatch):
    import kafka

    from consumers.commands import produce
    from consumers.topics import COMPACT_TUNING

    admin = _TopicAdmin(existing={"events"})
    monkeypatch.setattr(kafka, "KafkaAdminClient", lambda **options: admin)
    monkeypatch.setattr(produce, "send_records",
                        lambda bootstrap, topic, records, **kw: produce.ProduceStats(sent=len(list(records))))
    assert not hasattr(produce, "ensure_topic")  # one ensure_topics, in consumers.topics

    assert produce.publish_catalog("b:1", "items", partitions=2) > 0
    assert admin.created == [("items", {"num_partitions": 2, "replication_factor": 1,
                                        "configs": {"cleanup.policy": "compact", **COMPACT_TUNING}})]
    assert produce.publish_catalog("b:1", "items") > 0  # exists now: not created again, not checked
    assert len(admin.created) == 1 and admin.closed
