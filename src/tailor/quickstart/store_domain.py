"""A deterministic synthetic domain: the support desk of a fictional outdoor store.

It is the embedded default data set of `tailor quickstart`. A tiny model is pretrained on the
`documents`, fine-tuned on the `train` conversations and evaluated on `eval` questions whose
wordings (templates) never appear in training, so the score measures whether the model learned
the facts rather than the sentences. Every fact exists in English and Chinese.

Held-out templates are a fixed subset of one paraphrase pool, so evaluation asks the same kind of
questions in wordings never seen in training: per topic and language, the questions at positions
`HELD_OUT_POSITIONS` (2, 7 and 12) of the pool are held out, whatever their wording, and the rest
train (see `store_templates`). FAQ pages in the documents use training wordings only.

Values are chosen so that within a topic no value is a substring of another ("$32" would hide
inside "$329"), which keeps the "answer contains the value" check meaningful.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from tailor.quickstart.store_templates import (
    FAQ_PAIR,
    FAQ_TITLE,
    PAGES,
    PRODUCT_PAGE_TITLE,
    SENTENCE_JOIN,
    TEMPLATES,
)
from tailor.errors import TailorError

LANGUAGES = ("en", "zh")
STORE = {"en": "Northwind Outfitters", "zh": "北风户外商城"}
TOPICS = tuple(TEMPLATES)

# Product categories for return windows: key -> ((singular, plural, "a ..."), zh name, en, zh value).
CATEGORIES = {
    "laptop": (("laptop", "laptops", "a laptop"), "笔记本电脑", "30 days", "30天"),
    "tent": (("tent", "tents", "a tent"), "帐篷", "60 days", "60天"),
    "headphones": (("pair of headphones", "headphones", "a pair of headphones"), "耳机", "14 days", "14天"),
    "smartwatch": (("smartwatch", "smartwatches", "a smartwatch"), "智能手表", "21 days", "21天"),
    "hiking_boots": (("pair of hiking boots", "hiking boots", "a pair of hiking boots"), "登山靴", "45 days", "45天"),
    "sleeping_bag": (("sleeping bag", "sleeping bags", "a sleeping bag"), "睡袋", "90 days", "90天"),
    "backpack": (("backpack", "backpacks", "a backpack"), "背包", "100 days", "100天"),
    "kayak": (("kayak", "kayaks", "a kayak"), "皮划艇", "10 days", "10天"),
    "bicycle": (("bicycle", "bicycles", "a bicycle"), "自行车", "7 days", "7天"),
    "rain_jacket": (("rain jacket", "rain jackets", "a rain jacket"), "冲锋衣", "120 days", "120天"),
}

REGIONS = {  # key -> (en name, zh name, en value, zh value)
    "washington": ("Washington State", "华盛顿州", "1 to 2 business days", "1到2个工作日"),
    "california": ("California", "加利福尼亚州", "2 to 3 business days", "2到3个工作日"),
    "texas": ("Texas", "得克萨斯州", "3 to 5 business days", "3到5个工作日"),
    "new_york": ("New York", "纽约州", "4 to 6 business days", "4到6个工作日"),
    "alaska": ("Alaska", "阿拉斯加州", "6 to 9 business days", "6到9个工作日"),
    "hawaii": ("Hawaii", "夏威夷州", "5 to 8 business days", "5到8个工作日"),
    "canada": ("Canada", "加拿大", "7 to 10 business days", "7到10个工作日"),
    "mexico": ("Mexico", "墨西哥", "8 to 12 business days", "8到12个工作日"),
    "united_kingdom": ("the United Kingdom", "英国", "10 to 14 business days", "10到14个工作日"),
    "australia": ("Australia", "澳大利亚", "12 to 20 business days", "12到20个工作日"),
}

CITIES = {  # key -> (en name, zh name, en hours, zh hours)
    "seattle": ("Seattle", "西雅图", "9 am to 9 pm", "上午9点到晚上9点"),
    "portland": ("Portland", "波特兰", "10 am to 8 pm", "上午10点到晚上8点"),
    "denver": ("Denver", "丹佛", "8 am to 6 pm", "上午8点到下午6点"),
    "boston": ("Boston", "波士顿", "7 am to 10 pm", "早上7点到晚上10点"),
    "austin": ("Austin", "奥斯汀", "11 am to 7 pm", "上午11点到晚上7点"),
    "chicago": ("Chicago", "芝加哥", "10 am to 9 pm", "上午10点到晚上9点"),
    "minneapolis": ("Minneapolis", "明尼阿波利斯", "9 am to 5 pm", "上午9点到下午5点"),
    "san_diego": ("San Diego", "圣迭戈", "6 am to 8 pm", "早上6点到晚上8点"),
}

POLICIES = {  # key -> (en name, zh name, en value, zh value)
    "price_match": ("price match window", "价格保护期", "14 days", "14天"),
    "gift_card": ("gift card validity period", "礼品卡有效期", "5 years", "5年"),
    "free_shipping": ("minimum order for free shipping", "免运费的最低订单金额", "$75", "75美元"),
    "restocking_fee": ("restocking fee for opened items", "已拆封商品的退货手续费", "15%", "15%"),
    "loyalty_points": ("loyalty points rate", "会员积分比例", "2 points per dollar", "每消费1美元积2分"),
    "holiday_returns": ("holiday return deadline", "节日礼品退货截止日期", "January 31", "1月31日"),
    "rental_deposit": ("gear rental deposit", "装备租赁押金", "$50", "50美元"),
    "refund_time": ("refund processing time", "退款处理时间", "5 to 7 business days", "5到7个工作日"),
}

# key -> (en name, zh name, en blurb, zh blurb, {topic: (en value, zh value)})
PRODUCTS = {
    "trailblazer_laptop": ("Trailblazer 14 laptop", "Trailblazer 14 笔记本电脑",
                           "A rugged 14-inch laptop built for field work and travel.",
                           "专为野外工作和旅行打造的坚固型14英寸笔记本电脑。",
                           {"price": ("$1,249", "1249美元"), "warranty": ("2 years", "2年"),
                            "weight": ("1.6 kg", "1.6公斤"), "battery_life": ("14 hours", "14小时")}),
    "echopeak_headphones": ("EchoPeak headphones", "EchoPeak 头戴式耳机",
                            "Noise-cancelling over-ear headphones for long journeys.", "适合长途旅行的头戴式降噪耳机。",
                            {"price": ("$179", "179美元"), "warranty": ("1 year", "1年"),
                             "weight": ("260 grams", "260克"), "battery_life": ("38 hours", "38小时")}),
    "ridgeline_watch": ("Ridgeline GPS watch", "Ridgeline GPS 手表",
                        "A GPS watch with maps, an altimeter and heart-rate tracking.", "带地图、高度计和心率监测的GPS手表。",
                        {"price": ("$329", "329美元"), "warranty": ("18 months", "18个月"),
                         "weight": ("52 grams", "52克"), "battery_life": ("21 days", "21天")}),
    "summit_tent": ("Summit 4 tent", "Summit 4 帐篷",
                    "A four-person, three-season tent that pitches in minutes.", "可容纳四人的三季帐篷，几分钟即可搭好。",
                    {"price": ("$459", "459美元"), "warranty": ("5 years", "5年"), "weight": ("3.8 kg", "3.8公斤")}),
    "canyon_backpack": ("Canyon 40 backpack", "Canyon 40 背包",
                        "A trekking pack with a ventilated back panel and a rain cover.", "带透气背板和防雨罩的徒步背包。",
                        {"price": ("$139", "139美元"), "warranty": ("10 years", "10年"),
                         "weight": ("1.3 kg", "1.3公斤"), "capacity": ("40 liters", "40升")}),
    "glacier_bag": ("Glacier sleeping bag", "Glacier 睡袋",
                    "A down sleeping bag made for freezing nights.", "适合严寒夜晚的羽绒睡袋。",
                    {"price": ("$219", "219美元"), "warranty": ("3 years", "3年"), "weight": ("1.1 kg", "1.1公斤")}),
    "ember_stove": ("Ember camp stove", "Ember 露营炉",
                    "A compact gas stove that boils water in three minutes.", "三分钟即可烧开水的小巧燃气炉。",
                    {"price": ("$64", "64美元"), "warranty": ("6 months", "6个月"), "weight": ("340 grams", "340克")}),
    "harbor_cooler": ("Harbor cooler", "Harbor 保温箱",
                      "A rotomolded cooler that keeps ice for days.", "滚塑工艺保温箱，冰块可保存数天。",
                      {"price": ("$289", "289美元"), "warranty": ("4 years", "4年"),
                       "weight": ("9.5 kg", "9.5公斤"), "capacity": ("52 liters", "52升")}),
    "lumen_headlamp": ("Lumen headlamp", "Lumen 头灯",
                       "A bright rechargeable headlamp with a red night mode.", "明亮的可充电头灯，带红光夜间模式。",
                       {"price": ("$42", "42美元"), "warranty": ("90 days", "90天"),
                        "battery_life": ("60 hours", "60小时")}),
    "drift_kayak": ("Drift kayak", "Drift 皮划艇",
                    "A stable sit-on-top kayak for lakes and calm coastal water.", "适合湖泊和平静海岸的稳定型坐式皮划艇。",
                    {"price": ("$899", "899美元"), "warranty": ("7 years", "7年"), "weight": ("23 kg", "23公斤")}),
    "trekker_bottle": ("Trekker water bottle", "Trekker 水壶",
                       "An insulated steel bottle that keeps drinks cold all day.", "全天保冷的不锈钢保温水壶。",
                       {"price": ("$34", "34美元"), "capacity": ("750 ml", "750毫升")}),
    "spark_powerbank": ("Spark power bank", "Spark 移动电源",
                        "A pocket power bank that charges a phone several times.", "可为手机多次充电的便携移动电源。",
                        {"price": ("$68", "68美元"), "capacity": ("20,000 mAh", "20000毫安时")}),
    "aurora_lantern": ("Aurora lantern", "Aurora 营地灯",
                       "A dimmable camp lantern for the tent or the picnic table.", "可调光的露营灯，适合帐篷或野餐桌。",
                       {"price": ("$54", "54美元"), "battery_life": ("120 hours", "120小时")}),
}


@dataclass(frozen=True)
class Fact:
    """One value the store knows, in one language; `answer` is what a correct reply must contain."""

    id: str  # stable across languages and seeds, e.g. "return_window/laptop"
    topic: str
    entity: str  # English entity key
    lang: str  # "en" | "zh"
    answer: str


@dataclass
class DomainData:
    """Everything `tailor quickstart` needs: facts, pretraining prose, train and held-out eval chats."""

    facts: list[Fact]
    documents: list[str]
    train: list[dict]
    eval: list[dict]


@dataclass(frozen=True)
class _Spec:
    """A fact with both languages' values and the names templates fill in."""

    id: str
    topic: str
    entity: str
    product: str | None  # the product page it also belongs on
    names: dict  # lang -> template fields (sg, Sg, pl, Pl, one)
    values: dict  # lang -> value


