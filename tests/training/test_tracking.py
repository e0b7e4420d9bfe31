"""train.report_to: a real MLflow store (read back with MLflow's own client), W&B offline files, TensorBoard off."""

import json
import sys

import pytest

from tailor.config import load_recipe
from tailor.errors import TailorError
from tailor.training import train as run
from tailor.training.callbacks import read_metrics


def _recipe(tmp_path, model_dir, data, *extra):
    return load_recipe(None, [f"model.path={model_dir}", f"data.train=[{data}]", f"train.output_dir={tmp_path / 'runs' / 'sft-a'}",
                              "train.batch_size=4", "train.logging_steps=2", "train.save_steps=100", "data.max_length=48",
                              "train.max_steps=6", "adapter.method=lora", "adapter.r=4", *extra])


def test_mlflow_and_wandb_receive_params_metrics_recipe_and_final_artefacts(tmp_path, llama_dir, chat_file, monkeypatch):
    pytest.importorskip("mlflow")
    pytest.importorskip("wandb")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    result = run(_recipe(tmp_path, llama_dir, chat_file, "train.report_to=[mlflow,wandb]", "train.lr=3e-3",
                         "train.experiment=support-bot"))
    out = tmp_path / "runs" / "sft-a"
    assert not (out / "tensorboard").exists()  # not asked for
    ids = json.loads((out / "tracking.json").read_text())

    # MLflow: the default store is a SQLite file beside the run folder; read it back with MLflow's client.
    assert (tmp_path / "runs" / "mlflow.db").is_file()
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("support-bot")
    (r,) = client.search_runs([exp.experiment_id])
    assert r.info.run_id == ids["mlflow_run_id"] and r.info.status == "FINISHED" and r.info.run_name == "sft-a"
    assert r.data.params["train.lr"] == "0.003" and r.data.params["adapter.method"] == "lora"
    assert r.data.params["data.max_length"] == "48"
    logged = [m for m in read_metrics(out / "metrics.jsonl") if "loss" in m]
    history = client.get_metric_history(r.info.run_id, "loss")
    assert [(h.step, round(h.value, 6)) for h in history] == [(m["step"], round(m["loss"], 6)) for m in logged]
    assert r.data.metrics["final/train_loss"] == pytest.approx(result.metrics["train_loss"])
    arts = {a.path for a in client.list_artifacts(r.info.run_id, "recipe")} | \
        {a.path for a in client.list_artifacts(r.info.run_id, "run")} | {a.path for a in client.list_artifacts(r.info.run_id, "final")}
    assert {"recipe/config.yaml", "run/train_summary.json", "run/metrics.jsonl", "final/adapter_config.json",
            "final/adapter_model.safetensors"} <= arts
    local = client.download_artifacts(r.info.run_id, "recipe/config.yaml", str(tmp_path / "dl"))
    assert load_recipe(local) == load_recipe(out / "config.yaml")

    # W&B offline: the run's file under OUTPUT_DIR/wandb, read back record by record with W&B's own protobufs.
    run_file = next((out / "wandb").glob(f"offline-run-*-{ids['wandb_run_id']}/*.wandb"))
    recs = _wandb_records(run_file)
    (header,) = [r.run for r in recs if r.WhichOneof("record_type") == "run"]
    config = {i.key: json.loads(i.value_json) for i in header.config.update}
    assert config["train"]["lr"] == 0.003 and header.project == "support-bot"
    summary = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for r in recs
               if r.WhichOneof("record_type") == "summary" for i in r.summary.update}
    assert summary["final/train_loss"] == pytest.approx(result.metrics["train_loss"])
    steps = [{i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item} for r in recs
             if r.WhichOneof("record_type") == "history"]
    assert [(h["_step"], round(h["loss"], 6)) for h in steps if "loss" in h] == [(m["step"], round(m["loss"], 6)) for m in logged]
    arts = {r.artifact.name: {m.path for m in r.artifact.manifest.contents} for r in recs if r.WhichOneof("record_type") == "artifact"}
    assert arts["sft-a-recipe"] == {"config.yaml"}
    assert {"final/adapter_model.safetensors", "run/train_summary.json", "run/metrics.jsonl"} <= arts["sft-a-final"]


def _wandb_records(path):
    """The records of a W&B offline run file (LevelDB log format: 32 KiB blocks, 7-byte headers) as protobufs."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, buf, out = path.read_bytes(), 7, b"", []
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        buf += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            rec = pb.Record()
            rec.ParseFromString(buf)
            out.append(rec)
            buf = b""
    return out


def test_a_tracking_uri_is_used_and_a_missing_package_is_a_clear_error(tmp_path, llama_dir, chat_file, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    monkeypatch.chdir(tmp_path)  # a named sqlite store keeps MLflow's default artefact root, ./mlruns
    run(_recipe(tmp_path, llama_dir, chat_file, "train.report_to=mlflow", f"train.tracking_uri={uri}",
                "train.tracking_log_model=false", "train.run_name=try-1", "train.max_steps=2"))
    client = MlflowClient(tracking_uri=uri)
    (r,) = client.search_runs([client.get_experiment_by_name("tailor").experiment_id])
    assert r.info.run_name == "try-1" and not client.list_artifacts(r.info.run_id, "final")
    assert r.data.tags["tailor.final_dir"].endswith("final")
    assert not (tmp_path / "runs" / "mlflow.db").exists() and (tmp_path / "mlruns").is_dir()

    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    with pytest.raises(TailorError, match=r"report_to=wandb needs the wandb package") as e:
        run(_recipe(tmp_path, llama_dir, chat_file, "train.report_to=wandb", "train.max_steps=1",
                    f"train.output_dir={tmp_path / 'b'}"))
    assert ".[track]" in e.value.fix
