"""Byte-level BPE training, the DeepSeek chat template, and corpus reading."""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

from tailor.errors import TailorError
from tailor.models.tokenizer import (
    DEEPSEEK_CHAT_TEMPLATE,
    SPECIAL_TOKENS,
    corpus_from_files,
    train_tokenizer,
)

BOS, EOS, USER, ASSISTANT = (SPECIAL_TOKENS[k] for k in ("bos", "eos", "user", "assistant"))

ROUND_TRIP = [
    "The return window for laptops is 30 days.",
    "笔记本电脑的退货期限是30天。",
    "Mixed 中文 and English, 还有 numbers 1234567.",
    "emoji 🤖🎉👨‍👩‍👧 and rare 龘靐 chars",
    "line one\nline two\r\n\n\ttabbed  double  spaces ",
    "  leading spaces, a . spaced dot , and trailing   ",
    "",
]


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_round_trip_is_exact(tokenizer, text):
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert tokenizer.unk_token_id is None  # byte-level: nothing is ever unknown


def test_bpe_learns_chinese_and_english_merges(tokenizer):
    zh = "笔记本电脑的退货期限是30天。"
    en = "The return window for laptops is 30 days."
    # Merges must have been learned inside Chinese runs, not just bytes (3 UTF-8 bytes per char).
    assert len(tokenizer.encode(zh)) < len(zh.encode("utf-8")) / 2
    assert len(tokenizer.encode(en)) < len(en) / 2
    # Digits are grouped by at most 3, so long numbers never become one opaque token.
    pieces = tokenizer.convert_ids_to_tokens(tokenizer.encode("1234567"))
    assert all(len(p) <= 3 for p in pieces)


def test_special_tokens_are_single_ids_and_never_split(tokenizer):
    ids = [tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS.values()]
    assert ids == [0, 1, 2, 3, 4]
    for token, token_id in zip(SPECIAL_TOKENS.values(), ids):
        assert tokenizer.encode(token) == [token_id]
    encoded = tokenizer.encode(f"{USER}hi{ASSISTANT}")
    assert encoded[0] == 3 and encoded[-1] == 4
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (0, 1, 2)
    assert tokenizer.encode("plain text")[0] != tokenizer.bos_token_id  # no automatic BOS


CONVERSATION = [
    {"role": "system", "content": "You are a support agent."},
    {"role": "user", "content": "How long can I return a laptop?"},
    {"role": "assistant", "content": "30 days."},
    {"role": "user", "content": "帐篷呢？"},
    {"role": "assistant", "content": "60天。"},
]


def test_chat_template_renders_exactly(tokenizer):
    text = tokenizer.apply_chat_template(CONVERSATION, tokenize=False)
    assert text == (
        f"{BOS}You are a support agent."
        f"{USER}How long can I return a laptop?{ASSISTANT}30 days.{EOS}"
        f"{USER}帐篷呢？{ASSISTANT}60天。{EOS}"
    )
    prompt = tokenizer.apply_chat_template(CONVERSATION[1:2], tokenize=False, add_generation_prompt=True)
    assert prompt == f"{BOS}{USER}How long can I return a laptop?{ASSISTANT}"


