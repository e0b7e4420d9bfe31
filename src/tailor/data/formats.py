"""Rows to canonical records: OpenAI messages, sharegpt, alpaca, preference, KTO, prompts, classification, text.

Split from `loading` (which finds and reads files); this module only turns one parsed row into
a record (shapes in `tailor.data.records`) or a `_RowError` with a short stable reason.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass

from tailor.data.tools import assistant_text, with_tools

FIELDS = ("messages", "system", "tools", "instruction", "input", "output", "history", "text", "label", "prompt",
          "chosen", "rejected", "images")
TAG_DEFAULTS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                "system_tag": "system", "observation_tag": "observation", "function_tag": "function_call"}
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "bot": "assistant",
                  "model": "assistant", "system": "system", "function_call": "assistant", "observation": "tool",
                  "tool": "tool", "function": "tool"}


class _RowError(Exception):
    """A row that cannot become a record: a short stable reason, the column at fault, how to fix it."""

    def __init__(self, reason: str, column: str | None = None, fix: str | None = None):
        super().__init__(reason)
        self.reason, self.column, self.fix = reason, column, fix


@dataclass
class _Bad:
    """Stands in for a row the reader could not parse (e.g. an invalid JSON line)."""

    reason: str
    detail: str = ""



class _Row:
    """A row seen through `columns`; remembers which columns it read, so the rest go to meta."""

    def __init__(self, row: dict, cols: dict[str, str]):
        self.row, self.cols, self.used = row, cols, set()
        self.part_images: list[str] = []  # image references taken from OpenAI content parts, in order

    def col(self, name: str, default: str | None = None) -> str:
        return self.cols.get(name, default or name)

    def has(self, name: str, default: str | None = None) -> bool:
        c = self.col(name, default)
        return bool(c) and self.row.get(c) is not None

    def get(self, name: str, default: str | None = None):
        c = self.col(name, default)
        if not c:
            return None
        self.used.add(c)
        return self.row.get(c)

    def text(self, name: str, required: bool = True, default: str | None = None) -> str | None:
        c, v = self.col(name, default), self.get(name, default)
        if v is None:
            if required:
                raise _RowError(f"missing field '{c or name}'", c or name,
                                f"give every row a '{c or name}', or map {name} to another column in `columns`")
            return None
        if not isinstance(v, str):
            raise _RowError(f"'{c}' is not a string", c, f"'{c}' must hold text, got {type(v).__name__}")
        return v

    def listing(self, name: str, default: str | None = None) -> list | None:
        c, v = self.col(name, default), self.get(name, default)
        if isinstance(v, str) and v.lstrip().startswith("["):
            try:  # CSV and Parquet cells often hold the list as JSON text
                v = json.loads(v)
            except json.JSONDecodeError:
                raise _RowError(f"'{c}' is not valid JSON", c, f"'{c}' must be a JSON list") from None
        if v is not None and not isinstance(v, list):
            raise _RowError(f"'{c}' is not a list", c, f"'{c}' must be a list, got {type(v).__name__}")
        return v


def _image_part(p: dict) -> str | None:
    """The image reference of an OpenAI `image_url` part (or a bare `image` part), else None."""
    if p.get("type") == "image_url":
        url = p.get("image_url")
        url = url.get("url") if isinstance(url, dict) else url
        return url if isinstance(url, str) and url else None
    if p.get("type") == "image":
        ref = p.get("image") or p.get("url") or p.get("path")
        return ref if isinstance(ref, str) and ref else None
    return None


def _content(v, images: list | None = None):
    """Message content as text: OpenAI text parts joined; LLaMA-Factory's v1 parts (text, reasoning, tool_call,
    each with a `value`) become one assistant text with a <think> block and tool calls (`tailor.data.tools`).
    With `images`, OpenAI image parts become `<image>` placeholders and their references are appended to it."""
    if not (isinstance(v, list) and v and all(isinstance(p, dict) for p in v)):
        return v
    if images is not None and any(p.get("type") in ("image_url", "image") for p in v):
        if not all(p.get("type") == "text" or _image_part(p) for p in v):
            return v
        images.extend(_image_part(p) for p in v if p.get("type") != "text")
        return "".join(p.get("text", "") if p.get("type") == "text" else "<image>" for p in v)
    kinds = {p.get("type") for p in v}
    if kinds == {"text"} and all("value" not in p for p in v):
        return "".join(p.get("text", "") for p in v)  # OpenAI content parts, text only
    if not kinds <= {"text", "reasoning", "tool_call"}:
        return v

    def joined(kind):
        return "".join(str(p.get("text", p.get("value", ""))) for p in v if p.get("type") == kind)

    calls = []
    for p in v:
        if p.get("type") == "tool_call":
            call = p.get("value")
            try:
                calls.append(json.loads(call) if isinstance(call, str) else call)
            except json.JSONDecodeError:
                raise _RowError("a tool_call part is not valid JSON", "tool_call",
                                'a tool_call value must be {"name": ..., "arguments": {...}}') from None
    return assistant_text(joined("text"), calls, joined("reasoning") or None)


def _turns(r: _Row, turns: list, tags: dict[str, str], col: str) -> list[dict]:
    roles = dict(SHAREGPT_ROLES)
    for tag, role in (("user_tag", "user"), ("assistant_tag", "assistant"), ("system_tag", "system"),
                      ("function_tag", "assistant"), ("observation_tag", "tool")):
        if tag in tags:
            roles[tags[tag]] = role
    role_key, content_key = ({**TAG_DEFAULTS, **tags}[k] for k in ("role_tag", "content_tag"))
    msgs = []
    for i, m in enumerate(turns):
        if not isinstance(m, dict):
            raise _RowError("turn is not an object", col, f"every turn in '{col}' must be {{{role_key}, {content_key}}}")
        raw = m[role_key] if role_key in m else m.get("role")
        role = (roles.get(raw) or roles.get(raw.lower())) if isinstance(raw, str) else None
        if role is None:
            known = sorted({k for k in roles if isinstance(k, str)})
            raise _RowError(f"unknown role '{raw}'", f"{col}[{i}].{role_key}",
                            f"use one of {', '.join(known)}, or name your role values with `tags` (user_tag, ...)")
        content = _content(m[content_key] if content_key in m else m.get("content"), r.part_images)
        if role == "assistant" and m.get("tool_calls") and (content is None or isinstance(content, str)):
            content = assistant_text(content, m["tool_calls"])  # text before the calls, then the calls
        if not isinstance(content, str):
            raise _RowError("message content is not a string", f"{col}[{i}].{content_key}",
                            "every turn needs text content")
        msgs.append({"role": role, "content": content})
    return msgs


def _system(r: _Row, msgs: list[dict]) -> list[dict]:
    """Put the system column and the tools column (as an add-on) into one leading system message."""
    system, tools = r.text("system", required=False), r.get("tools")
    if msgs and msgs[0]["role"] == "system":
        system = "\n\n".join(p for p in (msgs[0]["content"], system) if p and p.strip())
        msgs = msgs[1:]
    try:
        system = with_tools(system, tools if isinstance(tools, (str, list, dict)) else None)
    except json.JSONDecodeError:
        raise _RowError(f"'{r.col('tools')}' is not valid JSON", r.col("tools"),
                        "tools must be a JSON list of function definitions") from None
    return [{"role": "system", "content": system}, *msgs] if system else msgs


def _alpaca_prompt(r: _Row) -> list[dict]:
    msgs = []
    history = r.listing("history") or []
    for pair in history:
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise _RowError(f"'{r.col('history')}' is not a list of [question, answer] pairs", r.col("history"),
                            'history must look like [["q1", "a1"], ["q2", "a2"]]')
        msgs += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    instruction = r.text("instruction", required=not r.has("input")) or ""
    extra = r.text("input", required=False)
    msgs.append({"role": "user", "content": f"{instruction}\n{extra}" if instruction and extra else instruction or extra})
    return _system(r, msgs)


def conversation(messages: list[dict], tools=None) -> list[dict]:
    """OpenAI-shaped messages (assistant `tool_calls`, `tool` results, image_url parts) and tool definitions as
    canonical messages, by the same conversion the loader applies to training rows; the server renders requests
    with it. Image parts become <image> placeholders, in order.

    Raises TailorError naming the message at fault."""
    from tailor.errors import TailorError

    r = _Row({"messages": messages, "tools": tools}, {})
    try:
        return _system(r, _turns(r, messages, {}, "messages"))
    except _RowError as e:
        raise TailorError(e.reason, where=e.column, fix=e.fix) from None


def _chat(msgs: list[dict], col: str) -> dict:
    if not any(m["role"] == "assistant" and m["content"].strip() for m in msgs):
        raise _RowError("no assistant answer", col, "a training conversation needs at least one non-empty assistant turn")
    return {"messages": msgs}


def _answer(r: _Row, name: str, tags: dict[str, str]) -> str:
    c, v = r.col(name), r.get(name)
    if isinstance(v, list):  # TRL conversational shape: [{"role": "assistant", "content": ...}]
        v = v[-1] if v else None
    if isinstance(v, dict):
        v = _content(v.get(tags.get("content_tag", TAG_DEFAULTS["content_tag"]), v.get("content")))
    if v is None:
        raise _RowError(f"missing field '{c}'", c, f"a preference row needs '{r.col('chosen')}' and '{r.col('rejected')}'")
    if not isinstance(v, str):
        raise _RowError(f"'{c}' is not a string", c, f"'{c}' must be the answer text or {{from, value}}")
    if not v.strip():
        raise _RowError(f"empty '{c}'", c, "both answers of a preference pair need text")
    return v


def _preference(r: _Row, tags: dict[str, str]) -> dict:
    if r.has("prompt"):
        p, col = r.get("prompt"), r.col("prompt")
        prompt = [{"role": "user", "content": p}] if isinstance(p, str) else _turns(r, r.listing("prompt"), tags, col)
        prompt = _system(r, prompt)
    elif r.has("messages") or r.has("messages", "conversations"):
        name = "messages" if r.has("messages") else "conversations"
        col = r.col("messages", name)
        prompt = _system(r, _turns(r, r.listing("messages", name), tags, col))
    else:
        prompt, col = _alpaca_prompt(r), r.col("instruction")
    if not prompt or prompt[-1]["role"] not in ("user", "tool") or not prompt[-1]["content"].strip():
        raise _RowError("prompt does not end with a user turn", col,
                        "the prompt of a preference pair must end with the user's (or a tool's) message")
    chosen, rejected = _answer(r, "chosen", tags), _answer(r, "rejected", tags)
    if chosen.strip() == rejected.strip():
        raise _RowError("identical chosen and rejected", r.col("chosen"),
                        "a preference pair needs two different answers; drop the row or fix one answer")
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def _messages(r: _Row, tags: dict[str, str]) -> tuple[list[dict], str]:
    """The row's turns (messages, conversations, or an alpaca instruction) with its system prompt, and their column."""
    if r.has("messages") or r.has("messages", "conversations"):
        name = "messages" if r.has("messages") else "conversations"
        col = r.col("messages", name)
        return _system(r, _turns(r, r.listing("messages", name), tags, col)), col
    answer = r.text("output", required=False)
    return _alpaca_prompt(r) + ([{"role": "assistant", "content": answer}] if answer else []), r.col("instruction")


