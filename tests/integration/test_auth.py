"""SCRAM authentication against a real broker: the service works with the right credentials and
stops at once (exit code 2, a clear message, no retry loop) with the wrong ones.

The module starts its own :class:`consumers.devbroker.DevBroker` with a SASL_PLAINTEXT listener and a
SASL_SSL listener (SCRAM-SHA-512 and SCRAM-SHA-256, self-signed certificate), so it does not use the
session's broker; with ``KAFKA_BOOTSTRAP_SERVERS`` (an external cluster) it is skipped.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from service_harness import ServiceProcess, Topics, wait_for

from stream.corpora import demo_corpus
from stream.simulation import simulate

pytestmark = pytest.mark.integration

USER, PASSWORD = "clusterer", "clusterer-secret-4d2a"
WRONG_PASSWORD = "not-the-password-9b1e"
FATAL_WITHIN_S = 60.0  # model load included


@pytest.fixture(scope="module")
def scram_broker(tmp_path_factory):
    from consumers.kafka_config import bootstrap_from_env

    if bootstrap_from_env():
        pytest.skip("KAFKA_BOOTSTRAP_SERVERS names an external cluster; the SCRAM tests start their own broker")
    from consumers.devbroker import BrokerError, DevBroker, _find_java

    try:
        _find_java()
    except BrokerError as exc:
        pytest.skip(str(exc))
    broker = DevBroker(tmp_path_factory.mktemp("scram-broker"), scram_users={USER: PASSWORD}, ssl=True)
    try:
        broker.start()
    except BrokerError as exc:
        if "Maven (mvn) is needed" in str(exc):
            pytest.skip(str(exc))
        raise
    try:
        yield broker
    finally:
        broker.stop()


def _x_options(security_protocol: str, mechanism: str, user: str, password: str, cafile: Path | None) -> list[str]:
    opts = ["security_protocol=" + security_protocol, "sasl_mechanism=" + mechanism,
            "sasl_plain_username=" + user, "sasl_plain_password=" + password]
    if cafile is not None:
        opts.append(f"ssl_cafile={cafile}")
    return [arg for opt in opts for arg in ("-X", opt)]


def _send(options: dict, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(acks="all", linger_ms=5, **options)
    try:
        futures = [producer.send(topic, key=k, value=v) for k, v in records]
        producer.flush(timeout=60)
        for f in futures:
            f.get(timeout=0)
    finally:
        producer.close()


def _read_all(options: dict, topic: str, timeout: float = 30) -> list:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(enable_auto_commit=False, group_id=None, **options)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or set())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        out = []
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < end[tp] for tp in tps):
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            for recs in consumer.poll(timeout_ms=500).values():
                out.extend(recs)
        return out
    finally:
        consumer.close()


def test_scram_listeners_accept_the_user_and_refuse_a_wrong_password(scram_broker):
    """Both listeners and both mechanisms authenticate the user, and data written through one listener
    is read through the other; a wrong password raises SaslAuthenticationFailedError at once (with the
    kafka_compat fixes installed, as the service does)."""
    from kafka import KafkaAdminClient
    from kafka.errors import SaslAuthenticationFailedError

    from consumers.kafka_compat import install

    install()
    topic = f"auth-{Topics.fresh().prefix}"
    plain = scram_broker.client_options(USER, mechanism="SCRAM-SHA-512")
    tls = scram_broker.client_options(USER, mechanism="SCRAM-SHA-256", ssl=True)
    admin = KafkaAdminClient(**plain)
    try:
        admin.create_topics({topic: {"num_partitions": 2, "replication_factor": 1}}, wait_for_metadata=True)
    finally:
        admin.close()
    sent = [(f"k{i}".encode(), f"v{i}".encode()) for i in range(20)]
    _send(tls, topic, sent)
    got = sorted((r.key, r.value) for r in _read_all(plain, topic))
    assert got == sorted(sent)

    for options in (scram_broker.client_options(USER, WRONG_PASSWORD),
                    scram_broker.client_options(USER, WRONG_PASSWORD, mechanism="SCRAM-SHA-256", ssl=True),
                    scram_broker.client_options("nobody", PASSWORD)):
        began = time.monotonic()
        with pytest.raises(SaslAuthenticationFailedError, match="Authentication failed"):
            KafkaAdminClient(**options).close()
        assert time.monotonic() - began < 10, "refused credentials are reported at once, not after a timeout"


def test_service_runs_end_to_end_over_scram(scram_broker, tmp_path):
    """The right credentials (SASL_PLAINTEXT, SCRAM-SHA-512, via -X): the service reads the catalog and
    events, and publishes an assignment for every user, read back with SCRAM credentials."""
    from kafka import KafkaAdminClient

    options = scram_broker.client_options(USER, mechanism="SCRAM-SHA-512")
    topics = Topics.fresh()
    admin = KafkaAdminClient(**options)
    try:
        admin.create_topics({topics.events: {"num_partitions": 2, "replication_factor": 1},
                             topics.items: {"num_partitions": 1, "replication_factor": 1,
                                            "configs": {"cleanup.policy": "compact"}}}, wait_for_metadata=True)
    finally:
        admin.close()
    corpus = demo_corpus()
    _send(options, topics.items, [(d.item_id.encode(), json.dumps({"item_id": d.item_id, "text": d.text}).encode())
                                  for d in corpus.documents])
    scenario = simulate(corpus, n_users=15, mean_events_per_user=5, content="item_id", seed=8)
    events = [(e["user_id"].encode(), json.dumps(e).encode()) for e in scenario.events]
    _send(options, topics.events, events)

    svc = ServiceProcess(scram_broker.sasl_bootstrap_servers, topics, tmp_path, "--clusters", "4",
                         *_x_options("SASL_PLAINTEXT", "SCRAM-SHA-512", USER, PASSWORD, None))
    try:
        svc.wait_ready()
        svc.wait_consumed(len(events))
        assert svc.value("interest_events_applied_total") == len(events)
        assert svc.value("interest_events_rejected_total", reason="unknown_item") == 0
        # A stream shorter than the model's warm-up: the idle sweep assigns everyone.
        svc.wait_all_assigned(len(scenario.truth))
        assert svc.stop() == 0, svc.log_tail()
    finally:
        svc.stop()
    changes = _read_all(options, topics.assignments)
    assert {r.key.decode() for r in changes} == set(scenario.truth)
    assert all(json.loads(r.value)["user_id"] == r.key.decode() for r in changes)
    log = svc.log_path.read_text(errors="replace")
    assert PASSWORD not in log, "the password is never logged"


@pytest.mark.parametrize("listener", ["SASL_PLAINTEXT/SCRAM-SHA-512", "SASL_SSL/SCRAM-SHA-256"])
def test_service_exits_2_at_once_on_a_wrong_password(scram_broker, tmp_path, listener):
    """A wrong password stops the service within a minute (model load included) with exit code 2
    and a log line saying authentication failed; it never sits in a retry loop."""
    protocol, mechanism = listener.split("/")
    ssl = protocol == "SASL_SSL"
    bootstrap = scram_broker.sasl_ssl_bootstrap_servers if ssl else scram_broker.sasl_bootstrap_servers
    cafile = scram_broker.ssl_cafile if ssl else None
    began = time.monotonic()
    svc = ServiceProcess(bootstrap, Topics.fresh(), tmp_path, "--clusters", "4",
                         *_x_options(protocol, mechanism, USER, WRONG_PASSWORD, cafile))
    try:
        wait_for(lambda: svc.proc.poll() is not None, FATAL_WITHIN_S,
                 what=f"the service to exit on refused credentials (log: {svc.log_path})")
    finally:
        code = svc.stop()
    took = time.monotonic() - began
    log = svc.log_path.read_text(errors="replace")
    assert code == 2, f"exit code {code} after {took:.0f} s:\n{log[-3000:]}"
    fatal_lines = [ln for ln in log.splitlines() if " ERROR interest_stream" in ln]
    assert fatal_lines, log[-3000:]
    assert any("SaslAuthenticationFailedError" in ln and "Authentication failed" in ln for ln in fatal_lines), \
        fatal_lines
    assert "retrying in" not in log, "refused credentials are not retried"
    assert WRONG_PASSWORD not in log, "the password is never logged"
