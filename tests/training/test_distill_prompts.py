"""Sequence-level distillation: the teacher answers distill.prompts, the answers join the student's training data."""

import json

import yaml

from tailor.cli import main
from tailor.config import load_recipe
from tailor.models.loading import load_model, load_tokenizer
from tailor.training.recipes.distill import distill as run
from tailor.training.distill_prompts import ANSWERS_FILE, REPORT_FILE, load_prompts, teacher_answer_file

from tests.conftest import write_jsonl

LABELED = [{"messages": [{"role": "user", "content": "How long can I return a laptop?"},
                         {"role": "assistant", "content": "Laptops can be returned within 30 days."}]}] * 4
EVAL = [{"messages": [{"role": "user", "content": "Can I still return my tent?"},
                      {"role": "assistant", "content": "Tents can be returned within 60 days."}], "answer": "60 days"}]


def _teacher(tmp_path, llama_dir):
    # A random model never chooses to stop; forcing end-of-sequence at the length limit gives short whole answers.
    teacher = load_model(llama_dir)
    teacher.generation_config.forced_eos_token_id = teacher.generation_config.eos_token_id
    teacher.save_pretrained(tmp_path / "teacher")
    load_tokenizer(llama_dir).save_pretrained(tmp_path / "teacher")
    return tmp_path / "teacher"


def _prompt_files(tmp_path):
    chats = write_jsonl(tmp_path / "prompts.jsonl", [
        {"messages": [{"role": "user", "content": "What about tents?"}]},                       # kept
        {"messages": [{"role": "user", "content": "Shipping north?"},
                      {"role": "assistant", "content": "a stale human answer, replaced"}]},     # kept, answer dropped
        {"messages": [{"role": "user", "content": "can I  still return my TENT?"}]},            # an eval question
        {"messages": [{"role": "user", "content": "How long can I return a laptop?"}]},         # already labeled
        {"messages": [{"role": "user", "content": "What about tents?"}]},                       # duplicate
        {"prompt": "Do you ship abroad?"},                                                      # kept
        {"instruction": "Describe the warranty."},                                              # kept (alpaca)
        {"conversations": [{"from": "human", "value": "Is the tent waterproof?"}]},             # kept (sharegpt)
    ])
    text = tmp_path / "questions.txt"
    text.write_text("Where is my order?\n\nHow do I pay?\n", encoding="utf-8")  # 2 kept, the blank line is no row
    return chats, text


def _recipe(tmp_path, teacher, *extra):
    labeled = write_jsonl(tmp_path / "labeled.jsonl", LABELED)
    evals = write_jsonl(tmp_path / "eval.jsonl", EVAL)
    chats, text = _prompt_files(tmp_path)
    return load_recipe(None, [f"distill.teacher={teacher}", f"data.train=[{labeled}]", f"eval.data=[{evals}]",
                              f"distill.prompts=[{chats},{text}]", "distill.generate_max_new_tokens=6",
                              f"train.output_dir={tmp_path / 'run'}", "train.batch_size=4", "train.max_steps=2",
                              "train.save_steps=100", "data.max_length=64", "adapter.method=full",
                              "distill.student_layers=1", "data.val_ratio=0", *extra])


def test_prompts_are_filtered_and_counted(tmp_path, llama_dir):
    prompts, counts = load_prompts(_recipe(tmp_path, llama_dir))
    assert [p[-1]["content"] for p in prompts] == ["What about tents?", "Shipping north?", "Do you ship abroad?",
                                                   "Describe the warranty.", "Is the tent waterproof?",
                                                   "Where is my order?", "How do I pay?"]
    assert all(p[-1]["role"] == "user" for p in prompts)
    assert counts["read"] == 10 and counts["kept"] == 7
    assert counts["skipped"] == {"question is in the evaluation data (data.eval / eval.data)": 1,
                                 "question already answered in data.train": 1, "duplicate prompt": 1}


