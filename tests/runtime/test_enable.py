"""`tailor.runtime.enable` is the one switch: same greedy tokens with and without it, nothing installed by loaders,
and outside the tested library versions the plain path with one warning."""

import logging
import tomllib
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from tailor import runtime
from tailor.adapters.loading import load_any, load_causal_lm
from tailor.models.loading import load_model, load_tokenizer
from tailor.runtime import experts, guard

PROMPTS = ("hello", "How long can I return a laptop?", "Shipping takes", "笔记本电脑的退货期限是", "tents?")


def _greedy(model, tok, new_tokens=12):
    """Greedy tokens for each prompt alone (batch of one: the decode step's case), eos ignored."""
    out = []
    with torch.no_grad():
        for text in PROMPTS:
            ids = torch.tensor([tok.encode(text)])
            seq = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                                 min_new_tokens=new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
            out.append(seq[0, ids.shape[1]:].tolist())
    return out


def _own_forwards(model) -> bool:
    """No module of `model` carries a forward of its own instance (every forward is its class's)."""
    return all("forward" not in m.__dict__ for m in model.modules())


def _with_and_without(model, tok, expected: list[str]):
    """Tokens of the plain model, then with the runtime enabled (installing `expected`), then after disable."""
    assert _own_forwards(model) and runtime.installed(model) == []
    plain = _greedy(model, tok)
    assert runtime.enable(model) == expected
    assert runtime.installed(model) == expected and runtime.enable(model) == []  # idempotent
    fast = _greedy(model, tok)
    assert runtime.disable(model) == expected and runtime.installed(model) == [] and _own_forwards(model)
    assert _greedy(model, tok) == plain
    return plain, fast


def test_deepseek_v3_float32_same_tokens(deepseek_dir):
    model, tok = load_any(deepseek_dir)
    plain, fast = _with_and_without(model, tok, ["decode_step", "routed_experts"])
    assert fast == plain


def test_llama_same_tokens_and_nothing_to_install(llama_dir):
    model, tok = load_any(llama_dir)
    plain, fast = _with_and_without(model, tok, [])
    assert fast == plain


def test_int8_weight_model_same_tokens(deepseek_dir, tmp_path):
    from tailor.compression.quantize import quantize

    quantize(deepseek_dir, "int8-weight", tmp_path / "q")
    model, tok = load_any(tmp_path / "q")
    layer = model.model.layers[0].self_attn.o_proj
    assert type(layer).__name__ == "Int8WeightLinear" and not layer.kernels  # loaded plain: public torch ops only
    plain, fast = _with_and_without(model, tok, ["decode_step", "int8_int4_kernels"])
    assert fast == plain


def test_lora_wrapped_model_same_tokens(deepseek_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    lora = LoraConfig(r=4, target_modules=["q_b_proj", "kv_a_proj_with_mqa", "o_proj", "kv_b_proj"],
                      init_lora_weights=False)  # non-zero deltas: the adapter changes the answers
    get_peft_model(load_model(deepseek_dir), lora).save_pretrained(tmp_path / "adapter")
    model, tok = load_any(deepseek_dir, adapter=tmp_path / "adapter")
    plain, fast = _with_and_without(model, tok, ["decode_step", "routed_experts"])
    assert fast == plain
    assert plain != _greedy(load_model(deepseek_dir), tok)  # the adapter is really in the path


def test_loaders_return_untouched_models(deepseek_dir, tmp_path):
    from tailor.compression.quantize import quantize

    for model in (load_model(deepseek_dir), load_model(deepseek_dir, for_training=True), load_any(deepseek_dir)[0]):
        assert _own_forwards(model) and runtime.installed(model) == []
    quantize(deepseek_dir, "int4-weight", tmp_path / "q4", group_size=16)
    assert runtime.installed(load_causal_lm(tmp_path / "q4")) == []


def test_nothing_is_installed_off_the_cpu(deepseek_dir):
    model = load_model(deepseek_dir)
    model.to("meta")  # the check reads where the weights are, as a GPU would answer
    assert runtime.enable(model) == [] and _own_forwards(model)


@pytest.fixture
def fresh_warning(monkeypatch):
    monkeypatch.setattr(guard, "_warned", False)


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == guard.__name__ and r.levelno == logging.WARNING]


def test_untested_transformers_installs_nothing_and_warns_once(deepseek_dir, monkeypatch, fresh_warning, caplog):
    real = guard.installed_version
    monkeypatch.setattr(guard, "installed_version", lambda lib: "5.99.0" if lib == "transformers" else real(lib))
    model, tok = load_any(deepseek_dir)
    plain = _greedy(model, tok)
    with caplog.at_level(logging.WARNING, logger=guard.__name__):
        assert runtime.enable(model) == [] and runtime.enable(load_model(deepseek_dir)) == []
    assert _own_forwards(model) and _greedy(model, tok) == plain
    (message,) = _warnings(caplog)  # exactly one, however often enable is called
    assert "transformers 5.99.0 (tested: >=5.23,<5.24)" in message and "decode_step" in message
    from tailor.runtime.packed_attention import use_packed_attention

    assert not use_packed_attention(model) and len(_warnings(caplog)) == 1


def test_a_missing_private_name_refuses_only_its_patch(deepseek_dir, monkeypatch, fresh_warning, caplog):
    import dataclasses

    from tailor.runtime import patches

    patch = next(p for p in patches.PATCHES if p.name == "routed_experts")
    assert patch.private_names == experts.PRIVATE_NAMES
    broken = dataclasses.replace(patch, private_names=patch.private_names + ("transformers.integrations.moe._gone",))
    monkeypatch.setattr(patches, "PATCHES", tuple(broken if p is patch else p for p in patches.PATCHES))
    model, tok = load_any(deepseek_dir)
    with caplog.at_level(logging.WARNING, logger=guard.__name__):
        assert runtime.enable(model) == ["decode_step"]
    assert "routed_experts (missing private names transformers.integrations.moe._gone)" in _warnings(caplog)[0]


def test_guard_ranges_are_pyprojects_ranges():
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    deps = {Requirement(d).name: Requirement(d).specifier
            for d in tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["dependencies"]}
    for lib, tested in guard.TESTED.items():
        assert deps[lib] == SpecifierSet(tested), lib
    assert guard.out_of_range(guard.TESTED) == []  # the installed versions are the tested ones
    for patch in runtime.PATCHES:
        assert set(patch.libraries) <= set(guard.TESTED) and guard.missing(patch.private_names) == []
