"""`tailor report`: a self-contained HTML page and a Markdown summary for training, eval, compare and quickstart folders."""

import base64
import io
import json
import re
import shutil
import subprocess
from types import SimpleNamespace

import pytest

from tailor.cli import main
from tailor.errors import TailorError
from tailor.evaluation.report import discover, worst_examples, write_report
from tests.conftest import write_jsonl

PNG = b"\x89PNG\r\n\x1a\n"
EVIL = "<script>alert('x')</script> & <b>bold</b>"


def png_images(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def assert_valid_pngs(images: list[bytes]):
    from matplotlib.image import imread

    for data in images:
        assert data[:8] == PNG
        pixels = imread(io.BytesIO(data), format="png")
        assert pixels.ndim == 3 and pixels.shape[0] > 50 and pixels.shape[1] > 50


def assert_well_formed(page: str):
    """Every opened element is closed in order (a stand-in for a browser where none is installed)."""
    from html.parser import HTMLParser

    class Check(HTMLParser):
        stack, errors = [], []

        def handle_starttag(self, tag, attrs):
            if tag not in ("meta", "img", "br"):
                self.stack.append(tag)

        def handle_endtag(self, tag):
            if self.stack and self.stack[-1] == tag:
                self.stack.pop()
            else:
                self.errors.append(tag)

    c = Check()
    c.feed(page)
    assert c.stack == [] and c.errors == []


def training_log(path, steps=20):
    """metrics.jsonl as the JsonlMetrics callback writes it: the callback itself fed fake Trainer log events."""
    from tailor.training.callbacks import JsonlMetrics

    cb = JsonlMetrics(path)
    state = SimpleNamespace(is_world_process_zero=True, global_step=0, epoch=0.0, num_input_tokens_seen=0)
    cb.on_train_begin(None, state, None)
    for step in range(1, steps + 1):
        state.global_step, state.epoch, state.num_input_tokens_seen = step, step / steps, 512 * step
        cb.on_log(None, state, None, logs={"loss": 3.0 / step, "learning_rate": 1e-3 * (1 - step / steps), "grad_norm": 1.0 + step % 3})
        if step % 5 == 0:
            cb.on_log(None, state, None, logs={"eval_loss": 3.5 / step})


def eval_dir(d, n=12):
    examples = []
    for i in range(n):
        examples.append({"prompt": EVIL if i == 3 else f"question {i}", "reference": f"the answer is {i} days",
                         "prediction": "" if i == 3 else f"it is {i} days" + " more words" * (i % 4),
                         "fact_accuracy": float(i % 3 != 0), "token_f1": round(i / n, 3), "empty": float(i == 3),
                         "lang": "en" if i % 2 else "zh"})
    write_jsonl(d / "examples.jsonl", examples)
    metrics = {"n": n, "fact_accuracy": sum(e["fact_accuracy"] for e in examples) / n, "fact_accuracy/en": 0.5, "fact_accuracy/zh": 0.833,
               "token_f1": sum(e["token_f1"] for e in examples) / n,
               "answer_perplexity": 12.5, "confusion_matrix": {"labels": ["yes", "no"], "matrix": [[5, 1], [2, 4]]},
               "per_class_f1": {"yes": 0.77, "no": 0.72}}
    (d / "eval_results.json").write_text(json.dumps(metrics))
    return d


@pytest.fixture
def train_run(tmp_path):
    run = tmp_path / "train-run"
    training_log(run / "metrics.jsonl")
    (run / "train_summary.json").write_text(json.dumps({"train_loss": 0.9, "steps": 20, "tokens_per_second": 812.5,
                                                         "data_report": {"read": 40, "kept": 38, "skipped": {"empty": 2}}}))
    (run / "checkpoint-10").mkdir()
    write_jsonl(run / "checkpoint-10" / "metrics.jsonl", [{"step": 1, "loss": 1.0}])  # checkpoints are not runs
    eval_dir(run / "eval")
    return run


def test_training_dir_with_eval_subfolder(train_run):
    path = write_report(train_run)
    assert path == train_run / "report.html"
    page = path.read_text()
    for heading in ("training: train-run", "evaluation: eval", "Training curves", "Per language / group",
                    "Confusion matrix", "Answer lengths", "Worst examples (lowest fact_accuracy)", "per_class_f1"):
        assert heading in page, heading
    assert "checkpoint-10" not in page
    # self-contained: no scripts, stylesheets or images fetched from anywhere
    assert "<script" not in page and "<link" not in page and not re.search(r'src="(?!data:image/png;base64,)', page)
    assert_well_formed(page)
    images = png_images(page)
    assert len(images) == 3  # curves, confusion matrix, length histogram
    assert_valid_pngs(images)
    # the injected example text is shown as text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in page
    # tokens/s comes from the callback's own computation on the logged token counts
    assert "tokens_per_second" in page

    md = path.with_suffix(".md").read_text()
    assert "## training: train-run" in md and "## evaluation: eval" in md
    assert "| metric | value |" in md and "| fact_accuracy | 0.6667 |" in md
    assert "| metric | all | en | zh |" in md and "| fact_accuracy | 0.6667 | 0.5 | 0.833 |" in md
    assert "Worst examples" in md and "<script>" not in md and "&lt;script>alert" in md
    assert "| data_report.read | 40 |" in md


def test_worst_examples_rank_lowest_scores_first(tmp_path):
    examples = [{"prediction": "a", "fact_accuracy": 1.0, "token_f1": 0.9}, {"prediction": "b", "fact_accuracy": 0.0, "token_f1": 0.8},
                {"prediction": "c", "fact_accuracy": 0.0, "token_f1": 0.1}, {"prediction": "d", "token_f1": 0.0}]
    key, worst = worst_examples(examples, n=3)
    assert key == "fact_accuracy" and [i for i, _ in worst] == [2, 1, 0]  # ties by token F1; no score sorts last
    key, worst = worst_examples([{"answer_nll": 1.0}, {"answer_nll": 4.0}, {"answer_nll": 2.0}], n=2)
    assert key == "answer_nll" and [i for i, _ in worst] == [1, 2]  # lower is better: the highest are worst


def test_saved_confusion_png_is_embedded(tmp_path):
    from matplotlib.figure import Figure

    d = eval_dir(tmp_path / "ev")
    fig = Figure(figsize=(2, 2))
    fig.add_subplot(1, 1, 1).imshow([[1, 0], [0, 1]])
    fig.savefig(d / "confusion_matrix.png")
    page = write_report(d, tmp_path / "out" / "r.html").read_text()
    assert (tmp_path / "out" / "r.md").is_file()
    assert base64.b64encode((d / "confusion_matrix.png").read_bytes()).decode() in page
    assert page.count("<h3>Confusion matrix</h3>") == 1  # the saved image wins over redrawing the key


def test_compare_dir_report(tmp_path):
    from tailor.evaluation.compare import run

    a, b = eval_dir(tmp_path / "a"), eval_dir(tmp_path / "b")
    rows = [json.loads(x) for x in (b / "examples.jsonl").read_text().splitlines()]
    for r in rows[:6]:
        r["fact_accuracy"], r["prediction"] = 1.0, r["prediction"] + " fixed"
    write_jsonl(b / "examples.jsonl", rows)
    metrics = json.loads((b / "eval_results.json").read_text())
    (b / "eval_results.json").write_text(json.dumps({**metrics, "fact_accuracy": 10 / 12, "answer_perplexity": 9.0}))
    res = run(a, b, out_dir=tmp_path / "cmp", requirements=["fact_accuracy>=+0.1", "token_f1>=0.9"], resamples=500)
    page = res.report.read_text()
    for text in ("comparison: cmp", "Per-example scores (paired bootstrap 95% CI of B − A)", "B wins", "Gate",
                 "Where they differ most", "Corpus metrics", "FAIL", "pass"):
        assert text in page, text
    assert_well_formed(page)
    assert_valid_pngs(png_images(page))
    row = next(r for r in res.result["scores"] if r["name"] == "fact_accuracy")
    md = res.report.with_suffix(".md").read_text()
    assert f"| fact_accuracy | higher | 12 | 0.6667 | 0.8333 | +0.1667 | [{row['ci_low']:+.4g}, {row['ci_high']:+.4g}] | 2 | 10 | 0 |" in md
    assert "| fact_accuracy>=+0.1 | 0.1667 | pass |" in md and "| token_f1>=0.9 | 0.4583 | FAIL |" in md


def test_quickstart_layout_sections_in_order(tmp_path):
    qs = tmp_path / "quickstart"
    (qs / "data").mkdir(parents=True)
    (qs / "quickstart_results.json").write_text(json.dumps({
        "base": {"fact_accuracy": 0.1, "answer_perplexity": 40.0, "n": 12}, "tuned": {"fact_accuracy": 0.9, "answer_perplexity": 2.0, "n": 12},
        "seconds": {"data": 0.1, "pretrain": 12.0}, "parameters": 123456, "example_question": EVIL}))
    for stage in ("pretrain", "sft"):
        training_log(qs / stage / "metrics.jsonl", steps=6)
        (qs / stage / "tensorboard").mkdir()
    eval_dir(qs / "eval" / "base")
    eval_dir(qs / "eval" / "tuned")
    assert [(k, p.relative_to(qs).as_posix()) for k, p in discover(qs)] == [
        ("quickstart", "."), ("train", "pretrain"), ("train", "sft"), ("eval", "eval/base"), ("eval", "eval/tuned")]
    page = write_report(qs).read_text()
    titles = re.findall(r"<h2>(.*?)</h2>", page)
    assert titles == ["quickstart: quickstart", "training: pretrain", "training: sft", "evaluation: eval/base", "evaluation: eval/tuned"]
    assert "stage 2: + LoRA SFT" in page and "123,456" in page and "<script>alert" not in page


def test_damaged_log_lines_are_counted(tmp_path):
    run = tmp_path / "r"
    training_log(run / "metrics.jsonl", steps=4)
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 5, "loss": 0.')  # a run killed mid-write
    page = write_report(run).read_text()
    assert "4 log rows in metrics.jsonl; 1 unreadable lines skipped" in page


def test_nothing_to_report_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(TailorError, match="nothing to report"):
        write_report(tmp_path / "empty")
    assert main(["report", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "nothing to report" in err and "Traceback" not in err
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "eval_results.json").write_text("{not json")
    with pytest.raises(TailorError, match="invalid JSON"):
        write_report(bad)


def test_cli_report(train_run, tmp_path, capsys):
    assert main(["report", str(train_run), "--out", str(tmp_path / "r" / "page.html")]) == 0
    out = capsys.readouterr().out
    assert "page.html" in out and "fact_accuracy" in out
    assert (tmp_path / "r" / "page.html").is_file() and (tmp_path / "r" / "page.md").is_file()


CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (Debian package `chromium`) on this machine")
def test_page_renders_in_headless_chromium(train_run, tmp_path):
    page = write_report(train_run)
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1280,2000", page.resolve().as_uri()], check=True, timeout=120, capture_output=True)
    assert shot.read_bytes()[:8] == PNG and shot.stat().st_size > 10_000
