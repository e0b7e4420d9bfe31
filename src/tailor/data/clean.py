"""Cleaning: the ordered `data.clean` steps applied to every text of every record, as a stream.

Each step reports as `clean.<step>` (rows in, out, changed, dropped by reason with the first place).
Text steps (nfkc, strip_control, whitespace, html, regex replace, chinese, pii) rewrite every text of
a record (message contents, text, chosen/rejected; roles and bookkeeping keys untouched); a record
whose user/assistant turn, text, chosen or rejected answer becomes empty is dropped as
"empty after cleaning", never emitted broken. Filter steps (regex drop, length, language) keep or
drop whole records.

Decisions a Chinese- or English-speaking user may care about:

- nfkc: NFKC, except that full-width punctuation and symbols (，！？：；（）￥ etc., U+FF01-FF0F,
  FF1A-FF20, FF3B-FF40, FF5B-FF60, FFE0-FFE6) and the ellipsis … stay as written; full-width letters and digits
  (Ａ１) become half-width, half-width katakana and CJK punctuation (ｶ ｡ ｢) become full-width.
  Chinese characters, 。、《》“” are not touched by NFKC at all.
- strip_control: removes C0/C1 controls (newline and tab kept; CR, CRLF, VT, FF, U+2028/9 become
  newlines), zero-width characters (U+200B/C/D, U+2060, U+FEFF, soft hyphen) and bidi marks/overrides.
  A zero-width joiner between two emoji is kept: it builds one emoji (👨‍👩‍👧), not hidden noise.
- whitespace: NBSP, U+3000 and other Unicode spaces become a space; runs of spaces/tabs inside a line
  collapse to one space; trailing spaces go; at most one blank line in a row; the text is trimmed.
  Indentation after the first line and fenced ``` code blocks are kept as they are. No space is
  ever added or removed between Chinese characters.
- html: only text that looks like HTML (a closing tag, a void tag like <br>, or a comment) is parsed;
  "a < b" and "a<b and c>d" stay. Entities (&amp; &#39;) are unescaped when written with a ';'.
- pii: see `pii_masker`: run nfkc first so that full-width digits are found.
- language: script-based (see `detect_language`); all Latin-script text is reported as "en".
"""

from __future__ import annotations

import html as _html
import ipaddress
import re
import unicodedata
from html.parser import HTMLParser
from typing import Callable, Iterable, Iterator

from tailor.config import DataConfig, build
from tailor.data.records import PrepareReport, iter_texts, map_texts
from tailor.errors import TailorError

_MAP, _FILTER = 0, 1

# ---------------------------------------------------------------------------------------------
# nfkc

# Full-width punctuation and symbols that a Chinese writer types on purpose, and the ellipsis
# (…… is the Chinese ellipsis): NFKC would turn them into ASCII.
_KEEP = "\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff60\uffe0-\uffe6\u2026"
_KEEP_RUN = re.compile(f"([{_KEEP}]+)")


def nfkc(text: str) -> str:
    """NFKC that keeps full-width CJK punctuation (，！？：) and … as written (see the module docstring)."""
    if text.isascii() or unicodedata.is_normalized("NFKC", text):
        return text
    parts = _KEEP_RUN.split(text)
    if len(parts) > 1 and unicodedata.is_normalized("NFKC", "".join(parts[::2])):
        return text  # only the kept punctuation differs from NFKC: the common case for Chinese
    parts[::2] = [unicodedata.normalize("NFKC", p) if p else p for p in parts[::2]]
    return "".join(parts)


# ---------------------------------------------------------------------------------------------
# strip_control, whitespace

_EMOJI = "\u2600-\u27bf\u2b00-\u2bff\ufe0f\U0001f000-\U0001faff"
_CONTROL = re.compile(
    "[\x00-\x08\x0e-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b\u200c\u200e\u200f\u202a-\u202e"
    f"\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]|(?<![{_EMOJI}])\u200d|\u200d(?![{_EMOJI}])")
_NEWLINES = re.compile("\r\n?|[\x0b\x0c\u2028\u2029]")


_CONTROL_HINT = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2028\u2029"
                           "\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]")


def strip_control(text: str) -> str:
    """Remove control, zero-width and bidi characters; line breaks of every kind become \\n."""
    if not _CONTROL_HINT.search(text):
        return text
    return _CONTROL.sub("", _NEWLINES.sub("\n", text))


_WS_HINT = re.compile("[\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")
_USPACE = re.compile("[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")
_TRAILING = re.compile("[ \t]+(?=\n)")
_INNER = re.compile("(?<=\\S)(?:[ \t]{2,}|\t)")
_BLANKS = re.compile("\n{3,}")


def _outside_fences(text: str, fn: Callable[[str], str]) -> str:
    """Apply `fn` to the parts of a text outside ``` fenced code blocks (an unclosed fence runs to the end)."""
    if "```" not in text:
        return fn(text)
    parts = text.split("```")
    parts[::2] = [fn(p) for p in parts[::2]]
    return "```".join(parts)


