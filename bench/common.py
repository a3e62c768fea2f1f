"""Shared helpers of the benchmarks: dataset paths, the on-disk embedding cache,
timing, target checks and rich tables.

The embedding cache stores one float32 ``.npy`` array per corpus, keyed by a hash
of the model id and the exact texts, under ``~/.cache/interest-stream/bench/``
(``INTEREST_STREAM_BENCH_CACHE`` overrides it). It is read back with
``allow_pickle=False``. It only saves the benchmarks from re-embedding the same
corpus on every run; the product path still owns its embedder and its own
in-memory cache, which the benchmarks pre-fill from these arrays.

Example:

>>> import numpy as np, tempfile
>>> calls = []
>>> def embed(texts):
...     calls.append(len(texts))
...     return np.ones((len(texts), 3), dtype=np.float32)
>>> with tempfile.TemporaryDirectory() as d:
...     a = cached_embeddings(["x", "y"], embed, model_id="toy", label="t", directory=d)
...     b = cached_embeddings(["x", "y"], embed, model_id="toy", label="t", directory=d)
>>> a.shape, calls, bool((a == b).all())
((2, 3), [2], True)
>>> check = Target("nmi ratio", 0.97, 0.95)
>>> check.met, check.verdict
(True, 'PASS')
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data"
MODEL_ID = "all-MiniLM-L6-v2"


def default_cache_dir() -> Path:
    """Where cached corpus embeddings live (``INTEREST_STREAM_BENCH_CACHE`` overrides it)."""
    env = os.environ.get("INTEREST_STREAM_BENCH_CACHE")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "interest-stream" / "bench"


def corpus_hash(texts: Sequence[str], model_id: str = MODEL_ID) -> str:
    """A stable hash of a model id and an ordered list of texts.

    >>> corpus_hash(["a", "b"]) == corpus_hash(["a", "b"]) != corpus_hash(["b", "a"])
    True
    """
    digest = hashlib.sha256(model_id.encode())
    for text in texts:
        digest.update(b"\x00")
        digest.update(text.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def cached_embeddings(
    texts: Sequence[str],
    embed: Callable[[list[str]], np.ndarray],
    *,
    model_id: str = MODEL_ID,
    label: str = "corpus",
    directory: str | Path | None = None,
) -> np.ndarray:
    """Embeddings of ``texts`` (float32, one row per text), computed once and kept on disk."""
    folder = Path(directory) if directory is not None else default_cache_dir()
    path = folder / f"{label}-{corpus_hash(texts, model_id)[:24]}.npy"
    if path.exists():
        arr = np.load(path, allow_pickle=False)
        if arr.ndim == 2 and arr.shape[0] == len(texts) and arr.dtype == np.float32:
            return arr
    arr = np.ascontiguousarray(np.asarray(embed(list(texts)), dtype=np.float32))
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, arr, allow_pickle=False)
    os.replace(tmp, path)
    return arr


# ----------------------------------------------------------------------------- timing


def best_rate(fn: Callable[[], object], items: int, *, repeats: int = 3, min_time: float = 0.2) -> float:
    """Items per second of ``fn`` (which processes ``items`` items), the best of ``repeats`` runs.

    Each run repeats ``fn`` until at least ``min_time`` seconds have passed, so fast
    calls are not measured below the timer's resolution.
    """
    best = 0.0
    for _ in range(max(1, repeats)):
        n = 0
        start = time.perf_counter()
        while True:
            fn()
            n += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_time:
                break
        best = max(best, n * items / elapsed)
    return best


class Stopwatch:
    """A context manager that records the seconds spent inside it.

    >>> with Stopwatch() as sw:
    ...     pass
    >>> sw.seconds >= 0
    True
    """

    def __enter__(self) -> Stopwatch:
        self.seconds = 0.0
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start


# ----------------------------------------------------------------------------- targets and tables


@dataclass
class Target:
    """One figure checked against its target (``higher`` is better unless ``higher=False``)."""

    name: str
    value: float
    target: float
    higher: bool = True
    note: str = ""

    @property
    def met(self) -> bool:
        if not np.isfinite(self.value):
            return False
        return self.value >= self.target if self.higher else self.value < self.target

    @property
    def verdict(self) -> str:
        return "PASS" if self.met else "MISS"


@dataclass
class Report:
    """Collects tables and target checks and prints them on a rich console."""

    console: object = None
    targets: list[tuple[str, Target]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.console is None:
            from rich.console import Console

            self.console = Console()

    def print(self, *args: object, **kwargs: object) -> None:
        self.console.print(*args, **kwargs)

    def table(
        self, title: str, columns: Sequence[str], rows: Sequence[Sequence[object]], caption: str | None = None
    ):
        from rich.table import Table

        table = Table(title=title, caption=caption, title_justify="left", caption_justify="left")
        for i, col in enumerate(columns):
            table.add_column(col, justify="left" if i == 0 else "right", no_wrap=i == 0)
        for row in rows:
            table.add_row(*[_cell(v) for v in row])
        self.console.print(table)

    def check(self, bench: str, target: Target) -> Target:
        self.targets.append((bench, target))
        return target

    def targets_table(self, bench: str | None = None, title: str = "Targets") -> None:
        rows = []
        for name, t in self.targets:
            if bench is not None and name != bench:
                continue
            op = ">=" if t.higher else "<"
            verdict = "[green]PASS[/]" if t.met else "[red]MISS[/]"
            rows.append([name, t.name, _cell(t.value), f"{op} {_cell(t.target)}", verdict, t.note])
        if rows:
            self.table(title, ["bench", "figure", "value", "target", "", "note"], rows)


def _cell(value: object) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return "-"
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        v = float(value)
        if not np.isfinite(v):
            return "n/a"
        if v == 0:
            return "0"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 100:
            return f"{v:.1f}"
        if abs(v) >= 0.01:
            return f"{v:.3f}"
        return f"{v:.2e}"
    return str(value)


def blas_line() -> str:
    """One line about numpy's BLAS threads (threadpoolctl when installed) and OPENBLAS_CORETYPE."""
    parts = []
    try:
        from threadpoolctl import threadpool_info

        for info in threadpool_info():
            parts.append(
                f"{info.get('internal_api')} {info.get('version')} "
                f"({info.get('architecture')}, {info.get('num_threads')} threads, {Path(info.get('filepath', '')).name})"
            )
    except ImportError:
        parts.append("threadpoolctl not installed")
    coretype = os.environ.get("OPENBLAS_CORETYPE")
    parts.append(f"OPENBLAS_CORETYPE={coretype}" if coretype else "OPENBLAS_CORETYPE unset")
    return "; ".join(parts)


def machine_line() -> str:
    """CPU count and load average, so noisy numbers can be recognised as such."""
    try:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    return f"{os.cpu_count()} CPUs, load average {load}"
