"""Kafka client plumbing shared by every command and the service: where the cluster is, which errors
are final, how long to wait before trying again.

**Where the cluster is** (:func:`resolve_bootstrap`), one rule for every command: the
``--bootstrap-servers`` option, else ``INTEREST_STREAM_BOOTSTRAP_SERVERS``, else
``KAFKA_BOOTSTRAP_SERVERS``, else the live broker of ``interest-stream broker start``; else None,
and the command decides (``run``, ``produce``, ``forget``: exit 2 saying how to name one;
``inspect``, ``report``: ``localhost:9092``; ``demo``: start a throw-away broker). ``run`` also
reads ``bootstrap_servers`` from its ``--config`` file, which ranks after
``INTEREST_STREAM_BOOTSTRAP_SERVERS`` like every setting. :func:`bootstrap_from_env` reads
``KAFKA_BOOTSTRAP_SERVERS`` alone: the test fixtures and benchmarks take it to mean "an external
cluster: start nothing".

**Which errors are final** (:func:`is_fatal`): refused credentials and missing permissions
(:data:`FATAL_ERROR_NAMES`); retrying cannot fix them. Everything else is worth a retry.

**How long to wait** (:class:`Backoff`): capped exponential backoff with jitter.

Example::

    >>> resolve_bootstrap(" a:1, b:2 ", {}, dev_broker=False)
    'a:1,b:2'
    >>> env = {"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "INTEREST_STREAM_BOOTSTRAP_SERVERS": " i:9092 "}
    >>> resolve_bootstrap(None, env, dev_broker=False), configured_bootstrap(env)
    ('i:9092', ('INTEREST_STREAM_BOOTSTRAP_SERVERS', 'i:9092'))
    >>> resolve_bootstrap("", {}, dev_broker=False) is None
    True
    >>> from kafka.errors import SaslAuthenticationFailedError, KafkaTimeoutError
    >>> is_fatal(SaslAuthenticationFailedError()), is_fatal(KafkaTimeoutError())
    (True, False)
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
from collections.abc import Iterator, Mapping
from typing import Any

BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP_SERVERS"
SERVICE_BOOTSTRAP_ENV = "INTEREST_STREAM_BOOTSTRAP_SERVERS"
#: The environment variables that name the cluster, first one set wins.
BOOTSTRAP_ENVS = (SERVICE_BOOTSTRAP_ENV, BOOTSTRAP_ENV)

#: For ``--help`` texts: where a command looks when ``--bootstrap-servers`` is not given.
BOOTSTRAP_DEFAULTS = (
    f"${SERVICE_BOOTSTRAP_ENV}, else ${BOOTSTRAP_ENV}, else the broker of `interest-stream broker start`"
)
#: For error messages: how to tell a command where the cluster is.
NO_CLUSTER_HINT = (
    f"pass --bootstrap-servers, set {SERVICE_BOOTSTRAP_ENV} or {BOOTSTRAP_ENV}, "
    "or start a local broker with `interest-stream broker start`"
)


def bootstrap_help(otherwise: str) -> str:
    """The ``--bootstrap-servers`` help of a command that does ``otherwise`` when nothing names a cluster."""
    return f"Kafka bootstrap servers host:port[,host:port]. Default: {BOOTSTRAP_DEFAULTS}, else {otherwise}."


def normalise_servers(raw: str | None) -> str | None:
    """``" a:1, b:2 "`` -> ``"a:1,b:2"``; None for None or a blank string."""
    servers = [part.strip() for part in (raw or "").split(",") if part.strip()]
    return ",".join(servers) or None


def bootstrap_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """The bootstrap servers named by ``KAFKA_BOOTSTRAP_SERVERS`` (spaces removed), or None if unset/empty."""
    env = os.environ if environ is None else environ
    return normalise_servers(env.get(BOOTSTRAP_ENV))


def configured_bootstrap(environ: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """``(variable, servers)`` of the first of :data:`BOOTSTRAP_ENVS` that is set and not blank."""
    env = os.environ if environ is None else environ
    for name in BOOTSTRAP_ENVS:
        servers = normalise_servers(env.get(name))
        if servers:
            return name, servers
    return None


def running_dev_broker() -> str | None:
    """Bootstrap servers of the broker ``interest-stream broker start`` recorded, if it is alive."""
    from consumers import devbroker

    try:
        broker = devbroker.load_state()
        if broker is not None and broker.is_alive():
            return broker.bootstrap_servers
    except (OSError, ValueError, KeyError, TypeError):  # an unreadable or half-written state file
        return None
    return None


def resolve_bootstrap(
    option: str | None = None, environ: Mapping[str, str] | None = None, *, dev_broker: bool = True
) -> str | None:
    """Where the cluster is: ``option``, else ``INTEREST_STREAM_BOOTSTRAP_SERVERS``, else
    ``KAFKA_BOOTSTRAP_SERVERS``, else (with ``dev_broker``) the live ``broker start`` broker, else None.

    Blank values count as unset; the result has no spaces (``"a:1,b:2"``).
    """
    explicit = normalise_servers(option)
    if explicit:
        return explicit
    configured = configured_bootstrap(environ)
    if configured:
        return configured[1]
    return running_dev_broker() if dev_broker else None


@contextlib.contextmanager
def admin_client(bootstrap_servers: str, client_id: str, **options: Any) -> Iterator[Any]:
    """A ``KafkaAdminClient`` for the ``with`` block, closed after it."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id=client_id, **options)
    try:
        yield admin
    finally:
        admin.close()


# --------------------------------------------------------------------------------- final errors

#: kafka-python errors that retrying cannot fix: refused credentials, a SASL mechanism the broker
#: does not offer, missing ACLs. Names absent from the installed kafka-python are skipped
#: (``AuthenticationFailedError`` is 2.x's; ``AuthorizationError`` is 3.x's base of every
#: ``*AuthorizationFailedError``; the subclasses stay listed for versions without that base).
FATAL_ERROR_NAMES = (
    "AuthenticationFailedError",
    "SaslAuthenticationFailedError",
    "UnsupportedSaslMechanismError",
    "IllegalSaslStateError",
    "AuthorizationError",
    "TopicAuthorizationFailedError",
    "GroupAuthorizationFailedError",
    "ClusterAuthorizationFailedError",
    "TransactionalIdAuthorizationFailedError",
)


@functools.cache
def fatal_error_types() -> tuple[type[BaseException], ...]:
    """The classes of :data:`FATAL_ERROR_NAMES` that the installed kafka-python has."""
    from kafka import errors

    return tuple(getattr(errors, name) for name in FATAL_ERROR_NAMES if hasattr(errors, name))


def is_fatal(exc: BaseException) -> bool:
    """Whether ``exc`` is a Kafka error that retrying cannot fix (authentication, authorisation)."""
    return isinstance(exc, fatal_error_types())


# ---------------------------------------------------------------------------------------- retries


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
