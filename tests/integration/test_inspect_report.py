"""`inspect` and `report` against a real broker: records written to real compacted topics, read back.

Writes centroid snapshots and assignment changes (built with the record structs) to fresh
compacted topics, part of them in a committed transaction and some bogus ones in an aborted
transaction (which ``read_committed`` must hide), then runs the two commands and checks
their output against a replay of what was written.
"""

from __future__ import annotations

import json
import os
import uuid
from collections import Counter

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from consumers.commands import inspect as inspect_cmd
from consumers.commands import report as report_cmd
from stream.records import AssignmentChange, CentroidSnapshot, ClusterScore, encode_record

pytestmark = pytest.mark.integration

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
T0 = 1_700_000_000_000
K = 5
DIM = 384
TERMS = [["space", "nasa", "orbit"], ["football", "goal"], ["stocks", "market"], ["vote", "senate"], ["film"]]


def cli_app() -> typer.Typer:
    """The two commands as ``consumers/cli.py`` registers them."""
    app = typer.Typer()
    app.command("inspect")(inspect_cmd.inspect)
    app.command("report")(report_cmd.report)
    return app


def _create_compacted(bootstrap: str, names_partitions: dict[str, int]) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="test-inspect-report")
    try:
        admin.create_topics(
            [
                NewTopic(
                    name, num_partitions=n, replication_factor=1, topic_configs={"cleanup.policy": "compact"}
                )
                for name, n in names_partitions.items()
            ]
        )
    finally:
        admin.close()


def _delete(bootstrap: str, names: list[str]) -> None:
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="test-inspect-report")
    try:
        admin.delete_topics(names)
    except Exception:  # noqa: BLE001 - best effort clean-up
        pass
    finally:
        admin.close()


