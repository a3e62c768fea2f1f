"""Smoke tests of the benchmark suite (bench/): each benchmark's core on tiny synthetic input.

They keep the benchmark code from rotting; they assert correctness of the scoring, never
speed. The real-data parts skip when the licensed datasets are absent.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

try:
    import bench  # noqa: F401  (bench/ is not an installed package: importable from the repo root)
except ImportError:  # pragma: no cover - pytest started from elsewhere
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import common, movielens, quality, speed
from bench.product import make_driver
from stream.simulation import Corpus, Document, UserTruth, simulate

DATA = common.DEFAULT_DATA_DIR


class TopicEncoder:
    """Fake encoder: one random direction per first word of the text, plus a little noise."""

    def __init__(self, dim: int = 16, seed: int = 0) -> None:
        self.dim = dim
        self.calls = 0
        self._rng = np.random.default_rng(seed)
        self._bases: dict[str, np.ndarray] = {}

    def encode(self, texts):
        self.calls += 1
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            word = text.split()[0]
            if word not in self._bases:
                self._bases[word] = self._rng.normal(size=self.dim).astype(np.float32)
            v = self._bases[word] + 0.3 * self._rng.normal(size=self.dim).astype(np.float32)
            out[i] = v / np.linalg.norm(v)
        return out


def test_cached_embeddings_round_trip_without_pickle(tmp_path):
    enc = TopicEncoder()
    a = common.cached_embeddings(
        ["alpha x", "beta y"], enc.encode, model_id="fake", label="t", directory=tmp_path
    )
    b = common.cached_embeddings(
        ["alpha x", "beta y"], enc.encode, model_id="fake", label="t", directory=tmp_path
    )
    c = common.cached_embeddings(
        ["beta y", "alpha x"], enc.encode, model_id="fake", label="t", directory=tmp_path
    )
    assert enc.calls == 2  # the second call was served from disk, the reordered corpus was not
    assert np.array_equal(a, b) and a.dtype == np.float32
    files = sorted(tmp_path.glob("t-*.npy"))
    assert len(files) == 2
    assert np.load(files[0], allow_pickle=False).shape == (2, 16)
    assert c.shape == (2, 16)


def test_targets_and_report_render():
    from rich.console import Console

    report = common.Report(Console(record=True, width=160))
    report.check("x", common.Target("ratio", 0.5, 0.95))
    report.check("x", common.Target("churn", 0.01, 0.02, higher=False))
    report.check("x", common.Target("nan", float("nan"), 1.0))
    report.targets_table()
    text = report.console.export_text()
    assert [t.verdict for _, t in report.targets] == ["MISS", "PASS", "MISS"]
    assert "ratio" in text and "PASS" in text and "MISS" in text


def test_quality_evaluate_scores_a_separable_scenario():
    corpus = Corpus([Document(f"d{i}", f"topic{i % 3} doc {i}", f"t{i % 3}") for i in range(60)])
    scenario = simulate(
        corpus,
        n_users=90,
        mean_events_per_user=8,
        primary_share=0.85,
        secondary_share=0.1,
        drift_fraction=0.2,
        duration_s=3600,
        event_type_mix={"view": 1.0},
        seed=3,
    )
    # A tiny stream (fewer batches than the default warm-up): assign from the first batch.
    driver = make_driver(n_clusters=3, encoder=TopicEncoder(seed=3), seed=3, warmup_batches=0)
    result = quality.evaluate(scenario, k=3, driver=driver, batch_size=64, river_points=60, seed=3)
    assert [c.fraction for c in result.checkpoints] == list(quality.CHECKPOINTS)
    assert result.checkpoints[-1].events == len(scenario.events)
    last = result.checkpoints[-1].scores
    assert set(last) == {
        "product", "product centroids", "offline KMeans", "sklearn MiniBatchKMeans", "river KMeans"
    }
    for score in last.values():
        assert -1.0 <= score.ari <= 1.0 and 0.0 <= score.nmi <= 1.0 + 1e-9
    assert last["offline KMeans"].nmi > 0.6  # topics are well separated
    assert last["product"].covered == 1.0
    assert result.switched_users > 0
    assert len(result.recovered) + result.not_recovered == result.switched_users
    assert 0 <= result.churn < 1 and result.stable_events > 0
    assert 0 < result.river_points <= 60


def test_drift_recovery_and_churn_definitions():
    truth = {
        "s1": UserTruth("s1", "a", "b"),
        "s2": UserTruth("s2", "b", "a"),
        "d1": UserTruth("d1", "a", "b", switch_to="b", switch_ts_ms=5, switch_event_index=2),
        "d2": UserTruth("d2", "a", "b", switch_to="b", switch_ts_ms=5, switch_event_index=2),
    }
    scenario = SimpleNamespace(truth=truth)
    result = quality.QualityResult("t", 2, 4, 0, 1)
    last = {"s1": 0, "s2": 1, "d1": 1, "d2": 0}
    # (events seen when the record was emitted, cluster, event ts)
    log = {
        "s1": [(1, 0, 0), (3, 1, 0), (4, 0, 0)],  # two changes beyond the first
        "s2": [(1, 1, 0)],
        "d1": [
            (1, 0, 0),
            (5, 1, 0),
        ],  # switch at the 3rd event, in the target cluster (1) at the 5th: 3 events
        "d2": [(1, 0, 0)],  # never moved: not recovered
    }
    n_changes = {u: len(v) for u, v in log.items()}
    events = {"s1": 5, "s2": 5, "d1": 6, "d2": 6}
    quality._drift_and_churn(result, scenario, last, n_changes, events, log, {"s1": 1})
    assert result.recovered == [3]
    assert result.not_recovered == 1
    assert result.stable_users == 2 and result.stable_events == 10 and result.stable_changes == 2
    assert result.churn == pytest.approx(0.2)
    assert result.baseline_churn == pytest.approx(0.1)
    assert result.late_churn == pytest.approx(2 / 6)  # both extra changes of s1 fall in its last 3 events
    assert result.stable_returns == 1  # s1 went back to cluster 0
    assert result.first_off_target == 0 and result.first_assignment_floor == 0.0


def test_first_assignment_floor_counts_stable_users_first_announced_off_target():
    truth = {u: UserTruth(u, "a", "b") for u in ("s1", "s2", "s3")} | {"s4": UserTruth("s4", "b", "a")}
    scenario = SimpleNamespace(truth=truth)
    result = quality.QualityResult("t", 2, 4, 0, 1)
    # topic a ends in cluster 0 (s1, s2, s3), topic b in cluster 1 (s4)
    last = {"s1": 0, "s2": 0, "s3": 0, "s4": 1}
    log = {
        "s1": [(1, 1, 0), (2, 0, 0)],  # first announced off target, corrected: one forced change
        "s2": [(1, 1, 0), (3, 0, 0), (4, 1, 0), (5, 0, 0)],  # the same, then a round trip (2 returns)
        "s3": [(1, 0, 0)],
        "s4": [(1, 1, 0)],
    }
    n_changes = {u: len(v) for u, v in log.items()}
    events = dict.fromkeys(truth, 5)
    quality._drift_and_churn(result, scenario, last, n_changes, events, log, {})
    assert result.first_off_target == 2
    assert result.first_assignment_floor == pytest.approx(2 / 20)
    assert result.stable_returns == 2
    assert result.churn == pytest.approx(4 / 20)


def test_movielens_core_on_a_tiny_log():
    # two tastes: users 1-6 watch "drama" movies, users 7-12 "comedy" movies
    items = {f"m{i}": f"{'drama' if i < 10 else 'comedy'} movie {i}" for i in range(20)}
    rng = np.random.default_rng(0)
    ratings = []
    t = 0
    for u in range(1, 13):
        pool = range(10) if u <= 6 else range(10, 20)
        for i in rng.choice(list(pool), size=8, replace=False):
            t += 1
            ratings.append((u, f"m{i}", 5, t))
        ratings.append((u, "m99", 2, t))  # a negative: never an event
    split = movielens.temporal_split(ratings)
    assert all(len(v) == 2 for v in split.test.values())  # round(0.2 * 8)
    assert all("m99" not in v for v in split.train_items.values())
    events = movielens.to_events(split.train)
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)
    driver = make_driver(
        n_clusters=2, encoder=TopicEncoder(seed=1), seed=1, catalog=movielens.catalog_of(items), warmup_batches=0
    )
    row = movielens.evaluate_k(split, events, driver, 2, batch_size=16)
    assert row.users_emitted == 1.0
    for value in (row.recall_product, row.recall_global, row.recall_offline):
        assert 0.0 <= value <= 1.0
    assert row.recall_offline >= row.recall_global  # taste clusters beat popularity here
    recs = movielens.cluster_popularity({1: 0, 7: 1}, split.train_items)
    assert all(not set(recs[u]) & set(split.train_items[u]) for u in recs)


@pytest.mark.skipif(
    not (DATA / "movielens-100k" / "u.data").exists(), reason="MovieLens 100K not in ../shared/data"
)
def test_movielens_loaders_on_real_files():
    items = movielens.load_items(DATA / "movielens-100k" / "u.item", DATA / "movielens-100k" / "u.genre")
    assert len(items) == 1682 and items["1"].startswith("Toy Story (1995). Genres: Animation")
    ratings = movielens.load_ratings(DATA / "movielens-100k" / "u.data")
    assert len(ratings) == 100_000


def test_speed_core_functions_run_small():
    rows = speed.kmeans_rates(ks=(4,), n_batches=2, batch=64, river_points=20, dim=8)
    assert rows[0].k == 4 and min(rows[0].product, rows[0].river, rows[0].sklearn) > 0
    assert speed.fold_rate(n_users=200, batch=32, dim=8, seconds=0.05) > 0
    x = speed.synthetic_embeddings(10, dim=8)
    assert np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


def test_cli_help_lists_options():
    from typer.testing import CliRunner

    from bench.__main__ import app

    out = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert out.exit_code == 0
    for option in ("--quick", "--only", "--ag-news", "--mind", "--movielens", "--save"):
        assert option in out.output


def test_default_data_dir_is_next_to_the_repo():
    assert common.DEFAULT_DATA_DIR == Path(__file__).resolve().parents[2].parent / "shared" / "data"
