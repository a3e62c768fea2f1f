"""The streaming service: one consumer-group member, a worker for its partitions' users that follows the group's model.

Loop, per micro-batch:

1. between batches, adopt the newest model version the group's trainer committed on the model
   topic (:mod:`consumers.model_follower`, :meth:`stream.pipeline.Pipeline.adopt`; ``_follow_model``),
   so that every batch is assessed with one version;
2. poll the events topic until the batch's record limit is reached or
   ``batch_max_wait_ms`` passed since the first one (low latency at low rates, large
   batches at high rates). The limit is ``batch_max_events`` while the member keeps up and
   doubles, up to ``batch_cap_events`` (and ``batch_cap_bytes``), while the consumer lag is
   larger than a batch (:mod:`consumers.batch_sizer`): under a backlog each transaction
   carries more;
3. run the same :class:`stream.pipeline.Pipeline` that ``interest-stream replay`` runs, with
   ``train=False`` (decode, embed, fold profiles, assess the touched users against the adopted
   version and re-check the users of clusters it moved, summarise the batch into k-means
   statistics); before the first version exists, users are held (the warm-up) and assessed
   once it arrives;
4. publish assignment changes (compacted, key = user id, each naming the model version it was
   computed with; a tombstone for a forgotten user), dead letters (original bytes, reason and
   source coordinates in headers), the changed profiles on the profiles changelog and the
   batch's statistics record on the one-partition statistics topic, for the trainer;
5. commit. ``exactly_once`` (default): all of step 4 and the consumed offsets
   (``send_offsets_to_transaction`` with the consumer's group metadata) commit in one
   transaction; if anything fails the transaction aborts, the member rebuilds its state
   from the changelogs and re-reads from the committed offsets. ``at_least_once``:
   outputs are flushed and acknowledged, then offsets are committed.

The model is the group's, not the member's: unless ``trainer_role`` is false, the member also
competes, on a thread of its own, for the trainer role (:mod:`consumers.trainer_role`: a second
consumer group on the statistics topic elects one trainer, which applies every member's
statistics in offset order and commits each new model version, the centroid snapshots and its
consumed offsets in one transaction). A single member is worker and trainer at once, its model
making the round trip through Kafka too. A failure of the trainer role is fatal to the member.

State: at start-up the member reads the model topic to its end (it follows it afterwards); on
every partition assignment it restores exactly the partitions it gained (profiles from the
profiles changelog, last emitted assignments from the assignments topic, both co-partitioned
with the events topic) and drops the users of partitions it lost; it reports ready only
afterwards.

This module is the wiring and the loop; the parts live beside it, each with its reasoning:

- :mod:`consumers.member_clients` — topics, producers, consumers built from the settings;
- :mod:`consumers.kafka_retry` — retrying with backoff, fatal errors;
- :mod:`consumers.partition_state` — owned partitions, restore, the rebuild after a failure;
- :mod:`consumers.batch_outputs` — the records a batch publishes, each in its user's partition;
- :mod:`consumers.batch_committer` — the transaction and the one commit-or-recover policy;
- :mod:`consumers.catalog_follower` — the item catalog;
- :mod:`consumers.model_follower` — the group's model topic;
- :mod:`consumers.trainer_role` — the trainer role: election, takeover, the model's transactions;
- :mod:`consumers.group_watchdog` — a member outside its group gets back in (or out);
- :mod:`consumers.service_metrics` — what the batches tell Prometheus.

Embedding a large batch never gets the member evicted: the batch runs on a helper
thread while the loop pauses its partitions and keeps calling ``poll`` often enough
for ``max.poll.interval.ms``. The item catalog topic is read to its end before the first
event and followed afterwards. SIGTERM/SIGINT finish the batch, flush, commit, leave the
group and exit 0; the trainer role stops at once, writing its state on the way out. An
unreachable broker is retried with capped exponential backoff (logged, counted in
``interest_kafka_retries_total``); failed authentication is fatal at once.

Example (needs a broker, so not run as a doctest)::

    settings = ServiceSettings.load(overrides={"bootstrap_servers": "127.0.0.1:9092"})
    raise SystemExit(InterestService(settings).run())
"""

