"""Cluster plots: the 2-D cluster map and the sizes-over-time chart, drawn with matplotlib (Agg).

The numbers come from :mod:`stream.cluster_view`; this module only draws. Figures are
returned so callers can save them (``inspect --plot``) or embed them as PNG (``report``).

Example::

    >>> from stream.cluster_view import ClusterView
    >>> empty = ClusterView(rows=[], total_users=0, model_version=None, last_centroid_ms=None,
    ...                     centroids={}, assignments={})
    >>> png = figure_png(map_figure(empty))
    >>> png[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
    True
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from stream.cluster_view import (  # noqa: E402
    ClusterView,
    SizeSeries,
    place_users,
    project_centroids,
    top_terms,
)

MAP_CAPTION = (
    "Centroids: PCA of the centroid vectors (numpy SVD). Users: assignment records carry no vectors, "
    "so each sampled user is drawn near its cluster's centroid with a jitter proportional to "
    "(1 - score); distances between dots mean nothing."
)


def cluster_colours(clusters: Sequence[int]) -> dict[int, tuple[float, float, float, float]]:
    """A stable colour per cluster id (tab20, cycling)."""
    cmap = plt.get_cmap("tab20")
    return {c: cmap((2 * (i % 10) + (i // 10) % 2) % 20) for i, c in enumerate(sorted(clusters))}


def map_figure(
    view: ClusterView,
    sample: int = 2000,
    seed: int = 0,
    caption: bool = True,
    figsize: tuple[float, float] = (10, 7.5),
) -> Figure:
    """The 2-D map: labelled centroid markers and a sample of users coloured by cluster."""
    fig = Figure(figsize=figsize, dpi=100, layout="constrained")
    ax = fig.add_subplot()
    projection = project_centroids(view.centroids)
    if not projection.clusters:
        ax.text(0.5, 0.5, "no centroids yet", ha="center", va="center", transform=ax.transAxes, fontsize=14)
        ax.set_axis_off()
        return fig
    colours = cluster_colours(projection.clusters)
    placed = place_users(view.assignments, projection, sample=sample, seed=seed)
    if placed.user_ids:
        ax.scatter(
            placed.points[:, 0],
            placed.points[:, 1],
            s=6,
            c=[colours[c] for c in placed.clusters],
            alpha=0.45,
            linewidths=0,
            label=f"users (sample of {len(placed.user_ids)})",
        )
    sizes = {row.cluster: row.users for row in view.rows}
    offsets = _label_offsets(projection.points)
    for cluster, (x, y), (dx, dy) in zip(projection.clusters, projection.points, offsets, strict=True):
        ax.scatter(
            [x], [y], s=180, marker="X", color=colours[cluster], edgecolors="black", linewidths=1.2, zorder=3
        )
        terms = top_terms(view.centroids[cluster].label_terms, 2)
        text = f"{cluster}: {terms}" if terms else str(cluster)
        ax.annotate(
            f"{text}\n{sizes.get(cluster, 0)} users",
            (x, y),
            xytext=(dx, dy),
            textcoords="offset points",
            ha="left" if dx > 0 else "right",
            va="bottom" if dy > 0 else "top",
            fontsize=9,
            zorder=4,
            bbox={"boxstyle": "round,pad=0.25", "fc": "white", "ec": colours[cluster], "alpha": 0.85},
        )
    ax.set_xlabel(f"PC1 ({projection.explained[0]:.0%} of centroid variance)")
    ax.set_ylabel(f"PC2 ({projection.explained[1]:.0%} of centroid variance)")
    ax.set_title(
        f"Cluster map: {len(projection.clusters)} centroids, {view.total_users} users, "
        f"model version {view.model_version}"
    )
    ax.grid(True, alpha=0.25)
    ax.margins(0.12)
    if caption:
        fig.text(0.01, 0.005, MAP_CAPTION, fontsize=7.5, color="#555555", wrap=True, va="bottom")
        fig.get_layout_engine().set(rect=(0, 0.05, 1, 0.95))
    return fig


def _label_offsets(points: np.ndarray) -> list[tuple[int, int]]:
    """Greedy label placement: for each centroid, the corner (NE, SE, NW, SW) whose label box
    overlaps the already placed ones least (boxes approximated in axes fractions)."""
    if len(points) == 0:
        return []
    span = np.ptp(points, axis=0)
    span[span == 0] = 1.0
    unit = (points - points.min(axis=0)) / span
    box_w, box_h = 0.2, 0.09
    corners = [(8, 8, 1, 1), (8, -8, 1, -1), (-8, 8, -1, 1), (-8, -8, -1, -1)]
    placed: list[tuple[float, float, float, float]] = []
    out = []
    for ux, uy in unit:
        best, best_cost = corners[0], None
        for dx, dy, sx, sy in corners:
            x0, x1 = sorted((ux, ux + sx * box_w))
            y0, y1 = sorted((uy, uy + sy * box_h))
            cost = sum(
                max(0.0, min(x1, b[1]) - max(x0, b[0])) * max(0.0, min(y1, b[3]) - max(y0, b[2]))
                for b in placed
            )
            cost += 0.01 * (max(0.0, x1 - 1.05) + max(0.0, -0.05 - x0))  # prefer staying inside the axes
            if best_cost is None or cost < best_cost - 1e-12:
                best, best_cost = (dx, dy, sx, sy), cost
        dx, dy, sx, sy = best
        placed.append((*sorted((ux, ux + sx * box_w)), *sorted((uy, uy + sy * box_h))))
        out.append((dx, dy))
    return out


def sizes_figure(
    series: SizeSeries,
    labels: dict[int, str] | None = None,
    figsize: tuple[float, float] = (10, 4.5),
    title: bool = True,
) -> Figure:
    """Cluster sizes over time: one line per cluster."""
    fig = Figure(figsize=figsize, dpi=100, layout="constrained")
    ax = fig.add_subplot()
    if len(series.times_ms) == 0:
        ax.text(
            0.5, 0.5, "no assignment history", ha="center", va="center", transform=ax.transAxes, fontsize=14
        )
        ax.set_axis_off()
        return fig
    colours = cluster_colours(series.clusters)
    times = np.asarray(series.times_ms, dtype="datetime64[ms]")
    for j, cluster in enumerate(series.clusters):
        name = f"{cluster}: {labels[cluster]}" if labels and labels.get(cluster) else str(cluster)
        ax.plot(
            times,
            series.sizes[:, j],
            color=colours[cluster],
            linewidth=1.8,
            marker="o",
            markersize=2.5,
            label=name,
        )
    ax.set_ylabel("users")
    if title:
        ax.set_title("Cluster sizes over time (replayed from the assignments topic)")
    _time_axis(ax)
    ax.grid(True, alpha=0.25)
    ax.set_ylim(bottom=0)
    if len(series.clusters) <= 20:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return fig


def _time_axis(ax) -> None:
    locator = mdates.AutoDateLocator(minticks=3, maxticks=6)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """Render a figure to PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return buf.getvalue()