def test_chat_template_is_prefix_stable(tokenizer):
    for k, message in enumerate(CONVERSATION):
        if message["role"] != "assistant":
            continue
        prompt = tokenizer.apply_chat_template(CONVERSATION[:k], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(CONVERSATION[: k + 1], tokenize=False)
        assert full.startswith(prompt)
        assert full[len(prompt) :] == message["content"] + EOS


def test_chat_template_rejects_unknown_role(tokenizer):
    with pytest.raises(Exception, match="Unknown chat role: narrator"):
        tokenizer.apply_chat_template([{"role": "narrator", "content": "x"}], tokenize=False)


def test_saved_tokenizer_reloads_with_template(tmp_path):
    from transformers import AutoTokenizer

    texts = ["hello world, 你好世界 123"] * 10
    tok = train_tokenizer(texts, vocab_size=300, out_dir=tmp_path / "tok", model_max_length=512)
    loaded = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert loaded.chat_template == DEEPSEEK_CHAT_TEMPLATE
    assert loaded.model_max_length == 512
    assert loaded.pad_token == SPECIAL_TOKENS["pad"]
    sample = "hello 你好 🤖 a . b\n"
    assert loaded.encode(sample) == tok.encode(sample)
    assert loaded.decode(loaded.encode(sample)) == sample
    messages = CONVERSATION[1:3]
    assert loaded.apply_chat_template(messages, tokenize=False) == tok.apply_chat_template(messages, tokenize=False)


def test_offsets_map_to_characters(tokenizer):
    text = "Hi 你好"
    enc = tokenizer(text, return_offsets_mapping=True)
    assert enc["offset_mapping"][0][0] == 0 and enc["offset_mapping"][-1][1] == len(text)


@pytest.mark.parametrize(
    "texts, vocab_size, match",
    [
        ([], 300, "empty"),
        (["", "   ", "\n"], 300, "empty"),
        (["hello"], 100, "too small"),
        ("a single string", 300, "iterable of documents"),
        (["ok", 3], 300, "not a string"),
    ],
)
def test_bad_input_raises(texts, vocab_size, match):
    with pytest.raises(TailorError, match=match):
        train_tokenizer(texts, vocab_size=vocab_size)


def test_corpus_from_files_reads_txt_jsonl_json(tmp_path):
    (tmp_path / "a.txt").write_text("first doc\n\nsecond 文档\n", encoding="utf-8")
    rows = [{"text": "a text record"}, {"messages": [{"role": "user", "content": "q?"}, {"role": "assistant", "content": "a."}]}]
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n\n")
    (tmp_path / "c.json").write_text(json.dumps([{"text": "from json"}]))
    docs = list(corpus_from_files([tmp_path / "a.txt", str(tmp_path / "b.jsonl"), tmp_path / "c.json"]))
    assert docs == ["first doc", "second 文档", "a text record", "q?", "a.", "from json"]


def test_corpus_from_files_errors_name_the_file(tmp_path):
    with pytest.raises(TailorError, match="not found") as e:
        corpus_from_files([tmp_path / "missing.txt"])
    assert "missing.txt" in str(e.value)

    (tmp_path / "data.xlsx").write_text("a,b\n")
    with pytest.raises(TailorError, match=r"unsupported data file type '\.xlsx'") as e:
        corpus_from_files([tmp_path / "data.xlsx"])
    assert "data.xlsx" in str(e.value)

    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{not json}\n')
    with pytest.raises(TailorError, match="invalid JSON") as e:
        list(corpus_from_files(tmp_path / "bad.jsonl"))
    assert "bad.jsonl:2" in str(e.value)

    (tmp_path / "nofield.jsonl").write_text('{"body": "x"}\n')
    with pytest.raises(TailorError) as e:
        list(corpus_from_files(tmp_path / "nofield.jsonl"))
    assert "nofield.jsonl:1" in str(e.value)


def test_corpus_reads_alpaca_and_csv(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([{"instruction": "Translate", "input": "cat", "output": "猫"}]))
    (tmp_path / "b.csv").write_text("text\nfrom csv\n")
    assert list(corpus_from_files([tmp_path / "a.json", tmp_path / "b.csv"])) == ["Translate\ncat", "猫", "from csv"]


def test_train_from_files_end_to_end(text_file, chat_file, tmp_path):
    tok = train_tokenizer(corpus_from_files([text_file, chat_file]), vocab_size=350, out_dir=tmp_path / "t")
    assert 256 + len(SPECIAL_TOKENS) < len(tok) <= 350
    assert (tmp_path / "t" / "tokenizer.json").is_file()
