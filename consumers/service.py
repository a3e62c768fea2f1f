"""The streaming service: one consumer-group member running the worker and trainer stages.

Loop, per micro-batch:

1. poll the events topic until ``batch_max_events`` records arrived or
   ``batch_max_wait_ms`` passed since the first one (low latency at low rates, large
   batches at high rates);
2. run the same :class:`stream.pipeline.Pipeline` that ``interest-stream replay`` runs
   (decode, embed, fold profiles, k-means statistics, trainer update, assignments);
3. publish assignment changes (compacted, key = user id; a tombstone for a forgotten
   user), centroid snapshots (compacted, key = cluster id) and dead letters (original
   bytes, reason and source coordinates in headers);
4. flush the producer and commit the batch's offsets only after every output was
   acknowledged: at-least-once, with the micro-batch as the unit of commit.

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
import logging
import random
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec

from consumers.metrics_server import MetricsServer
from consumers.settings import ServiceSettings
from consumers.topics import ensure_topics, topic_specs_from
from stream.checkpoint import CheckpointError, pipeline_to_bytes, restore_pipeline, write_atomically
from stream.events import decode_event
from stream.metrics import ServiceMetrics
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


class InterestService:
    """One member of the service's consumer group (see the module docstring)."""

    def __init__(self, settings: ServiceSettings, *, metrics: ServiceMetrics | None = None,
                 pipeline=None) -> None:
        self.settings = settings
        self.metrics = metrics or ServiceMetrics()
        self._pipeline = pipeline
        self._stop = threading.Event()
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch")
        self.consumer = None
        self.producer = None
        self.catalog_follower: CatalogFollower | None = None
        self.server: MetricsServer | None = None
        self.batches = 0
        self._lag_at = 0.0
        self._lag_labels: set[tuple[str, str]] = set()
        self._processed: dict[str, int] = {}  # "topic:partition" -> next offset, folded into state
        self._resume: dict[str, int] = {}  # checkpoint offsets to seek to on first assignment
        self._checkpoint_at = time.monotonic()

    # ----------------------------------------------------------------- lifecycle
    def request_stop(self, *_: Any) -> None:
        if not self._stop.is_set():
            log.info("stop requested: finishing the current batch, then flush, commit and leave the group")
        self._stop.set()

    def run(self) -> int:
        """Run until stopped; returns the process exit code."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                signal.signal(sig, self.request_stop)
            except ValueError:  # not the main thread (tests)
                pass
        s = self.settings
        log.info("starting with settings %s", s.redacted())
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
            self._load_checkpoint()
            if not self._connect():
                return 0
            self._loop()
            return 0
        except FatalKafkaError as exc:
            log.error("%s", exc)
            return 2
        finally:
            self._shutdown()

    def _zero_labelled_series(self) -> None:
        """Create every known labelled counter at 0, so ``rate()`` sees the first increase."""
        from stream.events import RejectReason

        for reason in RejectReason:
            self.metrics.rejected.labels(reason=reason.value)
        self.metrics.rejected.labels(reason="bad_catalog_record")
        for operation in ("connect", "produce", "commit"):
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
            except Exception as exc:
                if _is_fatal(exc):
                    raise FatalKafkaError(
                        f"Kafka refused {operation}: {type(exc).__name__}: {exc} — check the credentials and "
                        "ACLs (sasl_plain_username / sasl_plain_password / security_protocol)"
                    ) from exc
                self.metrics.kafka_connected.set(0)
                self.metrics.kafka_retries.labels(operation=operation).inc()
                delay = backoff.next_delay()
                log.warning("Kafka %s failed (%s: %s); retrying in %.1f s", operation, type(exc).__name__, exc, delay)
                if self._stop.wait(delay):
                    return None

    def _connect(self) -> bool:
        from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
        from kafka.consumer.subscription_state import ConsumerRebalanceListener

        s = self.settings
        opts = s.kafka_client_options()
        specs = topic_specs_from(
            events=s.events_topic, assignments=s.assignments_topic, centroids=s.centroids_topic,
            dead_letters=s.dead_letter_topic, items=s.items_topic,
            partitions={"events": s.events_partitions, "assignments": s.assignments_partitions,
                        "centroids": s.centroids_partitions, "dead_letters": s.dead_letter_partitions,
                        "items": s.items_partitions},
            replication_factor=s.replication_factor,
        )

        def admin_setup() -> bool:
            admin = KafkaAdminClient(client_id=f"{s.client_id}-admin", **opts)
            try:
                created = ensure_topics(admin, specs, create=s.create_topics)
                if created:
                    log.info("created topics: %s", ", ".join(created))
            finally:
                admin.close()
            return True

        if self._retrying("connect", admin_setup) is None:
            return False
        self.producer = self._retrying("connect", lambda: KafkaProducer(
            client_id=f"{s.client_id}-producer", acks="all", linger_ms=5, retries=5,
            max_in_flight_requests_per_connection=1, **opts))
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
                log.info("partitions revoked: %s", sorted((tp.topic, tp.partition) for tp in revoked))
                service.server.set_ready(False)
                for tp in revoked:
                    key = (tp.topic, str(tp.partition))
                    if key in service._lag_labels:
                        service.metrics.lag.remove(*key)
                        service._lag_labels.discard(key)

            def on_partitions_assigned(self, assigned):
                log.info("partitions assigned: %s", sorted((tp.topic, tp.partition) for tp in assigned))
                for tp in assigned:
                    offset = service._resume.pop(f"{tp.topic}:{tp.partition}", None)
                    if offset is not None:
                        # Re-read from what the checkpoint covers: state ends exact even if the
                        # process died after committing later offsets (outputs may repeat).
                        service.consumer.seek(tp, offset)
                        log.info("resuming %s:%d at checkpoint offset %d", tp.topic, tp.partition, offset)
                service.server.set_ready(True)

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

    # ----------------------------------------------------------------- checkpoints
    def _load_checkpoint(self) -> None:
        path = self.settings.checkpoint_path()
        if path is None or not path.exists():
            self.metrics.restore_progress.set(1.0)  # nothing to restore
            self.metrics.restore_seconds.set(0.0)
            return
        t0 = time.monotonic()
        try:
            self._resume = restore_pipeline(self._pipeline, path.read_bytes())
        except CheckpointError as exc:
            raise FatalKafkaError(f"cannot restore {path}: {exc} (move it away to start empty)") from exc
        self._processed = dict(self._resume)
        took = time.monotonic() - t0
        self.metrics.restore_seconds.set(took)
        self.metrics.restore_progress.set(1.0)
        log.info("restored checkpoint %s: %d users, model version %d, %.2f s",
                 path, len(self._pipeline.profiles), self._pipeline.model.version, took)

    def save_checkpoint(self) -> None:
        path = self.settings.checkpoint_path()
        if path is None or not self._processed:
            return
        t0 = time.monotonic()
        write_atomically(path, pipeline_to_bytes(self._pipeline, self._processed))
        self._checkpoint_at = time.monotonic()
        log.info("checkpoint written: %s (%d users, %.2f s)", path, len(self._pipeline.profiles),
                 self._checkpoint_at - t0)

    def _shutdown(self) -> None:
        if self.server is not None:
            self.server.set_ready(False)
        if self._pipeline is not None and self.consumer is not None:
            try:
                self.save_checkpoint()
            except OSError as exc:
                log.error("could not write the checkpoint: %s", exc)
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

    # ----------------------------------------------------------------- the loop
    def _loop(self) -> None:
        while not self._stop.is_set():
            self.server.tick()
            self.catalog_follower.follow(timeout_ms=0)
            records = self._collect_batch()
            if records:
                self._process(records)
            self._update_lag()

    def _collect_batch(self) -> list:
        s = self.settings
        records: list = []
        deadline: float | None = None
        while not self._stop.is_set():
            now = time.monotonic()
            if deadline is None:
                timeout_ms = 200
            else:
                timeout_ms = max(0, int((deadline - now) * 1000))
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
        paused = False
        try:
            while True:
                try:
                    return future.result(timeout=keepalive_s)
                except concurrent.futures.TimeoutError:
                    if not paused:
                        self.consumer.pause(*self.consumer.assignment())
                        paused = True
                    self.consumer.poll(timeout_ms=0)  # heartbeat + resets the poll timer; paused: no records
                    self.server.tick()
        finally:
            if paused:
                self.consumer.resume(*self.consumer.paused())

    def _process(self, records: list) -> None:
        from stream.worker import SourceRecord

        s = self.settings
        t0 = time.monotonic()
        if s.unknown_item_policy == "wait":
            self._wait_for_catalog(records)
        source = [SourceRecord(value=r.value, key=r.key, timestamp_ms=r.timestamp, topic=r.topic,
                               partition=r.partition, offset=r.offset) for r in records]
        out = self._run_batch(source, int(time.time() * 1000))
        sends = self._outputs(out)
        if not self._publish(sends):
            return  # stopping while Kafka is unreachable: not committed, so reprocessed on restart
        publish_ms = time.time() * 1000
        self._commit(records)
        for r in records:
            key = f"{r.topic}:{r.partition}"
            self._processed[key] = max(self._processed.get(key, 0), r.offset + 1)
        self.batches += 1
        interval = self.settings.checkpoint_interval_s
        if interval > 0 and time.monotonic() - self._checkpoint_at >= interval:
            self.save_checkpoint()
        self._observe(records, out, publish_ms, time.monotonic() - t0)

    def _outputs(self, out) -> list[tuple[str, bytes | None, bytes | None, list]]:
        s = self.settings
        sends: list[tuple[str, bytes | None, bytes | None, list]] = []
        for change in out.changes:
            sends.append((s.assignments_topic, change.user_id.encode(), encode_record(change), []))
        for user_id in out.tombstones:
            sends.append((s.assignments_topic, user_id.encode(), None, []))
        for snap in out.snapshots:
            sends.append((s.centroids_topic, str(snap.cluster).encode(), encode_record(snap), []))
        for rec, rejection in out.dead_letters:
            sends.append((s.dead_letter_topic, rec.key, rec.value if rec.value is not None else b"",
                          self._dlq_headers(rec.topic, rec.partition, rec.offset, rejection.reason,
                                            rejection.detail)))
        return sends

    @staticmethod
    def _dlq_headers(topic, partition, offset, reason: str, detail: str) -> list[tuple[str, bytes]]:
        return [("reason", reason.encode()), ("detail", detail[:1000].encode("utf-8", "replace")),
                ("source_topic", str(topic).encode()), ("source_partition", str(partition).encode()),
                ("source_offset", str(offset).encode())]

    def _dead_letter_raw(self, rec, reason: str, detail: str) -> None:
        """Dead-letter a record outside a batch (the catalog follower's bad records)."""
        self.metrics.rejected.labels(reason=reason).inc()
        self._publish([(self.settings.dead_letter_topic, rec.key, rec.value or b"",
                        self._dlq_headers(rec.topic, rec.partition, rec.offset, reason, detail))])

    def _publish(self, sends: list) -> bool:
        """Send every output and wait for the acknowledgements; retry the lot until it succeeds."""
        if not sends:
            return True

        def send_all() -> bool:
            futures = [self.producer.send(topic, key=key, value=value, headers=headers)
                       for topic, key, value, headers in sends]
            self.producer.flush(timeout=30)
            for f in futures:
                f.get(timeout=0)  # raises the delivery error, if any
            return True

        return self._retrying("produce", send_all) is not None

    def _commit(self, records: list) -> None:
        from kafka import TopicPartition
        from kafka.errors import CommitFailedError
        from kafka.structs import OffsetAndMetadata

        offsets: dict = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            if r.offset + 1 > offsets.get(tp, -1):
                offsets[tp] = r.offset + 1
        commit = {tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()}

        def do_commit() -> bool:
            try:
                self.consumer.commit(commit)
            except CommitFailedError as exc:
                # The group rebalanced under us: the new owner re-reads these records (at-least-once).
                log.warning("offset commit rejected after a rebalance (%s); records will be re-delivered", exc)
                return False
            self.metrics.last_commit.set(time.time())
            return True

        self._retrying("commit", do_commit)

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
        m.cache_hits.inc(stats["cache_hits"] - getattr(self, "_prev_hits", 0))
        m.cache_misses.inc(stats["cache_misses"] - getattr(self, "_prev_misses", 0))
        m.truncated.inc(stats["truncated"] - getattr(self, "_prev_truncated", 0))
        self._prev_hits, self._prev_misses, self._prev_truncated = (
            stats["cache_hits"], stats["cache_misses"], stats["truncated"])
        sizes = pipe.tracker.cluster_sizes(pipe.model.n_clusters)
        for cluster, size in enumerate(sizes):
            m.cluster_size.labels(cluster=str(cluster)).set(int(size))
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
