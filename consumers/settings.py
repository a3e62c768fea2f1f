"""Settings of the streaming service: flags, ``INTEREST_STREAM_*`` variables, a TOML file.

Precedence, highest first: command-line flags, environment variables
(``INTEREST_STREAM_<FIELD>``, nested clustering fields as
``INTEREST_STREAM_CLUSTERING__<FIELD>``), the TOML config file (``--config``),
defaults. Everything is validated at start-up; an invalid value fails with a message
that names the setting.

Kafka client settings pass through unchanged to kafka-python in the ``[kafka]`` table
of the config file, ``INTEREST_STREAM_KAFKA='{"security_protocol": "SASL_SSL", ...}'``
or ``--kafka-option security_protocol=SASL_SSL``. Java-style dotted names
(``sasl.mechanism``) are accepted and translated. Secrets are never logged: see
:meth:`ServiceSettings.redacted`.

Example:

>>> s = ServiceSettings.load(overrides={"bootstrap_servers": "localhost:9092",
...                                     "kafka": {"sasl.plain.password": "hunter2"}})
>>> s.kafka
{'sasl_plain_password': 'hunter2'}
>>> s.redacted()["kafka"]
{'sasl_plain_password': '***'}
"""

from __future__ import annotations

import os
import socket
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from stream.settings import ClusteringSettings

ENV_PREFIX = "INTEREST_STREAM_"
_SECRET_WORDS = ("password", "secret", "token", "jaas", "credential")


def normalise_kafka_options(options: dict[str, Any]) -> dict[str, Any]:
    """Translate Java-style names (``security.protocol``) to kafka-python's (``security_protocol``)."""
    return {str(k).replace(".", "_").replace("-", "_"): v for k, v in options.items()}


def parse_kafka_options(pairs: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``KEY=VALUE`` flags to kafka-python settings: dotted names translated, ints and booleans converted.

    >>> parse_kafka_options(["security.protocol=SASL_SSL", "request_timeout_ms=5000", "ssl_check_hostname=false"])
    {'security_protocol': 'SASL_SSL', 'request_timeout_ms': 5000, 'ssl_check_hostname': False}
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"expected KEY=VALUE, got {pair!r}")
        parsed: Any = value
        if value.lower() in ("true", "false"):
            parsed = value.lower() == "true"
        elif value.lstrip("-").isdigit():
            parsed = int(value)
        out[key.strip()] = parsed
    return normalise_kafka_options(out)


def is_secret(name: str) -> bool:
    """Whether a setting name holds a secret that must not be logged."""
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


