"""The streaming service: one consumer-group member running the worker and trainer stages.

Loop, per micro-batch:

1. poll the events topic until ``batch_max_events`` records arrived or
   ``batch_max_wait_ms`` passed since the first one (low latency at low rates, large
   batches at high rates);
2. run the same :class:`stream.pipeline.Pipeline` that ``interest-stream replay`` runs
   (decode, embed, fold profiles, k-means statistics, trainer update, assignments);
3. publish assignment changes (compacted, key = user id; a tombstone for a forgotten
   user), centroid snapshots (compacted, key = cluster id), dead letters (original
   bytes, reason and source coordinates in headers), the changed profiles on the
   profiles changelog and, every few batches, the model on the model changelog;
4. commit. ``exactly_once`` (default): all of step 3 and the consumed offsets
   (``send_offsets_to_transaction`` with the consumer's group metadata) commit in one
   transaction; if anything fails the transaction aborts, the member rebuilds its state
   from the changelogs and re-reads from the committed offsets. ``at_least_once``:
   outputs are flushed and acknowledged, then offsets are committed.

State: on every partition assignment the member restores exactly the partitions it
gained (profiles from the profiles changelog, last emitted assignments from the
assignments topic, both co-partitioned with the events topic; the model from the model
changelog on first start) and drops the users of partitions it lost; it reports ready
only afterwards.

Embedding a large batch never gets the member evicted: the batch runs on a helper
thread while the loop pauses its partitions and keeps calling ``poll`` often enough
for ``max.poll.interval.ms``. The item catalog topic is read to its end before the first
event and followed afterwards. SIGTERM/SIGINT finish the batch, flush, commit, leave the
group and exit 0. An unreachable broker is retried with capped exponential backoff
(logged, counted in ``interest_kafka_retries_total``); failed authentication is fatal at once.

Example (needs a broker, so not run as a doctest)::

    settings = ServiceSettings.load(overrides={"bootstrap_servers": "127.0.0.1:9092"})
    raise SystemExit(InterestService(settings).run())
"""

from __future__ import annotations

import concurrent.futures
import gc
import logging
import random
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec

from consumers.changelog import read_from, read_latest, restore_assignments, restore_profiles
from consumers.kafka_compat import finish_transaction_step
from consumers.metrics_server import MetricsServer
from consumers.settings import ServiceSettings
from consumers.topics import COMPACT_TUNING, TopicMismatchError, TopicSpec, ensure_topics
from stream.events import BehaviourEvent, ForgetEvent, decode_event
from stream.metrics import ServiceMetrics
from stream.model_state import (
    ModelStateError,
    apply_model_update,
    model_state_to_bytes,
    model_update_to_bytes,
    restore_model_state,
)
from stream.profiles import profile_to_bytes
from stream.records import encode_record

log = logging.getLogger("interest_stream.service")


class FatalKafkaError(RuntimeError):
    """A Kafka error that retrying cannot fix (bad credentials, authorisation)."""


def _is_fatal(exc: BaseException) -> bool:
    from kafka import errors as kerr

    fatal = tuple(
        getattr(kerr, name)
        for name in (
            "AuthenticationFailedError",
            "SaslAuthenticationFailedError",
            "TopicAuthorizationFailedError",
            "TransactionalIdAuthorizationFailedError",
            "GroupAuthorizationFailedError",
            "ClusterAuthorizationFailedError",
            "UnsupportedSaslMechanismError",
            "IllegalSaslStateError",
        )
        if hasattr(kerr, name)
    )
    return isinstance(exc, fatal)


class Backoff:
    """Capped exponential backoff with jitter: 0.5 s, 1 s, 2 s ... ``cap``."""

    def __init__(self, cap: float = 30.0, first: float = 0.5) -> None:
        self.cap, self.first, self.attempt = cap, first, 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.first * (2**self.attempt))
        self.attempt += 1
        return delay * (0.8 + 0.4 * random.random())

    def reset(self) -> None:
        self.attempt = 0


