import pytest

from tailor.config import (ChineseStep, DataConfig, HtmlStep, LanguageStep, LengthStep, NfkcStep, PiiStep, RegexStep,
                           build)
from tailor.data.clean import clean_records, detect_language
from tailor.data.normalize import html_to_text, nfkc, strip_control, whitespace
from tailor.data.records import PrepareReport
from tailor.errors import TailorError

ZH_TEXT = ("《退货政策》第3条：笔记本电脑的退货期限是30天，帐篷可以在60天内退货！\n"
           "请注意……如有疑问？请联系“客服中心”（周一至周五），或访问官网、查看FAQ。\n\n"
           "价格：￥1299元；折扣码 SAVE10 —— 限时优惠～ 👍 👨‍👩‍👧\n"
           "　　第二段：送货到北部地区需要3到5个工作日【以实际为准】。")


def chat(q, a, **extra):
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}], **extra}


def run(records, steps, **kw):
    report = PrepareReport()
    out = list(clean_records(records, steps, report, **kw))
    for s in report.steps:
        assert s.n_in == s.n_out + s.n_dropped, s.line()
    return out, report


def step(report, name):
    return next(s for s in report.steps if s.name == name)


def test_chinese_text_survives_nfkc_control_whitespace_unchanged():
    text = ZH_TEXT.replace("\n　　", "\n")  # U+3000 indentation is documented to become a space
    out, report = run([{"text": text}], ["nfkc", "strip_control", "whitespace"])
    assert out[0]["text"] == text
    assert [s.changed for s in report.steps] == [0, 0, 0]


def test_nfkc_keeps_cjk_punctuation_and_folds_fullwidth_letters():
    assert nfkc("ＡＢＣ１２３，ｄｅｆ！？（注）……") == "ABC123，def！？（注）……"
    assert nfkc("ｶﾀｶﾅ｡ ﬁle ①") == "カタカナ。 file 1"
    assert nfkc("e\u0301") == "é"
    assert nfkc("plain ascii") == "plain ascii"


def test_strip_control_keeps_lines_tabs_and_emoji_sequences():
    assert strip_control("a\u200bb\u200cc\u2060d\ufeffe\u202ef\u200eg\x00h\x07i\x85j") == "abcdefghij"
    assert strip_control("l1\r\nl2\rl3\x0cl4\tx") == "l1\nl2\nl3\nl4\tx"
    family = "👨\u200d👩\u200d👧"
    assert strip_control(f"{family} a\u200db") == f"{family} ab"


def test_whitespace_rules():
    assert whitespace("  Hello   world \t\n\n\n\nnext\tline  ") == "Hello world\n\nnext line"
    assert whitespace("a\u00a0\u00a0b\u3000c") == "a b c"
    assert whitespace("list:\n  - item\n    - nested") == "list:\n  - item\n    - nested"
    code = "```py\ndef f():\n    x  =  1\n\n\n\n    return x\n```"
    assert whitespace(f"see:  \n{code}\nend") == f"see:\n{code}\nend"
    assert whitespace("你好  世界") == "你好 世界"
    assert whitespace("你好世界") == "你好世界"


def test_html_to_text():
    page = ("<html><head><style>p {color: red}</style><title>Policy</title></head><body>"
            "<script>if (a < b) alert(1)</script><h1>Returns</h1><p>Laptops: 30&nbsp;days &amp; tents: 60.</p>"
            "<ul><li>one</li><li>two</li></ul>line<br>break<pre>  x = 1\n    y = 2</pre><p>end</p></body></html>")
    assert html_to_text(page) == ("Policy\n\nReturns\n\nLaptops: 30\u00a0days & tents: 60.\n\none\ntwo\n\nline\nbreak"
                                  "\n\n  x = 1\n    y = 2\n\nend")
    assert html_to_text("a < b and c > d") == "a < b and c > d"
    assert html_to_text("if a<b and c>d then") == "if a<b and c>d then"
    assert html_to_text("AT&T &amp; friends, see ?a=1&para=2") == "AT&T & friends, see ?a=1&para=2"
    assert html_to_text("Use <b>bold</b> text\nsecond line") == "Use bold text\nsecond line"


def test_html_that_empties_an_answer_drops_the_row():
    rows = [chat("q1", "<script>track()</script>", where="f:1"), chat("q2", "<p>ok</p>", where="f:2")]
    out, report = run(rows, [HtmlStep(step="html")])
    assert [r["messages"][1]["content"] for r in out] == ["ok"]
    rep = step(report, "clean.html")
    assert rep.dropped == {"empty after cleaning": 1} and rep.examples["empty after cleaning"] == "f:1"
    assert rep.changed == 1


