"""`tailor chat`: talk to a model in the terminal, with the same prompt path as eval and serving."""

from __future__ import annotations

import sys
import threading
from typing import Callable, TextIO

import torch

from tailor.data.templates import encode_prompt
from tailor.models.generation import decoding_kwargs

HELP = "commands: /reset clears the conversation, /exit (or Ctrl-D) quits"


def stream_answer(model, tokenizer, messages: list[dict], max_new_tokens: int = 128, do_sample: bool = False,
                  temperature: float = 0.7, top_p: float = 0.9, on_text: Callable[[str], None] | None = None) -> str:
    """Generate one assistant turn, passing text pieces to on_text as they are decoded."""
    from transformers import TextIteratorStreamer

    ids = torch.tensor([encode_prompt(tokenizer, messages)], device=next(model.parameters()).device)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    kwargs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), streamer=streamer,
                  **decoding_kwargs(tokenizer, max_new_tokens, do_sample, temperature, top_p))
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
         stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> None:
    """Read user lines, stream answers, keep the conversation until /reset or /exit."""
    model.eval()
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
        answer = stream_answer(model, tokenizer, messages, max_new_tokens, do_sample,
                               on_text=lambda s: (stdout.write(s), stdout.flush()))
        stdout.write("\n")
        messages.append({"role": "assistant", "content": answer})
