"""``interest-stream replay``: cluster a JSONL file of events offline, without Kafka.

Runs the very pipeline the streaming service runs (:mod:`consumers.replay`), over a
file instead of a topic, and writes what the service would publish: assignment
changes (and tombstones) to ``--output``, rejected lines with their reason to
``--rejects`` (default ``<output stem>.rejects.jsonl``), and, with ``--centroids``, the
final centroids and their label terms. Batches are every ``--batch-size`` lines of
the file, so the same file and options always give the same output.

Example::

    $ interest-stream replay --input events.jsonl --output changes.jsonl --clusters 8 \\
        --centroids centroids.json --catalog items.jsonl
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Opt = typer.Option


def replay(
    input: Annotated[Path, Opt("--input", "-i", help="Events file: one JSON event (a Kafka message value) per line.", exists=True, dir_okay=False, readable=True)],
    output: Annotated[Path, Opt("--output", "-o", help="Where to write assignment changes (JSONL; tombstone lines for forgotten users).", dir_okay=False)],
    clusters: Annotated[int, Opt("--clusters", "-k", min=1, help="Number of interest clusters.")] = 8,
    centroids: Annotated[Path | None, Opt(help="Also write the final centroids, sizes and label terms to this JSON file.", dir_okay=False)] = None,
    rejects: Annotated[Path | None, Opt(help="Where to write rejected lines with their reason [default: <output stem>.rejects.jsonl].", dir_okay=False)] = None,
    batch_size: Annotated[int, Opt(min=1, help="Lines per micro-batch (batches are cut every N lines of the file).")] = 256,
    catalog: Annotated[Path | None, Opt(help="Item catalog JSONL ({\"item_id\", \"text\", \"metadata\"?} per line) for events that name an item_id.", exists=True, dir_okay=False)] = None,
    default_ts: Annotated[int | None, Opt(help="Epoch ms used as the record timestamp of lines without a ts (default: such lines are rejected bad_timestamp).")] = None,
    model: Annotated[str | None, Opt(help="Local sentence-transformers model directory [default: packaged all-MiniLM-L6-v2].")] = None,
    device: Annotated[str | None, Opt(help="torch device, e.g. cpu or cuda [default: cuda when available].")] = None,
    backend: Annotated[str | None, Opt(help="Encoder backend: torch, openvino or openvino-int8 [default: openvino-int8]; a non-CPU --device selects torch.")] = None,
    encode_batch_size: Annotated[int, Opt(min=1, help="Texts per forward pass of the encoder.")] = 64,
    cache_size: Annotated[int, Opt(min=0, help="Embeddings kept in the LRU cache (0 disables it).")] = 100_000,
    half_life_s: Annotated[float, Opt(help="Half-life of user profiles, in seconds of event time.")] = 7 * 24 * 3600.0,
    kmeans_half_life: Annotated[float, Opt(help="Half-life of centroid statistics, in batches.")] = 50.0,
    hysteresis: Annotated[float, Opt(help="Cosine margin a new cluster must win by before a change is published.")] = 0.005,
    top_k: Annotated[int, Opt(min=1, help="Clusters listed with scores in each change record.")] = 3,
    recheck_budget: Annotated[int, Opt(min=0, help="Untouched users of moved clusters re-assessed per batch.")] = 256,
    seed: Annotated[int, Opt(help="Seed of the k-means initialisation and reseeding.")] = 42,
    blas_threads: Annotated[int, Opt(min=0, help="Threads of numpy's BLAS (0: library default). The matrices here are small: 1 avoids thread contention, which costs up to 10x on a busy machine.")] = 1,
    quiet: Annotated[bool, Opt("--quiet", "-q", help="No progress bar and no summary table.")] = False,
) -> None:
    """Cluster the users of an events file offline and write their assignment changes.

    Bad lines never stop a replay: each is written to the rejects file with its reason.
    Exit code 2: invalid options.
    """
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from pydantic import ValidationError
    from rich.console import Console

    from consumers.replay import run_replay
    from stream.settings import ClusteringSettings

    console = Console(stderr=True, quiet=quiet)
    if blas_threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=blas_threads, user_api="blas")  # numpy's BLAS only; torch keeps its threads
    try:
        settings = ClusteringSettings(
            n_clusters=clusters, seed=seed, half_life_s=half_life_s, kmeans_half_life=kmeans_half_life,
            hysteresis=hysteresis, top_k=top_k, recheck_budget=recheck_budget, model_path=model, device=device,
            encode_batch_size=encode_batch_size, cache_size=cache_size,
            **({"backend": backend} if backend is not None else {}),
        )
    except ValidationError as exc:
        console.print(f"[red]invalid options:[/red] {exc}")
        raise typer.Exit(2) from exc

    from stream.pipeline import Pipeline

    with console.status("loading the embedding model"):
        try:
            pipeline = Pipeline.from_settings(settings)
        except (FileNotFoundError, ValueError) as exc:
            console.print(f"[red]cannot load the model:[/red] {exc}")
            raise typer.Exit(2) from exc
    if catalog is not None:
        report = pipeline.catalog.load_jsonl(catalog)
        console.print(f"catalog: {report.loaded} items loaded, {len(report.skipped)} lines skipped")

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    total = input.stat().st_size
    with Progress(
        TextColumn("[bold]replay[/bold]"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[lines]} lines"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console, disable=quiet, transient=False,
    ) as progress:
        task = progress.add_task("replay", total=total or 1, lines=0)
        summary = run_replay(
            input, output, settings, batch_size=batch_size, rejects_path=rejects, centroids_path=centroids,
            default_ts_ms=default_ts, pipeline=pipeline,
            progress=lambda read, lines: progress.update(task, completed=read, lines=lines),
        )
    if not quiet:
        print_summary(console, summary)


def print_summary(console, summary) -> None:
    """The end-of-replay tables: totals, rejections by reason, clusters."""
    from rich.table import Table

    totals = Table(title="replay summary", show_header=False)
    totals.add_column("what")
    totals.add_column("value", justify="right")
    rows = [
        ("lines", f"{summary.lines:,}"),
        ("events applied", f"{summary.applied:,}"),
        ("rejected", f"{summary.n_rejected:,}"),
        ("forget events", f"{summary.forget_events:,}"),
        ("blank lines skipped", f"{summary.blank_lines:,}"),
        ("assignment changes", f"{summary.changes:,}"),
        ("tombstones", f"{summary.tombstones:,}"),
        ("users", f"{summary.users:,}"),
        ("model version", f"{summary.model_version:,}"),
        ("wall time", f"{summary.seconds:.2f} s"),
        ("events/s", f"{summary.events_per_s:,.0f}"),
        ("embedding time", f"{summary.embed_seconds:.2f} s"),
        ("texts encoded", f"{summary.texts_encoded:,}"),
        ("cache hit ratio", f"{summary.cache_hit_ratio:.1%}"),
        ("texts truncated", f"{summary.truncated:,}"),
        ("changes file", str(summary.output_path)),
        ("rejects file", str(summary.rejects_path)),
    ]
    if summary.centroids_path is not None:
        rows.append(("centroids file", str(summary.centroids_path)))
    for what, value in rows:
        totals.add_row(what, value)
    console.print(totals)

    if summary.rejected:
        reasons = Table(title="rejected by reason")
        reasons.add_column("reason")
        reasons.add_column("lines", justify="right")
        for reason, n in summary.rejected.most_common():
            reasons.add_row(reason, f"{n:,}")
        console.print(reasons)

    if summary.clusters:
        table = Table(title="clusters")
        table.add_column("cluster", justify="right")
        table.add_column("users", justify="right")
        table.add_column("weight", justify="right")
        table.add_column("label terms")
        for c in summary.clusters:
            table.add_row(str(c.cluster), f"{c.users:,}", f"{c.weight:,.1f}", ", ".join(c.label_terms))
        console.print(table)
    else:
        console.print("[yellow]the model is not initialised yet: too few distinct users to form clusters[/yellow]")