def _ws_part(text: str) -> str:
    # Each pass runs only when its pattern can occur (cheap substring tests): most texts need one or two.
    if not text.isascii():
        text = _USPACE.sub(" ", text)
    if " \n" in text or "\t\n" in text:
        text = _TRAILING.sub("", text)
    if "  " in text or "\t" in text:
        text = _INNER.sub(" ", text)
    if "\n\n\n" in text:
        text = _BLANKS.sub("\n\n", text)
    return text


def whitespace(text: str) -> str:
    """Collapse space runs inside lines, drop trailing spaces and extra blank lines, trim (see the module docstring)."""
    if not text:
        return text
    if ("  " not in text and "\t" not in text and " \n" not in text and "\n\n\n" not in text and "\r" not in text
            and "\x0b" not in text and "\x0c" not in text and not text[0].isspace() and not text[-1].isspace()
            and (text.isascii() or not _WS_HINT.search(text))):
        return text
    if "\r" in text or "\x0b" in text or "\x0c" in text or not text.isascii():
        text = _NEWLINES.sub("\n", text)
    return _outside_fences(text, _ws_part).strip()


# ---------------------------------------------------------------------------------------------
# html

_HTML_HINT = re.compile(r"</[A-Za-z][A-Za-z0-9-]*\s*>|<(?:br|hr|img|meta|link|input|wbr|source)\b[^<>]*>|<!--|<!doctype",
                        re.IGNORECASE)
_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
_PARA = frozenset("p h1 h2 h3 h4 h5 h6 ul ol dl table blockquote pre section article header footer nav aside main "
                  "figure form title address details hr".split())
_LINE = frozenset("br li dt dd tr div caption figcaption summary option thead tbody tfoot".split())
_SKIP = frozenset({"script", "style", "noscript", "template"})


class _HtmlText(HTMLParser):
    """Collects text: scripts/styles dropped, block tags as line breaks, <pre> kept verbatim.

    Breaks are held as "pending" and merged (the largest wins) until text arrives, so
    </li><li> gives one newline and </p><p> one blank line.
    """

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0
        self.pre = 0
        self.pending = 0

    def _break(self, tag: str) -> None:
        self.pending = max(self.pending, 2 if tag in _PARA else 1 if tag in _LINE else 0)

    def handle_starttag(self, tag, attrs):
        if tag in _SKIP:
            self.skip += 1
            return
        self._break(tag)
        if tag == "pre":
            self.pre += 1
        elif tag in ("td", "th") and self.parts and not self.pending:
            self.parts.append(" ")

    def handle_startendtag(self, tag, attrs):
        self._break(tag)

    def handle_endtag(self, tag):
        if tag in _SKIP:
            self.skip = max(0, self.skip - 1)
            return
        if tag != "li" and tag not in ("br", "tr", "dt", "dd", "option"):
            self._break(tag)
        if tag == "pre":
            self.pre = max(0, self.pre - 1)

    def handle_data(self, data):
        if self.skip:
            return
        if not self.pre:
            # Spaces at line edges come from the markup's indentation (text in <pre> keeps its own).
            data = _LINE_EDGES.sub("\n", _HSPACE.sub(" ", data))
            if data.strip() == "":
                if self.parts and not self.pending:
                    self.parts.append(" ")
                return
        if self.pending and self.parts:
            if self.parts[-1].endswith(" "):
                self.parts[-1] = self.parts[-1].rstrip(" ")
            self.parts.append("\n" * self.pending)
            if not self.pre:
                data = data.lstrip(" ")
        self.pending = 0
        self.parts.append(data)


_HSPACE = re.compile("[ \t\r\f\v]+")
_LINE_EDGES = re.compile(" *\n *")


def _html_part(text: str) -> str:
    if not _HTML_HINT.search(text):
        return _ENTITY.sub(lambda m: _html.unescape(m.group()), text) if "&" in text else text
    parser = _HtmlText()
    parser.feed(text)
    parser.close()
    return "".join(parser.parts)


def html_to_text(text: str) -> str:
    """HTML to plain text (see the module docstring); text that is not HTML is returned unchanged."""
    if "<" not in text and "&" not in text:
        return text
    return _outside_fences(text, _html_part).strip()


# ---------------------------------------------------------------------------------------------
# pii

