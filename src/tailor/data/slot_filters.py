"""Slot filters of tailor's template language: `{name|plural}`, `{name|a}`, `{name|lower}`, ...

A slot may name filters after its field, separated by `|` and applied left to right:
`{category|plural|capitalize}` turns "laptop" into "Laptops". They serve row templates
(`data.augment.fill.templates`) and document templates (`data.sources[].document.templates`), whose
fields hold one form of a name (a table row says "laptop") while a question needs another ("laptops",
"a laptop").

English only, by rule; text that does not end (plural) or start (a) with a Latin letter is left as it
is, so Chinese values pass through unchanged (Chinese has neither plural forms nor articles).

- `plural`: the last word of the value, or the word before the first " of " ("pair of boots" ->
  "pairs of boots"); a small table of irregular nouns (child, person, knife, ...) and nouns that do not
  change (sheep, series, ...); otherwise s/x/z/ch/sh -> +es, consonant + y -> ies, else +s. The
  case of the word is kept ("LAPTOP" -> "LAPTOPS", "Man" -> "Men").
- `a`: "a " or "an " before the value, by its first sound: vowel letters take "an" except the
  you/w sounds (user, unit, euro, one), silent h takes "an" (hour, honest, heir), an all-capital
  word (an abbreviation, read letter by letter) or a single letter takes "an" before A E F H I L M N O
  R S X ("an SUV", "a USB", "an X1"), and a
  number takes "an" when read "eight..." or "eleven"/"eighteen" ("an 8-person tent").
- `lower`, `upper`: the whole value; `capitalize`: its first letter only ("the United Kingdom" ->
  "The United Kingdom").
"""

from __future__ import annotations

import re
from typing import Callable

from tailor.errors import TailorError

IRREGULAR = {
    "child": "children", "person": "people", "man": "men", "woman": "women", "foot": "feet", "tooth": "teeth",
    "goose": "geese", "mouse": "mice", "ox": "oxen", "knife": "knives", "wife": "wives", "life": "lives",
    "leaf": "leaves", "half": "halves", "shelf": "shelves", "wolf": "wolves", "thief": "thieves",
    "loaf": "loaves", "calf": "calves", "hero": "heroes", "potato": "potatoes", "tomato": "tomatoes",
    "echo": "echoes", "veto": "vetoes", "cactus": "cacti", "analysis": "analyses", "crisis": "crises",
    "criterion": "criteria", "phenomenon": "phenomena", "quiz": "quizzes",
}
UNCHANGED = {"sheep", "fish", "deer", "series", "species", "aircraft", "equipment", "information", "news",
             "software", "hardware", "furniture", "luggage", "baggage", "scissors", "pants", "trousers",
             "jeans", "shorts", "glasses", "headphones", "earphones", "earbuds", "binoculars", "pliers"}
_WORD = re.compile(r"([A-Za-z][A-Za-z'-]*)(\W*)$")
_LEAD = re.compile(r"\W*(\S+)")
# vowel letters read with a consonant sound (a "you" or "w"), and h-words whose h is silent
_CONSONANT_VOWELS = re.compile(r"(uni|use|usu|usa|ura|uro|uti|ubi|euk|eu|ewe|one|once|ouija)", re.I)
_SILENT_H = re.compile(r"(hour|honest|honou?r|heir|herb)", re.I)
_AN_LETTERS = set("AEFHILMNORSX")


def _match_case(word: str, new: str) -> str:
    if word.isupper() and len(word) > 1:
        return new.upper()
    if word[:1].isupper():
        return new[:1].upper() + new[1:]
    return new


def plural_word(word: str) -> str:
    """The English plural of one word (case kept)."""
    low = word.lower()
    if low in UNCHANGED:
        return word
    if low in IRREGULAR:
        return _match_case(word, IRREGULAR[low])
    if re.search(r"(s|x|z|ch|sh)$", low):
        new = low + "es"
    elif re.search(r"[^aeiou]y$", low):
        new = low[:-1] + "ies"
    else:
        new = low + "s"
    keep = len(low) - 1 if new.endswith("ies") and not low.endswith("ies") else len(low)
    tail = new[keep:]
    return word[:keep] + (tail.upper() if word.isupper() and len(word) > 1 else tail)


def plural(value: str) -> str:
    """The plural of a noun phrase: its head word (before the first " of ", else the last word) pluralized."""
    head, sep, rest = value.partition(" of ")
    if not sep:
        head, rest = value, ""
    m = _WORD.search(head)
    if not m or not head.endswith(m.group(0)):
        return value  # not ending in a Latin word (Chinese, a number): no plural form
    return head[:m.start()] + plural_word(m.group(1)) + m.group(2) + sep + rest


def article(value: str) -> str:
    """`value` with "a " or "an " in front, chosen by its first sound; non-Latin text unchanged."""
    m = _LEAD.match(value)
    word = m.group(1) if m else ""
    if not word or not (word[0].isascii() and word[0].isalnum()):
        return value
    return ("an " if _takes_an(word) else "a ") + value


def _takes_an(word: str) -> bool:
    if word[0].isdigit():
        digits = re.match(r"[\d,]+", word).group(0).replace(",", "")
        return digits.startswith("8") or (len(digits) in (2, 5, 8) and digits[:2] in ("11", "18"))
    letters = re.match(r"[A-Za-z]+", word)
    letters = letters.group(0) if letters else word
    if len(letters) == 1 or letters.isupper():
        return letters[0].upper() in _AN_LETTERS  # read letter by letter: "an SUV", "a USB", "an X1"
    if _SILENT_H.match(letters):
        return True
    if _CONSONANT_VOWELS.match(letters):
        return False
    return letters[0].lower() in "aeiou"


FILTERS: dict[str, Callable[[str], str]] = {
    "plural": plural,
    "a": article,
    "lower": str.lower,
    "upper": str.upper,
    "capitalize": lambda v: v[:1].upper() + v[1:],
}


def split_slot(slot: str) -> tuple[str, list[str]]:
    """`"name|plural|a"` -> ("name", ["plural", "a"]) (spaces around the parts dropped)."""
    name, *filters = (p.strip() for p in slot.split("|"))
    return name, filters


def check_filters(slots: list[str], template: int, where: str) -> None:
    """A TailorError naming the template and the filter for any slot filter tailor does not know."""
    for slot in slots:
        name, filters = split_slot(slot)
        for f in filters:
            if f not in FILTERS:
                raise TailorError(f"template {template} uses unknown filter '{f}' in {{{slot}}}", where=where,
                                  fix=f"use one of {', '.join(sorted(FILTERS))} (e.g. {{{name}|plural}}), or write "
                                      "literal braces as {{ and }}")


def apply(slot: str, values: dict[str, str]) -> str:
    """The value of `slot` ("name" or "name|filter|...") from `values`, its filters applied left to right."""
    name, filters = split_slot(slot)
    out = str(values[name])
    for f in filters:
        out = FILTERS[f](out)
    return out
