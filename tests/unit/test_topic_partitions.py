"""consumers.topics: existing topics' partition counts are refused where they matter and warned about elsewhere.

A fake admin client stands in for Kafka (the integration tests cover the real one).
"""

from __future__ import annotations

import logging

import pytest

from consumers.topics import COMPACT_TUNING, TopicMismatchError, TopicSpec, ensure_topics


class FakeAdmin:
    """The four admin calls ``ensure_topics`` makes, over ``{name: (partitions, cleanup.policy)}``."""

    def __init__(self, topics: dict[str, tuple[int, str]]) -> None:
        self.topics = dict(topics)
        self.created: list[str] = []

    def list_topics(self):
        return list(self.topics)

    def create_topics(self, requests: dict, wait_for_metadata: bool = False) -> None:
        for name, req in requests.items():
            self.topics[name] = (req["num_partitions"], req["configs"]["cleanup.policy"])
            self.created.append(name)

    def describe_topics(self, names):
        return [{"name": n, "partitions": [{"partition": p} for p in range(self.topics[n][0])]} for n in names]

    def describe_configs(self, resources, config_filter=None):
        return {"topic": {r.name: {"cleanup.policy": {"value": self.topics[r.name][1]}} for r in resources}}


def service_like_specs(n_events: int = 6) -> list[TopicSpec]:
    """The specs the service builds (consumers.service): co-partitioned ones get the events topic's count."""
    return [
        TopicSpec("events", "ev", 6, "delete"),
        TopicSpec("assignments", "as", n_events, "compact", configs=COMPACT_TUNING),
        TopicSpec("profiles changelog", "pc", n_events, "compact", configs=COMPACT_TUNING),
        TopicSpec("model changelog", "mc", 1, "compact", configs=COMPACT_TUNING),
        TopicSpec("centroids", "ce", 1, "compact", configs=COMPACT_TUNING),
        TopicSpec("dead_letters", "dl", 3, "delete"),
        TopicSpec("items", "it", 3, "compact", configs=COMPACT_TUNING),
    ]


@pytest.mark.parametrize("role_topic", ["as", "pc"])
def test_copartitioned_topic_with_too_few_partitions_stops_start_up(role_topic):
    topics = {"ev": (6, "delete"), role_topic: (3, "compact")}
    with pytest.raises(TopicMismatchError, match=rf"'{role_topic}' .* has 3 partitions, needs at least 6"):
        ensure_topics(FakeAdmin(topics), service_like_specs())


def test_other_partition_counts_are_only_warnings(caplog):
    admin = FakeAdmin({"ev": (3, "delete"), "it": (1, "compact"), "dl": (5, "delete"), "ce": (2, "compact"),
                       "mc": (2, "compact"), "as": (4, "compact")})
    with caplog.at_level(logging.WARNING, logger="consumers.topics"):
        created = ensure_topics(admin, service_like_specs(n_events=3))
    assert created == ["pc"]
    warned = {r.getMessage().split()[1] for r in caplog.records if r.levelno == logging.WARNING}
    assert warned == {"ev", "it", "dl", "ce", "mc", "as"}  # `as`: more partitions than the events topic


def test_matching_topics_are_silent(caplog):
    admin = FakeAdmin({})
    ensure_topics(admin, service_like_specs())
    with caplog.at_level(logging.WARNING, logger="consumers.topics"):
        assert ensure_topics(admin, service_like_specs()) == []
    assert not caplog.records


def test_copartitioned_follows_the_role_unless_given():
    assert TopicSpec("assignments", "a", 6, "compact").is_copartitioned
    assert TopicSpec("profiles changelog", "p", 6, "compact").is_copartitioned
    assert not TopicSpec("items", "i", 3, "compact").is_copartitioned
    assert TopicSpec("extra", "x", 6, "delete", copartitioned=True).is_copartitioned
    assert not TopicSpec("assignments", "a", 6, "compact", copartitioned=False).is_copartitioned
