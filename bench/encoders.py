"""Encoder backends side by side: texts/s, cosine to torch fp32, OpenVINO knobs, memory and start-up.

- **speed**: texts/s of each backend (:mod:`stream.encoders`: ``torch``, ``openvino``,
  ``openvino-int8``) on AG News texts (title + description) and on short titles (MIND
  titles, MovieLens item texts), batch = ``encode_batch_size`` (64), 2 threads, each
  backend timed once per round in interleaved rounds; texts/s is the median round, the
  ratio to torch fp32 the median of the ratios within each round. Target: the default backend >= 2.2x torch on AG News and on titles.
- **fidelity**: per-text cosine of each backend's embedding to torch fp32's, on every
  benchmark text (torch's embeddings are kept in the on-disk bench cache). Gates: median
  >= 0.995 and 1st percentile >= 0.99. The int8 model is also converted with other
  calibration sets (another draw of the demo paragraphs, half the demo set, the demo titles
  without paragraphs, and 400 AG News texts for comparison only, never shipped) to show
  how much the choice moves the gates.
- **knobs** of the int8 backend: inference threads, ``PERFORMANCE_HINT`` latency /
  throughput with 2 infer requests, padding buckets (``pad_multiple``), float precision of
  the non-quantised layers.
- **memory and start-up**: a fresh Python process per backend builds the product's encoder
  (:func:`stream.encoders.make_encoder`, cache already converted) and encodes one batch;
  reported: seconds from process start to the first batch encoded, resident memory (RSS)
  then, its peak, and whether torch was imported at all.

Skips (with a message) when the data files are absent. Example (the helpers only):

>>> import numpy as np
>>> a = np.eye(3, dtype=np.float32); b = a.copy(); b[2] = [0, 0.6, 0.8]
>>> med, p1 = cosine_stats(a, b)
>>> round(med, 3), round(p1, 3)  # cosines 1, 1, 0.6: the 1st percentile interpolates towards 0.6
(1.0, 0.804)
>>> rates = interleaved_rates({"x": lambda: None, "y": lambda: None}, items=10, rounds=2)
>>> len(rates["x"]), ratio_to({"x": [2.0, 6.0], "y": [1.0, 2.0]}, "x", "y")
(2, 2.5)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from bench.common import Report, Target, cached_embeddings

SPEED_TARGET = 2.2
MEDIAN_GATE = 0.995
P1_GATE = 0.99
THREADS = 2


def cosine_stats(reference: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """(median, 1st percentile) of the row-wise cosine between two arrays of unit rows."""
    cos = np.einsum("ij,ij->i", reference.astype(np.float64), other.astype(np.float64))
    return float(np.median(cos)), float(np.percentile(cos, 1))


def interleaved_rates(fns: Mapping[str, Callable[[], object]], items: int, rounds: int = 3) -> dict[str, list[float]]:
    """Items/s of each function in each of ``rounds`` interleaved rounds (every function once per round)."""
    rates: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            rates[name].append(items / max(time.perf_counter() - start, 1e-9))
    return rates


def ratio_to(rates: Mapping[str, list[float]], name: str, baseline: str) -> float:
    """Median over rounds of ``name``'s rate / ``baseline``'s rate in the same round: on a machine whose
    load changes from minute to minute, a ratio within one round is steadier than a ratio of bests."""
    return float(np.median(np.asarray(rates[name]) / np.asarray(rates[baseline])))


def _texts(ag_news: Path, mind: Path, movielens: Path, n: int, seed: int) -> dict[str, list[str]]:
    from bench.movielens import load_items
    from stream.corpora import load_ag_news

    rng = np.random.default_rng(seed)

    def sample(texts: list[str]) -> list[str]:
        keep = rng.choice(len(texts), size=min(n, len(texts)), replace=False)
        return [texts[i] for i in sorted(keep)]

    titles = []
    with mind.open(encoding="utf-8") as handle:
        for line in handle:
            fields = line.rstrip("\n").split("\t")
            if len(fields) > 3 and fields[3].strip():
                titles.append(fields[3].strip())
    items = load_items(movielens / "u.item", movielens / "u.genre")
    return {
        "AG News texts": sample([d.text for d in load_ag_news(ag_news).documents]),
        "MIND titles": sample(titles),
        "MovieLens titles": sample(list(items.values())),
    }


def _ov(backend: str, calibration: Sequence[str] | None = None, **options):
    from stream.embedder import default_model_path
    from stream.encoder_cache import converted_model
    from stream.encoders import OpenVINOEncoder

    entry, _ = converted_model(default_model_path(), backend, calibration=calibration)
    if backend == "openvino":
        options.setdefault("precision", "f32")
    return OpenVINOEncoder(entry, backend=backend, **{"threads": THREADS, **options})


_PROBE = """
import json, os, sys, time
t0 = float(sys.argv[1])
from stream.encoders import make_encoder
from stream.settings import ClusteringSettings
enc = make_encoder(ClusteringSettings(backend=sys.argv[2], device="cpu", encoder_threads=2))
enc.encode(["start-up probe %d: a short title about football and markets" % i for i in range(64)])
ready = time.time() - t0
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
mib = lambda key: int(status[key].split()[0]) / 1024
print(json.dumps({"ready_s": ready, "rss_mib": mib("VmRSS"), "peak_mib": mib("VmHWM"),
                  "torch": "torch" in sys.modules}))
