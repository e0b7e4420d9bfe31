"""Train-split augmentation: EDA edits, rows filled from templates, and back-translation.

Only the TRAIN split is ever augmented: `tailor data prepare` passes the train rows alone, after the
split and the cross-split de-duplication, so no augmented twin of a train row can leak into eval or
test, and eval/test keep measuring real data.

Each method reports as its own step ("augment.eda", "augment.fill", "augment.back_translation").
`added` counts the candidate rows the step made and `dropped` the candidates it threw away (with
the reason), so `out = in + added - dropped` and `PrepareReport.check()` stays exact. Every draw
comes from a generator seeded by `cfg.seed` and the method's name, so the same input and seed
give the same rows, and switching one method on or off does not change the others' rows.

EDA (Wei & Zou 2019, "EDA: Easy Data Augmentation Techniques"): each augmented copy applies one
operation drawn from `ops` to every text it may change; `n = max(1, round(alpha * words))` words
are touched per text. Words are whitespace tokens in Latin text and dictionary words (longest
match) or single characters in Chinese text. Tokens holding digits, `{slot}` placeholders or
`<PII>` masks, and punctuation, are never swapped, deleted or replaced, so facts and masks survive.
Deletion removes exactly n words (the paper deletes each with probability alpha; a fixed n also
changes short prompts) and always leaves at least one word.
"""

from __future__ import annotations

import copy
import json
import logging
import random
import re
from pathlib import Path
from typing import Callable

from tailor.config import AugmentConfig, BackTranslationConfig, EdaConfig, FillConfig
from tailor.data.records import PrepareReport, StepReport, iter_texts, map_texts, record_text
from tailor.data.slot_filters import apply as apply_filters, check_filters, split_slot
from tailor.data.synonyms import CJK_CHARS, merged_synonyms
from tailor.errors import TailorError

log = logging.getLogger(__name__)

Translator = Callable[[list[str], str, str], list[str]]

IDENTICAL = "augmented text identical to original"
NO_PROMPT = "no prompt text to change (fields=prompt never edits answers or plain text)"
REPEATED = "augmented copy repeats another copy"
EMPTY_TRANSLATION = "translation empty"


def augment_records(train: list[dict], cfg: AugmentConfig, report: PrepareReport,
                    translator: Translator | None = None, base_dir: str | Path | None = None) -> list[dict]:
    """The train rows (first, unchanged) followed by the rows EDA, template filling and back-translation made.

    Pass only the TRAIN split: augmenting eval/test would grade the model on its own paraphrases.
    New rows carry `origin` ("eda:<op>", "fill", "back_translation") and, when made from a row,
    `augmented_from` (that row's `where`). Back-translation calls `translator` (texts, src_lang,
    tgt_lang -> texts), which the caller loads from `cfg.back_translation.model`
    (`tailor.models.translation.translator_for`); relative paths in `cfg` are read from `base_dir`.
    """
    out = list(train)
    if cfg.eda.rate > 0:
        out += _eda(train, cfg.eda, _rng(cfg.seed, "eda"), _step(report, "augment.eda", len(out)), base_dir)
    if cfg.fill.count > 0:
        out += _fill(cfg.fill, _rng(cfg.seed, "fill"), _step(report, "augment.fill", len(out)))
    bt = cfg.back_translation
    if bt.rate > 0:
        if not bt.model and translator is None:
            raise TailorError("back-translation is on (rate > 0) but no translator model is set",
                              where="data.augment.back_translation.model",
                              fix="set it to a local translation model directory, or set rate to 0")
        if translator is None:  # the data stage loads no model: the caller (CLI, training) passes it in
            raise TailorError(f"back-translation through {bt.model} needs the translator passed in",
                              where="augment_records(translator=...)",
                              fix="pass translator=tailor.models.translation.translator_for(cfg.back_translation, base_dir)")
        out += _back_translate(train, bt, translator, _rng(cfg.seed, "back_translation"),
                               _step(report, "augment.back_translation", len(out)))
    if cfg.pinyin.rate > 0:
        from tailor.data import pinyin

        out += pinyin.augment(train, cfg.pinyin, _rng(cfg.seed, "pinyin"), _step(report, "augment.pinyin", len(out)),
                              _copies)
    return out


def _rng(seed: int, method: str) -> random.Random:
    return random.Random(f"{seed}:{method}")  # str seeds hash with sha512: stable across runs


def _step(report: PrepareReport, name: str, n_in: int) -> StepReport:
    step = report.step(name)
    step.n_in = step.n_out = n_in
    return step


def _resolve(path: str, base_dir: str | Path | None) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() or base_dir is None else Path(base_dir) / p


def _choose(rows: list[dict], rate: float, rng: random.Random) -> list[int]:
    """Indices of round(rate * rows) rows (at least one), in input order."""
    k = min(len(rows), max(1, int(rate * len(rows) + 0.5))) if rows else 0
    return sorted(rng.sample(range(len(rows)), k))