def test_regex_replace_and_drop():
    rows = [{"text": "Call me ASAP, ref #123", "where": "f:1"}, {"text": "lorem ipsum SPAM here", "where": "f:2"},
            {"text": "plain", "where": "f:3"}]
    steps = [RegexStep(step="regex", pattern=r"#(\d+)", replace=r"No. \1"),
             RegexStep(step="regex", pattern="SPAM", action="drop")]
    out, report = run(rows, steps)
    assert [r["text"] for r in out] == ["Call me ASAP, ref No. 123", "plain"]
    assert [s.name for s in report.steps] == ["clean.regex", "clean.regex#1"]
    assert report.steps[1].dropped == {"matched regex 'SPAM'": 1}
    assert report.steps[1].examples["matched regex 'SPAM'"] == "f:2"


def test_invalid_regex_is_an_error_naming_step_and_pattern():
    with pytest.raises(TailorError) as e:
        clean_records([], ["nfkc", {"step": "regex", "pattern": "(unclosed"}], PrepareReport())
    assert "data.clean[1]" in str(e.value) and "(unclosed" in str(e.value)
    with pytest.raises(TailorError, match="invalid group reference"):
        clean_records([], [RegexStep(step="regex", pattern="a", replace=r"\3")], PrepareReport())


def test_chinese_traditional_to_simplified():
    out, report = run([{"text": "漢字簡體轉換，電腦"}, {"text": "ascii only"}], [ChineseStep(step="chinese")])
    assert [r["text"] for r in out] == ["汉字简体转换，电脑", "ascii only"]
    assert report.steps[0].changed == 1


@pytest.mark.parametrize("text,masked", [
    ("mail li.wei+x@example.co.uk now", "mail <EMAIL> now"),
    ("qq 13812345678@qq.com", "qq <EMAIL>"),
    ("call +1 415-555-0132 or (415) 555-0132 or 415-555-0132", "call <PHONE> or <PHONE> or <PHONE>"),
    ("手机13812345678，或 +86 138 1234 5678，座机 010-12345678", "手机<PHONE>，或 <PHONE>，座机 <PHONE>"),
    ("身份证 11010519491231002X。", "身份证 <ID_CARD>。"),
    ("card 4111 1111 1111 1111, 4111-1111-1111-1111 and 5500005555555559", "card <BANK_CARD>, <BANK_CARD> and <BANK_CARD>"),
    ("server 192.168.1.20 and 2001:db8::1 and ::1", "server <IP> and <IP> and <IP>"),
])
def test_pii_positives(text, masked):
    out, report = run([{"text": text}], [PiiStep(step="pii")])
    assert out[0]["text"] == masked


@pytest.mark.parametrize("text", [
    "Order 20231115 shipped", "Total $1,299.00 on 2023-11-15 at 10:30:45", "version 1.2.3.4 and v2.0.0.1",
    "ID 110105194912310021 fails its checksum", "card 4111 1111 1111 1112 fails Luhn", "ts 1699999999999 ms",
    "octets 999.1.1.1", "std::vector<int> and a::b", "room 1203, 3 to 5 days, 30天退货", "phone 12345",
])
def test_pii_negatives(text):
    out, report = run([{"text": text}], [PiiStep(step="pii")])
    assert out[0]["text"] == text
    assert sum(report.extra["pii_masked"].values()) == 0


def test_pii_kinds_and_counts():
    rows = [{"text": "a@b.com 13812345678 192.168.0.1"}, {"text": "x@y.org"}]
    out, report = run(rows, [PiiStep(step="pii", kinds=["email", "ip"])])
    assert out[0]["text"] == "<EMAIL> 13812345678 <IP>"
    assert report.extra["pii_masked"] == {"email": 2, "ip": 1}


def test_length_by_characters():
    rows = [{"text": "tiny", "where": "f:1"}, {"text": "just right", "where": "f:2"}, {"text": "x" * 50, "where": "f:3"}]
    out, report = run(rows, [LengthStep(step="length", min_chars=5, max_chars=20)])
    assert [r["text"] for r in out] == ["just right"]
    assert report.steps[0].dropped == {"shorter than 5 characters": 1, "longer than 20 characters": 1}


def test_length_by_tokens(tokenizer):
    short, long = "Hello!", " ".join(["The return window for laptops is 30 days."] * 10)
    n_long = len(tokenizer.encode(long, add_special_tokens=False))
    out, report = run([{"text": short}, {"text": long}], [LengthStep(step="length", max_tokens=n_long - 1)],
                      tokenizer=tokenizer)
    assert [r["text"] for r in out] == [short]
    assert report.steps[0].dropped == {f"longer than {n_long - 1} tokens": 1}
    n_short = len(tokenizer.encode(short, add_special_tokens=False))
    out, _ = run([{"text": short}, {"text": long}], [LengthStep(step="length", min_tokens=n_short + 1)],
                 tokenizer=tokenizer)
    assert [r["text"] for r in out] == [long]


def test_token_bounds_without_tokenizer_are_an_error():
    with pytest.raises(TailorError) as e:
        clean_records([], [LengthStep(step="length", max_tokens=512)], PrepareReport())
    assert "data.clean[step=length]" in str(e.value) and "model.tokenizer or model.path" in str(e.value)