def test_teacher_answers_join_the_training_data(tmp_path, llama_dir):
    teacher = _teacher(tmp_path, llama_dir)
    result = run(_recipe(tmp_path, teacher, "distill.alpha=0.5"))
    out = tmp_path / "run"
    report = json.loads((out / REPORT_FILE).read_text())
    rows = [json.loads(line) for line in (out / ANSWERS_FILE).read_text().splitlines()]
    assert report["answered"] == 7 and report["kept"] == len(rows)
    assert report["kept"] + sum(report["answers_skipped"].values()) == 7  # nothing dropped without a reason
    assert rows, report
    for row in rows:
        assert row["messages"][-1]["role"] == "assistant" and row["messages"][-1]["content"]
        assert "stale human answer" not in json.dumps(row)
    # The student trained on the labeled chats plus the teacher's answers, and the run says so.
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["data_report"]["kept"] == len(LABELED) + len(rows)
    assert summary["teacher_answers"]["kept"] == len(rows)
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["data"]["train"][-1] == str(out / ANSWERS_FILE)
    assert result.final_dir.is_dir()


def test_answers_are_reused_until_an_input_changes(tmp_path, llama_dir):
    teacher = _teacher(tmp_path, llama_dir)
    recipe = _recipe(tmp_path, teacher)
    model, tok = load_model(teacher), load_tokenizer(teacher)
    out = tmp_path / "answers"
    path = teacher_answer_file(recipe, model, tok, out)
    first = json.loads((out / REPORT_FILE).read_text())
    path.write_text(path.read_text() + "\n")  # a marker: regeneration would overwrite the file
    teacher_answer_file(recipe, model, tok, out)
    assert path.read_text().endswith("\n\n")
    changed = recipe.model_copy(deep=True)
    changed.distill.generate_max_new_tokens = 5
    teacher_answer_file(changed, model, tok, out)
    assert not path.read_text().endswith("\n\n")
    assert json.loads((out / REPORT_FILE).read_text())["fingerprint"] != first["fingerprint"]


def _cli(tmp_path, teacher, *overrides):
    labeled = write_jsonl(tmp_path / "labeled.jsonl", LABELED)
    evals = write_jsonl(tmp_path / "eval.jsonl", EVAL)
    path = tmp_path / "distill.yaml"
    path.write_text("adapter:\n  method: full\n", encoding="utf-8")
    return main(["distill", str(path), f"distill.teacher={teacher}", "distill.student_layers=1", f"data.train=[{labeled}]",
                 f"eval.data=[{evals}]", f"train.output_dir={tmp_path / 'run'}", "train.max_steps=1", *overrides])


def test_bad_prompt_inputs_exit_2(tmp_path, llama_dir, capsys, text_file):
    assert _cli(tmp_path, llama_dir, f"distill.prompts=[{tmp_path / 'missing.jsonl'}]") == 2
    assert "prompts file not found" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    assert _cli(tmp_path, llama_dir, f"distill.prompts=[{empty}]") == 2
    assert "no usable prompts" in capsys.readouterr().err
    only_eval = write_jsonl(tmp_path / "only_eval.jsonl", [{"messages": EVAL[0]["messages"][:1]}] * 2)
    assert _cli(tmp_path, llama_dir, f"distill.prompts=[{only_eval}]") == 2
    err = capsys.readouterr().err
    assert "no usable prompts" in err and "2x question is in the evaluation data" in err
    assert _cli(tmp_path, llama_dir, f"distill.prompts=[{only_eval}]", "train.objective=pretrain",
                f"data.train=[{text_file}]") == 2
    assert "needs train.objective=sft" in capsys.readouterr().err
    assert _cli(tmp_path, llama_dir, f"distill.prompts=[{only_eval}]", "distill.generate_max_new_tokens=0") == 2
    assert "generate_max_new_tokens" in capsys.readouterr().err
    assert not (tmp_path / "run" / ANSWERS_FILE).exists()


def test_distillation_in_the_pretraining_stage(tmp_path, llama_dir, text_file):
    """objective=pretrain: packed raw text, the KL term over every token (no chat masking)."""
    from tailor.training.callbacks import read_metrics

    recipe = load_recipe(None, [f"distill.teacher={llama_dir}", "distill.student_layers=1", "train.objective=pretrain",
                                f"data.train=[{text_file}]", f"train.output_dir={tmp_path / 'run'}", "train.batch_size=2",
                                "train.max_steps=3", "train.logging_steps=1", "data.max_length=32", "data.val_ratio=0",
                                "adapter.method=full", "distill.alpha=0.5"])
    result = run(recipe)
    rows = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "loss" in r]
    assert rows and all(r["kd_loss"] > 0 and r["ce_loss"] > 0 for r in rows)
    assert result.metrics["teacher_kl_after"] >= 0
