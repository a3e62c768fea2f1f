"""Encoder backends: torch (sentence-transformers), OpenVINO fp32 and OpenVINO static int8.

:func:`make_encoder` builds the encoder that :class:`~stream.settings.ClusteringSettings`
asks for (``backend``):

- ``torch`` — :class:`~stream.embedder.SentenceEmbedder` (sentence-transformers on torch);
  the backend for GPUs: an explicit non-CPU ``device`` (``cuda``, ``mps``) always selects it;
- ``openvino`` — the same network converted to OpenVINO, fp32;
- ``openvino-int8`` — statically quantised to int8 with nncf, calibrated on the demo
  catalog that ships in the package (see :mod:`stream.encoder_cache`).

The OpenVINO backends run :class:`OpenVINOEncoder`, a torch-free hot path: the fast
tokenizer (the ``tokenizers`` package), the compiled OpenVINO model, then mean pooling
and L2 normalisation in numpy. torch is imported only by the one-time conversion into
the encoder cache (or not at all when the cache already holds the model).

Like sentence-transformers, texts are sorted by length and encoded in batches of
``batch_size``, each padded to its longest text rounded up to ``pad_multiple`` tokens
(fewer distinct shapes for the compiled model, little padding), and texts longer than
the token window are truncated and counted in ``truncated``.

Example (the first call converts into the cache, ~10 s; later starts load in ~1 s):

>>> import numpy as np
>>> enc = make_encoder(ClusteringSettings(backend="openvino"))  # doctest: +SKIP
>>> v = enc.encode(["Lakers win the final", "Cast-iron skillet"])  # doctest: +SKIP
>>> v.shape, v.dtype, bool(np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5))  # doctest: +SKIP
((2, 384), dtype('float32'), True)
>>> resolve_backend("openvino-int8", "cuda"), resolve_backend("openvino-int8", None)
('torch', 'openvino-int8')
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stream.settings import ClusteringSettings

__all__ = ["BACKENDS", "OpenVINOEncoder", "make_encoder", "resolve_backend"]

#: Every backend name ``ClusteringSettings.backend`` accepts.
BACKENDS = ("torch", "openvino", "openvino-int8")
_DEFAULT_WINDOW = 256


def resolve_backend(backend: str, device: str | None) -> str:
    """The backend actually used: ``torch`` whenever ``device`` names a non-CPU torch device."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown encoder backend {backend!r}; expected one of {BACKENDS}")
    if device is not None and device.strip().lower() not in ("", "cpu"):
        return "torch"
    return backend


def make_encoder(settings: ClusteringSettings):
    """The encoder ``settings`` describe (backend, model, batch size, window, threads, cache)."""
    backend = resolve_backend(settings.backend, settings.device)
    if backend == "torch":
        from stream.embedder import SentenceEmbedder

        return SentenceEmbedder(
            settings.model_path,
            device=settings.device,
            batch_size=settings.encode_batch_size,
            max_seq_length=settings.max_seq_length,
        )
    return OpenVINOEncoder.from_model(
        settings.model_path,
        backend=backend,
        cache_dir=settings.encoder_cache_dir,
        batch_size=settings.encode_batch_size,
        max_seq_length=settings.max_seq_length,
        threads=settings.encoder_threads or _omp_threads(),
    )


def _omp_threads() -> int:
    """``OMP_NUM_THREADS`` as a number (0 when unset or invalid): the deployment's CPU limit, which
    OpenVINO does not read by itself (see deploy/k8s)."""
    try:
        return max(0, int(os.environ.get("OMP_NUM_THREADS", "0")))
    except ValueError:
        return 0


def _model_window(model_path: Path) -> int:
    """The sentence-transformers token window of a model directory (256 when not stated)."""
    window = _DEFAULT_WINDOW
    config = model_path / "sentence_bert_config.json"
    if config.is_file():
        window = int(json.loads(config.read_text()).get("max_seq_length") or window)
    hf = model_path / "config.json"
    if hf.is_file():
        window = min(window, int(json.loads(hf.read_text()).get("max_position_embeddings", window)))
    return window


