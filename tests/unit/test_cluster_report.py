"""Unit tests of the broker-free parts of inspect/report: topic merging, decoding, plots and the HTML page."""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest

from consumers.chromium import chromium_command
from consumers.cluster_plot import figure_png, map_figure, sizes_figure
from consumers.cluster_source import decode_histories, resolve_bootstrap
from consumers.report_page import render_report
from consumers.settings import parse_kafka_options
from consumers.topic_reader import TopicRecord, latest_by_key, merge_partitions
from stream.cluster_view import build_view, sizes_over_time
from stream.records import AssignmentChange, CentroidSnapshot, ClusterScore, encode_record

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
T0 = 1_700_000_000_000


def test_merge_keeps_partition_order_even_when_timestamps_go_backwards():
    p0 = [TopicRecord(0, 0, 50, b"k", b"1"), TopicRecord(0, 1, 10, b"k", b"2")]  # clock went back
    p1 = [TopicRecord(1, 0, 20, b"j", b"x"), TopicRecord(1, 1, 60, b"j", None)]
    merged = merge_partitions([p0, p1])
    assert sorted(merged) == sorted(p0 + p1)
    assert [r for r in merged if r.partition == 0] == p0
    assert latest_by_key(merged) == {b"k": b"2"}


def test_decode_histories_keeps_tombstones_and_counts_garbage():
    snap = CentroidSnapshot(
        cluster=1, vector=[0.5, 0.5], weight=2.0, label_terms=["x"], model_version=2, emit_ts_ms=T0
    )
    change = AssignmentChange(
        user_id="u",
        cluster=1,
        previous_cluster=None,
        score=0.5,
        top=[ClusterScore(cluster=1, score=0.5)],
        model_version=2,
        event_ts_ms=T0,
        emit_ts_ms=T0,
    )
    snaps, changes, bad = decode_histories(
        [TopicRecord(0, 0, T0, b"1", encode_record(snap)), TopicRecord(0, 1, T0, b"1", b'{"cluster": "x"}')],
        [
            TopicRecord(0, 0, T0, b"u", encode_record(change)),
            TopicRecord(0, 1, T0 + 1, b"u", None),
            TopicRecord(0, 2, T0 + 2, None, encode_record(change)),
            TopicRecord(0, 3, T0 + 3, b"v", b"not json"),
        ],
    )
    assert snaps == [snap]
    assert [(c.user_id, c.change, c.ts_ms) for c in changes] == [("u", change, T0), ("u", None, T0 + 1)]
    assert bad == 3


def test_bootstrap_and_kafka_options():
    env = {"KAFKA_BOOTSTRAP_SERVERS": "k:1", "INTEREST_STREAM_BOOTSTRAP_SERVERS": "i:2"}
    assert resolve_bootstrap(None, env) == "i:2"  # one rule for every command: INTEREST_STREAM_ first
    assert resolve_bootstrap("  ", {"INTEREST_STREAM_BOOTSTRAP_SERVERS": "i:2"}) == "i:2"
    assert resolve_bootstrap(None, {"KAFKA_BOOTSTRAP_SERVERS": "k:1"}) == "k:1"
    assert resolve_bootstrap(None, {}, dev_broker=False) is None  # inspect/report then use DEFAULT_BOOTSTRAP
    with pytest.raises(ValueError):
        parse_kafka_options(["novalue"])


def _records(k=4, users=300, seed=0):
    rng = np.random.default_rng(seed)
    snaps = [
        CentroidSnapshot(
            cluster=c,
            vector=rng.normal(size=32).tolist(),
            weight=float(c + 1),
            label_terms=[f"term{c}a", f"term{c}b", "<b>&"],
            model_version=3,
            emit_ts_ms=T0 + 1000 * c,
        )
        for c in range(k)
    ]
    from stream.cluster_view import UserRecord

    history = []
    for i in range(users):
        c = int(rng.integers(k))
        body = AssignmentChange(
            user_id=f"u{i}",
            cluster=c,
            previous_cluster=None,
            score=float(rng.random()),
            top=[],
            model_version=3,
            event_ts_ms=T0 + i * 10,
            emit_ts_ms=T0 + i * 10,
        )
        history.append(UserRecord(f"u{i}", body, T0 + i * 10))
    return snaps, history


def test_plots_render_png():
    snaps, history = _records()
    view = build_view(snaps, history)
    assert figure_png(map_figure(view, sample=100)).startswith(PNG_MAGIC)
    assert figure_png(sizes_figure(sizes_over_time(history))).startswith(PNG_MAGIC)


def test_report_is_self_contained_and_escapes_labels():
    snaps, history = _records()
    view = build_view(snaps, history)
    page = render_report(view, snaps, history, source="unit <test>", now_ms=T0)
    # nothing fetched from elsewhere: every src/href is an inline data: URI
    refs = re.findall(r'(?:src|href)\s*=\s*["\']([^"\']*)', page)
    assert refs and all(r.startswith("data:image/png;base64,") for r in refs)
    assert "<script" not in page and "@import" not in page and "url(" not in page
    for ref in refs:
        assert base64.b64decode(ref.split(",", 1)[1]).startswith(PNG_MAGIC)
    assert "&lt;b&gt;&amp;" in page and "<b>&" not in page  # label terms are escaped
    assert "unit &lt;test&gt;" in page
    for row in view.rows:
        assert f"term{row.cluster}a" in page and f">{row.users:,}<" in page
    assert f">{view.total_users:,}<" in page


def test_chromium_command_is_offline_and_uses_the_given_profile(tmp_path):
    cmd = chromium_command("chromium", tmp_path / "r.html", tmp_path / "o.png", tmp_path / "prof", (800, 600))
    assert "--headless" in cmd and "--no-sandbox" in cmd and "--disable-background-networking" in cmd
    assert f"--user-data-dir={tmp_path / 'prof'}" in cmd and "--window-size=800,600" in cmd
    assert cmd[-1] == (tmp_path / "r.html").as_uri()
