"""Tool calling as text: one rendering for training rows and served requests, and parsing calls back."""

import json
from pathlib import Path

import pytest

from tailor.data.formats import conversation
from tailor.data.loading import load_records
from tailor.data.templates import encode_conversation, encode_prompt, render
from tailor.data.tools import call_schema, may_be_call, parse_answer, tools_text

SHARED = Path(__file__).resolve().parents[3] / "shared" / "datasets"
WEATHER = {"name": "weather", "description": "Current weather",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def _openai_request(row: dict, upto: int) -> tuple[list[dict], list[dict]]:
    """A glaive (sharegpt) row's first `upto` turns as an OpenAI chat request: messages with tool_calls and tool
    results, and the tools in OpenAI's {"type": "function", "function": ...} shape."""
    tools = [{"type": "function", "function": t} for t in json.loads(row["tools"])]
    messages = []
    for turn in row["conversations"][:upto]:
        if turn["from"] == "human":
            messages.append({"role": "user", "content": turn["value"]})
        elif turn["from"] == "function_call":
            call = json.loads(turn["value"])
            messages.append({"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": call["name"], "arguments": json.dumps(call["arguments"], ensure_ascii=False)}}]})
        elif turn["from"] == "observation":
            messages.append({"role": "tool", "tool_call_id": "call_1", "content": turn["value"]})
        else:
            messages.append({"role": "assistant", "content": turn["value"]})
    return messages, tools


def _same_tokens_as_training(tokenizer, row: dict, path: Path) -> int:
    """For each assistant turn of a training row: the served prompt's ids equal the training ids before that turn,
    and the trained turn parses back to the row's call. Returns how many turns were compared."""
    path.write_text(json.dumps([row], ensure_ascii=False), encoding="utf-8")
    (record,) = load_records([path])
    train = encode_conversation(tokenizer, record["messages"], max_length=None)["input_ids"]
    compared = 0
    for k, turn in enumerate(row["conversations"]):
        if turn["from"] not in ("function_call", "gpt"):
            continue
        messages, tools = _openai_request(row, k)
        served = encode_prompt(tokenizer, conversation(messages, tools))
        assert train[:len(served)] == served, f"turn {k}: the served prompt differs from the training tokens"
        if turn["from"] == "function_call":
            target = tokenizer.decode(train[len(served):]).split(tokenizer.eos_token)[0]
            parsed = parse_answer(target, {t["function"]["name"] for t in tools})
            call = json.loads(turn["value"])
            assert parsed.error is None and [(c.name, json.loads(c.arguments)) for c in parsed.calls] == \
                [(call["name"], call["arguments"])]
        compared += 1
    return compared


def test_training_row_and_request_render_the_same_tokens(tokenizer, tmp_path):
    row = {"conversations": [
        {"from": "human", "value": "Weather in Oslo?"},
        {"from": "function_call", "value": json.dumps({"name": "weather", "arguments": {"city": "Oslo"}})},
        {"from": "observation", "value": '{"temp": 3}'},
        {"from": "gpt", "value": "It is 3 degrees."}], "tools": json.dumps([WEATHER])}
    assert _same_tokens_as_training(tokenizer, row, tmp_path / "row.json") == 2
    text = render(tokenizer, conversation(*_openai_request(row, 3)))
    assert tools_text([WEATHER]) in text and "<｜tool▁output▁begin｜>{\"temp\": 3}<｜tool▁output▁end｜>" in text


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared datasets not present")
def test_glaive_zh_rows_render_like_requests(tokenizer, tmp_path):
    rows = json.loads((SHARED / "more" / "glaive_toolcall_zh_demo.json").read_text(encoding="utf-8"))
    assert len(load_records([SHARED / "more" / "glaive_toolcall_zh_demo.json"])) == 300
    with_calls = [r for r in rows if any(t["from"] == "function_call" for t in r["conversations"])][:5]
    assert sum(_same_tokens_as_training(tokenizer, r, tmp_path / "zh.json") for r in with_calls) >= 10


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared datasets not present")
def test_reasoning_tool_rows_load_and_render(tokenizer):
    records = load_records([SHARED / "more" / "reason_tool_use_demo_50.jsonl"])
    assert len(records) == 50
    calling = [r for r in records if any(m["role"] == "tool" for m in r["messages"])]
    assert len(calling) >= 20
    msgs = calling[0]["messages"]
    assert msgs[0]["content"].count("Tools you can call (JSON):") == 1
    turn = next(m for m in msgs if m["role"] == "assistant")
    parsed = parse_answer(turn["content"])
    assert parsed.reasoning and parsed.calls and parsed.error is None
    assert all(isinstance(json.loads(c.arguments), dict) for c in parsed.calls)
    enc = encode_conversation(tokenizer, msgs, max_length=None)
    assert any(label != -100 for label in enc["labels"])


def test_parse_answer_reports_malformed_calls():
    names = {"weather"}
    ok = parse_answer('{"name": "weather", "arguments": {"city": "Oslo"}}', names)
    assert ok.error is None and ok.content is None and json.loads(ok.calls[0].arguments) == {"city": "Oslo"}
    two = parse_answer('Checking.\n[{"name": "weather", "arguments": {"city": "A"}}, '
                       '{"name": "weather", "arguments": {"city": "B"}}]', names)
    assert two.content == "Checking." and [json.loads(c.arguments)["city"] for c in two.calls] == ["A", "B"]
    thought = parse_answer('<think>need weather</think>{"name": "weather", "arguments": {}}', names)
    assert thought.reasoning == "need weather" and thought.calls[0].name == "weather"
    assert "not valid JSON" in parse_answer('{"name": "weather", "arguments": {"city": ', names).error
    assert "not one of the tools" in parse_answer('{"name": "stocks", "arguments": {}}', names).error
    assert "not a JSON object" in parse_answer('{"name": "weather", "arguments": "Oslo"}', names).error
    plain = parse_answer("It is sunny.", names)
    assert plain.calls == [] and plain.error is None and plain.content == "It is sunny."
    assert may_be_call('  {"na') and may_be_call('{"name": "x"') and not may_be_call("{'name'")


def test_call_schema_only_matches_calls():
    other = {"name": "stock", "parameters": {"type": "object", "properties": {"sku": {"type": "string"}}}}
    both = call_schema([{"type": "function", "function": WEATHER}, other])
    assert [o["properties"]["name"]["const"] for o in both["anyOf"]] == ["weather", "stock"]
    one = call_schema([WEATHER, other], name="stock")
    assert one["properties"]["arguments"] == other["parameters"] and one["additionalProperties"] is False
