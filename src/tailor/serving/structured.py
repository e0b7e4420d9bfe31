"""Tools and structured output for /v1/chat/completions: what to render, what to constrain, how to answer.

A request's messages and tool definitions become canonical messages by the loader's own conversion
(`tailor.data.formats.conversation`, so a served prompt is token for token the prompt tailor trains on).
`tool_choice` required or a named function, and `response_format` json_object / json_schema, become one
JSON schema the engine constrains decoding to (`tailor.models.grammar`). Generated text is parsed back
(`tailor.data.tools.parse_answer`) into `message.tool_calls`; in streaming, text that may be a tool call
is held back until it is complete and then sent as `delta.tool_calls` fragments (name, then arguments),
so a call whose arguments do not parse is never sent as if valid: it arrives as content with
finish_reason "invalid_tool_call" and a `tool_call_error`.
"""

from __future__ import annotations

from dataclasses import dataclass

from tailor.data.formats import conversation
from tailor.data.tools import ParsedAnswer, call_schema, may_be_call, parse_answer
from tailor.errors import TailorError
from tailor.models.grammar import ANY_OBJECT, schema_problem
from tailor.serving import protocol as P


class BadRequest(Exception):
    """A request the server cannot honour: a message for the client and the parameter at fault."""

    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.message, self.param = message, param


@dataclass
class ChatPlan:
    """How one chat request is served."""

    messages: list[dict]  # canonical messages, rendered by the chat template
    schema: dict | None  # JSON schema decoding is constrained to, or None
    tool_names: set[str] | None  # tools whose calls are parsed from the answer (None: no parsing)
    max_calls: int | None = None  # parallel_tool_calls=false: 1 (the first call of a list is kept)


def _check_schema(schema, param: str) -> None:
    problem = schema_problem(schema)
    if problem:
        raise BadRequest(f"{param} is not a usable JSON schema: {problem}", param)


def plan_chat(req: P.ChatCompletionRequest) -> ChatPlan:
    """Validate tools, tool_choice and response_format, and build the messages and the constraint."""
    tools = req.tools or []
    names = [t.function.name for t in tools]
    for i, t in enumerate(tools):
        params = t.function.parameters
        where = f"tools[{i}].function.parameters"
        if params is not None:
            if params.get("type", "object") != "object":
                raise BadRequest(f"{where} must be an object schema (\"type\": \"object\"), got type "
                                 f"{params.get('type')!r}", where)
            _check_schema(params, where)
        if names.index(t.function.name) != i:
            raise BadRequest(f"tools[{i}].function.name '{t.function.name}' is given twice", f"tools[{i}].function.name")
    choice = req.tool_choice
    if choice is not None and choice != "none" and not tools:
        raise BadRequest("tool_choice needs tools: pass the functions the model may call in `tools`", "tool_choice")
    named = choice.function.name if isinstance(choice, P.NamedToolChoice) else None
    if named is not None and named not in names:
        raise BadRequest(f"tool_choice names '{named}', which is not among the tools {names}", "tool_choice")
    schema = None
    fmt = req.response_format
    if isinstance(fmt, P.JsonSchemaFormat):
        if fmt.json_schema.schema_ is None:
            raise BadRequest("response_format.json_schema.schema is missing: give the JSON schema the answer must "
                             "match", "response_format.json_schema.schema")
        _check_schema(fmt.json_schema.schema_, "response_format.json_schema.schema")
        schema = fmt.json_schema.schema_
    elif isinstance(fmt, P.JsonObjectFormat):
        schema = ANY_OBJECT
    calling = bool(tools) and choice != "none"
    if calling and (choice == "required" or named):
        if schema is not None:
            raise BadRequest("response_format cannot be combined with tool_choice required or a named function: the "
                             "answer is then a tool call", "response_format")
        schema = call_schema([t.function.model_dump() for t in tools], named)
    elif calling and schema is not None:  # auto with a response format: a tool call or the formatted answer
        schema = {"anyOf": [call_schema([t.function.model_dump() for t in tools]), schema]}
    rendered = canonical_messages(req.messages, [t.model_dump(exclude_none=True) for t in tools] or None)
    return ChatPlan(rendered, schema, set(names) if calling else None,
                    1 if req.parallel_tool_calls is False else None)


