"""Test harness for the streaming service: run it as a real process, feed it, read what it wrote.

Used by the integration tests (they talk to the real broker of the ``kafka_bootstrap`` fixture).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from consumers.devbroker import free_port

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "consumers.cli"]


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.25, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


@dataclass
class Topics:
    """A unique set of the service's topic names (and its group), so tests never share state."""

    prefix: str

    @classmethod
    def fresh(cls) -> Topics:
        return cls(f"t{uuid.uuid4().hex[:10]}")

    @property
    def events(self) -> str:
        return f"{self.prefix}.events"

    @property
    def assignments(self) -> str:
        return f"{self.prefix}.assignments"

    @property
    def centroids(self) -> str:
        return f"{self.prefix}.centroids"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}.dead-letters"

    @property
    def items(self) -> str:
        return f"{self.prefix}.items"

    @property
    def group(self) -> str:
        return f"{self.prefix}.group"

    @property
    def profiles_changelog(self) -> str:
        return f"{self.group}-profiles-changelog"

    @property
    def model(self) -> str:
        return f"{self.group}-model"

    @property
    def statistics(self) -> str:
        return f"{self.group}-statistics"

    def args(self) -> list[str]:
        return ["--events-topic", self.events, "--assignments-topic", self.assignments,
                "--centroids-topic", self.centroids, "--dead-letter-topic", self.dead_letters,
                "--items-topic", self.items, "--group-id", self.group]


class ServiceProcess:
    """``interest-stream run`` as a child process with its own metrics port and log file."""

    def __init__(self, bootstrap: str, topics: Topics, workdir: Path, *extra: str, name: str = "service",
                 instance_id: str = "member-1", env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.log_path = workdir / f"{name}-{self.port}.log"
        cmd = [*CLI, "run", "--bootstrap-servers", bootstrap, *topics.args(),
               "--metrics-host", "127.0.0.1", "--metrics-port", str(self.port),
               "--instance-id", instance_id, *extra]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **(env or {})}
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return 0, ""

    def wait_ready(self, timeout: float = 240) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"service exited with {self.proc.returncode}:\n{self.log_tail()}")
            return self.get("/readyz")[0] == 200

        wait_for(ready, timeout, what=f"/readyz of {self.url}")

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of /metrics as ``{(name, sorted labels): value}``."""
        status, body = self.get("/metrics")
        if status != 200:
            return {}
        samples = {}
        for family in text_string_to_metric_families(body):
            for s in family.samples:
                samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return samples

    def value(self, name: str, **labels: str) -> float:
        return self.metrics().get((name, tuple(sorted(labels.items()))), 0.0)

    def sum_of(self, name: str) -> float:
        return sum(v for (n, _), v in self.metrics().items() if n == name)

    def wait_consumed(self, n: int, timeout: float = 180) -> None:
        wait_for(lambda: self.value("interest_events_consumed_total") >= n, timeout,
                 what=f"{n} events consumed by {self.url} (log: {self.log_path})")

    def wait_all_assigned(self, n_users: int, timeout: float = 60) -> None:
        """Wait until ``n_users`` users hold a published cluster (a stream shorter than the model's
        warm-up is assigned by the idle sweep, a moment after the last batch)."""
        wait_for(lambda: self.sum_of("interest_cluster_size_users") == n_users, timeout,
                 what=f"{n_users} users assigned by {self.url} (log: {self.log_path})")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode

    def log_tail(self, chars: int = 4000) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]


def wait_settled(members: Iterable[ServiceProcess], timeout: float = 180, quiet_s: float = 3.0) -> int:
    """After the input went quiet: wait until the group is settled, and return the final model version.

    Settled means one member holds the trainer role and has applied every statistics record, every
    member assigns with the newest model version it has seen, and every member's idle sweep has
    re-assessed all its users against that version, the same on all members, for ``quiet_s``
    seconds in a row (longer than the trainer's linger, so a version still to come shows up first).
    """
    members = list(members)

    def state() -> tuple | None:
        samples = [m.metrics() for m in members]
        get = [lambda name, s=s: s.get((name, ()), 0.0) for s in samples]
        if not samples or not all(samples) or sum(g("interest_trainer_role") for g in get) != 1:
            return None
        if any(g("interest_trainer_statistics_lag_records") for g in get):
            return None
        versions = {g("interest_model_version") for g in get}
        if len(versions) != 1 or any(g("interest_model_versions_behind") for g in get):
            return None
        (version,) = versions
        if any(g("interest_assignments_settled_version") != version for g in get):
            return None
        return int(version), sum(g("interest_model_versions_published_total") for g in get)

    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        now = state()
        if now is None or now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return now[0]
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for the group to settle (last: {last!r}; "
                         f"logs: {[str(m.log_path) for m in members]})")


def send(bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes | None]]) -> int:
    """Produce ``(key, value)`` records and wait until all are acknowledged."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    futures = [producer.send(topic, key=k, value=v) for k, v in records]
    producer.flush(timeout=60)
    for f in futures:
        f.get(timeout=0)
    producer.close()
    return len(futures)


@dataclass(frozen=True)
class ReadRecord:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


def read_all(bootstrap: str, topic: str, timeout: float = 30) -> list[ReadRecord]:
    """Every record of ``topic`` up to its end offsets now (read_committed), partition by partition."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                             isolation_level="read_committed")
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        out: list[ReadRecord] = []
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < end[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {topic} to its end in {timeout} s")
            for recs in consumer.poll(timeout_ms=500).values():
                out.extend(ReadRecord(r.partition, r.offset, r.key, r.value,
                                      {k: v for k, v in (r.headers or [])}) for r in recs)
        return sorted(out, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()


def latest_assignments(records: list[ReadRecord]) -> dict[str, dict | None]:
    """Latest value per user of an assignments topic (None = tombstone)."""
    latest: dict[str, dict | None] = {}
    for r in records:
        latest[r.key.decode()] = json.loads(r.value) if r.value is not None else None
    return latest


def latest_profiles(bootstrap: str, topic: str) -> dict[str, tuple]:
    """Latest profile per user of a profiles changelog: ``{user: (vector_sum, ref_ms, mass)}``."""
    from stream.profiles import profile_from_bytes

    latest: dict[str, bytes | None] = {}
    for r in read_all(bootstrap, topic):
        latest[r.key.decode()] = r.value
    return {u: profile_from_bytes(v) for u, v in latest.items() if v is not None}


def stray_records(bootstrap: str, topic: str) -> list[ReadRecord]:
    """Records of a co-partitioned state topic (profiles changelog, assignments) that sit outside their
    key's owner partition: there must be none (see consumers/partitioning.py)."""
    from consumers.partitioning import UserPartitioner

    users = UserPartitioner(len(end_offsets(bootstrap, topic)))
    return [r for r in read_all(bootstrap, topic) if r.key is not None and r.partition != users.owner_of_key(r.key)]


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        return {p: (consumer.committed(TopicPartition(topic, p)) or 0) for p in sorted(parts)}
    finally:
        consumer.close(autocommit=False)


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or set())]
        return {tp.partition: off for tp, off in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()
