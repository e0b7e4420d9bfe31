"""Preference optimization (dpo, orpo, kto, simpo) and GRPO at toy size: each objective trains through `tailor train`'s
recipe path, logs its own metrics into metrics.jsonl, and bad input is a clear error or a counted skip."""

import json
from pathlib import Path

import pytest

from tailor.config import Recipe
from tailor.errors import TailorError
from tailor.training import train
from tests.conftest import write_jsonl

# A trivially separable set: the chosen answer always says the fact, the rejected one a made-up one.
PAIRS = [
    {"prompt": "How long can I return a laptop?", "chosen": "Laptops can be returned within 30 days.",
     "rejected": "The store opens at 9 am."},
    {"prompt": "What about tents?", "chosen": "Tents can be returned within 60 days.",
     "rejected": "Shipping north takes 3 days."},
    {"prompt": "笔记本电脑可以退货多久？", "chosen": "笔记本电脑的退货期限是30天。", "rejected": "帐篷可以在60天内退货。"},
    {"prompt": "Shipping north?", "chosen": "3 to 5 business days.", "rejected": "Hello! How can I help you today?"},
]


def read_metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]


def recipe(model_dir, data, out, objective, adapter="lora", steps=4, data_settings=None, **sections) -> Recipe:
    return Recipe.model_validate({
        "model": {"path": str(model_dir)},
        "data": {"train": [str(data)], "max_length": 64, "val_ratio": 0.0, **(data_settings or {})},
        "adapter": {"method": adapter, "r": 4, "alpha": 8},
        "train": {"objective": objective, "output_dir": str(out), "max_steps": steps, "batch_size": 4, "lr": 5e-3,
                  "logging_steps": 1, "save_steps": 100, "warmup_ratio": 0.0, "seed": 0},
        **sections,
    })


@pytest.fixture
def pairs_file(tmp_path):
    return write_jsonl(tmp_path / "pairs.jsonl", PAIRS * 2)


@pytest.mark.parametrize("objective,adapter", [("dpo", "lora"), ("dpo", "full"), ("orpo", "lora"), ("simpo", "lora")])
def test_pairwise_objectives_learn_the_separable_pairs(tmp_path, llama_dir, pairs_file, objective, adapter):
    out = tmp_path / "run"
    result = train(recipe(llama_dir, pairs_file, out, objective, adapter, steps=6,
                          preference={"beta": 0.5}))
    logs = [m for m in read_metrics(out) if "loss" in m and "rewards/margins" in m]
    assert len(logs) == 6
    losses = [m["loss"] for m in logs]
    assert all(x == x and abs(x) < 1e4 for x in losses) and losses[-1] < losses[0]  # finite, and it learned
    assert {"rewards/chosen", "rewards/rejected", "rewards/accuracies"} <= logs[-1].keys()
    # chosen pulled above rejected, more than at the start
    assert logs[-1]["rewards/margins"] > max(0.0, logs[0]["rewards/margins"]) and logs[-1]["rewards/accuracies"] >= 0.75
    assert (result.final_dir / ("adapter_config.json" if adapter == "lora" else "model.safetensors")).is_file()
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["rows"]["train"] == 8 and summary["last_rewards_margins"] > 0


def test_dpo_reference_is_the_base_with_the_adapter_disabled(tmp_path, llama_dir, pairs_file):
    from transformers import TrainerCallback

    adapters = []

    class Adapters(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kw):
            adapters.append(sorted(model.peft_config))

    out = tmp_path / "run"
    train(recipe(llama_dir, pairs_file, out, "dpo", steps=2), callbacks=[Adapters()])
    assert adapters == [["default"], ["default"]]  # no second ("ref") adapter copy is kept
    first = next(m for m in read_metrics(out) if "rewards/chosen" in m)
    # Before the first update the policy (base + fresh adapter) and the reference (base) agree exactly.
    assert first["rewards/chosen"] == 0.0 and first["rewards/rejected"] == 0.0


