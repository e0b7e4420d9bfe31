"""Constrained decoding: a JSON schema compiled by llguidance into a mask of the tokens allowed next.

llguidance (MIT, the Rust library behind guidance, vLLM's "guidance" backend) was chosen over xgrammar and
outlines-core because its CPU wheel has no dependencies (xgrammar 0.2.8 pulls triton and a TVM runtime),
it computes a mask in tens of microseconds without precomputing per-schema automata, and it supports the
JSON-schema subset OpenAI's strict mode uses. One `Constraint` per generated sequence: `mask` sets the
logits of disallowed tokens to -inf before sampling, `advance` feeds the chosen token back. Serving's
batched engine, `tailor chat --json-schema` and `tailor eval` (through `SchemaLogitsProcessor` in
`model.generate`) all use it, so a structured answer is produced the same way everywhere.

JSON is generated compactly with the separators `json.dumps` writes (", " and ": "), no free whitespace:
a model cannot stall in endless whitespace, and tool calls come out exactly as tailor trains them.
"""

from __future__ import annotations

import json
from functools import lru_cache

import torch

from tailor.errors import TailorError

_JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
ANY_OBJECT = {"type": "object"}


def _lib():
    try:
        import llguidance
    except ImportError:  # pragma: no cover - the serve extra installs it
        raise TailorError("constrained decoding needs llguidance", fix="pip install 'tailor[serve]'") from None
    return llguidance


def schema_grammar(schema: dict | None) -> str:
    """The llguidance grammar for JSON matching `schema` (None: any JSON object)."""
    return _lib().LLMatcher.grammar_from_json_schema(schema if schema is not None else ANY_OBJECT,
                                                     overrides=_JSON_OPTIONS)


def schema_problem(schema) -> str | None:
    """Why `schema` cannot constrain decoding (not an object, an unknown type, a broken $ref, ...), or None."""
    if not isinstance(schema, dict):
        return f"a JSON schema must be an object, got {type(schema).__name__}"
    try:
        grammar = schema_grammar(schema)
    except (ValueError, TypeError) as e:
        return str(e)
    is_error, messages = _lib().LLMatcher.validate_grammar_with_warnings(grammar)
    return messages[0] if is_error else None


@lru_cache(maxsize=4)
def _ll_tokenizer(tokenizer, n_vocab: int, eos: tuple[int, ...]):
    import llguidance.hf

    try:
        return llguidance.hf.from_tokenizer(tokenizer, n_vocab=n_vocab, eos_token=list(eos))
    except ValueError as e:
        raise TailorError(f"constrained decoding cannot use this tokenizer: {e}",
                          fix="use a fast (tokenizers-backed) tokenizer") from None


class Constraint:
    """The grammar state of one sequence: which tokens may come next, fed the tokens chosen."""

    def __init__(self, tokenizer, grammar: str, n_vocab: int, eos_ids=()):
        eos = tuple(sorted({*eos_ids, *([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])}))
        self.n_vocab = n_vocab
        self.matcher = _lib().LLMatcher(_ll_tokenizer(tokenizer, n_vocab, eos), grammar)
        if self.matcher.is_error():
            raise TailorError(f"the grammar cannot be used: {self.matcher.get_error()}")
        self._bits = torch.empty((n_vocab + 31) // 32, dtype=torch.int32)
        self._shifts = torch.arange(32, dtype=torch.int32)
        self._device_shifts: torch.Tensor | None = None  # _shifts on the logits' device, once it is not the CPU

    def allowed(self, device=None) -> torch.Tensor:
        """A bool tensor over the vocabulary (on `device`): True where the token may come next.

        The packed mask (one bit per token) is what crosses to the device; it is unpacked there."""
        self.matcher.unsafe_compute_mask_ptr(self._bits.data_ptr(), self._bits.numel() * 4)
        bits, shifts = self._bits, self._shifts
        if device is not None and torch.device(device) != bits.device:
            bits = bits.to(device)
            if self._device_shifts is None or self._device_shifts.device != bits.device:
                self._device_shifts = shifts.to(bits.device)
            shifts = self._device_shifts
        return ((bits.unsqueeze(-1) >> shifts) & 1).flatten()[:self.n_vocab].bool()

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        """`logits` (one row, length >= n_vocab) with every disallowed token at -inf (in place)."""
        allowed = self.allowed(logits.device)
        logits[:self.n_vocab].masked_fill_(~allowed, float("-inf"))
        logits[self.n_vocab:] = float("-inf")
        return logits

    def advance(self, token: int) -> None:
        if not self.matcher.consume_token(token):
            raise TailorError(f"the grammar rejected token {token}: {self.matcher.get_error()}")

    @property
    def finished(self) -> bool:
        """The grammar is complete and allows nothing more (end-of-sequence is the only way on)."""
        return self.matcher.is_stopped()


def json_constraint(tokenizer, schema: dict | None, n_vocab: int, eos_ids=()) -> Constraint:
    """A Constraint for JSON matching `schema` (None: any JSON object)."""
    return Constraint(tokenizer, schema_grammar(schema), n_vocab, eos_ids)


class SchemaLogitsProcessor:
    """A transformers LogitsProcessor constraining every row of one `model.generate` call to JSON matching a schema
    (make a new one per call: its rows start at the first step it sees)."""

    def __init__(self, tokenizer, schema: dict | None):
        self.tokenizer, self.grammar = tokenizer, schema_grammar(schema)
        self.rows: list[Constraint] | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.rows is None:  # the logits' width is the vocabulary the masks cover
            self.rows = [Constraint(self.tokenizer, self.grammar, scores.shape[-1]) for _ in range(input_ids.shape[0])]
        else:
            for token, c in zip(input_ids[:, -1].tolist(), self.rows):
                if not c.finished:
                    c.advance(token)
        eos = self.tokenizer.eos_token_id
        for i, c in enumerate(self.rows):
            if c.finished:  # complete: only end-of-sequence (generate pads finished rows itself)
                scores[i] = float("-inf")
                scores[i, eos] = 0.0
            else:
                c.mask(scores[i])
        return scores


def parse_json(text: str, schema: dict | None) -> tuple[object | None, str | None]:
    """(value, None) when `text` is JSON that matches `schema`, else (None, why not)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        return None, f"not valid JSON ({e.msg} at character {e.pos})"
    if schema is not None:
        import jsonschema_rs

        try:
            jsonschema_rs.validate(schema, value)
        except jsonschema_rs.ValidationError as e:
            return None, f"does not match the schema: {e.message}"
    elif not isinstance(value, dict):
        return None, "not a JSON object"
    return value, None


def load_schema(path) -> dict:
    """A JSON-schema file (`tailor chat --json-schema`, eval.json_schema), checked for use in constrained decoding."""
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise TailorError(f"no JSON-schema file at {p}", where=str(path), fix="give the path of a .json schema file")
    try:
        schema = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TailorError(f"the JSON-schema file is not valid JSON: {e}", where=str(p)) from None
    problem = schema_problem(schema)
    if problem:
        raise TailorError(f"the JSON schema cannot constrain decoding: {problem}", where=str(p),
                          fix="see https://github.com/guidance-ai/llguidance/blob/main/docs/json_schema.md for "
                              "what is supported")
    return schema
