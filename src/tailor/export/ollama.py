"""An Ollama Modelfile next to a GGUF file: the chat template in Go template syntax and stop tokens."""

from __future__ import annotations

import logging
from pathlib import Path

from tailor.models.tokenizer import DEEPSEEK_CHAT_TEMPLATE, SPECIAL_TOKENS, TOOL_OUTPUT

log = logging.getLogger(__name__)

# tailor's DeepSeek-style Jinja template (models/tokenizer.py) rewritten for Ollama's Go templates:
# same text for every message sequence. `$last` marks the final message, after which the generation
# prompt is added unless the model is continuing its own (assistant) turn, as Jinja's
# add_generation_prompt does in a chat request.
DEEPSEEK_GO_TEMPLATE = (
    SPECIAL_TOKENS["bos"]
    + "{{- range $i, $m := .Messages }}"
    "{{- $last := eq (len (slice $.Messages $i)) 1 }}"
    '{{- if eq .Role "system" }}{{ .Content }}'
    '{{- else if eq .Role "user" }}' + SPECIAL_TOKENS["user"] + "{{ .Content }}"
    '{{- else if eq .Role "assistant" }}' + SPECIAL_TOKENS["assistant"] + "{{ .Content }}"
    "{{- if not $last }}" + SPECIAL_TOKENS["eos"] + "{{ end }}"
    '{{- else if eq .Role "tool" }}' + TOOL_OUTPUT[0] + "{{ .Content }}" + TOOL_OUTPUT[1] + "{{ end }}"
    '{{- if and $last (ne .Role "assistant") }}' + SPECIAL_TOKENS["assistant"] + "{{ end }}"
    "{{- end }}"
)


def modelfile_text(gguf_name: str, tokenizer) -> str:
    """Modelfile text: FROM the GGUF, TEMPLATE when the chat template is tailor's, PARAMETER stop lines."""
    lines = [f"FROM ./{gguf_name}", ""]
    if tokenizer.chat_template == DEEPSEEK_CHAT_TEMPLATE:
        lines += [f'TEMPLATE """{DEEPSEEK_GO_TEMPLATE}"""', ""]
    else:
        # A template tailor cannot translate is left out rather than guessed: Ollama then uses its own
        # detection from the GGUF's tokenizer.chat_template.
        log.warning("chat template is not tailor's DeepSeek template; the Modelfile has no TEMPLATE, so "
                    "Ollama picks one from the GGUF metadata")
        lines += ["# TEMPLATE omitted: the chat template is not tailor's DeepSeek-style one; Ollama",
                  "# falls back to its detection from the GGUF's tokenizer.chat_template.", ""]
    stops = [t for t in (tokenizer.eos_token, SPECIAL_TOKENS["user"]) if t and t in tokenizer.get_vocab()]
    lines += [f'PARAMETER stop "{t}"' for t in dict.fromkeys(stops)]
    return "\n".join(lines) + "\n"


def write_modelfile(out_dir: str | Path, gguf_name: str, tokenizer) -> Path:
    """Write OUT/Modelfile for `ollama create NAME -f OUT/Modelfile`."""
    path = Path(out_dir) / "Modelfile"
    path.write_text(modelfile_text(gguf_name, tokenizer), encoding="utf-8")
    return path
