"""Safety and security rules of the server: API keys, the input guard and output post-processing.

The rules are compiled once at start-up from `ServeConfig`, so a bad regex fails `tailor serve`
with a message naming the setting, never a request.
"""

from __future__ import annotations

import hmac
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tailor.config import ServeConfig
from tailor.data.clean import pii_masker
from tailor.errors import TailorError


def load_api_keys(cfg: ServeConfig) -> list[bytes]:
    """The accepted keys: serve.api_keys plus one key per non-empty line of serve.api_keys_file."""
    keys = list(cfg.api_keys)
    if cfg.api_keys_file:
        path = Path(cfg.api_keys_file)
        if not path.is_file():
            raise TailorError(f"API key file not found: {path}", where="serve.api_keys_file / --api-keys-file")
        keys += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [k.encode() for k in keys]


def key_allowed(authorization: str | None, keys: list[bytes]) -> bool:
    """True when no keys are configured, or the Bearer token equals one of them (constant-time compare)."""
    if not keys:
        return True
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return False
    given = token.strip().encode()
    # Compare against every key, without stopping early, so timing does not reveal which one matched.
    return sum(hmac.compare_digest(given, k) for k in keys) > 0


@dataclass
class GuardViolation(Exception):
    """A prompt broke an input rule; `rule` names it for the client (no internals)."""

    rule: str
    message: str


class InputGuard:
    """Max prompt length and blocklist regexes (case-insensitive), checked before anything is queued."""

    def __init__(self, cfg: ServeConfig):
        self.max_chars = cfg.max_prompt_chars
        self.rules = []
        for i, pattern in enumerate(cfg.blocklist):
            try:
                self.rules.append((f"blocklist[{i}]", re.compile(pattern, re.IGNORECASE)))
            except re.error as e:
                raise TailorError(f"serve.blocklist[{i}] is not a valid regular expression: {e}",
                                  where=f"serve.blocklist[{i}]", fix="correct the pattern") from None

    def check(self, texts: list[str]) -> None:
        """Raise GuardViolation for the first rule the prompt breaks."""
        total = sum(len(t) for t in texts)
        if total > self.max_chars:
            raise GuardViolation("max_prompt_chars", f"the prompt has {total} characters; this server accepts at most "
                                                     f"{self.max_chars} (rule max_prompt_chars)")
        for name, rx in self.rules:
            if any(rx.search(t) for t in texts):
                raise GuardViolation(name, f"the prompt matches a blocked pattern (rule {name})")


class OutputFilter:
    """Output rules (regex replace, PII masks) applied line by line, so streamed and whole answers agree.

    Streaming releases text a line at a time while rules are set: a match cannot be split across
    two chunks, and no rule sees text across a line break (in either mode).
    """

    def __init__(self, cfg: ServeConfig):
        self.steps = []
        self.counts: Counter = Counter()
        for i, rule in enumerate(cfg.output_rules):
            if rule.pii:
                self.steps.append(pii_masker(list(rule.pii), self.counts))
            else:
                try:
                    rx = re.compile(rule.pattern)
                except re.error as e:
                    raise TailorError(f"serve.output_rules[{i}].pattern is not a valid regular expression: {e}",
                                      where=f"serve.output_rules[{i}]", fix="correct the pattern") from None
                self.steps.append(lambda text, rx=rx, rep=rule.replace: rx.sub(rep, text))

    def __bool__(self) -> bool:
        return bool(self.steps)

    def apply(self, text: str) -> str:
        """All rules over a whole text, one line at a time."""
        if not self.steps:
            return text
        return "".join(self._line(line) for line in text.splitlines(keepends=True))

    def _line(self, line: str) -> str:
        for step in self.steps:
            line = step(line)
        return line

    def stream(self) -> "StreamFilter":
        return StreamFilter(self)


class StreamFilter:
    """Per-response state: `feed` returns what may be sent now, `flush` the rest at the end."""

    def __init__(self, f: OutputFilter):
        self.f, self.pending = f, ""

    def feed(self, delta: str) -> str:
        if not self.f:
            return delta
        self.pending += delta
        cut = self.pending.rfind("\n") + 1
        ready, self.pending = self.pending[:cut], self.pending[cut:]
        return self.f.apply(ready)

    def flush(self) -> str:
        rest, self.pending = self.pending, ""
        return self.f.apply(rest)