def _kto(r: _Row, tags: dict[str, str]) -> dict:
    """A conversation whose last assistant turn is labelled desirable (true) or not (false): KTO's unpaired rows."""
    msgs, col = _messages(r, tags)
    label, lcol = r.get("label"), r.col("label")
    if isinstance(label, str) and label.lower() in ("true", "false"):
        label = label.lower() == "true"
    if not isinstance(label, bool):
        raise _RowError(f"'{lcol}' is not true/false", lcol, "a KTO row needs a boolean label (true = a good answer)")
    if not msgs or msgs[-1]["role"] != "assistant" or not msgs[-1]["content"].strip():
        raise _RowError("no final assistant answer", col, "a KTO row's conversation must end with the labelled answer")
    if len(msgs) < 2 or msgs[-2]["role"] not in ("user", "tool"):
        raise _RowError("no user turn before the answer", col, "the labelled answer must follow a user (or tool) turn")
    return {"prompt": msgs[:-1], "completion": msgs[-1]["content"], "label": label}


def _prompt_only(r: _Row, tags: dict[str, str]) -> dict:
    """A prompt without an answer to train on (GRPO samples the answers): a conversation ending with a user turn."""
    p = r.get("prompt")
    if isinstance(p, str):
        msgs, col = _system(r, [{"role": "user", "content": p}]), r.col("prompt")
    elif p is not None:
        msgs, col = _system(r, _turns(r, r.listing("prompt"), tags, r.col("prompt"))), r.col("prompt")
    else:
        msgs, col = _messages(r, tags)
    if not msgs or msgs[-1]["role"] not in ("user", "tool") or not msgs[-1]["content"].strip():
        raise _RowError("prompt does not end with a user turn", col, "a prompt must end with the user's (or a tool's) message")
    return {"messages": msgs}


