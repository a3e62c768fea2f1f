"""Prometheus metric definitions of the service.

One :class:`ServiceMetrics` object owns every metric on its own registry, so tests can
build several side by side. Names follow Prometheus rules (``interest_`` prefix, base
units, ``_total`` for counters) and no metric carries a user id as a label: the only
labels are bounded sets (reason, cluster id, topic/partition, operation).

Example:

>>> m = ServiceMetrics()
>>> m.events_consumed.inc(3)
>>> m.rejected.labels(reason="not_json").inc()
>>> b"interest_events_consumed_total 3.0" in m.exposition()
True
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

#: Latency buckets (seconds) for end-to-end latency: 5 ms .. 2 min.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1, 2, 5, 10, 30, 60, 120)
#: Buckets (seconds) for per-batch work such as embedding.
WORK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
#: Buckets (events) for micro-batch sizes.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
#: Buckets (interests) for the interests in a user's published record.
INTEREST_BUCKETS = (0, 1, 2, 3, 4, 6, 8, 16)

#: Every metric name the service exports, with its meaning (used by the README and the
#: deployment tests, which check that dashboards and alert rules only use names that exist).
METRIC_HELP: dict[str, str] = {
    "interest_events_consumed_total": "Input records read from the events topic.",
    "interest_events_applied_total": "Behaviour events folded into a user profile.",
    "interest_events_rejected_total": "Input records sent to the dead-letter topic, by reason.",
    "interest_users_forgotten_total": "Forget control events applied (profile removed, tombstone published).",
    "interest_batch_size_events": "Events per micro-batch.",
    "interest_batch_limit_events": "Record limit of the next micro-batch (grows under a backlog, up to batch_cap_events).",
    "interest_batch_duration_seconds": "Wall time to process one micro-batch, poll to commit.",
    "interest_embed_duration_seconds": "Wall time spent embedding per micro-batch.",
    "interest_embed_cache_hits_total": "Embedding lookups answered by the cache.",
    "interest_embed_cache_misses_total": "Embedding lookups that ran the model.",
    "interest_texts_truncated_total": "Texts longer than the model's window, truncated.",
    "interest_end_to_end_latency_seconds": "Publish time minus event time of applied events.",
    "interest_consumer_lag_messages": "High-water mark minus position, per topic partition.",
    "interest_assignment_changes_total": "Assignment-change records published.",
    "interest_interests_per_user": "Interests (clusters holding at least min_interest_share of the user's decayed events) in each published assignment record.",
    "interest_interest_set_changes_total": "Assignment records published because a user's interest set changed (a cluster entered or left it).",
    "interest_users_tracked": "Users with a profile held by this process.",
    "interest_cluster_size_users": "Users whose last published assignment is this cluster.",
    "interest_centroid_movement": "Cosine distance a centroid moved in the last model update, per cluster.",
    "interest_model_version": "Version of the clustering model (increments per update).",
    "interest_last_commit_timestamp_seconds": "Unix time of the last successful offset commit.",
    "interest_kafka_retries_total": "Kafka operations retried after an error, by operation.",
    "interest_kafka_connected": "1 while the Kafka clients are connected, 0 while retrying.",
    "interest_restore_progress_ratio": "Progress of the state restore on partition assignment (0..1).",
    "interest_restore_duration_seconds": "Duration of the last state restore.",
    "interest_ready": "1 once state is loaded and partitions are assigned.",
    "interest_restore_stray_records_total": "Restored records skipped: their partition does not own their key (the owner partition's record wins), by topic.",
    "interest_group_stuck_seconds": "How long this member has been outside the consumer group, or without partitions while some are unowned (0 when fine).",
    "interest_group_recoveries_total": "Recoveries from a stuck consumer-group membership, by action (rejoin, exit).",
    "interest_trainer_role": "1 while this member is the group's trainer (owns the statistics partition), else 0.",
    "interest_trainer_statistics_lag_records": "On the trainer: statistics records written but not yet applied.",
    "interest_trainer_statistics_applied_total": "Statistics records this member applied as the trainer.",
    "interest_trainer_takeovers_total": "Times this member took the trainer role (restored the model and continued).",
    "interest_model_versions_published_total": "Model versions this member published as the trainer.",
    "interest_model_staleness_seconds": "On the trainer: time from a worker building a statistics record to the commit of the model version that includes it.",
    "interest_model_versions_behind": "Newest model version seen on the model topic minus the version this member assigns with.",
    "interest_model_version_age_seconds": "Seconds since the newest model version this member has seen was published.",
    "interest_assignments_settled_version": "Model version the last complete idle sweep re-assessed every user of this member against (-1 before one): equal to interest_model_version once the published assignments agree with the current model.",
}


class ServiceMetrics:
    """Every Prometheus metric of one service process, on a private registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        h = METRIC_HELP
        # prometheus_client appends _total to counters itself: give it the base name.
        self.events_consumed = Counter("interest_events_consumed", h["interest_events_consumed_total"], registry=r)
        self.events_applied = Counter("interest_events_applied", h["interest_events_applied_total"], registry=r)
        self.rejected = Counter(
            "interest_events_rejected", h["interest_events_rejected_total"], ["reason"], registry=r
        )
        self.forgotten = Counter("interest_users_forgotten", h["interest_users_forgotten_total"], registry=r)
        self.batch_size = Histogram(
            "interest_batch_size_events", h["interest_batch_size_events"], buckets=BATCH_BUCKETS, registry=r
        )
        self.batch_limit = Gauge("interest_batch_limit_events", h["interest_batch_limit_events"], registry=r)
        self.batch_seconds = Histogram(
            "interest_batch_duration_seconds", h["interest_batch_duration_seconds"], buckets=WORK_BUCKETS, registry=r
        )
        self.embed_seconds = Histogram(
            "interest_embed_duration_seconds", h["interest_embed_duration_seconds"], buckets=WORK_BUCKETS, registry=r
        )
        self.cache_hits = Counter("interest_embed_cache_hits", h["interest_embed_cache_hits_total"], registry=r)
        self.cache_misses = Counter("interest_embed_cache_misses", h["interest_embed_cache_misses_total"], registry=r)
        self.truncated = Counter("interest_texts_truncated", h["interest_texts_truncated_total"], registry=r)
        self.latency = Histogram(
            "interest_end_to_end_latency_seconds",
            h["interest_end_to_end_latency_seconds"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.lag = Gauge(
            "interest_consumer_lag_messages", h["interest_consumer_lag_messages"], ["topic", "partition"], registry=r
        )
        self.changes = Counter("interest_assignment_changes", h["interest_assignment_changes_total"], registry=r)
        self.interests_per_user = Histogram(
            "interest_interests_per_user", h["interest_interests_per_user"], buckets=INTEREST_BUCKETS, registry=r
        )
        self.interest_set_changes = Counter(
            "interest_interest_set_changes", h["interest_interest_set_changes_total"], registry=r
        )
        self.users = Gauge("interest_users_tracked", h["interest_users_tracked"], registry=r)
        self.cluster_size = Gauge(
            "interest_cluster_size_users", h["interest_cluster_size_users"], ["cluster"], registry=r
        )
        self.movement = Gauge("interest_centroid_movement", h["interest_centroid_movement"], ["cluster"], registry=r)
        self.model_version = Gauge("interest_model_version", h["interest_model_version"], registry=r)
        self.last_commit = Gauge(
            "interest_last_commit_timestamp_seconds", h["interest_last_commit_timestamp_seconds"], registry=r
        )
        self.kafka_retries = Counter(
            "interest_kafka_retries", h["interest_kafka_retries_total"], ["operation"], registry=r
        )
        self.kafka_connected = Gauge("interest_kafka_connected", h["interest_kafka_connected"], registry=r)
        self.restore_progress = Gauge(
            "interest_restore_progress_ratio", h["interest_restore_progress_ratio"], registry=r
        )
        self.restore_seconds = Gauge(
            "interest_restore_duration_seconds", h["interest_restore_duration_seconds"], registry=r
        )
        self.ready = Gauge("interest_ready", h["interest_ready"], registry=r)
        self.restore_strays = Counter(
            "interest_restore_stray_records", h["interest_restore_stray_records_total"], ["topic"], registry=r
        )
        self.group_stuck_seconds = Gauge("interest_group_stuck_seconds", h["interest_group_stuck_seconds"], registry=r)
        self.group_recoveries = Counter(
            "interest_group_recoveries", h["interest_group_recoveries_total"], ["action"], registry=r
        )

        self.trainer_role = Gauge("interest_trainer_role", h["interest_trainer_role"], registry=r)
        self.trainer_lag = Gauge(
            "interest_trainer_statistics_lag_records", h["interest_trainer_statistics_lag_records"], registry=r
        )
        self.trainer_applied = Counter(
            "interest_trainer_statistics_applied", h["interest_trainer_statistics_applied_total"], registry=r
        )
        self.trainer_takeovers = Counter("interest_trainer_takeovers", h["interest_trainer_takeovers_total"], registry=r)
        self.versions_published = Counter(
            "interest_model_versions_published", h["interest_model_versions_published_total"], registry=r
        )
        self.model_staleness = Histogram(
            "interest_model_staleness_seconds", h["interest_model_staleness_seconds"], buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.versions_behind = Gauge("interest_model_versions_behind", h["interest_model_versions_behind"], registry=r)
        self.model_age = Gauge("interest_model_version_age_seconds", h["interest_model_version_age_seconds"], registry=r)
        self.settled_version = Gauge(
            "interest_assignments_settled_version", h["interest_assignments_settled_version"], registry=r
        )
        self.settled_version.set(-1)

    def exposition(self) -> bytes:
        """The text exposition format of every metric (what ``/metrics`` serves)."""
        return generate_latest(self.registry)
