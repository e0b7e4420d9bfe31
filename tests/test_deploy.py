"""deploy/: the Grafana dashboard names only metrics tailor exports, and shows every one of them."""

import json
import re
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "tailor-dashboard.json"

# PromQL words that are not metric names (functions are recognised by the "(" after them).
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
             "inf", "nan"}
_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
             "gauge": ("",), "summary": ("", "_count", "_sum", "_created"), "info": ("_info",)}


def _families(registry) -> dict[str, set[str]]:
    """family name -> the series names Prometheus stores for it (counter x -> x_total, histogram -> _bucket ...)."""
    return {m.name: {m.name + s for s in _SUFFIXES[m.type]} for m in registry.collect()}


def _serving_families() -> dict[str, set[str]]:
    from tailor.serving.metrics import new_metrics

    return _families(new_metrics().registry)


def _training_families() -> dict[str, set[str]]:
    from tailor.training.telemetry import PrometheusExporter

    exporter = PrometheusExporter(port=0)  # its own registry; port 0 = any free port, closed at once
    try:
        return _families(exporter.registry)
    finally:
        exporter.close()


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals (label values, regexes)
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range and subquery windows
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)  # label lists
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        word, rest = m.group(), expr[m.end():].lstrip()
        if rest.startswith("(") or word.lower() in _KEYWORDS:
            continue  # a function or aggregation, or a keyword
        names.add(word)
    return names


def _panels(dashboard: dict) -> list[dict]:
    out = []
    for p in dashboard["panels"]:
        out.append(p)
        out += p.get("panels", [])  # panels inside a collapsed row
    return out


def _queries(dashboard: dict) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every templating variable query."""
    out = [(f"panel '{p['title']}' target {t['refId']}", t["expr"]) for p in _panels(dashboard) for t in p.get("targets", [])]
    for v in dashboard["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", q) or re.fullmatch(r"query_result\((.*)\)", q)
            out.append((f"variable ${v['name']}", inner.group(1) if inner else q))
    return out


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def test_metric_name_extraction():
    expr = ('histogram_quantile(0.95, sum by (le) (rate(tailor_request_latency_seconds_bucket{job=~"$j", '
            'route="/v1/x"}[$__rate_interval]))) / on (instance) group_left sum without (route) (tailor_queue_depth)')
    assert metric_names(expr) == {"tailor_request_latency_seconds_bucket", "tailor_queue_depth"}
    assert metric_names("max(tailor_train_step) / max(tailor_train_max_steps) > bool 0.5") == {
        "tailor_train_step", "tailor_train_max_steps"}
    assert metric_names("up") == {"up"}  # a name outside tailor is seen (and rejected below)


def test_dashboard_reads_only_exported_metrics(dashboard):
    families = {**_serving_families(), **_training_families()}
    exported = set().union(*families.values())
    queries = _queries(dashboard)
    assert len(queries) >= 25
    for where, expr in queries:
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), f"{where}: unbalanced: {expr}"
        names = metric_names(expr)
        assert names, f"{where} reads no metric: {expr}"
        unknown = names - exported
        assert not unknown, f"{where} reads {sorted(unknown)}, which tailor does not export; known: {sorted(exported)}"


@pytest.mark.parametrize("source", ["serving", "training"])
def test_every_exported_metric_has_a_panel(dashboard, source):
    families = _serving_families() if source == "serving" else _training_families()
    prefix = "tailor_" if source == "serving" else "tailor_train_"
    assert families and all(f.startswith(prefix) for f in families)
    used = set().union(*(metric_names(e) for _, e in _queries(dashboard)))
    missing = [f for f, series in families.items() if not series & used]
    assert not missing, f"{source} metrics without a panel (add one to {DASHBOARD.name}): {missing}"


def test_dashboard_shape(dashboard):
    panels = _panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert dashboard["uid"] and dashboard["title"] and isinstance(dashboard["schemaVersion"], int)
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    for p in panels:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        if p["type"] != "row":
            assert p["targets"] and p["datasource"]["uid"] == "${datasource}", p["title"]
            refs = {t["refId"] for t in p["targets"]}
            assert len(refs) == len(p["targets"]), f"{p['title']}: duplicate refIds"
    used_vars = set(re.findall(r"\$(\w+)", json.dumps([e for _, e in _queries(dashboard)])))
    assert used_vars - {"__rate_interval"} <= variables, "a query uses a variable the dashboard does not define"
    titles = " ".join(p["title"].lower() for p in panels)
    for needed in ("status", "p50", "first token", "tokens per second", "queue", "batch", "429", "version",
                   "reload failures", "loss", "learning rate", "gradient norm", "mfu", "peak memory", "expert-load cv"):
        assert needed in titles, f"no panel for {needed}"


def test_prometheus_and_compose_configs():
    prom = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    assert set(jobs) == {"tailor-serve", "tailor-train"}
    for job in jobs.values():
        assert job["metrics_path"] == "/metrics"
        assert all(re.fullmatch(r"[\w.\-]+:\d+", t) for c in job["static_configs"] for t in c["targets"])
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert (DEPLOY / source).exists(), f"docker-compose.yml mounts {source}, which is not in deploy/"
    provision = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/tailor.yml").read_text())
    mounted = [v.split(":")[1] for v in compose["services"]["grafana"]["volumes"] if "dashboard.json" in v]
    assert mounted and Path(mounted[0]).parent.as_posix() == provision["providers"][0]["options"]["path"]