def _keep(step: StepReport, new: list[dict], rec: dict, origin: str) -> None:
    """Tag a candidate row and count it as made."""
    rec["origin"] = origin
    step.added += 1
    step.n_out += 1
    new.append(rec)


def _reject(step: StepReport, reason: str, where: str | None) -> None:
    step.added += 1
    step.drop(reason, where)


# ---------------------------------------------------------------------------------------------
# EDA

_CJK_RUN = re.compile(f"[{CJK_CHARS}]+")
_SPLIT = re.compile(rf"(\s+)|([{CJK_CHARS}]+)|([^\s{CJK_CHARS}]+)")
_PUNCT = re.compile(r"^(\W*)(.*?)(\W*)$", re.S)
_PROTECTED = re.compile(r"\d|\{[^{}\s]*\}|<[A-Z][A-Z_]*>")


def _eda(train: list[dict], cfg: EdaConfig, rng: random.Random, step: StepReport, base_dir) -> list[dict]:
    table = merged_synonyms(_resolve(cfg.dictionary, base_dir) if cfg.dictionary else None)
    max_cjk = max((len(k) for k in table if _CJK_RUN.fullmatch(k)), default=1)

    def make(rec: dict, prompt_only: bool) -> tuple[dict, str]:
        op = rng.choice(cfg.ops)
        aug = map_texts(copy.deepcopy(rec), lambda t: eda_text(t, op, cfg.alpha, rng, table, max_cjk), prompt_only)
        return aug, f"eda:{op}"

    return _copies(train, cfg, rng, step, lambda before: None if before else NO_PROMPT, make, IDENTICAL, REPEATED)


def _copies(train: list[dict], cfg, rng: random.Random, step: StepReport, skip: Callable[[list[str]], str | None],
            make: Callable[[dict, bool], tuple[dict, str]], identical: str | None, repeated: str) -> list[dict]:
    """cfg.copies copies of each of round(cfg.rate x rows) chosen rows: `skip(texts)` names why a row gets none,
    `make(row, prompt_only)` gives a copy and its tag; a copy whose texts did not change (reason `identical`,
    when given) or that repeats the row or an earlier copy (reason `repeated`) is dropped."""
    prompt_only = cfg.fields == "prompt"
    new: list[dict] = []
    for i in _choose(train, cfg.rate, rng):
        rec = train[i]
        where = rec.get("where")
        before = list(iter_texts(rec, prompt_only=prompt_only))
        seen = {record_text(rec)}
        for k in range(cfg.copies):
            why = skip(before)
            if why:
                _reject(step, why, where)
                continue
            aug, tag = make(rec, prompt_only)
            if identical is not None and list(iter_texts(aug, prompt_only=prompt_only)) == before:
                _reject(step, identical, where)
            elif record_text(aug) in seen:
                _reject(step, repeated, where)
            else:
                seen.add(record_text(aug))
                aug["augmented_from"] = where
                aug["where"] = f"{where} [{tag} #{k + 1}]"
                _keep(step, new, aug, tag)
    return new


def eda_text(text: str, op: str, alpha: float, rng: random.Random, table: dict[str, list[str]],
             max_cjk: int = 4) -> str:
    """One EDA operation ("synonym", "insert", "swap", "delete") applied to one text; never returns empty text."""
    toks = _tokenize(text, table, max_cjk)
    words = [i for i, t in enumerate(toks) if t[0] != "space"]
    free = [i for i in words if not _protected(toks[i])]
    n = max(1, int(alpha * len(words) + 0.5))
    if op == "synonym":
        pool = [i for i in free if _synonyms(toks[i], table)]
        for i in rng.sample(pool, min(n, len(pool))):
            toks[i][2] = _cased(toks[i][2], rng.choice(_synonyms(toks[i], table)))
    elif op == "insert":
        pool = [toks[i] for i in free if _synonyms(toks[i], table)]
        for _ in range(n if pool else 0):
            _insert(toks, rng.choice(_synonyms(rng.choice(pool), table)), rng)
    elif op == "swap":
        for _ in range(n if len(free) >= 2 else 0):
            a, b = rng.sample(free, 2)
            (toks[a][0], toks[a][2]), (toks[b][0], toks[b][2]) = (toks[b][0], toks[b][2]), (toks[a][0], toks[a][2])
    elif op == "delete":
        for i in sorted(rng.sample(free, max(0, min(n, len(free) - 1))), reverse=True):
            _delete(toks, i)
    else:
        raise ValueError(f"unknown EDA operation {op!r}")
    out = "".join(p + c + s for _, p, c, s in toks)
    return out if out.strip() else text