def _generate(seed: int = 7):
    """Snapshots and changes as the service would emit them, in emit order; tombstones as (user, None, ts)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(K, DIM))
    snapshots = []
    for version in range(1, 5):
        for c in range(K):
            v = base[c] + 0.1 * rng.normal(size=DIM)
            snapshots.append(
                CentroidSnapshot(
                    cluster=c,
                    vector=(v / np.linalg.norm(v)).tolist(),
                    weight=float(rng.uniform(1, 50)),
                    label_terms=TERMS[c],
                    model_version=version,
                    emit_ts_ms=T0 + version * 60_000 + c,
                )
            )
    changes: list[tuple[str, AssignmentChange | None, int]] = []
    current: dict[str, int] = {}
    for i in range(900):
        user = f"user-{int(rng.integers(250))}"
        ts = T0 + i * 500
        if i % 97 == 96 and user in current:
            changes.append((user, None, ts))
            del current[user]
            continue
        cluster = int(rng.choice(K, p=[0.35, 0.25, 0.2, 0.15, 0.05]))
        if current.get(user) == cluster:
            continue
        score = float(rng.uniform(0.2, 0.95))
        change = AssignmentChange(
            user_id=user,
            cluster=cluster,
            previous_cluster=current.get(user),
            score=score,
            top=[ClusterScore(cluster=cluster, score=score)],
            model_version=1 + i // 250,
            event_ts_ms=ts - 30,
            emit_ts_ms=ts,
        )
        changes.append((user, change, ts))
        current[user] = cluster
    return snapshots, changes, current


@pytest.fixture(scope="module")
def written(kafka_bootstrap):
    """Fresh compacted topics holding the generated records; yields (bootstrap, topics, expectations)."""
    from kafka import KafkaProducer

    suffix = uuid.uuid4().hex[:8]
    centroids, assignments = f"test-centroids-{suffix}", f"test-assignments-{suffix}"
    _create_compacted(kafka_bootstrap, {centroids: 1, assignments: 3})
    snapshots, changes, current = _generate()
    half = len(changes) // 2

    plain = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    for snap in snapshots:
        plain.send(
            centroids, key=str(snap.cluster).encode(), value=encode_record(snap), timestamp_ms=snap.emit_ts_ms
        )
    for user, change, ts in changes[:half]:
        value = None if change is None else encode_record(change)
        plain.send(assignments, key=user.encode(), value=value, timestamp_ms=ts)
    plain.flush()
    plain.close()

    tx = KafkaProducer(
        bootstrap_servers=kafka_bootstrap, transactional_id=f"test-inspect-{suffix}", acks="all"
    )
    tx.init_transactions()
    tx.begin_transaction()
    for user, change, ts in changes[half:]:
        value = None if change is None else encode_record(change)
        tx.send(assignments, key=user.encode(), value=value, timestamp_ms=ts)
    tx.commit_transaction()
    # An aborted transaction: every user moved to a bogus cluster 99. read_committed must hide it.
    tx.begin_transaction()
    last_ts = changes[-1][2]
    for user in current:
        bogus = AssignmentChange(
            user_id=user,
            cluster=99,
            previous_cluster=current[user],
            score=0.5,
            top=[],
            model_version=999,
            event_ts_ms=last_ts + 1,
            emit_ts_ms=last_ts + 1,
        )
        tx.send(assignments, key=user.encode(), value=encode_record(bogus), timestamp_ms=last_ts + 1)
    tx.flush()
    tx.abort_transaction()
    tx.close()

    latest = {}
    for snap in snapshots:
        latest[snap.cluster] = snap
    expected = {
        "sizes": Counter(current.values()),
        "users": len(current),
        "latest": latest,
        "model_version": max(s.model_version for s in latest.values()),
        "last_centroid_ms": max(s.emit_ts_ms for s in latest.values()),
    }
    yield kafka_bootstrap, centroids, assignments, expected
    _delete(kafka_bootstrap, [centroids, assignments])


def _args(written) -> list[str]:
    bootstrap, centroids, assignments, _ = written
    return [
        "--bootstrap-servers",
        bootstrap,
        "--centroids-topic",
        centroids,
        "--assignments-topic",
        assignments,
    ]


def test_inspect_json_matches_what_was_written(written):
    expected = written[3]
    result = CliRunner().invoke(cli_app(), ["inspect", *_args(written), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    rows = {row["cluster"]: row for row in payload["clusters"]}
    assert set(rows) == set(range(K))  # no cluster 99 from the aborted transaction
    assert {c: r["users"] for c, r in rows.items()} == {c: expected["sizes"].get(c, 0) for c in range(K)}
    for c, row in rows.items():
        snap = expected["latest"][c]
        assert row["weight"] == pytest.approx(snap.weight)
        assert row["label_terms"] == snap.label_terms
        assert row["model_version"] == snap.model_version
        assert row["last_change_ms"] >= snap.emit_ts_ms
    totals = payload["totals"]
    assert totals["users"] == expected["users"]
    assert totals["model_version"] == expected["model_version"]
    assert totals["last_centroid_ms"] == expected["last_centroid_ms"]
    assert totals["undecodable_records"] == 0


def test_inspect_table_and_plot(written, tmp_path):
    expected = written[3]
    out = tmp_path / "map.png"
    result = CliRunner().invoke(
        cli_app(), ["inspect", *_args(written), "--plot", str(out), "--sample", "300"]
    )
    assert result.exit_code == 0, result.output
    for c in range(K):
        assert TERMS[c][0] in result.stdout
    assert f"users: {expected['users']:,}" in result.stdout
    data = out.read_bytes()
    assert len(data) > 1000 and data.startswith(PNG_MAGIC)


def test_inspect_missing_topic_fails_cleanly(written):
    bootstrap = written[0]
    result = CliRunner().invoke(
        cli_app(),
        [
            "inspect",
            "--bootstrap-servers",
            bootstrap,
            "--centroids-topic",
            f"absent-{uuid.uuid4().hex[:8]}",
            "--timeout",
            "10",
        ],
    )
    assert result.exit_code == 1
    assert "does not exist" in result.output


def _chromium_or_skip() -> None:
    from consumers.chromium import ChromiumError, ensure_chromium

    try:
        ensure_chromium(install=True)
    except ChromiumError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"chromium is required on CI: {exc}")
        pytest.skip(f"no headless Chromium and it could not be installed: {exc}")


def test_report_html_and_screenshot(written, tmp_path):
    from PIL import Image

    _chromium_or_skip()
    expected = written[3]
    html_path, shot = tmp_path / "report.html", tmp_path / "report.png"
    result = CliRunner().invoke(
        cli_app(),
        ["report", *_args(written), "--output", str(html_path), "--screenshot", str(shot), "--buckets", "20"],
    )
    assert result.exit_code == 0, result.output
    page = html_path.read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert page.count("data:image/png;base64,") == 3
    for c in range(K):
        assert TERMS[c][0] in page
    assert f">{expected['users']:,}<" in page

    with Image.open(shot) as image:
        assert image.format == "PNG"
        assert image.size == (1280, 1600)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    # a blank or error page has a handful of colours; charts and anti-aliased text have hundreds
    assert colours is not None and len(colours) > 200
    dominant = max(count for count, _ in colours)
    assert dominant < 0.9 * 1280 * 1600
