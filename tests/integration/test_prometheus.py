"""The Prometheus config, alert rules and Grafana dashboard, proven against a real Prometheus.

1. ``promtool check config`` / ``check rules`` pass on deploy/prometheus (and fail on a broken rule).
2. A real ``interest-stream run`` (own topics, own group, a free metrics port) consumes events from
   the demo producer on the session's Kafka broker; a real Prometheus (1 s scrapes, 1 s rule
   evaluation, the repository's config with only the target swapped) scrapes it. Then:
   every dashboard and rule expression evaluates through ``/api/v1/query``; every rule evaluates
   without error; the throughput, lag, latency and cluster-size panels return numbers; and feeding
   bad records makes the dead-letter alert's expression true (it was false before).

Prometheus comes from the machine or Debian's ``prometheus`` package (installed on demand, root
needed). Without it these tests skip, except on CI (``CI=true``) where they fail.
The tests in this module share one running stack and must run in file order.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import promtools as pt  # noqa: E402

pytestmark = pytest.mark.integration

JOB = "interest-stream"
PARTITIONS = 3
RATE_INTERVAL = "30s"
DATA_TIMEOUT_S = 90
BAD_RECORDS = 300


@pytest.fixture(scope="module")
def tools() -> tuple[str, str]:
    try:
        return pt.prometheus_tools(install=True)
    except pt.ToolsUnavailable as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Prometheus is required on CI: {exc}", pytrace=False)
        pytest.skip(f"Prometheus/promtool unavailable: {exc}")


def test_promtool_checks_config_and_rules(tools: tuple[str, str], tmp_path: Path) -> None:
    _, promtool = tools
    for args in (("check", "config", str(pt.PROMETHEUS_YML)), ("check", "rules", str(pt.ALERTS_YML))):
        done = pt.promtool(promtool, *args)
        assert done.returncode == 0, done.stdout + done.stderr
    # the check can fail: a rule with a PromQL syntax error is refused
    rules = pt.load_yaml(pt.ALERTS_YML)
    rules["groups"][0]["rules"][0]["expr"] = "sum by (job (up"
    broken = tmp_path / "broken.yml"
    broken.write_text(yaml.safe_dump(rules))
    assert pt.promtool(promtool, "check", "rules", str(broken)).returncode != 0


# ---------------------------------------------------------------------------- the live stack


@dataclass
class Live:
    prom: pt.PrometheusProcess
    bootstrap: str
    events_topic: str
    service_log: Path
    producer: subprocess.Popen[bytes]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "consumers.cli", *args]


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def _stop(proc: subprocess.Popen[bytes] | None, timeout: float = 30) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"interest-stream run exited {proc.returncode}:\n{_tail(log)}", pytrace=False)
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    pytest.fail(f"{url} not 200 after {timeout:.0f} s:\n{_tail(log)}", pytrace=False)


def _test_config(target: str) -> dict:
    """deploy/prometheus/prometheus.yml with 1 s intervals and the interest-stream job pointed at target."""
    config = pt.load_yaml(pt.PROMETHEUS_YML)
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["rule_files"] = [str(pt.ALERTS_YML)]
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == JOB]
    job = {k: v for k, v in job.items() if not k.endswith("_sd_configs")}
    job.update(static_configs=[{"targets": [target]}], scrape_interval="1s", scrape_timeout="1s")
    config["scrape_configs"] = [job]
    return config


@pytest.fixture(scope="module")
def live(tools: tuple[str, str], kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    prometheus, promtool = tools
    tmp = tmp_path_factory.mktemp("prometheus")
    uid = uuid.uuid4().hex[:10]
    topics = {name: f"promtest-{uid}-{name}" for name in ("events", "assignments", "centroids", "dead-letters", "items")}
    port = pt.free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    service_log = tmp / "service.log"
    service = producer = None
    prom = None
    try:
        with service_log.open("wb") as fh:
            service = subprocess.Popen(
                _cli("run", "--bootstrap-servers", kafka_bootstrap, "--group-id", f"promtest-{uid}",
                     "--events-topic", topics["events"], "--assignments-topic", topics["assignments"],
                     "--centroids-topic", topics["centroids"], "--dead-letter-topic", topics["dead-letters"],
                     "--items-topic", topics["items"], "--events-partitions", str(PARTITIONS),
                     "--clusters", "4", "--device", "cpu",
                     "--metrics-host", "127.0.0.1", "--metrics-port", str(port)),
                stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=pt.REPO,
            )
        # the model loads in ~20 s on an idle 2-core machine; partitions are assigned after that
        _wait_http(f"http://127.0.0.1:{port}/readyz", service, service_log, timeout=240)

        config_path = tmp / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(_test_config(f"127.0.0.1:{port}"), sort_keys=False))
        checked = pt.promtool(promtool, "check", "config", str(config_path))
        assert checked.returncode == 0, checked.stdout + checked.stderr
        prom = pt.PrometheusProcess(prometheus, config_path, tmp / "data", tmp / "prometheus.log")
        prom.start()

        producer_log = tmp / "producer.log"
        with producer_log.open("wb") as fh:
            producer = subprocess.Popen(
                _cli("produce", "--demo", "--bootstrap-servers", kafka_bootstrap, "--topic", topics["events"],
                     "--users", "40", "--events-per-user", "50", "--rate", "25", "--seed", "7", "--quiet"),
                stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=pt.REPO,
            )
        yield Live(prom, kafka_bootstrap, topics["events"], service_log, producer)
    finally:
        _stop(producer)
        _stop(service)
        if prom is not None:
            prom.stop()


def _values() -> dict[str, str]:
    return {"job": JOB, "instance": ".*", "__rate_interval": RATE_INTERVAL}


def test_every_dashboard_and_rule_expression_evaluates(live: Live) -> None:
    dashboard, rules = pt.load_dashboard(), pt.rule_list()
    live.prom.wait_for(f'up{{job="{JOB}"}} == 1', bool, timeout=30)
    errors = []
    for where, expr in pt.iter_exprs(dashboard, rules):
        try:
            live.prom.query(pt.substitute_grafana_vars(expr, _values()))
        except pt.PromQLError as exc:
            errors.append(f"{where}: {exc}")
    assert not errors, "\n".join(errors)
    # the template variables' label_values(<metric>, <label>) find this service's job and instance
    for var in dashboard["templating"]["list"]:
        if var["type"] != "query":
            continue
        inner = var["query"]["query"].removeprefix("label_values(").rsplit(",", 1)
        metric, label = pt.substitute_grafana_vars(inner[0], _values()), inner[1].strip(" )")
        series = live.prom.query(metric)
        assert any(s["metric"].get(label) for s in series), f"variable {var['name']}: no {label} in {metric}"
        if label == "job":
            assert JOB in {s["metric"]["job"] for s in series}


def test_every_rule_evaluates_without_error(live: Live) -> None:
    deadline = time.monotonic() + 30
    while True:
        groups = live.prom.api("rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        if rules and all(r.get("health") != "unknown" for r in rules) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert {r["name"] for r in rules} == {r["alert"] for r in pt.rule_list()}
    bad = [f"{r['name']}: {r.get('health')} {r.get('lastError', '')}" for r in rules if r.get("health") != "ok"]
    assert not bad, "\n".join(bad)


def _positive(result: list) -> bool:
    return pt.has_number(result) and sum(float(s["value"][1]) for s in result) > 0


#: What each core panel's first query must show once events flow.
CORE_CHECKS = {
    "Throughput": _positive,  # consumed/s
    "Consumer lag per partition": lambda r: pt.has_number(r) and len({s["metric"]["partition"] for s in r}) == PARTITIONS,
    "End-to-end latency": pt.has_number,  # p50 (NaN while no event is applied)
    "Cluster sizes": _positive,  # users per cluster
}


def test_core_panels_show_data(live: Live) -> None:
    panels = {p["title"]: p for p in pt.dashboard_panels(pt.load_dashboard())}
    deadline = time.monotonic() + DATA_TIMEOUT_S
    failed = []
    for title, check in CORE_CHECKS.items():
        for target in panels[title]["targets"][:1]:
            expr = pt.substitute_grafana_vars(target["expr"], _values())
            result = live.prom.wait_for(expr, check, timeout=max(1.0, deadline - time.monotonic()))
            if not check(result):
                failed.append(f"{title}: {expr} -> {result}")
    assert not failed, "\n".join(failed) + f"\nservice log:\n{_tail(live.service_log)}"


def _send_bad_records(live: Live, count: int, first: int = 0) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=live.bootstrap, acks="all")
    try:
        for i in range(first, first + count):
            producer.send(live.events_topic, key=b"bad-user", value=b"{this is not json %d" % i)
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=10)


def test_bad_input_raises_the_dead_letter_alert_expression(live: Live) -> None:
    (rule,) = [r for r in pt.rule_list() if r["alert"] == "InterestStreamDeadLetterRatioHigh"]
    # events flow and none were bad, so the alert condition is false (an empty result) ...
    live.prom.wait_for("sum(rate(interest_events_consumed_total[5m])) > 0", bool, timeout=60)
    assert live.prom.query(rule["expr"]) == []
    # ... until records that are not JSON arrive. rate() ignores the increase that creates a series,
    # so unless the service pre-creates its labelled counters at 0, the first burst only creates
    # interest_events_rejected_total{reason="not_json"}; the second one moves the rate.
    selector = f'interest_events_rejected_total{{job="{JOB}", reason="not_json"}}'
    _send_bad_records(live, 10)
    seen = live.prom.wait_for(selector, pt.has_number, timeout=60)
    assert pt.has_number(seen), f"rejections not exported; service log:\n{_tail(live.service_log)}"
    _send_bad_records(live, BAD_RECORDS, first=10)
    result = live.prom.wait_for(rule["expr"], bool, timeout=60)
    assert result, f"dead-letter alert expression still empty; service log:\n{_tail(live.service_log)}"
    assert float(result[0]["value"][1]) > 0.05
    assert result[0]["metric"]["job"] == JOB
    # the dashboard's dead-letter panel shows the reason
    panel = {p["title"]: p for p in pt.dashboard_panels(pt.load_dashboard())}["Dead letters by reason"]
    by_reason = live.prom.query(pt.substitute_grafana_vars(panel["targets"][0]["expr"], _values()))
    assert any(s["metric"].get("reason") == "not_json" and float(s["value"][1]) > 0 for s in by_reason)
