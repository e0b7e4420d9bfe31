import json

import pytest

from tailor.config import AugmentConfig
from tailor.data.augment import augment_records
from tailor.data.records import PrepareReport
from tailor.data.slot_filters import article, plural
from tailor.errors import TailorError


@pytest.mark.parametrize("word, expected", [
    ("laptop", "laptops"), ("smartwatch", "smartwatches"), ("box", "boxes"), ("bus", "buses"), ("quiz", "quizzes"),
    ("brush", "brushes"), ("battery", "batteries"), ("day", "days"), ("knife", "knives"), ("child", "children"),
    ("sheep", "sheep"), ("headphones", "headphones"), ("sleeping bag", "sleeping bags"),
    ("pair of headphones", "pairs of headphones"), ("cup of tea", "cups of tea"), ("Man", "Men"), ("LAPTOP", "LAPTOPS"),
    ("CITY", "CITIES"), ("City", "Cities"), ("Summit X1", "Summit X1"), ("笔记本电脑", "笔记本电脑"), ("", ""),
    ("rain jacket!", "rain jackets!"),
])
def test_plural(word, expected):
    assert plural(word) == expected


@pytest.mark.parametrize("word, expected", [
    ("laptop", "a laptop"), ("apple", "an apple"), ("umbrella", "an umbrella"), ("hour", "an hour"),
    ("honest answer", "an honest answer"), ("hotel", "a hotel"), ("user", "a user"), ("unit", "a unit"),
    ("European plug", "a European plug"), ("one-day pass", "a one-day pass"), ("SUV", "an SUV"), ("USB cable", "a USB cable"),
    ("X1", "an X1"), ("8-person tent", "an 8-person tent"), ("11-inch laptop", "an 11-inch laptop"), ("2-person tent", "a 2-person tent"),
    ("pair of hiking boots", "a pair of hiking boots"), ("Apple Watch", "an Apple Watch"), ("耳机", "耳机"), ("", ""),
])
def test_indefinite_article(word, expected):
    assert article(word) == expected


def fill(templates, slots, count=10):
    report = PrepareReport()
    out = augment_records([], AugmentConfig(fill={"templates": templates, "slots": slots, "count": count}), report)
    return out, report


def test_fill_applies_filters_left_to_right():
    t = json.dumps({"instruction": "How long can I return {category|plural}, or {category|a}?",
                    "output": "{category|plural|capitalize}: {days|upper}. {Category|lower} {{category|plural}}"})
    out, _ = fill([t], {"category": ["smartwatch", "pair of boots", "帐篷"], "days": ["30 days"], "Category": ["TENT"]})
    got = sorted((r["messages"][0]["content"], r["messages"][1]["content"]) for r in out)
    assert got == [
        ("How long can I return pairs of boots, or a pair of boots?", "Pairs of boots: 30 DAYS. tent {category|plural}"),
        ("How long can I return smartwatches, or a smartwatch?", "Smartwatches: 30 DAYS. tent {category|plural}"),
        ("How long can I return 帐篷, or 帐篷?", "帐篷: 30 DAYS. tent {category|plural}")]


def test_unknown_filter_is_an_error_naming_template_and_filter():
    good = '{"text": "{category|plural}"}'
    bad = '{"instruction": "Return {category | plurl}?", "output": "ok"}'
    with pytest.raises(TailorError, match=r"template 1 uses unknown filter 'plurl' in \{category \| plurl\}") as e:
        fill([good, bad], {"category": ["tent"]})
    assert e.value.where == "data.augment.fill.templates[1]" and "plural" in e.value.fix
    with pytest.raises(TailorError, match="unknown slot"):  # the slot name is still checked, filters or not
        fill(['{"text": "{cat|plural}"}'], {"category": ["tent"]})


def test_document_templates_use_filters(tmp_path):
    from tailor.config import DocumentConfig
    from tailor.data.documents import document_rows

    (tmp_path / "returns.md").write_text("# Returns\n\n| Category | Return window |\n|---|---|\n| smartwatch | 21 days |\n"
                                         "| pair of boots | 45 days |\n")
    t = '{"messages": [{"role": "user", "content": "Can I return {category|a}?"}, ' \
        '{"role": "assistant", "content": "{category|plural|capitalize} within {return_window}."}]}'
    rows = [r for r, _ in document_rows(tmp_path / "returns.md", DocumentConfig(emit="qa", qa_from=[], templates=[t]), {})]
    assert [(r["messages"][0]["content"], r["messages"][1]["content"]) for r in rows] == [
        ("Can I return a smartwatch?", "Smartwatches within 21 days."),
        ("Can I return a pair of boots?", "Pairs of boots within 45 days.")]
    bad = '{"text": "{category|plurals}"}'
    with pytest.raises(TailorError, match="unknown filter 'plurals'") as e:
        list(document_rows(tmp_path / "returns.md", DocumentConfig(emit="qa", templates=[t, bad]), {}))
    assert e.value.where == "data.sources[].document.templates[1]"
