"""safetensors export: a plain-transformers directory, adapters merged, same greedy tokens."""

import json
import subprocess
import sys

import torch

from tailor.export import run
from tests.export.conftest import NEW_TOKENS, TEXTS, prompt_ids, torch_greedy


def _lora_adapter(base_dir, out_dir):
    """A LoRA adapter whose B matrices are non-zero, so merging visibly changes the model."""
    from peft import LoraConfig, get_peft_model

    from tailor.models.loading import load_model, load_tokenizer

    model = load_model(base_dir, dtype="float32", device="cpu")
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    peft_model = get_peft_model(model, cfg)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.3)
    peft_model.save_pretrained(out_dir)
    load_tokenizer(base_dir).save_pretrained(out_dir)
    return peft_model.eval()


# Run in a fresh interpreter so nothing from tailor is imported: the directory must stand alone.
_PLAIN = """
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
d, texts, n = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
tok = AutoTokenizer.from_pretrained(d)
model = AutoModelForCausalLM.from_pretrained(d).eval()
out = {"ids": [], "new": []}
for t in texts:
    ids = tok(t).input_ids
    seq = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                         max_new_tokens=n, do_sample=False)
    out["ids"].append(ids)
    out["new"].append(seq[0, len(ids):].tolist())
out["chat"] = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                      tokenize=False)
out["tailor_imported"] = any(m == "tailor" or m.startswith("tailor.") for m in sys.modules)
print(json.dumps(out))
"""


def test_adapter_dir_merges_and_loads_in_plain_transformers(llama_dir, tmp_path, tokenizer):
    adapter = tmp_path / "adapter"
    peft_model = _lora_adapter(llama_dir, adapter)
    out = run(adapter, "safetensors", tmp_path / "hf")

    assert (out / "model.safetensors").is_file() and not list(out.glob("adapter_*"))
    gen = json.loads((out / "generation_config.json").read_text())
    assert (gen["eos_token_id"], gen["pad_token_id"], gen["bos_token_id"]) == (
        tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.bos_token_id)
    assert json.loads((out / "export.json").read_text())["dtype"] == "float32"

    res = subprocess.run([sys.executable, "-c", _PLAIN, str(out), json.dumps(TEXTS), str(NEW_TOKENS)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    plain = json.loads(res.stdout.strip().splitlines()[-1])
    assert not plain["tailor_imported"]
    assert plain["ids"] == [tokenizer(t).input_ids for t in TEXTS]
    assert plain["chat"] == tokenizer.apply_chat_template([{"role": "user", "content": "hi"}],
                                                          add_generation_prompt=True, tokenize=False)
    # The merged export decodes exactly like the unmerged adapter on its base.
    prompts = prompt_ids(tokenizer)[: len(TEXTS)]
    expected = torch_greedy(peft_model, prompts, eos=tokenizer.eos_token_id, pad=tokenizer.pad_token_id)
    trimmed = [n[: n.index(tokenizer.eos_token_id) + 1] if tokenizer.eos_token_id in n else n for n in plain["new"]]
    assert trimmed == expected
    # and differs from the base model, so the adapter really was merged
    from tailor.models.loading import load_model

    base = torch_greedy(load_model(llama_dir, dtype="float32", device="cpu"), prompts, tokenizer.eos_token_id,
                        tokenizer.pad_token_id)
    assert base != expected


def test_bf16_checkpoint_stays_bf16(qwen2_dir, tmp_path):
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    src = tmp_path / "bf16"
    AutoModelForCausalLM.from_pretrained(qwen2_dir, dtype=torch.bfloat16).save_pretrained(src)
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (src / f).write_bytes((qwen2_dir / f).read_bytes())
    out = run(src, "safetensors", tmp_path / "hf")
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