def weights_figure(
    weights: dict[int, tuple[np.ndarray, np.ndarray]],
    labels: dict[int, str] | None = None,
    figsize: tuple[float, float] = (10, 4.5),
    title: bool = True,
) -> Figure:
    """Centroid weights over time (one line per cluster, from the centroid snapshot history)."""
    fig = Figure(figsize=figsize, dpi=100, layout="constrained")
    ax = fig.add_subplot()
    if not weights:
        ax.text(
            0.5, 0.5, "no centroid history", ha="center", va="center", transform=ax.transAxes, fontsize=14
        )
        ax.set_axis_off()
        return fig
    colours = cluster_colours(list(weights))
    for cluster, (times_ms, values) in weights.items():
        name = f"{cluster}: {labels[cluster]}" if labels and labels.get(cluster) else str(cluster)
        ax.plot(
            np.asarray(times_ms, dtype="datetime64[ms]"),
            values,
            color=colours[cluster],
            linewidth=1.8,
            marker="o",
            markersize=2.5,
            label=name,
            drawstyle="steps-post",
        )
    ax.set_ylabel("decayed weight")
    if title:
        ax.set_title("Centroid weights over time (from the centroids topic)")
    _time_axis(ax)
    ax.grid(True, alpha=0.25)
    ax.set_ylim(bottom=0)
    if len(weights) <= 20:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return fig
