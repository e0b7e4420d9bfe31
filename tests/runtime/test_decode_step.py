"""The DeepSeek-V3 decoding fast path gives transformers' answers, and only runs where it claims to."""

import pytest
import torch

import tailor.runtime.decode_step as fast_decode
from tailor.models.loading import load_model
from tailor.runtime.decode_step import use_fast_decode, use_transformers_decode
from tests.runtime.common import enabled

IDS = torch.tensor([[1, 5, 7, 9, 11, 20, 33, 40]])


@pytest.fixture
def fast_steps(monkeypatch):
    """Counts the layers the fast path ran (one per layer per fast step)."""
    calls = []
    layer = fast_decode._layer

    def counting(*args):
        calls.append(1)
        return layer(*args)

    monkeypatch.setattr(fast_decode, "_layer", counting)
    return calls


def _pair(path):
    """(fast, reference): two loads of `path` with the runtime enabled, the second with transformers' forward
    restored."""
    fast, ref = enabled(path), enabled(path)
    assert "_transformers_model_forward" in fast.model.__dict__  # runtime.enable installed the fast path
    assert use_transformers_decode(ref) == 1 and use_transformers_decode(ref) == 0
    return fast, ref


def _greedy(model, ids=IDS, steps=16, feed=None, **kwargs):
    """Prefill + `steps` greedy decoding steps with a DynamicCache: (per-step last logits, chosen tokens). With
    `feed` (tokens), those are fed instead of the model's own choices (teacher forcing)."""
    from transformers import DynamicCache

    cache, logits, tokens = DynamicCache(config=model.config), [], []
    x = ids
    with torch.no_grad():
        for i in range(steps):
            out = model(input_ids=x, past_key_values=cache, use_cache=True, **kwargs)
            logits.append(out.logits[:, -1])
            tokens.append(out.logits[:, -1:].argmax(-1))
            x = tokens[-1] if feed is None else feed[i]
    return torch.stack(logits), torch.cat(tokens, dim=-1)


@pytest.fixture(scope="module")
def variant_dir(tmp_path_factory, tokenizer):
    """A second tiny DeepSeek-V3: grouped routing (2 groups, 1 kept), no query LoRA, rotate-half RoPE, a routed
    scaling factor and non-zero score-correction biases."""
    from tailor.models.presets import init_model

    out = tmp_path_factory.mktemp("deepseek-variant")
    model = init_model("deepseek-v3-micro", tokenizer, n_group=2, topk_group=1, q_lora_rank=None,
                       rope_interleave=False, routed_scaling_factor=2.5)
    torch.manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "e_score_correction_bias"):
                m.e_score_correction_bias.copy_(torch.randn_like(m.e_score_correction_bias) * 0.5)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


@pytest.mark.parametrize("which", ["deepseek", "variant"])
def test_greedy_decoding_matches_transformers_step_by_step(which, deepseek_dir, variant_dir, fast_steps):
    path = deepseek_dir if which == "deepseek" else variant_dir
    fast, ref = _pair(path)
    want_logits, want_tokens = _greedy(ref)
    assert not fast_steps
    got_logits, got_tokens = _greedy(fast)
    assert len(fast_steps) == 15 * fast.config.num_hidden_layers  # every step after the prefill
    torch.testing.assert_close(got_logits, want_logits, rtol=0, atol=1e-5)
    assert torch.equal(got_tokens, want_tokens)
    # output_* flags passed as False ask for nothing: still the fast path
    _greedy(fast, steps=2, output_attentions=False, output_hidden_states=False)
    assert len(fast_steps) == 16 * fast.config.num_hidden_layers
    # generate() takes the same path and picks the same tokens
    with torch.no_grad():
        a = fast.generate(IDS, max_new_tokens=8, min_new_tokens=8, do_sample=False)
        b = ref.generate(IDS, max_new_tokens=8, min_new_tokens=8, do_sample=False)
    assert torch.equal(a, b) and len(fast_steps) == 23 * fast.config.num_hidden_layers


