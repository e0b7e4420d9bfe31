"""GRPO's rewards: the built-ins (answer against the row's reference, format, length, language) and functions from
a Python file the user names (tailor imports and runs that file: it is their code, with their permissions).

Every reward is called by TRL's GRPOTrainer with the batch's prompts and completions (plus the dataset's
`reference` column) and returns one float per completion, or None where it does not apply (TRL leaves those out
of the sum instead of counting a zero). A reward that raises, or returns something else, stops the run with a
TailorError naming it; a reference reward given a row without a reference raises too (grpo_rows keeps such rows
out, or refuses them, before training starts).
"""

from __future__ import annotations

import importlib.util
import math
import re
import unicodedata
from pathlib import Path
from typing import Callable

from tailor.config import RewardSpec
from tailor.data.reasoning import answer_of, well_formed
from tailor.errors import TailorError

REFERENCE_REWARDS = ("exact", "normalized", "numeric", "contains")
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]")


def _text(x) -> str:
    """A prompt or completion as text: conversational ones are lists of messages (their contents joined)."""
    if isinstance(x, str):
        return x
    if isinstance(x, list):
        return "\n".join(m.get("content", "") for m in x if isinstance(m, dict) and isinstance(m.get("content"), str))
    return str(x)


def normalize(text: str) -> str:
    """Lower case, NFKC, punctuation and extra spaces removed: how `normalized` compares answers."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if unicodedata.category(c).startswith("P") else c for c in text)
    return " ".join(text.split())


def numbers(text: str) -> list[float]:
    """The numbers in a text, in order (thousands separators allowed)."""
    return [float(m.group().replace(",", "")) for m in _NUMBER.finditer(text)]


def language(text: str) -> str | None:
    """'zh' when most letters are Chinese characters, 'en' when most are Latin letters, None without letters."""
    zh, en = len(_CJK.findall(text)), len(_LATIN.findall(text))
    if zh == en == 0:
        return None
    return "zh" if zh * 3 >= en else "en"  # a Chinese word is one character, an English one about three letters


# Built-ins: (answer text after any <think> block, reference, prompt text, options) -> float | None

def _exact(answer, reference, prompt, **_):
    return float(answer.strip() == reference.strip())


def _normalized(answer, reference, prompt, **_):
    return float(normalize(answer) == normalize(reference))


def _contains(answer, reference, prompt, **_):
    return float(normalize(reference) in normalize(answer))


def _numeric(answer, reference, prompt, tolerance: float = 1e-6, relative: bool = False, **_):
    """1 when the answer's last number equals the reference's last number within `tolerance` (absolute, or a
    share of the reference with relative=true); 0 when it differs or the answer has no number."""
    want = numbers(reference)
    if not want:
        raise ValueError(f"the reference {reference!r} holds no number (numeric reward)")
    got = numbers(answer)
    if not got:
        return 0.0
    bound = tolerance * abs(want[-1]) if relative else tolerance
    return float(math.isclose(got[-1], want[-1], rel_tol=0.0, abs_tol=bound))


def _length(answer, reference, prompt, target: int = 50, **_):
    """1 at `target` words (a Chinese character counts as a word), falling linearly to 0 at 0 and 2 x target."""
    n = len(_CJK.findall(answer)) + len(_CJK.sub(" ", answer).split())
    return max(0.0, 1.0 - abs(n - target) / target)


def _language(answer, reference, prompt, language_: str | None = None, **_):
    want = language_ or language(prompt)
    if want is None:
        return None
    return float(language(answer) == want)


BUILTINS: dict[str, Callable] = {"exact": _exact, "normalized": _normalized, "numeric": _numeric,
                                 "contains": _contains, "length": _length, "language": _language}


def builtin_reward(spec: RewardSpec) -> Callable:
    """The TRL reward function of a built-in `spec.name` with `spec.options`."""
    name, options = spec.name, dict(spec.options)
    if name == "language" and "language" in options:
        lang = options.pop("language")
        if lang not in ("auto", "zh", "en"):
            raise TailorError(f"unknown language '{lang}' for the language reward", where="grpo.rewards[].options",
                              fix="use auto (the prompt's language), zh or en")
        options["language_"] = None if lang == "auto" else lang
    if name == "format":
        def score(prompts, completions, **kw):
            return [float(well_formed(_text(c))) for c in completions]
    else:
        fn = BUILTINS[name]

        def score(prompts, completions, reference=None, **kw):
            refs = reference if reference is not None else [None] * len(completions)
            out = []
            for p, c, ref in zip(prompts, completions, refs):
                if name in REFERENCE_REWARDS and (ref is None or not str(ref).strip()):
                    raise ValueError("a completion's row has no reference answer")
                out.append(fn(answer_of(_text(c)), str(ref or ""), _text(p), **options))
            return out
    score.__name__ = name
    return checked(score, name)


def file_reward(spec: RewardSpec) -> Callable:
    """The function `spec.function` of the Python file `spec.file` (imported, so its top level runs too), called
    as f(prompts, completions, references, **options) with prompts and completions as text."""
    path = Path(spec.file)
    if not path.is_file():
        raise TailorError(f"reward file not found: {path}", where="grpo.rewards[].file", fix="point it at a .py file")
    module_spec = importlib.util.spec_from_file_location(f"tailor_reward_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        raise TailorError(f"importing the reward file failed: {type(exc).__name__}: {exc}", where=str(path),
                          fix="fix the file (it is imported with Python, like `python -c 'import ...'`)") from exc
    fn = getattr(module, spec.function, None)
    if not callable(fn):
        raise TailorError(f"{path} defines no function '{spec.function}'", where="grpo.rewards[].function",
                          fix=f"define def {spec.function}(prompts, completions, references, **options) in it")
    options = dict(spec.options)

    def score(prompts, completions, reference=None, **kw):
        refs = list(reference) if reference is not None else [None] * len(completions)
        return fn([_text(p) for p in prompts], [_text(c) for c in completions], refs, **options)

    name = f"{path.stem}.{spec.function}"
    score.__name__ = name
    return checked(score, name)


def checked(score: Callable, name: str) -> Callable:
    """`score` with its failures made clear: an exception, a wrong count or a non-number is a TailorError naming
    the reward (never a silent zero); None (does not apply) and finite floats pass."""
    def run(prompts, completions, **kw):
        try:
            values = score(prompts, completions, **kw)
        except TailorError:
            raise
        except Exception as exc:
            raise TailorError(f"reward '{name}' raised {type(exc).__name__}: {exc}",
                              where=f"grpo.rewards ({name}), first completion: {_text(completions[0])[:80]!r}",
                              fix="fix the reward (or the rows it fails on); a reward may return None where it does not apply") from exc
        values = list(values) if values is not None else []
        if len(values) != len(completions):
            raise TailorError(f"reward '{name}' returned {len(values)} values for {len(completions)} completions",
                              where=f"grpo.rewards ({name})", fix="return one float (or None) per completion")
        out = []
        for v in values:
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
                raise TailorError(f"reward '{name}' returned {v!r}", where=f"grpo.rewards ({name})",
                                  fix="return finite floats, or None where the reward does not apply")
            out.append(None if v is None else float(v))
        return out

    run.__name__ = name
    return run


def reward_functions(specs: list[RewardSpec]) -> list[Callable]:
    """The TRL reward functions of grpo.rewards, in order (their weights go to GRPOConfig.reward_weights)."""
    return [builtin_reward(s) if s.name else file_reward(s) for s in specs]


def needs_reference(specs: list[RewardSpec]) -> bool:
    """True when a configured reward compares against the row's reference answer."""
    return any(s.name in REFERENCE_REWARDS for s in specs)
