"""Greedy generation with ONNX Runtime over a graph from `export_onnx` (KV cache in and out)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tailor.errors import TailorError


def load_session(onnx_dir: str | Path, threads: int | None = None):
    """An onnxruntime CPU session for OUT/model.onnx written by `export_onnx`."""
    import onnxruntime as ort

    path = Path(onnx_dir) / "model.onnx"
    if not path.is_file():
        raise TailorError(f"no model.onnx in {onnx_dir}", where=str(onnx_dir), fix="run `tailor export MODEL --format onnx --out DIR` first")
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _empty_cache(session, batch: int) -> dict[str, np.ndarray]:
    cache = {}
    for inp in session.get_inputs():
        if inp.name.startswith("past_key_values."):
            # Shape is (batch, heads, past, dim) with heads and dim fixed in the graph.
            _, heads, _, dim = inp.shape
            cache[inp.name] = np.zeros((batch, heads, 0, dim), dtype=np.float32)
    return cache


def greedy(session, prompts: list[list[int]], max_new_tokens: int, eos_token_id: int | list[int] | None,
           pad_token_id: int = 0) -> list[list[int]]:
    """Greedy continuation of each prompt (token ids), left-padded into one batch.

    Returns the new tokens of each prompt, up to and including its first eos (one id or a list). Positions are counted
    from each row's first real token, as transformers' `generate` does for left-padded batches.
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise TailorError("every prompt needs at least one token", where="onnx_runtime.greedy(prompts=...)")
    batch, width = len(prompts), max(len(p) for p in prompts)
    ids = np.full((batch, width), pad_token_id, dtype=np.int64)
    mask = np.zeros((batch, width), dtype=np.int64)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = p
        mask[i, width - len(p):] = 1
    positions = np.clip(mask.cumsum(-1) - 1, 0, None)
    feeds = {"input_ids": ids, "attention_mask": mask, "position_ids": positions, **_empty_cache(session, batch)}
    past_names = [n for n in feeds if n.startswith("past_key_values.")]
    present = [n.replace("past_key_values.", "present.") for n in past_names]
    out_names = ["logits"] + present
    stops = set() if eos_token_id is None else set(eos_token_id if isinstance(eos_token_id, list) else [eos_token_id])
    new: list[list[int]] = [[] for _ in range(batch)]
    done = np.zeros(batch, dtype=bool)
    for _ in range(max_new_tokens):
        logits, *cache = session.run(out_names, feeds)
        nxt = logits[:, -1, :].argmax(-1)
        for i in range(batch):
            if not done[i]:
                new[i].append(int(nxt[i]))
                done[i] = int(nxt[i]) in stops
        if done.all():
            break
        nxt = np.where(done, pad_token_id, nxt)
        mask = np.concatenate([mask, np.ones((batch, 1), dtype=np.int64)], axis=1)
        feeds = {"input_ids": nxt[:, None].astype(np.int64), "attention_mask": mask,
                 "position_ids": positions[:, -1:] + 1, **dict(zip(past_names, cache))}
        positions = feeds["position_ids"]
    return new


def generate_text(onnx_dir: str | Path, prompts: list[str], max_new_tokens: int = 64) -> list[str]:
    """Answer plain-text prompts with an exported ONNX model directory (its own tokenizer, greedy)."""
    from tailor.models.loading import load_tokenizer

    onnx_dir = Path(onnx_dir)
    tokenizer = load_tokenizer(onnx_dir)
    gen = json.loads((onnx_dir / "generation_config.json").read_text(encoding="utf-8"))
    session = load_session(onnx_dir)
    ids = [tokenizer(p).input_ids for p in prompts]
    out = greedy(session, ids, max_new_tokens, gen.get("eos_token_id"), gen.get("pad_token_id") or 0)
    return [tokenizer.decode(o, skip_special_tokens=True) for o in out]
