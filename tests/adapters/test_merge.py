import pytest
import torch
from transformers import AutoModelForCausalLM

from tailor.adapters.merge import load_with_adapter, merge
from tailor.config import load_recipe
from tailor.errors import TailorError
from tailor.training import train as run


def test_merged_logits_equal_base_plus_adapter(tmp_path, deepseek_dir, chat_file, tokenizer):
    r = load_recipe(None, [f"model.path={deepseek_dir}", f"data.train=[{chat_file}]", f"train.output_dir={tmp_path / 'run'}",
                           "train.max_steps=5", "train.lr=1e-2", "train.batch_size=4", "adapter.r=4"])
    adapter = run(r).final_dir
    out = merge(adapter, tmp_path / "merged")
    ids = tokenizer("Shipping north? 退货", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        peft_model, _ = load_with_adapter(adapter)
        expected = peft_model.eval()(ids).logits
        merged = AutoModelForCausalLM.from_pretrained(out).eval()
        got = merged(ids).logits
        base = AutoModelForCausalLM.from_pretrained(deepseek_dir).eval()(ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert (got - base).abs().max() > 1e-3  # the adapter changed something
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert not list(out.glob("adapter_*"))


def test_merge_bad_inputs(tmp_path, deepseek_dir):
    with pytest.raises(TailorError, match="not an adapter"):
        merge(deepseek_dir, tmp_path / "m")
    bad = tmp_path / "adapter"
    bad.mkdir()
    (bad / "adapter_config.json").write_text('{"base_model_name_or_path": "/nonexistent/base"}')
    with pytest.raises(TailorError, match="base model is not on disk"):
        merge(bad, tmp_path / "m")
