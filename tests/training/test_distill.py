import json
import math

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from tailor.cli import main
from tailor.config import load_recipe
from tailor.models.loading import load_model, load_tokenizer
from tailor.models.presets import init_model
from tailor.training.callbacks import read_metrics
from tailor.training.distill import distill_loss, drop_layers, kept_layers
from tailor.training.recipes.distill import distill as run


def recipe(tmp_path, teacher, data, *extra):
    return load_recipe(None, [f"distill.teacher={teacher}", f"data.train=[{data}]", f"train.output_dir={tmp_path / 'run'}",
                              "train.batch_size=4", "train.logging_steps=2", "train.save_steps=100", "data.max_length=48",
                              "adapter.method=full", *extra])


def test_kd_loss_equals_a_hand_computation():
    torch.manual_seed(0)
    s = torch.randn(1, 4, 5)
    t = torch.randn(1, 4, 5)
    labels = torch.tensor([[7, 2, -100, 4]])  # position 0 predicts label 2, position 2 predicts 4; position 1 is masked
    T, alpha = 2.0, 0.3
    kd = ce = 0.0
    for pos, target in ((0, 2), (2, 4)):
        p_t = [math.exp(x / T) for x in t[0, pos].tolist()]
        p_s = [math.exp(x / T) for x in s[0, pos].tolist()]
        p_t = [x / sum(p_t) for x in p_t]
        p_s = [x / sum(p_s) for x in p_s]
        kd += sum(a * math.log(a / b) for a, b in zip(p_t, p_s)) * T * T
        ce += -s[0, pos, target].item() + math.log(sum(math.exp(x) for x in s[0, pos].tolist()))
    out = distill_loss(s, t, labels, T, alpha)
    assert out["kd"].item() == pytest.approx(kd / 2, rel=1e-5)
    assert out["ce"].item() == pytest.approx(ce / 2, rel=1e-5)
    assert out["loss"].item() == pytest.approx(alpha * kd / 2 + (1 - alpha) * ce / 2, rel=1e-5)
    same = distill_loss(s, s.clone(), labels, T, alpha)
    assert same["kd"].item() == pytest.approx(0.0, abs=1e-6)
    # Summed form used under gradient accumulation: the Trainer's token count divides the sums.
    assert distill_loss(s, t, labels, T, alpha, denominator=4)["kd"].item() == pytest.approx(kd / 4, rel=1e-5)


def test_kept_layers_are_evenly_spaced():
    assert kept_layers(4, 2) == [0, 3]
    assert kept_layers(5, 3) == [0, 2, 4]
    assert kept_layers(4, 4) == [0, 1, 2, 3]
    assert kept_layers(3, 1) == [2]


