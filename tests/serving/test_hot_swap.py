"""`tailor serve --registry`: a promotion swaps the served model without dropping in-flight requests.

A real uvicorn server runs in this process (so the test can reach its engines), following a real
registry with two tiny models whose greedy answers differ.
"""

import gc
import json
import shutil
import socket
import threading
import time
import weakref

import httpx
import pytest

from tailor.config import ServeConfig
from tailor.models.generation import generate
from tailor.models.loading import load_model, load_tokenizer

KEY = "sk-test-swap"
AUTH = {"Authorization": f"Bearer {KEY}"}
QUESTION = [{"role": "user", "content": "How long can I return a laptop?"}]
LONG = {"model": "support", "prompt": "Our store in Springfield", "max_tokens": 40, "temperature": 0}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(cond, what: str, timeout: float = 60.0):
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.05)


def _metric(url: str, line_start: str) -> float:
    text = httpx.get(url + "/metrics", headers=AUTH).text
    return float(next(ln.split()[-1] for ln in text.splitlines() if ln.startswith(line_start)))


@pytest.fixture(scope="module")
def models(tmp_path_factory, tokenizer):
    """Two versions of one tiny model (different seeds) and their greedy answers to QUESTION."""
    from tailor.models.presets import init_model

    tmp = tmp_path_factory.mktemp("swap")
    out = {}
    for seed in (1, 2):
        path = tmp / f"v{seed}"
        init_model("llama-micro", tokenizer, out_dir=path, seed=seed)
        model, tok = load_model(path), load_tokenizer(path)
        out[seed] = (path, generate(model, tok, [QUESTION], max_new_tokens=12)[0].strip())
    broken = tmp / "v3"  # a config but no weights: loading fails
    broken.mkdir()
    shutil.copy(out[1][0] / "config.json", broken / "config.json")
    out["broken"] = broken
    out["tmp"] = tmp
    return out


@pytest.fixture(scope="module")
def served(models):
    """A registry with v1 in production and a server following it (polling every 0.1 s)."""
    import uvicorn

    from tailor.mlops.follow import registry_source
    from tailor.mlops.registry import Registry
    from tailor.serving.server import build_app

    db = models["tmp"] / "registry.db"
    reg = Registry(str(db))
    reg.register("support", str(models[1][0]))
    reg.promote("support", 1, reason="first")
    reg.register("support", str(models[2][0]))  # a candidate until a test promotes it
    cfg = ServeConfig(registry=str(db), registry_model="support", registry_poll_seconds=0.1, api_keys=[KEY],
                      max_tokens=64, engine="tailor")
    app = build_app(None, cfg, registry_source(cfg))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    _wait(lambda: server.started, "the server to start")
    yield {"url": f"http://127.0.0.1:{port}", "state": app.state.tailor, "registry": reg}
    server.should_exit = True
    thread.join(timeout=20)
    assert not thread.is_alive()
    assert not app.state.tailor.engine.alive(), "shutdown stops the engine serving at the end"


def _chat(url: str) -> str:
    r = httpx.post(url + "/v1/chat/completions", headers=AUTH, timeout=60,
                   json={"model": "support", "messages": QUESTION, "max_tokens": 12, "temperature": 0})
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"].strip()


def _version(url: str) -> int:
    cards = httpx.get(url + "/v1/models", headers=AUTH).json()["data"]
    assert [c["id"] for c in cards] == ["support"]
    return cards[0]["version"]


