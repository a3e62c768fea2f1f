"""Retrying Kafka operations: capped exponential backoff, one table of fatal errors, a stop switch.

Every Kafka call the service makes outside a batch's transaction (connecting, creating
clients, restoring state, producing at-least-once, committing offsets) goes through
:meth:`KafkaRetry.call`:

- an error that retrying cannot fix (:func:`consumers.kafka_config.is_fatal`: refused
  credentials, missing ACLs) becomes :class:`FatalKafkaError` at once, with a message that
  says what to check; the service exits 2 on it;
- any other error is logged, counted in ``interest_kafka_retries_total{operation}``, and
  retried after a :class:`~consumers.kafka_config.Backoff` delay (0.5 s doubling up to
  ``cap``); ``interest_kafka_connected`` is 0 meanwhile;
- a stop request ends the waiting: :meth:`KafkaRetry.call` then returns ``None``.

Example (an operation that fails twice, then succeeds):

>>> import threading
>>> from stream.metrics import ServiceMetrics
>>> attempts = []
>>> def flaky():
...     attempts.append(1)
...     if len(attempts) < 3:
...         raise ConnectionError("broker not reachable yet")
...     return "done"
>>> retry = KafkaRetry(ServiceMetrics(), threading.Event(), cap_s=0.01, first_s=0.001)
>>> retry.call("connect", flaky), len(attempts)
('done', 3)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from consumers.kafka_config import Backoff, is_fatal
from stream.metrics import ServiceMetrics

log = logging.getLogger("interest_stream.service")

__all__ = ["FatalKafkaError", "KafkaRetry", "call"]

T = TypeVar("T")


class FatalKafkaError(RuntimeError):
    """A Kafka error that retrying cannot fix (bad credentials, authorisation)."""


class KafkaRetry:
    """Calls an operation until it succeeds, backing off between attempts (see the module docstring)."""

    def __init__(self, metrics: ServiceMetrics, stop: threading.Event, *, cap_s: float = 30.0,
                 first_s: float = 0.5) -> None:
        self.metrics = metrics
        self.stop = stop
        self.cap_s, self.first_s = cap_s, first_s

    def call(self, operation: str, fn: Callable[[], T]) -> T | None:
        """``fn()``, retried on retriable errors; None if a stop was requested while waiting."""
        backoff = Backoff(cap=self.cap_s, first=self.first_s)
        while True:
            try:
                result = fn()
                self.metrics.kafka_connected.set(1)
                return result
            except FatalKafkaError:
                raise
            except Exception as exc:
                if is_fatal(exc):
                    raise fatal(operation, exc) from exc
                self.metrics.kafka_connected.set(0)
                self.metrics.kafka_retries.labels(operation=operation).inc()
                delay = backoff.next_delay()
                log.warning("Kafka %s failed (%s: %s); retrying in %.1f s", operation, type(exc).__name__, exc, delay)
                if self.stop.wait(delay):
                    return None


def call(retry: KafkaRetry | None, operation: str, fn: Callable[[], T]) -> T | None:
    """``retry.call(operation, fn)``, or ``fn()`` once when there is no retry policy (tests, doctests)."""
    return fn() if retry is None else retry.call(operation, fn)


def fatal(operation: str, exc: BaseException) -> FatalKafkaError:
    """The :class:`FatalKafkaError` for a refused ``operation``, saying what to check."""
    return FatalKafkaError(
        f"Kafka refused {operation}: {type(exc).__name__}: {exc} — authentication or authorisation failed; "
        "check the credentials and ACLs (sasl_plain_username / sasl_plain_password / security_protocol)"
    )
