"""Where the Kafka cluster is: the ``KAFKA_BOOTSTRAP_SERVERS`` environment variable.

Every part of the running system (CLI commands, the demo, the test fixtures) asks here first; only
when the variable is unset does it start or reuse a local development broker
(:func:`consumers.devbroker.bootstrap_servers_or_start`).

Example::

    >>> bootstrap_from_env({"KAFKA_BOOTSTRAP_SERVERS": " 10.0.0.5:9092, 10.0.0.6:9092 "})
    '10.0.0.5:9092,10.0.0.6:9092'
    >>> bootstrap_from_env({}) is None
    True
"""

from __future__ import annotations

import os
from collections.abc import Mapping

BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP_SERVERS"


def bootstrap_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """The bootstrap servers named by ``KAFKA_BOOTSTRAP_SERVERS`` (spaces removed), or None if unset/empty."""
    env = os.environ if environ is None else environ
    raw = env.get(BOOTSTRAP_ENV, "")
    servers = [part.strip() for part in raw.split(",") if part.strip()]
    return ",".join(servers) or None