def _check_mean_pooling(model_path: Path) -> None:
    """OpenVINOEncoder pools by mean over the tokens: refuse models that pool otherwise."""
    modules = model_path / "modules.json"
    if not modules.is_file():
        return
    for module in json.loads(modules.read_text()):
        if module.get("type", "").endswith("Pooling"):
            config = model_path / module.get("path", "") / "config.json"
            pooling = json.loads(config.read_text()) if config.is_file() else {}
            if not pooling.get("pooling_mode_mean_tokens", True) or any(
                pooling.get(k) for k in ("pooling_mode_cls_token", "pooling_mode_max_tokens",
                                         "pooling_mode_mean_sqrt_len_tokens")
            ):
                raise ValueError(f"the model at {model_path} does not pool by mean; use backend=torch")


class OpenVINOEncoder:
    """A converted model run by OpenVINO on CPU; tokenizer, pooling and normalisation without torch.

    Parameters
    ----------
    model_dir
        A cache entry of :func:`stream.encoder_cache.converted_model` (``model.xml``,
        ``tokenizer.json``).
    batch_size
        Texts per inference.
    max_seq_length
        Token window; longer texts are truncated (and counted in ``truncated``).
    threads
        OpenVINO inference threads (``INFERENCE_NUM_THREADS``); 0 = OpenVINO's choice (all
        cores the process may use).
    hint
        OpenVINO ``PERFORMANCE_HINT``: ``LATENCY`` (one stream, every thread on one request)
        or ``THROUGHPUT`` (several streams; useful with ``requests > 1``).
    requests
        Infer requests run in parallel, each on a slice of the batch (1: synchronous).
    pad_multiple
        Each batch is padded to its longest text rounded up to a multiple of this (1: no
        rounding).
    precision
        OpenVINO ``INFERENCE_PRECISION_HINT`` of the layers left in floating point: ``f32``,
        ``bf16`` or ``None`` (OpenVINO's choice: bf16 on CPUs with AVX512-BF16/AMX, else f32).
        The ``openvino`` backend pins ``f32``; ``openvino-int8`` leaves it to OpenVINO.
    """

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        *,
        batch_size: int = 64,
        max_seq_length: int = _DEFAULT_WINDOW,
        threads: int = 0,
        hint: str = "LATENCY",
        requests: int = 1,
        pad_multiple: int = 8,
        precision: str | None = None,
        backend: str = "openvino",
        model_path: str | None = None,
    ) -> None:
        if batch_size < 1 or requests < 1 or pad_multiple < 1 or threads < 0:
            raise ValueError("batch_size, requests and pad_multiple must be >= 1, threads >= 0")
        import openvino as ov
        from tokenizers import Tokenizer

        from stream.encoder_cache import MODEL_FILE, TOKENIZER_FILE

        self.model_dir = Path(model_dir)
        self.backend = backend
        self.model_path = model_path  # the source weights (for ids of cached embeddings)
        self.device = "cpu"
        self.batch_size = int(batch_size)
        self.max_seq_length = int(max_seq_length)
        self.pad_multiple = int(pad_multiple)
        config: dict[str, Any] = {"PERFORMANCE_HINT": hint.upper()}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        if requests > 1:
            config["NUM_STREAMS"] = int(requests)
        if precision:
            config["INFERENCE_PRECISION_HINT"] = precision
        core = ov.Core()
        self._compiled = core.compile_model(str(self.model_dir / MODEL_FILE), "CPU", config)
        self._requests = [self._compiled.create_infer_request() for _ in range(int(requests))]
        self._tokenizer = Tokenizer.from_file(str(self.model_dir / TOKENIZER_FILE))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length=self.max_seq_length)
        self._pad_id = int(self._tokenizer.token_to_id("[PAD]") or 0)
        self.dim = int(self._compiled.outputs[0].get_partial_shape()[2].get_length())
        self.truncated = 0
        self.encoded = 0

    @classmethod
    def from_model(
        cls,
        model_path: str | os.PathLike[str] | None = None,
        *,
        backend: str = "openvino-int8",
        cache_dir: str | os.PathLike[str] | None = None,
        max_seq_length: int | None = None,
        **options: Any,
    ) -> OpenVINOEncoder:
        """Convert ``model_path`` (default: the packaged MiniLM) into the cache if needed, then load it."""
        from stream.embedder import default_model_path
        from stream.encoder_cache import converted_model

        path = default_model_path() if model_path is None else Path(model_path).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"model path {str(path)!r} is not a local directory")
        _check_mean_pooling(path)
        entry, _ = converted_model(path, backend, cache_dir)
        window = _model_window(path) if max_seq_length is None else int(max_seq_length)
        if backend == "openvino":
            options.setdefault("precision", "f32")
        return cls(entry, max_seq_length=window, backend=backend, model_path=str(path), **options)

    @property
    def config(self) -> dict[str, str]:
        """The compiled model's effective settings (threads, streams, hint)."""
        out = {}
        for key in ("PERFORMANCE_HINT", "INFERENCE_NUM_THREADS", "NUM_STREAMS", "INFERENCE_PRECISION_HINT"):
            try:
                out[key] = str(self._compiled.get_property(key))
            except Exception:  # pragma: no cover - a property this OpenVINO does not report
                continue
        return out

    @property
    def model(self) -> _BareModel:
        """The bare model call (no counters), shaped like ``SentenceTransformer.encode``: what the
        benchmarks compare the product's embedding path against."""
        return _BareModel(self)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Encode ``texts`` into an ``(n, dim)`` float32 array of unit-norm rows."""
        out, truncated = self._encode(list(texts), self.batch_size)
        self.truncated += truncated
        self.encoded += len(out)
        return out

    def _encode(self, texts: list[str], batch_size: int) -> tuple[np.ndarray, int]:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out, 0
        encodings = self._tokenizer.encode_batch(texts)
        truncated = sum(1 for e in encodings if e.overflowing)
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        order = np.argsort(-lengths, kind="stable")
        for start in range(0, len(texts), batch_size):
            index = order[start : start + batch_size]
            out[index] = self._encode_batch([encodings[i] for i in index], int(lengths[index[0]]))
        return out, truncated

    def _encode_batch(self, encodings: list, longest: int) -> np.ndarray:
        width = min(-(-longest // self.pad_multiple) * self.pad_multiple, self.max_seq_length)
        width = max(width, longest)
        n = len(encodings)
        ids = np.full((n, width), self._pad_id, dtype=np.int64)
        mask = np.zeros((n, width), dtype=np.int64)
        for row, enc in enumerate(encodings):
            k = len(enc.ids)
            ids[row, :k] = enc.ids
            mask[row, :k] = 1
        types = np.zeros_like(ids)
        requests = self._requests
        if len(requests) == 1 or n < 2 * len(requests):
            hidden = requests[0].infer([ids, mask, types], share_inputs=True)[0]
            return _mean_pool_normalise(hidden, mask)
        bounds = np.linspace(0, n, len(requests) + 1).astype(int)
        slices = [(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]
        for request, (a, b) in zip(requests, slices, strict=False):
            request.start_async([ids[a:b], mask[a:b], types[a:b]], share_inputs=True)
        parts = []
        for request, (a, b) in zip(requests, slices, strict=False):
            request.wait()
            parts.append(_mean_pool_normalise(request.get_output_tensor(0).data, mask[a:b]))
        return np.concatenate(parts)

    def __repr__(self) -> str:
        return f"OpenVINOEncoder(backend={self.backend!r}, model_dir={str(self.model_dir)!r}, dim={self.dim})"


class _BareModel:
    """``encode(texts, batch_size=None, **ignored)`` of an :class:`OpenVINOEncoder`, counters untouched."""

    def __init__(self, encoder: OpenVINOEncoder) -> None:
        self._encoder = encoder

    def encode(self, texts: Sequence[str], batch_size: int | None = None, **_ignored: Any) -> np.ndarray:
        return self._encoder._encode(list(texts), int(batch_size or self._encoder.batch_size))[0]


def _mean_pool_normalise(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of the token vectors under ``mask``, scaled to unit length (float32)."""
    weights = mask.astype(np.float32)
    summed = np.einsum("btd,bt->bd", hidden, weights, optimize=True)
    summed /= np.maximum(weights.sum(axis=1, keepdims=True), 1e-9)
    norms = np.linalg.norm(summed, axis=1, keepdims=True)
    return (summed / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
