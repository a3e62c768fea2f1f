"""``interest-stream inspect``: the clusters as the output topics show them now.

Reads the compacted centroids and assignments topics to their current ends (read_committed,
no consumer group, nothing committed) and prints one row per cluster: users (primary),
users holding it as a secondary interest, weight, label terms, last change; plus totals and
the distribution of interests per user. ``--json`` prints the same as JSON, ``--plot map.png``
draws the 2-D cluster map.

Example::

    $ interest-stream inspect --bootstrap-servers localhost:9092 --plot map.png
    $ interest-stream inspect --json | jq '.totals.users'
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from consumers.kafka_config import bootstrap_help

BOOTSTRAP_HELP = bootstrap_help("localhost:9092")


def inspect(
    bootstrap_servers: str | None = typer.Option(None, "--bootstrap-servers", "-b", help=BOOTSTRAP_HELP),
    centroids_topic: str = typer.Option("centroids", help="Compacted topic of centroid snapshots."),
    assignments_topic: str = typer.Option("assignments", help="Compacted topic of assignment changes."),
    plot: Path | None = typer.Option(None, "--plot", help="Also draw the 2-D cluster map to this PNG file."),
    sample: int = typer.Option(2000, min=0, help="Users drawn on the map (a random sample, fixed seed)."),
    json_output: bool = typer.Option(False, "--json", help="Print the table and totals as JSON instead."),
    timeout: float = typer.Option(30.0, min=1.0, help="Seconds allowed to read each topic to its end."),
    kafka_option: list[str] = typer.Option(
        [],
        "--kafka-option",
        help="Extra kafka-python consumer setting key=value (repeatable), e.g. security.protocol=SSL.",
    ),
) -> None:
    """Show the clusters: users (primary and secondary interest), weight, label terms and last change per cluster."""
    from rich.console import Console
    from rich.table import Table

    from consumers.cluster_source import load_for_command
    from stream.cluster_view import build_view, iso_time

    err = Console(stderr=True)
    bootstrap, data = load_for_command(bootstrap_servers, centroids_topic, assignments_topic, timeout, kafka_option)
    view = build_view(data.snapshots, data.changes)

    if plot is not None:
        from consumers.cluster_plot import map_figure

        plot.parent.mkdir(parents=True, exist_ok=True)
        map_figure(view, sample=sample).savefig(plot, format="png", facecolor="white")
        err.print(f"map written to {plot}")
    if data.undecodable:
        err.print(f"[yellow]warning:[/] skipped {data.undecodable} undecodable record(s)")

    if json_output:
        payload = view.to_dict()
        payload["totals"]["undecodable_records"] = data.undecodable
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        return

    table = Table(title=f"clusters on {bootstrap}", title_style="bold")
    table.add_column("cluster", justify="right")
    table.add_column("users", justify="right")
    table.add_column("share", justify="right")
    table.add_column("secondary", justify="right")
    table.add_column("weight", justify="right")
    table.add_column("label terms")
    table.add_column("last change (UTC)")
    for row in view.rows:
        share = f"{row.users / view.total_users:.1%}" if view.total_users else "-"
        table.add_row(
            str(row.cluster),
            f"{row.users:,}",
            share,
            f"{row.secondary_users:,}",
            f"{row.weight:,.1f}" if row.weight is not None else "-",
            ", ".join(row.label_terms[:5]) or "[dim](no centroid yet)[/]",
            iso_time(row.last_change_ms) or "-",
        )
    out = Console()
    out.print(table)
    out.print(
        f"users: [bold]{view.total_users:,}[/]   clusters: [bold]{len(view.rows)}[/]   "
        f"model version: [bold]{view.model_version if view.model_version is not None else '-'}[/]   "
        f"last centroid: [bold]{iso_time(view.last_centroid_ms) or 'never'}[/]"
    )
    if view.interests_per_user:
        spread = "   ".join(f"{n}: [bold]{users:,}[/]" for n, users in view.interests_per_user.items())
        out.print(f"users by number of interests — {spread}")