def test_other_calls_take_transformers_path_with_the_same_results(deepseek_dir, fast_steps):
    fast, ref = _pair(deepseek_dir)
    # a batch of two
    ids = torch.cat([IDS, IDS.flip(-1)])
    torch.testing.assert_close(_greedy(fast, ids, 3)[0], _greedy(ref, ids, 3)[0], rtol=0, atol=1e-5)
    # one row with padding on the left: the mask is not all ones
    mask = torch.ones(1, IDS.shape[1] + 3, dtype=torch.long)
    mask[0, :2] = 0
    from transformers import DynamicCache

    def padded(model):
        cache, rows = DynamicCache(config=model.config), []
        with torch.no_grad():
            out = model(input_ids=IDS, attention_mask=mask[:, :IDS.shape[1]], past_key_values=cache, use_cache=True)
            for n in range(IDS.shape[1] + 1, mask.shape[1] + 1):
                out = model(input_ids=out.logits[:, -1:].argmax(-1), attention_mask=mask[:, :n],
                            past_key_values=cache, use_cache=True)
                rows.append(out.logits)
        return torch.cat(rows)
    torch.testing.assert_close(padded(fast), padded(ref), rtol=0, atol=1e-5)
    # outputs to record: hidden states, router logits, attentions (eager attention returns them)
    for flag in ("output_hidden_states", "output_router_logits"):
        (a, _), (b, _) = _greedy(fast, steps=3, **{flag: True}), _greedy(ref, steps=3, **{flag: True})
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert not fast_steps
    # a position past the precomputed RoPE table (max_position_embeddings): transformers computes it
    far = torch.tensor([[fast.config.max_position_embeddings + 5]])
    (a, _), (b, _) = _greedy(fast, steps=2, position_ids=far), _greedy(ref, steps=2, position_ids=far)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert not fast_steps
    # gradients on (eval mode), then training mode without gradients
    with torch.enable_grad():
        out = fast(IDS, use_cache=True)
        fast(out.logits[:, -1:].argmax(-1), past_key_values=out.past_key_values, use_cache=True)
    fast.train()
    _greedy(fast, steps=3)
    assert not fast_steps
    fast.eval()
    _greedy(fast, steps=3)
    assert len(fast_steps) == 2 * fast.config.num_hidden_layers  # back on the fast path


def test_output_attentions_and_hooks_fall_back(deepseek_dir, fast_steps):
    fast, ref = enabled(deepseek_dir), enabled(deepseek_dir)
    use_transformers_decode(ref)
    for m in (fast, ref):
        m.set_attn_implementation("eager")
    from transformers import DynamicCache

    for model in (fast, ref):
        cache = DynamicCache(config=model.config)
        with torch.no_grad():
            out = model(IDS, past_key_values=cache, use_cache=True)
            out = model(out.logits[:, -1:].argmax(-1), past_key_values=cache, use_cache=True, output_attentions=True)
        assert out.attentions is not None and len(out.attentions) == model.config.num_hidden_layers
        model.__dict__["_last"] = out.logits
    torch.testing.assert_close(fast.__dict__["_last"], ref.__dict__["_last"], rtol=0, atol=1e-5)
    assert not fast_steps
    seen = []
    handle = fast.model.layers[0].register_forward_hook(lambda *a: seen.append(1))
    _greedy(fast, steps=3)
    handle.remove()
    assert len(seen) == 3 and not fast_steps  # the hook ran: the layers were called as modules


def test_only_deepseek_v3_models_get_the_fast_path(deepseek_dir, llama_dir):
    assert use_fast_decode(load_model(llama_dir)) == 0  # another architecture: nothing replaced
    assert "_transformers_model_forward" not in enabled(llama_dir).model.__dict__
    trained = load_model(deepseek_dir, for_training=True)
    assert "_transformers_model_forward" not in trained.model.__dict__
    assert "_transformers_model_forward" not in load_model(deepseek_dir).model.__dict__  # loaders install nothing
    fast = enabled(deepseek_dir)
    assert use_fast_decode(fast) == 0  # already installed: idempotent


def test_int8_weight_model_matches_its_own_slow_path(deepseek_dir, tmp_path, fast_steps):
    from tailor.compression.quantize import quantize
    from tailor.runtime.quantized import Int8WeightLinear

    quantize(deepseek_dir, "int8-weight", tmp_path / "q")
    fast, ref = _pair(tmp_path / "q")
    assert isinstance(fast.model.layers[0].self_attn.o_proj, Int8WeightLinear)
    want_logits, want_tokens = _greedy(ref)
    # fed the reference's tokens: the int8 kernel rounds activations to bfloat16, so a last-bit difference in
    # an activation can move a product by one bfloat16 step (~0.4%); compare at that scale, step by step
    got_logits, got_tokens = _greedy(fast, feed=want_tokens.T.unsqueeze(-1))
    assert len(fast_steps) == 15 * fast.config.num_hidden_layers
    rel = ((got_logits - want_logits).abs().amax(-1) / want_logits.abs().amax(-1)).max().item()
    assert rel < 1e-2
    assert (got_tokens == want_tokens).float().mean() >= 0.9


