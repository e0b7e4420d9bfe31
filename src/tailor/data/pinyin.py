"""Pinyin for users whose inputs mix pinyin and Chinese characters (pypinyin: phrase-aware readings, so 银行 is
yínháng and 重庆 is chóngqìng).

- The `pinyin` cleaning step rewrites every text: mode=annotate puts each Chinese word's reading after it
  ("退货(tuì huò)"), mode=replace writes the reading instead of the characters ("tuìhuò"), so character and
  pinyin inputs meet in one form.
- The `data.augment.pinyin` augmentation adds copies of training rows in which a share of the Chinese words of
  the prompts are typed in pinyin ("我想tuihuo"), the way such users write, so the model learns both spellings.

Words come from pypinyin's own maximum-matching segmenter (its phrase dictionary); tones are marks (tuì),
numbers (tui4) or none (tui). A converted word's syllables are written together; two converted words next to
each other are separated by a space.
"""

from __future__ import annotations

import copy
import random
import re
from typing import Callable

from tailor.errors import TailorError

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")


def _pypinyin(where: str):
    try:
        import pypinyin
        from pypinyin.seg.mmseg import seg
    except ImportError:
        raise TailorError("pinyin needs the pypinyin package", where=where, fix='pip install -e ".[pinyin]"') from None
    return pypinyin, seg


def converter(tones: str, where: str) -> Callable[[str], tuple[list[str], Callable[[str], list[str]]]]:
    """(segment(text run) -> words, read(word) -> syllables) for the tone style."""
    pypinyin, seg = _pypinyin(where)
    style = {"marks": pypinyin.Style.TONE, "numbers": pypinyin.Style.TONE3, "none": pypinyin.Style.NORMAL}[tones]
    return seg.cut, lambda word: pypinyin.lazy_pinyin(word, style=style)


def rewrite(text: str, tones: str = "marks", mode: str = "annotate", share: float = 1.0, rng: random.Random | None = None,
            where: str = "pinyin") -> str:
    """The text with its Chinese words annotated with (mode=annotate) or replaced by (mode=replace) their pinyin;
    with share < 1 each word is converted with that probability (drawn from rng)."""
    if not _HAN.search(text):
        return text
    cut, read = converter(tones, where)
    out: list[str] = []
    last_pinyin = False
    pos = 0
    for m in _HAN.finditer(text):
        out.append(text[pos:m.start()])
        last_pinyin = last_pinyin and m.start() == pos
        for word in cut(m.group()):
            if share < 1 and (rng or random).random() >= share:
                out.append(word)
                last_pinyin = False
                continue
            syllables = read(word)
            if mode == "annotate":
                out.append(f"{word}({' '.join(syllables)})")
                last_pinyin = False
            else:
                out.append((" " if last_pinyin else "") + "".join(syllables))
                last_pinyin = True
        pos = m.end()
    out.append(text[pos:])
    return "".join(out)


def clean_step(st, where: str) -> Callable[[str], str]:
    """The `pinyin` cleaning step's text function."""
    _pypinyin(where)
    return lambda t: t if t.isascii() else rewrite(t, st.tones, st.mode, where=where)


NO_CHINESE = "no Chinese text in the prompt to write in pinyin"


def augment(train: list[dict], cfg, rng: random.Random, step, copies) -> list[dict]:
    """data.augment.pinyin: copies of round(rate x rows) rows with a share of their prompts' Chinese words in pinyin."""
    from tailor.data.records import map_texts

    _pypinyin("data.augment.pinyin")

    def make(rec: dict, prompt_only: bool) -> tuple[dict, str]:
        aug = map_texts(copy.deepcopy(rec), lambda t: rewrite(t, cfg.tones, "replace", cfg.share, rng), prompt_only)
        return aug, "pinyin"

    return copies(train, cfg, rng, step, lambda before: None if any(_HAN.search(t) for t in before) else NO_CHINESE,
                  make, None, "pinyin copy repeats the row or another copy")
