"""Knowledge distillation: a student trained on the hard labels and a frozen teacher's soft targets.

    tailor distill recipe.yaml          # distill.teacher, and distill.student_layers or model.path / model.preset

The recipe reads top to bottom: check the settings, load the teacher, let it answer distill.prompts (sequence-
level KD: its answers join the training data), start the run, build the student (the teacher with fewer layers,
or model.path / model.preset with the teacher's vocabulary), then the causal-LM recipe's data and phases with a
DistillTrainer (KL to the teacher + cross-entropy [+ hidden-state MSE]). The loss, the trainer and the student
construction are in tailor.training.distill.
"""

from __future__ import annotations

from pathlib import Path

from tailor.config import Recipe
from tailor.errors import TailorError
from tailor.training import distill_prompts, phases
from tailor.training.checkpoints import latest_checkpoint
from tailor.training.distill import DistillTrainer, check_same_vocab, drop_layers, kept_layers, load_teacher
from tailor.training.phases import TrainResult
from tailor.training.recipes.lm import lm_data


def distill(recipe: Recipe, callbacks: list | None = None) -> TrainResult:
    """Distill distill.teacher into the student; writes what `tailor train` writes, plus teacher KL before/after
    (and with distill.prompts the teacher's answers and their report) in train_summary.json."""
    t, d = recipe.train, recipe.distill
    check_recipe(recipe)
    teacher, teacher_tokenizer = load_teacher(d.teacher, recipe.model.dtype, recipe.model.trust_remote_code)
    if d.student_layers:
        kept_layers(teacher.config.num_hidden_layers, d.student_layers)  # fail before the run folder is made
    out = Path(t.output_dir)
    refused = out.is_dir() and latest_checkpoint(out, verify=False) and not t.resume  # phases.start says why
    if d.prompts and not refused:
        answers = distill_prompts.teacher_answer_file(recipe, teacher, teacher_tokenizer, out)
        recipe = recipe.model_copy(deep=True)
        recipe.data.train = [*recipe.data.train, str(answers)]  # config.yaml records the generated file
    prompts_report = distill_prompts.summary(out) if d.prompts else {}
    run = phases.start(recipe)
    student, tokenizer, base_dir = load_student(recipe, run, teacher, teacher_tokenizer)
    data = lm_data(recipe, tokenizer, student)
    student, parameters = phases.prepare_model(recipe, student)
    trainer = phases.build_trainer(DistillTrainer, recipe, run, student, tokenizer, data, callbacks, teacher=teacher,
                                   temperature=d.temperature, alpha=d.alpha, hidden_weight=d.hidden_weight,
                                   extra_summary=prompts_report)
    fitted = phases.fit(trainer, recipe, run, data)
    return phases.finish(trainer, recipe, run, data, tokenizer, base_dir, parameters, fitted)


def load_student(recipe: Recipe, run: phases.Run, teacher, teacher_tokenizer):
    """(student, tokenizer, base_dir): the teacher with distill.student_layers evenly spaced layers (saved as
    out/base, where LoRA adapters point), or model.path / model.preset checked to share the teacher's vocabulary."""
    from tailor.data.templates import set_chat_template
    from tailor.models.loading import resolve_dtype

    d = recipe.distill
    if not d.student_layers:
        student, tokenizer, base_dir = phases.load_causal_lm(recipe, run.out)
        check_same_vocab(teacher, teacher_tokenizer, student, tokenizer)
        return student, tokenizer, base_dir
    tokenizer = teacher_tokenizer
    set_chat_template(tokenizer, recipe.data.chat_template)
    student = drop_layers(teacher, d.student_layers)
    student = student.to(resolve_dtype(recipe.model.dtype, run.device, for_training=True))
    base_dir = run.out / "base"
    student.save_pretrained(base_dir, safe_serialization=True)
    tokenizer.save_pretrained(base_dir)
    student.train()
    return student, tokenizer, base_dir


def check_recipe(recipe: Recipe) -> None:
    """Settings a distillation cannot use are refused before the teacher loads."""
    d, m = recipe.distill, recipe.model
    if recipe.train.objective == "classification":
        raise TailorError("train.objective=classification trains its own head and loss; distillation trains a causal "
                          "LM on the teacher's soft targets", where="train.objective",
                          fix="use train.objective=sft or pretrain here")
    if not d.teacher:
        raise TailorError("no teacher given", where="distill.teacher", fix="set distill.teacher=DIR (a model or adapter directory)")
    if d.student_layers and (m.path or m.preset):
        raise TailorError("the student is given twice: distill.student_layers and model.path/model.preset",
                          where="distill.student_layers", fix="keep one: a layer-dropped teacher, or a preset / checkpoint")
    if not (d.student_layers or m.path or m.preset):
        raise TailorError("no student given", where="distill.student_layers / model.preset / model.path",
                          fix="set distill.student_layers=N (drop teacher layers) or model.preset (+ model.tokenizer = the teacher)")
    if recipe.train.label_smoothing:
        raise TailorError("train.label_smoothing does not apply to distillation (its loss is the KL + hard-label mix)",
                          where="train.label_smoothing", fix="set train.label_smoothing=0; soften with distill.temperature")
    if m.preset and recipe.adapter.method not in ("full", "freeze"):
        raise TailorError("a student built from a preset starts from random weights; an adapter would train only small "
                          "adapters on top of them", where="adapter.method", fix="set adapter.method=full")