def test_promotion_swaps_without_dropping_a_stream(models, served):
    url, st, reg = served["url"], served["state"], served["registry"]
    v1_answer, v2_answer = models[1][1], models[2][1]
    assert v1_answer != v2_answer, "the two test models must answer differently"
    assert _version(url) == 1 and _chat(url) == v1_answer
    assert _metric(url, 'tailor_model_version{model="support"}') == 1
    reference = httpx.post(url + "/v1/completions", headers=AUTH, json=LONG, timeout=60).json()["choices"][0]
    assert len(reference["text"]) > 10

    # Hold v1's generation after a few forward passes, so the stream is surely mid-flight on it during the swap.
    old = st.engine
    gate, calls = threading.Event(), []

    def stall(module, args, kwargs):
        calls.append(1)
        if len(calls) > 3:
            gate.wait(30)

    old.model.register_forward_pre_hook(stall, with_kwargs=True)
    try:
        with httpx.stream("POST", url + "/v1/completions", headers=AUTH, json={**LONG, "stream": True}, timeout=60) as r:
            lines = r.iter_lines()
            first = next(ln for ln in lines if ln.startswith("data: "))
            reg.promote("support", 2, reason="better")
            _wait(lambda: st.version == 2, "the swap to version 2")
            assert st.engine is not old and old.alive() and old.active() == 1, "the stream is still running on v1"
            assert _chat(url) == v2_answer and _version(url) == 2, "new requests go to the new version"
            gate.set()
            rest = [ln for ln in lines if ln.strip()]
    finally:
        gate.set()  # never leave v1's engine thread parked, whatever failed above
    events = [first] + rest
    assert events[-1] == "data: [DONE]" and all(e.startswith("data: ") for e in events)
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    assert all("error" not in c for c in chunks), chunks
    text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
    assert text == reference["text"], "the in-flight stream finishes with v1's tokens, whole"
    assert chunks[-1]["choices"][0]["finish_reason"] == reference["finish_reason"]

    _wait(lambda: not st.follower.draining, "the old engine to be retired")
    assert not old.alive()
    freed = weakref.ref(old.model)
    del old
    # the server may still be closing the finished stream's response (its generator's frame holds the engine) for a
    # moment after the client read [DONE]; on a loaded machine that moment can outlast one gc pass
    _wait(lambda: gc.collect() >= 0 and freed() is None, "the old model's memory to be released", timeout=20)
    assert _metric(url, "tailor_model_reloads_total") == 1


def test_broken_version_keeps_serving_and_is_counted(models, served):
    url, st, reg = served["url"], served["state"], served["registry"]
    if st.version == 1:  # run alone, without the test above
        reg.promote("support", 2)
    _wait(lambda: st.version == 2, "version 2")
    before = _metric(url, 'tailor_model_reload_failures_total{reason="load"}')
    engine = st.engine
    reg.register("support", str(models["broken"]))
    reg.promote("support", 3, reason="broken on purpose")
    _wait(lambda: _metric(url, 'tailor_model_reload_failures_total{reason="load"}') == before + 1, "the failure count")
    time.sleep(0.5)  # several polls: a failed version is not retried until the alias moves again
    assert _metric(url, 'tailor_model_reload_failures_total{reason="load"}') == before + 1
    assert st.engine is engine and engine.alive() and st.version == 2
    assert _chat(url) == models[2][1] and _version(url) == 2
    assert _metric(url, 'tailor_model_version{model="support"}') == 2

    # POST /admin/reload retries on demand: still broken -> failed; once fixed -> swapped.
    assert httpx.post(url + "/admin/reload").status_code == 401, "the admin route needs the API key"
    r = httpx.post(url + "/admin/reload", headers=AUTH, timeout=60).json()
    assert r["status"] == "failed" and r["version"] == 2 and "version 3" in r["error"]
    shutil.copytree(models[1][0], models["broken"], dirs_exist_ok=True)  # the missing weights arrive
    r = httpx.post(url + "/admin/reload", headers=AUTH, timeout=60).json()
    assert r == {"status": "swapped", "model": "support", "version": 3}
    assert _chat(url) == models[1][1] and _version(url) == 3  # v3 now holds v1's weights
    _wait(lambda: not st.follower.draining, "version 2 to be retired")
    assert not engine.alive()


def test_adapter_version_loads_on_the_registered_base(llama_dir, tmp_path):
    """An adapter version folds into the base the registry records, not the path in its adapter_config."""
    from peft import LoraConfig, get_peft_model

    from tailor.mlops.follow import registry_source
    from tailor.mlops.registry import Registry
    from tailor.serving.server import build_app

    model, tok = load_model(llama_dir), load_tokenizer(llama_dir)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    expected = generate(peft_model.merge_and_unload(), tok, [QUESTION], max_new_tokens=8)[0].strip()
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tmp_path / "moved-away")  # the base has moved since training
    (tmp_path / "adapter" / "adapter_config.json").write_text(json.dumps(config))
    reg = Registry(str(tmp_path / "r.db"))
    reg.register("support", str(tmp_path / "adapter"), base_path=str(llama_dir), stage="production")
    cfg = ServeConfig(registry=str(tmp_path / "r.db"), registry_model="support", engine="tailor")
    app = build_app(None, cfg, registry_source(cfg))
    st = app.state.tailor
    assert st.version == 1 and st.model_name == "support"
    answer = generate(st.engine.model, st.engine.tokenizer, [QUESTION], max_new_tokens=8)[0].strip()
    assert answer == expected