# Three passes, each run only when a cheap test says it can match: emails first (so that
# 13812345678@qq.com is one email, not a phone), then IPv6, then the digit-based kinds.
_EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}(?![A-Za-z0-9-])")
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:[0-9]{1,3}\.){3}[0-9]{1,3}|[0-9A-Fa-f]{1,4})?(?![\w:])")
_IPV6_HINT = re.compile(r":[0-9A-Fa-f]{0,4}:")
_NUMBERS = re.compile(r"""
 (?P<id_card>(?<![0-9A-Za-z])[1-9][0-9]{5}(?:18|19|20)[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])[0-9]{3}[0-9Xx](?![0-9A-Za-z]))
|(?P<bank_card>(?<![0-9.,-])[2-6][0-9]{3}(?:[ -]?[0-9]){9,15}(?![0-9]|[.,][0-9]))
|(?P<phone>\+[0-9]{1,3}[ -]?(?:\([0-9]{1,4}\)[ -]?)?[0-9]{1,4}(?:[ -]?[0-9]{2,4}){1,4}(?![0-9])
   |(?<![0-9(])\([0-9]{3}\)[ ]?[0-9]{3}[-. ][0-9]{4}(?![0-9])
   |(?<![0-9-])[0-9]{3}-[0-9]{3}-[0-9]{4}(?![0-9-])
   |(?<![0-9])1[3-9][0-9](?:[0-9]{8}|[ -][0-9]{4}[ -][0-9]{4})(?![0-9-])
   |(?<![0-9-])0[0-9]{2,3}-[0-9]{7,8}(?![0-9-]))
|(?P<ipv4>(?<![0-9.])(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?!\.?[0-9]))
""", re.VERBOSE)
# Every digit-based kind has at least 7 characters of digits and separators.
_NUMBERS_HINT = re.compile(r"[0-9][0-9 .()+-]{5,}[0-9]")
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_VERSION_CUE = re.compile(r"(?:\bv|\bver\.?|\bversion|版本|版本号)[\s:：]*$", re.IGNORECASE)
PLACEHOLDERS = {"email": "<EMAIL>", "phone": "<PHONE>", "id_card": "<ID_CARD>", "bank_card": "<BANK_CARD>", "ip": "<IP>"}


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = ord(ch) - 48
        if i & 1:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def _id_checksum(s: str) -> bool:
    total = sum(int(c) * w for c, w in zip(s, _ID_WEIGHTS))
    return "10X98765432"[total % 11] == s[17].upper()


def _bank_card(s: str) -> bool:
    digits = s.replace(" ", "").replace("-", "")
    if not 13 <= len(digits) <= 19 or (" " in s and "-" in s):
        return False  # mixed separators are not how a card number is written
    return _luhn(digits)


def _classify(kind: str, m: re.Match) -> str | None:
    """The PII kind of a candidate match, or None when validation says it is an ordinary number."""
    s = m.group()
    if kind == "id_card":
        if _id_checksum(s):
            return "id_card"
        return "bank_card" if s.isdigit() and s[0] in "23456" and _luhn(s) else None
    if kind == "bank_card":
        return "bank_card" if _bank_card(s) else None
    if kind == "phone":
        return "phone" if 7 <= sum(c.isdigit() for c in s) <= 15 else None
    if kind == "ipv4":
        if any(int(o) > 255 for o in s.split(".")) or _VERSION_CUE.search(m.string[max(0, m.start() - 12):m.start()]):
            return None
        return "ip"
    if kind == "ipv6":
        if not any(c.isdigit() for c in s):
            return None  # "a::b", "dead::beef": code far more often than addresses
        try:
            ipaddress.IPv6Address(s)
        except ValueError:
            return None
        return "ip"
    return kind


def pii_masker(kinds: list[str], counts: dict) -> Callable[[str], str]:
    """Masker for the chosen kinds; counts masked items per kind into `counts`.

    Kinds: emails; phones (+country-code numbers, US (415) 555-0132 / 415-555-0132, Chinese mobiles
    13812345678 / 138 1234 5678, Chinese landlines 010-12345678); Chinese 18-digit resident IDs
    (checksum checked, X allowed); bank cards of 13-19 digits (first digit 2-6, Luhn checked, spaces
    or dashes allowed); IPv4 (octets 0-255, not right after a version cue such as "v", "version",
    "版本": "version 1.2.3.4" stays) and IPv6 (validated by `ipaddress`; one without any decimal
    digit, like C++'s "a::b", is taken for code). Dates, prices, order numbers and other digit runs
    that fail these checks are left alone; a 13-19 digit number that passes Luhn is masked.
    """
    wanted = set(kinds)

    def repl(m: re.Match, kind: str | None = None) -> str:
        found = _classify(kind or m.lastgroup, m)
        if found is None or found not in wanted:
            return m.group()
        counts[found] += 1
        return PLACEHOLDERS[found]

    def mask(text: str) -> str:
        if "@" in text:
            text = _EMAIL.sub(lambda m: repl(m, "email"), text)
        if ":" in text and _IPV6_HINT.search(text):
            text = _IPV6.sub(lambda m: repl(m, "ipv6"), text)
        if _NUMBERS_HINT.search(text):
            text = _NUMBERS.sub(repl, text)
        return text

    return mask


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
                          where="data.clean[step=length]", fix="set model.tokenizer or model.path")
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
