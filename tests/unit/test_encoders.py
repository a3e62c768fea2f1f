"""Encoder backends (stream/encoders.py, stream/encoder_cache.py): offline loading from the packaged
weights, a torch-free hot path, one export under concurrent first starts, fidelity to torch fp32.

The OpenVINO conversions (~10 s fp32, ~40 s int8 on 2 cores) run once per module, into one
temporary cache shared by every test here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from stream.embedder import SentenceEmbedder, default_model_path
from stream.encoder_cache import cache_key, converted_model
from stream.encoders import BACKENDS, OpenVINOEncoder, make_encoder, resolve_backend
from stream.settings import ClusteringSettings

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}

# A few dozen fixed texts: item titles, search queries and article-length sentences.
TEXTS = [
    "Lakers win the NBA final in overtime",
    "Cast-iron skillet, 12-inch, pre-seasoned",
    "Central bank raises interest rates by half a point",
    "best hiking boots for wet weather",
    "Toy Story (1995). Genres: Animation, Children's, Comedy",
    "GoldenEye (1995). Genres: Action, Adventure, Thriller",
    "New smartphone chip doubles battery life, maker says",
    "How to repot a fiddle-leaf fig without killing it",
    "Election results: incumbent concedes after recount",
    "Vintage vinyl records: a buyer's guide",
    "cheap flights to Lisbon in March",
    "Marathon training plan for beginners, 16 weeks",
    "Oil prices slide as inventories grow for a third week",
    "Scientists map the genome of the axolotl",
    "Wireless noise-cancelling headphones, over-ear",
    "The striker's late goal sends the champions through to the semi-finals",
    "Sourdough starter troubleshooting: why is mine not rising?",
    "Stocks rallied on Wednesday as investors weighed a fresh round of earnings reports from the "
    "largest technology companies, while bond yields eased after weaker-than-expected jobs data.",
    "The city council approved a plan to convert two downtown parking garages into affordable housing, "
    "a move supporters say will add hundreds of units within three years.",
    "Researchers at the university reported that a new battery chemistry based on sodium could cut the "
    "cost of grid storage, though commercial cells are still several years away.",
    "After a rain delay of nearly two hours, the home side rallied in the ninth inning to win the series "
    "opener, extending their winning streak to eight games.",
    "A practical guide to pruning fruit trees in late winter: which branches to cut, which tools to use, "
    "and the mistakes that cost you next summer's harvest.",
    "The museum's new wing displays more than four hundred works of modern art donated by a private collector.",
    "Space agency delays the launch of its lunar lander after a sensor fault during final checks.",
    "Heavy snow closes mountain passes; travellers told to expect delays through the weekend",
    "Yoga mat, extra thick, non-slip",
    "Chess grandmaster wins the world championship on tiebreaks",
    "Star Wars (1977). Genres: Action, Adventure, Romance, Sci-Fi, War",
    "Quarterly profit beats forecasts as cloud revenue jumps 30 percent",
    "Electric cars: how far can you really drive in winter?",
    "Open-source database adds vector search in its latest release",
    "Premier League: five things we learned this weekend",
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """One encoder cache for this module, with both OpenVINO backends converted once."""
    path = tmp_path_factory.mktemp("encoder-cache")
    for backend in ("openvino", "openvino-int8"):
        converted_model(default_model_path(), backend, path)
    return path


@pytest.fixture(scope="module")
def torch_vectors() -> np.ndarray:
    return SentenceEmbedder(device="cpu", batch_size=16).encode(TEXTS)


def _run(code: str, *, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO, env={**os.environ, **OFFLINE_ENV, **(env or {})},
        capture_output=True, text=True, timeout=timeout,
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_loads_offline_from_the_packaged_weights(backend, cache_dir):
    """A fresh process builds each backend offline; the OpenVINO ones never import torch."""
    out = _run(f"""
        import json, sys
        from stream.encoders import make_encoder
        from stream.settings import ClusteringSettings
        enc = make_encoder(ClusteringSettings(backend={backend!r}, device="cpu",
                                              encoder_cache_dir={str(cache_dir)!r}))
        v = enc.encode(["an offline check", "Lakers win the final"])
        print(json.dumps({{"shape": list(v.shape), "dtype": str(v.dtype), "torch": "torch" in sys.modules,
                          "kind": type(enc).__name__}}))
    """)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["shape"] == [2, 384] and got["dtype"] == "float32"
    if backend == "torch":
        assert got["kind"] == "SentenceEmbedder" and got["torch"]
    else:
        assert got["kind"] == "OpenVINOEncoder"
        assert not got["torch"], "the OpenVINO hot path imported torch"


@pytest.mark.parametrize("backend", ["openvino", "openvino-int8"])
def test_backend_matches_torch_fp32_within_the_cosine_gates(backend, cache_dir, torch_vectors):
    enc = make_encoder(ClusteringSettings(backend=backend, device="cpu", encoder_cache_dir=str(cache_dir),
                                          encode_batch_size=8))  # several batches: exercises the length sort
    v = enc.encode(TEXTS)
    assert v.shape == torch_vectors.shape and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    cos = np.einsum("ij,ij->i", v.astype(np.float64), torch_vectors.astype(np.float64))
    assert np.median(cos) >= 0.995, (backend, np.median(cos))
    assert np.percentile(cos, 1) >= 0.99, (backend, np.sort(cos)[:3])
    if backend == "openvino":  # fp32: the same network, to rounding
        assert cos.min() >= 0.9999, cos.min()
    assert enc.encoded == len(TEXTS) and enc.truncated == 0
    assert enc.encode([]).shape == (0, 384)


def test_openvino_counts_truncations_like_torch(cache_dir):
    texts = ["short text", "word " * 40, "another short one", "猫" * 30, "🎉" * 30]
    torch_enc = SentenceEmbedder(device="cpu", batch_size=8, max_seq_length=16)
    torch_enc.encode(texts)
    ov = OpenVINOEncoder.from_model(backend="openvino", cache_dir=cache_dir, max_seq_length=16, batch_size=2)
    v = ov.encode(texts)
    assert ov.max_seq_length == 16 and ov.truncated == torch_enc.truncated == 2
    cos = np.einsum("ij,ij->i", v, torch_enc.encode(texts))
    assert cos.min() >= 0.999, cos  # truncated the same way


def test_concurrent_first_start_exports_once(tmp_path):
    """Two processes start on an empty cache at the same moment: one exports, the other waits and loads."""
    cache = tmp_path / "cache"
    go = tmp_path / "go"
    code = f"""
        import json, os, sys, time
        from pathlib import Path
        from stream.embedder import default_model_path
        from stream.encoder_cache import converted_model
        import openvino, torch, transformers  # imports done before the race starts
        Path({str(tmp_path)!r}, "ready-" + str(os.getpid())).touch()
        while not Path({str(go)!r}).exists():
            time.sleep(0.01)
        entry, converted = converted_model(default_model_path(), "openvino", {str(cache)!r})
        print(json.dumps({{"entry": str(entry), "converted": converted}}))
    """
    env = {**os.environ, **OFFLINE_ENV}
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        import time

        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob("ready-*"))) < 2 and time.monotonic() < deadline:
            assert all(p.poll() is None for p in procs), [p.communicate()[1][-2000:] for p in procs]
            time.sleep(0.05)
        go.touch()
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs), [err[-3000:] for _, err in outs]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert sorted(r["converted"] for r in results) == [False, True]
    assert results[0]["entry"] == results[1]["entry"]
    entries = [p.name for p in cache.iterdir() if p.is_dir()]
    assert entries == [Path(results[0]["entry"]).name], entries  # no temporary directory left behind
    meta = json.loads((Path(results[0]["entry"]) / "meta.json").read_text())
    assert meta["backend"] == "openvino" and meta["libraries"]["openvino"] != "-"


def test_a_failed_export_leaves_nothing_behind(tmp_path, monkeypatch):
    import stream.encoder_cache as ec

    def boom(*args, **kwargs):
        raise RuntimeError("export failed")

    monkeypatch.setattr(ec, "_export", boom)
    with pytest.raises(RuntimeError, match="export failed"):
        ec.converted_model(default_model_path(), "openvino", tmp_path)
    assert [p for p in tmp_path.iterdir() if p.is_dir()] == []


def test_cache_key_follows_model_libraries_and_calibration(tmp_path, monkeypatch):
    import stream.encoder_cache as ec

    model = default_model_path()
    base = cache_key(model, "openvino-int8")
    assert cache_key(model, "openvino-int8") == base
    assert cache_key(model, "openvino-int8", calibration=["other texts"]) != base
    assert cache_key(model, "openvino", calibration=["ignored for fp32"]) == cache_key(model, "openvino")
    copy = tmp_path / "model"
    copy.mkdir()
    for f in model.rglob("*"):
        if f.is_file() and f.suffix != ".safetensors":
            (copy / f.relative_to(model)).parent.mkdir(parents=True, exist_ok=True)
            (copy / f.relative_to(model)).write_bytes(f.read_bytes())
    (copy / "model.safetensors").write_bytes(b"other weights")
    assert cache_key(copy, "openvino-int8") != base
    monkeypatch.setattr(ec, "_version", lambda name: "9.9" if name == "openvino" else "1.0")
    assert cache_key(model, "openvino-int8") != base
    with pytest.raises(ValueError):
        cache_key(model, "torch")


def test_backend_setting_and_gpu_devices():
    assert ClusteringSettings().backend in BACKENDS
    with pytest.raises(ValueError):
        ClusteringSettings(backend="tensorrt")
    assert resolve_backend("openvino-int8", "cuda:1") == "torch"
    assert resolve_backend("openvino", "cpu") == "openvino"
    assert resolve_backend("torch", None) == "torch"
    with pytest.raises(ValueError):
        resolve_backend("onnx", None)
