"""Cleaning: the ordered `data.clean` steps applied to every text of every record, as a stream.

Each step reports as `clean.<step>` (rows in, out, changed, dropped by reason with the first place).
Text steps (nfkc, strip_control, whitespace, html, regex replace, chinese, pii) rewrite every text of
a record (message contents, text, chosen/rejected; roles and bookkeeping keys untouched); a record
whose user/assistant turn, text, chosen or rejected answer becomes empty is dropped as
"empty after cleaning", never emitted broken. Filter steps (regex drop, length, language) keep or
drop whole records.

The text normalizers are in `tailor.data.normalize` (nfkc, strip_control, whitespace, html: what
each keeps and changes), PII masking in `tailor.data.pii`. Language detection is script-based (see
`detect_language`); all Latin-script text is reported as "en".
"""

from __future__ import annotations

import re
from typing import Callable, Iterable, Iterator

from tailor.config import DataConfig, build
from tailor.data.normalize import html_to_text, nfkc, strip_control, whitespace
from tailor.data.pii import pii_masker
from tailor.data.records import PrepareReport, iter_texts, map_texts
from tailor.errors import TailorError

_MAP, _FILTER = 0, 1

# ---------------------------------------------------------------------------------------------
# language

_SCRIPTS = (  # (language, character class, weight): a CJK character carries about a Latin word's worth
    ("zh", "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f", 3),
    ("ja", "\u3040-\u309f\u30a0-\u30ff\u31f0-\u31ff\uff66-\uff9f", 3),
    ("ko", "\uac00-\ud7af\u1100-\u11ff\u3130-\u318f", 3),
    ("ru", "\u0400-\u052f", 1),
    ("ar", "\u0600-\u06ff\u0750-\u077f\u08a0-\u08ff\ufb50-\ufdff\ufe70-\ufefc", 1),
    ("el", "\u0370-\u03ff", 1),
    ("he", "\u0590-\u05ff", 1),
    ("th", "\u0e00-\u0e7f", 1),
    ("hi", "\u0900-\u097f", 1),
    ("en", "A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u1e00-\u1eff", 1),
)
_SCRIPT_RES = [(lang, re.compile(f"[{cls}]"), w) for lang, cls, w in _SCRIPTS]
LANGUAGES = tuple(lang for lang, _, _ in _SCRIPTS) + ("unknown",)
_ASCII_LETTER = re.compile("[A-Za-z]")


def detect_language(text: str) -> str:
    """The language of the dominant script among a text's letters: zh, ja, ko, ru, ar, el, he, th, hi, en.

    Every Latin-script language is reported as "en" (the Latin family); "unknown" when there are no
    letters. Han characters count as zh unless kana make up at least a tenth of the Han+kana
    characters (ja) or Hangul a tenth of Han+Hangul (ko). CJK characters weigh 3 Latin letters.
    """
    if text.isascii():
        return "en" if _ASCII_LETTER.search(text) else "unknown"
    counts = {lang: len(rx.findall(text)) * w for lang, rx, w in _SCRIPT_RES}
    han = counts["zh"]
    if han and counts["ja"] * 10 >= han + counts["ja"]:
        counts["ja"] += han
        counts["zh"] = 0
    elif han and counts["ko"] * 10 >= han + counts["ko"]:
        counts["ko"] += han
        counts["zh"] = 0
    lang, score = max(counts.items(), key=lambda kv: kv[1])
    return lang if score else "unknown"


# ---------------------------------------------------------------------------------------------
# the stream


def _steps(steps: list) -> list:
    """Step models as given, or plain dicts / names validated against the schema (so a typo is an error)."""
    if all(hasattr(s, "step") for s in steps):
        return list(steps)
    return build(DataConfig, {"clean": [s.model_dump() if hasattr(s, "model_dump") else s for s in steps]},
                 "clean_records(steps=...)").clean


def _plan(steps: list, report: PrepareReport, tokenizer) -> list[tuple[int, object, Callable]]:
    plan, names = [], set()
    for i, st in enumerate(steps):
        name = f"clean.{st.step}" if f"clean.{st.step}" not in names else f"clean.{st.step}#{i}"
        names.add(name)
        where = f"data.clean[{i}] (step={st.step})"
        if st.step == "nfkc":
            plan.append((_MAP, name, nfkc))
        elif st.step == "strip_control":
            plan.append((_MAP, name, strip_control))
        elif st.step == "whitespace":
            plan.append((_MAP, name, whitespace))
        elif st.step == "html":
            plan.append((_MAP, name, html_to_text))
        elif st.step == "regex":
            plan.append(_regex_stage(st, name, where))
        elif st.step == "chinese":
            plan.append((_MAP, name, _opencc(st.convert, where)))
        elif st.step == "pinyin":
            from tailor.data.pinyin import clean_step

            plan.append((_MAP, name, clean_step(st, where)))
        elif st.step == "pii":
            counts = report.extra.setdefault("pii_masked", {})
            for k in st.kinds:
                counts.setdefault(k, 0)
            plan.append((_MAP, name, pii_masker(st.kinds, counts)))
        elif st.step == "length":
            plan.append((_FILTER, name, _length_fn(st, tokenizer)))
        elif st.step == "language":
            plan.append((_FILTER, name, _language_fn(st.keep, where)))
        else:  # pragma: no cover - the schema admits only the steps above
            raise TailorError(f"unknown cleaning step '{st.step}'", where=where)
    # Reports are created now, at call time, in step order, even if the stream is never consumed.
    return [(kind, report.step(name), fn) for kind, name, fn in plan]


