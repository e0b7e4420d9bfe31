"""The batching engine in process: concurrency must not change answers, slots must free at once."""

import time

import pytest
import torch

from tailor.data.templates import encode_prompt
from tailor.models.generation import decoding_kwargs
from tailor.models.loading import load_model, load_tokenizer
from tailor.serving.engine import Engine, Overloaded, Sequence
from tests.conftest import EventWaiter

QUESTIONS = ["hello", "How long can I return a laptop?", "帐篷可以退货吗？", "Shipping to the north region takes",
             "What about tents?", "Our store in Springfield opens at"]


def _prompts(tok):
    return [encode_prompt(tok, [{"role": "user", "content": q}]) for q in QUESTIONS]


def _seq(prompt, max_tokens, **kw):
    w = EventWaiter()
    return Sequence(prompt_ids=prompt, max_tokens=max_tokens, on_event=w, **kw), w


@pytest.mark.parametrize("model_fixture", ["llama_dir", "deepseek_dir"])
def test_concurrent_greedy_equals_alone_and_hf_generate(model_fixture, request):
    path = request.getfixturevalue(model_fixture)
    model, tok = load_model(path), load_tokenizer(path)
    engine = Engine(model, tok, max_batch_size=4, max_queue=8).start()
    try:
        prompts = _prompts(tok)
        lengths = [6 + 3 * i for i in range(len(prompts))]  # different lengths: rows leave the batch at different steps
        alone = []
        for p, n in zip(prompts, lengths):
            s, w = _seq(p, n)
            engine.submit([s])
            assert w.done.wait(30)
            alone.append(s.ids)
        pairs = [_seq(p, n) for p, n in zip(prompts, lengths)]
        for s, _ in pairs:  # 6 requests, 4 slots: two join mid-flight as others finish
            engine.submit([s])
        for s, w in pairs:
            assert w.done.wait(30)
        assert [s.ids for s, _ in pairs] == alone
        assert engine.active() == 0 and engine.queued() == 0
        # simultaneous arrivals (one submit): prefilled together as one left-padded batch, same answers
        groups = []
        prefill_rows = engine._prefill_rows
        engine._prefill_rows = lambda seqs: (groups.append(len(seqs)), prefill_rows(seqs))
        engine.max_batch_size = len(prompts) + 1
        together = [_seq(p, n) for p, n in zip(prompts, lengths)] + [_seq(prompts[-1], 1)]  # the last ends at prefill
        engine.submit([s for s, _ in together])
        for s, w in together:
            assert w.done.wait(30)
        assert groups == [len(prompts) + 1], "arrivals of one step must share one prefill pass"
        assert [s.ids for s, _ in together] == alone + [alone[-1][:1]]
        assert engine.active() == 0 and engine.queued() == 0
        for p, n, ids in zip(prompts, lengths, alone):
            ref = model.generate(input_ids=torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                                 **decoding_kwargs(tok, n))[0, len(p):].tolist()
            assert ids == ref
    finally:
        engine.stop()


def test_admission_cancel_stop_and_seed(llama_dir):
    model, tok = load_model(llama_dir), load_tokenizer(llama_dir)
    engine = Engine(model, tok, max_batch_size=1, max_queue=1).start()
    try:
        p = _prompts(tok)[1]
        long1, w1 = _seq(p, 100)
        long2, w2 = _seq(p, 100)
        engine.submit([long1])
        engine.submit([long2])
        third, _ = _seq(p, 5)
        with pytest.raises(Overloaded):
            engine.submit([third])
        long1.cancel()
        long2.cancel()
        assert w1.done.wait(0.01) is False  # a cancelled sequence ends quietly (the client is gone)
        t0 = time.monotonic()
        while engine.active() + engine.queued() and time.monotonic() - t0 < 10:
            time.sleep(0.01)
        assert engine.active() + engine.queued() == 0, "cancelled requests must free their slots"
        assert len(long1.ids) < 100
        # the queue admits again once slots are free; a seeded sample repeats exactly
        a, wa = _seq(p, 12, temperature=1.0, top_p=0.9, seed=7)
        b, wb = _seq(p, 12, temperature=1.0, top_p=0.9, seed=7)
        engine.submit([a, b])
        assert wa.done.wait(30) and wb.done.wait(30)
        assert a.ids == b.ids
        # a stop string ends generation and is not part of the text
        full, wf = _seq(p, 12)
        engine.submit([full])
        assert wf.done.wait(30)
        stop_at = full.text[3:5]
        cut, wc = _seq(p, 12, stop=[stop_at])
        engine.submit([cut])
        assert wc.done.wait(30)
        assert cut.finish_reason == "stop" and cut.text == full.text[:full.text.index(stop_at)]
        assert "".join(e.text for e in wc.events) == cut.text
        # an expired deadline stops the request with a timeout error
        late, wl = _seq(p, 50, deadline=time.monotonic() - 1)
        engine.submit([late])
        assert wl.done.wait(30) and wl.events[-1].error == "timeout"
    finally:
        engine.stop()


def test_sampling_survives_extreme_settings():
    from tailor.serving.engine import _sample

    logits = torch.tensor([0.1, 3.0, -2.0, 2.9])
    assert _sample(logits, 1e-300, 1.0, None) == 1  # would overflow to inf / nan without the greedy cut-off
    assert _sample(logits, 1.0, 5e-324, torch.Generator().manual_seed(0)) == 1  # top_p this small keeps the top token
    assert _sample(logits, 2.0, 1.0, torch.Generator().manual_seed(0)) in range(4)


def test_constrained_rows_batch_with_free_ones_and_a_bad_schema_fails_alone(llama_dir):
    """JSON-constrained and free sequences share a batch; greedy constrained rows equal the same row alone."""
    import json

    model, tok = load_model(llama_dir), load_tokenizer(llama_dir)
    schema = {"type": "object", "additionalProperties": False, "required": ["n"],
              "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 999}}}
    engine = Engine(model, tok, max_batch_size=4).start()
    try:
        prompts = _prompts(tok)
        alone, _ = _seq(prompts[1], 30, json_schema=schema)
        engine.submit([alone])
        assert _.done.wait(30)
        pairs = [_seq(prompts[1], 30, json_schema=schema), _seq(prompts[2], 12),
                 _seq(prompts[3], 30, json_schema={"type": "object", "properties": {"a": {"type": "nonsense"}}})]
        engine.submit([s for s, _ in pairs])
        assert all(w.done.wait(30) for _, w in pairs)
        (good, wg), (free, wf), (bad, wb) = pairs
        assert good.ids == alone.ids and wg.events[-1].finish_reason == "stop"
        assert set(json.loads(good.text)) == {"n"}
        assert wf.events[-1].kind == "done" and wb.events[-1].kind == "error" and bad.finish_reason == "error"
    finally:
        engine.stop()
