"""Training telemetry: tokens/s, loss-bearing tokens/s, MFU, peak memory in metrics.jsonl, TensorBoard and the summary;
a Prometheus endpoint scraped while the run trains; the rich progress bar; clear errors for a bad metrics port."""

import io
import os
import socket
import urllib.request
from types import SimpleNamespace

import pytest
from transformers import TrainerCallback

from tailor.cli import main
from tailor.config import load_recipe
from tailor.errors import TailorError
from tailor.training.callbacks import read_metrics
from tailor.training import train as run


def recipe(tmp_path, model_dir, data, *extra):
    return load_recipe(None, [f"model.path={model_dir}", f"data.train=[{data}]", f"train.output_dir={tmp_path / 'run'}",
                              "train.batch_size=4", "train.grad_accum=2", "train.max_steps=4", "train.logging_steps=1",
                              "train.save_steps=100", "data.max_length=48", "adapter.r=4", *extra])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Scrape(TrainerCallback):
    """Fetches the Prometheus endpoint in the middle of training (after step 2's optimizer step)."""

    def __init__(self, port):
        self.url, self.text = f"http://127.0.0.1:{port}/metrics", None

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == 2:
            self.text = urllib.request.urlopen(self.url, timeout=5).read().decode()


def sample(text: str, name: str) -> float:
    line = next(line for line in text.splitlines() if line.startswith(name + " ") or line.startswith(name + "{"))
    return float(line.rsplit(" ", 1)[1])


def test_sft_metrics_rows_summary_and_prometheus_scrape(tmp_path, llama_dir, chat_file, tokenizer):
    port = free_port()
    scrape = Scrape(port)
    r = recipe(tmp_path, llama_dir, chat_file, f"train.metrics_port={port}")
    result = run(r, callbacks=[scrape])

    rows = [m for m in read_metrics(tmp_path / "run" / "metrics.jsonl") if "loss" in m]
    assert len(rows) == 4
    for m in rows:
        assert {"tokens_per_second", "loss_bearing_tokens_per_second", "mfu", "peak_memory_mb", "grad_norm",
                "learning_rate"} <= set(m)
        # SFT: prompts and padding carry no loss, so strictly fewer loss-bearing tokens than input tokens.
        assert 0 < m["loss_bearing_tokens_per_second"] < m["tokens_per_second"]
        assert 0 < m["mfu"] < 1.5 and m["peak_memory_mb"] > 50

    # Exact counts: 4 steps x 2 micro-batches x 4 rows = 32 rows = the 16 training rows twice (an epoch per 2 steps).
    from tailor.data.training_data import build_training_data

    train_ds, _, _ = build_training_data(r, tokenizer)
    assert len(train_ds) == 16
    lb_once = sum(sum(1 for x in row["labels"][1:] if x != -100) for row in train_ds)
    tokens_once = sum(len(row["input_ids"]) for row in train_ds)
    assert sum(m["loss_bearing_tokens"] for m in rows) == 2 * lb_once == result.metrics["loss_bearing_tokens"]
    assert result.metrics["tokens_seen"] == 2 * tokens_once
    s = result.metrics
    assert 0 < s["loss_bearing_tokens_per_second"] < s["tokens_per_second"]
    assert 0 < s["mfu"] < 1.5 and s["matmul_peak_flops"] > 1e8 and s["peak_memory_mb"] > 50

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(next((tmp_path / "run" / "tensorboard").rglob("events.out.tfevents*"))))
    acc.Reload()
    assert {"train/mfu", "train/loss_bearing_tokens_per_second", "train/peak_memory_mb"} <= set(acc.Tags()["scalars"])

    # Mid-run scrape: gauges hold step 1's log event, counters what steps 1 trained on.
    text = scrape.text
    assert text is not None
    assert sample(text, "tailor_train_loss") == pytest.approx(rows[0]["loss"])
    assert sample(text, "tailor_train_mfu") == pytest.approx(rows[0]["mfu"])
    assert sample(text, "tailor_train_step") == 2 and sample(text, "tailor_train_max_steps") == 4
    assert sample(text, "tailor_train_tokens_total") == rows[0]["num_input_tokens_seen"]
    assert sample(text, "tailor_train_loss_bearing_tokens_total") == rows[0]["loss_bearing_tokens"]
    with pytest.raises(OSError):  # the endpoint is gone once training ended
        urllib.request.urlopen(scrape.url, timeout=2)


def test_pretraining_counts_every_shifted_token(tmp_path, llama_dir, text_file):
    """Packed pretraining without padding: every token but the first of each row bears loss."""
    r = recipe(tmp_path, llama_dir, text_file, "train.objective=pretrain", "adapter.method=full", "train.max_steps=2",
               "train.grad_accum=1", "data.max_length=32", "train.mfu_probe_seconds=0")
    result = run(r)
    rows = [m for m in read_metrics(tmp_path / "run" / "metrics.jsonl") if "loss" in m]
    for m in rows:
        assert m["loss_bearing_tokens_per_second"] <= m["tokens_per_second"]
        assert "mfu" not in m  # the probe was switched off, so no MFU is claimed
    assert result.metrics["loss_bearing_tokens"] == result.metrics["tokens_seen"] - 2 * 4  # 2 steps x 4 rows


