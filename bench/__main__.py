"""``python -m bench``: run the benchmarks and print their tables (``make bench``).

Numbers are printed, never asserted. Each benchmark prints its targets with
PASS/MISS, and ratios against baselines measured in the same run.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from enum import StrEnum
from pathlib import Path

import typer

from bench.common import DEFAULT_DATA_DIR

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class Only(StrEnum):
    quality = "quality"
    movielens = "movielens"
    speed = "speed"
    service = "service"
    state = "state"
    trainer = "trainer"
    interests = "interests"
    encoders = "encoders"


app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)


@app.command()
def main(
    only: list[Only] = typer.Option(
        None,
        "--only",
        help="Run only this benchmark (repeatable): quality, movielens, speed, service, state, trainer, "
        "interests or encoders. Default: all.",
    ),
    quick: bool = typer.Option(
        False,
        "--quick",
        help="Small sizes (a few hundred users, fewer batches): a fast sanity run, noisy numbers.",
    ),
    ag_news: Path = typer.Option(
        DEFAULT_DATA_DIR / "ag-news" / "test.csv",
        "--ag-news",
        help="AG News test split CSV (class, title, text).",
    ),
    mind: Path = typer.Option(
        DEFAULT_DATA_DIR / "mind-small-subset" / "news.tsv",
        "--mind",
        help="MIND news.tsv (the small sample).",
    ),
    movielens: Path = typer.Option(
        DEFAULT_DATA_DIR / "movielens-100k",
        "--movielens",
        help="MovieLens 100K folder (u.data, u.item, u.genre).",
    ),
    users: int = typer.Option(2000, "--users", min=10, help="Simulated users per quality scenario."),
    events_per_user: float = typer.Option(
        15.0, "--events-per-user", min=2, help="Mean (Poisson) events per user."
    ),
    mind_categories: int = typer.Option(
        8, "--mind-categories", min=2, help="MIND: keep the k largest categories."
    ),
    batch_size: int = typer.Option(
        256, "--batch-size", min=1, help="Micro-batch size of the quality replay."
    ),
    river_points: int = typer.Option(
        3000,
        "--river-points",
        min=10,
        help="Quality: river KMeans learns on at most this many profile vectors.",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the scenarios and of every model."),
    no_disk_cache: bool = typer.Option(
        False,
        "--no-disk-cache",
        help="Do not read or write the corpus embeddings kept under ~/.cache/interest-stream/bench.",
    ),
    save: Path | None = typer.Option(None, "--save", help="Also write everything printed to this text file."),
    settings: list[str] = typer.Option(
        None,
        "--set",
        help="Override a ClusteringSettings field of the product, KEY=VALUE (VALUE as JSON, else a string); "
        "repeatable, e.g. --set hysteresis=0.05 --set kmeans_half_life=200.",
    ),
) -> None:
    """Run the benchmarks of the clustering core and print rich tables (targets with PASS/MISS)."""
    from rich.console import Console

    from bench.common import Report, blas_line, machine_line

    # wide tables stay readable when the output goes to a file or a pipe
    console = Console(record=save is not None, width=None if sys.stdout.isatty() else 180)
    report = Report(console)
    chosen = set(only or list(Only))
    overrides = _parse_overrides(settings or [])
    started = time.perf_counter()
    report.print(f"[bold]interest-stream benchmarks[/] — {'quick' if quick else 'full'} run, seed {seed}")
    report.print(f"python {platform.python_version()}, {machine_line()}")
    report.print(f"BLAS: {blas_line()}")
    if overrides:
        report.print(f"product settings overridden: {overrides}")
    try:
        import torch

        report.print(
            f"torch {torch.__version__}, {torch.get_num_threads()} threads, cuda={torch.cuda.is_available()}"
        )
    except ImportError:  # pragma: no cover
        pass

    quality_options = None
    if Only.quality in chosen or Only.interests in chosen:
        from bench import quality

        quality_options = quality.QualityOptions(
            ag_news=str(ag_news),
            mind=str(mind),
            n_users=min(users, 400) if quick else users,
            mean_events=min(events_per_user, 10.0) if quick else events_per_user,
            mind_categories=mind_categories,
            batch_size=batch_size,
            river_points=min(river_points, 500) if quick else river_points,
            seed=seed,
            use_disk_cache=not no_disk_cache,
            overrides=overrides,
        )
    if Only.quality in chosen:
        report.print("\n[bold underline]1. Quality on real text[/]")
        quality.run(quality_options, report)
    if Only.movielens in chosen:
        from bench import movielens as ml

        report.print("\n[bold underline]2. Usefulness on MovieLens 100K[/]")
        ks = (4, 16) if quick else ml.KS
        ml.run(movielens, report, ks=ks, seed=seed, use_disk_cache=not no_disk_cache, overrides=overrides)
    if Only.speed in chosen:
        from bench import speed

        report.print("\n[bold underline]3. Speed[/]")
        speed.run(movielens, report, quick=quick, seed=seed, overrides=overrides)
    if Only.service in chosen:
        from bench import service

        report.print("\n[bold underline]4. The service on a real broker[/]")
        service.run(report, movielens_dir=movielens, ag_news=ag_news, quick=quick, seed=seed)
    if Only.state in chosen:
        from bench import state

        report.print("\n[bold underline]5. Durable state and exactly-once[/]")
        state.run(report, quick=quick)

    if Only.trainer in chosen:
        from bench import trainer

        report.print("\n[bold underline]6. One model for the group: the trainer's capacity[/]")
        trainer.run(report, quick=quick, seed=seed)
        trainer.run_staleness(report, movielens_dir=movielens, quick=quick)

    if Only.interests in chosen:
        from bench import interests

        report.print("\n[bold underline]7. Interest mixes[/]")
        interests.run(quality_options, movielens, report, quick=quick)

    if Only.encoders in chosen:
        from bench import encoders

        report.print("\n[bold underline]8. Encoder backends[/]")
        encoders.run(report, ag_news=ag_news, mind=mind, movielens=movielens, quick=quick, seed=seed)

    report.print()
    report.targets_table(title="Summary of targets")
    met = sum(t.met for _, t in report.targets)
    report.print(
        f"{met} of {len(report.targets)} targets met; total {time.perf_counter() - started:.0f} s; {machine_line()}"
    )
    if save is not None:
        save.parent.mkdir(parents=True, exist_ok=True)
        save.write_text(console.export_text())
        console.print(f"[dim]saved to {save}[/]")


def _parse_overrides(items: list[str]) -> dict:
    """``["hysteresis=0.05", "device=cpu"]`` -> ``{"hysteresis": 0.05, "device": "cpu"}``, validated."""
    import json

    from stream.settings import ClusteringSettings

    out: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--set")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        if key.strip() in ("n_clusters", "seed"):
            raise typer.BadParameter(
                "n_clusters and seed are set by each benchmark (--seed)", param_hint="--set"
            )
        out[key.strip()] = value
    try:
        ClusteringSettings(**out)
    except Exception as exc:  # pydantic's message names the bad field
        raise typer.BadParameter(str(exc), param_hint="--set") from exc
    return out


if __name__ == "__main__":
    app()