def test_reload_without_registry_is_400(llama_dir):
    from fastapi.testclient import TestClient

    from tailor.serving.server import build_app

    app = build_app(llama_dir, ServeConfig(engine="tailor"))
    r = TestClient(app).post("/admin/reload")  # outside `with`: no lifespan, the route needs no engine
    assert r.status_code == 400 and r.json()["error"]["code"] == "no_registry"


def test_registry_settings_need_a_source():
    """serve.registry set but no source built from it: refused, not silently served from nothing."""
    from tailor.errors import TailorError
    from tailor.mlops.follow import registry_source
    from tailor.serving.server import build_app

    with pytest.raises(TailorError, match="no source to follow"):
        build_app(None, ServeConfig(registry="r.db", registry_model="support"))
    assert registry_source(ServeConfig()) is None, "no registry settings: serve a directory"
    with pytest.raises(TailorError, match="no registry is given"):
        registry_source(ServeConfig(registry_model="support"))


def test_cli_bad_registry_input(models, tmp_path, capsys):
    from tailor.cli import main
    from tailor.mlops.registry import Registry

    assert main(["serve", "--registry", str(tmp_path / "r.db")]) == 2
    assert "--registry-model" in capsys.readouterr().err
    assert main(["serve", "--registry", str(tmp_path / "missing.db"), "--registry-model", "support"]) == 2
    assert "does not exist" in capsys.readouterr().err
    db = tmp_path / "candidates.db"
    reg = Registry(str(db))
    reg.register("support", str(models[1][0]))  # a candidate, never promoted
    assert main(["serve", "--registry", str(db), "--registry-model", "support", "port=0"]) == 2
    assert "no production version of 'support'" in capsys.readouterr().err
    assert main(["serve", str(models[1][0]), "--registry", str(db), "--registry-model", "support"]) == 2
    assert "either MODEL_DIR or --registry" in capsys.readouterr().err
    assert main(["serve"]) == 2
    assert "needs a model directory" in capsys.readouterr().err


class _FakeEngine:
    """Just the engine surface the follower uses, with a request that never finishes when `stuck`."""

    def __init__(self, metrics=None, stuck=False):
        self.metrics, self.stuck, self.stopped = metrics, stuck, False

    def active(self):
        return 1 if self.stuck else 0

    def queued(self):
        return 0

    def stop(self):
        self.stopped = True


def test_follower_outage_gone_alias_and_drain_deadline(caplog):
    """Model-free: an unreadable registry is counted every poll but logged once; a vanished production
    alias keeps the current version; an old engine whose request never ends is stopped at the deadline."""
    import asyncio
    from types import SimpleNamespace

    from tailor.serving.metrics import new_metrics
    from tailor.serving.follow import Follower, Production

    v1, v2 = Production("m", 1, "/v1"), Production("m", 2, "/v2")
    answers = [OSError("database is locked"), OSError("database is locked"), (5, None), (6, v2)]

    def source():
        a = answers.pop(0)
        if isinstance(a, Exception):
            raise a
        return a

    old = _FakeEngine(new_metrics(), stuck=True)
    st = SimpleNamespace(engine=old, model_name="m", version=1)
    follower = Follower(st, source, lambda p: _FakeEngine(), revision=4, current=v1, interval=60, drain_timeout=0.2)

    async def main():
        results = [await follower.check() for _ in range(4)]
        await asyncio.sleep(0.5)  # past the drain deadline
        await follower.close()
        return results

    with caplog.at_level("WARNING", logger="tailor.serving.follow"):
        results = asyncio.run(main())
    assert [r["status"] for r in results] == ["failed", "failed", "unchanged", "swapped"]
    assert results[2]["version"] == 1 and results[3]["version"] == 2 and st.version == 2
    failures = old.metrics.registry.get_sample_value("tailor_model_reload_failures_total", {"reason": "registry"})
    assert failures == 2 and sum("cannot read the registry" in r.message for r in caplog.records) == 1
    assert any("no production version" in r.message for r in caplog.records)
    assert old.stopped and not follower.draining, "the stuck old engine is stopped at the deadline"
    assert any("still running past" in r.message for r in caplog.records)
    assert st.engine.metrics is old.metrics, "the new engine reports into the same metrics"
