"""`tailor chat`: talk to a model in the terminal, with the same prompt path as eval and serving."""

from __future__ import annotations

import sys
import threading
from typing import Callable, TextIO

import torch

from tailor.data.reasoning import THINK_CLOSE, THINK_OPEN, ReasoningStream, split_reasoning
from tailor.data.templates import encode_prompt
from tailor.models.generation import decoding_kwargs

HELP = "commands: /reset clears the conversation, /exit (or Ctrl-D) quits"


def load_chat_model(model_dir, adapter=None, runtime: bool = True):
    """(model, tokenizer) for `tailor chat`: what `tailor eval` accepts (model, quantized model, adapter, base +
    adapter), with the CPU speed-ups of `tailor.runtime.enable` unless `runtime` is False."""
    from tailor import runtime as speedups
    from tailor.adapters.loading import load_any

    model, tokenizer = load_any(model_dir, adapter)
    if runtime:
        speedups.enable(model)
    return model, tokenizer


def stream_answer(model, tokenizer, messages: list[dict], max_new_tokens: int = 128, do_sample: bool = False,
                  temperature: float = 0.7, top_p: float = 0.9, on_text: Callable[[str], None] | None = None,
                  json_schema: dict | None = None) -> str:
    """Generate one assistant turn, passing text pieces to on_text as they are decoded (JSON matching
    `json_schema` when given: constrained decoding, tailor.models.grammar)."""
    from transformers import LogitsProcessorList, TextIteratorStreamer

    from tailor.models.grammar import SchemaLogitsProcessor

    ids = torch.tensor([encode_prompt(tokenizer, messages)], device=next(model.parameters()).device)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    kwargs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), streamer=streamer,
                  **decoding_kwargs(tokenizer, max_new_tokens, do_sample, temperature, top_p))
    if json_schema is not None:
        kwargs["logits_processor"] = LogitsProcessorList([SchemaLogitsProcessor(tokenizer, json_schema)])
    worker = threading.Thread(target=lambda: model.generate(**kwargs), daemon=True)
    worker.start()
    pieces = []
    for piece in streamer:
        pieces.append(piece)
        if on_text:
            on_text(piece)
    worker.join()
    return "".join(pieces).strip()


def repl(model, tokenizer, system: str | None = None, max_new_tokens: int = 128, do_sample: bool = False,
         stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout, json_schema: dict | None = None) -> None:
    """Read user lines, stream answers, keep the conversation until /reset or /exit."""
    model.eval()
    _conversation(lambda messages, on_text: stream_answer(model, tokenizer, messages, max_new_tokens, do_sample,
                                                          on_text=on_text, json_schema=json_schema),
                  system, stdin, stdout)


def _conversation(answer: Callable, system: str | None, stdin: TextIO, stdout: TextIO) -> None:
    base = [{"role": "system", "content": system}] if system else []
    messages = list(base)
    stdout.write(HELP + "\n")
    while True:
        stdout.write("you> ")
        stdout.flush()
        line = stdin.readline()
        if not line:
            break
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            break
        if text == "/reset":
            messages = list(base)
            stdout.write("(conversation cleared)\n")
            continue
        messages.append({"role": "user", "content": text})
        stdout.write("assistant> ")
        shown = _ReasoningDisplay(stdout)
        reply = answer(messages, shown.feed)
        shown.flush()
        stdout.write("\n")
        # As DeepSeek's API: the reasoning is shown, not sent back with the next turn.
        messages.append({"role": "assistant", "content": split_reasoning(reply)[1]})


class _ReasoningDisplay:
    """Writes streamed text with a <think> block dimmed (ANSI faint on a terminal), the answer on its own line."""

    DIM, RESET = "\x1b[2m", "\x1b[0m"

    def __init__(self, out: TextIO):
        self.out, self.stream, self.thought = out, ReasoningStream(), False
        self.dim = hasattr(out, "isatty") and out.isatty()

    def feed(self, piece: str) -> None:
        self._write(*self.stream.feed(piece))

    def flush(self) -> None:
        self._write(*self.stream.flush())

    def _write(self, reasoning: str, content: str) -> None:
        if reasoning:
            self.out.write(f"{self.DIM}{reasoning}{self.RESET}" if self.dim else reasoning)
            self.thought = True
        if content:
            if self.thought:
                self.out.write("\n")
                self.thought = False
            self.out.write(content)
        self.out.flush()