def _detect(r: _Row) -> str:
    if r.has("chosen") and r.has("rejected"):
        return "preference"
    if (r.has("messages") or r.has("messages", "conversations")) and isinstance(r.row.get(r.col("label")), bool):
        return "kto"
    if r.has("messages"):
        return "messages"
    if r.has("messages", "conversations"):
        return "sharegpt"
    if r.has("instruction") and r.has("output"):
        return "alpaca"
    if r.has("prompt") and r.col("prompt") not in r.cols.values():
        return "prompt"
    if r.has("text") and r.col("label") and r.col("label") in r.row:
        return "classification"
    if r.has("text"):
        return "text"
    raise _RowError("no usable fields", None, f"no chat, alpaca, sharegpt, preference or text fields among the row's "
                    f"keys ({', '.join(map(str, r.row))[:120]}); set the source's `format` and `columns`")


def convert_row(row: object, fmt: str = "auto", columns: dict[str, str] | None = None,
                tags: dict[str, str] | None = None) -> tuple[dict, set[str]]:
    """One row to a canonical record (no bookkeeping keys) and the columns it consumed.

    Raises `_RowError` (reason, column, fix) for a row that cannot be used.
    """
    if isinstance(row, _Bad):
        raise _RowError(row.reason, None, f"the row has {row.detail}" if row.detail else None)
    if not isinstance(row, dict):
        raise _RowError("row is not a JSON object", None, "each row must be an object with named fields")
    r, tags = _Row(row, columns or {}), tags or {}
    kind = _detect(r) if fmt == "auto" else fmt
    if kind == "preference":
        rec = _preference(r, tags)
    elif kind == "kto":
        rec = _kto(r, tags)
    elif kind == "prompt":
        rec = _prompt_only(r, tags)
    elif kind in ("messages", "sharegpt"):
        name = "conversations" if kind == "sharegpt" and not r.has("messages") else "messages"
        turns = r.listing("messages", name)
        if turns is None:
            raise _RowError(f"missing field '{r.col('messages', name)}'", r.col("messages", name),
                            "give every row its list of turns, or map messages to that column in `columns`")
        rec = _chat(_system(r, _turns(r, turns, tags, r.col("messages", name))), r.col("messages", name))
        _attach_images(r, rec)
    elif kind == "alpaca":
        prompt = _alpaca_prompt(r)
        rec = _chat([*prompt, {"role": "assistant", "content": r.text("output")}], r.col("output"))
        _attach_images(r, rec)
    else:
        text = r.text("text")
        if not text.strip():
            raise _RowError("empty text", r.col("text"), "drop empty rows from the file")
        rec = {"text": text}
        if kind == "classification":
            label = r.get("label")
            if label is None or label == "" or isinstance(label, bool) or not isinstance(label, (str, int)):
                raise _RowError(f"'{r.col('label')}' is not a label", r.col("label"),
                                "a classification row needs a string or integer label")
            rec["label"] = label
    return rec, r.used


def _attach_images(r: _Row, rec: dict) -> None:
    """The row's images (its `images` column, or the image parts of its messages) as rec["images"]."""
    listed = r.listing("images") if r.has("images") else None
    if listed and r.part_images:
        raise _RowError("images both in a column and in content parts", r.col("images"),
                        "give a row's images either as the `images` list or as image_url parts, not both")
    images = listed or r.part_images
    if images or listed is not None:
        rec["images"] = list(images)


def _scalar(v):
    if isinstance(v, float) and v != v:
        return None  # NaN (an empty cell in pandas-written files) is not JSON
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    if isinstance(v, (_dt.date, _dt.datetime, _dt.time)):
        return v.isoformat()
    return json.dumps(v, ensure_ascii=False, default=str)


def _meta(row: object, used: set[str]) -> dict:
    """The row's unconsumed columns as JSON-able scalars (nested values become JSON text)."""
    if not isinstance(row, dict):
        return {}
    return {str(k): _scalar(v) for k, v in row.items() if k not in used}