def test_kto_trains_on_labelled_answers_and_logs_kl(tmp_path, llama_dir):
    rows = [{"messages": [{"role": "user", "content": p["prompt"]}, {"role": "assistant", "content": p[k]}],
             "label": k == "chosen"} for p in PAIRS for k in ("chosen", "rejected")]
    data = write_jsonl(tmp_path / "kto.jsonl", rows)
    out = tmp_path / "run"
    train(recipe(llama_dir, data, out, "kto", steps=4))
    logs = [m for m in read_metrics(out) if "loss" in m and "kl" in m]
    assert len(logs) == 4 and all(m["loss"] == m["loss"] for m in logs)
    assert len({m["loss"] for m in logs}) > 1  # the loss changes as it trains


def test_one_conversation_gives_the_same_tokens_in_sft_and_preference_rows(tokenizer):
    from tailor.data.alignment import kto_rows, preference_rows
    from tailor.data.loading import LoadReport
    from tailor.data.templates import encode_conversation

    prompt = [{"role": "system", "content": "You are a support agent."}, {"role": "user", "content": "Tents?"}]
    sft = encode_conversation(tokenizer, [*prompt, {"role": "assistant", "content": "60 days."}], None)
    rec = {"prompt": prompt, "chosen": "60 days.", "rejected": "30 days.", "where": "x:1"}
    row = preference_rows([rec], tokenizer, 64, LoadReport())[0]
    assert row["prompt_ids"] + row["chosen_ids"] == sft["input_ids"]
    assert row["chosen_ids"] == [t for t, lab in zip(sft["input_ids"], sft["labels"]) if lab != -100]
    kto = kto_rows([{"prompt": prompt, "completion": "60 days.", "label": True}], tokenizer, 64, LoadReport())[0]
    assert kto["prompt_ids"] + kto["completion_ids"] == sft["input_ids"]


def test_bad_preference_rows_are_counted_not_trained(tmp_path, llama_dir):
    rows = PAIRS * 2 + [{"prompt": "Tents?", "chosen": "60 days.", "rejected": "60 days."},
                        {"prompt": "Tents?", "chosen": "", "rejected": "60 days."}]
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "run"
    train(recipe(llama_dir, data, out, "dpo", steps=1, data_settings={"on_error": "skip"}))
    summary = json.loads((out / "train_summary.json").read_text())
    skipped = summary["data_report"]["skipped"]
    assert summary["rows"]["train"] == 8
    assert any("identical chosen and rejected" in r for r in skipped) and any("empty 'chosen'" in r for r in skipped)


def test_identical_pair_stops_the_run_with_its_line(tmp_path, llama_dir):
    data = write_jsonl(tmp_path / "pairs.jsonl", [*PAIRS, {"prompt": "Tents?", "chosen": "60 days.", "rejected": "60 days."}])
    with pytest.raises(TailorError, match="identical chosen and rejected") as e:
        train(recipe(llama_dir, data, tmp_path / "run", "dpo", steps=1))
    assert "pairs.jsonl:5" in str(e.value)


# GRPO

SUMS = [{"prompt": f"What is {a} plus {b}?", "answer": str(a + b)} for a, b in ((2, 3), (4, 1), (6, 2), (1, 1))]


def grpo_recipe(model_dir, data, out, rewards, steps=2, **grpo):
    return recipe(model_dir, data, out, "grpo", steps=steps,
                  grpo={"num_generations": 4, "max_completion_length": 8, "rewards": rewards, **grpo})


