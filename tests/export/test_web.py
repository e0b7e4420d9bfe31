"""`tailor export --format web`: the static page answers in headless Chromium with PyTorch's greedy tokens, offline.

The folder is served by `python -m http.server` and driven with Playwright through Debian's Chromium (the
`browser` fixture of tests/conftest.py, shared with tests/e2e). Every request the page makes is recorded: all must go to that server.
"""

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tailor.cli import main
from tailor.errors import TailorError
from tailor.export import run, web_runtime

from tests.conftest import copy_without_chat_template

NEW_TOKENS = 24
# English and Chinese, one with a system turn; the last two are one conversation asked in the page in turn.
CHATS = [
    [{"role": "user", "content": "How long can I return a laptop?"}],
    [{"role": "user", "content": "笔记本电脑可以退货多久？"}],
    [{"role": "system", "content": "You are a support agent."}, {"role": "user", "content": "Shipping north?"}],
]
FOLLOW_UP = ["What about tents?", "发往北部地区需要几天？"]


def _runtime_available() -> None:
    cached = all((web_runtime.cache_dir() / p.tarball).is_file() for p in web_runtime.PACKAGES)
    if not cached and shutil.which("npm") is None:
        pytest.skip("npm is not installed and the web runtime is not cached (apt-get install nodejs npm; .ci/run does)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Site:
    """`python -m http.server` serving an exported folder."""

    def __init__(self, folder: Path):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.proc = subprocess.Popen([sys.executable, "-m", "http.server", "-d", str(folder), "-b", "127.0.0.1",
                                      str(self.port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        end = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.url + "web.json", timeout=2)
                return
            except OSError:
                if time.monotonic() > end or self.proc.poll() is not None:
                    raise RuntimeError("http.server did not start")
                time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def open_page(browser, folder: Path):
    """(page, site, requests): the page loaded and ready; requests lists every URL it asked for."""
    site = Site(folder)
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(60_000)
    requests, errors = [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    # Anything not from the local server is refused, so a page that needs the network fails here.
    context.route("**/*", lambda route: route.continue_() if route.request.url.startswith(site.url) else route.abort())
    page.goto(site.url)
    page.wait_for_selector("#status[data-ready], #status.error")
    assert page.get_attribute("#status", "data-ready") == "1", page.inner_text("#status") + " " + " ".join(errors)
    return page, site, requests


def ask(page, question: str) -> dict:
    """Type a question in the page, send it, wait for the answer; its text, token ids and the page's timings."""
    count = page.locator(".assistant[data-done]").count()
    page.fill("#prompt", question)
    page.press("#prompt", "Enter")
    page.wait_for_selector(f".assistant[data-done] >> nth={count}")
    turn = page.locator(".assistant").nth(count)
    return {"text": turn.locator(".text").inner_text(), "ids": json.loads(turn.get_attribute("data-token-ids")),
            "ttft_ms": float(turn.get_attribute("data-ttft-ms")), "tokens_per_s": float(turn.get_attribute("data-tokens-per-s")),
            "stats": turn.locator(".stats").inner_text()}


@pytest.fixture(scope="module")
def web_dir(llama_dir, tmp_path_factory):
    _runtime_available()
    out = tmp_path_factory.mktemp("web") / "site"
    # the default exporter (auto: dynamo), whose graph keeps its weights in model.onnx.data, fetched by the page too
    assert main(["export", str(llama_dir), "--format", "web", "--out", str(out), "--no-measure"]) == 0
    return out


def test_folder_is_self_contained(web_dir):
    manifest = json.loads((web_dir / "export.json").read_text())
    assert manifest["format"] == "web" and manifest["weights"] == "fp32" and manifest["kv_cache"] is True
    assert manifest["exporter"] == "dynamo"
    assert [r["package"] for r in manifest["runtime"]] == ["onnxruntime-web", "@huggingface/tokenizers", "@huggingface/jinja"]
    for name in ("index.html", "chat.js", "web.json", "model/model.onnx", "model/tokenizer.json", "model/chat_template.jinja",
                 "runtime/ort.wasm.bundle.min.js", "runtime/ort-wasm-simd-threaded.wasm", "runtime/NOTICE.txt"):
        assert manifest["files"][name] == (web_dir / name).stat().st_size > 0, name
    page = json.loads((web_dir / "web.json").read_text())
    assert [c["name"] for c in page["cache"]][:2] == ["past_key_values.0.key", "past_key_values.0.value"]
    assert page["external_data"] == ["model/model.onnx.data"]
    assert page["eos_token_ids"] == [1] and page["special_tokens"]["bos_token"] == "<｜begin▁of▁sentence｜>"


def test_page_answers_like_pytorch_offline(web_dir, llama_dir, browser, reference):
    from tailor.models.generation import generate, generate_rows

    _, _, tok, model = reference(llama_dir)
    page, site, requests = open_page(browser, web_dir)
    try:
        page.fill("#max-tokens", str(NEW_TOKENS))
        got = []
        for chat in CHATS:
            page.click("#new-chat")
            if chat[0]["role"] == "system":  # the page has no system box: the script's API takes whole conversations
                r = page.evaluate("async ([m, n]) => await window.tailor.generate(m, {maxNewTokens: n})", [chat, NEW_TOKENS])
                got.append({"text": r["text"], "ids": r["ids"]})
            else:
                got.append(ask(page, chat[-1]["content"]))
        # A conversation in the page: the follow-up is asked after the page's own first answer.
        page.click("#new-chat")
        convo, follow = [], []
        for question in FOLLOW_UP:
            convo.append({"role": "user", "content": question})
            follow.append(ask(page, question))
            convo_for_ref = [dict(m) for m in convo]
            follow[-1]["conversation"] = convo_for_ref
            convo.append({"role": "assistant", "content": follow[-1]["text"]})
    finally:
        site.stop()
    convs = CHATS + [f["conversation"] for f in follow]
    answers = got + follow
    eos = tok.eos_token_id
    rows = [generate_rows(model, tok, [c], max_new_tokens=NEW_TOKENS, batch_size=1)[0] for c in convs]
    expected = [r[: r.index(eos) + 1] if eos in r else r for r in rows]
    assert [a["ids"] for a in answers] == expected
    assert [a["text"] for a in answers] == [generate(model, tok, [c], max_new_tokens=NEW_TOKENS, batch_size=1)[0] for c in convs]
    assert any(len(a["ids"]) > 2 for a in answers)  # the cached decoding steps ran, not only the prefill
    assert all(u.startswith(site.url) for u in requests)
    assert {site.url + p for p in ("runtime/ort-wasm-simd-threaded.wasm", "model/model.onnx", "model/model.onnx.data")} <= set(requests)
    timed = [a for a in answers if "stats" in a]
    for a in timed:  # the page reports its own speed under each answer
        assert a["ttft_ms"] > 0 and a["tokens_per_s"] > 0 and "first token" in a["stats"] and "tokens/s" in a["stats"]
    print("browser (1 WebAssembly thread): time to first token "
          + ", ".join(f"{a['ttft_ms']:.0f}" for a in timed) + " ms; tokens/s "
          + ", ".join(f"{a['tokens_per_s']:.0f}" for a in timed))


def test_int8_page_runs_its_graph_and_reports(llama_dir, browser, chat_file, tmp_path, monkeypatch):
    """int8 weights: the page's tokens equal ONNX Runtime's (Python) on the same quantized graph; the report measures it."""
    import io

    from rich.console import Console

    from tailor.evaluation import measure
    from tailor.export import report
    from tailor.export.onnx_runtime import greedy, load_session
    from tailor.data.templates import encode_prompt
    from tailor.models.loading import load_tokenizer

    _runtime_available()
    monkeypatch.setattr(measure, "measure_isolated", measure.measure)
    monkeypatch.setattr(report, "measure_runtime_isolated", report.measure_runtime)
    res = report.export_with_report(llama_dir, "web", tmp_path / "int8", eval_data=[str(chat_file)], max_examples=2,
                                    console=Console(file=io.StringIO(), width=200), exporter="torchscript", weights="int8")
    out = res.path
    assert json.loads((out / "web.json").read_text())["weights"] == "int8"
    assert json.loads((out / "model" / "export.json").read_text())["dtype"].startswith("int8 MatMul weights")
    assert res.after["runtime"].startswith("ONNX Runtime (Python) on the page's graph")
    assert res.after["size_on_disk_mb"] < 0.8 * res.before["size_on_disk_mb"]  # embeddings stay float (Gather)
    assert res.report == out / report.REPORT_FILE and "greedy_agreement" in res.after

    tok = load_tokenizer(out / "model")
    session = load_session(out / "model")
    page, site, _ = open_page(browser, out)
    try:
        page.fill("#max-tokens", str(NEW_TOKENS))
        answers = [ask(page, CHATS[0][0]["content"])]
        page.click("#new-chat")
        answers.append(ask(page, CHATS[1][0]["content"]))
    finally:
        site.stop()
    want = [greedy(session, [encode_prompt(tok, c)], NEW_TOKENS, tok.eos_token_id, tok.pad_token_id)[0] for c in CHATS[:2]]
    assert [a["ids"] for a in answers] == want


def _vision_model_dir(tmp_path) -> Path:
    """A directory whose config.json has a vision tower: all the check reads."""
    vlm = tmp_path / "vlm"
    vlm.mkdir()
    (vlm / "config.json").write_text(json.dumps({"model_type": "deepseek_vl_hybrid", "vision_config": {}}))
    return vlm


def test_bad_input(llama_dir, tmp_path, monkeypatch, capsys):
    vlm = _vision_model_dir(tmp_path)
    with pytest.raises(TailorError, match="vision-language model; the web export runs text-only") as e:
        run(vlm, "web", tmp_path / "out")
    assert "--format safetensors" in e.value.fix and not (tmp_path / "out").exists()
    with pytest.raises(TailorError, match="unknown web weights 'int4'"):
        run(llama_dir, "web", tmp_path / "out", weights="int4")
    # a model too large for the page's 32-bit WebAssembly memory (the limit lowered to this model's size)
    from tailor.export import web

    monkeypatch.setattr(web, "MAX_GRAPH_BYTES", sum(p.stat().st_size for p in llama_dir.glob("*.safetensors")) - 1)
    with pytest.raises(TailorError, match="of fp32 weights in the page") as e:
        run(llama_dir, "web", tmp_path / "out")
    assert "--web-weights int8" in e.value.fix and not (tmp_path / "out").exists()
    monkeypatch.undo()
    # a model whose tokenizer has no chat template
    bare = copy_without_chat_template(llama_dir, tmp_path / "bare")
    with pytest.raises(TailorError, match="has no chat template") as e:
        run(bare, "web", tmp_path / "out")
    assert "data.chat_template=deepseek" in e.value.fix
    # no npm and nothing cached: the error says how to install it, before any export work
    monkeypatch.setattr(web_runtime, "cache_dir", lambda: tmp_path / "cache")
    monkeypatch.setattr(web_runtime.shutil, "which", lambda name: None)
    with pytest.raises(TailorError, match="needs npm to fetch its browser runtime") as e:
        run(llama_dir, "web", tmp_path / "out")
    assert "apt-get install nodejs npm" in e.value.fix and not (tmp_path / "out" / "model").exists()
    # a cached tarball that is not the pinned one is refused and deleted
    (tmp_path / "cache").mkdir(exist_ok=True)
    for p in web_runtime.PACKAGES:
        (tmp_path / "cache" / p.tarball).write_bytes(b"not the package")
    with pytest.raises(TailorError, match="does not match the pinned integrity of onnxruntime-web@"):
        web_runtime.fetch()
    assert not (tmp_path / "cache" / web_runtime.PACKAGES[0].tarball).exists()
    assert main(["export", str(llama_dir), "--format", "onnx", "--web-weights", "int8", "--out", str(tmp_path / "x")]) == 2
    assert "--web-weights applies to --format web only" in capsys.readouterr().err


def test_adapter_is_checked_through_its_base(llama_dir, tmp_path):
    """An adapter directory: the architecture checked is its base's, the tokenizer the base's unless it has its own."""
    from tailor.export.web import check_source

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(llama_dir)}))
    assert check_source(adapter).chat_template  # the base's tokenizer
    vlm = _vision_model_dir(tmp_path)
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(vlm)}))
    with pytest.raises(TailorError, match="vision-language model"):
        check_source(adapter)