class CatalogFollower:
    """Reads the compacted item catalog topic into the pipeline's catalog and follows it."""

    def __init__(self, settings: ServiceSettings, catalog, on_bad: Callable[[Any, str, str], None]) -> None:
        from kafka import KafkaConsumer, TopicPartition

        self.catalog = catalog
        self.on_bad = on_bad
        self.consumer = KafkaConsumer(
            client_id=f"{settings.client_id}-catalog",
            max_partition_fetch_bytes=settings.max_request_size,
            enable_auto_commit=False,
            group_id=None,
            isolation_level="read_committed",
            **settings.kafka_client_options(),
        )
        parts = self.consumer.partitions_for_topic(settings.items_topic) or set()
        self.partitions = [TopicPartition(settings.items_topic, p) for p in sorted(parts)]
        self.consumer.assign(self.partitions)
        if self.partitions:
            self.consumer.seek_to_beginning(*self.partitions)

    def load_all(self, timeout_s: float = 120.0) -> int:
        """Read every partition up to the end offsets taken now; returns items loaded."""
        if not self.partitions:
            return 0
        end = self.consumer.end_offsets(self.partitions)
        deadline = time.monotonic() + timeout_s
        n = 0
        while time.monotonic() < deadline:
            if all(self.consumer.position(tp) >= end[tp] for tp in self.partitions):
                break
            n += self.follow(timeout_ms=200)
        return n

    def follow(self, timeout_ms: int = 0) -> int:
        polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=5000)
        n = 0
        for records in polled.values():
            for rec in records:
                n += self._apply(rec)
        return n

    def _apply(self, rec) -> int:
        item_id = rec.key.decode("utf-8", "replace") if rec.key else None
        if rec.value is None:
            if item_id:
                self.catalog.remove(item_id)
            return 0
        try:
            value = msgspec.json.decode(rec.value)
        except (msgspec.DecodeError, UnicodeDecodeError):
            self.on_bad(rec, "bad_catalog_record", "catalog value is not JSON")
            return 0
        if isinstance(value, str):
            value = {"text": value}
        if not isinstance(value, dict):
            self.on_bad(rec, "bad_catalog_record", "catalog value is not a JSON object or string")
            return 0
        item_id = str(value.get("item_id") or item_id or "")
        text = value.get("text")
        if not item_id or not isinstance(text, str) or not text.strip():
            self.on_bad(rec, "bad_catalog_record", "catalog record needs an item id (key) and a non-empty text")
            return 0
        meta = {k: v for k, v in value.items() if k not in ("item_id", "text")}
        self.catalog.upsert(item_id, text, meta or None)
        return 1

    def close(self) -> None:
        self.consumer.close()


Send = tuple[str, bytes | None, bytes | None, list, int | None]  # topic, key, value, headers, partition


class StateCorrupted(RuntimeError):
    """A batch could not be committed: in-memory state is ahead of Kafka and must be rebuilt."""