def _tokenize(text: str, table: dict, max_cjk: int) -> list[list[str]]:
    """[kind, leading punctuation, word, trailing punctuation] per token; kind is space, latin or cjk."""
    toks: list[list[str]] = []
    for space, cjk, latin in _SPLIT.findall(text):
        if space:
            toks.append(["space", "", space, ""])
        elif cjk:
            toks += [["cjk", "", w, ""] for w in segment(cjk, table, max_cjk)]
        else:
            pre, core, post = _PUNCT.match(latin).groups()
            toks.append(["latin", pre, core, post])
    return toks


def segment(run: str, table: dict, max_len: int) -> list[str]:
    """Split a run of Chinese characters into the longest dictionary words, else single characters."""
    out, i = [], 0
    while i < len(run):
        for size in range(min(max_len, len(run) - i), 1, -1):
            if run[i:i + size] in table:
                break
        else:
            size = 1
        out.append(run[i:i + size])
        i += size
    return out


def _protected(tok: list[str]) -> bool:
    return not tok[2] or bool(_PROTECTED.search(tok[1] + tok[2] + tok[3]))


def _synonyms(tok: list[str], table: dict) -> list[str]:
    return table.get(tok[2].lower() if tok[0] == "latin" else tok[2], [])


def _cased(original: str, word: str) -> str:
    if len(original) > 1 and original.isupper():
        return word.upper()
    return word[:1].upper() + word[1:] if original[:1].isupper() else word


def _insert(toks: list[list[str]], word: str, rng: random.Random) -> None:
    """Insert `word` before a random word (or after the last); no space between two Chinese words."""
    words = [i for i, t in enumerate(toks) if t[0] != "space"]
    kind = "cjk" if _CJK_RUN.fullmatch(word) else "latin"
    new = [kind, "", word, ""]
    j = rng.randrange(len(words) + 1) if words else 0
    if not words:
        toks.append(new)
    elif j < len(words):
        pos = words[j]
        toks[pos:pos] = [new] if kind == "cjk" == toks[pos][0] else [new, ["space", "", " ", ""]]
    else:
        pos = words[-1] + 1
        toks[pos:pos] = [new] if kind == "cjk" == toks[pos - 1][0] else [["space", "", " ", ""], new]


def _delete(toks: list[list[str]], i: int) -> None:
    """Remove word i, keeping punctuation glued to it, and one adjacent space so no double space is left."""
    kind, pre, _, post = toks[i]
    if post and not pre:
        toks[i][2] = ""
        if i > 0 and toks[i - 1][0] == "space":
            del toks[i - 1]
        return
    if pre and not post:
        toks[i][2] = ""
        if i + 1 < len(toks) and toks[i + 1][0] == "space":
            del toks[i + 1]
        return
    del toks[i]
    if i > 0 and toks[i - 1][0] == "space":
        del toks[i - 1]
    elif i < len(toks) and toks[i][0] == "space":
        del toks[i]


# ---------------------------------------------------------------------------------------------
# Template filling

_SLOT = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")


def _fill(cfg: FillConfig, rng: random.Random, step: StepReport) -> list[dict]:
    from tailor.data.loading import to_record

    templates = [_parse_template(t, i, cfg.slots) for i, t in enumerate(cfg.templates)]
    if not templates:
        raise TailorError("fill.count > 0 but no templates are given", where="data.augment.fill.templates",
                          fix="add JSON row templates with {slot} fields, or set fill.count to 0")
    sizes = [_product([len(cfg.slots[s]) for s in names]) for _, names in templates]
    total = sum(sizes)
    picks = rng.sample(range(total), min(cfg.count, total))
    if cfg.count > total:
        log.warning("fill.count=%d but the templates have only %d slot combinations; making all of them",
                    cfg.count, total)
        for _ in range(cfg.count - total):
            _reject(step, f"fill.count exceeds the {total} slot combinations", "data.augment.fill.count")
    new: list[dict] = []
    for pick in picks:
        t = 0
        while pick >= sizes[t]:
            pick -= sizes[t]
            t += 1
        tree, names = templates[t]
        values = {}
        for name in reversed(names):  # mixed-radix decode: pick -> one value per slot
            pick, r = divmod(pick, len(cfg.slots[name]))
            values[name] = cfg.slots[name][r]
        where = f"data.augment.fill.templates[{t}] " + json.dumps(values, ensure_ascii=False, sort_keys=True)
        rec = to_record(_substitute(tree, values))
        if isinstance(rec, str):
            _reject(step, rec, where)
            continue
        rec["where"] = where
        _keep(step, new, rec, "fill")
    return new


def _product(sizes: list[int]) -> int:
    out = 1
    for s in sizes:
        out *= s
    return out


