"""R1-style reasoning in answers: a `<think>...</think>` block, then the answer.

Training (GRPO rewards), evaluation (answers are scored after the block) and serving (`reasoning_content` beside
`content`, the DeepSeek API convention) all split generated text here, so they agree on where the answer starts.
"""

from __future__ import annotations

import re

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
_FORMAT = re.compile(r"\s*<think>(.+?)</think>\s*(\S.*)", re.DOTALL)


def split_reasoning(text: str) -> tuple[str | None, str]:
    """(reasoning or None, answer). The block may open the text or be opened by the prompt (R1's template ends the
    prompt with `<think>`, so the text starts inside it): everything before the first `</think>` is reasoning.
    A text still inside an unclosed block (generation stopped while thinking) is all reasoning, with no answer."""
    close = text.find(THINK_CLOSE)
    if close < 0:
        stripped = text.lstrip()
        if stripped.startswith(THINK_OPEN):
            return stripped[len(THINK_OPEN):].strip(), ""
        return None, text
    reasoning = text[:close]
    opened = reasoning.find(THINK_OPEN)
    if opened >= 0:
        reasoning = reasoning[opened + len(THINK_OPEN):]
    return reasoning.strip(), text[close + len(THINK_CLOSE):].strip()


def answer_of(text: str) -> str:
    """The answer after any reasoning block (the whole text when there is none)."""
    return split_reasoning(text)[1]


def well_formed(text: str) -> bool:
    """True when the text is a non-empty `<think>` block followed by a non-empty answer."""
    return _FORMAT.fullmatch(text) is not None


class ReasoningStream:
    """Splits streamed text pieces into (reasoning, content) deltas as they arrive, holding back only the few
    characters that could be the start of `<think>` or `</think>`."""

    def __init__(self):
        self.state = "start"  # start -> (thinking ->) answer
        self.pending = ""

    def feed(self, piece: str) -> tuple[str, str]:
        """(reasoning delta, content delta) for the next piece of generated text."""
        self.pending += piece
        reasoning, content = "", ""
        while self.pending:
            if self.state == "start":
                head = self.pending.lstrip()
                if THINK_OPEN.startswith(head) and len(head) < len(THINK_OPEN):
                    break  # could still become "<think>"
                if head.startswith(THINK_OPEN):
                    self.state, self.pending = "thinking", head[len(THINK_OPEN):]
                else:
                    self.state = "answer"
            elif self.state == "thinking":
                close = self.pending.find(THINK_CLOSE)
                if close >= 0:
                    reasoning += self.pending[:close]
                    self.state, self.pending = "answer", self.pending[close + len(THINK_CLOSE):].lstrip()
                    continue
                keep = _partial_suffix(self.pending, THINK_CLOSE)
                reasoning += self.pending[:len(self.pending) - keep]
                self.pending = self.pending[len(self.pending) - keep:]
                break
            else:
                content += self.pending
                self.pending = ""
        return reasoning, content

    def flush(self) -> tuple[str, str]:
        """What is still held back when generation ends."""
        rest, self.pending = self.pending, ""
        return (rest, "") if self.state == "thinking" else ("", rest)


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest end of `text` that is a proper start of `marker`."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-n:]):
            return n
    return 0
