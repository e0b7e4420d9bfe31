"""Load a local checkpoint (model and tokenizer) safely, and pick the device and dtype.

tailor works offline: only local directories are loaded, never hub ids, and weights only from
safetensors (a pickle `.bin` can run code when unpickled). Custom modeling code shipped inside a
checkpoint runs only with `trust_remote_code=True`.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import platform
from pathlib import Path

import torch

from tailor.errors import TailorError

log = logging.getLogger(__name__)

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
_DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    # Aliases people type from other tools' configs.
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}
_OFFLINE_FIX = (
    "tailor works offline with local checkpoints: download the model once (e.g. "
    "`huggingface-cli download ORG/NAME --local-dir DIR` on a machine with access) and pass DIR"
)


def is_model_dir(path) -> bool:
    """True when `path` is a directory with a `config.json` (a transformers checkpoint)."""
    p = Path(path)
    return p.is_dir() and (p / "config.json").is_file()


def _existing_dir(path, what: str, fix: str = _OFFLINE_FIX) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise TailorError(f"{what} not found: {path}", where=str(path), fix=fix)
    if not p.is_dir():
        raise TailorError(f"{what} must be a directory: {path}", where=str(path), fix=fix)
    return p


_TOKENIZER_FIX = (
    "pass model.tokenizer=DIR pointing at a directory with a tokenizer, "
    "or train one with `tailor tokenizer train --data FILES... --out DIR`"
)


def load_tokenizer(path, trust_remote_code: bool = False, chat_template: str | None = None):
    """Load the tokenizer saved in directory `path`, giving it a pad token (eos) if it has none.

    `chat_template` overrides its template (a built-in name or a .jinja file; None keeps its own).
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    p = _existing_dir(path, "tokenizer directory", fix=_TOKENIZER_FIX + "; " + _OFFLINE_FIX)
    if not any((p / name).is_file() for name in _TOKENIZER_FILES):
        raise TailorError(
            f"no tokenizer files in {p} (looked for {', '.join(_TOKENIZER_FILES)})",
            where=str(p),
            fix=_TOKENIZER_FIX,
        )
    try:
        if _is_generic_fast_tokenizer(p):
            # transformers 5 ignores the declared class for some model types (qwen2, phi3, ...) and
            # rebuilds their tokenizer with its own pre-tokenizer; a generic tokenizer.json (e.g.
            # from `tailor tokenizer train`) must be used as written, or token ids change.
            tokenizer = PreTrainedTokenizerFast.from_pretrained(p, local_files_only=True)
        else:
            tokenizer = AutoTokenizer.from_pretrained(p, trust_remote_code=trust_remote_code, local_files_only=True)
    except (OSError, ValueError) as e:
        raise TailorError(
            f"could not load the tokenizer in {p}: {e}",
            where=str(p),
            fix="check the tokenizer files, or pass trust_remote_code=true if it ships its own code and you trust it",
        ) from None
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        # Batches need a pad id. Padded positions are masked out of attention and loss, so reusing
        # eos is harmless, and it adds no new embedding row the model never trained.
        tokenizer.pad_token = tokenizer.eos_token
    elif tokenizer.pad_token is None:
        log.warning("tokenizer in %s has neither a pad nor an eos token; batching with padding will fail", p)
    if chat_template:
        from tailor.data.templates import set_chat_template

        set_chat_template(tokenizer, chat_template)
    return tokenizer


