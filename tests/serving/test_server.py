"""The server as a real process on a loopback port, driven by the official `openai` client."""

import asyncio
import json
import time

import httpx
import openai
import pytest

from tailor.data.templates import encode_prompt
from tailor.models.generation import generate
from tailor.models.loading import load_model, load_tokenizer

KEY = "sk-test-serving"
QUESTION = [{"role": "user", "content": "How long can I return a laptop?"}]


@pytest.fixture(scope="module")
def server(llama_dir, tmp_path_factory, serve_process):
    """A running `tailor serve` with one LoRA adapter, API keys, a blocklist and small limits."""
    from peft import LoraConfig, get_peft_model

    tmp = tmp_path_factory.mktemp("serve")
    model, tok = load_model(llama_dir), load_tokenizer(llama_dir)
    expected = {"base": generate(model, tok, [QUESTION], max_new_tokens=12)[0]}
    # init_lora_weights=False: random A and B, so the adapter visibly changes the answers
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False))
    peft_model.save_pretrained(tmp / "adapter")
    expected["tiny"] = generate(peft_model, tok, [QUESTION], max_new_tokens=12)[0]
    (tmp / "keys.txt").write_text(KEY + "\n")
    args = [str(llama_dir), "max_batch_size=4", "max_queue=4", "max_tokens=200", "max_body_bytes=4096",
            "blocklist=['secret\\s+plan']", "--adapter", f"tiny={tmp / 'adapter'}", "--api-keys-file",
            str(tmp / "keys.txt"), "--model-name", "base"]
    with serve_process(args, tmp / "server.log") as base:
        yield {"url": base, "expected": expected, "tokenizer": tok, "log": tmp / "server.log"}


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server["url"] + "/v1", api_key=KEY, max_retries=0, timeout=60)


def test_chat_models_adapters_and_usage(server, client):
    assert [m.id for m in client.models.list().data] == ["base", "tiny"]
    assert server["expected"]["base"] != server["expected"]["tiny"], "the test adapter must change the answer"
    prompt_len = len(encode_prompt(server["tokenizer"], QUESTION))
    for name in ("base", "tiny"):
        r = client.chat.completions.create(model=name, messages=QUESTION, max_tokens=12, temperature=0)
        assert r.choices[0].message.content.strip() == server["expected"][name]
        assert r.usage.prompt_tokens == prompt_len and 1 <= r.usage.completion_tokens <= 12
        assert r.choices[0].finish_reason in ("stop", "length") and r.model == name


def test_streaming_equals_whole_answer(server, client):
    whole = client.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=12, temperature=0)
    chunks = list(client.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=12, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    # raw SSE: every event is `data: ...` and the stream ends with [DONE]
    with httpx.stream("POST", server["url"] + "/v1/completions", headers={"Authorization": f"Bearer {KEY}"},
                      json={"model": "base", "prompt": "The return window", "max_tokens": 5, "stream": True}) as r:
        lines = [ln for ln in r.iter_lines() if ln.strip()]
    assert r.status_code == 200 and lines[-1] == "data: [DONE]" and all(ln.startswith("data: ") for ln in lines)


def test_completions_n_seed_logprobs(client):
    kw = dict(model="base", prompt=["The return window", "Shipping to"], max_tokens=6, n=2, temperature=1.0, seed=3)
    a, b = client.completions.create(**kw), client.completions.create(**kw)
    assert len(a.choices) == 4 and [c.index for c in a.choices] == [0, 1, 2, 3]
    assert [c.text for c in a.choices] == [c.text for c in b.choices]  # same seed, same samples
    lp = client.completions.create(model="base", prompt="The return", max_tokens=4, temperature=0, logprobs=2)
    probs = lp.choices[0].logprobs
    assert len(probs.tokens) == len(probs.token_logprobs) == lp.usage.completion_tokens
    assert all(v <= 0 for v in probs.token_logprobs) and all(len(t) <= 2 for t in probs.top_logprobs)
    chat = client.chat.completions.create(model="base", messages=QUESTION, max_tokens=3, temperature=0, logprobs=True,
                                          top_logprobs=3)
    assert len(chat.choices[0].logprobs.content) == chat.usage.completion_tokens
    assert all(len(t.top_logprobs) == 3 for t in chat.choices[0].logprobs.content)


def test_errors_are_openai_shaped_4xx(server, client):
    url = server["url"]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="base", messages=[{"role": "user", "content": "the Secret  Plan is"}])
    assert e.value.code == "guard:blocklist[0]" and "blocklist[0]" in e.value.message
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-4", messages=QUESTION)
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.chat.completions.create(model="base", messages=QUESTION, max_tokens=100_000)
    auth = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    cases = [
        ("/v1/chat/completions", b'{"model": "base", "messages": [', 400),  # malformed JSON
        ("/v1/chat/completions", json.dumps({"model": "base", "messages": "hi"}).encode(), 400),  # wrong type
        ("/v1/chat/completions", json.dumps({"model": "base", "messages": QUESTION, "n": "two"}).encode(), 400),
        ("/v1/completions", json.dumps({"model": "base", "prompt": "x" * 5000}).encode(), 413),  # body > 4096 bytes
        ("/generate", json.dumps({"prompt": "a", "messages": QUESTION}).encode(), 400),
        ("/v1/nothing", b"{}", 404),
    ]
    for path, body, status in cases:
        r = httpx.post(url + path, content=body, headers=auth)
        assert r.status_code == status, (path, r.text)
        err = r.json()["error"]
        assert err["message"] and err["type"] and "Traceback" not in r.text
    chunked = httpx.post(url + "/v1/completions", headers=auth, content=iter([b'{"prompt": "', b"y" * 5000, b'"}']))
    assert chunked.status_code == 413  # no Content-Length: the limit still holds
    r = httpx.post(url + "/generate", headers=auth, json={"prompt": "hello", "max_tokens": 4})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 4
    metrics = httpx.get(url + "/metrics", headers=auth).text
    assert 'tailor_requests_total{route="/v1/chat/completions",status="404"}' in metrics
    assert "tailor_time_to_first_token_seconds_count" in metrics and "tailor_batch_size_bucket" in metrics
    assert httpx.get(url + "/metrics").status_code == 401


