"""Tesseract through pytesseract: page text with a mean word confidence. Optional: a missing binary is a clear error."""

from __future__ import annotations

import re
import shutil

from tailor.errors import TailorError

INSTALL = "tesseract-ocr tesseract-ocr-eng tesseract-ocr-chi-sim"
_CJK = "\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef"
# Tesseract separates CJK characters with spaces; between two CJK characters (or CJK and its punctuation) a
# space is never part of the text.
_CJK_GAP = re.compile(f"(?<=[{_CJK}]) +(?=[{_CJK}])")


def require_tesseract(languages: str, where: str) -> None:
    """Raise a TailorError naming the Debian packages when Tesseract or one of `languages` is missing."""
    try:
        import pytesseract
    except ImportError:
        raise TailorError("reading scanned pages needs pytesseract", where=where,
                          fix='pip install "tailor[documents]"') from None
    if shutil.which(pytesseract.pytesseract.tesseract_cmd) is None:
        raise TailorError("this page is an image (a scan) and reading it needs the Tesseract OCR program, which is not installed",
                          where=where, fix=f"install it (Debian/Ubuntu: apt-get install {INSTALL}), "
                          "or set the source's document.ocr: false to count such pages as skipped")
    have = set(pytesseract.get_languages(config=""))
    missing = [lang for lang in languages.split("+") if lang and lang not in have]
    if missing:
        pkgs = " ".join("tesseract-ocr-" + m.replace("_", "-") for m in missing)
        raise TailorError(f"Tesseract has no language data for {', '.join(missing)} (it has {', '.join(sorted(have))})",
                          where=where, fix=f"install it (Debian/Ubuntu: apt-get install {pkgs}) or change document.ocr_languages")


def ocr_image(image, languages: str) -> tuple[list[str], float | None]:
    """(paragraph texts, mean word confidence 0-100 or None when no word was found) of a PIL image."""
    import pytesseract

    data = pytesseract.image_to_data(image, lang=languages, output_type=pytesseract.Output.DICT)
    paras: dict[tuple, dict[tuple, list[str]]] = {}
    weight = score = 0.0
    for i, word in enumerate(data["text"]):
        word = (word or "").strip()
        conf = float(data["conf"][i])
        if not word or conf < 0:
            continue
        key = (data["block_num"][i], data["par_num"][i])
        paras.setdefault(key, {}).setdefault((data["line_num"][i],), []).append(word)
        weight += len(word)
        score += conf * len(word)
    texts = []
    for lines in paras.values():
        joined = " ".join(" ".join(words) for words in lines.values())
        texts.append(_CJK_GAP.sub("", joined))
    return texts, (score / weight if weight else None)
