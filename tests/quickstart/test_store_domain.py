"""The synthetic store domain: deterministic, bilingual, and honest about held-out wordings."""

from __future__ import annotations

import json
import re
from collections import defaultdict

import pytest

from tailor.quickstart.store_domain import TOPICS, _catalog, DomainData, Fact, generate_store_domain, write_domain
from tailor.quickstart.store_templates import HELD_OUT_POSITIONS, PAGES, TEMPLATES
from tailor.errors import TailorError


@pytest.fixture(scope="module")
def data() -> DomainData:
    return generate_store_domain()


def _question(row: dict) -> str:
    return row["messages"][0]["content"]


def _reply(row: dict) -> str:
    return row["messages"][1]["content"]


def test_same_seed_gives_identical_output_and_other_seed_differs(data):
    again = generate_store_domain()
    assert again == data
    other = generate_store_domain(seed=1)
    assert other.documents != data.documents
    assert [r["template"] for r in other.train] != [r["template"] for r in data.train]
    # Facts are the knowledge base itself: the seed varies wording, never the truth.
    assert other.facts == data.facts


def test_default_sizes(data):
    n_facts = len({f.id for f in data.facts})
    assert 60 <= n_facts <= 90
    assert len(data.facts) == 2 * n_facts
    assert len(data.train) == 2 * n_facts * 8
    assert len(data.eval) == 2 * n_facts * 2
    assert {f.topic for f in data.facts} == set(TOPICS)


def test_every_fact_exists_in_both_languages(data):
    langs = defaultdict(set)
    for f in data.facts:
        langs[f.id].add(f.lang)
    assert all(v == {"en", "zh"} for v in langs.values())
    zh = [f.answer for f in data.facts if f.lang == "zh"]
    # Chinese values are written in Chinese forms, not copied from English.
    assert "30天" in zh and "3到5个工作日" in zh and not any("days" in a for a in zh)


def test_values_differ_within_a_topic_and_never_hide_inside_each_other(data):
    by_topic = defaultdict(list)
    for f in data.facts:
        by_topic[(f.topic, f.lang)].append(f.answer)
    for (topic, lang), values in by_topic.items():
        assert len(set(values)) == len(values), (topic, lang)
        for a in values:
            for b in values:
                assert a == b or a not in b, f"{topic}/{lang}: {a!r} is inside {b!r}"


def test_eval_wordings_are_held_out(data):
    train_templates = {r["template"] for r in data.train}
    eval_templates = {r["template"] for r in data.eval}
    assert eval_templates and not train_templates & eval_templates
    train_questions = {_question(r) for r in data.train}
    assert not train_questions & {_question(r) for r in data.eval}
    # Pretraining prose must not leak held-out question wordings either.
    corpus = "\n".join(data.documents)
    assert not any(_question(r) in corpus for r in data.eval)


def test_eval_questions_name_their_entity(data):
    names = {s.id: s.names for s in _catalog()}
    for r in data.eval:
        topic = r["fact_id"].split("/")[0]
        assert r["template"] in TEMPLATES[topic][r["lang"]]["eval"]
        forms = names[r["fact_id"]][r["lang"]]
        assert any(forms[k] in _question(r) for k in ("sg", "pl", "one")), r


def test_every_reply_contains_its_fact_value(data):
    value = {(f.id, f.lang): f.answer for f in data.facts}
    for r in data.train + data.eval:
        answer = value[(r["fact_id"], r["lang"])]
        assert answer in _reply(r), r
        assert answer not in _question(r), r
        assert [m["role"] for m in r["messages"]] == ["user", "assistant"]
    assert all(r["answer"] == value[(r["fact_id"], r["lang"])] for r in data.eval)
    assert all(set(r) == {"messages", "fact_id", "lang", "template"} for r in data.train)


def test_train_uses_several_templates_per_fact(data):
    per_fact = defaultdict(set)
    for r in data.train:
        per_fact[(r["fact_id"], r["lang"])].add(r["template"])
    assert all(len(t) == 8 for t in per_fact.values())
    # More conversations than training templates: every template is used, then they cycle.
    per = 1 + max(len(kinds["train"]) for langs in TEMPLATES.values() for kinds in langs.values())
    cycled = generate_store_domain(train_per_fact=per, max_facts=2, languages=("en",))
    assert len(cycled.train) == 2 * per
    first = cycled.facts[0]
    n_train = len(TEMPLATES[first.topic]["en"]["train"])
    assert len({r["template"] for r in cycled.train if r["fact_id"] == first.id}) == n_train < per


def test_every_fact_is_stated_in_documents_of_its_language(data):
    has_cjk = re.compile(r"[\u4e00-\u9fff]")
    docs = {"zh": [d for d in data.documents if has_cjk.search(d)]}
    docs["en"] = [d for d in data.documents if not has_cjk.search(d)]
    assert len(docs["en"]) == len(docs["zh"]) > 0
    for f in data.facts:
        mentions = [d for d in docs[f.lang] if f.answer in d]
        # Several variants state every fact, so pretraining sees it more than once.
        assert len(mentions) >= 4, f
    assert len(set(data.documents)) == len(data.documents)


