"""Training speed choices: fused AdamW, per-sample attention for packed rows (bench/bench_lora_sft.py)."""

import pytest
import torch
from transformers import TrainerCallback

from tailor.config import load_recipe
from tailor.errors import TailorError
from tailor.training import train as run


class Capture(TrainerCallback):
    def on_train_begin(self, args, state, control, optimizer=None, **kw):
        self.optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps it


def recipe(tmp_path, model_dir, data, *extra):
    return load_recipe(None, [f"model.path={model_dir}", f"data.train=[{data}]", f"train.output_dir={tmp_path / 'run'}",
                              "train.batch_size=4", "train.save_steps=100", "data.max_length=48", "train.max_steps=2",
                              "train.mfu_probe_seconds=0", *extra])


def test_adamw_is_torch_fused_adamw(tmp_path, llama_dir, chat_file):
    cap = Capture()
    run(recipe(tmp_path, llama_dir, chat_file), callbacks=[cap])
    assert isinstance(cap.optimizer, torch.optim.AdamW) and cap.optimizer.defaults["fused"] is True


def _packed_batch(vocab, lens_per_row, width):
    ids = torch.randint(3, vocab, (len(lens_per_row), width))
    pos = torch.zeros(len(lens_per_row), width, dtype=torch.long)
    for b, lens in enumerate(lens_per_row):
        i = 0
        for n in [*lens, width - sum(lens)]:  # the tail is padding: its own run of positions, as PackingCollator makes
            pos[b, i:i + n] = torch.arange(n)
            i += n
    return ids, pos


@pytest.mark.parametrize("preset", ["llama-micro", "qwen2-micro", "deepseek-v3-micro"])
def test_packed_attention_equals_sdpa_with_the_block_mask(preset):
    import copy

    from transformers import AutoModelForCausalLM

    from tailor.models.presets import build_config
    from tailor.runtime.packed_attention import NAME, use_packed_attention

    torch.manual_seed(0)
    ref = AutoModelForCausalLM.from_config(build_config(preset, 300)).train()
    fast = copy.deepcopy(ref)
    assert ref.config._attn_implementation == "sdpa" and use_packed_attention(fast) and fast.config._attn_implementation == NAME
    ids, pos = _packed_batch(300, [[5, 9, 3], [12, 4]], 19)
    grads = []
    for m in (ref, fast):
        logits = m(input_ids=ids, position_ids=pos, use_cache=False).logits
        logits.pow(2).mean().backward()
        grads.append((logits.detach(), [p.grad for p in m.parameters()]))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads[0][1], grads[1][1]))
    # A padding mask, and generation with a cache, go through sdpa unchanged.
    mask = torch.ones_like(ids)
    mask[1, -4:] = 0
    with torch.no_grad():
        assert torch.equal(ref(input_ids=ids, attention_mask=mask).logits, fast(input_ids=ids, attention_mask=mask).logits)
        assert torch.equal(ref.eval().generate(ids[:1, :5], max_new_tokens=4, do_sample=False),
                           fast.eval().generate(ids[:1, :5], max_new_tokens=4, do_sample=False))


def test_packed_attention_is_used_only_where_it_is_exact():
    from transformers import AutoModelForCausalLM

    from tailor.models.presets import build_config
    from tailor.runtime.packed_attention import packed_sdpa_attention, use_packed_attention

    eager = AutoModelForCausalLM.from_config(build_config("llama-micro", 300), attn_implementation="eager")
    assert not use_packed_attention(eager)
    sliding = AutoModelForCausalLM.from_config(build_config("qwen2-micro", 300, use_sliding_window=True, sliding_window=8,
                                                            layer_types=["sliding_attention"] * 2))
    assert not use_packed_attention(sliding) and sliding.config._attn_implementation == "sdpa"
    q = torch.randn(1, 4, 6, 8)
    with pytest.raises(TailorError, match="position_ids"):  # no positions: refuse rather than attend across samples
        packed_sdpa_attention(torch.nn.Module(), q, q, q, None)


def test_packed_training_uses_it_and_saves_a_plain_config(tmp_path, llama_dir, chat_file):
    import json

    class Impl(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kw):
            self.impl = model.config._attn_implementation

    cap = Impl()
    result = run(recipe(tmp_path, llama_dir, chat_file, "adapter.method=full", "data.packing=true"), callbacks=[cap])
    assert cap.impl == "tailor_packed_sdpa"
    assert "tailor_packed_sdpa" not in (result.final_dir / "config.json").read_text()
    assert json.loads((result.final_dir / "config.json").read_text())["model_type"] == "llama"


def test_padding_waste_counts_the_padding_of_random_batches():
    from tailor.data.packing import padding_waste

    assert padding_waste([10, 10, 10, 10], 2) == 0.0
    assert padding_waste([1, 9], 2) == pytest.approx(8 / 18)  # one batch padded to 9: 18 tokens, 10 real
    assert padding_waste([1, 9], 1) == 0.0 and padding_waste([], 4) == 0.0


def _write(path, rows):
    import json

    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _chat(words):
    return {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": " ".join(["word"] * words)}]}


@pytest.mark.parametrize("lengths, batch_size, fires", [([1, 1, 1, 60] * 4, 4, True), ([30, 31, 30, 31] * 4, 4, False),
                                                       ([1, 1, 1, 60] * 4, 1, False)])
def test_unpacked_sft_hints_at_packing_when_padding_wastes_over_half(tmp_path, tokenizer, caplog, lengths, batch_size,
                                                                     fires):
    import logging

    from tailor.training.recipes.lm import lm_data

    data = _write(tmp_path / "chat.jsonl", [_chat(n) for n in lengths])
    r = load_recipe(None, [f"model.path={tmp_path}", f"data.train=[{data}]", f"train.output_dir={tmp_path / 'run'}",
                           "train.objective=sft", f"train.batch_size={batch_size}", "data.max_length=128",
                           "data.packing=false"])
    with caplog.at_level(logging.WARNING, logger="tailor"):
        lm_data(r, tokenizer, model=None)
    hints = [rec.getMessage() for rec in caplog.records if rec.getMessage().startswith("speed:")]
    assert len(hints) == (1 if fires else 0)
    if fires:
        assert "data.packing=true" in hints[0] and "are padding" in hints[0]
