"""Chat templates: one code path renders prompts for training, evaluation and serving.

The loss mask is derived from the rendered text itself: each assistant turn's character span is
found by rendering the conversation up to that turn (with the generation prompt) and up to its end,
then tokens are mapped to characters through the fast tokenizer's offsets. So the mask covers
exactly what the template emits for the assistant, end-of-turn token included, for any template.
"""

from __future__ import annotations

from pathlib import Path

from tailor.errors import TailorError

# The special tokens of tailor's own tokenizers (`tailor.models.tokenizer.train_tokenizer`); the
# template that uses them lives here so the data stage renders it without importing models/.
SPECIAL_TOKENS = {
    "bos": "<｜begin▁of▁sentence｜>",
    "eos": "<｜end▁of▁sentence｜>",
    "pad": "<｜▁pad▁｜>",
    "user": "<｜User｜>",
    "assistant": "<｜Assistant｜>",
}

# A tool result is wrapped in DeepSeek-V3's tool-output markers and, like a user turn, has no end
# token of its own: the next "<｜Assistant｜>" closes it, so the template stays prefix-stable.
TOOL_OUTPUT = ("<｜tool▁output▁begin｜>", "<｜tool▁output▁end｜>")

# DeepSeek-V3 style. Kept on few lines because every character outside the Jinja tags is output.
# Prefix-stable: the generation prompt "<｜Assistant｜>" is exactly how the next assistant turn
# starts, which `assistant_spans` below relies on to find the assistant spans for the loss mask.
DEEPSEEK_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{{ message['content'] }}"
    "{%- elif message['role'] == 'user' -%}{{ '" + SPECIAL_TOKENS["user"] + "' + message['content'] }}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{ '" + SPECIAL_TOKENS["assistant"] + "' + message['content'] + '" + SPECIAL_TOKENS["eos"] + "' }}"
    "{%- elif message['role'] == 'tool' -%}"
    "{{ '" + TOOL_OUTPUT[0] + "' + message['content'] + '" + TOOL_OUTPUT[1] + "' }}"
    "{%- else -%}{{ raise_exception('Unknown chat role: ' + message['role'] "
    "+ ' (expected system, user, assistant or tool)') }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '" + SPECIAL_TOKENS["assistant"] + "' }}{%- endif -%}"
)

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

ROLES = ("system", "user", "assistant", "tool")  # tool: a function/tool result the assistant reads
# End-of-turn markers of common templates, used only when a template is not prefix-stable.
_END_MARKERS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>")


def builtin_templates() -> dict[str, str]:
    """Chat templates selectable by name in data.chat_template."""
    return {"deepseek": DEEPSEEK_CHAT_TEMPLATE, "chatml": CHATML_TEMPLATE}


def set_chat_template(tokenizer, name_or_path: str | None) -> None:
    """Override the tokenizer's template with a built-in one or a Jinja file (None keeps its own)."""
    if not name_or_path:
        return
    templates = builtin_templates()
    if name_or_path in templates:
        tokenizer.chat_template = templates[name_or_path]
        return
    path = Path(name_or_path)
    if path.is_file():
        tokenizer.chat_template = path.read_text(encoding="utf-8")
        return
    raise TailorError(f"unknown chat template '{name_or_path}'", where="data.chat_template",
                      fix=f"use one of {sorted(templates)} or the path of a .jinja file")


def check_messages(messages, where: str = "conversation") -> None:
    """Raise a clear error for a conversation the templates cannot render."""
    if not isinstance(messages, list) or not messages:
        raise TailorError("a conversation must be a non-empty list of messages", where=where)
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise TailorError(f"message {i} must be {{'role': one of {ROLES}, 'content': text}}, got {m!r:.120}", where=where)


def render(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> str:
    """Render messages to text with the tokenizer's chat template."""
    if not getattr(tokenizer, "chat_template", None):
        raise TailorError("the tokenizer has no chat template", where=getattr(tokenizer, "name_or_path", "tokenizer"),
                          fix="set data.chat_template to a built-in name (deepseek, chatml) or a .jinja file")
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def encode_prompt(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of a prompt that asks the model for the next assistant turn (eval, chat and serving use this)."""
    if messages and messages[-1]["role"] == "assistant":
        messages = messages[:-1]
    text = render(tokenizer, messages, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def assistant_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of each assistant turn (end-of-turn included)."""
    full = render(tokenizer, messages)
    spans: list[tuple[int, int]] = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prefix = render(tokenizer, messages[:i], add_generation_prompt=True)
        upto = render(tokenizer, messages[: i + 1])
        if upto.startswith(prefix) and full.startswith(upto):
            spans.append((len(prefix), len(upto)))
        else:
            spans.append(_search_span(tokenizer, full, m["content"], spans[-1][1] if spans else 0))
    return full, spans


def _search_span(tokenizer, full: str, content: str, start: int) -> tuple[int, int]:
    """Fallback for templates that rewrite earlier turns (e.g. strip reasoning): find the content itself."""
    pos = full.find(content, start)
    if pos < 0:
        raise TailorError("the chat template changes assistant text, so the loss mask cannot be placed",
                          fix="use a prefix-stable template (data.chat_template=deepseek or chatml)")
    end = pos + len(content)
    for marker in (getattr(tokenizer, "eos_token", None), *_END_MARKERS):
        if marker and full.startswith(marker, end):
            end += len(marker)
            break
    return pos, end


def encode_conversation(tokenizer, messages: list[dict], max_length: int | None) -> dict | None:
    """input_ids and labels (-100 outside assistant turns) for one conversation.

    max_length=None keeps the whole conversation. Returns None when no assistant token survives
    truncation to max_length.
    """
    full, spans = assistant_spans(tokenizer, messages)
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    labels = [-100] * len(ids)
    for t, (s, e) in enumerate(offsets):
        if e > s and any(s < b and e > a for a, b in spans):
            labels[t] = ids[t]
    truncated = max_length is not None and len(ids) > max_length
    if truncated:
        ids, labels = ids[:max_length], labels[:max_length]
    if all(lab == -100 for lab in labels):
        return None
    return {"input_ids": ids, "labels": labels, "truncated": truncated}
