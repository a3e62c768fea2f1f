"""Shared fixtures.

Kafka: ``kafka_bootstrap`` is the cluster every integration test talks to: ``KAFKA_BOOTSTRAP_SERVERS``
when set, otherwise one :class:`consumers.devbroker.DevBroker` started for the whole session (jars
fetched by Maven on the first run, then cached). ``kafka_broker`` is that DevBroker (None for an
external cluster) for tests that stop or restart it. ``topic_factory`` creates fresh topics.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator

import pytest


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[object | None]:
    """The session's DevBroker, or None when ``KAFKA_BOOTSTRAP_SERVERS`` names an external cluster."""
    from consumers.kafka_config import bootstrap_from_env

    if bootstrap_from_env():
        yield None
        return
    from consumers.devbroker import BrokerError, DevBroker

    try:
        broker = DevBroker().start()
    except BrokerError as exc:
        pytest.fail(f"could not start the development Kafka broker (Java 17+ and Maven needed): {exc}",
                    pytrace=False)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker) -> str:
    """Bootstrap servers of the Kafka cluster the integration tests use."""
    from consumers.kafka_config import bootstrap_from_env

    return kafka_broker.bootstrap_servers if kafka_broker is not None else bootstrap_from_env()


@pytest.fixture
def topic_factory(kafka_bootstrap: str, request: pytest.FixtureRequest) -> Iterator[Callable[..., str]]:
    """``make(partitions=3, suffix="") -> name``: a new topic with a unique name, deleted after the test."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="tests-topic-factory")
    created: list[str] = []
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name)[:80]

    def make(partitions: int = 3, suffix: str = "", configs: dict[str, str] | None = None) -> str:
        name = f"it-{stem}{'-' + suffix if suffix else ''}-{uuid.uuid4().hex[:8]}"
        admin.create_topics({name: {"num_partitions": partitions, "replication_factor": 1,
                                    "configs": configs or {}}}, wait_for_metadata=True)
        created.append(name)
        return name

    try:
        yield make
    finally:
        if created:
            try:
                admin.delete_topics(created, raise_errors=False)
            except Exception:  # noqa: BLE001 - best effort: the broker may be down after a fault test
                pass
        admin.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """When a test fails, attach the tail of every service log it left in its ``tmp_path``.

    Service subprocesses (``tests/service_harness.ServiceProcess``) log to ``tmp_path/*.log``; a CI
    failure is only diagnosable with what the member itself said.
    """
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    tmp_path = getattr(item, "funcargs", {}).get("tmp_path")
    if tmp_path is None:
        return
    for log in sorted(tmp_path.glob("*.log")):
        text = log.read_text(errors="replace")
        report.sections.append((f"service log {log.name} (last 6000 chars)", text[-6000:]))
