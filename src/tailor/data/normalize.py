"""Text normalizers of the `data.clean` steps nfkc, strip_control, whitespace and html: str -> str functions.

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
"""

from __future__ import annotations

import html as _html
import re
import unicodedata
from html.parser import HTMLParser
from typing import Callable

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