def test_layer_dropped_deepseek_student_loads_with_plain_transformers(tmp_path, tokenizer):
    teacher = init_model("deepseek-v3-micro", tokenizer, seed=1, num_hidden_layers=4, first_k_dense_replace=2).eval()
    student = drop_layers(teacher, 2).eval()  # layers 0 (dense) and 3 (MoE)
    assert student.config.num_hidden_layers == 2 and student.config.first_k_dense_replace == 1
    t_state, s_state = teacher.state_dict(), student.state_dict()
    for name, w in s_state.items():
        src = name.replace("layers.1.", "layers.3.")
        assert torch.equal(w, t_state[src]), name
    student.save_pretrained(tmp_path / "s")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "s").eval()
    ids = torch.tensor([[1, 5, 9, 12, 3]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, student(ids).logits)
    assert sum(p.numel() for p in loaded.parameters()) < sum(p.numel() for p in teacher.parameters())


def _confident_teacher(tmp_path, llama_dir):
    # A random model predicts nearly uniform tokens; a scaled head gives it opinions worth distilling.
    teacher = load_model(llama_dir)
    with torch.no_grad():
        teacher.lm_head.weight.mul_(20)
    teacher.save_pretrained(tmp_path / "teacher")
    load_tokenizer(llama_dir).save_pretrained(tmp_path / "teacher")
    return tmp_path / "teacher"


def test_distillation_pulls_the_student_towards_the_teacher(tmp_path, llama_dir, chat_file):
    teacher = _confident_teacher(tmp_path, llama_dir)
    common = ["distill.student_layers=1", "train.max_steps=6", "train.lr=2e-3", "distill.temperature=1.0",
              "train.scheduler=constant", "train.warmup_ratio=0"]
    distilled = run(recipe(tmp_path / "kd", teacher, chat_file, *common, "distill.alpha=1.0"))
    hard = run(recipe(tmp_path / "ce", teacher, chat_file, *common, "distill.alpha=0.0"))
    kd, ce = distilled.metrics, hard.metrics
    assert kd["teacher_kl_before"] == ce["teacher_kl_before"] > 0.3
    assert kd["teacher_kl_after"] < 0.6 * kd["teacher_kl_before"]
    assert kd["teacher_kl_after"] < 0.2 * ce["teacher_kl_after"]  # hard labels alone move it away from the teacher
    rows = [r for r in read_metrics(tmp_path / "kd" / "run" / "metrics.jsonl") if "loss" in r]
    assert {"kd_loss", "ce_loss"} <= set(rows[0]) and rows[-1]["kd_loss"] < rows[0]["kd_loss"]
    student = AutoModelForCausalLM.from_pretrained(distilled.final_dir)
    assert student.config.num_hidden_layers == 1
    assert json.loads((tmp_path / "kd" / "run" / "train_summary.json").read_text())["teacher_kl_data"] == "train"


def test_preset_student_with_hidden_matching(tmp_path, llama_dir, chat_file):
    r = recipe(tmp_path, llama_dir, chat_file, "model.preset=deepseek-v3-micro", f"model.tokenizer={llama_dir}",
               "distill.hidden_weight=1.0", "train.max_steps=6", "train.lr=5e-3", "data.val_ratio=0.25",
               "train.save_steps=3")
    result = run(r)
    rows = [m for m in read_metrics(tmp_path / "run" / "metrics.jsonl") if "loss" in m]
    assert {"kd_loss", "ce_loss", "hidden_loss"} <= set(rows[0])
    assert rows[-1]["hidden_loss"] < rows[0]["hidden_loss"]
    saved = load_file(str(result.final_dir / "model.safetensors"))
    initial = load_file(str(tmp_path / "run" / "base" / "model.safetensors"))  # the preset as built, before training
    assert set(saved) == set(initial)  # the projection stays out of the student
    assert (tmp_path / "run" / "checkpoint-3" / "distill_projection.safetensors").is_file()  # but goes into checkpoints
    assert not list(result.final_dir.glob("distill_projection*"))
    assert not any("proj" in k and k.split(".")[0] not in ("model", "lm_head") for k in saved)
    assert result.metrics["teacher_kl_data"] == "validation"
    model = load_model(result.final_dir)
    assert model.config.model_type == "deepseek_v3"


def _cli(tmp_path, *overrides):
    path = tmp_path / "distill.yaml"
    path.write_text("train:\n  max_steps: 1\n", encoding="utf-8")
    return main(["distill", str(path), f"train.output_dir={tmp_path / 'run'}", *overrides])


def test_bad_distillation_inputs_exit_2(tmp_path, llama_dir, chat_file, capsys):
    from tailor.models.tokenizer import train_tokenizer

    data = f"data.train=[{chat_file}]"
    assert _cli(tmp_path, f"distill.teacher={tmp_path / 'missing'}", "distill.student_layers=1", data) == 2
    assert "teacher directory not found" in capsys.readouterr().err
    assert _cli(tmp_path, f"distill.teacher={llama_dir}", "distill.student_layers=5", data) == 2
    assert "distill.student_layers=5 but the teacher has 2" in capsys.readouterr().err
    assert _cli(tmp_path, f"distill.teacher={llama_dir}", "distill.student_layers=1", "distill.alpha=1.5", data) == 2
    assert "distill.alpha" in capsys.readouterr().err
    assert _cli(tmp_path, f"distill.teacher={llama_dir}", data) == 2
    assert "no student given" in capsys.readouterr().err
    other = train_tokenizer(["a small different corpus of words"] * 20, vocab_size=300, out_dir=tmp_path / "tok")
    assert len(other) != len(load_tokenizer(llama_dir))
    assert _cli(tmp_path, f"distill.teacher={llama_dir}", "model.preset=llama-micro", f"model.tokenizer={tmp_path / 'tok'}",
                "adapter.method=full", data) == 2
    assert "differs from the teacher's" in capsys.readouterr().err
    assert _cli(tmp_path, f"distill.teacher={llama_dir}", "model.preset=llama-micro", f"model.tokenizer={llama_dir}", data) == 2
    assert "adapter.method=full" in capsys.readouterr().err
