"""Engine selection, and the vLLM adapter driven by a stand-in `vllm` module (no vLLM or GPU here)."""

import asyncio
import json
import sys
import time
import types
from dataclasses import dataclass, field

import pytest
import torch

from tailor.config import ServeConfig
from tailor.errors import TailorError
from tailor.serving.engine import Overloaded, Sequence
from tailor.serving.vllm_engine import VllmEngine, choose_engine
from tests.conftest import EventWaiter


@dataclass
class _Logprob:
    logprob: float
    rank: int
    decoded_token: str


@dataclass
class _Completion:
    text: str
    token_ids: list
    logprobs: list | None
    finish_reason: str | None


@dataclass
class _Output:
    request_id: str
    outputs: list
    finished: bool


@dataclass
class _Args:
    kwargs: dict = field(default_factory=dict)


class _FakeLLM:
    """Generates token 10, 11, 12, ... whose text is "w10 w11 w12 ...", honouring max_tokens and stop."""

    def __init__(self, args):
        self.args, self.calls, self.aborted = args, [], []

    async def generate(self, prompt, params, request_id, lora_request=None):
        self.calls.append(dict(prompt=prompt, params=params, request_id=request_id, lora=lora_request))
        ids, text = [], ""
        for step in range(params.max_tokens):
            await asyncio.sleep(0.005)
            if request_id in self.aborted:
                yield _Output(request_id, [_Completion(text, list(ids), None, "abort")], True)
                return
            token = 10 + step
            ids.append(token)
            text += f"w{token} "
            reason = "length" if len(ids) == params.max_tokens else None
            for stop in params.stop or []:
                if stop in text:
                    text, reason = text[:text.index(stop)], "stop"
            lps = None
            if params.logprobs is not None:
                lps = [{t: _Logprob(-0.1 * (t - 9) - (t - i), 1 + t - i, f"w{t}") for t in range(i, i + 3)}
                       for i in ids]
            yield _Output(request_id, [_Completion(text, list(ids), lps, reason)], reason is not None)
            if reason:
                return

    async def abort(self, request_id):
        self.aborted.append(request_id)

    def shutdown(self):
        self.shut = True


@pytest.fixture
def fake_vllm(monkeypatch):
    """A `vllm` stand-in in sys.modules with the API surface the adapter uses; the created engine is recorded."""
    created = []
    vllm = types.ModuleType("vllm")
    vllm.AsyncEngineArgs = lambda **kw: _Args(kw)
    vllm.SamplingParams = lambda **kw: types.SimpleNamespace(**kw)

    class AsyncLLMEngine:
        @classmethod
        def from_engine_args(cls, args):
            created.append(_FakeLLM(args))
            return created[-1]

    vllm.AsyncLLMEngine = AsyncLLMEngine
    lora, request = types.ModuleType("vllm.lora"), types.ModuleType("vllm.lora.request")
    request.LoRARequest = lambda name, id, path: ("lora", name, id, path)
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.lora", lora)
    monkeypatch.setitem(sys.modules, "vllm.lora.request", request)
    return created


def _adapter(tmp_path, name, r):
    d = tmp_path / name
    d.mkdir()
    (d / "adapter_config.json").write_text(json.dumps({"r": r, "base_model_name_or_path": "x"}))
    (d / "adapter_model.safetensors").write_bytes(b"")
    return d


def test_choose_engine(monkeypatch, fake_vllm, tmp_path):
    assert choose_engine(ServeConfig(engine="tailor")) == "tailor"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert choose_engine(ServeConfig()) == "vllm"  # auto: vLLM importable and a GPU
    adapter = _adapter(tmp_path, "a", 8)
    assert choose_engine(ServeConfig(), adapter) == "tailor"  # vLLM serves full models only
    with pytest.raises(TailorError, match="adapter directory") as e:
        choose_engine(ServeConfig(engine="vllm"), adapter)
    assert "tailor merge" in e.value.fix
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert choose_engine(ServeConfig()) == "tailor"
    with pytest.raises(TailorError, match="no CUDA GPU"):
        choose_engine(ServeConfig(engine="vllm"))
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm raises ImportError
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert choose_engine(ServeConfig()) == "tailor"
    with pytest.raises(TailorError, match="vLLM is not installed") as e:
        choose_engine(ServeConfig(engine="vllm"))
    assert "pip install vllm" in e.value.fix and e.value.where == "serve.engine"


def _seq(max_tokens, **kw):
    w = EventWaiter()
    return Sequence(prompt_ids=[3, 4, 5], max_tokens=max_tokens, on_event=w, **kw), w


