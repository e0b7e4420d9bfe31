"""The triton export in a real tritonserver, where one is given: TAILOR_TRITONSERVER=/path/to/tritonserver.

Skipped (and counted) without it; CI has no tritonserver. Optional: TAILOR_TRITON_BACKENDS (its --backend-directory)
and TAILOR_TRITON_PATH (put first on the server's PATH, so the python backend's stub finds a Python with numpy and
transformers). docs/stages/export.md#triton says how it was run on the development machine.
"""

import os
import shutil
import socket
import subprocess
import time

import numpy as np
import pytest
import torch

from tailor.export import run

SERVER = os.environ.get("TAILOR_TRITONSERVER")
pytestmark = pytest.mark.skipif(not SERVER, reason="no tritonserver (set TAILOR_TRITONSERVER to run the triton export in one)")
TEXTS = ["How long can I return a laptop?", "笔记本电脑可以退货多久？"]
PYTHON_MODELS = ["tailor_preprocess", "tailor_postprocess", "tailor_generate"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(llama_dir, tmp_path_factory):
    """tritonserver on the exported repository; every model is asked for, those its backends can load are READY."""
    import httpx

    tmp = tmp_path_factory.mktemp("tritonserver")
    repo = run(llama_dir, "triton", tmp / "repo", exporter="torchscript")
    http = _port()
    cmd = [shutil.which(SERVER) or SERVER, f"--model-repository={repo}", "--model-control-mode=explicit",
           f"--http-port={http}", f"--grpc-port={_port()}", f"--metrics-port={_port()}"]
    cmd += [f"--load-model={m}" for m in ["tailor_onnx", "tailor", *PYTHON_MODELS]]
    if os.environ.get("TAILOR_TRITON_BACKENDS"):
        cmd.append(f"--backend-directory={os.environ['TAILOR_TRITON_BACKENDS']}")
    env = dict(os.environ)
    if os.environ.get("TAILOR_TRITON_PATH"):
        env["PATH"] = os.environ["TAILOR_TRITON_PATH"] + os.pathsep + env.get("PATH", "")
        env.pop("VIRTUAL_ENV", None)
    log = tmp / "tritonserver.log"
    # --exit-on-error=false: a model whose backend is missing (no onnxruntime in a python-only build) stays
    # UNAVAILABLE instead of stopping the server, so the python models are still tested.
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd + ["--exit-on-error=false"], stdout=f, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{http}"
    try:
        t0 = time.monotonic()
        while True:
            assert proc.poll() is None, "tritonserver exited:\n" + log.read_text(errors="replace")[-4000:]
            try:
                if httpx.get(base + "/v2/health/live", timeout=1).status_code == 200 and all(
                        httpx.get(f"{base}/v2/models/{m}/ready", timeout=1).status_code == 200 for m in PYTHON_MODELS):
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() - t0 < 240, "tritonserver's python models did not get ready:\n" + log.read_text(errors="replace")[-4000:]
            time.sleep(0.5)
        ready = {m for m in ["tailor_onnx", "tailor"] if httpx.get(f"{base}/v2/models/{m}/ready", timeout=5).status_code == 200}
        yield {"url": base, "ready": ready, "log": log}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _infer(server, model, inputs) -> dict:
    import httpx

    r = httpx.post(f"{server['url']}/v2/models/{model}/infer", json={"inputs": inputs}, timeout=120)
    assert r.status_code == 200, r.text
    return {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in r.json()["outputs"]}


def _text(rows):
    return [{"name": "TEXT", "shape": [len(rows), 1], "datatype": "BYTES", "data": rows}]


def _chat_ids(tok, text):
    return list(tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True,
                                        return_dict=False))


def test_python_models_in_tritonserver(server, llama_dir):
    from tailor.models.loading import load_tokenizer

    tok = load_tokenizer(llama_dir)
    out = _infer(server, "tailor_preprocess", _text(TEXTS))
    ids = [_chat_ids(tok, t) for t in TEXTS]
    width = max(map(len, ids))
    assert out["input_ids"].shape == (2, width) and out["past_key_values.0.key"].shape[2] == 0
    for row, mask, p in zip(out["input_ids"], out["attention_mask"], ids):
        assert row[width - len(p):].tolist() == p and mask.sum() == len(p)
    vocab = len(tok)
    logits = np.zeros((2, 3, vocab), dtype=np.float32)
    logits[0, -1, 7] = logits[1, -1, 11] = 5.0
    nxt = _infer(server, "tailor_postprocess", [{"name": "logits", "shape": list(logits.shape), "datatype": "FP32",
                                                "data": logits.ravel().tolist()}])
    assert nxt["NEXT_TOKEN_ID"][:, 0].tolist() == [7, 11]
    assert nxt["NEXT_TOKEN"][:, 0].tolist() == [tok.decode([7]), tok.decode([11])]


def test_ensemble_and_generator_in_tritonserver(server, llama_dir):
    if "tailor_onnx" not in server["ready"]:
        pytest.skip("this tritonserver could not load tailor_onnx (no onnxruntime backend?); see " + str(server["log"]))
    from tailor.models.loading import load_model, load_tokenizer

    tok, model = load_tokenizer(llama_dir), load_model(llama_dir, dtype="float32", device="cpu")
    ids = [_chat_ids(tok, t) for t in TEXTS]
    with torch.no_grad():
        expected_next = [int(model(torch.tensor([p])).logits[0, -1].argmax()) for p in ids]
        expected_text = [tok.decode(model.generate(torch.tensor([p]), max_new_tokens=10, do_sample=False,
                                                   eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                                                   temperature=None, top_p=None, top_k=None)[0, len(p):].tolist(),
                                    skip_special_tokens=True) for p in ids]
    assert "tailor" in server["ready"]
    assert _infer(server, "tailor", _text(TEXTS))["NEXT_TOKEN_ID"][:, 0].tolist() == expected_next
    limit = [{"name": "MAX_TOKENS", "shape": [2, 1], "datatype": "INT32", "data": [10, 10]}]
    got = _infer(server, "tailor_generate", _text(TEXTS) + limit)["GENERATED"][:, 0].tolist()
    assert got == expected_text