def _is_generic_fast_tokenizer(p: Path) -> bool:
    """True when the directory declares a plain tokenizer.json-backed tokenizer and no custom code."""
    try:
        config = json.loads((p / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return False
    return (
        (p / "tokenizer.json").is_file()
        and "auto_map" not in config
        and config.get("tokenizer_class") in ("TokenizersBackend", "PreTrainedTokenizerFast")
    )


def _read_config(p: Path) -> dict:
    try:
        return json.loads((p / "config.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TailorError(f"config.json is not valid JSON: {e}", where=str(p / "config.json")) from None


def _check_weights(p: Path) -> None:
    if any(p.glob("*.safetensors")) or (p / "model.safetensors.index.json").is_file():
        return
    pickles = sorted(x.name for x in p.iterdir() if x.suffix in (".bin", ".pt", ".pth", ".ckpt"))
    if pickles:
        raise TailorError(
            f"{p} has only pickle weights ({', '.join(pickles[:3])}{', ...' if len(pickles) > 3 else ''}); "
            "tailor loads safetensors only, because unpickling can run arbitrary code",
            where=str(p),
            fix="if you trust the file, convert it once: python -c \"from transformers import "
            f"AutoModelForCausalLM as M; M.from_pretrained('{p}', use_safetensors=False)"
            f".save_pretrained('{p}-safetensors')\" and load {p}-safetensors",
        )
    raise TailorError(
        f"no model weights (*.safetensors) in {p}",
        where=str(p),
        fix="point at a checkpoint directory saved with save_pretrained, or build one from a preset",
    )


def _check_architecture(p: Path, raw: dict, trust_remote_code: bool) -> None:
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    model_type = raw.get("model_type")
    if not model_type:
        raise TailorError(
            "config.json has no 'model_type'",
            where=str(p / "config.json"),
            fix="re-save the checkpoint with save_pretrained from a recent transformers",
        )
    if "vision_config" in raw:  # every text-only path (eval, chat, serve, quantize, export) loads through here
        raise TailorError(
            f"{p} is a vision-language model ({model_type}); this command takes text-only causal LMs",
            where=str(p / "config.json"),
            fix="vision-language models train with `tailor train` (sft, contrastive) and load with transformers' "
                "AutoModelForImageTextToText (tailor.models.vision.load_vision_model); quantizing and exporting them "
                "is not supported yet",
        )
    if trust_remote_code and "auto_map" in raw:
        return
    if model_type in CONFIG_MAPPING:
        if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
            raise TailorError(
                f"model type '{model_type}' has no causal-LM (text generation) class in transformers",
                where=str(p / "config.json"),
                fix="tailor customizes decoder language models such as DeepSeek, Qwen2 or Llama",
            )
        return
    if "auto_map" in raw:
        raise TailorError(
            f"model type '{model_type}' needs the custom code shipped in {p}",
            where=str(p / "config.json"),
            fix="read that code, then pass trust_remote_code=true if you trust it",
        )
    raise TailorError(
        f"model type '{model_type}' is not supported by the installed transformers {transformers.__version__}",
        where=str(p / "config.json"),
        fix="upgrade transformers (within tailor's pinned range) or use a supported architecture",
    )


def load_model(
    path,
    dtype: str = "auto",
    trust_remote_code: bool = False,
    device: str | None = None,
    for_training: bool = False,
    tp_size: int = 1,
):
    """Load a causal LM from a local checkpoint directory onto `device` in the resolved dtype.

    `tp_size` > 1: tensor parallel across that many torchrun processes (transformers' DistributedConfig with the
    architecture's own plan); each process reads only its shard of every planned weight (DTensors).

    The model is what transformers returns, untouched (no speed-up installed: that is `tailor.runtime.enable`),
    in eval mode unless `for_training`. A directory written by `tailor quantize` (int8/int4) is refused here;
    `tailor.adapters.loading.load_any` loads it.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    p = _existing_dir(path, "model directory")
    if not is_model_dir(p):
        raise TailorError(
            f"{p} is not a model directory (no config.json)",
            where=str(p),
            fix="point at a directory saved with save_pretrained, or create one with a model preset",
        )
    raw = _read_config(p)
    _check_architecture(p, raw, trust_remote_code)
    _check_weights(p)
    if _is_classifier_config(raw):
        # As a causal LM it would load with a random LM head and generate noise.
        raise TailorError(f"{p} is a sequence classifier ({raw['architectures'][0]}): it predicts labels, not text",
                          where=str(p / "config.json"),
                          fix="evaluate it with `tailor eval MODEL --task classification`, or load it with "
                              "transformers' AutoModelForSequenceClassification / pipeline('text-classification')")

    if tailor_quantized(p):
        if for_training:
            raise TailorError(f"{p} is quantized by `tailor quantize`; its weights cannot be trained", where=str(p),
                              fix="train the float model it was made from, then quantize again")
        raise TailorError(f"{p} was quantized by `tailor quantize`: its int8/int4 layers are rebuilt by tailor's "
                          "runtime, not by transformers", where=str(p),
                          fix="load it with tailor.adapters.loading.load_any (what tailor eval, chat and serve use)")
    target = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, target, for_training=for_training)
    bnb = (raw.get("quantization_config") or {}).get("quant_method") == "bitsandbytes"
    if bnb and target.type != "cuda":
        raise TailorError(f"{p} holds bitsandbytes-quantized weights, which run on CUDA GPUs only (device: {target})",
                          where=str(p), fix="load it on a machine with a CUDA GPU, or quantize the float model with "
                                            "int8-dynamic / int8-weight / int4-weight for CPUs")
    sharded = {}
    if tp_size > 1:
        from transformers.distributed import DistributedConfig

        sharded = {"distributed_config": DistributedConfig(tp_size=tp_size)}
    try:
        config = AutoConfig.from_pretrained(p, trust_remote_code=trust_remote_code, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            p,
            config=config,
            dtype=torch_dtype,
            use_safetensors=True,
            trust_remote_code=trust_remote_code,
            local_files_only=True,
            # bitsandbytes weights are placed while loading; .to() is refused for 8-bit models
            **({"device_map": {"": str(target)}} if bnb else {}),
            **sharded,
        )
    except (OSError, ValueError, KeyError) as e:
        raise TailorError(f"could not load the model in {p}: {e}", where=str(p)) from None
    if not bnb and not sharded:  # a sharded model is placed while loading (each process on its own device)
        model.to(target)
    model.train(for_training)
    return model


# A peft adapter trained on a sequence classifier keeps the classifier's config (labels, head size, pad id) here: its
# base directory holds a causal LM, and this config is what turns it into the classifier the adapter was trained on.
# Plain transformers + peft reload it the same way tailor does:
#   config = AutoConfig.from_pretrained(adapter_dir / HEAD_FILE)
#   model = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base, config=config), adapter_dir)
HEAD_FILE = "classifier_config.json"


def _is_classifier_config(raw: dict) -> bool:
    return any(str(a).endswith("ForSequenceClassification") for a in raw.get("architectures") or [])


def is_sequence_classifier(path) -> bool:
    """True for a sequence-classification model directory or an adapter trained on one (peft task_type SEQ_CLS)."""
    p = Path(path)
    if (p / "adapter_config.json").is_file():
        try:
            return json.loads((p / "adapter_config.json").read_text(encoding="utf-8")).get("task_type") == "SEQ_CLS"
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            return False
    return is_model_dir(p) and _is_classifier_config(_read_config(p))


def load_classifier(path, base=None, dtype: str = "auto", trust_remote_code: bool = False, device: str | None = None,
                    for_training: bool = False, config=None, **head):
    """Load a sequence classifier (AutoModelForSequenceClassification) from a local directory.

    `path` is a classifier directory, a causal LM (its backbone gets a new `score` head; `head` gives config
    changes such as num_labels, id2label, label2id, pad_token_id, or `config` the whole config), or a peft adapter
    trained on a classifier (loaded onto `base` or the base it records, with the classifier config saved beside
    it in HEAD_FILE). Eval mode unless `for_training`.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

    p = _existing_dir(path, "model directory")
    if (p / "adapter_config.json").is_file():
        return _load_classifier_adapter(p, base, dtype, trust_remote_code, device, for_training)
    if not is_model_dir(p):
        raise TailorError(f"{p} is not a model directory (no config.json)", where=str(p),
                          fix="point at a directory saved with save_pretrained, or create one with a model preset")
    raw = _read_config(p)
    _check_architecture(p, raw, trust_remote_code)
    _check_weights(p)
    if raw["model_type"] not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES and "auto_map" not in raw:
        raise TailorError(f"model type '{raw['model_type']}' has no sequence-classification class in transformers",
                          where=str(p / "config.json"), fix="use a Llama, Qwen2 or DeepSeek-V3 family model")
    if tailor_quantized(p):
        raise TailorError(f"{p} is quantized by tailor; only float checkpoints load as classifiers", where=str(p),
                          fix="use the float model it was made from")
    target = resolve_device(device)
    try:
        if config is None:
            config = AutoConfig.from_pretrained(p, trust_remote_code=trust_remote_code, local_files_only=True, **head)
        model = AutoModelForSequenceClassification.from_pretrained(
            p, config=config, dtype=resolve_dtype(dtype, target, for_training=for_training), use_safetensors=True,
            trust_remote_code=trust_remote_code, local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise TailorError(f"could not load {p} as a sequence classifier: {e}", where=str(p)) from None
    model.to(target)
    model.train(for_training)
    return model


def _load_classifier_adapter(p: Path, base, dtype, trust_remote_code, device, for_training):
    from peft import PeftModel
    from transformers import AutoConfig

    head_file = p / HEAD_FILE
    if not head_file.is_file():
        raise TailorError(f"{p} holds an adapter but no {HEAD_FILE} (its label set and head size)", where=str(p),
                          fix="use the final/ folder of a `tailor train` run with train.objective=classification")
    config = AutoConfig.from_pretrained(head_file, trust_remote_code=trust_remote_code)
    cfg = json.loads((p / "adapter_config.json").read_text(encoding="utf-8"))
    base = Path(base or cfg.get("base_model_name_or_path") or "")
    if not base.is_dir():
        raise TailorError(f"the adapter's base model is not on disk: {base}", where=str(p / "adapter_config.json"),
                          fix="pass the base model directory (--base / --adapter usage: MODEL=base, adapter=DIR)")
    model = load_classifier(base, dtype=dtype, trust_remote_code=trust_remote_code, device=device,
                            for_training=for_training, config=config)
    return PeftModel.from_pretrained(model, str(p), is_trainable=for_training)


# Written by `tailor quantize` next to the weights: the method and which weights were quantized. Its name is declared
# here, the earliest stage that must recognise such a directory (tailor.runtime.quantized reads the file).
QUANTIZED_MANIFEST = "tailor_quantization.json"


def tailor_quantized(path) -> bool:
    """True for a directory quantized by `tailor quantize` with a tailor method (int8/int4: rebuilt by
    tailor.runtime.quantized); bitsandbytes directories load through transformers and give False."""
    try:
        manifest = json.loads((Path(path) / QUANTIZED_MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return False
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TailorError(f"{QUANTIZED_MANIFEST} is not valid JSON: {e}", where=str(Path(path) / QUANTIZED_MANIFEST),
                          fix="quantize the model again") from None
    return not str(manifest.get("method", "")).startswith("bnb-")


def resolve_device(device: str | None = None) -> torch.device:
    """The requested device, or else $TAILOR_DEVICE when set, or else the best available one: cuda, then mps, then cpu.

    TAILOR_DEVICE=cpu keeps every command (and the processes they start) off a GPU without a flag on each,
    e.g. while the GPU trains something else; an explicit device (train.device, --device) still wins.
    """
    where = "device"
    if device in (None, "", "auto") and os.environ.get("TAILOR_DEVICE", "auto") not in ("", "auto"):
        device, where = os.environ["TAILOR_DEVICE"], "environment variable TAILOR_DEVICE"
    if device in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError):
        raise TailorError(f"unknown device '{device}'", where=where, fix="use auto, cpu, cuda, cuda:N or mps") from None
    if target.type == "cuda" and not torch.cuda.is_available():
        raise TailorError("device 'cuda' was requested but no CUDA GPU is available", where=where, fix="use device=cpu or auto")
    if target.type == "mps" and not torch.backends.mps.is_available():
        raise TailorError("device 'mps' was requested but MPS is not available", where=where, fix="use device=cpu or auto")
    return target


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as /proc/cpuinfo names them (avx2, avx512_bf16, amx_bf16, ...); empty off Linux."""
    if platform.system() != "Linux":
        return frozenset()
    try:
        return _cpuinfo_flags(Path("/proc/cpuinfo").read_text())
    except OSError:
        return frozenset()


def _cpuinfo_flags(cpuinfo: str) -> frozenset[str]:
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[-1].split())
    return frozenset()


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bfloat16 instructions (AVX512-BF16 or AMX-BF16).

    Without these instructions torch emulates bf16 and matrix products run many times slower than float32.
    Whether bf16 is also *faster* than float32 is measured, not read here (tailor.training.precision).
    """
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def resolve_dtype(name: str, device: torch.device, for_training: bool = False) -> torch.dtype:
    """Turn a dtype name ("auto", "float32", "bfloat16", "float16") into a torch dtype for `device`.

    For training, "auto" is always float32 master weights: the trainer adds bf16/fp16 autocast on
    GPUs, and pure-bf16 AdamW updates lose small steps (set dtype=bfloat16 explicitly to save memory).
    For inference, "auto" is bf16 on GPUs that support it, fp16 on other GPUs, and float32 on CPUs:
    bf16 would change numerics between runs on different CPUs for a small speed-up.
    """
    device = torch.device(device)
    key = str(name).lower()
    if key != "auto" and key not in _DTYPES:
        raise TailorError(
            f"unknown dtype '{name}'", where="model.dtype", fix="use auto, float32, bfloat16 or float16"
        )
    if key == "auto":
        if for_training:
            return torch.float32
        if device.type == "cuda":
            if torch.cuda.is_bf16_supported():
                return torch.bfloat16
            return torch.float32 if for_training else torch.float16
        if device.type == "mps":
            return torch.float32 if for_training else torch.float16
        return torch.float32

    dtype = _DTYPES[key]
    if dtype == torch.bfloat16 and device.type == "cpu" and not cpu_supports_bf16():
        raise TailorError(
            "dtype bfloat16 was requested on a CPU without native bf16 instructions (avx512_bf16/amx_bf16); "
            "torch would emulate it, roughly 100x slower than float32",
            where="model.dtype",
            fix="set dtype=float32 (or dtype=auto)",
        )
    if dtype == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise TailorError(
            "dtype bfloat16 was requested but this GPU does not support it",
            where="model.dtype",
            fix="set dtype=auto (float16 for inference, float32 + fp16 autocast for training)",
        )
    if dtype == torch.float16 and for_training:
        raise TailorError(
            "training with float16 weights diverges without float32 master weights",
            where="model.dtype",
            fix="set dtype=auto or float32; fp16 mixed precision is a training setting, not a weight dtype",
        )
    return dtype


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts; tied weights (one tensor, two names) count once."""
    seen: dict[int, torch.nn.Parameter] = {}
    for param in model.parameters():  # parameters() already yields a shared Parameter once
        seen.setdefault(id(param), param)
    total = sum(p.numel() for p in seen.values())
    trainable = sum(p.numel() for p in seen.values() if p.requires_grad)
    return trainable, total