def _parse_template(text: str, i: int, slots: dict[str, list[str]],
                    where: str | None = None) -> tuple[object, list[str]]:
    """The parsed template and the slot names its string values use (sorted, filters left off), or a TailorError
    naming it (at `where`, data.augment.fill.templates[i] unless given). `{name|plural}` and the other filters of
    `tailor.data.slot_filters` are checked here, so an unknown filter fails before any row is made."""
    where = where or f"data.augment.fill.templates[{i}]"
    try:
        tree = json.loads(text)
    except json.JSONDecodeError as e:
        raise TailorError(f"fill template {i} is not valid JSON: {e.msg} (column {e.colno})", where=where,
                          fix='write a JSON object, e.g. {"instruction": "Return window for {product}?", "output": "..."}') from None
    if not isinstance(tree, dict):
        raise TailorError(f"fill template {i} must be a JSON object (an alpaca, messages or text row)", where=where)
    used = slot_uses(tree)
    check_filters(used, i, where)
    names = {split_slot(u)[0] for u in used}
    unknown = sorted(n for n in names if n not in slots)
    if unknown:
        raise TailorError(f"fill template {i} uses unknown slot(s) {', '.join('{' + n + '}' for n in unknown)}",
                          where=where, fix=f"add them to data.augment.fill.slots (known: {', '.join(sorted(slots)) or 'none'}),"
                          " or write literal braces as {{ and }}")
    empty = sorted(n for n in names if not slots[n])
    if empty:
        raise TailorError(f"slot(s) {', '.join(empty)} used by fill template {i} have no values", where=where,
                          fix="give every slot at least one value in data.augment.fill.slots")
    from tailor.data.loading import to_record

    probe = to_record(_substitute(tree, {n: slots[n][0] for n in names}))
    if isinstance(probe, str):
        raise TailorError(f"fill template {i} does not make a usable row: {probe}", where=where,
                          fix='use an alpaca {"instruction", "output"}, a {"messages": [...]} or a {"text"} object')
    return tree, sorted(names)


def slot_uses(tree) -> list[str]:
    """Every distinct slot a parsed template's strings use, as written ("name" or "name|filter|...")."""
    return sorted({m.group(1) for s in _strings(tree) for m in _SLOT.finditer(s) if m.group(1) is not None})


def _strings(tree):
    if isinstance(tree, str):
        yield tree
    elif isinstance(tree, dict):
        for v in tree.values():
            yield from _strings(v)
    elif isinstance(tree, list):
        for v in tree:
            yield from _strings(v)


def _substitute(tree, values: dict[str, str]):
    """Slot values put into the parsed strings, so quotes or backslashes in a value cannot break the JSON."""
    if isinstance(tree, str):
        return _SLOT.sub(lambda m: {"{{": "{", "}}": "}"}.get(m.group(0)) or apply_filters(m.group(1), values), tree)
    if isinstance(tree, dict):
        return {k: _substitute(v, values) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_substitute(v, values) for v in tree]
    return tree


# ---------------------------------------------------------------------------------------------
# Back-translation

def _back_translate(train: list[dict], cfg: BackTranslationConfig, translator: Translator, rng: random.Random,
                    step: StepReport) -> list[dict]:
    chosen = []
    for i in _choose(train, cfg.rate, rng):
        texts = list(iter_texts(train[i], prompt_only=True))
        if any(t.strip() for t in texts):
            chosen.append((train[i], texts))
        else:
            _reject(step, NO_PROMPT, train[i].get("where"))
    todo = list(dict.fromkeys(t for _, texts in chosen for t in texts if t.strip()))
    pivot = dict(zip(todo, _call(translator, todo, cfg.source, cfg.pivot)))
    again = [p for p in dict.fromkeys(pivot.values()) if p.strip()]
    back = dict(zip(again, _call(translator, again, cfg.pivot, cfg.source)))
    new: list[dict] = []
    for rec, texts in chosen:
        where = rec.get("where")
        out = [t if not t.strip() else back.get(pivot[t], "") for t in texts]
        if not all(o.strip() for o, t in zip(out, texts) if t.strip()):
            _reject(step, EMPTY_TRANSLATION, where)
            continue
        if out == texts:
            _reject(step, IDENTICAL, where)
            continue
        it = iter(out)
        aug = map_texts(copy.deepcopy(rec), lambda _t: next(it), prompt_only=True)
        aug["augmented_from"] = where
        aug["where"] = f"{where} [back_translation via {cfg.pivot}]"
        _keep(step, new, aug, "back_translation")
    return new


def _call(translator: Translator, texts: list[str], src: str, tgt: str) -> list[str]:
    if not texts:
        return []
    out = list(translator(texts, src, tgt))
    if len(out) != len(texts) or not all(isinstance(o, str) for o in out):
        raise TailorError(f"the translator returned {len(out)} results for {len(texts)} texts ({src} -> {tgt})",
                          where="data.augment.back_translation", fix="a translator must return one string per input text")
    return [o.strip() for o in out]
