"""Tool calls and structured output through the official `openai` client against a real `tailor serve`.

The model is a random tiny one: what it writes unconstrained is noise, so every guarantee checked here
(valid tool calls, JSON matching a schema) comes from constrained decoding, not from the model."""

import asyncio
import json
from typing import Literal

import httpx
import jsonschema_rs
import openai
import pytest
from pydantic import BaseModel, ConfigDict, Field

from tailor.serving import protocol as P, routes, structured

KEY = "sk-test-tools"
ORDER = {"type": "function", "function": {
    "name": "order_status", "description": "Look up an order",
    "parameters": {"type": "object", "properties": {"order_id": {"type": "integer", "minimum": 1, "maximum": 9999}},
                   "required": ["order_id"], "additionalProperties": False}}}
STOCK = {"type": "function", "function": {
    "name": "stock_check", "description": "Units of a product in a store",
    "parameters": {"type": "object", "properties": {"sku": {"type": "string", "enum": ["tent", "laptop"]},
                                                    "store": {"type": "string", "maxLength": 8}},
                   "required": ["sku", "store"], "additionalProperties": False}}}
ASK = [{"role": "user", "content": "Where is order 42?"}]


class Ticket(BaseModel):
    model_config = ConfigDict(extra="forbid")  # additionalProperties: false, else any extra key may follow

    product: Literal["tent", "laptop", "stove"]
    quantity: int = Field(ge=0, le=99)
    note: str = Field(max_length=12)


@pytest.fixture(scope="module")
def server(llama_dir, tmp_path_factory, serve_process):
    tmp = tmp_path_factory.mktemp("tools")
    (tmp / "keys.txt").write_text(KEY + "\n")
    with serve_process([str(llama_dir), "max_batch_size=4", "max_tokens=160", "max_context=1024", "--api-keys-file",
                        str(tmp / "keys.txt"), "--model-name", "base"], tmp / "server.log") as url:
        yield {"url": url, "log": tmp / "server.log"}


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server["url"] + "/v1", api_key=KEY, max_retries=0, timeout=120)


def _check_call(call, tools):
    fn = next(t["function"] for t in tools if t["function"]["name"] == call.function.name)
    jsonschema_rs.validate(fn["parameters"], json.loads(call.function.arguments))


def test_required_and_named_tool_calls_stream_like_whole_answers(client):
    tools = [ORDER, STOCK]
    r = client.chat.completions.create(model="base", messages=ASK, tools=tools, tool_choice="required", temperature=0)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and len(choice.message.tool_calls) == 1
    _check_call(choice.message.tool_calls[0], tools)
    named = {"type": "function", "function": {"name": "stock_check"}}
    whole = client.chat.completions.create(model="base", messages=ASK, tools=tools, tool_choice=named, temperature=0)
    call = whole.choices[0].message.tool_calls[0]
    assert call.function.name == "stock_check" and call.id.startswith("call")
    _check_call(call, tools)
    fragments, reasons = {}, []
    for chunk in client.chat.completions.create(model="base", messages=ASK, tools=tools, tool_choice=named,
                                                temperature=0, stream=True):
        for c in chunk.choices:
            reasons.append(c.finish_reason)
            for d in c.delta.tool_calls or []:
                part = fragments.setdefault(d.index, {"name": "", "arguments": ""})
                part["name"] += d.function.name or ""
                part["arguments"] += d.function.arguments or ""
    assert fragments == {0: {"name": "stock_check", "arguments": call.function.arguments}}
    assert reasons[-1] == "tool_calls"


def test_tool_results_round_trip_and_none(client):
    first = client.chat.completions.create(model="base", messages=ASK, tools=[ORDER], tool_choice="required",
                                           temperature=0).choices[0].message
    call = first.tool_calls[0]
    follow = ASK + [{"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                    {"role": "tool", "tool_call_id": call.id, "content": '{"status": "shipped"}'}]
    r = client.chat.completions.create(model="base", messages=follow, tools=[ORDER], tool_choice="none", max_tokens=8)
    assert r.choices[0].message.tool_calls is None and r.choices[0].finish_reason in ("stop", "length")


def test_json_object_and_schema_answers_parse_and_validate(client):
    r = client.chat.completions.create(model="base", messages=ASK, response_format={"type": "json_object"},
                                       max_tokens=160, temperature=0)
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(r.choices[0].message.content), dict)
    parsed = client.chat.completions.parse(model="base", messages=ASK, response_format=Ticket, n=3, temperature=1.0,
                                           seed=7)
    assert len(parsed.choices) == 3
    for choice in parsed.choices:
        assert choice.finish_reason == "stop" and isinstance(choice.message.parsed, Ticket)
    schema = Ticket.model_json_schema()
    text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="base", messages=ASK, stream=True, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "ticket", "schema": schema}}) if c.choices)
    Ticket.model_validate_json(text)


def test_malformed_tools_and_schemas_are_400s_naming_the_field(client):
    base = str(client.base_url).rstrip("/")
    bad_params = dict(ORDER, function=dict(ORDER["function"], parameters={"type": "object", "properties": {
        "order_id": {"type": "integr"}}}))
    cases = [
        ({"tools": [bad_params]}, "tools[0].function.parameters"),
        ({"tools": [dict(ORDER, function=dict(ORDER["function"], parameters={"type": "string"}))]},
         "tools[0].function.parameters"),
        ({"tools": [ORDER, ORDER]}, "tools[1].function.name"),
        ({"tools": [ORDER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [{"type": "function", "function": {"name": "has space"}}]}, "tools.0.function.name"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/nope"}}}},
         "response_format.json_schema.schema"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "response_format.json_schema.schema"),
        ({"response_format": {"type": "yaml"}}, "response_format"),
        ({"tools": [ORDER], "tool_choice": "required", "response_format": {"type": "json_object"}}, "response_format"),
        ({"messages": [{"role": "user", "content": None}]}, "messages.0"),
    ]
    for extra, field in cases:
        body = {"model": "base", "messages": ASK, **extra}
        r = httpx.post(base + "/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"})
        assert r.status_code == 400, (extra, r.text)
        assert r.json()["error"]["param"].startswith(field), (field, r.json())