def test_rich_progress_bar_with_eta():
    from rich.console import Console

    from tailor.training.telemetry import RichProgress

    buf = io.StringIO()
    cb = RichProgress("sft", console=Console(file=buf, force_terminal=True, width=160))
    state = SimpleNamespace(is_world_process_zero=True, max_steps=4, global_step=0)
    cb.on_train_begin(None, state, None)
    for step in range(1, 5):
        state.global_step = step
        cb.on_step_end(None, state, None)
        cb.on_log(None, state, None, logs={"loss": 2.5, "tokens_per_second": 1000.0, "mfu": 0.123})
    cb.on_log(None, state, None, logs={"eval_loss": 2.0})
    cb.on_train_end(None, state, None)
    out = buf.getvalue()
    assert "4/4" in out and "eta" in out and "MFU 12.3%" in out and "1000 tok/s" in out and "eval loss 2.0000" in out


def test_a_terminal_gets_the_rich_bar(tmp_path, llama_dir, chat_file, monkeypatch, capsys):
    monkeypatch.setattr(os, "isatty", lambda fd: True)
    run(recipe(tmp_path, llama_dir, chat_file, "train.max_steps=2", "train.grad_accum=1", "train.mfu_probe_seconds=0"))
    err = capsys.readouterr().err
    assert "2/2" in err and "eta" in err and "tok/s" in err


def test_metrics_port_errors(tmp_path, llama_dir, chat_file, capsys, monkeypatch):
    with pytest.raises(TailorError, match="metrics_port"):
        load_recipe(None, ["train.metrics_port=70000"])
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        r = recipe(tmp_path, llama_dir, chat_file, f"train.metrics_port={port}")
        yaml_path = tmp_path / "r.yaml"
        from tailor.config import save_recipe

        save_recipe(r, yaml_path)
        assert main(["train", str(yaml_path)]) == 2
        err = capsys.readouterr().err
        assert f"127.0.0.1:{port}" in err and "free port" in err and "Traceback" not in err
    finally:
        busy.close()
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # refused before any step

    import sys

    from tailor.training.telemetry import PrometheusExporter

    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if the serve extra were not installed
    with pytest.raises(TailorError, match="prometheus-client"):
        PrometheusExporter(free_port())


@pytest.mark.auto_device
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_run_reports_allocated_peak_and_mfu(tmp_path, llama_dir, chat_file):
    result = run(recipe(tmp_path, llama_dir, chat_file, "train.device=cuda", "train.max_steps=2"))
    s = result.metrics
    assert s["peak_memory_source"] == "cuda_max_memory_allocated" and s["peak_memory_mb"] > 0
    assert 0 < s["mfu"] < 1.5 and 0 < s["loss_bearing_tokens_per_second"] < s["tokens_per_second"]


def test_mfu_probe_leaves_the_seeded_rng_alone(tmp_path, llama_dir, chat_file, monkeypatch):
    """The matmul probe runs after the Trainer seeds torch; it must not consume the global RNG, or the first run
    in a process (which pays the probe; later ones reuse the cached peak) would get other dropout masks."""
    import torch
    from safetensors.torch import load_file

    from tailor.training import telemetry

    monkeypatch.setattr(telemetry, "_PEAKS", {}, raising=False)  # no peak cached from an earlier test
    finals = []
    for name in ("first", "second"):
        r = run(recipe(tmp_path / name, llama_dir, chat_file, "train.dropout=0.2", "train.mfu_probe_seconds=0.05",
                       "adapter.method=full"))
        finals.append(load_file(str(r.final_dir / "model.safetensors")))
    assert finals[0].keys() == finals[1].keys()
    assert all(torch.equal(finals[0][k], finals[1][k]) for k in finals[0])


def test_metrics_host_is_the_address_the_endpoint_listens_on(tmp_path, llama_dir, chat_file):
    """train.metrics_host: the exporter binds there (127.0.0.2 is loopback too on Linux), not on 127.0.0.1."""
    port = free_port()
    scrape = Scrape(port)
    scrape.url = f"http://127.0.0.2:{port}/metrics"
    run(recipe(tmp_path, llama_dir, chat_file, f"train.metrics_port={port}", "train.metrics_host=127.0.0.2"),
        callbacks=[scrape])
    assert scrape.text and "tailor_train_" in scrape.text
    with pytest.raises(OSError):  # nothing listened on the default address
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_mfu_keeps_significant_digits_of_tiny_values():
    """A tiny model on a large GPU reaches an MFU near 1e-5: four decimals would report it as 0 (seen on an H100)."""
    from tailor.training.telemetry import _significant

    assert _significant(1.234567e-5) == pytest.approx(1.235e-5) and _significant(0.61234) == 0.6123
