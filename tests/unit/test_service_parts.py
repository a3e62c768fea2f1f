"""The small parts of the service: retrying, the group watchdog's decisions, the metrics observer,
the member's topic plan (fake clients, no broker)."""

from __future__ import annotations

import threading
from types import SimpleNamespace as NS

import numpy as np
import pytest
from kafka import TopicPartition
from kafka import errors as kerr

from consumers.group_watchdog import GroupView, GroupWatchdog, describe_group
from consumers.kafka_retry import FatalKafkaError, KafkaRetry
from consumers.member_clients import set_up_topics, topic_plan
from consumers.service_metrics import ServiceObserver
from consumers.settings import ServiceSettings
from consumers.topics import TopicMismatchError
from stream.metrics import ServiceMetrics


# ---------------------------------------------------------------------------- retrying
def test_retry_backs_off_counts_and_gives_up_on_stop():
    metrics, stop = ServiceMetrics(), threading.Event()
    retry = KafkaRetry(metrics, stop, cap_s=0.01, first_s=0.001)
    calls = []

    def down():
        calls.append(1)
        if len(calls) == 3:
            stop.set()
        raise kerr.NoBrokersAvailable()

    assert retry.call("connect", down) is None
    assert len(calls) == 3 and metrics.kafka_retries.labels(operation="connect")._value.get() == 3
    assert metrics.kafka_connected._value.get() == 0


def test_retry_turns_refused_credentials_into_a_fatal_error_at_once():
    retry = KafkaRetry(ServiceMetrics(), threading.Event(), cap_s=0.01)
    calls = []

    def refused():
        calls.append(1)
        raise kerr.SaslAuthenticationFailedError("bad password")

    with pytest.raises(FatalKafkaError, match="credentials"):
        retry.call("connect", refused)
    assert len(calls) == 1


# ---------------------------------------------------------------------------- group watchdog
def test_watchdog_leaves_a_rebalancing_group_and_a_surplus_member_alone():
    assert GroupView("PreparingRebalance", {}, 3).stuck_reason("m", 0) is None
    assert GroupView("Stable", {"a": 2, "m": 0, "b": 1}, 3).stuck_reason("m", 0) is None
    assert "not a member" in GroupView("Stable", {"a": 3}, 3).stuck_reason("m", 3)
    assert "belong to no member" in GroupView("Stable", {"m": 0}, 3).stuck_reason("m", 0)


def test_watchdog_recovers_when_the_member_is_back():
    dog = GroupWatchdog(stuck_after_s=10)
    out = GroupView("Empty", {}, 3)
    assert [dog.observe(out, "m", 0, now=t) for t in (0, 5, 11)] == ["ok", "ok", "rejoin"]
    assert not dog.healthy(now=11.5) and dog.stuck_for(now=11.5) == pytest.approx(11.5)
    assert dog.observe(GroupView("Stable", {"m": 3}, 3), "m", 3, now=15) == "ok"
    assert dog.healthy(now=16) and dog.stuck_for(now=16) == 0
    assert dog.due(owned=0, now=17.7) and not dog.due(owned=3, now=17.7)


def test_describe_group_reads_the_admin_answer():
    admin = NS(describe_groups=lambda ids: {"g": {"error": None, "group_state": "Stable", "members": [
        {"member_id": "m1", "member_assignment": {"assigned_partitions": [{"topic": "events", "partitions": [0, 2]},
                                                                          {"topic": "other", "partitions": [0]}]}},
        {"member_id": "m2", "member_assignment": {"assigned_partitions": []}}]}})
    view = describe_group(admin, "g", "events", 3)
    assert view == GroupView("Stable", {"m1": 2, "m2": 0}, 3)
    assert "belong to no member" in view.stuck_reason("m2", 0)