from __future__ import annotations

import concurrent.futures
import gc
import logging
import signal
import threading
import time
from types import SimpleNamespace
from typing import Any

from consumers.batch_committer import BatchCommitter, Send, dlq_headers, offsets_of
from consumers.batch_outputs import BatchOutputs
from consumers.batch_sizer import BatchSizer, consumer_lag
from consumers.catalog_follower import CatalogFollower
from consumers.group_watchdog import GroupWatchdog, describe_group
from consumers.kafka_config import admin_client
from consumers.kafka_retry import FatalKafkaError, KafkaRetry
from consumers.member_clients import (
    make_events_consumer,
    make_model_reader,
    make_producer,
    set_up_topics,
    transaction_wait_s,
)
from consumers.metrics_server import MetricsServer
from consumers.model_follower import ModelFollower
from consumers.partition_state import PartitionState
from consumers.partitioning import UserPartitioner
from consumers.service_metrics import ServiceObserver
from consumers.settings import ServiceSettings
from consumers.topics import TopicMismatchError
from consumers.trainer_role import BAD_STATISTICS, TrainerRole
from stream.events import RejectReason, decode_event
from stream.metrics import ServiceMetrics

log = logging.getLogger("interest_stream.service")

__all__ = ["FatalKafkaError", "GroupMembershipLost", "InterestService"]


class GroupMembershipLost(RuntimeError):
    """The member stayed outside its consumer group (or idle while partitions had no owner) even after a
    forced rejoin: exit non-zero so the supervisor starts a fresh process."""


