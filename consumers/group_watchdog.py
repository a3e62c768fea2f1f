"""Notice a member that is alive but not really in its consumer group, and get it back (or out).

A member can end up ticking forever without consuming: outside the group (the broker expired it
while the client still believes it joined), or inside it with no partitions while some of the
events topic's partitions belong to nobody. Both were seen with kafka-python 3.0.12 after a restart
(see :mod:`consumers.kafka_compat` for the cause that is patched). Whatever the cause, the service
must not depend on it, so this watchdog asks the one party that knows, the group coordinator:

- **healthy**: this member is in the group and owns partitions, or it owns none while every
  partition is owned by another member (a legitimate surplus member, more members than
  partitions), or the group is rebalancing (a rebalance takes its own bounded time);
- **stuck** otherwise. After ``stuck_after_s`` of being stuck (a few session timeouts) the service
  forces a rejoin; if that does not help within another ``stuck_after_s`` it exits non-zero, so
  the supervisor starts a fresh process. ``/healthz`` answers 503 while it is stuck past the
  bound, ``interest_group_stuck_seconds`` shows how long, and
  ``interest_group_recoveries_total{action}`` counts the rejoins and exits.

The coordinator is asked only while the member holds no partitions, or every ``check_every_s``
otherwise, so a healthy member costs one small admin request now and then.

Example (a fake view of the group: no members at all, this member owns nothing):

>>> dog = GroupWatchdog(stuck_after_s=30, check_every_s=5)
>>> view = GroupView(state="Empty", members={}, partitions=3)
>>> dog.observe(view, member_id="m-1", owned=0, now=0.0), dog.observe(view, "m-1", 0, now=31.0)
('ok', 'rejoin')
>>> dog.observe(view, "m-1", 0, now=45.0), dog.observe(view, "m-1", 0, now=62.0)
('ok', 'exit')
>>> surplus = GroupView(state="Stable", members={"m-0": 3, "m-1": 0}, partitions=3)
>>> dog = GroupWatchdog(stuck_after_s=30)
>>> [dog.observe(surplus, "m-1", 0, now=t) for t in (0.0, 40.0, 80.0)]
['ok', 'ok', 'ok']
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

log = logging.getLogger("interest_stream.group")

__all__ = ["GroupView", "GroupWatchdog", "describe_group"]


@dataclass(frozen=True, slots=True)
class GroupView:
    """What the group coordinator says: the group state, each member's number of partitions of the
    events topic, and how many partitions that topic has."""

    state: str
    members: dict[str, int]
    partitions: int

    def stuck_reason(self, member_id: str | None, owned: int) -> str | None:
        """Why a member with ``owned`` partitions is stuck, or None when it is fine."""
        if self.state in ("PreparingRebalance", "CompletingRebalance"):
            return None  # a rebalance in progress has its own bounded timeout
        if not member_id or member_id not in self.members:
            return f"not a member of the consumer group (group state {self.state}, {len(self.members)} members)"
        if owned == 0:
            unowned = self.partitions - sum(self.members.values())
            if unowned > 0:
                return f"owns no partitions while {unowned} of {self.partitions} belong to no member"
        return None


class GroupWatchdog:
    """Turns successive :class:`GroupView` observations into actions: ``ok``, ``rejoin``, ``exit``."""

    def __init__(self, stuck_after_s: float, check_every_s: float = 30.0) -> None:
        self.stuck_after_s = float(stuck_after_s)
        self.check_every_s = float(check_every_s)
        self.stuck_since: float | None = None
        self.rejoined_at: float | None = None
        self.reason: str | None = None
        self.last_check = float("-inf")

    def due(self, owned: int, now: float | None = None) -> bool:
        """Whether to ask the coordinator now (often while nothing is owned, rarely otherwise)."""
        now = time.monotonic() if now is None else now
        every = min(self.check_every_s, max(1.0, self.stuck_after_s / 6)) if owned == 0 else self.check_every_s
        return now - self.last_check >= every

    def stuck_for(self, now: float | None = None) -> float:
        """Seconds this member has been stuck (0 when it is fine)."""
        if self.stuck_since is None:
            return 0.0
        return max(0.0, (time.monotonic() if now is None else now) - self.stuck_since)

    def healthy(self, now: float | None = None) -> bool:
        """False once it has been stuck for longer than the bound (``/healthz`` then says 503)."""
        return self.stuck_for(now) <= self.stuck_after_s

    def observe(self, view: GroupView, member_id: str | None, owned: int, now: float | None = None) -> str:
        """Record one observation; returns the action to take now."""
        now = time.monotonic() if now is None else now
        self.last_check = now
        reason = view.stuck_reason(member_id, owned)
        if reason is None:
            if self.stuck_since is not None:
                log.info("consumer group membership recovered after %.0f s", now - self.stuck_since)
            self.stuck_since = self.rejoined_at = self.reason = None
            return "ok"
        self.reason = reason
        if self.stuck_since is None:
            self.stuck_since = now
            return "ok"
        if self.rejoined_at is None:
            if now - self.stuck_since > self.stuck_after_s:
                self.rejoined_at = now
                return "rejoin"
            return "ok"
        if now - self.rejoined_at > self.stuck_after_s:
            return "exit"
        return "ok"


def describe_group(admin, group_id: str, topic: str, partitions: int) -> GroupView:
    """Ask the coordinator (a kafka-python ``KafkaAdminClient``) for ``group_id``'s :class:`GroupView`."""
    group = admin.describe_groups([group_id]).get(group_id) or {}
    if group.get("error"):
        raise RuntimeError(f"describing group {group_id}: {group['error']}")
    members: dict[str, int] = {}
    for member in group.get("members") or []:
        assignment = member.get("member_assignment") or {}
        members[str(member.get("member_id"))] = sum(
            len(a.get("partitions") or []) for a in assignment.get("assigned_partitions") or []
            if a.get("topic") == topic)
    return GroupView(state=str(group.get("group_state") or "Unknown"), members=members, partitions=partitions)
