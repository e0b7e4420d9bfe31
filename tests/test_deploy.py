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


# --- The dashboard against a real Prometheus ------------------------------------------------------------------------
# Debian's `prometheus` (installed by .ci/run) scrapes a `tailor serve` process and a training run of an MoE model;
# every panel query and variable query of the dashboard then goes to Prometheus's HTTP API and must return data.


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(cond, what: str, timeout: float):
    import time

    t0 = time.monotonic()
    while True:
        try:
            if cond():
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        assert time.monotonic() - t0 < timeout, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(0.25)


class _Prometheus:
    """A prometheus process with a generated configuration and its own TSDB in a tmp dir."""

    def __init__(self, tmp: Path, serve_port: int, train_port: int):
        import shutil
        import subprocess

        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                  "scrape_configs": [
                      {"job_name": "tailor-serve", "metrics_path": "/metrics",
                       "static_configs": [{"targets": [f"127.0.0.1:{serve_port}"]}]},
                      {"job_name": "tailor-train", "metrics_path": "/metrics",
                       "static_configs": [{"targets": [f"127.0.0.1:{train_port}"]}]}]}
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = tmp / "prometheus.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen([shutil.which("prometheus"), f"--config.file={tmp / 'prometheus.yml'}",
                                          f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{self.port}"],
                                         stdout=log, stderr=subprocess.STDOUT)

    def get(self, path: str, **params):
        import httpx

        r = httpx.get(self.url + path, params=params, timeout=10)
        assert r.status_code == 200, f"{path} {params}: {r.status_code} {r.text}"
        body = r.json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list:
        return self.get("/api/v1/query", query=expr)["result"]

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=15)


def _substitute(expr: str, values: dict[str, str], window: str) -> str:
    """Grafana's variable interpolation for a multi-value regex variable: $v -> (a|b); $__rate_interval -> window."""
    expr = expr.replace("$__rate_interval", window)
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace("$" + name, values[name])
    return expr


def _variable_values(prom: _Prometheus, dashboard: dict, window: str) -> dict[str, str]:
    """Each query variable resolved as Grafana does with label_values(SELECTOR, LABEL): /api/v1/series, in order."""
    values: dict[str, str] = {}
    for v in dashboard["templating"]["list"]:
        if v["type"] != "query":
            continue
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", q)
        assert m, f"variable ${v['name']}: only label_values(SELECTOR, LABEL) is resolved here: {q}"
        selector, label = _substitute(m.group(1), values, window), m.group(2)
        series = prom.get("/api/v1/series", **{"match[]": selector})
        found = sorted({s[label] for s in series if label in s})
        assert found, f"variable ${v['name']} ({q}) has no values in Prometheus"
        # Regex-escaped, then backslashes doubled for the PromQL string literal (as Grafana's Prometheus source does).
        values[v["name"]] = "(" + "|".join(re.escape(f).replace("\\", "\\\\") for f in found) + ")"
    return values


def _run_dashboard(prom: _Prometheus, dashboard: dict, window: str) -> dict[str, list]:
    """Every panel target through /api/v1/query: where -> result, with the variables resolved from Prometheus."""
    values = _variable_values(prom, dashboard, window)
    return {f"panel '{p['title']}' target {t['refId']}": prom.query(_substitute(t["expr"], values, window))
            for p in _panels(dashboard) for t in p.get("targets", [])}


