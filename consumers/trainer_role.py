"""The trainer role: one member of the group applies every worker's statistics and publishes the model.

**Election, by Kafka.** Every member that may train (``trainer_role``, default true) runs, on
a thread of its own, a second consumer in the trainer's consumer group (``<group_id>-trainer``)
subscribed to the one-partition statistics topic. Kafka's group protocol gives that
partition to exactly one member, and gives it to another one when that member leaves, or
is declared dead after ``session_timeout_ms``. Whoever owns it is the trainer.

**Taking the role** (on every assignment of the partition):

1. a transactional producer with the group's fixed trainer transactional id: its
   ``init_transactions`` fences the previous trainer (a zombie still thinking it holds the
   role can no longer commit) and aborts whatever transaction that one left open;
2. the trainer group's committed offset: the first statistics record that no committed
   model version includes;
3. the trainer's state record on the model topic (written every ``model_snapshot_every``
   transactions, with the offset it continues from) is restored, and the statistics from
   that offset up to the committed one are applied again, silently, in the same groups (their
   boundaries are the committed offset's metadata): applying is deterministic
   (:mod:`stream.group_trainer`), so this is bit for bit the model of the last committed version.

**Training.** Each poll's records are applied, in offset order, as one group: their additive
statistics summed and folded in once (:meth:`stream.group_trainer.GroupTrainer.apply_group`), so
one trainer keeps up with many members. One transaction carries
the new model version (when it changed), the centroid snapshots the cadence asks for, the
state record when due, dead letters for records that are not statistics, and the consumed
offset. A version is therefore published if and only if the statistics it includes are
marked consumed: none applied twice, none lost, whatever crashes. A failed transaction
drops the role's state; it is taken again from what Kafka holds. On a clean stop the trainer
writes its state and leaves the group, so the next trainer starts at once.

Example (needs a broker, so not run as a doctest)::

    role = TrainerRole(settings, metrics, dim=384, stop=stop_event)
    role.start()          # a thread; role.fatal is set if it fails for good
    ...
    stop_event.set(); role.join()
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from consumers.batch_committer import BatchCommitter, Send, dlq_headers
from consumers.changelog import read_latest, read_range
from consumers.kafka_config import Backoff, is_fatal
from consumers.kafka_retry import FatalKafkaError, fatal
from consumers.member_clients import make_trainer_consumer, make_trainer_producer, transaction_wait_s
from stream.group_trainer import GroupTrainer
from stream.metrics import ServiceMetrics
from stream.model_state import ModelStateError
from stream.records import encode_record
from stream.shared_model import TRAINER_STATE_KEY, VERSION_KEY, SharedModelError, encode_model_version

log = logging.getLogger("interest_stream.trainer")

__all__ = ["BAD_STATISTICS", "TrainerRole"]

#: Dead-letter reason of a statistics-topic record that is not a statistics record of this format.
BAD_STATISTICS = "bad_statistics_record"
#: Longest group-boundary metadata committed with the offset (brokers keep 4,096 characters by default);
#: a longer one makes the trainer write its state record instead, which starts the list afresh.
_MAX_METADATA = 3000


class TrainerRole:
    """Competes for the trainer role and, while holding it, trains (see the module docstring)."""

    def __init__(self, settings: Any, metrics: ServiceMetrics, *, dim: int, stop: threading.Event) -> None:
        self.settings = settings
        self.metrics = metrics
        self.dim = int(dim)
        self._stop = stop
        self.consumer: Any = None
        self.committer: BatchCommitter | None = None
        self.trainer: GroupTrainer | None = None
        #: Set when the role failed for good (the service exits with it).
        self.fatal: BaseException | None = None
        self._owned = False
        self._assignments = 0  # partition assignments seen (each one means: take the role again)
        self._taken_at = -1  # ... the count when the role was last taken
        self._published: tuple[int, bool] | None = None  # (version, warm) of the last published version
        self._since_state = 0
        self._snapshots: list = []
        self._dead_letters: list[Send] = []
        self._produced_ms: list[int] = []
        self._thread: threading.Thread | None = None
        _, self.model_topic, self.statistics_topic = settings.changelog_topics()
        self.takeovers = 0

    # ------------------------------------------------------------------ lifecycle
    @property
    def is_trainer(self) -> bool:
        return self.trainer is not None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="trainer", daemon=True)
        self._thread.start()

    def join(self, timeout_s: float = 30.0) -> None:
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        backoff = Backoff(cap=self.settings.connect_backoff_max_s)
        try:
            while not self._stop.is_set() and self.consumer is None:
                try:
                    self.consumer = make_trainer_consumer(self.settings, self._listener())
                except Exception as exc:
                    if is_fatal(exc):
                        raise fatal("the trainer's consumer", exc) from exc
                    log.warning("trainer: cannot join the trainer group yet (%s); retrying", exc)
                    self._stop.wait(backoff.next_delay())
            while not self._stop.is_set():
                try:
                    self._step()
                    backoff = Backoff(cap=self.settings.connect_backoff_max_s)
                except FatalKafkaError:
                    raise
                except Exception as exc:
                    if is_fatal(exc):
                        raise fatal("the trainer's transaction", exc) from exc
                    log.warning("trainer: %s: %s; taking the role again from what Kafka holds", type(exc).__name__, exc)
                    self.metrics.kafka_retries.labels(operation="trainer").inc()
                    self._drop()
                    self._stop.wait(backoff.next_delay())
            self._finish()
        except BaseException as exc:  # noqa: BLE001 - reported to the service, which exits with it
            log.error("trainer role failed: %s", exc)
            self.fatal = exc
        finally:
            self._drop()
            if self.consumer is not None:
                try:
                    self.consumer.close(autocommit=False)
                except Exception as exc:  # noqa: BLE001
                    log.warning("closing the trainer's consumer failed: %s", exc)

    def _listener(self):
        from kafka import ConsumerRebalanceListener

        role = self

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):
                role._owned = False

            def on_partitions_assigned(self, assigned):
                role._owned = any(tp.partition == 0 for tp in assigned)
                role._assignments += 1

        return Listener()

    # ------------------------------------------------------------------ the loop
    def _step(self) -> None:
        s = self.settings
        polled = self.consumer.poll(timeout_ms=200, max_records=s.trainer_max_records)
        if polled and self._owned and s.trainer_linger_ms > 0:
            # Collect for a little longer: one transaction for several members' batches costs the
            # process (it is also a worker) far less than one per batch.
            n = sum(len(recs) for recs in polled.values())
            deadline = time.monotonic() + s.trainer_linger_ms / 1000.0
            while n < s.trainer_max_records and self._owned and not self._stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                more = self.consumer.poll(timeout_ms=int(left * 1000) + 1, max_records=s.trainer_max_records - n)
                for tp, recs in more.items():
                    polled.setdefault(tp, []).extend(recs)
                    n += len(recs)
        if not self._owned:
            if self.trainer is not None:
                log.info("trainer role moved to another member")
                self._drop()
            return
        if self.trainer is None or self._taken_at != self._assignments:
            self._drop()
            self._take_role()
            return  # the consumer now stands where the model continues: what this poll brought comes again
        records = sorted((r for recs in polled.values() for r in recs), key=lambda r: r.offset)
        if not records:
            self._lag()
            return
        end = records[-1].offset + 1
        self._apply([(r.offset, r.key, r.value) for r in records], end)
        self._publish(end)

    def _take_role(self) -> None:
        from kafka import TopicPartition

        s, t0 = self.settings, time.monotonic()
        self._taken_at = self._assignments
        self.committer = BatchCommitter(
            exactly_once=True, make_producer=lambda: make_trainer_producer(s), consumer=self.consumer,
            metrics=self.metrics, retry=None, transaction_wait_s=transaction_wait_s(s))
        self.committer.start()  # fences the previous trainer
        tp = TopicPartition(self.statistics_topic, 0)
        committed_meta = self.consumer.committed(tp, metadata=True)
        committed = None if committed_meta is None else committed_meta.offset
        opts = s.kafka_client_options()
        held = read_latest(opts, self.model_topic, [0], max_fetch_bytes=2 * s.max_request_size)
        state = held.get(TRAINER_STATE_KEY, (0, None))[1]
        if state is not None:
            try:
                trainer = GroupTrainer.restore(s.clustering, state, dim=self.dim)
            except (ModelStateError, SharedModelError) as exc:
                raise FatalKafkaError(f"cannot restore the trainer from {self.model_topic}: {exc}") from exc
            for change in trainer.restored.changes:
                log.warning("%s", change)
        else:
            trainer = GroupTrainer(s.clustering, dim=self.dim)
        start = trainer.statistics_offset
        stop = committed if committed is not None and committed > start else start
        replay = read_range(opts, self.statistics_topic, 0, start, stop, max_fetch_bytes=2 * s.max_request_size)
        # The same groups as the trainer that committed them (the committed offset's metadata), so the
        # model is bit for bit the one of the last committed version.
        ends = GroupTrainer.groups_from_metadata(None if committed_meta is None else committed_meta.metadata, start)
        if ends is None or (ends[-1] if ends else start) != stop:
            if replay:
                log.warning("no group boundaries for the %d statistics records to replay: applying them one by "
                            "one (the model continues from a close approximation of the last version)", len(replay))
            ends = [offset + 1 for offset, _ in replay]
        self.trainer = trainer
        i = 0
        for group_end in ends:
            group = []
            while i < len(replay) and replay[i][0] < group_end:
                group.append((replay[i][0], None, replay[i][1]))
                i += 1
            self._apply(group, group_end, replaying=True)
        trainer.statistics_offset = max(trainer.statistics_offset, stop)
        # After a failed transaction the consumer stands past records no committed version includes: go
        # back to where the model continues, so none of them is skipped.
        self.consumer.seek(tp, trainer.statistics_offset)
        self._dead_letters, self._snapshots, self._produced_ms = [], [], []
        self._published, self._since_state = None, 0
        self.takeovers += 1
        self.metrics.trainer_takeovers.inc()
        self.metrics.trainer_role.set(1)
        log.info("took the trainer role: state %s at statistics offset %d, %d records replayed up to %s, "
                 "model version %d, %.2f s", "found" if state is not None else "absent", start, len(replay),
                 committed, trainer.model.version, time.monotonic() - t0)

    def _apply(self, records: list[tuple[int, bytes | None, bytes | None]], end: int, *,
               replaying: bool = False) -> None:
        """Apply ``(offset, key, value)`` records below ``end`` as one group (see GroupTrainer.apply_group)."""
        trainer = self.trainer
        out, bad = trainer.apply_group([(offset, value or b"") for offset, _, value in records], end)
        if bad and not replaying:  # a replayed record's dead letter went out with the transaction that skipped it
            keys = {offset: (key, value) for offset, key, value in records}
            for offset, exc in bad:
                log.warning("statistics record at offset %d skipped: %s", offset, exc)
                self.metrics.rejected.labels(reason=BAD_STATISTICS).inc()
                key, value = keys[offset]
                self._dead_letters.append(Send(
                    self.settings.dead_letter_topic, key, value or b"",
                    dlq_headers(self.statistics_topic, 0, offset, BAD_STATISTICS, str(exc))))
        if out is None:
            return
        if out.snapshots:
            self._snapshots = out.snapshots
        if not replaying:
            self.metrics.trainer_applied.inc(len(records) - len(bad))
            self._produced_ms.extend(trainer.last_group_produced_ms)

    def _publish(self, next_offset: int, *, final: bool = False) -> None:
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata

        s, trainer = self.settings, self.trainer
        sends: list[Send] = []
        version = trainer.version(emit_ms=int(time.time() * 1000), trainer=s.instance_id)
        new_version = False
        if version is not None:
            mark = (version.version, trainer.model.is_warm)
            if mark != self._published or final:
                sends.append(Send(self.model_topic, VERSION_KEY, encode_model_version(version), partition=0))
                new_version = True
        for snap in self._snapshots:
            sends.append(Send(s.centroids_topic, str(snap.cluster).encode(), encode_record(snap)))
        self._since_state += 1
        metadata = trainer.offset_metadata()
        if self._since_state >= s.model_snapshot_every or final or len(metadata) > _MAX_METADATA:
            sends.append(Send(self.model_topic, TRAINER_STATE_KEY, trainer.state_record(), partition=0))
            self._since_state = s.model_snapshot_every  # reset once committed
            metadata = trainer.offset_metadata()
        sends.extend(self._dead_letters)
        offsets = {TopicPartition(self.statistics_topic, 0): OffsetAndMetadata(next_offset, metadata, -1)}
        commit = self.committer.commit_or_recover(sends, offsets)
        if not commit.ok:
            raise RuntimeError(f"model transaction not committed: {commit.failure}")
        now_ms = time.time() * 1000
        if new_version:
            self._published = (version.version, trainer.model.is_warm)
            self.metrics.versions_published.inc()
        if self._since_state >= s.model_snapshot_every:
            self._since_state = 0
        for produced in self._produced_ms:
            if produced:
                self.metrics.model_staleness.observe(max(0.0, (now_ms - produced) / 1000.0))
        self._snapshots, self._dead_letters, self._produced_ms = [], [], []
        self._lag()

    def _lag(self) -> None:
        from kafka import TopicPartition

        try:
            tp = TopicPartition(self.statistics_topic, 0)
            hw = self.consumer.highwater(tp)
            if hw is not None and self.trainer is not None:
                self.metrics.trainer_lag.set(max(0, hw - self.consumer.position(tp, timeout_ms=1000)))
        except Exception as exc:  # noqa: BLE001 - a gauge is best effort
            log.debug("trainer lag: %s", exc)

    def _finish(self) -> None:
        """On a clean stop: write the state (the next trainer replays nothing) and leave the group."""
        if self.trainer is None or not self._owned:
            return
        try:
            self._publish(self.trainer.statistics_offset, final=True)
            log.info("trainer state written at statistics offset %d (model version %d)",
                     self.trainer.statistics_offset, self.trainer.model.version)
        except Exception as exc:  # noqa: BLE001 - the statistics log rebuilds it anyway
            log.warning("final trainer state not written (%s); the next trainer replays the statistics", exc)

    def _drop(self) -> None:
        """Forget the role's state and its producer; taken again from Kafka if the partition is still ours."""
        self.trainer = None
        self.metrics.trainer_role.set(0)
        self.metrics.trainer_lag.set(0)
        if self.committer is not None:
            try:
                self.committer.close(timeout_s=5)
            except Exception as exc:  # noqa: BLE001 - the next producer fences it anyway
                log.debug("closing the trainer's producer: %s", exc)
            self.committer = None
