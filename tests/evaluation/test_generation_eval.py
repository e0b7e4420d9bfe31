"""The generation task end to end: new metrics, efficiency, robustness, uncertain examples; noise functions."""

import json
import random

import pytest
import torch

from tailor.config import EvalConfig
from tailor.data.templates import encode_conversation, encode_prompt
from tailor.evaluation import efficiency
from tailor.evaluation.robustness import perturb, typo
from tailor.adapters.loading import load_any
from tailor.evaluation.run import run
from tailor.models.generation import decoding_kwargs, generate
from tests.conftest import CONVERSATIONS, write_jsonl


@pytest.fixture(scope="module")
def loaded(llama_dir):
    return load_any(llama_dir)


@pytest.fixture
def eval_file(tmp_path):
    rows = [{"messages": c, "answer": c[-1]["content"].split()[-1], "lang": "zh" if "笔" in c[0]["content"] else "en"}
            for c in CONVERSATIONS]
    return write_jsonl(tmp_path / "eval.jsonl", rows)


def test_generation_metrics_efficiency_robustness_and_uncertain(tmp_path, llama_dir, loaded, eval_file):
    model, tok = loaded
    cfg = EvalConfig(max_new_tokens=4, robustness=True, robustness_noise=["typo", "template"], select_uncertain=2,
                     efficiency_requests=3)
    res = run(llama_dir, [str(eval_file)], cfg, out_dir=tmp_path / "out", model=model, tokenizer=tok)
    m = res.metrics
    for key in ("bleu", "chrf", "rouge1", "rouge2", "rougeL", "refusal_rate", "empty_rate", "answer_length_tokens",
                "bleu/zh", "bleu/en", "answer_perplexity", "prediction_mean_logprob"):
        assert key in m, key
    eff = m["efficiency"]
    assert eff["requests"] == 3 and 0 < eff["generated_tokens"] <= 3 * 4
    assert 0 < eff["ttft_ms_p50"] <= eff["latency_ms_p95"] and eff["tokens_per_second"] > 0 and eff["peak_memory_mb"] > 0
    rob = m["robustness"]
    assert set(rob) >= {"typo", "template", "mean_drop/token_f1"} and rob["template"]["changed_questions"] == 4
    assert rob["typo"]["drop/token_f1"] == pytest.approx(m["token_f1"] - rob["typo"]["token_f1"])
    assert res.examples[0]["robustness"]["template"]["prompt"] != res.examples[0]["prompt"]
    # the model's confidence in its own answer, by hand for the multi-turn example (only its last turn is scored)
    ex = res.examples[3]
    enc = encode_conversation(tok, [*CONVERSATIONS[3][:-1], {"role": "assistant", "content": ex["prediction"]}], 1024)
    start = max(i for i in range(len(enc["labels"])) if enc["labels"][i] != -100 and enc["labels"][i - 1] == -100)
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([enc["input_ids"]])).logits[0].float(), -1)
    scored = [float(logp[t - 1, enc["input_ids"][t]]) for t in range(start, len(enc["input_ids"])) if enc["labels"][t] != -100]
    assert ex["prediction_mean_logprob"] == pytest.approx(sum(scored) / len(scored), abs=1e-5)
    picked = [json.loads(line) for line in (tmp_path / "out" / "uncertain.jsonl").read_text().splitlines()]
    lowest = sorted(res.examples, key=lambda e: e["prediction_mean_logprob"])[:2]
    assert [p["prediction_mean_logprob"] for p in picked] == [e["prediction_mean_logprob"] for e in lowest]
    assert picked[0]["messages"][-1] == {"role": "assistant", "content": lowest[0]["prediction"]}
    saved = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert len(saved["worst_examples"]) == 4 and saved["files"]["uncertain"].endswith("uncertain.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "out" / "examples.jsonl").read_text().splitlines()]
    assert rows[3]["messages"] == CONVERSATIONS[3][:-1] and "rougeL" in rows[0]
    off = run(llama_dir, [str(eval_file)], EvalConfig(max_new_tokens=2, efficiency=False), model=model, tokenizer=tok)
    assert "efficiency" not in off.metrics and "robustness" not in off.metrics


def test_token_clock_counts_the_generated_tokens(loaded):
    model, tok = loaded
    cfg = EvalConfig(max_new_tokens=5, efficiency_requests=2)
    timing = efficiency.time_requests(model, tok, CONVERSATIONS[:2], cfg)
    n = 0
    for conv in CONVERSATIONS[:2]:
        ids = torch.tensor([encode_prompt(tok, conv)])
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **decoding_kwargs(tok, 5))
        n += out.shape[1] - ids.shape[1]
    assert timing["generated_tokens"] == n and timing["requests"] == 2


def test_batched_generation_equals_one_at_a_time(loaded):
    model, tok = loaded
    batched = generate(model, tok, CONVERSATIONS, max_new_tokens=6, batch_size=4)
    single = [generate(model, tok, [c], max_new_tokens=6, batch_size=1)[0] for c in CONVERSATIONS]
    assert batched == single


def test_noise_is_seeded_and_keeps_facts():
    text = "How long can I return a laptop bought on 12 May?"
    a = typo(text, 0.1, random.Random("s"))
    assert a == typo(text, 0.1, random.Random("s")) and a != text
    assert [c for c in a if c.isdigit()] == [c for c in text if c.isdigit()]
    assert typo("2024", 0.5, random.Random(0)) == "2024"
    eda = [perturb(text, "eda", 0.2, random.Random(i)) for i in range(8)]
    assert any(e != text for e in eda) and all("12" in e for e in eda)
    assert perturb("笔记本电脑可以退货多久？", "template", 0.1, random.Random(1)).count("笔记本电脑可以退货多久？") == 1
    assert perturb("笔记本电脑可以退货多久？", "template", 0.1, random.Random(1)) != "笔记本电脑可以退货多久？"
    zh = perturb("笔记本电脑可以退货多久？", "typo", 0.2, random.Random(3))
    assert zh != "笔记本电脑可以退货多久？"
    with pytest.raises(ValueError):
        perturb(text, "shout", 0.1, random.Random(0))
