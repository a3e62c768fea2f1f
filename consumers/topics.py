"""The service's topics: what they must look like, creating the missing ones, checking the rest.

Output topics keyed by an entity (assignments by user, centroids by cluster, the item
catalog by item) are compacted: a reader rebuilds the latest state from them. The
events and dead-letter topics keep a time-bounded history (``delete``).

Missing topics are created through the admin client; an existing topic whose
``cleanup.policy`` differs from what the service needs stops start-up with a message
that says how to fix it. Partition counts of existing topics are checked where they matter:

- **co-partitioned topics** (the assignments topic and the profiles changelog, see
  :data:`COPARTITIONED_ROLES`): the service writes a user's records to the partition number of
  the events partition that user came from, so such a topic with *fewer* partitions than the
  spec asks (the events topic's count) stops start-up with :class:`TopicMismatchError`; more
  partitions are only logged (the extra ones stay empty);
- **every other topic** (the events topic itself, centroids, dead letters, items, the model
  topics): a count other than the configured one is logged as a warning and the topic is kept
  as it is. The consumer group spreads over whatever partitions the events topic has, readers
  of the other topics read all their partitions, and the model topics are only ever written and
  read at partition 0.

Example:

>>> spec = TopicSpec("assignments", "as", 6, "compact", configs=COMPACT_TUNING)
>>> spec.create_request()["configs"]["cleanup.policy"], spec.create_request()["num_partitions"]
('compact', 6)
>>> spec.is_copartitioned, TopicSpec("items", "it", 3, "compact").is_copartitioned
(True, False)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


#: Compaction settings of the compacted topics: clean soon, roll segments hourly, so they stay bounded.
COMPACT_TUNING = {"min.cleanable.dirty.ratio": "0.1", "segment.ms": "3600000"}

#: Roles of the topics co-partitioned with the events topic: they need at least the spec's partitions.
COPARTITIONED_ROLES = frozenset({"assignments", "profiles changelog"})


class TopicMismatchError(RuntimeError):
    """An existing topic does not have the configuration the service needs."""


@dataclass(frozen=True)
class TopicSpec:
    """What one topic must look like."""

    role: str
    name: str
    partitions: int
    cleanup_policy: str
    replication_factor: int = 1
    configs: dict[str, str] = field(default_factory=dict)
    #: Fewer partitions than ``partitions`` is an error (not just a warning); None: decided by the role.
    copartitioned: bool | None = None

    @property
    def is_copartitioned(self) -> bool:
        return self.role in COPARTITIONED_ROLES if self.copartitioned is None else self.copartitioned

    def create_request(self) -> dict:
        """The kafka-python ``create_topics`` request entry for this topic."""
        return {
            "num_partitions": self.partitions,
            "replication_factor": self.replication_factor,
            "configs": {"cleanup.policy": self.cleanup_policy, **self.configs},
        }


def _cleanup_policies(admin, names: list[str]) -> dict[str, str]:
    from kafka.admin import ConfigResource, ConfigResourceType

    result = admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, n, ["cleanup.policy"]) for n in names], config_filter="all"
    )
    policies: dict[str, str] = {}
    topics = result.get("topic") or result.get("TOPIC") or {}
    for name, configs in topics.items():
        entry = configs.get("cleanup.policy")
        value = entry.get("value") if isinstance(entry, dict) else entry
        policies[name] = str(value) if value is not None else "delete"
    return policies


def ensure_topics(admin, specs: list[TopicSpec], *, create: bool = True) -> list[str]:
    """Create the missing topics and check the existing ones; return the names created.

    Raises :class:`TopicMismatchError` when an existing topic's cleanup policy is wrong, a
    co-partitioned topic has fewer partitions than its spec, or a topic is missing and
    ``create`` is False. Other partition counts that differ from the spec are logged as warnings.
    """
    from kafka.errors import TopicAlreadyExistsError

    existing = set(admin.list_topics())
    missing = [s for s in specs if s.name not in existing]
    if missing and not create:
        raise TopicMismatchError(
            "missing topics: " + ", ".join(f"{s.name} ({s.role})" for s in missing)
            + " — create them or run with topic creation enabled"
        )
    created: list[str] = []
    for spec in missing:
        try:
            admin.create_topics({spec.name: spec.create_request()}, wait_for_metadata=True)
            created.append(spec.name)
            log.info("created topic %s (%s, %d partitions, cleanup.policy=%s)",
                     spec.name, spec.role, spec.partitions, spec.cleanup_policy)
        except TopicAlreadyExistsError:
            pass  # another member created it meanwhile; checked below
    present = [s for s in specs if s.name not in created]
    if present:
        _check_existing(admin, present)
    return created


def _check_existing(admin, specs: list[TopicSpec]) -> None:
    described = {t["name"]: t for t in admin.describe_topics([s.name for s in specs])}
    policies = _cleanup_policies(admin, [s.name for s in specs])
    problems: list[str] = []
    for spec in specs:
        policy = policies.get(spec.name, "delete")
        have = set(policy.split(","))
        if spec.cleanup_policy == "compact" and "compact" not in have:
            problems.append(
                f"topic {spec.name!r} ({spec.role}) has cleanup.policy={policy}, needs compact: "
                f"kafka-configs --alter --entity-type topics --entity-name {spec.name} --add-config cleanup.policy=compact"
            )
        elif spec.cleanup_policy == "delete" and "compact" in have and "delete" not in have:
            problems.append(f"topic {spec.name!r} ({spec.role}) is compacted, but needs cleanup.policy=delete")
        n_parts = len(described.get(spec.name, {}).get("partitions") or [])
        if n_parts < spec.partitions and spec.is_copartitioned:
            problems.append(
                f"topic {spec.name!r} ({spec.role}) has {n_parts} partitions, needs at least {spec.partitions} "
                "(co-partitioned with the events topic): kafka-topics --alter --topic "
                f"{spec.name} --partitions {spec.partitions}, or use a new topic"
            )
        elif n_parts != spec.partitions and spec.is_copartitioned:
            log.warning("topic %s (%s) has %d partitions, more than the %d of the events topic: the extra "
                        "ones stay empty", spec.name, spec.role, n_parts, spec.partitions)
        elif n_parts != spec.partitions:
            log.warning("topic %s (%s) has %d partitions; settings say %d (kept as it is)",
                        spec.name, spec.role, n_parts, spec.partitions)
    if problems:
        raise TopicMismatchError("; ".join(problems))
