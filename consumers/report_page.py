"""Report page: one self-contained HTML file about the clusters (no external JS, CSS, fonts or CDN).

Charts are matplotlib PNGs embedded as base64 ``data:`` URIs; styles are inline. The page
holds the summary (users, clusters, model version, last centroid), the cluster table with
a size bar per cluster, cluster sizes and centroid weights over time, and the 2-D map.

Example::

    >>> from stream.cluster_view import build_view
    >>> page = render_report(build_view([], []), [], [], source="test")
    >>> page.startswith("<!DOCTYPE html>"), "http" in page.split("<body>")[1]
    (True, False)
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from datetime import UTC, datetime

from consumers.cluster_plot import (
    MAP_CAPTION,
    cluster_colours,
    figure_png,
    map_figure,
    sizes_figure,
    weights_figure,
)
from stream.cluster_view import (
    ClusterView,
    UserRecord,
    iso_time,
    sizes_over_time,
    top_terms,
    weights_over_time,
)
from stream.records import CentroidSnapshot

STYLE = """
* { box-sizing: border-box; }
body { margin: 0; font-family: "DejaVu Sans", "Liberation Sans", Arial, sans-serif; color: #1f2933;
       background: #f4f6f8; }
header { background: #1f3a5f; color: #fff; padding: 14px 24px; }
header h1 { margin: 0 0 4px 0; font-size: 24px; font-weight: 600; }
header .sub { font-size: 13px; opacity: 0.85; }
main { padding: 16px 24px 24px 24px; max-width: 1280px; }
.cards { display: flex; gap: 14px; margin-bottom: 18px; flex-wrap: wrap; }
.card { background: #fff; border-radius: 8px; padding: 10px 16px; min-width: 120px;
        box-shadow: 0 1px 3px rgba(0,0,0,0.12); }
.card .v { font-size: 20px; font-weight: 600; }
.card .k { font-size: 12px; color: #616e7c; text-transform: uppercase; letter-spacing: 0.04em; }
section { background: #fff; border-radius: 8px; padding: 14px 18px; margin-bottom: 18px;
          box-shadow: 0 1px 3px rgba(0,0,0,0.12); }
section h2 { font-size: 17px; margin: 0 0 10px 0; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th { text-align: left; color: #52606d; font-weight: 600; border-bottom: 2px solid #d9e2ec; padding: 6px 8px; }
td { border-bottom: 1px solid #eef2f6; padding: 5px 8px; vertical-align: middle; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 3px; margin-right: 6px;
          vertical-align: -1px; }
.bar { background: #e4e7eb; border-radius: 3px; height: 10px; width: 160px; }
.bar > div { height: 10px; border-radius: 3px; }
.grid2 { display: grid; grid-template-columns: 1fr 1fr; gap: 18px; }
.grid2 section { margin-bottom: 0; }
img { max-width: 100%; display: block; margin: 0 auto; }
.caption { font-size: 12px; color: #616e7c; margin-top: 6px; }
.empty { color: #9aa5b1; font-style: italic; }
"""


def _png_img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _css_colour(rgba: tuple[float, float, float, float]) -> str:
    r, g, b = (round(255 * c) for c in rgba[:3])
    return f"#{r:02x}{g:02x}{b:02x}"


def _table(view: ClusterView) -> str:
    if not view.rows:
        return '<p class="empty">No clusters yet: the centroids and assignments topics are empty.</p>'
    colours = cluster_colours([row.cluster for row in view.rows])
    biggest = max((row.users for row in view.rows), default=0) or 1
    lines = [
        "<table><thead><tr><th>cluster</th><th>label terms</th><th class='num'>users</th><th>share</th>"
        "<th class='num'>secondary interest</th><th class='num'>weight</th><th class='num'>model</th><th>last change (UTC)</th></tr></thead><tbody>"
    ]
    for row in view.rows:
        colour = _css_colour(colours[row.cluster])
        share = row.users / view.total_users if view.total_users else 0.0
        weight = f"{row.weight:,.1f}" if row.weight is not None else "&ndash;"
        version = "" if row.model_version is None else str(row.model_version)
        terms = html.escape(", ".join(row.label_terms[:6])) or '<span class="empty">no centroid yet</span>'
        lines.append(
            f"<tr><td><span class='swatch' style='background:{colour}'></span>{row.cluster}</td>"
            f"<td>{terms}</td><td class='num'>{row.users:,}</td>"
            f"<td><div class='bar' title='{share:.1%}'><div style='width:{100 * row.users / biggest:.1f}%;"
            f"background:{colour}'></div></div></td>"
            f"<td class='num'>{row.secondary_users:,}</td><td class='num'>{weight}</td><td class='num'>{version}"
            f"</td><td>{html.escape(iso_time(row.last_change_ms) or '')}</td></tr>"
        )
    lines.append("</tbody></table>")
    return "".join(lines)


def _interests_table(view: ClusterView) -> str:
    """Users by the number of interests in their latest record, as a bar table."""
    counts = view.interests_per_user
    if not counts:
        return '<p class="empty">No users yet.</p>'
    total = sum(counts.values()) or 1
    biggest = max(counts.values()) or 1
    lines = ["<table><thead><tr><th class='num'>interests</th><th class='num'>users</th><th>share</th>"
             "</tr></thead><tbody>"]
    for n, users in counts.items():
        label = "none (no interests in the record)" if n == 0 else str(n)
        lines.append(
            f"<tr><td class='num'>{label}</td><td class='num'>{users:,}</td>"
            f"<td><div class='bar' title='{users / total:.1%}'><div style='width:{100 * users / biggest:.1f}%;"
            f"background:#3e4c59'></div></div></td></tr>"
        )
    lines.append("</tbody></table>")
    return "".join(lines)


def render_report(
    view: ClusterView,
    snapshots: Sequence[CentroidSnapshot],
    history: Sequence[UserRecord],
    *,
    source: str,
    sample: int = 2000,
    buckets: int = 40,
    undecodable: int = 0,
    now_ms: int | None = None,
) -> str:
    """The whole HTML page as a string."""
    generated = iso_time(now_ms) if now_ms is not None else datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    labels = {row.cluster: top_terms(row.label_terms, 2) for row in view.rows}
    sizes_png = figure_png(
        sizes_figure(sizes_over_time(history, buckets=buckets), labels, figsize=(6.0, 3.4), title=False)
    )
    weights_png = figure_png(
        weights_figure(weights_over_time(snapshots), labels, figsize=(6.0, 3.4), title=False)
    )
    map_png = figure_png(map_figure(view, sample=sample, caption=False, figsize=(11.5, 5.8)))
    cards = [
        ("users", f"{view.total_users:,}"),
        ("clusters", f"{len(view.rows)}"),
        ("model version", "&ndash;" if view.model_version is None else str(view.model_version)),
        ("last centroid (UTC)", html.escape(iso_time(view.last_centroid_ms) or "never")),
        ("centroid / assignment records", f"{len(snapshots):,} / {len(history):,}"),
    ]
    if undecodable:
        cards.append(("undecodable records", f"{undecodable:,}"))
    cards_html = "".join(
        f"<div class='card'><div class='v'>{v}</div><div class='k'>{k}</div></div>" for k, v in cards
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>interest-stream clusters</title>
<style>{STYLE}</style></head>
<body>
<header><h1>interest-stream &middot; clusters</h1>
<div class="sub">{html.escape(source)} &middot; generated {html.escape(generated)}</div></header>
<main>
<div class="cards">{cards_html}</div>
<section><h2>Clusters</h2>{_table(view)}
<div class="caption">Users: users whose latest assignment is the cluster (tombstoned users removed).
Secondary interest: users whose latest record lists the cluster among their interests while their
primary cluster is another one. Weight: the centroid's decayed weight in its latest snapshot.</div></section>
<section><h2>Interests per user</h2>{_interests_table(view)}
<div class="caption">Clusters listed in each user's latest record (<code>interests</code>: the clusters holding
at least <code>min_interest_share</code> of the user's decayed events).</div></section>
<div class="grid2">
<section><h2>Cluster sizes over time</h2>{_png_img(sizes_png, "cluster sizes over time")}
<div class="caption">Replayed from the assignments topic in {buckets} time buckets; after log compaction
only each user's latest record remains, so older history may be thinner than it was.</div></section>
<section><h2>Centroid weights over time</h2>{_png_img(weights_png, "centroid weights over time")}
<div class="caption">One point per centroid snapshot still in the centroids topic.</div></section>
</div>
<section style="margin-top:18px"><h2>Cluster map</h2>{_png_img(map_png, "2-D cluster map")}
<div class="caption">{html.escape(MAP_CAPTION)}</div></section>
</main></body></html>
"""
