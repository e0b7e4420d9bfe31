"""Tool calling as text: how tool definitions, tool calls and tool results are written into a conversation.

One code path for training and serving. The data loader (`tailor.data.formats`) turns sharegpt
`function_call`/`observation` turns, OpenAI `tool_calls` and LLaMA-Factory's v1 `tool_call` content parts
into canonical messages with these functions; `tailor serve` turns an OpenAI request (`tools`, assistant
`tool_calls`, `tool` messages) into the same messages with the same functions, and parses generated text
back into tool calls here. The format is the one LLaMA-Factory's glaive data holds:

- the tool definitions are appended to the system message: "Tools you can call (JSON):\\n[...]", one flat
  object per function (name, description, parameters), whatever shape (OpenAI or glaive) they came in;
- a tool call is the assistant turn's text: `{"name": ..., "arguments": {...}}`, several calls a JSON list
  of those, after any text the assistant wrote before calling (on its own line) and any `<think>` block;
- a tool result is a `tool` message, which the chat template wraps in DeepSeek-V3's tool-output markers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from tailor.data.reasoning import THINK_CLOSE, THINK_OPEN, split_reasoning

TOOLS_HEADER = "Tools you can call (JSON):\n"
# How a tool call's text starts (json.dumps with the default separators, as the glaive rows hold it).
_CALL_STARTS = ('{"name":', '[{"name":')


def function_defs(tools) -> list[dict]:
    """The tool definitions as flat function objects: OpenAI's {"type": "function", "function": {...}} unwrapped.

    `tools` may be a list, a single object, or their JSON text (as glaive rows hold them)."""
    if isinstance(tools, str):
        text = tools.strip()
        if not text:
            return []
        tools = json.loads(text)
    if isinstance(tools, dict):
        tools = [tools]
    out = []
    for t in tools or []:
        if t == {}:
            continue
        if isinstance(t, dict) and t.get("type") == "function" and isinstance(t.get("function"), dict):
            t = t["function"]
        out.append(t)
    return out


def tools_text(tools) -> str | None:
    """The system-message addition that shows the model the tools it may call (None when there are none)."""
    defs = function_defs(tools)
    return TOOLS_HEADER + json.dumps(defs, ensure_ascii=False) if defs else None


def with_tools(system: str | None, tools) -> str | None:
    """A system prompt with the tool definitions appended (the loader and the server both build it here)."""
    parts = [s for s in (system, tools_text(tools)) if s and s.strip()]
    return "\n\n".join(parts) if parts else None


def _arguments(args):
    if isinstance(args, str):
        try:
            return json.loads(args)
        except json.JSONDecodeError:
            return args  # kept as written: a training row's broken arguments stay visible, not dropped
    return args


def call_text(calls: list[dict]) -> str:
    """Tool calls ({"name", "arguments"} or OpenAI {"function": {...}}) as the text of an assistant turn."""
    items = []
    for c in calls:
        fn = c.get("function", c) if isinstance(c, dict) else {}
        items.append({"name": fn.get("name"), "arguments": _arguments(fn.get("arguments"))})
    return json.dumps(items[0] if len(items) == 1 else items, ensure_ascii=False)


def assistant_text(content: str | None, calls: list | None = None, reasoning: str | None = None) -> str:
    """The text of an assistant turn: an optional <think> block, the answer text, then the tool calls."""
    text = (content or "").strip() if calls else (content or "")
    if calls:
        text = f"{text}\n{call_text(calls)}" if text else call_text(calls)
    if reasoning:
        text = f"{THINK_OPEN}{reasoning}{THINK_CLOSE}{text}"
    return text


@dataclass
class ToolCall:
    name: str
    arguments: str  # JSON text, as OpenAI sends it
    valid: bool = True  # False: the name is not a given tool or the arguments are not a JSON object


@dataclass
class ParsedAnswer:
    """Generated text split into reasoning, plain content and tool calls."""

    reasoning: str | None
    content: str | None
    calls: list[ToolCall] = field(default_factory=list)
    error: str | None = None  # why the text that starts like a tool call is not a valid one


def _call_start(answer: str) -> int:
    """Where tool-call text starts in an answer: at its beginning or at the start of a line; -1 when nowhere."""
    best = -1
    for start in _CALL_STARTS:
        pos = 0 if answer.startswith(start) else answer.find("\n" + start)
        pos = pos if pos <= 0 else pos + 1
        if pos >= 0 and (best < 0 or pos < best):
            best = pos
    return best


def parse_answer(text: str, tool_names: set[str] | None = None, max_calls: int | None = None) -> ParsedAnswer:
    """Split generated text into reasoning, content and tool calls; a malformed call is reported, never passed on.

    A call is valid when its JSON parses, names one of `tool_names` (when given) and has an object of arguments.
    `max_calls`: keep the first calls of a list only (the API's parallel_tool_calls=false: one call per answer)."""
    reasoning, answer = split_reasoning(text)
    start = _call_start(answer.strip())
    if start < 0:
        return ParsedAnswer(reasoning, answer)
    answer = answer.strip()
    content, raw = answer[:start].strip() or None, answer[start:].strip()
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as e:
        return ParsedAnswer(reasoning, content, [], f"the tool call is not valid JSON ({e.msg} at character {e.pos})")
    items = (value if isinstance(value, list) else [value])[:max_calls]
    calls, problems = [], []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            problems.append(f"call {i} has no function name")
            continue
        args = item.get("arguments", {})
        valid = isinstance(args, dict) and (tool_names is None or item["name"] in tool_names)
        if not isinstance(args, dict):
            problems.append(f"call {i} ({item['name']}): arguments are not a JSON object")
        elif not valid:
            problems.append(f"call {i} names '{item['name']}', which is not one of the tools given")
        calls.append(ToolCall(item["name"], json.dumps(args, ensure_ascii=False), valid))
    return ParsedAnswer(reasoning, content, calls, "; ".join(problems) or None)


def may_be_call(text: str) -> bool:
    """While streaming: could this (stripped) answer text still turn out to be the start of a tool call?"""
    head = text.lstrip()
    return any(s.startswith(head) or head.startswith(s) for s in _CALL_STARTS)


def call_schema(tools, name: str | None = None) -> dict:
    """A JSON schema that only tool calls match: one call to one of `tools` (or to `name`) with valid arguments.

    Used for tool_choice=required or a named function, where decoding is constrained to it."""
    options = []
    for fn in function_defs(tools):
        if name is not None and fn.get("name") != name:
            continue
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        options.append({"type": "object", "properties": {"name": {"const": fn["name"]}, "arguments": params},
                        "required": ["name", "arguments"], "additionalProperties": False})
    return options[0] if len(options) == 1 else {"anyOf": options}
