"""VQA scoring and `tailor eval` on a vision-language model: answers scored, a report with thumbnails."""

import json

from PIL import Image

from tailor.evaluation.run import run
from tailor.evaluation.vision import vqa_metrics
from tailor.models.loading import load_tokenizer
from tailor.models.vision import init_vision_model


def test_vqa_metrics_exact_normalized_contains_and_labels():
    refs = ["Dent.", "dent", "划痕", "划痕", "Dent."]
    answers = ["Dent.", "DENT!", "是划痕。", "凹痕", "a dent"]
    m = vqa_metrics(answers, refs)
    assert m["exact"] == 0.2 and m["normalized"] == 0.4 and m["contains"] == 0.8 and m["n"] == 5
    assert "label_accuracy" not in m  # "dent" appears once: not a label set
    m = vqa_metrics(["yes", "no", "yes it is", "yes"], ["yes", "no", "yes", "no"])
    assert m["label_accuracy"] == 0.75 and 0 < m["label_macro_f1"] < 1


def test_tailor_eval_on_a_vision_model_writes_scores_and_thumbnails(tmp_path, tokenizer_dir):
    init_vision_model("deepseek-vl-micro", load_tokenizer(tokenizer_dir), out_dir=tmp_path / "vlm")
    (tmp_path / "img").mkdir()
    rows = []
    for i, color in enumerate([(200, 0, 0), (0, 0, 200), (0, 200, 0)]):
        Image.new("RGB", (30, 30), color).save(tmp_path / "img" / f"{i}.png")
        rows.append({"messages": [{"role": "user", "content": "<image>Color?"}, {"role": "assistant", "content": "red"}],
                     "images": [f"img/{i}.png"]})
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    result = run(tmp_path / "vlm", [str(tmp_path / "eval.jsonl")], out_dir=tmp_path / "out")
    assert result.task == "vqa" and result.metrics["n"] == 3 and 0 <= result.metrics["contains"] <= 1
    report = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert report.count('<img src="data:image/png;base64,') == 3 and "Color?" in report
    assert len((tmp_path / "out" / "examples.jsonl").read_text().splitlines()) == 3