def test_doc_variants_scales_documents():
    one = generate_store_domain(doc_variants=1)
    two = generate_store_domain(doc_variants=2)
    assert len(two.documents) == 2 * len(one.documents)


def test_max_facts_limits_facts_per_language_across_topics():
    small = generate_store_domain(max_facts=5)
    ids = {f.id for f in small.facts}
    assert len(ids) == 5 and len(small.facts) == 10
    assert len({f.topic for f in small.facts}) == 5
    assert {r["fact_id"] for r in small.train} == ids == {r["fact_id"] for r in small.eval}
    assert len(small.train) == 5 * 2 * 8
    # A fact's rows do not depend on which other facts were kept.
    full = generate_store_domain()
    full_eval = [r for r in full.eval if r["fact_id"] in ids]
    assert full_eval == small.eval


def test_single_language():
    en = generate_store_domain(languages=("en",), max_facts=3)
    assert {f.lang for f in en.facts} == {"en"} == {r["lang"] for r in en.train + en.eval}
    assert not any(re.search(r"[\u4e00-\u9fff]", d) for d in en.documents)


def test_templates_are_well_formed():
    for topic, langs in TEMPLATES.items():
        for lang, kinds in langs.items():
            pool = kinds["questions"]
            assert len(pool) >= 14 and len(set(pool)) == len(pool), (topic, lang)
            assert len(kinds["train"]) >= 8 and len(kinds["eval"]) >= 3, (topic, lang)
            assert not set(kinds["train"]) & set(kinds["eval"])
            for t in kinds["answer"] + kinds["doc"] + kinds.get("spec", []):
                assert "{v}" in t, (topic, lang, t)
            for t in pool:
                assert "{v}" not in t and re.search(r"\{(sg|pl|one|Sg|Pl)\}", t), (topic, lang, t)


def test_held_out_templates_are_fixed_positions_of_one_pool():
    for topic, langs in TEMPLATES.items():
        for lang, kinds in langs.items():
            pool = kinds["questions"]
            assert kinds["eval"] == [pool[i] for i in HELD_OUT_POSITIONS], (topic, lang)
            assert kinds["train"] == [q for i, q in enumerate(pool) if i not in HELD_OUT_POSITIONS]


def _normalized(template: str) -> str:
    # Case, punctuation (ASCII and full-width) and spacing do not make a wording new.
    return re.sub(r"[\W_]+", " ", template.casefold()).strip()


def test_no_train_template_equals_a_held_out_one_after_normalization():
    for topic, langs in TEMPLATES.items():
        for lang, kinds in langs.items():
            held_out = {_normalized(t) for t in kinds["eval"]}
            assert len(held_out) == len(HELD_OUT_POSITIONS), (topic, lang)
            for t in kinds["train"]:
                assert _normalized(t) not in held_out, (topic, lang, t)
            # Nor across topics: no held-out wording of one topic is a training wording of another.
            others = {_normalized(t) for other, ls in TEMPLATES.items() if other != topic
                      for t in ls[lang]["train"]}
            assert not held_out & others, (topic, lang)


def test_held_out_wordings_never_occur_in_other_text():
    for lang in ("en", "zh"):
        seen = [t for langs in TEMPLATES.values() for k in ("train", "answer", "doc", "spec")
                for t in langs[lang].get(k, [])]
        seen += [t for page in PAGES.values() for t in page[lang]]
        for langs in TEMPLATES.values():
            for e in langs[lang]["eval"]:
                assert not any(e in t for t in seen), (lang, e)


def test_answers_name_the_entity_before_the_value():
    # A model writes which entity it talks about before it must produce the value.
    entity = re.compile(r"\{(sg|pl|one|Sg|Pl)\}")
    for topic, langs in TEMPLATES.items():
        for lang, kinds in langs.items():
            assert 2 <= len(kinds["answer"]) <= 3, (topic, lang)
            for t in kinds["answer"]:
                first = entity.search(t)
                assert first and first.start() < t.index("{v}"), (topic, lang, t)
                assert "{store}" not in t or t.index("{store}") < t.index("{v}"), (topic, lang, t)


@pytest.mark.parametrize("kwargs", [
    {"languages": ("en", "fr")},
    {"languages": ()},
    {"languages": "en"},
    {"languages": ("en", "en")},
    {"doc_variants": 0},
    {"train_per_fact": -1},
    {"eval_per_fact": 0},
    {"eval_per_fact": 99},
    {"max_facts": 0},
    {"seed": "zero"},
])
def test_bad_arguments_raise_tailor_error(kwargs):
    with pytest.raises(TailorError) as err:
        generate_store_domain(**kwargs)
    assert err.value.fix


def test_write_domain_round_trips(tmp_path):
    small = generate_store_domain(max_facts=4)
    paths = write_domain(small, tmp_path / "out")
    assert set(paths) == {"documents", "train", "eval", "facts"}

    def read(name):
        text = paths[name].read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines()]

    assert "北风户外商城" in paths["documents"].read_text(encoding="utf-8")  # ensure_ascii=False
    assert [r["text"] for r in read("documents")] == small.documents
    assert read("train") == small.train and read("eval") == small.eval
    assert [Fact(**r) for r in read("facts")] == small.facts