def test_text_only_model_refuses_image_parts(client):
    png = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
    messages = [{"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                             {"type": "image_url", "image_url": {"url": png}}]}]
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="base", messages=messages, max_tokens=4)
    assert e.value.code == "model_not_multimodal" and e.value.body["param"] == "messages[0].content[1]"
    assert "text-only" in e.value.message


def test_disconnect_stops_generation(server):
    url, auth = server["url"], {"Authorization": f"Bearer {KEY}"}
    body = {"model": "base", "prompt": "Our store in Springfield", "max_tokens": 200, "temperature": 0}
    full = httpx.post(url + "/v1/completions", headers=auth, json=body, timeout=60).json()["usage"]["completion_tokens"]
    if full < 100:
        pytest.skip(f"the tiny model stopped after {full} tokens; disconnect would not be observable")

    def generated():
        text = httpx.get(url + "/metrics", headers=auth).text
        return float(next(ln.split()[-1] for ln in text.splitlines() if ln.startswith("tailor_generated_tokens_total")))

    before = generated()
    with httpx.stream("POST", url + "/v1/completions", headers=auth, json={**body, "stream": True}, timeout=60) as r:
        for i, _ in enumerate(r.iter_lines()):
            if i >= 2:
                break  # leaving the block closes the connection mid-stream
    t0 = time.monotonic()
    while httpx.get(url + "/health").json()["active"] and time.monotonic() - t0 < 5:
        time.sleep(0.02)
    time.sleep(0.3)
    assert generated() - before < full / 2, "generation went on after the client left"


def test_overload_gets_fast_429_and_admitted_finish(server):
    """4 slots + 4 queue places admit 8; 32 concurrent requests -> the rest get 429 quickly."""
    url, auth = server["url"], {"Authorization": f"Bearer {KEY}"}

    async def main():
        async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=64)) as c:
            async def one(i):
                t0 = time.monotonic()
                r = await c.post(url + "/v1/completions", headers=auth,
                                 json={"model": "base", "prompt": "Our store in Springfield", "max_tokens": 120,
                                       "temperature": 0, "seed": i})
                return r, time.monotonic() - t0

            tasks = [asyncio.create_task(one(i)) for i in range(32)]
            await asyncio.sleep(0.3)
            health = await c.get(url + "/health")
            return await asyncio.gather(*tasks), health

    results, health = asyncio.run(main())
    codes = [r.status_code for r, _ in results]
    assert set(codes) <= {200, 429}, codes
    rejected = [(r, dt) for r, dt in results if r.status_code == 429]
    admitted = [(r, dt) for r, dt in results if r.status_code == 200]
    assert len(rejected) >= 16 and len(admitted) >= 8
    assert all(r.headers["retry-after"] == "1" and r.json()["error"]["type"] == "rate_limit_error" for r, _ in rejected)
    assert max(dt for _, dt in rejected) < min(max(dt for _, dt in admitted), 5.0), "429 must come back fast"
    assert all(r.json()["choices"][0]["text"] is not None for r, _ in admitted)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert httpx.get(url + "/ready").status_code == 200


def test_chat_cli_talks_to_the_server(server, client, capsys):
    from tailor.cli import main

    whole = client.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=10, temperature=0)
    assert main(["chat", "tiny", "--url", server["url"], "--api-key", KEY, "--prompt", QUESTION[0]["content"],
                 "--max-new-tokens", "10"]) == 0
    assert capsys.readouterr().out.strip() == whole.choices[0].message.content.strip()
    assert main(["chat", "--url", server["url"], "--api-key", "bad", "--prompt", "hi"]) == 2
    assert "401" in capsys.readouterr().err


def test_schemathesis_finds_no_server_errors(server, schemathesis_clean):
    """Fuzz every operation of the served OpenAPI spec; any 5xx fails."""
    schemathesis_clean(server, KEY, "--max-examples", "5", "--seed", "1", "--request-timeout", "30")