def _stream(monkeypatch, pieces: list[str], tools=(ORDER,), **extra):
    async def events(st, run, request):
        for piece in pieces:
            yield (0, piece, [], None), None
        yield (0, "", [], "stop"), None

    monkeypatch.setattr(routes, "_events", events)
    req = P.ChatCompletionRequest(model="m", messages=ASK, tools=list(tools), stream=True, **extra)

    async def collect():
        return [item async for item in routes._chat_stream(None, None, req, structured.plan_chat(req), 3, None)]

    return [json.loads(c["data"])["choices"][0] for c in asyncio.run(collect()) if c["data"] != "[DONE]"]


def test_auto_streams_text_then_calls_and_reports_broken_calls(monkeypatch):
    choices = _stream(monkeypatch, ["Let me look.\n", '{"name": "order_', 'status", "arguments": {"order_id": 42}}'])
    content = "".join(c["delta"].get("content") or "" for c in choices)
    calls = [d for c in choices for d in c["delta"].get("tool_calls") or []]
    assert content == "Let me look.\n" and calls[0]["function"]["name"] == "order_status"
    assert json.loads("".join(d["function"].get("arguments") or "" for d in calls)) == {"order_id": 42}
    assert choices[-1]["finish_reason"] == "tool_calls"
    broken = _stream(monkeypatch, ['{"name": "order_status", "arguments": {"order_id": 4'])
    assert not any(c["delta"].get("tool_calls") for c in broken)  # never sent as a call
    assert broken[-1]["finish_reason"] == "invalid_tool_call" and "not valid JSON" in broken[-1]["delta"]["tool_call_error"]
    assert "".join(c["delta"].get("content") or "" for c in broken) == '{"name": "order_status", "arguments": {"order_id": 4'
    plan = structured.plan_chat(P.ChatCompletionRequest(model="m", messages=ASK, tools=[ORDER]))
    msg, reason = structured.assistant_message('{"name": "refund", "arguments": {}}', plan, "stop")
    assert msg.tool_calls is None and reason == "invalid_tool_call" and "refund" in msg.tool_call_error
    msg, reason = structured.assistant_message("Sure, it shipped.", plan, "stop")
    assert (msg.content, msg.tool_calls, reason) == ("Sure, it shipped.", None, "stop")


def test_chat_json_schema_local_and_remote(client, llama_dir, tmp_path, capsys):
    from tailor.cli import main

    schema_file = tmp_path / "ticket.json"
    schema_file.write_text(json.dumps(Ticket.model_json_schema()))
    assert main(["chat", str(llama_dir), "--json-schema", str(schema_file), "--prompt", "Order a tent",
                 "--max-new-tokens", "120"]) == 0
    local = Ticket.model_validate_json(capsys.readouterr().out)
    url = str(client.base_url).rstrip("/").removesuffix("/v1")
    assert main(["chat", "base", "--url", url, "--api-key", KEY, "--json-schema", str(schema_file), "--prompt",
                 "Order a tent", "--max-new-tokens", "120"]) == 0
    assert Ticket.model_validate_json(capsys.readouterr().out) == local  # greedy: the same constrained answer
    schema_file.write_text('{"type": "object", "properties": {"a": {"type": "nonsense"}}}')
    assert main(["chat", str(llama_dir), "--json-schema", str(schema_file), "--prompt", "x"]) == 2
    assert "nonsense" in capsys.readouterr().err


def test_schemathesis_chat_with_tools_and_formats_has_no_server_errors(server, schemathesis_clean):
    """Fuzz /v1/chat/completions (tools, tool_choice, tool messages, response_format included): no 5xx."""
    schemathesis_clean(server, KEY, "--include-path", "/v1/chat/completions", "--max-examples", "40", "--seed", "2",
                       "--request-timeout", "60", timeout=400)


def test_parallel_tool_calls_false_returns_the_first_call_of_a_list(monkeypatch):
    two = '[{"name": "order_status", "arguments": {"order_id": 42}}, {"name": "stock_check", "arguments": 7}]'
    every = structured.plan_chat(P.ChatCompletionRequest(model="m", messages=ASK, tools=[ORDER, STOCK]))
    one = structured.plan_chat(P.ChatCompletionRequest(model="m", messages=ASK, tools=[ORDER, STOCK],
                                                       parallel_tool_calls=False))
    msg, reason = structured.assistant_message(two, every, "stop")  # the second call's arguments are no object
    assert msg.tool_calls is None and reason == "invalid_tool_call" and "call 1" in msg.tool_call_error
    msg, reason = structured.assistant_message(two, one, "stop")
    assert [c.function.name for c in msg.tool_calls] == ["order_status"] and reason == "tool_calls"
    assert msg.tool_call_error is None
    choices = _stream(monkeypatch, [two], tools=(ORDER, STOCK), parallel_tool_calls=False)
    calls = [d for c in choices for d in c["delta"].get("tool_calls") or []]
    assert {d["index"] for d in calls} == {0} and choices[-1]["finish_reason"] == "tool_calls"
    assert P.ChatCompletionRequest(model="m", messages=ASK, parallel_tool_calls=True).parallel_tool_calls is True