# ---------------------------------------------------------------------------- metrics observer
class LagConsumer:
    def __init__(self) -> None:
        self.tps = {TopicPartition("events", 0), TopicPartition("events", 1)}

    def assignment(self):
        return set(self.tps)

    def highwater(self, tp):
        return 10 if tp.partition == 0 else None

    def position(self, tp, timeout_ms=None):
        return 4


def test_observer_reports_lag_and_forgets_revoked_partitions():
    metrics = ServiceMetrics()
    observer = ServiceObserver(metrics, lag_every_s=0)
    observer.lag(LagConsumer())
    assert metrics.lag.labels("events", "0")._value.get() == 6
    observer.revoked([TopicPartition("events", 0)])
    assert b'interest_consumer_lag_messages{partition="0"' not in metrics.exposition()


def test_observer_counts_running_totals_as_increments_across_a_new_pipeline():
    metrics = ServiceMetrics()
    observer = ServiceObserver(metrics)
    totals = {"cache_hits": 5, "cache_misses": 2, "truncated": 1}
    pipeline = NS(profiles=[1, 2], model=NS(version=1, n_clusters=1), tracker=NS(cluster_sizes=lambda k: [2]),
                  counters_snapshot=lambda: dict(totals))
    out = NS(embed_seconds=0.0, n_applied=1, n_forgotten=0, dead_letters=[], changes=[],
             applied_ts_ms=np.array([0]), movement=np.array([0.25]))
    observer.batch(["r"], out, pipeline, publish_ms=10.0, seconds=0.1)
    totals.update(cache_hits=8)
    observer.batch(["r"], out, pipeline, publish_ms=10.0, seconds=0.1)
    assert metrics.cache_hits._value.get() == 8
    observer.new_pipeline()  # a rebuilt pipeline counts from zero again
    totals.update(cache_hits=2)
    observer.batch(["r"], out, pipeline, publish_ms=10.0, seconds=0.1)
    assert metrics.cache_hits._value.get() == 10
    assert metrics.movement.labels(cluster="0")._value.get() == 0.25


# ---------------------------------------------------------------------------- topics
class FakeAdmin:
    def __init__(self, topics: dict[str, tuple[int, str]]) -> None:
        self.topics = dict(topics)

    def list_topics(self):
        return list(self.topics)

    def create_topics(self, new_topics, **kwargs):
        for t in new_topics:
            name = t.name if hasattr(t, "name") else t
            self.topics[name] = (t.num_partitions if hasattr(t, "num_partitions") else new_topics[t]["num_partitions"],
                                 "compact")

    def describe_topics(self, names):
        return [{"name": n, "partitions": [{"partition": p} for p in range(self.topics[n][0])]} for n in names]

    def describe_configs(self, resources, config_filter=None):
        return {"topic": {r.name: {"cleanup.policy": {"value": self.topics[r.name][1]}} for r in resources}}


def test_topic_plan_copartitions_the_state_topics_with_the_events_topic():
    settings = ServiceSettings.load(overrides={"bootstrap_servers": "x:1", "group_id": "g"})
    plan = {t.role: t for t in topic_plan(settings, n_events=5)}
    assert plan["assignments"].partitions == plan["profiles changelog"].partitions == 5
    assert plan["profiles changelog"].name == "g-profiles-changelog"
    assert plan["model"].partitions == plan["statistics"].partitions == 1
    assert (plan["model"].name, plan["model"].cleanup_policy) == ("g-model", "compact")
    assert (plan["statistics"].name, plan["statistics"].cleanup_policy) == ("g-statistics", "delete")


def test_set_up_topics_stops_on_a_state_topic_with_too_few_partitions():
    settings = ServiceSettings.load(overrides={"bootstrap_servers": "x:1", "group_id": "g", "create_topics": False})
    topics = {t.name: (t.partitions, t.cleanup_policy) for t in topic_plan(settings, n_events=4)}
    admin = FakeAdmin({**topics, "events": (4, "delete"), "assignments": (2, "compact")})
    with pytest.raises(TopicMismatchError, match="assignments"):
        set_up_topics(settings, admin)
