import pytest

from tailor.data.templates import (CHATML_TEMPLATE, assistant_spans, encode_conversation, encode_prompt, render,
                                   set_chat_template)
from tailor.errors import TailorError

CONV = [
    {"role": "system", "content": "You are a support agent."},
    {"role": "user", "content": "Shipping north?"},
    {"role": "assistant", "content": "3 to 5 business days."},
    {"role": "user", "content": "退货呢？"},
    {"role": "assistant", "content": "30天内可以退货。"},
]


def _masked_text(tok, enc):
    return [tok.decode([t]) for t, lab in zip(enc["input_ids"], enc["labels"]) if lab != -100]


def test_loss_mask_is_exactly_the_assistant_turns_plus_end_of_turn(tokenizer):
    enc = encode_conversation(tokenizer, CONV, max_length=512)
    trained = [t for t, lab in zip(enc["input_ids"], enc["labels"]) if lab != -100]
    expected = []
    for answer in ("3 to 5 business days.", "30天内可以退货。"):
        expected += tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert trained == expected
    # labels equal input ids where they are not masked (no shift here: the model shifts)
    assert all(lab in (-100, t) for t, lab in zip(enc["input_ids"], enc["labels"]))
    # the eos closing each assistant turn is trained; the bos and user text are not
    assert enc["labels"][0] == -100
    assert trained.count(tokenizer.eos_token_id) == 2


def test_chatml_template_mask(tokenizer):
    tok = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    set_chat_template(tok, "chatml")
    assert tok.chat_template == CHATML_TEMPLATE
    full, spans = assistant_spans(tok, CONV)
    assert [full[a:b] for a, b in spans] == ["3 to 5 business days.<|im_end|>\n", "30天内可以退货。<|im_end|>\n"]


def test_non_prefix_stable_template_falls_back_to_search(tokenizer):
    tok = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    # The generation prompt differs from how a finished assistant turn is written, as in templates that
    # rewrite earlier turns (e.g. strip reasoning): prefix rendering cannot place the mask.
    tok.chat_template = ("{% for m in messages %}{% if m['role'] == 'assistant' %}{{ 'A:' + m['content'] + eos_token }}"
                         "{% else %}{{ 'U:' + m['content'] }}{% endif %}{% endfor %}"
                         "{% if add_generation_prompt %}{{ 'Assistant says:' }}{% endif %}")
    full, spans = assistant_spans(tok, CONV[1:3])
    assert full[spans[0][0]:spans[0][1]] == "3 to 5 business days." + tok.eos_token


def test_truncation_without_assistant_tokens_returns_none(tokenizer):
    long = [{"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "ok"}]
    assert encode_conversation(tokenizer, long, max_length=16) is None
    enc = encode_conversation(tokenizer, CONV, max_length=20)
    assert enc is None or (len(enc["input_ids"]) == 20 and enc["truncated"])


def test_prompt_is_the_training_prefix(tokenizer):
    # The prompt used by eval/chat/serving equals the training text before the answer.
    enc = encode_conversation(tokenizer, CONV[:3], max_length=512)
    prompt = encode_prompt(tokenizer, CONV[:3])
    first_label = next(i for i, lab in enumerate(enc["labels"]) if lab != -100)
    assert enc["input_ids"][:first_label] == prompt
    assert render(tokenizer, CONV[:2], add_generation_prompt=True).endswith("<｜Assistant｜>")


def test_template_errors(tokenizer):
    tok = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    with pytest.raises(TailorError, match="unknown chat template"):
        set_chat_template(tok, "nosuch")
    tok.chat_template = None
    with pytest.raises(TailorError, match="no chat template"):
        render(tok, CONV)