def remote_answer(url: str, messages: list[dict], model: str | None = None, max_tokens: int = 128,
                  temperature: float = 0.0, api_key: str | None = None, on_text: Callable[[str], None] | None = None,
                  timeout: float = 300.0, json_schema: dict | None = None) -> str:
    """One assistant turn from a running `tailor serve` (or any OpenAI-compatible server), streamed; with
    `json_schema` asked for as response_format json_schema."""
    import json
    import urllib.error
    import urllib.request

    from tailor.errors import TailorError

    base = url.rstrip("/")
    base = base if base.endswith("/v1") else base + "/v1"
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    if model is None:
        model = _first_model(base, headers, timeout)
    body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature, "stream": True}
    if json_schema is not None:
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "answer", "schema": json_schema}}
    body = json.dumps(body).encode()
    request = urllib.request.Request(base + "/chat/completions", data=body, headers=headers, method="POST")
    pieces, thinking = [], _Rejoin()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            for raw in resp:
                line = raw.decode("utf-8").strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                event = json.loads(data)
                if "error" in event:
                    raise TailorError(f"the server stopped the answer: {event['error'].get('message')}", where=url)
                for choice in event.get("choices", []):
                    delta = choice.get("delta") or {}
                    # reasoning_content (DeepSeek API) comes back as the <think> block it was generated as
                    piece = thinking.feed(delta.get("reasoning_content") or "", delta.get("content") or "")
                    if piece:
                        pieces.append(piece)
                        if on_text:
                            on_text(piece)
    except urllib.error.HTTPError as e:
        raise TailorError(f"the server answered {e.code}: {_error_message(e)}", where=url) from None
    except urllib.error.URLError as e:
        raise TailorError(f"cannot reach the server: {e.reason}", where=url,
                          fix="start it with `tailor serve MODEL_DIR` and check the address") from None
    return "".join(pieces).strip()


class _Rejoin:
    """Streamed reasoning_content and content deltas back into one text: <think>reasoning</think>answer."""

    def __init__(self):
        self.state = "start"

    def feed(self, reasoning: str, content: str) -> str:
        out = ""
        if reasoning:
            out += THINK_OPEN if self.state == "start" else ""
            self.state = "thinking"
            out += reasoning
        if content:
            out += THINK_CLOSE if self.state == "thinking" else ""
            self.state = "answer"
            out += content
        return out


def _first_model(base: str, headers: dict, timeout: float) -> str:
    import json
    import urllib.error
    import urllib.request

    from tailor.errors import TailorError

    try:
        with urllib.request.urlopen(urllib.request.Request(base + "/models", headers=headers), timeout=timeout) as resp:
            return json.loads(resp.read())["data"][0]["id"]
    except urllib.error.HTTPError as e:
        raise TailorError(f"the server answered {e.code}: {_error_message(e)}", where=base + "/models") from None
    except urllib.error.URLError as e:
        raise TailorError(f"cannot reach the server: {e.reason}", where=base,
                          fix="start it with `tailor serve MODEL_DIR` and check the address") from None


def _error_message(e) -> str:
    import json

    try:
        return json.loads(e.read())["error"]["message"]
    except Exception:  # a non-OpenAI server: show the status line only
        return str(e.reason)


def remote_repl(url: str, model: str | None = None, system: str | None = None, max_tokens: int = 128,
                api_key: str | None = None, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout,
                json_schema: dict | None = None) -> None:
    """The interactive session of `repl`, answered by a server instead of a local model."""
    _conversation(lambda messages, on_text: remote_answer(url, messages, model, max_tokens, api_key=api_key,
                                                          on_text=on_text, json_schema=json_schema),
                  system, stdin, stdout)