"""


def startup_probe(backend: str) -> dict:
    """Start-up to the first encoded batch and resident memory of a fresh process using ``backend``."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS=str(THREADS))
    out = subprocess.run([sys.executable, "-c", _PROBE, repr(time.time()), backend], env=env,
                         capture_output=True, text=True, timeout=600, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(report: Report, *, ag_news: Path, mind: Path, movielens: Path, quick: bool = False, seed: int = 0) -> dict:
    """Print the encoder tables; returns the figures (also checked as targets)."""
    missing = [str(p) for p in (ag_news, mind, movielens) if not Path(p).exists()]
    if missing:
        report.print(f"[yellow]encoders: skipped, data not found: {', '.join(missing)}[/]")
        return {}
    import torch

    from stream.embedder import SentenceEmbedder
    from stream.encoder_cache import calibration_texts
    from stream.settings import ClusteringSettings

    torch.set_num_threads(THREADS)
    default = ClusteringSettings().backend
    corpora = _texts(Path(ag_news), Path(mind), Path(movielens), 300 if quick else 2000, seed)
    speed_n = 128 if quick else 512
    rounds = 2 if quick else 5
    torch_enc = SentenceEmbedder(device="cpu", batch_size=64)
    refs = {name: cached_embeddings(texts, torch_enc.encode, label="encoders-" + name.lower().replace(" ", "-"))
            for name, texts in corpora.items()}
    backends = {"torch fp32": torch_enc, "openvino fp32": _ov("openvino"), "openvino-int8": _ov("openvino-int8")}
    report.print(f"default backend: {default}; batch 64, {THREADS} threads; {speed_n} texts per speed set, "
                 f"cosine on {', '.join(f'{len(t):,} {n}' for n, t in corpora.items())}")

    # --- speed and fidelity of each backend ------------------------------------------------------
    figures: dict = {"rates": {}, "cosine": {}}
    rows = []
    for name, texts in corpora.items():
        sample = texts[:speed_n]
        for enc in backends.values():
            enc.encode(sample[:64])  # warm-up (first inference compiles shapes)
        rates = interleaved_rates({b: (lambda e=e, s=sample: e.encode(s)) for b, e in backends.items()},
                                  len(sample), rounds)
        figures["rates"][name] = rates
        for b, enc in backends.items():
            med, p1 = (1.0, 1.0) if b == "torch fp32" else cosine_stats(refs[name], enc.encode(texts))
            figures["cosine"][(name, b)] = (med, p1)
            rows.append([name, b, float(np.median(rates[b])), ratio_to(rates, b, "torch fp32"),
                         f"{med:.4f}", f"{p1:.4f}"])
    report.table("Encoder backends: texts/s (batch 64, 2 threads) and cosine to torch fp32",
                 ["texts", "backend", "texts/s", "x torch", "cos median", "cos p1"], rows)
    default_name = {"torch": "torch fp32", "openvino": "openvino fp32"}.get(default, default)
    for name in corpora:
        rates = figures["rates"][name]
        report.check("encoders", Target(f"{default} x torch, {name}", ratio_to(rates, default_name, "torch fp32"),
                                        SPEED_TARGET))
        for b in ("openvino fp32", "openvino-int8"):
            med, p1 = figures["cosine"][(name, b)]
            report.check("encoders", Target(f"{b} cosine median, {name}", med, MEDIAN_GATE))
            report.check("encoders", Target(f"{b} cosine p1, {name}", p1, P1_GATE))

    # --- calibration sets -------------------------------------------------------------------------
    ag = corpora["AG News texts"]
    calib = {
        "shipped: demo titles + paragraphs (400)": None,
        "demo titles + paragraphs, other draw (seed 1)": calibration_texts(seed=1),
        "every other demo text (200)": calibration_texts()[::2],
        "demo titles only (320, no paragraphs)": calibration_texts(n_paragraphs=0),
        "AG News texts (400, comparison only)": ag[-400:],
    }
    rows = []
    for label, texts in calib.items():
        enc = backends["openvino-int8"] if texts is None else _ov("openvino-int8", calibration=texts)
        cells = []
        for name, sample in corpora.items():
            cells += [f"{x:.4f}" for x in cosine_stats(refs[name], enc.encode(sample))]
        rows.append([label, *cells])
    report.table("openvino-int8: calibration set vs cosine to torch fp32 (median / p1)",
                 ["calibration", *[f"{n.split()[0]} {s}" for n in corpora for s in ("median", "p1")]], rows)

    # --- knobs of the int8 backend ----------------------------------------------------------------
    knobs = {
        "default (2 threads, LATENCY, pad 8)": {},
        "1 thread": {"threads": 1},
        "THROUGHPUT, 2 requests": {"hint": "THROUGHPUT", "requests": 2},
        "no padding buckets (pad 1)": {"pad_multiple": 1},
        "pad to 32": {"pad_multiple": 32},
        "f32 precision (no bf16)": {"precision": "f32"},
        "batch 128": {"batch_size": 128},
    }
    encoders = {label: _ov("openvino-int8", **opts) for label, opts in knobs.items()}
    rows = []
    for name in ("AG News texts", "MIND titles"):
        sample = corpora[name][:speed_n]
        for enc in encoders.values():
            enc.encode(sample[:64])
        fns = {"torch fp32": lambda s=sample: torch_enc.encode(s)}
        fns.update({label: (lambda e=e, s=sample: e.encode(s)) for label, e in encoders.items()})
        rates = interleaved_rates(fns, len(sample), rounds)
        for label in encoders:
            rows.append([name, label, float(np.median(rates[label])), ratio_to(rates, label, "torch fp32")])
    report.table("openvino-int8 knobs (median texts/s; median of the per-round ratios to torch fp32)",
                 ["texts", "knob", "texts/s", "x torch"], rows)

    # --- memory and start-up ----------------------------------------------------------------------
    rows = []
    for backend in ("torch", "openvino-int8"):
        probe = startup_probe(backend)
        figures[f"startup-{backend}"] = probe
        rows.append([backend, probe["ready_s"], probe["rss_mib"], probe["peak_mib"], "yes" if probe["torch"] else "no"])
    report.table("Fresh process: start-up to the first encoded batch, resident memory (converted model cached)",
                 ["backend", "ready s", "RSS MiB", "peak MiB", "torch imported"], rows)
    return figures
