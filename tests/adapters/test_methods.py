"""Every peft adapter.method trains only its own weights, saves small, reloads exactly and merges where it can."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, TrainerCallback

from tailor.adapters.merge import load_with_adapter, merge
from tailor.config import load_recipe
from tailor.errors import TailorError
from tailor.training import train as run

IDS = [[5, 17, 42, 99, 7, 230, 11, 64]]


def recipe(tmp_path, model_dir, data, *extra):
    return load_recipe(None, [f"model.path={model_dir}", f"data.train=[{data}]", f"train.output_dir={tmp_path / 'run'}",
                              "train.batch_size=4", "train.max_steps=3", "train.lr=1e-2", "train.warmup_ratio=0",
                              "train.save_steps=100", "data.max_length=48", "adapter.r=4",
                              "adapter.num_virtual_tokens=4", *extra])


class Watch(TrainerCallback):
    """Snapshots every parameter before training and keeps the trained model for comparison."""

    def on_train_begin(self, args, state, control, model=None, **kw):
        self.before = {n: p.detach().clone() for n, p in model.named_parameters()}
        self.trainable = {n for n, p in model.named_parameters() if p.requires_grad}

    def on_train_end(self, args, state, control, model=None, **kw):
        self.model = model


def logits(model, ids=IDS):
    with torch.no_grad():
        out = model.eval()(input_ids=torch.tensor(ids), attention_mask=torch.ones(1, len(ids[0]), dtype=torch.long)).logits
    return out[:, -len(ids[0]):]  # prompt tuning returns logits for its virtual tokens first


def dir_bytes(path):
    return sum(f.stat().st_size for f in path.iterdir() if f.name.startswith("adapter_model"))


MARKERS = {"lora": "lora_", "dora": "lora_", "ia3": "ia3_", "prefix": "prompt_encoder", "prompt": "prompt_encoder"}


@pytest.mark.parametrize("method,extra", [("dora", []), ("lora", ["adapter.rslora=true"]), ("ia3", []),
                                          ("prefix", []), ("prompt", [])])
def test_method_trains_only_adapter_weights_saves_small_and_reloads(tmp_path, llama_dir, chat_file, method, extra):
    watch = Watch()
    result = run(recipe(tmp_path, llama_dir, chat_file, f"adapter.method={method}", *extra), callbacks=[watch])
    trained = watch.model
    assert watch.trainable and all(MARKERS[method] in n for n in watch.trainable)
    for name, p in trained.named_parameters():
        changed = not torch.equal(p.detach(), watch.before[name])
        assert changed == (name in watch.trainable), name
    assert 0 < result.metrics["trainable_parameters"] < result.metrics["total_parameters"] / 10

    final = result.final_dir
    cfg = json.loads((final / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(llama_dir.resolve()) and result.base_dir == llama_dir.resolve()
    assert not (final / "model.safetensors").exists()
    assert dir_bytes(final) < (llama_dir / "model.safetensors").stat().st_size / 10
    if method in ("lora", "dora"):
        assert cfg["use_dora"] == (method == "dora") and cfg["use_rslora"] == (method == "lora")

    reloaded, _ = load_with_adapter(final)
    expected = logits(trained)
    torch.testing.assert_close(logits(reloaded), expected, rtol=1e-5, atol=1e-5)
    base = AutoModelForCausalLM.from_pretrained(llama_dir)
    assert (logits(base) - expected).abs().max() > 1e-4  # the adapter does something


@pytest.mark.parametrize("method", ["dora", "ia3"])
def test_merged_model_equals_base_plus_adapter(tmp_path, llama_dir, chat_file, method):
    adapter = run(recipe(tmp_path, llama_dir, chat_file, f"adapter.method={method}")).final_dir
    out = merge(adapter, tmp_path / "merged")
    peft_model, _ = load_with_adapter(adapter)
    merged = AutoModelForCausalLM.from_pretrained(out)
    torch.testing.assert_close(logits(merged), logits(peft_model), rtol=1e-4, atol=1e-4)
    assert not list(out.glob("adapter_*")) and (out / "tokenizer.json").is_file()


def test_virtual_token_adapters_cannot_be_merged(tmp_path, llama_dir, chat_file):
    adapter = run(recipe(tmp_path, llama_dir, chat_file, "adapter.method=prompt", "train.max_steps=1")).final_dir
    with pytest.raises(TailorError, match="PROMPT_TUNING adapter cannot be merged") as err:
        merge(adapter, tmp_path / "merged")
    assert "lora, dora or ia3" in err.value.fix
    assert not (tmp_path / "merged").exists()


@pytest.mark.parametrize("method,extra", [("prompt", []), ("ia3", []),
                                          ("dora", ["adapter.target_modules=[q_a_proj,kv_b_proj,o_proj]"])])
def test_deepseek_v3_methods_that_peft_supports(tmp_path, deepseek_dir, chat_file, method, extra):
    result = run(recipe(tmp_path, deepseek_dir, chat_file, f"adapter.method={method}", *extra))
    reloaded, _ = load_with_adapter(result.final_dir)
    base = AutoModelForCausalLM.from_pretrained(deepseek_dir)
    assert (logits(base) - logits(reloaded)).abs().max() > 1e-4


@pytest.mark.parametrize("method,match,fix", [("dora", "DoRA cannot wrap", "target_modules"),
                                              ("prefix", "multi-head latent attention", "adapter.method=prompt")])
def test_deepseek_v3_combinations_peft_cannot_do(tmp_path, deepseek_dir, chat_file, method, match, fix):
    with pytest.raises(TailorError, match=match) as err:
        run(recipe(tmp_path, deepseek_dir, chat_file, f"adapter.method={method}"))
    assert fix in err.value.fix


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU error only shows without CUDA")
def test_qlora_on_cpu_names_the_fix(tmp_path, llama_dir, chat_file):
    with pytest.raises(TailorError, match="qlora needs a CUDA GPU") as err:
        run(recipe(tmp_path, llama_dir, chat_file, "adapter.method=qlora"))
    assert "adapter.method=lora" in err.value.fix


@pytest.mark.auto_device
@pytest.mark.skipif(not torch.cuda.is_available(), reason="QLoRA needs CUDA and bitsandbytes")
def test_qlora_trains_on_cuda(tmp_path, llama_dir, chat_file):
    pytest.importorskip("bitsandbytes")
    result = run(recipe(tmp_path, llama_dir, chat_file, "adapter.method=qlora", "train.device=cuda"))
    cfg = json.loads((result.final_dir / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and dir_bytes(result.final_dir) < (llama_dir / "model.safetensors").stat().st_size / 10
    merged = merge(result.final_dir, tmp_path / "merged")
    assert (merged / "model.safetensors").is_file()


def test_rslora_only_with_lora_methods():
    with pytest.raises(TailorError, match="rslora applies to lora"):
        load_recipe(None, ["adapter.method=prefix", "adapter.rslora=true"])
    with pytest.raises(TailorError):
        load_recipe(None, ["adapter.method=prompt", "adapter.num_virtual_tokens=0"])
