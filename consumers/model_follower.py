"""Every member follows the group's model topic and keeps the newest model version.

The reader is assigned partition 0 of the compacted model topic (no consumer group: every
member reads everything), ``read_committed``, so it only ever sees versions whose trainer
transaction committed. :meth:`ModelFollower.catch_up` reads to the end offset at start-up
(the member is not ready before); :meth:`ModelFollower.poll` picks up what arrived since,
without waiting, at batch boundaries. The service adopts the newest version between batches
(:meth:`stream.pipeline.Pipeline.adopt`).

Records other than versions (the trainer's own state) are skipped; a version record that
does not decode is logged and skipped (counted in ``bad_records``), never applied.

Example (a fake reader holding two versions and the trainer's state):

>>> import numpy as np
>>> from types import SimpleNamespace as NS
>>> from stream.shared_model import ModelVersion, encode_model_version
>>> def version(v):
...     return encode_model_version(ModelVersion(version=v, n_applied=v, centroids=np.eye(2, dtype="<f4").tobytes(),
...                                              dim=2, counts=np.ones(2).tobytes()))
>>> class Reader:
...     def __init__(self, batches): self.batches = batches
...     def poll(self, timeout_ms=0, max_records=None):
...         return {"tp": [NS(key=k, value=v) for k, v in self.batches.pop(0)]} if self.batches else {}
>>> follower = ModelFollower(Reader([[(b"version", version(1)), (b"trainer", b"..."), (b"version", version(4))]]))
>>> follower.poll().version, follower.poll().version, follower.newest_version
(4, 4, 4)
"""

from __future__ import annotations

import logging
import time
from typing import Any

from stream.shared_model import VERSION_KEY, ModelVersion, SharedModelError, decode_model_version

log = logging.getLogger("interest_stream.service")

__all__ = ["ModelFollower"]


class ModelFollower:
    """Holds the newest committed :class:`~stream.shared_model.ModelVersion` of the model topic."""

    def __init__(self, reader: Any) -> None:
        self.reader = reader
        self.latest: ModelVersion | None = None
        self.bad_records = 0

    @property
    def newest_version(self) -> int:
        return self.latest.version if self.latest is not None else 0

    def catch_up(self, timeout_s: float = 120.0) -> ModelVersion | None:
        """Read the model topic to its end offset (start-up); returns the newest version, if any."""
        from consumers.topic_reader import read_to_end

        tps = list(self.reader.assignment())
        read_to_end(self.reader, tps, lambda _tp, records: self._take(records), timeout_s=timeout_s,
                    past_end=True, what="the model topic")
        return self.latest

    def poll(self) -> ModelVersion | None:
        """Take what arrived since the last call, without waiting; returns the newest version held."""
        for records in self.reader.poll(timeout_ms=0, max_records=50).values():
            self._take(records)
        return self.latest

    def age_s(self) -> float:
        """Seconds since the newest version held was published (0 before any)."""
        if self.latest is None or not self.latest.emit_ms:
            return 0.0
        return max(0.0, time.time() - self.latest.emit_ms / 1000.0)

    def close(self) -> None:
        self.reader.close()

    def _take(self, records: list) -> None:
        for rec in records:
            if rec.key != VERSION_KEY or rec.value is None:
                continue
            try:
                version = decode_model_version(rec.value)
            except SharedModelError as exc:
                self.bad_records += 1
                log.warning("model topic: skipped a version record that does not decode (%s)", exc)
                continue
            latest = self.latest
            if latest is None or (version.version, version.n_applied) >= (latest.version, latest.n_applied):
                self.latest = version