def canonical_messages(msgs: list[P.ChatMessage], tools: list[dict] | None = None) -> list[dict]:
    """Request messages (and tool definitions) as canonical messages, by the loader's conversion (image_url parts
    become <image> placeholders, in order: `tailor.serving.vision.request_images` lists their URLs)."""
    try:
        return conversation([message_dict(m) for m in msgs], tools)
    except TailorError as e:
        raise BadRequest(f"the conversation cannot be used: {e.what}", e.where or "messages") from None


def message_dict(m: P.ChatMessage) -> dict:
    """A request message as the OpenAI-shaped dict the loader's conversion reads (image parts kept as parts)."""
    content = [p.model_dump(exclude_none=True) for p in m.content] if m.has_images() else m.text()
    out = {"role": "system" if m.role == "developer" else m.role, "content": content}
    if m.tool_calls:
        out["tool_calls"] = [c.model_dump() for c in m.tool_calls]
    return out


def _finish(reason: str | None, parsed: ParsedAnswer) -> str | None:
    if reason != "stop":
        return reason  # "length": cut off, whatever the text holds
    if parsed.error:
        return "invalid_tool_call"
    return "tool_calls" if parsed.calls else reason


def assistant_message(text: str, plan: ChatPlan, reason: str | None) -> tuple[P.AssistantMessage, str | None]:
    """The message of one choice and its finish_reason."""
    if plan.tool_names is None:
        from tailor.data.reasoning import split_reasoning

        reasoning, answer = split_reasoning(text)
        return P.AssistantMessage(content=answer, reasoning_content=reasoning), reason
    parsed = parse_answer(text, plan.tool_names, plan.max_calls)
    if parsed.error or not parsed.calls:  # a broken call stays text, never becomes tool_calls
        content = parsed.content if not parsed.calls and not parsed.error else _raw_answer(text)
        return P.AssistantMessage(content=content, reasoning_content=parsed.reasoning,
                                  tool_call_error=parsed.error), _finish(reason, parsed)
    calls = [P.ToolCall(function=P.FunctionCall(name=c.name, arguments=c.arguments)) for c in parsed.calls]
    return P.AssistantMessage(content=parsed.content, reasoning_content=parsed.reasoning,
                              tool_calls=calls), _finish(reason, parsed)


def _raw_answer(text: str) -> str:
    from tailor.data.reasoning import split_reasoning

    return split_reasoning(text)[1].strip()


def _next_line(text: str, i: int) -> int:
    """Where the line after the first newline at or after `i` starts; -1 when there is none."""
    n = text.find("\n", i)
    return n + 1 if n >= 0 else -1


class ToolCallStream:
    """Streams content deltas, holding back text from a line that may start a tool call until the end."""

    def __init__(self, tool_names: set[str], max_calls: int | None = None):
        self.names, self.max_calls, self.text, self.sent = tool_names, max_calls, "", 0

    def _hold_from(self) -> int:
        """The first line start not yet sent where a tool call may begin (len(text) when none): line starts are
        found one at a time, so a held call is not rescanned character by character on every token."""
        text, p = self.text, self.sent
        if p and text[p - 1] != "\n":
            p = _next_line(text, p)
        while p >= 0:
            if may_be_call(text[p:]):
                return p
            p = _next_line(text, p)
        return len(text)

    def feed(self, content: str) -> str:
        """Content that can be sent now."""
        self.text += content
        upto = self._hold_from()
        out, self.sent = self.text[self.sent:upto], max(self.sent, upto)
        return out

    def finish(self, reason: str | None) -> tuple[str, list[P.ToolCallDelta], str | None, str | None]:
        """(content still to send, tool-call fragments, tool_call_error, finish_reason) once generation ended."""
        parsed = parse_answer(self.text, self.names, self.max_calls)
        if parsed.error or not parsed.calls:
            return self.text[self.sent:], [], parsed.error, _finish(reason, parsed)
        # The text before the call went out already: sending stopped at the first line that may start a call.
        deltas = []
        for k, c in enumerate(parsed.calls):
            call = P.ToolCall(function=P.FunctionCall(name=c.name, arguments=c.arguments))
            deltas.append(P.ToolCallDelta(index=k, id=call.id, type="function",
                                          function=P.FunctionDelta(name=c.name, arguments="")))
            step = 16  # arguments in fragments, as OpenAI streams them
            deltas += [P.ToolCallDelta(index=k, function=P.FunctionDelta(arguments=c.arguments[i:i + step]))
                       for i in range(0, len(c.arguments), step)]
        return "", deltas, None, _finish(reason, parsed)
