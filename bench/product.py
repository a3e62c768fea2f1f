"""The product under benchmark: ``stream.pipeline.Pipeline`` driven over wire-format
events in micro-batches, with what the benchmarks score exposed next to it.

:func:`make_driver` builds a :class:`Driver` around the real single-process
``Pipeline`` (decode -> embed with catalog and ``EmbeddingCache`` -> fold into
profiles -> summarise -> trainer applies -> assess touched users plus a bounded
recheck -> assignment-change records, labels and snapshots), built from
``ClusteringSettings`` with the product's defaults. Each batch goes through
``Pipeline.process_batch`` unchanged, as JSON bytes in ``SourceRecord``; ``now_ms`` is
the batch's latest event time, so a replay is deterministic.

The driver also keeps the touched users and their profile directions of the last
batch (the worker's prepared batch: exactly the vectors the product's k-means learned
from), so baselines can learn from the same vectors.

Example, with a fake two-dimensional encoder:

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> class Fake:
...     dim = 2
...     def encode(self, texts):
...         base = np.array([[1.0, 0.0] if "ball" in t else [0.0, 1.0] for t in texts], np.float32)
...         return base + rng.normal(0, 0.1, base.shape).astype(np.float32)
>>> driver = make_driver(n_clusters=2, encoder=Fake(), seed=0)
>>> events = [{"user_id": f"u{i}", "ts": 1_000 * i, "text": f"ball game {i}" if i % 2 else f"stock price {i}"}
...           for i in range(40)]
>>> changes = driver.process(events[:20]) + driver.process(events[20:])
>>> users, X = driver.last_directions()
>>> len(users), X.shape
(20, (20, 2))
>>> odd = {c.cluster for c in changes if int(c.user_id[1:]) % 2}
>>> even = {c.cluster for c in changes if not int(c.user_id[1:]) % 2}
>>> len(odd), len(even), odd != even
(1, 1, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import msgspec
import numpy as np

from stream.embedder import text_key
from stream.settings import ClusteringSettings
from stream.worker import SourceRecord

_encode_json = msgspec.json.Encoder().encode


def sentence_encoder(batch_size: int = 64, overrides=None):
    """The product's encoder (packaged MiniLM): :func:`stream.encoders.make_encoder` of the product's
    settings with ``overrides`` (e.g. ``{"backend": "torch"}``), batch ``batch_size``."""
    from stream.encoders import make_encoder

    fields = {k: v for k, v in dict(overrides or {}).items()
              if k in ("backend", "device", "model_path", "max_seq_length", "encoder_cache_dir", "encoder_threads")}
    return make_encoder(ClusteringSettings(encode_batch_size=batch_size, **fields))


def corpus_vectors(texts: Sequence[str], encoder, *, label: str, use_disk_cache: bool = True) -> np.ndarray:
    """Embeddings of a corpus by the product's encoder, kept on disk between runs when asked."""
    from bench.common import MODEL_ID, cached_embeddings

    def encode(items: list[str]) -> np.ndarray:
        from rich.progress import Progress

        out = np.zeros((len(items), int(encoder.dim)), dtype=np.float32)
        with Progress(transient=True) as progress:
            task = progress.add_task(f"embedding {label} ({len(items):,} texts)", total=len(items))
            for i in range(0, len(items), 256):
                out[i : i + 256] = encoder.encode(items[i : i + 256])
                progress.advance(task, min(256, len(items) - i))
        return out

    if not use_disk_cache:
        return encode(list(texts))
    from stream.embedder import default_model_path

    safe = "".join(ch if ch.isalnum() else "-" for ch in label.lower())
    path = getattr(encoder, "model_path", None)
    model_id = MODEL_ID if path is None or Path(path) == default_model_path() else str(path)
    if getattr(encoder, "max_seq_length", None) not in (None, 256):
        model_id += f"|max_seq_length={encoder.max_seq_length}"
    backend = getattr(encoder, "backend", "torch")
    if backend != "torch":  # another backend's embeddings are cached apart from torch's
        model_id += f"|backend={backend}"
    return cached_embeddings(texts, encode, model_id=model_id, label=safe)


class Driver:
    """Runs event batches through ``stream.pipeline.Pipeline`` (see the module docstring)."""

    def __init__(self, settings: ClusteringSettings, encoder, catalog=None) -> None:
        from stream.pipeline import Pipeline

        self.settings = settings
        self.pipeline = Pipeline(settings, encoder, catalog)
        self.name = "stream.pipeline.Pipeline.process_batch (real product path)"
        self.cache = self.pipeline.cache
        self.embedder = self.pipeline.embedder
        self.profiles = self.pipeline.profiles
        self.model = self.pipeline.model
        self._prepared = None
        worker = self.pipeline.worker
        prepare = worker.prepare

        def capture(records, model):
            self._prepared = prepare(records, model)
            return self._prepared

        worker.prepare = capture  # observe the prepared batch; the pipeline code runs unchanged

    @property
    def texts_encoded(self) -> int:
        return self.embedder.texts_encoded

    def prefill(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Put precomputed embeddings of free texts into the product's EmbeddingCache."""
        for text, vec in zip(texts, vectors, strict=True):
            self.cache.put(text_key(text), np.asarray(vec, dtype=np.float32))

    @staticmethod
    def records(batch: Sequence[dict]) -> list[SourceRecord]:
        """Wire-format events as the JSON-bytes records a source hands the pipeline."""
        return [SourceRecord(_encode_json(e), None, None) for e in batch]

    def process(self, batch: Sequence[dict], now_ms: int | None = None) -> list:
        """One micro-batch of wire-format events; returns its assignment-change records."""
        if not batch:
            return []
        if now_ms is None:
            now_ms = max(int(e.get("ts", 0)) for e in batch)
        return self.process_records(self.records(batch), now_ms)

    def process_records(self, records: Sequence[SourceRecord], now_ms: int) -> list:
        """One micro-batch of already-encoded records (what a Kafka or file source delivers)."""
        return self.pipeline.process_batch(records, now_ms=now_ms).changes

    def last_directions(self) -> tuple[list[str], np.ndarray]:
        """Users touched by the last batch and their profile directions (what the k-means learned from)."""
        p = self._prepared
        if p is None:
            return [], np.zeros((0, self.embedder.dim), dtype=np.float32)
        return list(p.user_ids), p.directions

    def all_directions(self) -> tuple[list[str], np.ndarray]:
        """Every known user and their current profile direction."""
        users = list(self.profiles.user_ids())
        return users, self.profiles.directions(self.profiles.slots_of(users))


def make_driver(
    *,
    n_clusters: int,
    encoder,
    seed: int = 42,
    cache_size: int | None = None,
    catalog=None,
    **overrides,
) -> Driver:
    """A :class:`Driver` with the product's default settings, ``n_clusters`` clusters and ``overrides``."""
    fields = {"n_clusters": n_clusters, "seed": seed, **overrides}
    if cache_size is not None:
        fields["cache_size"] = cache_size
    return Driver(ClusteringSettings(**fields), encoder, catalog)