def _names(en: tuple[str, str, str] | str, zh: str) -> dict:
    sg, pl, one = (en, en, en) if isinstance(en, str) else en
    return {
        "en": {"sg": sg, "Sg": sg[0].upper() + sg[1:], "pl": pl, "Pl": pl[0].upper() + pl[1:], "one": one},
        "zh": {"sg": zh, "Sg": zh, "pl": zh, "Pl": zh, "one": zh},
    }


def _catalog() -> list[_Spec]:
    """All facts in a fixed order: topic by topic, entities in table order."""
    specs = []

    def add(topic, key, names, en, zh, product=None):
        specs.append(_Spec(f"{topic}/{key}", topic, key, product, names, {"en": en, "zh": zh}))

    for key, (en_names, zh, en, zh_v) in CATEGORIES.items():
        add("return_window", key, _names(en_names, zh), en, zh_v)
    for topic in ("warranty", "price", "weight", "battery_life", "capacity"):
        for key, (en_name, zh_name, _, _, attrs) in PRODUCTS.items():
            if topic in attrs:
                add(topic, key, _names(en_name, zh_name), *attrs[topic], product=key)
    for topic, table in (("shipping_time", REGIONS), ("store_hours", CITIES), ("policy", POLICIES)):
        for key, (en_name, zh_name, en, zh_v) in table.items():
            add(topic, key, _names(en_name, zh_name), en, zh_v)
    return specs