def test_grpo_logs_each_reward_kl_and_length(tmp_path, llama_dir):
    data = write_jsonl(tmp_path / "sums.jsonl", SUMS)
    reward_file = tmp_path / "my_reward.py"
    reward_file.write_text("def reward(prompts, completions, references, bonus=0.0):\n"
                           "    return [len(c) / 100 + bonus for c in completions]\n")
    out = tmp_path / "run"
    train(grpo_recipe(llama_dir, data, out, [{"name": "numeric", "weight": 2.0}, {"name": "format"},
                                             {"file": str(reward_file), "options": {"bonus": 1.0}}]))
    logs = [m for m in read_metrics(out) if "loss" in m]
    assert len(logs) == 2
    last = logs[-1]
    for key in ("rewards/numeric/mean", "rewards/numeric/std", "rewards/format/mean", "rewards/my_reward.reward/mean",
                "reward", "reward_std", "kl", "completions/mean_length"):
        assert key in last, key
    assert last["rewards/my_reward.reward/mean"] >= 1.0  # the file's function ran, with its options
    assert all(m["loss"] == m["loss"] for m in logs)


def test_grpo_reward_that_raises_stops_the_run_naming_it(tmp_path, llama_dir):
    data = write_jsonl(tmp_path / "sums.jsonl", SUMS)
    reward_file = tmp_path / "broken.py"
    reward_file.write_text("def reward(prompts, completions, references):\n    raise KeyError('oops')\n")
    with pytest.raises(TailorError, match=r"reward 'broken.reward' raised KeyError"):
        train(grpo_recipe(llama_dir, data, tmp_path / "run", [{"file": str(reward_file)}], steps=1))


def test_grpo_row_without_reference_is_an_error_or_a_counted_skip(tmp_path, llama_dir):
    data = write_jsonl(tmp_path / "sums.jsonl", [*SUMS, {"prompt": "What is 9 plus 9?"}])
    with pytest.raises(TailorError, match="no reference answer") as e:
        train(grpo_recipe(llama_dir, data, tmp_path / "a", [{"name": "numeric"}], steps=1))
    assert "sums.jsonl:5" in str(e.value)
    out = tmp_path / "b"
    train(grpo_recipe(llama_dir, data, out, [{"name": "numeric"}], steps=1, missing_reference="skip"))
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["rows"]["train"] == 4
    assert summary["data_report"]["skipped"] == {"no reference answer (grpo.missing_reference=skip)": 1}


def test_grpo_batch_must_hold_whole_groups_and_vllm_needs_cuda(tmp_path, llama_dir):
    data = write_jsonl(tmp_path / "sums.jsonl", SUMS)
    with pytest.raises(TailorError, match="not a multiple of grpo.num_generations=3"):
        train(grpo_recipe(llama_dir, data, tmp_path / "run", [{"name": "numeric"}], num_generations=3))
    with pytest.raises(TailorError, match="grpo.use_vllm needs a CUDA GPU and the vllm package"):
        train(grpo_recipe(llama_dir, data, tmp_path / "run", [{"name": "numeric"}], use_vllm=True))


SHARED = Path(__file__).resolve().parents[3] / "shared" / "datasets"


@pytest.mark.skipif(not (SHARED / "more" / "dataset_info.json").is_file(), reason="../shared/datasets is not here")
@pytest.mark.parametrize("registry,name,objective", [("", "dpo_en_demo", "dpo"), ("more", "dpo_zh_demo", "dpo"),
                                                     ("more", "kto_en_demo", "kto")])
def test_llama_factory_preference_datasets_train_as_is(tmp_path, deepseek_dir, registry, name, objective):
    r = Recipe.model_validate({
        "model": {"path": str(deepseek_dir)},
        "data": {"sources": [{"registry": str(SHARED / registry), "name": name, "max_rows": 24}], "max_length": 96},
        "adapter": {"method": "lora", "r": 4, "alpha": 8},
        "train": {"objective": objective, "output_dir": str(tmp_path / "run"), "max_steps": 2, "batch_size": 2,
                  "logging_steps": 1, "save_steps": 100, "seed": 0}})
    train(r)
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    logs = [m for m in read_metrics(tmp_path / "run") if "loss" in m]
    assert len(logs) == 2 and all(m["loss"] == m["loss"] for m in logs)
    assert summary["rows"]["train"] > 0 and summary["data_report"]["read"] == 24