class InterestService:
    """One member of the service's consumer group (see the module docstring)."""

    def __init__(self, settings: ServiceSettings, *, metrics: ServiceMetrics | None = None,
                 pipeline=None) -> None:
        s = self.settings = settings
        self.metrics = metrics or ServiceMetrics()
        self._pipeline = pipeline
        self._encoder = pipeline.encoder if pipeline is not None else None
        self._stop = threading.Event()
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch")
        self.server: MetricsServer | None = None
        self.consumer = None
        self.catalog_follower: CatalogFollower | None = None
        self.outputs: BatchOutputs | None = None  # once the events topic's partition count is known
        self.model_follower: ModelFollower | None = None
        self.trainer_role: TrainerRole | None = None
        self.batches = 0
        self.sizer = BatchSizer(base_events=s.batch_max_events, cap_events=s.batch_cap_events,
                                cap_bytes=s.batch_cap_bytes)
        self.retry = KafkaRetry(self.metrics, self._stop, cap_s=s.connect_backoff_max_s)
        self.observer = ServiceObserver(self.metrics)
        self.partitions = PartitionState(s, self.metrics, retry=self.retry, set_ready=self._set_ready,
                                         on_revoked=self.observer.revoked)
        self.committer = BatchCommitter(
            exactly_once=s.processing_guarantee == "exactly_once", make_producer=lambda: make_producer(s),
            consumer=None, metrics=self.metrics, retry=self.retry, transaction_wait_s=transaction_wait_s(s))
        stuck_after = s.group_stuck_timeout_s or max(30.0, 3 * s.session_timeout_ms / 1000.0)
        self.watchdog = GroupWatchdog(stuck_after_s=stuck_after, check_every_s=max(10.0, stuck_after / 2))
        self._sweep: list[str] = []  # users still to re-assess in the current idle sweep
        self._swept_version = -1  # model version the last complete idle sweep used
        self._sweep_version = -1

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
        self.observer.zero_labelled_series([*(r.value for r in RejectReason), "bad_catalog_record", BAD_STATISTICS])
        self.server = MetricsServer(self.metrics, host=s.metrics_host, port=s.metrics_port)
        self.server.add_health_check(self._group_problem)
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
            return 0
        except FatalKafkaError as exc:
            log.error("%s", exc)
            return 2
        except GroupMembershipLost as exc:
            log.error("%s; exiting so that a fresh process joins the group", exc)
            return 3
        finally:
            self._shutdown()

    def _set_ready(self, ready: bool) -> None:
        if self.server is not None:
            self.server.set_ready(ready)

    def _connect(self) -> bool:
        from consumers.kafka_compat import install as install_kafka_fixes

        install_kafka_fixes()  # kafka-python 3.0.x: refused SASL credentials; joins abandoned half-way
        s = self.settings
        opts = s.kafka_client_options()

        def admin_setup() -> int:
            with admin_client(client_id=f"{s.client_id}-admin", **opts) as admin:
                return set_up_topics(s, admin)

        try:
            n_partitions = self.retry.call("connect", admin_setup)
        except TopicMismatchError as exc:
            raise FatalKafkaError(f"topic configuration: {exc}") from exc
        if n_partitions is None:
            return False
        users = UserPartitioner(n_partitions)
        self.partitions.users = users
        profiles, _, statistics = s.changelog_topics()
        topics = SimpleNamespace(profiles=profiles, assignments=s.assignments_topic, centroids=s.centroids_topic,
                                 dead_letters=s.dead_letter_topic, statistics=statistics)
        self.outputs = BatchOutputs(topics, users, writer=s.transactional_id.encode())
        if not self.committer.start():
            return False
        self.catalog_follower = self.retry.call("connect", lambda: CatalogFollower(
            s, self._pipeline.catalog, self._dead_letter_catalog_record))
        if self.catalog_follower is None:
            return False
        t0 = time.monotonic()
        n_items = self.catalog_follower.load_all()
        log.info("item catalog loaded: %d records applied, %d items, %.2f s",
                 n_items, len(self._pipeline.catalog), time.monotonic() - t0)
        self.model_follower = self.retry.call("connect", lambda: ModelFollower(make_model_reader(s)))
        if self.model_follower is None:
            return False
        t0 = time.monotonic()
        self.model_follower.catch_up()
        self._follow_model()
        log.info("model topic read: version %d, %.2f s", self._pipeline.model.version, time.monotonic() - t0)
        if s.trainer_role:
            self.trainer_role = TrainerRole(s, self.metrics, dim=self._pipeline.profiles.dim, stop=self._stop)
            self.trainer_role.start()
        listener = self.partitions.listener()
        self.consumer = self.retry.call("connect", lambda: make_events_consumer(s, listener))
        if self.consumer is None:
            return False
        self.partitions.consumer = self.committer.consumer = self.consumer
        return True

    def _shutdown(self) -> None:
        self._set_ready(False)
        self._stop.set()  # also ends the trainer role (which writes its state on the way out)
        if self.trainer_role is not None:
            self.trainer_role.join()
        for name, closer in (("consumer", lambda: self.consumer and self.consumer.close(autocommit=False)),
                             ("producer", self.committer.close),
                             ("catalog", lambda: self.catalog_follower and self.catalog_follower.close()),
                             ("model reader", lambda: self.model_follower and self.model_follower.close())):
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
            if self.partitions.needs_apply:
                self.partitions.apply_pending(self.consumer, self._pipeline)
                # Users restored here were last assessed by their previous owner, perhaps against an
                # older model version: the next quiet moment sweeps every user again.
                self._restart_sweep()
                continue
            self.catalog_follower.follow(timeout_ms=0)
            self._follow_model()
            if self.committer.pending_dead_letters:
                self._commit([], {})
            # A revocation seen by any poll from here on (including the ones that collect this batch)
            # means some of these records may belong to another member now: see _process.
            rebalances = self.partitions.rebalances
            records = self._collect_batch()
            if records:
                self._process(records, rebalances)
                self.metrics.batch_limit.set(self.sizer.after_batch(consumer_lag(self.consumer)))
            elif not self._stop.is_set():
                self._idle_sweep()
            self.observer.lag(self.consumer)
            self._watch_group()

    def _commit(self, sends: list[Send], offsets: dict) -> list | None:
        """Commit with the committer's policy; on failure rebuild the state from Kafka. The futures, or None."""
        commit = self.committer.commit_or_recover(sends, offsets)
        if commit.failure is not None:
            self._rebuild()
        return commit.futures if commit.ok else None

    def _rebuild(self) -> None:
        """The in-memory state is ahead of Kafka: drop it; the loop restores every owned partition."""
        from stream.pipeline import Pipeline

        self._pipeline = Pipeline(self.settings.clustering, self._encoder, self._pipeline.catalog)
        if self.model_follower is not None and self.model_follower.latest is not None:
            self._pipeline.adopt(self.model_follower.latest)
        self.observer.new_pipeline()
        self._restart_sweep()
        self.partitions.rebuild(self.consumer)

    def _collect_batch(self) -> list:
        s, sizer = self.settings, self.sizer
        records: list = []
        n_bytes = 0
        deadline: float | None = None
        while not self._stop.is_set():
            now = time.monotonic()
            timeout_ms = 200 if deadline is None else max(0, int((deadline - now) * 1000))
            polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=max(1, sizer.limit - len(records)))
            for recs in polled.values():
                records.extend(recs)
                n_bytes += sum(len(r.value) for r in recs if r.value is not None)
            if records and deadline is None:
                deadline = time.monotonic() + s.batch_max_wait_ms / 1000.0
            if not records:
                return records
            if sizer.full(n_records=len(records), n_bytes=n_bytes) or time.monotonic() >= deadline:
                break
        # Within a partition Kafka order is kept; across partitions, order by timestamp for determinism.
        records.sort(key=lambda r: (r.timestamp, r.partition, r.offset))
        return records

    def _process(self, records: list, rebalances: int) -> None:
        """One batch: apply it, publish its outputs and commit its offsets, unless the group rebalanced
        since ``rebalances`` (the count taken before its records were polled)."""
        from stream.worker import SourceRecord

        s = self.settings
        t0 = time.monotonic()
        # Only the owner partition of a user may apply its events (one place for each user's state):
        # a valid event elsewhere is dead-lettered (wrong_partition), never applied here.
        local, misrouted = self.outputs.users.split(records)
        if s.unknown_item_policy == "wait":
            self._wait_for_catalog(local)
        source = [SourceRecord(value=r.value, key=r.key, timestamp_ms=r.timestamp, topic=r.topic,
                               partition=r.partition, offset=r.offset) for r in local]
        now_ms = int(time.time() * 1000)
        out = self._run_batch(source, now_ms)
        # A batch grown under a backlog counts, for the model's half-life and warm-up, as the base batches it holds.
        batches = -(-len(records) // s.batch_max_events)
        sends = self.outputs.misrouted(misrouted) + self.outputs.batch(out, self._pipeline, now_ms, batches=batches)
        if self.partitions.rebalanced_since(rebalances):
            # The group rebalanced while this batch was polled or processed: some of its partitions may
            # be another member's now, and that member restores them from what is committed. Committing
            # here could lose or double events there, so drop the batch and rebuild from Kafka instead.
            log.warning("the group rebalanced during the batch: dropping it and rebuilding state from Kafka")
            self._rebuild()
            return
        futures = self._commit(sends, offsets_of(records))
        if futures is None:
            return  # not committed: rebuilt from Kafka, or stopping while Kafka is unreachable
        publish_ms = time.time() * 1000
        self.metrics.last_commit.set(time.time())
        self.batches += 1
        if misrouted:
            self.metrics.rejected.labels(reason=RejectReason.WRONG_PARTITION.value).inc(len(misrouted))
        self.observer.batch(records, out, self._pipeline, publish_ms, time.monotonic() - t0)

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
        future = self._executor.submit(self._pipeline.process_batch, source, now_ms, train=False)
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

    def _restart_sweep(self) -> None:
        """The next idle moment sweeps every user again, whatever model version the last sweep used."""
        self._sweep, self._swept_version = [], -1
        self.metrics.settled_version.set(-1)

    def _idle_sweep(self, chunk: int = 2000) -> None:
        """While no events arrive, re-assess every user against the current model, a chunk per idle poll.

        Batches only re-check users of clusters that moved, within a budget; once the input goes
        quiet this sweep makes every user's published assignment agree with the final model
        (up to the hysteresis margin). It starts again whenever the model version changed.
        """
        pipe = self._pipeline
        if not pipe.model.is_initialised or not self.partitions.settled:
            return
        stale = pipe.take_stale_profiles(chunk)
        if stale:  # interest mixes a model change altered: their changelog records follow
            if self._commit(self.outputs.profiles(stale, pipe), {}) is None:
                return
        if not self._sweep:
            if self._swept_version == pipe.model.version:
                return
            self._sweep = list(pipe.profiles.user_ids())
            self._sweep_version = pipe.model.version
        users, self._sweep = self._sweep[:chunk], self._sweep[chunk:]
        changes = pipe.reassess(users, int(time.time() * 1000))
        if changes:
            if self._commit(self.outputs.changes(changes), {}) is None:
                return
            self.metrics.changes.inc(len(changes))
            self.observer.clusters(pipe)
        if not self._sweep:
            self._swept_version = self._sweep_version
            self.metrics.settled_version.set(self._swept_version)

    def _dead_letter_catalog_record(self, rec, reason: str, detail: str) -> None:
        """A bad item catalog record: dead-lettered with the next commit (never dropped by a failed one)."""
        self.committer.dead_letter(reason, Send(self.settings.dead_letter_topic, rec.key, rec.value or b"",
                                                dlq_headers(rec.topic, rec.partition, rec.offset, reason, detail)))

    def _follow_model(self) -> None:
        """Between batches: adopt the newest model version the trainer committed (see the module docstring)."""
        follower, pipe, m = self.model_follower, self._pipeline, self.metrics
        if self.trainer_role is not None and self.trainer_role.fatal is not None:
            exc = self.trainer_role.fatal
            raise exc if isinstance(exc, FatalKafkaError) else RuntimeError(f"the trainer role failed: {exc}")
        latest = follower.poll()
        # How far behind the newest committed version this member assessed its last batch.
        m.versions_behind.set(max(0, follower.newest_version - pipe.model.version))
        if latest is not None and pipe.adopt(latest):
            m.model_version.set(pipe.model.version)
        m.model_age.set(follower.age_s())

    # ----------------------------------------------------------------- group membership
    def _watch_group(self) -> None:
        """Ask the coordinator whether this member really is in the group (consumers/group_watchdog.py);
        force a rejoin when it has been stuck for the bound, exit when that did not help either."""
        dog, s = self.watchdog, self.settings
        owned = 1 if not self.partitions.settled else len(self.consumer.assignment())
        if not dog.due(owned):
            return
        try:
            view = self._describe_group()
            member_id = self.consumer.group_metadata().member_id
        except Exception as exc:  # the broker may be unreachable: the retry paths deal with that
            dog.last_check = time.monotonic()
            log.debug("group watchdog: describe failed: %s", exc)
            return
        action = dog.observe(view, member_id, owned)
        self.metrics.group_stuck_seconds.set(dog.stuck_for())
        if action == "rejoin":
            self.metrics.group_recoveries.labels(action="rejoin").inc()
            log.warning("consumer group: %s for %.0f s; forcing a rejoin", dog.reason, dog.stuck_for())
            self.consumer.unsubscribe()
            self.consumer.subscribe([s.events_topic], listener=self.partitions.listener())
        elif action == "exit":
            self.metrics.group_recoveries.labels(action="exit").inc()
            raise GroupMembershipLost(f"consumer group: {dog.reason} for {dog.stuck_for():.0f} s, a rejoin did not help")

    def _describe_group(self):
        """The coordinator's view of the group, from a short-lived admin client: a check runs every few
        seconds at most, and an idle admin client kept open costs its network thread's wake-ups on every
        batch (measured: about 10 % of the exactly-once throughput on 2 cores)."""
        s = self.settings
        options = {"bootstrap_timeout_ms": 5000, "request_timeout_ms": 5000, **s.kafka_client_options()}
        with admin_client(client_id=f"{s.client_id}-watchdog", **options) as admin:
            return describe_group(admin, s.group_id, s.events_topic, self.outputs.users.n_partitions)

    def _group_problem(self) -> str | None:
        """For /healthz: why this member is unhealthy from the group's point of view, or None."""
        if self.watchdog.healthy():
            return None
        return f"stuck: {self.watchdog.reason} for {self.watchdog.stuck_for():.0f} s"