def _select(specs: list[_Spec], max_facts: int | None) -> list[_Spec]:
    """Take facts round-robin over topics, so a toy-sized set still covers every topic."""
    if max_facts is None or max_facts >= len(specs):
        return specs
    by_topic = {t: [s for s in specs if s.topic == t] for t in TOPICS}
    chosen: list[_Spec] = []
    depth = 0
    while len(chosen) < max_facts:
        for topic in TOPICS:
            if depth < len(by_topic[topic]) and len(chosen) < max_facts:
                chosen.append(by_topic[topic][depth])
        depth += 1
    keep = {s.id for s in chosen}
    return [s for s in specs if s.id in keep]


def _fill(template: str, spec: _Spec, lang: str) -> str:
    return template.format(store=STORE[lang], v=spec.values[lang], **spec.names[lang])


def _check_args(seed, languages, doc_variants, train_per_fact, eval_per_fact, max_facts) -> None:
    where = "generate_store_domain()"
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TailorError(f"seed must be an integer, got {seed!r}", where, "pass e.g. seed=0")
    if isinstance(languages, str) or not languages:
        raise TailorError(f"languages must be a non-empty tuple, got {languages!r}", where,
                          f"pass a tuple drawn from {LANGUAGES}, e.g. ('en',)")
    unknown = [lang for lang in languages if lang not in LANGUAGES]
    if unknown:
        raise TailorError(f"unknown language(s) {unknown}", where, f"use only {LANGUAGES}")
    if len(set(languages)) != len(languages):
        raise TailorError(f"languages repeats an entry: {languages!r}", where, "list each language once")
    for name, value in (("doc_variants", doc_variants), ("train_per_fact", train_per_fact),
                        ("eval_per_fact", eval_per_fact), ("max_facts", max_facts)):
        if name == "max_facts" and value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise TailorError(f"{name} must be a positive integer, got {value!r}", where, f"pass {name}=1 or more")
    most = min(len(TEMPLATES[t][lang]["eval"]) for t in TOPICS for lang in languages)
    if eval_per_fact > most:
        # Cycling held-out templates would only repeat identical eval questions.
        raise TailorError(f"eval_per_fact={eval_per_fact} exceeds the {most} held-out question templates per topic",
                          where, f"pass eval_per_fact={most} or less")


