"""TorchScript export: a traced logits-only module, loadable with torch.jit.load, same greedy tokens."""

import pytest
import torch

from tailor.export import run
from tailor.export.torchscript import greedy, load_torchscript


@pytest.mark.parametrize("arch", ["llama_dir", "deepseek_dir"])
def test_traced_module_greedy_matches(arch, request, tmp_path, reference):
    model_dir = request.getfixturevalue(arch)
    out = run(model_dir, "torchscript", tmp_path / "ts")
    module = torch.jit.load(str(out / "model.pt"))  # plain torch, no tailor code needed
    assert isinstance(module, torch.jit.ScriptModule)
    prompts, expected, tok, model = reference(model_dir)
    # Every prompt has a different length from the traced example (7 tokens): shapes are dynamic.
    assert [greedy(module, p, 10, tok.eos_token_id) for p in prompts] == expected
    # A left-padded batch of 3 gives the model's logits at the real positions.
    ids = torch.randint(3, 300, (3, 11))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
        with torch.jit.optimized_execution(False):
            got = load_torchscript(out)(ids, mask)
    torch.testing.assert_close(got[mask.bool()], ref[mask.bool()], atol=1e-4, rtol=1e-4)


def test_export_loads_the_plain_model_without_an_undo_step(deepseek_dir):
    # Loaders install no speed-up (that is tailor.runtime.enable, which export never calls), so what export
    # traces is transformers' own code, with no undo step before tracing.
    from tailor import runtime
    from tailor.export.common import load_for_export

    model, _ = load_for_export(deepseek_dir)
    assert runtime.installed(model) == [] and all("forward" not in m.__dict__ for m in model.modules())
