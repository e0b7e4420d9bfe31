"""`tailor quickstart domain=vision` end to end at toy size: data, model, contrastive, SFT, eval."""

from rich.console import Console

from tailor.config import QuickstartConfig
from tailor.quickstart.inspection_domain import DEFECTS, generate
from tailor.quickstart.vision import run, score


def test_generator_is_deterministic_and_holds_out_images_and_wordings(tmp_path):
    a, b = generate(tmp_path / "a", seed=3, train_images=10, eval_images=5), generate(tmp_path / "b", seed=3, train_images=10, eval_images=5)
    assert a.train == b.train and (tmp_path / "a" / "images" / "eval-0004.png").read_bytes() == \
        (tmp_path / "b" / "images" / "eval-0004.png").read_bytes()
    train_q = {m["content"].replace("<image>", "") for r in a.train for m in r["messages"] if m["role"] == "user"}
    assert not train_q & {r["messages"][0]["content"].replace("<image>", "") for r in a.eval}
    assert not {r["images"][0] for r in a.train} & {r["images"][0] for r in a.eval}
    assert {r["defect"] for r in a.eval} == set(DEFECTS)


def test_score_reads_yes_no_and_defect_names():
    rows = [{"kind": "defect", "defect": "dent", "lang": "en"}, {"kind": "defect", "defect": "none", "lang": "zh"},
            {"kind": "type", "defect": "scratch", "lang": "en"}, {"kind": "type", "defect": "missing", "lang": "zh"}]
    m = score(rows, ["Defective.", "不合格，有缺陷。", "It has a scratch.", "缺陷是变色。"])
    assert m["defect_accuracy"] == 0.5 and m["type_accuracy"] == 0.5 and m["n"] == 4



def test_score_counts_every_reference_answer_right():
    """The references themselves score 100% in both languages (the Chinese no-defect answer, 没有缺陷, was once scored
    against another wording, which capped Chinese defect-type accuracy at 80%)."""
    from tailor.quickstart.inspection_domain import answer

    rows = [{"kind": k, "defect": d, "lang": lang} for k in ("defect", "type") for d in DEFECTS for lang in ("en", "zh")]
    m = score(rows, [answer(r["lang"], r["kind"], r["defect"]) for r in rows])
    assert m["defect_accuracy"] == m["type_accuracy"] == m["type_accuracy/zh"] == 1.0


def test_vision_quickstart_runs_end_to_end(tmp_path):
    cfg = QuickstartConfig(out_dir=str(tmp_path / "qs"), domain="vision", vision_preset="deepseek-vl-micro",
                           vision_train_images=10, vision_eval_images=5, vision_contrastive_epochs=1, vision_sft_epochs=1,
                           pretrain_overrides=["train.max_steps=3"], sft_overrides=["train.max_steps=4",
                                                                                    "data.augment.image.rotation=20"])
    r = run(cfg, Console(width=120, record=True))
    assert r["tuned"]["n"] == 20 and 0 <= r["tuned"]["defect_accuracy"] <= 1
    assert r["sft"]["steps"] == 4 and r["contrastive"]["steps"] == 3  # the stages read the overrides (else 2 and 1)
    assert (tmp_path / "qs" / "eval_answers.jsonl").is_file()
