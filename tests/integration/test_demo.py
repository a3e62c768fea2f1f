"""``interest-stream demo`` (what ``make demo`` runs) end to end on the real broker, shortened; and its
summary arithmetic (reconciliation, start-up backlog vs steady-state latency) without a broker."""

from __future__ import annotations

import io
import os
import re
import subprocess
from pathlib import Path

import pytest
from service_harness import CLI, REPO


def _row(out: str, label: str) -> str:
    match = re.search(rf"│ {re.escape(label)}\s*│\s*(.*?)\s*│", out)
    assert match, f"no {label!r} row in the summary:\n{out[-3000:]}"
    return match.group(1)


def _int(text: str) -> int:
    return int(text.replace(",", ""))


@pytest.mark.integration
def test_demo_runs_clusters_drains_and_reconciles(kafka_bootstrap):
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "HF_HUB_OFFLINE": "1", "COLUMNS": "160"}
    done = subprocess.run([*CLI, "demo", "--duration", "12", "--users", "40", "--rate", "150"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=400)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "/metrics" in out
    summary = out[out.index("demo summary"):]
    sent, broken = map(_int, re.fullmatch(r"([\d,]+) \(\+(\d+)\)", _row(summary, "events sent (+ broken records)")).groups())
    consumed = _int(_row(summary, "records consumed by the service"))
    applied = _int(_row(summary, "events applied to profiles"))
    dead = sum(_int(n) for n in re.findall(r"│ dead-lettered: \w+\s*│\s*([\d,]+)", summary))
    users = _int(_row(summary, "users"))
    assert sent > 500 and users > 0
    assert broken > 0 and dead >= broken, "the broken demo records are dead-lettered"
    # the service was stopped only once it had caught up: every record sent is accounted for
    assert consumed == sent + broken == applied + dead, summary
    assert _row(summary, "reconciled").startswith("yes"), summary
    # start-up backlog and steady state are reported apart
    backlog = _row(summary, "start-up backlog (until the service kept up)")
    assert re.fullmatch(r"\d+ s, [\d,]+ events, p99 \d+ ms", backlog) or backlog == "not drained while producing"
    if backlog != "not drained while producing":
        assert re.fullmatch(r"\d+ / \d+ ms \([\d,]+ events\)", _row(summary, "end-to-end latency p50 / p99 (steady state)"))
    assert re.search(r"service exit code\s*│\s*0", out), "the service stopped cleanly (SIGTERM, exit 0)"
    # the demo creates its topics as the service's settings say: no partition-count warnings
    log = Path(re.search(r"Service log: (\S+)", out).group(1)).read_text()
    assert "partitions; settings say" not in log, [ln for ln in log.splitlines() if "partitions" in ln]


# ---------------------------------------------------------------------------- the summary, without a broker


def _histogram(counts: dict[float, float]) -> dict:
    """Metric samples of a latency histogram with cumulative ``counts`` per upper bound."""
    name = "interest_end_to_end_latency_seconds"
    samples = {(name + "_bucket", (("le", str(le)),)): v for le, v in counts.items()}
    samples[(name + "_count", ())] = max(counts.values())
    return samples


def _view(now: dict, prev: dict | None = None):
    from consumers.commands.demo import MetricsView

    view = MetricsView("http://unused")
    view.now, view.prev = now, prev
    return view


class _Producer:
    def __init__(self, sent: int, broken: int, started_at: float | None = 0.0) -> None:
        self.sent, self.broken, self.failed, self.started_at = sent, broken, 0, started_at

    @property
    def records(self) -> int:
        return self.sent + self.broken - self.failed


def test_backlog_ends_once_the_service_has_consumed_what_was_written_a_read_earlier():
    from consumers.commands.demo import Backlog

    backlog, producer = Backlog(), _Producer(0, 0)
    consumed = "interest_events_consumed_total"
    for written_before_read, consumed_now in [(0, 0), (200, 0), (400, 150), (600, 390), (800, 610)]:
        view = _view({(consumed, ()): consumed_now})
        backlog.observe(view, producer, written_before_read)
        if consumed_now < 600:
            assert backlog.snapshot is None  # still behind what was written a read earlier
    assert backlog.snapshot == {(consumed, ()): 610} and backlog.seconds is not None


def test_steady_state_latency_counts_only_after_the_backlog():
    start = _histogram({0.1: 0, 1: 0, 10: 90, float("inf"): 100})  # the backlog: 100 events, 1-10 s+
    now = _histogram({0.1: 900, 1: 1000, 10: 1090, float("inf"): 1100})  # then 1000 events, mostly < 100 ms
    view = _view(now)
    steady_p50 = view.quantile("interest_end_to_end_latency_seconds", 0.5, since=start)
    whole_p99 = view.quantile("interest_end_to_end_latency_seconds", 0.99, recent=False)
    assert steady_p50 is not None and steady_p50 <= 0.1
    assert whole_p99 is not None and whole_p99 > 1


@pytest.mark.parametrize(("applied", "reconciled"), [(994, "yes"), (990, "no")])
def test_summary_reconciles_records_sent_with_applied_and_dead_lettered(applied, reconciled):
    from rich.console import Console

    from consumers.commands.demo import Backlog, _summary

    now = {
        ("interest_events_consumed_total", ()): 1000,
        ("interest_events_applied_total", ()): applied,
        ("interest_events_rejected_total", (("reason", "not_json"),)): 4,
        ("interest_events_rejected_total", (("reason", "bad_weight"),)): 2,
        **_histogram({0.1: 900, 1: 1000, float("inf"): 1000}),
    }
    start = _histogram({0.1: 0, 1: 0, float("inf"): 0})
    buffer = io.StringIO()
    console = Console(file=buffer, width=160)
    _summary(console, _view(now), "k:9092", {"centroids": "c", "assignments": "a"}, _Producer(994, 6),
             0, Backlog(seconds=3.0, snapshot=start))
    out = buffer.getvalue()
    assert _row(out, "reconciled").startswith(reconciled)
    if reconciled == "yes":
        assert "1000 records = 994 applied + 6 dead-lettered" in out
    assert _row(out, "start-up backlog (until the service kept up)") == "3 s, 0 events, p99 - ms"
    assert re.fullmatch(r"\d+ / \d+ ms \(1000 events\)", _row(out, "end-to-end latency p50 / p99 (steady state)"))
