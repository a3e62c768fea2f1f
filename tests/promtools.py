"""Helpers for the deployment tests: PromQL inspection, Grafana variables, Prometheus and promtool.

- Reading the deploy files: :func:`rule_list`, :func:`dashboard_panels`, :func:`panel_targets`.
- PromQL without a parser: :func:`vector_selectors` lists the metric selectors of an expression
  (name and label matchers), :func:`range_function_args` the metrics given to rate()/delta()/...
- Grafana: :func:`substitute_grafana_vars` replaces ``$job``, ``${job}``, ``$__rate_interval`` ...
- Prometheus: :func:`prometheus_tools` finds ``prometheus``/``promtool`` or installs Debian's
  ``prometheus`` package; :class:`PrometheusProcess` runs one on 127.0.0.1 and queries its HTTP API.

Example:

>>> vector_selectors('sum by (le) (rate(x_bucket{job=~"$job"}[5m])) / on (job) group_left up')
[('x_bucket', '{job=~"$job"}'), ('up', None)]
>>> substitute_grafana_vars('rate(x{job=~"$job"}[$__rate_interval])', {"job": "a", "__rate_interval": "30s"})
'rate(x{job=~"a"}[30s])'
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from consumers.devbroker import free_port

REPO = Path(__file__).resolve().parent.parent
PROMETHEUS_YML = REPO / "deploy" / "prometheus" / "prometheus.yml"
ALERTS_YML = REPO / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD_JSON = REPO / "deploy" / "grafana" / "dashboards" / "interest-stream.json"

#: PromQL words that look like identifiers but are not metric names.
PROMQL_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
     "inf", "nan", "atan2"}
)
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_TOKEN = re.compile(
    r'"(?:[^"\\]|\\.)*"'  # string
    r"|'(?:[^'\\]|\\.)*'"
    r"|\{[^}]*\}"  # label matchers
    r"|\[[^\]]*\]"  # range / subquery
    r"|\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[a-z]*"  # number or duration
    r"|[a-zA-Z_:][\w:]*"  # identifier
    r"|\S"
)
_IDENT = re.compile(r"[a-zA-Z_:][\w:]*\Z")


def vector_selectors(expr: str) -> list[tuple[str, str | None]]:
    """Metric selectors of a PromQL expression: ``(name, "{matchers}" or None)``, in order.

    Function names (an identifier followed by ``(``), keywords and the label lists of
    ``by``/``on``/``without``/``ignoring``/``group_*`` are skipped.
    """
    tokens = [m.group(0) for m in _TOKEN.finditer(_GROUPING.sub(" ", expr))]
    found: list[tuple[str, str | None]] = []
    for i, tok in enumerate(tokens):
        if not _IDENT.match(tok) or tok.lower() in PROMQL_KEYWORDS:
            continue
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if nxt == "(":
            continue  # a function call
        found.append((tok, nxt if nxt.startswith("{") else None))
    return found


def range_function_args(expr: str) -> list[tuple[str, str]]:
    """``(function, metric)`` for each range-vector function applied directly to a selector.

    >>> range_function_args('sum(rate(a_total{x="1"}[5m])) - delta(b[1h])')
    [('rate', 'a_total'), ('delta', 'b')]
    """
    pattern = r"\b(rate|irate|increase|delta|idelta|deriv|changes|resets)\s*\(\s*([a-zA-Z_:][\w:]*)"
    return [(m.group(1), m.group(2)) for m in re.finditer(pattern, expr)]


_VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def substitute_grafana_vars(expr: str, values: Mapping[str, str]) -> str:
    """Replace Grafana template variables; an unknown variable raises KeyError."""

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in values:
            raise KeyError(f"unknown Grafana variable ${name} in {expr!r}")
        return values[name]

    return _VAR.sub(repl, expr)


# ---------------------------------------------------------------------------- deploy files


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def load_yaml_all(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc is not None]


def rule_list(path: Path = ALERTS_YML) -> list[dict[str, Any]]:
    """Every rule of a Prometheus rule file, groups flattened."""
    return [rule for group in load_yaml(path)["groups"] for rule in group["rules"]]


def load_dashboard(path: Path = DASHBOARD_JSON) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def dashboard_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that shows data (rows are containers; their nested panels are included)."""
    out: list[dict[str, Any]] = []
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            out.extend(panel.get("panels", []))
        else:
            out.append(panel)
    return out


def panel_targets(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """``(panel title, expr)`` of every query of the dashboard."""
    return [(p["title"], t["expr"]) for p in dashboard_panels(dashboard) for t in p.get("targets", [])]


# ---------------------------------------------------------------------------- processes


class ToolsUnavailable(RuntimeError):
    """prometheus/promtool are missing and could not be installed here."""


def prometheus_tools(install: bool = True) -> tuple[str, str]:
    """Paths of ``prometheus`` and ``promtool``; installs Debian's ``prometheus`` package if needed.

    Raises :class:`ToolsUnavailable` with the reason when they are missing and cannot be installed
    (not Debian/Ubuntu, not root, no package repository reachable).
    """
    prom, tool = shutil.which("prometheus"), shutil.which("promtool")
    if prom and tool:
        return prom, tool
    if not install:
        raise ToolsUnavailable("prometheus/promtool not on PATH")
    apt = shutil.which("apt-get")
    if apt is None:
        raise ToolsUnavailable("prometheus/promtool not on PATH and no apt-get to install Debian's prometheus package")
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        raise ToolsUnavailable("prometheus/promtool not on PATH; installing the prometheus package needs root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in ([apt, "update"], [apt, "install", "-y", "--no-install-recommends", "prometheus"]):
        try:
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ToolsUnavailable(f"{' '.join(cmd)} failed: {exc}") from exc
        if done.returncode != 0:
            raise ToolsUnavailable(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr[-1500:]}")
    prom, tool = shutil.which("prometheus"), shutil.which("promtool")
    if not (prom and tool):
        raise ToolsUnavailable("installed the prometheus package but prometheus/promtool are still not on PATH")
    return prom, tool


def promtool(tool: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run promtool; the caller checks ``returncode`` (stdout+stderr in ``.stdout``)."""
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=timeout, check=False,
                          stdin=subprocess.DEVNULL)


class PromQLError(RuntimeError):
    """Prometheus answered a query with status error."""


class PrometheusProcess:
    """One Prometheus server on 127.0.0.1 with its own storage; a context manager."""

    def __init__(self, binary: str, config: Path, storage: Path, log: Path, port: int | None = None) -> None:
        self.binary, self.config, self.storage, self.log = binary, config, storage, log
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PrometheusProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 60) -> None:
        cmd = [
            self.binary,
            f"--config.file={self.config}",
            f"--storage.tsdb.path={self.storage}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--storage.tsdb.retention.time=1h",
            "--log.level=warn",
        ]
        with self.log.open("wb") as fh:
            self._proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"prometheus exited {self._proc.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"prometheus not ready after {timeout:.0f} s: {self.log_tail()}")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5)
        self._proc = None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def api(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """GET ``/api/v1/<path>`` and return its ``data``; raises PromQLError on status error."""
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=15) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as exc:  # 400/422: bad query, with a JSON body
            body = json.loads(exc.read() or b"{}")
        if body.get("status") != "success":
            raise PromQLError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; returns the result list (vector samples; a scalar comes back as one sample)."""
        data = self.api("query", {"query": expr})
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def wait_for(self, expr: str, predicate, timeout: float, interval: float = 1.0) -> list[dict[str, Any]]:
        """Poll ``query(expr)`` until ``predicate(result)`` holds; returns the last result either way."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if predicate(result) or time.monotonic() >= deadline:
                return result
            time.sleep(interval)


def has_number(result: list[dict[str, Any]]) -> bool:
    """Whether an instant-query result holds at least one finite value (not NaN/Inf)."""
    for sample in result:
        try:
            value = float(sample["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            continue
        if value == value and value not in (float("inf"), float("-inf")):
            return True
    return False


def iter_exprs(dashboard: dict[str, Any], rules: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
    """``(where, expr)`` for every PromQL expression of the dashboard and the rules."""
    for title, expr in panel_targets(dashboard):
        yield f"panel {title!r}", expr
    for rule in rules:
        yield f"rule {rule.get('alert') or rule.get('record')}", rule["expr"]