class InterestService:
    """One member of the service's consumer group (see the module docstring)."""

    def __init__(self, settings: ServiceSettings, *, metrics: ServiceMetrics | None = None,
                 pipeline=None) -> None:
        self.settings = settings
        self.metrics = metrics or ServiceMetrics()
        self._pipeline = pipeline
        self._encoder = pipeline.encoder if pipeline is not None else None
        self._stop = threading.Event()
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch")
        self.consumer = None
        self.producer = None
        self.catalog_follower: CatalogFollower | None = None
        self.server: MetricsServer | None = None
        self.batches = 0
        self.exactly_once = settings.processing_guarantee == "exactly_once"
        self.profiles_topic, self.model_topic, self.updates_topic = settings.changelog_topics()
        self._writer = settings.transactional_id.encode()
        self._updates_hint = 0  # offset of the last committed model update record
        self._lag_at = 0.0
        self._lag_labels: set[tuple[str, str]] = set()
        self._owned: set[int] = set()  # events partitions whose users' state is held here
        self._user_partition: dict[str, int] = {}
        self._model_restored = False
        self._since_model_snapshot = 0
        self._pending_dead_letters: list[Send] = []
        self._batch_rebalances = 0
        self._pending_assignment: set[int] | None = None
        self._seek_committed = False  # after a recovery: re-read owned partitions from their committed offsets
        self._rebalances = 0  # partition revocations seen; a batch that spans one is not committed
        self._sweep: list[str] = []  # users still to re-assess in the current idle sweep
        self._swept_version = -1  # model version the last complete idle sweep used
        self._sweep_version = -1
        self._prev = {"cache_hits": 0, "cache_misses": 0, "truncated": 0}

    # ----------------------------------------------------------------- lifecycle
    def request_stop(self, *_: Any) -> None:
        if not self._stop.is_set():
            log.info("stop requested: finishing the current batch, then commit and leave the group")
        self._stop.set()

    def run(self) -> int:
        """Run until stopped; returns the process exit code."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                signal.signal(sig, self.request_stop)
            except ValueError:  # not the main thread (tests)
                pass
        s = self.settings
        log.info("starting (%s) with settings %s", s.processing_guarantee, s.redacted())
        from threadpoolctl import threadpool_limits

        # The matrix products here are small: BLAS threads only fight torch for the cores.
        threadpool_limits(1, user_api="blas")
        self._zero_labelled_series()
        self.server = MetricsServer(self.metrics, host=s.metrics_host, port=s.metrics_port)
        self.server.start()
        log.info("metrics on %s/metrics (health: /healthz, readiness: /readyz)", self.server.url)
        try:
            if self._pipeline is None:
                from stream.pipeline import Pipeline

                log.info("loading the embedding model")
                self._pipeline = Pipeline.from_settings(s.clustering)
                self._encoder = self._pipeline.encoder
            # Everything allocated so far (torch, the model, imported modules) lives as long as the
            # process: move it out of the garbage collector's sight. Otherwise every full collection
            # walks it, and one took 0.33-0.36 s here, landing on one batch as a latency spike.
            gc.collect()
            gc.freeze()
            if not self._connect():
                return 0
            self._loop()
            self._final_model_snapshot()
            return 0
        except FatalKafkaError as exc:
            log.error("%s", exc)
            return 2
        finally:
            self._shutdown()

    def _zero_labelled_series(self) -> None:
        """Create every known labelled series at 0, so ``rate()`` sees the first increase."""
        from stream.events import RejectReason

        for reason in RejectReason:
            self.metrics.rejected.labels(reason=reason.value)
        self.metrics.rejected.labels(reason="bad_catalog_record")
        for operation in ("connect", "produce", "commit", "recover"):
            self.metrics.kafka_retries.labels(operation=operation)
        self.metrics.restore_progress.set(0)

    def _retrying(self, operation: str, fn: Callable[[], Any]) -> Any:
        """Call ``fn`` until it succeeds, backing off; None if a stop was requested meanwhile."""
        backoff = Backoff(cap=self.settings.connect_backoff_max_s)
        while True:
            try:
                result = fn()
                self.metrics.kafka_connected.set(1)
                return result
            except FatalKafkaError:
                raise
            except Exception as exc:
                if _is_fatal(exc):
                    raise FatalKafkaError(
                        f"Kafka refused {operation}: {type(exc).__name__}: {exc} — authentication or "
                        "authorisation failed; check the credentials and ACLs (sasl_plain_username / "
                        "sasl_plain_password / security_protocol)"
                    ) from exc
                self.metrics.kafka_connected.set(0)
                self.metrics.kafka_retries.labels(operation=operation).inc()
                delay = backoff.next_delay()
                log.warning("Kafka %s failed (%s: %s); retrying in %.1f s", operation, type(exc).__name__, exc, delay)
                if self._stop.wait(delay):
                    return None

    # ----------------------------------------------------------------- connecting
    def _topic_specs(self, admin) -> list[TopicSpec]:
        """The topics this member needs; co-partitioned ones get the events topic's partition count."""
        s = self.settings
        compact = COMPACT_TUNING
        events = TopicSpec("events", s.events_topic, s.events_partitions, "delete", s.replication_factor)
        ensure_topics(admin, [events], create=s.create_topics)
        described = admin.describe_topics([s.events_topic])
        n = len(described[0].get("partitions") or []) or s.events_partitions
        big = {**compact, "max.message.bytes": str(s.max_request_size)}
        return [
            events,
            TopicSpec("assignments", s.assignments_topic, n, "compact", s.replication_factor, configs=compact),
            TopicSpec("profiles changelog", self.profiles_topic, n, "compact", s.replication_factor, configs=compact),
            TopicSpec("model changelog", self.model_topic, 1, "compact", s.replication_factor, configs=big),
            TopicSpec("model updates", self.updates_topic, 1, "delete", s.replication_factor,
                      configs={"max.message.bytes": str(s.max_request_size), "retention.ms": str(7 * 86_400_000)}),
            TopicSpec("centroids", s.centroids_topic, s.centroids_partitions, "compact", s.replication_factor,
                      configs=compact),
            TopicSpec("dead_letters", s.dead_letter_topic, s.dead_letter_partitions, "delete", s.replication_factor),
            TopicSpec("items", s.items_topic, s.items_partitions, "compact", s.replication_factor, configs=compact),
        ]

    def _check_copartitioned(self, admin, n_events: int) -> None:
        names = [self.settings.assignments_topic, self.profiles_topic]
        for topic in admin.describe_topics(names):
            n = len(topic.get("partitions") or [])
            if n < n_events:
                raise TopicMismatchError(
                    f"topic {topic['name']!r} has {n} partitions but the events topic has {n_events}: the "
                    "assignments topic and the profiles changelog must have at least as many partitions as "
                    "the events topic (they are co-partitioned with it); add partitions or use new topics"
                )

    @property
    def _transaction_wait_s(self) -> float:
        """Longest wait for a transactional step before the producer is dropped and the batch redone."""
        return max(15.0, 2 * self.settings.transaction_timeout_ms / 1000.0)

    def _make_producer(self):
        from kafka import KafkaProducer

        s = self.settings
        options: dict[str, Any] = {
            "client_id": f"{s.client_id}-producer", "acks": "all", "linger_ms": 5,
            "max_request_size": s.max_request_size, **s.kafka_client_options(),
        }
        if self.exactly_once:
            # A new transaction right after a commit often meets CONCURRENT_TRANSACTIONS while the
            # markers are written: retry it in 20 ms, not the default 100 ms.
            options.update(transactional_id=s.transactional_id, transaction_timeout_ms=s.transaction_timeout_ms,
                           retry_backoff_ms=20)
        else:
            options.update(retries=5, max_in_flight_requests_per_connection=1)
        producer = KafkaProducer(**options)
        if self.exactly_once:
            try:
                producer.init_transactions()  # fences a predecessor with the same id, aborting its open transaction
            except Exception:
                producer.close(timeout=0)
                raise
        return producer

    def _connect(self) -> bool:
        from consumers.kafka_compat import install as install_kafka_fixes

        install_kafka_fixes()  # kafka-python 3.0.x: refused SASL credentials raise instead of timing out
        from kafka import KafkaAdminClient, KafkaConsumer
        from kafka.consumer.subscription_state import ConsumerRebalanceListener

        s = self.settings
        opts = s.kafka_client_options()

        def admin_setup() -> bool:
            admin = KafkaAdminClient(client_id=f"{s.client_id}-admin", **opts)
            try:
                specs = self._topic_specs(admin)
                created = ensure_topics(admin, specs, create=s.create_topics)
                if created:
                    log.info("created topics: %s", ", ".join(created))
                self._check_copartitioned(admin, specs[1].partitions)
            finally:
                admin.close()
            return True

        try:
            if self._retrying("connect", admin_setup) is None:
                return False
        except TopicMismatchError as exc:
            raise FatalKafkaError(f"topic configuration: {exc}") from exc
        self.producer = self._retrying("connect", self._make_producer)
        if self.producer is None:
            return False
        self.catalog_follower = self._retrying("connect", lambda: CatalogFollower(
            s, self._pipeline.catalog, self._dead_letter_raw))
        if self.catalog_follower is None:
            return False
        t0 = time.monotonic()
        n_items = self.catalog_follower.load_all()
        log.info("item catalog loaded: %d records applied, %d items, %.2f s",
                 n_items, len(self._pipeline.catalog), time.monotonic() - t0)

        service = self

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):
                service._rebalances += 1
                log.info("partitions revoked: %s", sorted((tp.topic, tp.partition) for tp in revoked))
                service.server.set_ready(False)
                for tp in revoked:
                    key = (tp.topic, str(tp.partition))
                    if key in service._lag_labels:
                        service.metrics.lag.remove(*key)
                        service._lag_labels.discard(key)

            def on_partitions_assigned(self, assigned):
                # Runs inside poll, on the client's network loop: only note the assignment and pause the
                # partitions; the main loop restores their state before resuming them (heartbeats go on).
                log.info("partitions assigned: %s", sorted((tp.topic, tp.partition) for tp in assigned))
                if assigned:
                    service.consumer.pause(*assigned)
                service._pending_assignment = {tp.partition for tp in assigned if tp.topic == s.events_topic}

        def make_consumer():
            consumer = KafkaConsumer(
                group_id=s.group_id, client_id=f"{s.client_id}-events", enable_auto_commit=False,
                auto_offset_reset="earliest", max_poll_records=s.batch_max_events,
                max_poll_interval_ms=s.max_poll_interval_ms, session_timeout_ms=s.session_timeout_ms,
                heartbeat_interval_ms=max(1000, s.session_timeout_ms // 3),
                isolation_level="read_committed", **opts)
            consumer.subscribe([s.events_topic], listener=Listener())
            return consumer

        self.consumer = self._retrying("connect", make_consumer)
        return self.consumer is not None

    def _shutdown(self) -> None:
        if self.server is not None:
            self.server.set_ready(False)
        for name, closer in (("consumer", lambda: self.consumer and self.consumer.close(autocommit=False)),
                             ("producer", lambda: self.producer and self.producer.close(timeout=10)),
                             ("catalog", lambda: self.catalog_follower and self.catalog_follower.close())):
            try:
                closer()
            except Exception as exc:  # closing must never hide the real exit reason
                log.warning("closing the %s failed: %s", name, exc)
        self._executor.shutdown(wait=False)
        if self.server is not None:
            self.server.stop()
        log.info("stopped after %d batches", self.batches)

    # ----------------------------------------------------------------- state
    def _apply_assignment(self) -> None:
        """Drop the users of partitions lost, restore the partitions gained, resume, report ready."""
        assigned, self._pending_assignment = self._pending_assignment, None
        lost, gained = self._owned - assigned, assigned - self._owned
        if lost:
            self._drop_partitions(lost)
        self._owned = self._owned - lost
        if gained or not self._model_restored:
            ok = self._retrying("restore", lambda: self._restore(sorted(gained)))
            if ok is None:
                return
        if self._seek_committed:
            if self._retrying("recover", lambda: self._seek_to_committed(assigned)) is None:
                return
            self._seek_committed = False
        self._owned = set(assigned)
        paused = self.consumer.paused()
        if paused:
            self.consumer.resume(*paused)
        self.server.set_ready(bool(assigned))

    def _drop_partitions(self, partitions: set[int]) -> None:
        pipe = self._pipeline
        users = [u for u, p in self._user_partition.items() if p in partitions]
        for user in users:
            pipe.profiles.forget(user)
            pipe.tracker.forget(user)
            del self._user_partition[user]
        log.info("dropped the state of %d users of partitions %s (no longer owned)", len(users), sorted(partitions))

    def _restore(self, partitions: list[int]) -> bool:
        """Restore profiles and last assignments of ``partitions`` (and the model, once)."""
        s = self.settings
        pipe = self._pipeline
        opts = s.kafka_client_options()
        t0 = time.monotonic()
        m = self.metrics
        m.restore_progress.set(0.0)
        self.server.set_ready(False)

        def progress(done: int, total: int) -> None:
            m.restore_progress.set(done / total if total else 1.0)

        try:
            owners = restore_profiles(opts, self.profiles_topic, partitions, pipe.profiles, progress=progress)
        except ValueError as exc:
            raise FatalKafkaError(f"cannot restore profiles: {exc}; use a new group id or changelog topic") from exc
        self._user_partition.update(owners)
        n_assigned = restore_assignments(opts, s.assignments_topic, partitions, pipe.tracker)
        if not self._model_restored:
            self._restore_model(opts)
            self._model_restored = True
        took = time.monotonic() - t0
        m.restore_progress.set(1.0)
        m.restore_seconds.set(took)
        m.users.set(len(pipe.profiles))
        log.info("restored partitions %s: %d profiles, %d assignments, model version %d, %.2f s",
                 partitions, len(owners), n_assigned, pipe.model.version, took)
        return True

    def _restore_model(self, opts: dict) -> None:
        """The latest model snapshot, then its writer's logged trainer steps after it: the exact model."""
        s = self.settings
        pipe = self._pipeline
        model = read_latest(opts, self.model_topic, [0], max_fetch_bytes=2 * s.max_request_size)
        data = model.get(b"model", (0, None))[1]
        writer, start = s.transactional_id, 0
        if data is not None:
            try:
                writer, start = restore_model_state(pipe, data)
            except ModelStateError as exc:
                raise FatalKafkaError(f"cannot restore the model from {self.model_topic}: {exc}") from exc
            writer = writer or s.transactional_id
        steps = read_from(opts, self.updates_topic, 0, start, key=writer.encode(),
                          max_fetch_bytes=2 * s.max_request_size)
        replayed = 0
        for value in steps:
            before = pipe.trainer.updates
            try:
                if apply_model_update(pipe, value) > before:
                    replayed += 1
            except (ModelStateError, ValueError) as exc:
                log.warning("model update log of %s stops early (%s); continuing from step %d",
                            writer, exc, pipe.trainer.updates)
                break
        log.info("model restored: snapshot %s, %d logged steps replayed (writer %s), version %d",
                 "found" if data is not None else "absent", replayed, writer, pipe.model.version)

    def _recover(self, reason: BaseException) -> None:
        """A batch was not committed: abort it, drop all state, and let the loop rebuild it from Kafka.

        The rebuild is an ordinary assignment: every owned partition is restored from the changelogs
        (which hold exactly what was committed) and re-read from its committed offset.
        """
        from stream.pipeline import Pipeline

        log.warning("batch not committed (%s: %s): rebuilding state from the changelogs", type(reason).__name__, reason)
        self.server.set_ready(False)
        old = self.producer
        if self.exactly_once and old is not None:
            try:
                finish_transaction_step(old, "abort", self._transaction_wait_s)
            except Exception as exc:
                log.info("abort failed (%s); the new producer fences the transaction instead", exc)
        if old is not None:
            try:
                old.close(timeout=0)
            except Exception:
                pass
        self.producer = self._retrying("recover", self._make_producer)
        if self.producer is None:
            return
        self._pipeline = Pipeline(self.settings.clustering, self._encoder, self._pipeline.catalog)
        self._user_partition.clear()
        self._model_restored = False
        self._sweep, self._swept_version = [], -1
        self._prev = dict.fromkeys(self._prev, 0)  # the new pipeline's counters start at zero
        owned = self._pending_assignment if self._pending_assignment is not None else set(self._owned)
        self._owned = set()
        self._pending_assignment = owned
        self._seek_committed = True
        assigned = self.consumer.assignment()
        if assigned:
            self.consumer.pause(*assigned)

    def _seek_to_committed(self, partitions: set[int]) -> bool:
        from kafka import TopicPartition

        for p in partitions:
            tp = TopicPartition(self.settings.events_topic, p)
            if tp not in self.consumer.assignment():
                continue
            committed = self.consumer.committed(tp)
            if committed is None:
                self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, committed)
        return True

    # ----------------------------------------------------------------- the loop
    def _loop(self) -> None:
        while not self._stop.is_set():
            self.server.tick()
            if self._pending_assignment is not None:
                self._apply_assignment()
                continue
            self.catalog_follower.follow(timeout_ms=0)
            if self._pending_dead_letters and self.exactly_once:
                self._flush_pending_dead_letters()
            records = self._collect_batch()
            if records:
                self._process(records)
            elif not self._stop.is_set():
                self._idle_sweep()
            self._update_lag()

    def _collect_batch(self) -> list:
        s = self.settings
        self._batch_rebalances = self._rebalances
        records: list = []
        deadline: float | None = None
        while not self._stop.is_set():
            now = time.monotonic()
            timeout_ms = 200 if deadline is None else max(0, int((deadline - now) * 1000))
            polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=s.batch_max_events - len(records))
            for recs in polled.values():
                records.extend(recs)
            if records and deadline is None:
                deadline = time.monotonic() + s.batch_max_wait_ms / 1000.0
            if not records:
                return records
            if len(records) >= s.batch_max_events or time.monotonic() >= deadline:
                break
        # Within a partition Kafka order is kept; across partitions, order by timestamp for determinism.
        records.sort(key=lambda r: (r.timestamp, r.partition, r.offset))
        return records

    def _wait_for_catalog(self, records: list) -> None:
        """With unknown_item_policy=wait: follow the catalog until the batch's items are known (bounded)."""
        catalog = self._pipeline.catalog
        wanted = set()
        for rec in records:
            ev = decode_event(rec.value, record_ts_ms=rec.timestamp, key=rec.key)
            item = getattr(ev, "item_id", None)
            if item and getattr(ev, "text", None) is None and item not in catalog:
                wanted.add(item)
        deadline = time.monotonic() + self.settings.unknown_item_wait_ms / 1000.0
        while wanted and time.monotonic() < deadline and not self._stop.is_set():
            self.catalog_follower.follow(timeout_ms=100)
            wanted = {i for i in wanted if i not in catalog}

    def _run_batch(self, source: list, now_ms: int):
        """Run the pipeline on a helper thread, keeping the group membership alive meanwhile."""
        future = self._executor.submit(self._pipeline.process_batch, source, now_ms)
        keepalive_s = max(1.0, self.settings.max_poll_interval_ms / 3000.0)
        paused: set = set()
        try:
            while True:
                try:
                    return future.result(timeout=keepalive_s)
                except concurrent.futures.TimeoutError:
                    if not paused:
                        paused = set(self.consumer.assignment()) - set(self.consumer.paused())
                        self.consumer.pause(*paused)
                    self.consumer.poll(timeout_ms=0)  # heartbeat + resets the poll timer; paused: no records
                    self.server.tick()
        finally:
            still = paused & set(self.consumer.assignment())
            if still:
                self.consumer.resume(*still)

    def _idle_sweep(self, chunk: int = 2000) -> None:
        """While no events arrive, re-assess every user against the current model, a chunk per idle poll.

        Batches only re-check users of clusters that moved, within a budget; once the input goes
        quiet this sweep makes every user's published assignment agree with the final model
        (up to the hysteresis margin). It starts again whenever the model version changed.
        """
        pipe = self._pipeline
        if not pipe.model.is_initialised or self._pending_assignment is not None:
            return
        if not self._sweep:
            if self._swept_version == pipe.model.version:
                return
            self._sweep = list(pipe.profiles.user_ids())
            self._sweep_version = pipe.model.version
        users, self._sweep = self._sweep[:chunk], self._sweep[chunk:]
        changes = pipe.reassess(users, int(time.time() * 1000))
        if changes:
            sends = [(self.settings.assignments_topic, c.user_id.encode(), encode_record(c), [],
                      self._user_partition.get(c.user_id)) for c in changes]
            try:
                if self._commit_batch(sends, {}) is None:
                    return
            except FatalKafkaError:
                raise
            except Exception as exc:
                self._recover(exc)
                return
            self.metrics.changes.inc(len(changes))
            self._observe_clusters()
        if not self._sweep:
            self._swept_version = self._sweep_version

    def _observe_clusters(self) -> None:
        pipe = self._pipeline
        for cluster, size in enumerate(pipe.tracker.cluster_sizes(pipe.model.n_clusters)):
            self.metrics.cluster_size.labels(cluster=str(cluster)).set(int(size))

    @staticmethod
    def _batch_users(records: list) -> dict[str, int]:
        """User id → events partition for the records of a batch (from the key, else the payload)."""
        users: dict[str, int] = {}
        for r in records:
            if r.key:
                try:
                    users[r.key.decode("utf-8")] = r.partition
                    continue
                except UnicodeDecodeError:
                    pass
            event = decode_event(r.value, record_ts_ms=r.timestamp)
            if isinstance(event, BehaviourEvent | ForgetEvent):
                users[event.user_id] = r.partition
        return users

    def _process(self, records: list) -> None:
        from stream.worker import SourceRecord

        s = self.settings
        t0 = time.monotonic()
        if s.unknown_item_policy == "wait":
            self._wait_for_catalog(records)
        source = [SourceRecord(value=r.value, key=r.key, timestamp_ms=r.timestamp, topic=r.topic,
                               partition=r.partition, offset=r.offset) for r in records]
        now_ms = int(time.time() * 1000)
        out = self._run_batch(source, now_ms)
        batch_users = self._batch_users(records)
        sends = self._outputs(out, batch_users, now_ms)
        offsets = self._offsets(records)
        if self._rebalances != self._batch_rebalances:
            # The group rebalanced while this batch was polled or processed: some of its partitions may
            # be another member's now, and that member restores them from what is committed. Committing
            # here could lose or double events there, so drop the batch and rebuild from Kafka instead.
            self._recover(RuntimeError("the group rebalanced during the batch"))
            return
        try:
            futures = self._commit_batch(sends, offsets)
            if futures is None:
                return  # stopping while Kafka is unreachable (at-least-once): reprocessed on restart
        except FatalKafkaError:
            raise
        except Exception as exc:
            if _is_fatal(exc):
                raise FatalKafkaError(f"Kafka refused the transaction: {type(exc).__name__}: {exc}") from exc
            self.metrics.kafka_retries.labels(operation="commit").inc()
            self._recover(exc)
            return
        publish_ms = time.time() * 1000
        self.metrics.last_commit.set(time.time())
        for (topic, *_), future in zip(sends, futures, strict=True):
            if topic == self.updates_topic and future.is_done and future.succeeded():
                self._updates_hint = future.value.offset
        self.batches += 1
        self._observe(records, out, publish_ms, time.monotonic() - t0)

    def _outputs(self, out, batch_users: dict[str, int], now_ms: int) -> list[Send]:
        s = self.settings
        pipe = self._pipeline
        sends: list[Send] = []
        # Profiles changelog: every user of the batch that has a profile; a tombstone for one forgotten.
        for user, partition in batch_users.items():
            if user in pipe.profiles:
                self._user_partition[user] = partition
                sends.append((self.profiles_topic, user.encode(), profile_to_bytes(*pipe.profiles.raw(user)),
                              [], partition))
        for user in out.tombstones:
            partition = self._user_partition.pop(user, batch_users.get(user))
            sends.append((self.profiles_topic, user.encode(), None, [], partition))
            sends.append((s.assignments_topic, user.encode(), None, [], partition))
        for change in out.changes:
            sends.append((s.assignments_topic, change.user_id.encode(), encode_record(change), [],
                          self._user_partition.get(change.user_id)))
        for snap in out.snapshots:
            sends.append((s.centroids_topic, str(snap.cluster).encode(), encode_record(snap), [], None))
        for rec, rejection in out.dead_letters:
            sends.append((s.dead_letter_topic, rec.key, rec.value if rec.value is not None else b"",
                          self._dlq_headers(rec.topic, rec.partition, rec.offset, rejection.reason,
                                            rejection.detail), None))
        sends.extend(self._pending_dead_letters)
        self._pending_dead_letters = []
        if out.stats is not None:  # the trainer step, so a restore can replay it exactly
            sends.append((self.updates_topic, self._writer,
                          model_update_to_bytes(pipe.trainer.updates, out.stats, out.label_stats, now_ms), [], 0))
        self._since_model_snapshot += 1
        if self._since_model_snapshot >= s.model_snapshot_every and pipe.model.is_initialised:
            sends.append((self.model_topic, b"model", self._model_snapshot(), [], 0))
            self._since_model_snapshot = 0
        return sends

    def _model_snapshot(self) -> bytes:
        return model_state_to_bytes(self._pipeline, writer=self.settings.transactional_id,
                                    updates_offset=self._updates_hint)

    @staticmethod
    def _offsets(records: list) -> dict:
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata

        offsets: dict = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            offsets[tp] = max(offsets.get(tp, 0), r.offset + 1)
        return {tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()}

    @staticmethod
    def _dlq_headers(topic, partition, offset, reason: str, detail: str) -> list[tuple[str, bytes]]:
        return [("reason", reason.encode()), ("detail", detail[:1000].encode("utf-8", "replace")),
                ("source_topic", str(topic).encode()), ("source_partition", str(partition).encode()),
                ("source_offset", str(offset).encode())]

    def _dead_letter_raw(self, rec, reason: str, detail: str) -> None:
        """Dead-letter a record outside a batch (the catalog follower's bad records)."""
        self.metrics.rejected.labels(reason=reason).inc()
        self._pending_dead_letters.append((self.settings.dead_letter_topic, rec.key, rec.value or b"",
                                           self._dlq_headers(rec.topic, rec.partition, rec.offset, reason, detail),
                                           None))
        if not self.exactly_once:
            sends, self._pending_dead_letters = self._pending_dead_letters, []
            self._retrying("produce", lambda: self._send_and_flush(sends))

    def _flush_pending_dead_letters(self) -> None:
        sends, self._pending_dead_letters = self._pending_dead_letters, []
        try:
            self._commit_batch(sends, {})
        except Exception as exc:
            self._pending_dead_letters = sends + self._pending_dead_letters
            log.warning("could not publish catalog dead letters yet: %s", exc)

    def _send(self, sends: list[Send]) -> list:
        return [self.producer.send(topic, key=key, value=value, headers=headers, partition=partition)
                for topic, key, value, headers, partition in sends]

    def _send_and_flush(self, sends: list[Send]) -> list:
        futures = self._send(sends)
        self.producer.flush(timeout=30)
        for f in futures:
            f.get(timeout=0)  # raises the delivery error, if any
        return futures

    def _commit_batch(self, sends: list[Send], offsets: dict) -> list | None:
        """Publish ``sends`` and commit ``offsets``: one transaction, or flush-then-commit.

        Returns the send futures (all acknowledged), or None when stopped while Kafka is unreachable.
        """
        if self.exactly_once:
            producer = self.producer
            producer.begin_transaction()
            futures = self._send(sends)
            bound_s = self._transaction_wait_s
            if offsets:
                finish_transaction_step(producer, "send_offsets", bound_s, offsets, self.consumer.group_metadata())
            finish_transaction_step(producer, "commit", bound_s)
            return futures
        futures = self._retrying("produce", lambda: self._send_and_flush(sends)) if sends else []
        if futures is None:
            return None
        if offsets:
            from kafka.errors import CommitFailedError

            def do_commit() -> bool:
                try:
                    self.consumer.commit(offsets)
                except CommitFailedError as exc:
                    # The group rebalanced under us: the new owner re-reads these records (at-least-once).
                    log.warning("offset commit rejected after a rebalance (%s); records will be re-delivered", exc)
                return True

            self._retrying("commit", do_commit)
        return futures

    def _final_model_snapshot(self) -> None:
        """At shutdown: write the model so the next start continues it (best effort)."""
        pipe = self._pipeline
        if self.producer is None or pipe is None or not pipe.model.is_initialised or self._since_model_snapshot == 0:
            return
        try:
            self._commit_batch([(self.model_topic, b"model", self._model_snapshot(), [], 0)], {})
            log.info("model version %d written to %s", pipe.model.version, self.model_topic)
        except Exception as exc:
            log.warning("could not write the final model snapshot: %s", exc)

    # ----------------------------------------------------------------- metrics
    def _observe(self, records: list, out, publish_ms: float, seconds: float) -> None:
        m = self.metrics
        m.events_consumed.inc(len(records))
        m.batch_size.observe(len(records))
        m.batch_seconds.observe(seconds)
        m.embed_seconds.observe(out.embed_seconds)
        m.events_applied.inc(out.n_applied)
        m.forgotten.inc(out.n_forgotten)
        for _, rejection in out.dead_letters:
            m.rejected.labels(reason=rejection.reason).inc()
        m.changes.inc(len(out.changes))
        for ts in out.applied_ts_ms:
            m.latency.observe(max(0.0, (publish_ms - ts) / 1000.0))
        pipe = self._pipeline
        m.users.set(len(pipe.profiles))
        m.model_version.set(pipe.model.version)
        stats = pipe.counters_snapshot()
        m.cache_hits.inc(max(0, stats["cache_hits"] - self._prev["cache_hits"]))
        m.cache_misses.inc(max(0, stats["cache_misses"] - self._prev["cache_misses"]))
        m.truncated.inc(max(0, stats["truncated"] - self._prev["truncated"]))
        self._prev = {k: stats[k] for k in self._prev}
        self._observe_clusters()
        if out.movement is not None:
            for cluster, moved in enumerate(out.movement):
                m.movement.labels(cluster=str(cluster)).set(float(moved))

    def _update_lag(self, every_s: float = 2.0) -> None:
        now = time.monotonic()
        if now - self._lag_at < every_s:
            return
        self._lag_at = now
        try:
            for tp in self.consumer.assignment():
                hw = self.consumer.highwater(tp)
                if hw is None:
                    continue
                pos = self.consumer.position(tp, timeout_ms=1000)
                key = (tp.topic, str(tp.partition))
                self.metrics.lag.labels(*key).set(max(0, hw - pos))
                self._lag_labels.add(key)
        except Exception as exc:  # lag is best effort; never stop the loop for it
            log.debug("lag update failed: %s", exc)