class ServiceSettings(BaseSettings):
    """Everything ``interest-stream run`` can be told."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    # --- Kafka ------------------------------------------------------------------------
    bootstrap_servers: str = Field(
        "", description="Kafka bootstrap servers, host:port[,host:port]. Falls back to KAFKA_BOOTSTRAP_SERVERS."
    )
    group_id: str = Field("interest-stream", description="Consumer group of the service's members.")
    client_id: str = Field("interest-stream", description="Client id prefix of the Kafka clients.")
    kafka: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra kafka-python client settings (SASL/SSL, timeouts), passed to every client.",
    )
    processing_guarantee: Literal["exactly_once", "at_least_once"] = Field(
        "exactly_once",
        description="exactly_once: outputs, changelogs and offsets commit in one Kafka transaction. "
        "at_least_once: faster; outputs are flushed before offsets commit, so a crash can repeat a batch.",
    )
    max_poll_interval_ms: int = Field(300_000, ge=10_000, description="Kafka max.poll.interval.ms.")
    session_timeout_ms: int = Field(10_000, ge=1_000, description="Kafka session.timeout.ms.")
    connect_backoff_max_s: float = Field(
        30.0, gt=0, description="Longest wait between retries while Kafka is unreachable."
    )
    group_stuck_timeout_s: float = Field(
        0.0, ge=0, description="How long the member may stay outside its consumer group, or own no partitions while "
        "some belong to no member, before it forces a rejoin (and, after as long again, exits with code 3 so the "
        "supervisor restarts it). 0: three session timeouts, at least 30 s.",
    )

    # --- topics -----------------------------------------------------------------------
    events_topic: str = Field("events", description="Input topic of behaviour events (key = user id).")
    assignments_topic: str = Field("assignments", description="Compacted output topic of assignment changes.")
    centroids_topic: str = Field("centroids", description="Compacted output topic of centroid snapshots.")
    dead_letter_topic: str = Field("dead-letters", description="Output topic of rejected input.")
    items_topic: str = Field("items", description="Compacted input topic of the item catalog (key = item id).")
    events_partitions: int = Field(6, ge=1, description="Partitions of the events topic when it is created.")
    centroids_partitions: int = Field(1, ge=1, description="Partitions of the centroids topic when created.")
    dead_letter_partitions: int = Field(3, ge=1, description="Partitions of the dead-letter topic when created.")
    items_partitions: int = Field(3, ge=1, description="Partitions of the items topic when created.")
    replication_factor: int = Field(1, ge=1, description="Replication factor of topics the service creates.")
    create_topics: bool = Field(True, description="Create missing topics at start-up (existing ones are checked).")

    # --- micro-batches ----------------------------------------------------------------
    batch_max_events: int = Field(512, ge=1, le=100_000, description="Largest micro-batch, in records.")
    batch_max_wait_ms: int = Field(
        50, ge=0, description="Longest wait for a micro-batch to fill once its first record arrived."
    )
    unknown_item_policy: Literal["dead_letter", "wait"] = Field(
        "dead_letter",
        description="Events naming an item not in the catalog: dead-letter them, or wait for the catalog.",
    )
    unknown_item_wait_ms: int = Field(
        5_000, ge=0, description="With unknown_item_policy=wait: how long to wait before dead-lettering."
    )

    # --- state ---------------------------------------------------------------------------
    instance_id: str = Field(
        default_factory=lambda: socket.gethostname(),
        description="Stable identity of this member (default: the host name). The transactional id is "
        "<group_id>-<instance_id>: a restarted member with the same id fences its predecessor at once.",
    )
    profiles_changelog_topic: str = Field(
        "", description="Compacted changelog of user profiles (key = user id); default: <group_id>-profiles-changelog."
    )
    model_topic: str = Field(
        "", description="Compacted topic of the group's shared model: the versions every member follows and the "
        "trainer's own state; default: <group_id>-model."
    )
    statistics_topic: str = Field(
        "", description="One-partition log of every batch's model statistics, which the trainer applies in order "
        "(delete policy, 7 days); default: <group_id>-statistics."
    )
    trainer_role: bool = Field(
        True, description="Whether this member may hold the trainer role (the group elects one of the members "
        "that may). Members that may not are workers only."
    )
    model_snapshot_every: int = Field(
        100, ge=1, description="The trainer writes its whole state (about 3 MB) to the model topic every this many "
        "model transactions and on a clean stop; in between, the statistics log rebuilds it exactly."
    )
    trainer_max_records: int = Field(
        500, ge=1, description="Most statistics records the trainer applies in one transaction."
    )
    trainer_linger_ms: int = Field(
        250, ge=0, description="Once statistics arrive, how long the trainer keeps collecting more before it "
        "applies them and commits one model transaction (fewer, larger transactions; adds to the model's staleness)."
    )
    transaction_timeout_ms: int = Field(
        10_000, ge=1_000, description="Kafka transaction.timeout.ms of the exactly-once producer: how long a "
        "crashed member's open transaction can hold back read_committed readers of its partitions."
    )
    max_request_size: int = Field(
        16 * 1024 * 1024, ge=1024 * 1024, description="Largest record the producer sends (the model record is a few MB)."
    )

    # --- HTTP -------------------------------------------------------------------------
    metrics_host: str = Field("0.0.0.0", description="Bind address of /metrics, /healthz and /readyz.")
    metrics_port: int = Field(9108, ge=0, le=65535, description="Port of /metrics, /healthz, /readyz (0: any).")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")

    # --- clustering -------------------------------------------------------------------
    clustering: ClusteringSettings = Field(
        default_factory=ClusteringSettings, description="Clustering settings (see `replay --help`)."
    )

    _config_file: Path | None = None

    @field_validator("kafka", mode="before")
    @classmethod
    def _normalise_kafka(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return normalise_kafka_options(value)
        return value

    @model_validator(mode="after")
    def _bootstrap_fallback(self) -> ServiceSettings:
        if not self.bootstrap_servers:
            from consumers.kafka_config import bootstrap_from_env

            self.bootstrap_servers = bootstrap_from_env() or ""
        if not self.bootstrap_servers:
            raise ValueError(
                "no Kafka bootstrap servers: pass --bootstrap-servers, or set INTEREST_STREAM_BOOTSTRAP_SERVERS "
                "or KAFKA_BOOTSTRAP_SERVERS (start a local broker with `interest-stream broker start`)"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # init kwargs (flags, merged over the config file by `load`) win over the environment.
        return (init_settings, env_settings)

    @classmethod
    def load(cls, config_file: Path | None = None, overrides: dict[str, Any] | None = None) -> ServiceSettings:
        """Build settings from a TOML file, the environment and explicit overrides (flags).

        Flags beat environment variables, which beat the file. Only overrides that are
        not None count, so a CLI can pass every option unconditionally.
        """
        file_values: dict[str, Any] = {}
        if config_file is not None:
            with open(config_file, "rb") as fh:
                file_values = tomllib.load(fh)
        env_names = {k[len(ENV_PREFIX) :].lower().split("__")[0] for k in os.environ if k.startswith(ENV_PREFIX)}
        # File values only where the environment says nothing (env beats file).
        merged: dict[str, Any] = {k: v for k, v in file_values.items() if k not in env_names}
        for key, value in (overrides or {}).items():
            if value is None:
                continue
            if key == "clustering" and isinstance(value, dict):
                base = dict(merged.get("clustering", {}))
                base.update({k: v for k, v in value.items() if v is not None})
                merged["clustering"] = base
            elif key == "kafka" and isinstance(value, dict):
                base = dict(merged.get("kafka", {}))
                base.update(value)
                merged["kafka"] = base
            else:
                merged[key] = value
        settings = cls(**merged)
        settings._config_file = config_file
        return settings

    def changelog_topics(self) -> tuple[str, str, str]:
        """The profiles changelog, the model topic and the statistics topic (defaults derived from the group id)."""
        return (self.profiles_changelog_topic or f"{self.group_id}-profiles-changelog",
                self.model_topic or f"{self.group_id}-model",
                self.statistics_topic or f"{self.group_id}-statistics")

    @property
    def trainer_group_id(self) -> str:
        """The consumer group whose owner of the statistics partition is the trainer."""
        return f"{self.group_id}-trainer"

    @property
    def trainer_transactional_id(self) -> str:
        """Fixed for the group: a new trainer's producer fences the previous one (a zombie) at once."""
        return f"{self.group_id}-trainer"

    @property
    def transactional_id(self) -> str:
        return f"{self.group_id}-{self.instance_id}"

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict with every secret replaced by ``***`` (safe to log)."""
        data = self.model_dump()
        data["kafka"] = {k: ("***" if is_secret(k) else v) for k, v in self.kafka.items()}
        return data

    def kafka_client_options(self) -> dict[str, Any]:
        """Options common to every kafka-python client: bootstrap, client id and the pass-through ones."""
        return {"bootstrap_servers": self.bootstrap_servers.split(","), **self.kafka}