def test_every_dashboard_query_returns_data_from_a_real_prometheus(tmp_path, llama_dir, deepseek_dir, chat_file):
    """Prometheus scrapes `tailor serve --registry` (after real requests) and a training run of an MoE model; in the
    run's last step every query of the dashboard (variables resolved from Prometheus) returns data."""
    import os
    import shutil
    import subprocess
    import sys
    import threading
    import time

    import httpx
    from transformers import TrainerCallback

    from tailor.config import load_recipe
    from tailor.mlops.registry import Registry
    from tailor.training import train

    if shutil.which("prometheus") is None:
        pytest.skip("prometheus is not installed (Debian: apt-get install prometheus; .ci/run installs it)")
    reg = Registry(str(tmp_path / "registry.db"))
    reg.register("support", str(llama_dir))
    reg.promote("support", 1, reason="test")
    serve_port, train_port = _free_port(), _free_port()
    prom = _Prometheus(tmp_path, serve_port, train_port)
    t_start = time.monotonic()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(tmp_path / "serve.log", "w") as log:
        serve = subprocess.Popen([sys.executable, "-m", "tailor.cli", "serve", "--registry", str(tmp_path / "registry.db"),
                                  "--registry-model", "support", "--port", str(serve_port), "max_tokens=16"],
                                 stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{serve_port}"
    results: dict = {}
    try:
        _wait(lambda: prom.proc.poll() is None and httpx.get(prom.url + "/-/ready", timeout=1).status_code == 200,
              "prometheus to be ready\n" + prom.log.read_text(), 30)
        _wait(lambda: serve.poll() is None and httpx.get(base + "/ready", timeout=1).status_code == 200,
              "tailor serve to be ready", 90)
        assert serve.poll() is None, (tmp_path / "serve.log").read_text()
        # A scrape before the requests, so that rate() sees the counters grow.
        _wait(lambda: prom.value('up{job="tailor-serve"}') == 1, "the first scrape of tailor serve", 20)
        chat = {"model": "support", "messages": [{"role": "user", "content": "How long can I return a laptop?"}],
                "max_tokens": 8, "temperature": 0}
        calls = [("/v1/chat/completions", chat)] * 3 + [("/v1/completions", {"model": "support", "prompt": "Tents",
                                                                             "max_tokens": 8, "stream": True}),
                                                         ("/generate", {"prompt": "Shipping north?", "max_tokens": 8})]
        codes: list = []
        threads = [threading.Thread(target=lambda p=p, b=b: codes.append(httpx.post(base + p, json=b, timeout=60).status_code))
                   for p, b in calls]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert codes == [200] * len(calls)

        class QueryAtLastStep(TrainerCallback):
            """In the last step (the training endpoint still up), once Prometheus has scraped it, run the dashboard."""

            def on_step_end(self, args, state, control, **kw):
                if state.global_step != state.max_steps:
                    return
                _wait(lambda: prom.value('max(tailor_train_step{job="tailor-train"})') == state.max_steps,
                      "Prometheus to scrape the training run's last step", 20)
                _wait(lambda: (prom.value('sum(tailor_generated_tokens_total{job="tailor-serve"})') or 0) > 0,
                      "Prometheus to scrape the served requests", 20)
                window = f"{int(time.monotonic() - t_start) + 30}s"  # covers the whole test, like a dashboard range
                # rate() needs two samples of a series; the expert counters appear with the first logged step, and a
                # micro model's steps can all fall between two scrapes: wait (the run paused here) for a second one
                _wait(lambda: (prom.value('min(count_over_time(tailor_train_moe_expert_tokens_total{job="tailor-train"}'
                                          '[%s]))' % window) or 0) >= 2, "two scrapes of the expert counters", 20)
                results.update(_run_dashboard(prom, json.loads(DASHBOARD.read_text()), window))
                results["_values"] = {e: prom.value(e) for e in (
                    'sum(rate(tailor_requests_total{status="200"}[%s]))' % window,
                    'max(tailor_model_version{job="tailor-serve", model="support"})',
                    'max(tailor_train_step{job="tailor-train"}) / max(tailor_train_max_steps{job="tailor-train"})',
                    'min(tailor_train_loss{job="tailor-train"})', 'min(tailor_train_eval_loss{job="tailor-train"})',
                    'sum(tailor_train_moe_expert_tokens_total{job="tailor-train"})')}

        r = load_recipe(None, [f"model.path={deepseek_dir}", f"data.train=[{chat_file}]", f"data.eval=[{chat_file}]",
                               f"train.output_dir={tmp_path / 'run'}", "train.batch_size=4", "train.max_steps=6",
                               "train.logging_steps=1", "train.eval_steps=2", "train.save_steps=100",
                               "data.max_length=48", "adapter.r=4", f"train.metrics_port={train_port}"])
        train(r, callbacks=[QueryAtLastStep()])
    finally:
        serve.terminate()
        serve.wait(timeout=20)
        prom.stop()
    values = results.pop("_values", None)
    assert values is not None, "the training run ended before its last step was queried"
    empty = [where for where, result in results.items() if not result]
    assert not empty, f"dashboard queries that returned no data: {empty}"
    assert len(results) >= 25
    import math

    nan = [where for where, result in results.items() if not all(math.isfinite(float(s["value"][1])) for s in result)]
    assert not nan, f"dashboard queries that returned NaN or Inf: {nan}"
    rate_ok, version, progress, loss, eval_loss, expert_tokens = values.values()
    assert rate_ok > 0 and version == 1 and progress == 1
    assert loss > 0 and eval_loss > 0 and expert_tokens > 0