def _regex_stage(st, name: str, where: str):
    try:
        rx = re.compile(st.pattern)
        rx.sub(st.replace, "")  # a bad group reference in the replacement fails here, not mid-run
    except re.error as exc:
        raise TailorError(f"invalid regular expression in cleaning step: {st.pattern!r} ({exc})", where=where,
                          fix="correct the pattern (Python `re` syntax; escape literal characters like '(' or '+')") from None
    if st.action == "drop":
        reason = f"matched regex {st.pattern!r}"
        return _FILTER, name, lambda joined: reason if rx.search(joined) else None
    repl = st.replace
    return _MAP, name, lambda t: rx.sub(repl, t)


def _opencc(convert: str, where: str) -> Callable[[str], str]:
    try:
        import opencc
    except ImportError:
        raise TailorError("the 'chinese' cleaning step needs OpenCC", where=where,
                          fix="pip install opencc-python-reimplemented") from None
    fn = opencc.OpenCC(convert).convert
    return lambda t: t if t.isascii() else fn(t)


def _length_fn(st, tokenizer) -> Callable[[str], str | None]:
    if (st.min_tokens is not None or st.max_tokens is not None) and tokenizer is None:
        raise TailorError("the length step bounds tokens (min_tokens/max_tokens) but no tokenizer is available",
                          where="data.clean[step=length]",
                          fix="set model.tokenizer or model.path (the CLI and training load it; from Python pass tokenizer=...)")
    lo, hi, tlo, thi = st.min_chars, st.max_chars, st.min_tokens, st.max_tokens

    def check(joined: str) -> str | None:
        n = len(joined)
        if lo is not None and n < lo:
            return f"shorter than {lo} characters"
        if hi is not None and n > hi:
            return f"longer than {hi} characters"
        if tlo is not None or thi is not None:
            n = len(tokenizer.encode(joined, add_special_tokens=False))
            if tlo is not None and n < tlo:
                return f"shorter than {tlo} tokens"
            if thi is not None and n > thi:
                return f"longer than {thi} tokens"
        return None

    return check


def _language_fn(keep: list[str], where: str) -> Callable[[str], str | None]:
    wanted = {"en" if k == "latin" else k for k in keep}
    unknown = sorted(wanted - set(LANGUAGES))
    if unknown:
        raise TailorError(f"language(s) {unknown} cannot be told apart by the script-based detector", where=where,
                          fix=f"use codes among {list(LANGUAGES)}; every Latin-script language counts as 'en'")
    shown = ", ".join(keep)

    def check(joined: str) -> str | None:
        lang = detect_language(joined)
        return None if lang in wanted else f"language '{lang}' not in [{shown}]"

    return check


_ESSENTIAL = frozenset({"user", "assistant", "prompt:user", "text", "chosen", "rejected"})


def _roles(rec: dict) -> list[str]:
    """What each text of `iter_texts(rec)` is, in the same order."""
    roles = [m["role"] for m in rec.get("messages") or []]
    roles += ["prompt:" + m["role"] for m in rec.get("prompt") or []]
    roles += [k for k in ("text", "chosen", "rejected") if isinstance(rec.get(k), str)]
    return roles


def _emptied(rec: dict, old: list, new: list) -> bool:
    roles = None
    for i, (a, b) in enumerate(zip(old, new)):
        if a is not b and isinstance(b, str) and not b.strip() and a.strip():
            roles = roles or _roles(rec)
            if roles[i] in _ESSENTIAL:
                return True
    return False


def clean_records(records: Iterable[dict], steps: list, report: PrepareReport, tokenizer=None) -> Iterator[dict]:
    """Apply the cleaning `steps` (config models, dicts or bare names) in order to a stream of records.

    Lazy: records are read one at a time. Step reports (`clean.<step>`; a repeated step type is
    `clean.<step>#<index>`) are created and every step is validated (regex patterns, token bounds need a tokenizer, language codes) when this is
    called, before any record is read. Masked PII counts go to `report.extra["pii_masked"]`.
    """
    plan = _plan(_steps(steps), report, tokenizer)
    return _run(records, plan)


def _run(records: Iterable[dict], plan: list) -> Iterator[dict]:
    str_ = str
    for rec in records:
        texts = orig = list(iter_texts(rec))
        plain = all(t.__class__ is str_ for t in texts)  # else some content is None (tool calls) or a list
        joined = None
        kept = True
        for kind, rep, fn in plan:
            rep.n_in += 1
            if kind == _MAP:
                new = list(map(fn, texts)) if plain else [fn(t) if t.__class__ is str_ else t for t in texts]
                if new != texts:
                    if _emptied(rec, texts, new):
                        rep.drop("empty after cleaning", rec.get("where"))
                        kept = False
                        break
                    rep.changed += 1
                    texts, joined = new, None
            else:
                if joined is None:
                    joined = "\n".join(t for t in texts if t.__class__ is str_)
                reason = fn(joined)
                if reason is not None:
                    rep.drop(reason, rec.get("where"))
                    kept = False
                    break
            rep.n_out += 1
        if kept:
            if texts is not orig:
                rec = map_texts(rec, _feeder(texts))
            yield rec


def _feeder(texts: list) -> Callable[[str], str]:
    it = iter(texts)
    return lambda _old: next(it)
