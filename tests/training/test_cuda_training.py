"""Training on a CUDA GPU: automatic bf16/fp16 mixed precision and 8-bit AdamW.

These run only where CUDA is present (skipped on the CPU-only CI and development box, said so in the
README); the CPU side of the same options (fp32 default, clear errors) is tested in test_train.py and
test_regularize.py.
"""

import importlib.util
import math

import pytest
import torch

from tailor.config import load_recipe
from tailor.training import train as run

pytestmark = [pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"), pytest.mark.auto_device]


def recipe(tmp_path, model_dir, data, *extra):
    return load_recipe(None, [f"model.path={model_dir}", f"data.train=[{data}]", f"train.output_dir={tmp_path / 'run'}",
                              "train.batch_size=4", "train.max_steps=3", "train.logging_steps=1", "train.save_steps=100",
                              "data.max_length=48", "adapter.method=full", "train.warmup_ratio=0", "train.device=cuda",
                              *extra])


def test_auto_precision_picks_what_the_gpu_supports_and_trains(tmp_path, llama_dir, chat_file):
    r = run(recipe(tmp_path, llama_dir, chat_file))
    expected = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    assert r.metrics["precision"] == expected and r.metrics["device"].startswith("cuda")
    assert math.isfinite(r.metrics["train_loss"])


def test_fp16_trains_with_dynamic_loss_scaling(tmp_path, llama_dir, chat_file):
    from transformers import TrainerCallback

    seen = {}

    class Scaler(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            seen["fp16"] = args.fp16

    r = run(recipe(tmp_path, llama_dir, chat_file, "train.precision=fp16"), callbacks=[Scaler()])
    assert seen["fp16"] and r.metrics["precision"] == "fp16"
    assert math.isfinite(r.metrics["train_loss"])


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="needs bitsandbytes")
def test_adamw_8bit_trains_on_cuda(tmp_path, llama_dir, chat_file):
    from transformers import TrainerCallback

    seen = []

    class Optim(TrainerCallback):
        def on_train_end(self, args, state, control, optimizer=None, **kw):
            seen.append(optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer)

    r = run(recipe(tmp_path, llama_dir, chat_file, "train.optimizer=adamw_8bit"), callbacks=[Optim()])
    # bitsandbytes' 8-bit AdamW is its class AdamW with optim_bits=8: the proof is the uint8 optimizer state.
    opt = seen[0]
    assert type(opt).__module__.startswith("bitsandbytes")
    states = [v for st in opt.state.values() for v in st.values() if torch.is_tensor(v)]
    assert any(v.dtype == torch.uint8 for v in states)
    assert math.isfinite(r.metrics["train_loss"]) and r.metrics["steps"] == 3


def test_int8_dynamic_model_loads_on_cpu_in_float32_on_a_gpu_machine(tmp_path, llama_dir):
    """Auto device on a GPU machine: an int8-dynamic model (CPU kernels only) loads on the CPU in float32, instead of
    failing on the GPU's bf16 default (seen on an H100 in `tailor quantize`'s after-measurement)."""
    from tailor.compression.quantize import quantize
    from tailor.models.loading import load_model

    quantize(llama_dir, "int8-dynamic", tmp_path / "q")
    model = load_model(tmp_path / "q")
    assert next(model.parameters()).device.type == "cpu"
    assert model(torch.tensor([[1, 2, 3]])).logits.dtype == torch.float32
