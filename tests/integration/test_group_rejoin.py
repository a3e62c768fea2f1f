"""A member that falls out of its consumer group comes back by itself (real broker).

The fault seen after restarts: ``partitions assigned: []`` (the range assignor had no partition
metadata yet), a rejoin that starts, then nothing for good: alive, ticking, not in the group.
The cause in kafka-python 3.0.12 (see ``consumers.kafka_compat._patch_pending_join``): a JoinGroup in
flight is abandoned when a metadata update makes ``need_rejoin()`` false before the join completes;
heartbeats stay off, the coordinator expires the member, the group goes Empty.

The tests reproduce exactly that state on a real consumer (the join in flight, then the metadata
snapshots agreeing again) and check (1) that the patched client finishes the join, and (2) that
the service's group watchdog recovers a member even when the client is left unpatched: it notices
that the coordinator no longer knows the member, forces a rejoin, and the member consumes again.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
from fake_encoders import HashEncoder
from service_harness import Topics, send, wait_for

pytestmark = pytest.mark.integration


def _abandon_join_in_flight(consumer) -> None:
    """Put a joined consumer in the wedged state: a rejoin started (its JoinGroup in flight when the poll
    returns), then the metadata snapshot agrees with the assignment snapshot again."""
    coordinator = consumer._coordinator
    topic = next(iter(consumer.subscription()))
    coordinator._assignment_snapshot = {topic: set()}  # as after a join that saw no partition metadata
    consumer.poll(timeout_ms=1)  # need_rejoin() -> JoinGroup sent; the poll returns with it in flight
    coordinator._assignment_snapshot = coordinator._metadata_snapshot  # the metadata "arrives" again


def _group_state(admin, group: str) -> str:
    return admin.describe_groups([group])[group]["group_state"]


def test_patched_client_finishes_a_join_in_flight(kafka_bootstrap, topic_factory):
    from kafka import KafkaAdminClient, KafkaConsumer

    from consumers.kafka_compat import install

    install()
    topic = topic_factory(3)
    group = f"{topic}-g"
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group, session_timeout_ms=6000,
                             heartbeat_interval_ms=2000, enable_auto_commit=False)
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        consumer.subscribe([topic])
        wait_for(lambda: consumer.poll(timeout_ms=200) is not None and consumer.assignment(), 30, what="joined")
        _abandon_join_in_flight(consumer)
        # Past the session timeout: unpatched, the client stays "rebalancing" and the group goes Empty.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            consumer.poll(timeout_ms=200)
        assert str(consumer.group_metadata().state).strip("<>").lower() == "stable"
        assert _group_state(admin, group) == "Stable"
        assert {tp.partition for tp in consumer.assignment()} == {0, 1, 2}
    finally:
        consumer.close(autocommit=False)
        admin.close()


def test_watchdog_brings_a_member_outside_its_group_back(kafka_bootstrap, monkeypatch):
    from kafka import KafkaAdminClient
    from kafka.coordinator.consumer import ConsumerCoordinator

    import consumers.kafka_compat as compat
    from consumers.service import InterestService
    from consumers.settings import ServiceSettings
    from stream.pipeline import Pipeline

    # Leave the client unpatched, so that only the watchdog can get the member back.
    need_rejoin = ConsumerCoordinator.need_rejoin
    original = getattr(need_rejoin, "__wrapped__", need_rejoin)
    monkeypatch.setattr(ConsumerCoordinator, "need_rejoin", original)
    monkeypatch.setattr(compat, "_patch_pending_join", lambda: None)

    topics = Topics.fresh()
    settings = ServiceSettings.load(overrides={
        "bootstrap_servers": kafka_bootstrap, "events_topic": topics.events, "assignments_topic": topics.assignments,
        "centroids_topic": topics.centroids, "dead_letter_topic": topics.dead_letters, "items_topic": topics.items,
        "group_id": topics.group, "events_partitions": 3, "metrics_host": "127.0.0.1", "metrics_port": 0,
        "session_timeout_ms": 6000, "group_stuck_timeout_s": 8, "batch_max_wait_ms": 20,
        "clustering": {"n_clusters": 2, "warmup_batches": 0},
    })
    service = InterestService(settings, pipeline=Pipeline(settings.clustering, HashEncoder(dim=8)))
    # The wedge is injected from the service's own thread (a KafkaConsumer is not thread-safe), at the
    # end of a loop iteration, the way a metadata update would land between two polls.
    inject, injected = threading.Event(), threading.Event()
    update_lag = service.observer.lag

    def update_lag_then_maybe_wedge(consumer):
        update_lag(consumer)
        if inject.is_set() and not injected.is_set():
            _abandon_join_in_flight(consumer)
            injected.set()

    service.observer.lag = update_lag_then_maybe_wedge
    runner = threading.Thread(target=lambda: setattr(service, "exit_code", service.run()), daemon=True)
    runner.start()
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)

    def event(i: int) -> tuple[bytes, bytes]:
        user = f"u{i % 7}"
        return user.encode(), json.dumps({"user_id": user, "ts": 1_700_000_000_000 + i, "text": f"t{i}"}).encode()

    try:
        wait_for(lambda: service.server is not None and service.server.ready, 120, what="the member is ready")
        send(kafka_bootstrap, topics.events, [event(i) for i in range(20)])
        wait_for(lambda: service.metrics.events_applied._value.get() >= 20, 60, what="first events applied")

        inject.set()
        wait_for(injected.is_set, 30, what="the wedge injected")
        wait_for(lambda: _group_state(admin, topics.group) == "Empty", 30, what="the coordinator expired the member")
        wait_for(lambda: service.server.problem() is not None, 30, what="/healthz reports the stuck member")
        assert "stuck" in service.server.problem()

        wait_for(lambda: service.metrics.group_recoveries.labels(action="rejoin")._value.get() >= 1, 60,
                 what="the watchdog forced a rejoin")
        wait_for(lambda: _group_state(admin, topics.group) == "Stable", 60, what="the member is back in the group")
        send(kafka_bootstrap, topics.events, [event(i) for i in range(20, 40)])
        wait_for(lambda: service.metrics.events_applied._value.get() >= 40, 90, what="events applied after the rejoin")
        wait_for(lambda: service.server.problem() is None, 60, what="/healthz healthy again")
        assert service.metrics.group_recoveries.labels(action="exit")._value.get() == 0
    finally:
        service.request_stop()
        runner.join(60)
        admin.close()
    assert getattr(service, "exit_code", None) == 0
