"""Test-wide settings: offline (an accidental download fails loudly), quiet, few threads."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import json
import threading
from pathlib import Path

import pytest
import torch

# Tiny test models gain nothing from a second thread, and on a busy 2-core machine every small op
# would wait for both cores (measured: a 20x slower forward pass). TAILOR_TEST_THREADS overrides.
torch.set_num_threads(int(os.environ.get("TAILOR_TEST_THREADS", "1")))


def pytest_configure(config):
    config.addinivalue_line("markers", "auto_device: runs on the device tailor picks by itself (a GPU when one is "
                                       "visible); every other test pins TAILOR_DEVICE=cpu")


# The suite checks CPU numerics (fp32, exact logits); on a GPU machine tailor would otherwise pick the GPU and bf16
# for them. Set for the whole session (module-scoped fixtures load models too); tests of the GPU paths are marked
# auto_device (and skip without CUDA), and see tailor's own device choice. TAILOR_DEVICE=cuda runs everything on a GPU.
os.environ.setdefault("TAILOR_DEVICE", "cpu")
# train.precision=auto measures a bf16 matmul probe on CPUs with bf16 instructions: a timing would decide the numerics
# of every test. The suite pins fp32; tests of auto pass faked CPU flags and probes (tests/training/test_precision.py).
os.environ.setdefault("TAILOR_PRECISION", "fp32")


@pytest.fixture(autouse=True)
def _same_torch_threads():
    """A test that runs a script's main() (benches set torch's thread count from BENCH_THREADS) must not change the
    thread count of the tests after it: a second thread changes float reduction order, and the kill -9 resume test,
    which resumes in this process against a one-thread subprocess, then differs by an ulp."""
    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _auto_device(request, monkeypatch):
    if request.node.get_closest_marker("auto_device") is not None:
        monkeypatch.delenv("TAILOR_DEVICE", raising=False)
        monkeypatch.delenv("TAILOR_PRECISION", raising=False)

CORPUS = [
    "The return window for laptops is 30 days. Tents can be returned within 60 days.",
    "Shipping to the north region takes 3 to 5 business days; the south region takes 2 days.",
    "笔记本电脑的退货期限是30天。帐篷可以在60天内退货。",
    "发往北部地区的运输需要3到5个工作日。",
    "Our store in Springfield opens at 9 am and closes at 8 pm on weekdays.",
    "Hello! How can I help you today? 你好！有什么可以帮你？",
] * 20

CONVERSATIONS = [
    [{"role": "user", "content": "How long can I return a laptop?"}, {"role": "assistant", "content": "Laptops can be returned within 30 days."}],
    [{"role": "user", "content": "What about tents?"}, {"role": "assistant", "content": "Tents can be returned within 60 days."}],
    [{"role": "user", "content": "笔记本电脑可以退货多久？"}, {"role": "assistant", "content": "笔记本电脑的退货期限是30天。"}],
    [{"role": "system", "content": "You are a support agent."}, {"role": "user", "content": "Shipping north?"},
     {"role": "assistant", "content": "3 to 5 business days."}, {"role": "user", "content": "And south?"},
     {"role": "assistant", "content": "2 days."}],
]


def copy_without_chat_template(model_dir: Path, dest: Path) -> Path:
    """A copy of `model_dir` whose tokenizer has no chat template (neither chat_template.jinja nor the config key)."""
    import shutil

    shutil.copytree(model_dir, dest)
    (dest / "chat_template.jinja").unlink(missing_ok=True)
    conf = json.loads((dest / "tokenizer_config.json").read_text())
    conf.pop("chat_template", None)
    (dest / "tokenizer_config.json").write_text(json.dumps(conf))
    return dest


def write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    from tailor.models.tokenizer import train_tokenizer

    out = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer(CORPUS + [m["content"] for c in CONVERSATIONS for m in c], vocab_size=400, out_dir=out)
    return out


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    from tailor.models.loading import load_tokenizer

    return load_tokenizer(tokenizer_dir)


def _model_dir(tmp_path_factory, tokenizer, preset: str) -> Path:
    from tailor.models.presets import init_model

    out = tmp_path_factory.mktemp(preset)
    init_model(preset, tokenizer, out_dir=out, seed=0)
    return out


@pytest.fixture(scope="session")
def deepseek_dir(tmp_path_factory, tokenizer) -> Path:
    return _model_dir(tmp_path_factory, tokenizer, "deepseek-v3-micro")


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory, tokenizer) -> Path:
    return _model_dir(tmp_path_factory, tokenizer, "llama-micro")


@pytest.fixture(scope="session")
def qwen2_dir(tmp_path_factory, tokenizer) -> Path:
    return _model_dir(tmp_path_factory, tokenizer, "qwen2-micro")


@pytest.fixture
def chat_file(tmp_path) -> Path:
    rows = [{"messages": c} for c in CONVERSATIONS] * 4
    return write_jsonl(tmp_path / "chat.jsonl", rows)


@pytest.fixture
def text_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "docs.jsonl", [{"text": t} for t in CORPUS])


CHROMIUM = os.environ.get("TAILOR_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium driven by Playwright (never `playwright install`): tests/e2e and the web export's page."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (`apt-get install -y chromium`; .ci/run does) "
                    "or set TAILOR_CHROMIUM", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


class EventWaiter:
    """Collects the events a serving engine emits for one sequence; `done` is set at the final one."""

    def __init__(self):
        self.events, self.done = [], threading.Event()

    def __call__(self, ev):
        self.events.append(ev)
        if ev.kind != "delta":
            self.done.set()


def engine_answers(model, tokenizer, prompts: list[list[int]], max_tokens: int = 6) -> tuple[list, list]:
    """The serving engine's answers (token ids) to each prompt alone, then to all of them in one batch."""
    from tailor.serving.engine import Engine, Sequence

    engine = Engine(model, tokenizer, max_batch_size=8, max_queue=8).start()
    try:
        def answer(batch):
            seqs = [(Sequence(prompt_ids=p, max_tokens=max_tokens, on_event=(w := EventWaiter())), w) for p in batch]
            engine.submit([s for s, _ in seqs])
            assert all(w.done.wait(30) for _, w in seqs)
            return [s.ids for s, _ in seqs]
        return [answer([p])[0] for p in prompts], answer(prompts)
    finally:
        engine.stop()