def test_language_detection_and_filter():
    assert detect_language("我用Python写代码") == "zh"
    assert detect_language("Use the 微信 app to pay") == "en"
    assert detect_language("日本語のテキストです") == "ja"
    assert detect_language("한국어 텍스트입니다") == "ko"
    assert detect_language("Привет, как дела?") == "ru"
    assert detect_language("مرحبا بكم") == "ar"
    assert detect_language("Bonjour à tous") == "en"
    assert detect_language("12345 !!") == "unknown"
    rows = [{"text": "Hello there", "where": "f:1"}, {"text": "你好", "where": "f:2"},
            {"text": "Привет, как дела?", "where": "f:3"}, {"text": "42", "where": "f:4"}]
    out, report = run(rows, [LanguageStep(step="language", keep=["en", "zh"])])
    assert [r["text"] for r in out] == ["Hello there", "你好"]
    assert report.steps[0].dropped == {"language 'ru' not in [en, zh]": 1, "language 'unknown' not in [en, zh]": 1}
    assert report.steps[0].examples["language 'ru' not in [en, zh]"] == "f:3"
    with pytest.raises(TailorError, match="script-based"):
        clean_records([], [LanguageStep(step="language", keep=["fr"])], PrepareReport())


def test_reports_exist_at_call_time_and_the_stream_is_lazy():
    report = PrepareReport()
    consumed = []

    def source():
        for i in range(3):
            consumed.append(i)
            yield {"text": f"row  {i}"}

    stream = clean_records(source(), ["whitespace", "nfkc"], report)
    assert [s.name for s in report.steps] == ["clean.whitespace", "clean.nfkc"] and consumed == []
    assert next(stream) == {"text": "row 0"} and consumed == [0]


def test_all_record_shapes_roles_and_bookkeeping_untouched():
    rows = [
        {"messages": [{"role": "system", "content": " Be  brief. "}, {"role": "user", "content": "Ｑ１"},
                      {"role": "assistant", "content": "Ａ１", "name": "bot"}], "where": "f:1", "meta": {"k": "  v  "}},
        {"text": "some  text", "label": "pos", "where": "f:2"},
        {"prompt": [{"role": "user", "content": "pick  one"}], "chosen": "Ｇood", "rejected": "bad  ", "where": "f:3"},
    ]
    out, report = run(rows, ["nfkc", "whitespace"])
    assert out[0] == {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q1"},
                                   {"role": "assistant", "content": "A1", "name": "bot"}], "where": "f:1",
                      "meta": {"k": "  v  "}}
    assert out[1] == {"text": "some text", "label": "pos", "where": "f:2"}
    assert out[2] == {"prompt": [{"role": "user", "content": "pick one"}], "chosen": "Good", "rejected": "bad",
                      "where": "f:3"}
    assert rows[0]["messages"][1]["content"] == "Ｑ１"  # inputs are not mutated
    assert [s.changed for s in report.steps] == [2, 3]


def test_emptied_user_turn_or_rejected_drops_but_empty_system_does_not():
    rows = [chat("\u200b\u200b", "answer", where="f:1"),
            {"messages": [{"role": "system", "content": "\u200b"}, {"role": "user", "content": "q"},
                          {"role": "assistant", "content": "a"}], "where": "f:2"},
            {"prompt": [{"role": "user", "content": "q"}], "chosen": "good", "rejected": "\x00", "where": "f:3"}]
    out, report = run(rows, ["strip_control"])
    assert [r["where"] for r in out] == ["f:2"]
    assert report.steps[0].dropped == {"empty after cleaning": 2}


def test_unknown_step_is_an_error():
    with pytest.raises(TailorError, match="clean"):
        build(DataConfig, {"clean": [{"step": "bogus"}]}, "recipe.yaml")
    with pytest.raises(TailorError, match="clean"):
        clean_records([], ["nfkc", "lowercase"], PrepareReport())
    with pytest.raises(TailorError):
        build(DataConfig, {"clean": [{"step": "regex"}]}, "recipe.yaml")  # pattern is required
    cfg = build(DataConfig, {"clean": ["nfkc", {"step": "length", "min_chars": 2}]}, "recipe.yaml")
    out, _ = run([{"text": "ｘ"}, {"text": "ok"}], cfg.clean)
    assert out == [{"text": "ok"}]


def test_non_string_contents_pass_through():
    rows = [{"messages": [{"role": "user", "content": "q  1"},
                          {"role": "assistant", "content": None, "tool_calls": [{"name": "f"}]},
                          {"role": "tool", "content": "r"}, {"role": "assistant", "content": "done"}]}]
    out, _ = run(rows, ["whitespace", NfkcStep(step="nfkc")])
    assert [m["content"] for m in out[0]["messages"]] == ["q 1", None, "r", "done"]
