"""ONNX export: KV-cache graph run by ONNX Runtime gives PyTorch's greedy tokens."""

import json

import numpy as np
import pytest

from tailor.export import onnx as onnx_export
from tailor.export import run
from tailor.export.onnx_runtime import greedy, load_session


def _check_parity(out, reference, model_dir):
    prompts, expected, tok, _ = reference(model_dir)
    session = load_session(out)
    names = [i.name for i in session.get_inputs()]
    assert names[:3] == ["input_ids", "attention_mask", "position_ids"] and "past_key_values.1.value" in names
    assert session.get_inputs()[0].shape == ["batch", "seq"]
    # All prompts in one left-padded batch (dynamic batch and sequence axes), decoded with the cache.
    got = greedy(session, prompts, max_new_tokens=10, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    assert got == expected
    assert sum(len(g) for g in got) > 2 * len(prompts)  # not all stopped at once: the cache path ran


def test_llama_dynamo(llama_dir, tmp_path, reference):
    out = run(llama_dir, "onnx", tmp_path / "onnx", exporter="dynamo")
    assert json.loads((out / "export.json").read_text())["exporter"] == "dynamo"
    _check_parity(out, reference, llama_dir)


def test_qwen2_auto_falls_back_to_torchscript_exporter(qwen2_dir, tmp_path, reference, monkeypatch):
    real = onnx_export._export

    def dynamo_fails(wrapper, args, path, n_layers, exporter, opset):
        if exporter == "dynamo":
            path.write_bytes(b"partial")  # a failed attempt's leftovers must not survive
            raise RuntimeError("simulated torch.export failure")
        return real(wrapper, args, path, n_layers, exporter, opset)

    monkeypatch.setattr(onnx_export, "_export", dynamo_fails)
    out = run(qwen2_dir, "onnx", tmp_path / "onnx", exporter="auto")
    assert json.loads((out / "export.json").read_text())["exporter"] == "torchscript"
    _check_parity(out, reference, qwen2_dir)


def test_deepseek_v3_torchscript_exporter(deepseek_dir, tmp_path, reference):
    out = run(deepseek_dir, "onnx", tmp_path / "onnx", exporter="torchscript")
    _check_parity(out, reference, deepseek_dir)


def test_cache_step_matches_full_forward(llama_dir, tmp_path, reference):
    """Logits of prefill + one cached step equal one forward over the whole sequence (batch 2, padded)."""
    import torch

    out = run(llama_dir, "onnx", tmp_path / "onnx", exporter="torchscript")
    _, _, _, model = reference(llama_dir)
    s = load_session(out)
    ids = np.array([[5, 6, 7, 8, 9], [2, 2, 40, 41, 42]], dtype=np.int64)
    mask = np.array([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]], dtype=np.int64)
    pos = np.clip(mask.cumsum(-1) - 1, 0, None)
    past = {i.name: np.zeros((2, i.shape[1], 0, i.shape[3]), np.float32) for i in s.get_inputs() if i.name.startswith("past")}
    outs = [o.name for o in s.get_outputs()]
    first = dict(zip(outs, s.run(None, {"input_ids": ids[:, :4], "attention_mask": mask[:, :4], "position_ids": pos[:, :4], **past})))
    cache = {k.replace("present.", "past_key_values."): v for k, v in first.items() if k.startswith("present.")}
    step = s.run(["logits"], {"input_ids": ids[:, 4:], "attention_mask": mask, "position_ids": pos[:, 4:], **cache})[0]
    with torch.no_grad():
        full = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), position_ids=torch.tensor(pos)).logits
    np.testing.assert_allclose(step[:, 0], full[:, 4].numpy(), atol=1e-4)
    np.testing.assert_allclose(first["logits"][0], full[0, :4].numpy(), atol=1e-4)
