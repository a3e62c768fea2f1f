"""``interest-stream report``: a self-contained HTML page about the clusters, optionally screenshotted.

Reads the centroids and assignments topics like ``inspect`` and writes one HTML file (charts
embedded as PNG, no external resources, so it opens offline and can be mailed). With
``--screenshot`` the page is also rendered to PNG by headless Chromium.

Example::

    $ interest-stream report --output report.html --screenshot report.png
"""

from __future__ import annotations

from pathlib import Path

import typer

from consumers.commands.inspect import BOOTSTRAP_HELP


def report(
    output: Path = typer.Option(Path("report.html"), "--output", "-o", help="HTML file to write."),
    screenshot: Path | None = typer.Option(
        None, "--screenshot", help="Also render the page to this PNG with headless Chromium."
    ),
    bootstrap_servers: str | None = typer.Option(None, "--bootstrap-servers", "-b", help=BOOTSTRAP_HELP),
    centroids_topic: str = typer.Option("centroids", help="Compacted topic of centroid snapshots."),
    assignments_topic: str = typer.Option("assignments", help="Compacted topic of assignment changes."),
    sample: int = typer.Option(2000, min=0, help="Users drawn on the map (a random sample, fixed seed)."),
    buckets: int = typer.Option(40, min=1, max=1000, help="Time buckets of the sizes-over-time chart."),
    width: int = typer.Option(1280, min=320, help="Screenshot window width in pixels."),
    height: int = typer.Option(1600, min=240, help="Screenshot window height in pixels."),
    timeout: float = typer.Option(30.0, min=1.0, help="Seconds allowed to read each topic to its end."),
    kafka_option: list[str] = typer.Option(
        [],
        "--kafka-option",
        help="Extra kafka-python consumer setting key=value (repeatable), e.g. security.protocol=SSL.",
    ),
) -> None:
    """Write an HTML report of the clusters (table, sizes over time, 2-D map); optionally screenshot it."""
    from rich.console import Console

    from consumers.chromium import ChromiumError
    from consumers.chromium import screenshot as take_screenshot
    from consumers.cluster_source import load_for_command
    from consumers.report_page import render_report
    from stream.cluster_view import build_view

    err = Console(stderr=True)
    bootstrap, data = load_for_command(bootstrap_servers, centroids_topic, assignments_topic, timeout, kafka_option)
    view = build_view(data.snapshots, data.changes)
    page = render_report(
        view,
        data.snapshots,
        data.changes,
        source=f"{bootstrap} · topics {centroids_topic}, {assignments_topic}",
        sample=sample,
        buckets=buckets,
        undecodable=data.undecodable,
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(page, encoding="utf-8")
    err.print(f"report written to {output} ({len(page) / 1024:,.0f} KiB)")
    if screenshot is not None:
        try:
            with err.status("rendering with headless Chromium"):
                take_screenshot(output, screenshot, window=(width, height))
        except ChromiumError as exc:
            err.print(f"[red]error:[/] {exc}")
            raise typer.Exit(1) from exc
        err.print(f"screenshot written to {screenshot}")