def _conversations(specs, languages, seed, per_fact, kind) -> list[dict]:
    """Pair question templates of one kind ("train"/"eval") with answer templates, per fact."""
    rows = []
    for spec in specs:
        for lang in languages:
            # A per-fact RNG keeps a fact's rows identical whether or not max_facts trims the set.
            rng = random.Random(f"{seed}/{kind}/{spec.id}/{lang}")
            questions = list(TEMPLATES[spec.topic][lang][kind])
            answers = list(TEMPLATES[spec.topic][lang]["answer"])
            rng.shuffle(questions)
            rng.shuffle(answers)
            for i in range(per_fact):
                q_t, a_t = questions[i % len(questions)], answers[i % len(answers)]
                row = {
                    "messages": [{"role": "user", "content": _fill(q_t, spec, lang)},
                                 {"role": "assistant", "content": _fill(a_t, spec, lang)}],
                    "fact_id": spec.id, "lang": lang, "template": q_t,
                }
                if kind == "eval":
                    row["answer"] = spec.values[lang]
                rows.append(row)
    return rows


def _doc_sentence(spec: _Spec, lang: str, seed: int, variant: int, shift: int = 0) -> str:
    """One document sentence stating `spec`; variants rotate through the forms so each appears."""
    forms = TEMPLATES[spec.topic][lang]["doc"]
    offset = random.Random(f"{seed}/docform/{spec.id}/{lang}").randrange(len(forms))
    return _fill(forms[(offset + variant + shift) % len(forms)], spec, lang)


