"""Shared helpers for export tests: fixed prompts and PyTorch greedy references."""

import pytest
import torch

# Different lengths (1 token to a few dozen), Latin, Chinese, digits, and a chat-rendered prompt.
TEXTS = [
    "Hello",
    "The return window for laptops is",
    "笔记本电脑的退货期限是30天。帐篷可以在60天内退货。 Shipping to the north region takes",
    "Our store in Springfield opens at 9 am and closes at 8 pm on weekdays. 12345 tents",
]
CHAT = [{"role": "user", "content": "How long can I return a laptop?"}]
NEW_TOKENS = 10


def prompt_ids(tokenizer) -> list[list[int]]:
    ids = [tokenizer(t).input_ids for t in TEXTS]
    ids.append(tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=True, return_dict=False))
    return [list(p) for p in ids]


@torch.no_grad()
def torch_greedy(model, prompts: list[list[int]], eos: int, pad: int, new_tokens: int = NEW_TOKENS) -> list[list[int]]:
    """transformers' own greedy generate, one prompt at a time (no padding), new tokens up to eos."""
    out = []
    for p in prompts:
        seq = model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                             max_new_tokens=new_tokens, do_sample=False, eos_token_id=eos, pad_token_id=pad,
                             temperature=None, top_p=None, top_k=None)
        new = seq[0, len(p):].tolist()
        out.append(new[: new.index(eos) + 1] if eos in new else new)
    return out


@pytest.fixture(scope="session")
def reference():
    """(model_dir) -> (prompts, greedy tokens) from the PyTorch model, cached per directory."""
    from tailor.models.loading import load_model, load_tokenizer

    cache = {}

    def get(model_dir):
        if model_dir not in cache:
            tok = load_tokenizer(model_dir)
            model = load_model(model_dir, dtype="float32", device="cpu")
            prompts = prompt_ids(tok)
            cache[model_dir] = (prompts, torch_greedy(model, prompts, tok.eos_token_id, tok.pad_token_id), tok, model)
        return cache[model_dir]

    return get