def test_serving_engine_gives_the_same_answers_with_the_fast_path(deepseek_dir, fast_steps):
    from tailor.models.loading import load_tokenizer
    from tests.conftest import engine_answers

    tok = load_tokenizer(deepseek_dir)
    prompts = [tok.encode(t) for t in ("hello", "How long can I return a laptop?", "Shipping takes", "tents?")]
    fast, ref = _pair(deepseek_dir)
    alone, batched = engine_answers(fast, tok, prompts)
    assert fast_steps  # single-sequence steps took the fast path
    assert (alone, batched) == engine_answers(ref, tok, prompts)
    assert batched == alone


@pytest.mark.parametrize("flag", ["jit.is_tracing", "compiler.is_compiling", "compiler.is_exporting"])
def test_tracing_compiling_and_exporting_record_transformers_graph(deepseek_dir, fast_steps, monkeypatch, flag):
    fast = enabled(deepseek_dir)
    owner, name = flag.split(".")
    monkeypatch.setattr(getattr(torch, owner), name, lambda: True)
    assert "_transformers_model_forward" in fast.model.__dict__  # installed, and declines while the flag is up
    from tailor.runtime.decode_step import _fast_case
    from transformers import DynamicCache

    cache = DynamicCache(config=fast.config)
    with torch.no_grad():
        fast.model.__dict__["_transformers_model_forward"](input_ids=IDS, past_key_values=cache, use_cache=True)
        assert _fast_case(fast.model, IDS[:, :1], None, None, cache, None, {}) is None
        monkeypatch.undo()
        assert _fast_case(fast.model, IDS[:, :1], None, None, cache, None, {}) == IDS.shape[1]


def test_kept_expansion_follows_every_change_to_the_cache(deepseek_dir, fast_steps, monkeypatch):
    # The fast path keeps kv_b_proj of the cached latents on the cache layer and expands only the new row; a
    # cache changed behind its back (a transformers step, crop, an in-place edit) must be expanded afresh.
    from transformers import DynamicCache

    fast, ref = _pair(deepseek_dir)
    tokens = torch.tensor([[3], [17], [42], [8], [99], [5], [61], [23]])

    def run(model, budget=fast_decode.EXPANDED_KV_BYTES):
        with monkeypatch.context() as patch:
            patch.setattr(fast_decode, "EXPANDED_KV_BYTES", budget)
            return steps(model)

    def steps(model):
        cache, logits = DynamicCache(config=model.config), []
        with torch.no_grad():
            logits.append(model(IDS, past_key_values=cache, use_cache=True).logits[:, -1])
            for i, t in enumerate(tokens):
                if i == 2:  # a step through transformers' code (it records hidden states)
                    out = model(t[None], past_key_values=cache, use_cache=True, output_hidden_states=True)
                elif i == 4:
                    cache.crop(-2)
                    out = model(t[None], past_key_values=cache, use_cache=True)
                elif i == 6:
                    cache.layers[0].keys[..., -1, :].mul_(0.5)  # in place: same tensor object, new version
                    out = model(t[None], past_key_values=cache, use_cache=True)
                else:
                    out = model(t[None], past_key_values=cache, use_cache=True)
                logits.append(out.logits[:, -1])
        return torch.cat(logits), cache

    want, _ = run(ref)
    got, cache = run(fast)
    assert len(fast_steps) == 7 * fast.config.num_hidden_layers
    assert all("_tailor_expanded" in layer.__dict__ for layer in cache.layers)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    # over the size budget nothing is kept and every step expands the whole cache, with the same answers
    got, cache = run(fast, budget=0)
    assert not any("_tailor_expanded" in layer.__dict__ for layer in cache.layers)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    # inference mode: inference tensors have no version counter, so nothing is kept; same answers
    with torch.inference_mode():
        got, cache = run(fast)
    assert not any("_tailor_expanded" in layer.__dict__ for layer in cache.layers)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_a_router_replaced_after_install_falls_back(deepseek_dir, fast_steps):
    """peft wraps the router (LoRA on it) after runtime.enable installed the step; reading the old module's weight
    would skip the adapter (seen in the quickstart: 'ParamWrapper' has no e_score_correction_bias)."""

    class Wrapped(torch.nn.Module):  # like peft's wrapper: the original inside, other attributes
        def __init__(self, base):
            super().__init__()
            self.base_layer = base

        def forward(self, x):
            return self.base_layer(x)

    fast, ref = _pair(deepseek_dir)
    for layer in fast.model.layers:
        if hasattr(layer.mlp, "gate"):
            layer.mlp.gate = Wrapped(layer.mlp.gate)
    got, got_tokens = _greedy(fast, steps=4)
    assert not fast_steps  # every step ran transformers' code
    want, want_tokens = _greedy(ref, steps=4)
    assert torch.equal(got_tokens, want_tokens)