def _paragraphs(sentences: list[str], lang: str, rng: random.Random) -> list[str]:
    """Group sentences into short paragraphs of 2-4, as real pages are."""
    out, i = [], 0
    while i < len(sentences):
        n = rng.randint(2, 4)
        out.append(SENTENCE_JOIN[lang].join(sentences[i:i + n]))
        i += n
    return out


def _documents(specs, languages, seed, doc_variants) -> list[str]:
    docs = []
    for lang in languages:
        store = STORE[lang]
        for variant in range(doc_variants):
            rng = random.Random(f"{seed}/docs/{lang}/{variant}")
            for topic in TOPICS:  # one page per topic: every fact is stated here at least once
                members = [s for s in specs if s.topic == topic]
                if not members:
                    continue
                title, intro, outro = (p.format(store=store) for p in PAGES[topic][lang])
                body = [_doc_sentence(s, lang, seed, variant) for s in members]
                rng.shuffle(body)
                docs.append("\n\n".join([title, intro, *_paragraphs(body, lang, rng), outro]))
            for key, (en_name, zh_name, en_blurb, zh_blurb, _) in PRODUCTS.items():
                members = [s for s in specs if s.product == key]
                if not members:
                    continue
                name, blurb = (en_name, en_blurb) if lang == "en" else (zh_name, zh_blurb)
                # Product pages mix spec-sheet lines with prose, so the model sees both shapes.
                lines = [_fill(rng.choice(TEMPLATES[s.topic][lang]["spec"]), s, lang) if rng.random() < 0.5
                         else _doc_sentence(s, lang, seed, variant, shift=2) for s in members]
                rng.shuffle(lines)
                title = PRODUCT_PAGE_TITLE[lang].format(sg=name, store=store)
                docs.append("\n".join([title, blurb, *lines]))
            # An FAQ page with train-question wordings only: held-out wordings never reach pretraining.
            faq = [s for s in specs if rng.random() < 0.3] or specs[:1]
            pairs = []
            for s in faq:
                q = _fill(rng.choice(TEMPLATES[s.topic][lang]["train"]), s, lang)
                a = _fill(rng.choice(TEMPLATES[s.topic][lang]["answer"]), s, lang)
                pairs.append(FAQ_PAIR[lang].format(q=q, a=a))
            docs.append("\n\n".join([FAQ_TITLE[lang].format(store=store), *pairs]))
    random.Random(f"{seed}/docs/order").shuffle(docs)
    return docs


def generate_store_domain(seed: int = 0, languages: tuple[str, ...] = ("en", "zh"), doc_variants: int = 4,
                          train_per_fact: int = 8, eval_per_fact: int = 2,
                          max_facts: int | None = None) -> DomainData:
    """Build the store-support domain; the same arguments always give byte-identical output.

    `max_facts` limits facts per language (taken round-robin over topics) for toy-sized tests;
    `train_per_fact` conversations per fact and language cycle through the training templates;
    `eval_per_fact` questions per fact and language come from held-out templates only.
    """
    _check_args(seed, languages, doc_variants, train_per_fact, eval_per_fact, max_facts)
    specs = _select(_catalog(), max_facts)
    facts = [Fact(s.id, s.topic, s.entity, lang, s.values[lang]) for s in specs for lang in languages]
    train = _conversations(specs, languages, seed, train_per_fact, "train")
    random.Random(f"{seed}/train/order").shuffle(train)
    return DomainData(
        facts=facts,
        documents=_documents(specs, languages, seed, doc_variants),
        train=train,
        eval=_conversations(specs, languages, seed, eval_per_fact, "eval"),
    )


def write_domain(data: DomainData, out_dir) -> dict[str, Path]:
    """Write the domain as UTF-8 JSON Lines files in `out_dir` and return their paths by name."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = {
        "documents": [{"text": d} for d in data.documents],
        "train": data.train,
        "eval": data.eval,
        "facts": [asdict(f) for f in data.facts],
    }
    paths = {}
    for name, rows in tables.items():
        path = out / f"{name}.jsonl"
        with path.open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        paths[name] = path
    return paths