def test_vllm_engine_maps_requests_streams_stops_and_aborts(fake_vllm, tokenizer, tmp_path):
    from tailor.serving.metrics import new_metrics

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"max_position_embeddings": 96}))
    tiny = _adapter(tmp_path, "tiny", 24)
    cfg = ServeConfig(max_batch_size=2, max_queue=1, adapters={"tiny": str(tiny)})
    engine = VllmEngine(model, tokenizer, cfg, metrics=new_metrics()).start()
    try:
        llm = fake_vllm[0]
        args = llm.args.kwargs
        assert args["model"] == str(model) and args["max_model_len"] == 96 == engine.max_context
        assert args["max_num_seqs"] == 2 and args["enable_lora"] and args["max_lora_rank"] == 32
        assert args["load_format"] == "safetensors" and args["trust_remote_code"] is False
        # sampling settings, adapter and prompt ids reach vLLM; deltas stream; a stop string ends it, unsent
        s, w = _seq(20, temperature=0.7, top_p=0.9, seed=5, stop=["w13"], logprobs=2, adapter="tiny")
        engine.submit([s])
        assert w.done.wait(10)
        call = llm.calls[-1]
        assert call["prompt"] == {"prompt_token_ids": [3, 4, 5]}
        p = call["params"]
        assert (p.n, p.temperature, p.top_p, p.max_tokens, p.stop, p.seed, p.logprobs) == (1, 0.7, 0.9, 20, ["w13"], 5, 2)
        assert call["lora"] == ("lora", "tiny", 1, str(tiny.resolve()))
        deltas = [e for e in w.events if e.kind == "delta"]
        assert len(deltas) >= 3 and "".join(e.text for e in deltas) == "w10 w11 w12 " == s.text
        assert w.events[-1].kind == "done" and w.events[-1].finish_reason == "stop"
        assert s.ids[:3] == [10, 11, 12]
        token, logprob, alts = deltas[0].tokens[0]
        assert token == "w10" and len(alts) == 2 and alts[0][1] >= alts[1][1]
        # the base model: no LoRARequest; the length limit ends it with "length"
        b, wb = _seq(4)
        engine.submit([b])
        assert wb.done.wait(10) and wb.events[-1].finish_reason == "length"
        assert llm.calls[-1]["lora"] is None and b.ids == [10, 11, 12, 13] and b.text == "w10 w11 w12 w13 "
        # admission: 2 generating + 1 waiting, then 429
        longs = [_seq(10_000) for _ in range(3)]
        engine.submit([x for x, _ in longs])
        with pytest.raises(Overloaded):
            engine.submit([_seq(5)[0]])
        assert engine.active() == 2 and engine.queued() == 1
        # a cancelled sequence is aborted in vLLM and frees its slot, quietly
        for x, _ in longs:
            x.cancel()
        t0 = time.monotonic()
        while engine.active() + engine.queued() and time.monotonic() - t0 < 5:
            time.sleep(0.01)
        assert engine.active() + engine.queued() == 0
        assert {c["request_id"] for c in llm.calls if c["params"].max_tokens == 10_000} <= set(llm.aborted)
        gone, wg = _seq(10_000)  # cancelled before its task ever ran: the slot still comes back
        gone.cancel()
        engine.submit([gone])
        t0 = time.monotonic()
        while engine.active() and time.monotonic() - t0 < 5:
            time.sleep(0.01)
        assert engine.active() == 0 and gone.finish_reason == "cancelled" and wg.events == []
        assert all(x.finish_reason == "cancelled" and all(e.kind == "delta" for e in w.events) for x, w in longs)
        # a deadline in the past: aborted with a timeout error
        late, wl = _seq(10_000, deadline=time.monotonic() + 0.05)
        engine.submit([late])
        assert wl.done.wait(5) and wl.events[-1].error == "timeout"
        assert engine.metrics.ttft._sum.get() > 0
    finally:
        engine.stop()
    assert llm.shut and not engine.alive()


def test_build_app_serves_through_vllm(monkeypatch, fake_vllm, llama_dir):
    from fastapi.testclient import TestClient

    from tailor.serving.server import build_app

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    app = build_app(llama_dir, ServeConfig(model_name="m"))
    with TestClient(app) as client:
        assert client.get("/ready").status_code == 200
        r = client.post("/v1/chat/completions", json={"model": "m", "max_tokens": 3, "stream": True,
                                                      "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200
        chunks = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        assert text == "w10 w11 w12 " and r.text.rstrip().endswith("data: [DONE]")
        from tailor.data.templates import encode_prompt

        expected = encode_prompt(app.state.tailor.engine.tokenizer, [{"role": "user", "content": "hi"}])
        assert fake_vllm[0].calls[-1]["prompt"] == {"prompt_token_ids": expected}  # the one prompt path


def test_json_schema_reaches_vllm_as_structured_outputs(fake_vllm, tokenizer, tmp_path, monkeypatch):
    sampling = types.ModuleType("vllm.sampling_params")
    sampling.StructuredOutputsParams = lambda **kw: ("structured", kw)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", sampling)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"max_position_embeddings": 96}))
    engine = VllmEngine(model, tokenizer, ServeConfig())
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    s, _ = _seq(8)
    s.json_schema = schema
    assert engine.sampling_params(s).structured_outputs == ("structured", {"json": schema})
    del sampling.StructuredOutputsParams  # vLLM before 0.10.2: guided decoding
    sampling.GuidedDecodingParams = lambda **kw: ("guided", kw)
    assert engine.sampling_params(s).guided_decoding == ("guided", {"json": schema})
    assert not hasattr(engine.sampling_params(_seq(8)[0]), "guided_decoding")
