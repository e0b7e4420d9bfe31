"""Request and response schemas of the OpenAI API (the subset tailor serves), ordered like its docs.

Requests forbid unknown fields: a parameter tailor does not implement (e.g. `frequency_penalty`)
gets a clear 400 instead of being silently ignored. Responses follow the OpenAI objects field by
field so every OpenAI client library parses them.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _stop_list(v):
    if v is None:
        return []
    return [v] if isinstance(v, str) else list(v)


def _validate_stop(v):
    stops = _stop_list(v)
    if len(stops) > 4 or any(not s or len(s) > 256 for s in stops):
        raise ValueError("stop must be at most 4 non-empty strings of at most 256 characters")
    return v


# ---------------------------------------------------------------------------------------------
# Chat completions: POST /v1/chat/completions


class TextPart(_Request):
    type: Literal["text"]
    text: str


class ImageUrl(_Request):
    url: str = Field(min_length=1, description="A data:image/...;base64 URL (remote http(s) URLs are refused: the server is offline).")
    detail: Literal["auto", "low", "high"] | None = Field(None, description="Accepted for compatibility; the model's "
                                                          "image processor decides the resolution.")


class ImagePart(_Request):
    type: Literal["image_url"]
    image_url: ImageUrl


ContentPart = Union[TextPart, ImagePart]


_FUNCTION_NAME = r"^[A-Za-z0-9_.\-]{1,64}$"


class FunctionCallIn(_Request):
    name: str = Field(pattern=_FUNCTION_NAME, description="The function the assistant called.")
    arguments: str = Field(description="Its arguments as JSON text (as the server returned them).")


class ToolCallIn(_Request):
    id: str | None = Field(None, max_length=256, description="The call's id (tool messages answer it by tool_call_id).")
    type: Literal["function"] = "function"
    function: FunctionCallIn


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant", "tool"] = Field(description="developer is treated as system.")
    content: Union[str, list[Annotated[ContentPart, Field(discriminator="type")]], None] = Field(
        None, description="Text, or a list of parts: text, and image_url in user messages to a vision-language model "
                          "(null only for an assistant message with tool_calls).")
    name: str | None = Field(None, max_length=256, description="Optional participant name (not rendered by chat templates).")
    tool_call_id: str | None = Field(None, max_length=256, description="For role=tool: the call this message answers.")
    tool_calls: list[ToolCallIn] | None = Field(None, max_length=64, description="For role=assistant: the tool calls "
                                                "it made (rendered as tailor trains them, tailor.data.tools).")

    @model_validator(mode="after")
    def _check(self):
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError("content is required (it may be null only for an assistant message with tool_calls)")
        if self.role != "user" and isinstance(self.content, list) and any(p.type == "image_url" for p in self.content):
            raise ValueError("image_url parts are accepted only in user messages")
        return self

    def text(self) -> str:
        """The text parts joined (image parts left out)."""
        if self.content is None:
            return ""
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content
                                                                          if p.type == "text")

    def has_images(self) -> bool:
        return isinstance(self.content, list) and any(p.type == "image_url" for p in self.content)


class FunctionDef(_Request):
    name: str = Field(pattern=_FUNCTION_NAME, description="Letters, digits, _ . - (at most 64).")
    description: str | None = Field(None, max_length=8192)
    parameters: dict | None = Field(None, description="A JSON schema of the arguments (an object schema).")
    strict: bool | None = Field(None, description="Accepted for compatibility: arguments are constrained to the "
                                "schema whenever decoding is constrained (tool_choice required or named).")


class ToolDef(_Request):
    type: Literal["function"] = Field(description="Only function tools exist.")
    function: FunctionDef


class NamedFunction(_Request):
    name: str = Field(pattern=_FUNCTION_NAME)


class NamedToolChoice(_Request):
    type: Literal["function"]
    function: NamedFunction


class TextFormat(_Request):
    type: Literal["text"]


class JsonObjectFormat(_Request):
    type: Literal["json_object"]


class JsonSchemaSpec(_Request):
    name: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,64}$", description="A name for the schema.")
    description: str | None = Field(None, max_length=8192)
    schema_: dict | None = Field(None, alias="schema", description="The JSON schema the answer must match.")
    strict: bool | None = Field(None, description="Accepted for compatibility: the answer always matches the schema "
                                "(constrained decoding), strict or not.")


class JsonSchemaFormat(_Request):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


class StreamOptions(_Request):
    include_usage: bool = Field(False, description="Send a last chunk with token usage before [DONE].")


class _Sampling(_Request):
    model: str = Field(max_length=512, description="The base model's name or an adapter's name (GET /v1/models lists them).")
    max_tokens: int | None = Field(None, ge=1, description="Most tokens to generate (default: the server's serve.max_tokens).")
    n: int = Field(1, ge=1, le=64, description="Choices to generate (at most serve.max_n).")
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="Seed for sampling: same seed and inputs -> same output.")
    stop: Union[str, list[str], None] = Field(None, description="Up to 4 strings; generation stops before any of them.")
    stream: bool = Field(False, description="Send tokens as server-sent events, ending with `data: [DONE]`.")
    stream_options: StreamOptions | None = None
    temperature: float = Field(1.0, ge=0, le=2, description="0 = greedy decoding.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling share.")

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, v):
        return _validate_stop(v)

    def stops(self) -> list[str]:
        return _stop_list(self.stop)


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1, description="The conversation so far.")
    tools: list[ToolDef] | None = Field(None, max_length=128, description="Functions the model may call.")
    tool_choice: Union[Literal["none", "auto", "required"], NamedToolChoice, None] = Field(
        None, description="auto (the default with tools): the model decides; none: no calls; required or a named "
                          "function: decoding is constrained to a call.")
    parallel_tool_calls: bool | None = Field(None, description="false: at most one tool call per answer (when the "
                                             "model writes a list of calls, the first is returned); true or unset: "
                                             "every call the model writes.")
    response_format: Union[TextFormat, JsonObjectFormat, JsonSchemaFormat, None] = Field(
        None, discriminator="type", description="json_object or json_schema: decoding is constrained to such JSON.")
    logprobs: bool = Field(False, description="Return the log probability of each generated token.")
    max_completion_tokens: int | None = Field(None, ge=1, description="Newer name of max_tokens (wins when both are set).")
    top_logprobs: int | None = Field(None, ge=0, le=20, description="With logprobs: this many most likely alternatives per token.")


class CompletionRequest(_Sampling):
    prompt: Union[str, list[str]] = Field(description="Text to continue (raw, no chat template), or a list of them.")
    logprobs: int | None = Field(None, ge=0, le=5, description="Return log probabilities of the chosen and this many most likely tokens.")
    max_tokens: int | None = Field(16, ge=1, description="Most tokens to generate (OpenAI's default for completions is 16).")

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class GenerateRequest(_Request):
    """POST /generate: the simple endpoint. The prompt is one user message, rendered with the chat template."""

    prompt: str | None = Field(None, description="The user's message (or pass `messages`).")
    messages: list[ChatMessage] | None = Field(None, min_length=1, description="A whole conversation instead of `prompt`.")
    model: str | None = Field(None, max_length=512, description="Model or adapter name (default: the base model).")
    max_tokens: int | None = Field(None, ge=1, description="Most tokens to generate.")
    temperature: float = Field(0.0, ge=0, le=2, description="0 = greedy decoding.")
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    stop: Union[str, list[str], None] = None

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, v):
        return _validate_stop(v)

    def stops(self) -> list[str]:
        return _stop_list(self.stop)


# ---------------------------------------------------------------------------------------------
# Responses


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None = None


class FunctionCall(BaseModel):
    name: str
    arguments: str  # JSON text of an object


class ToolCall(BaseModel):
    id: str = Field(default_factory=lambda: _id("call"))
    type: Literal["function"] = "function"
    function: FunctionCall


# finish_reason: "tool_calls" when the answer is valid tool calls; "invalid_tool_call" when the model wrote
# something that starts like a tool call but does not parse (or names no given tool / no argument object):
# the text is then left in `content`, never in `tool_calls`, and `tool_call_error` says what is wrong.
FinishReason = Literal["stop", "length", "tool_calls", "invalid_tool_call"]


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    # DeepSeek API convention: a reasoning model's <think> block, apart from the answer in `content`.
    reasoning_content: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_error: str | None = None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReason | None = None


class ChatCompletion(BaseModel):
    id: str = Field(default_factory=lambda: _id("chatcmpl"))
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: Usage


class FunctionDelta(BaseModel):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(BaseModel):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionDelta


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None
    tool_call_error: str | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: Delta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class CompletionLogprobs(BaseModel):
    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float] = Field(default_factory=list)
    top_logprobs: list[dict[str, float]] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None = None


class Completion(BaseModel):
    id: str = Field(default_factory=lambda: _id("cmpl"))
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class GenerateResponse(BaseModel):
    text: str
    finish_reason: Literal["stop", "length"]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "tailor"
    parent: str | None = Field(None, description="For an adapter: the base model it runs on.")
    version: int | None = Field(None, description="The registry version being served (serve --registry).")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """Every error the server returns has this shape (the OpenAI error object)."""

    error: ErrorDetail


class Health(BaseModel):
    status: Literal["ok", "loading", "overloaded"]
    active: int = 0
    queued: int = 0
