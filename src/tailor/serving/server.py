"""`tailor serve`: load a model (and its LoRA adapters) and run the OpenAI-compatible server.

MODEL_DIR may be a model directory (a merged or compressed one loads the same way), or an adapter
directory, which is folded into its base so that the base name serves base + adapter. Each
`--adapter NAME=DIR` is loaded onto the same base with peft and chosen by a request's `model`.
Weights load only from safetensors; `trust_remote_code` stays off unless serve.trust_remote_code.
serve.engine picks the generation engine (the built-in one, or vLLM on a GPU: see vllm_engine).
"""

from __future__ import annotations

import logging
from pathlib import Path

from tailor.config import ServeConfig
from tailor.errors import TailorError

log = logging.getLogger(__name__)


def parse_adapters(pairs: list[str]) -> dict[str, str]:
    """`NAME=DIR` strings from the command line -> {name: dir}."""
    out = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise TailorError(f"--adapter '{pair}' is not NAME=DIR", where="--adapter", fix="e.g. --adapter support=runs/sft/final")
        if name.strip() in out:
            raise TailorError(f"adapter name '{name}' is given twice", where="--adapter")
        out[name.strip()] = path.strip()
    return out


def _check_adapter_dir(name: str, path: Path) -> None:
    from tailor.adapters.merge import is_adapter_dir

    if not is_adapter_dir(path):
        raise TailorError(f"adapter '{name}': {path} is not an adapter directory (no adapter_config.json)",
                          where="serve.adapters / --adapter", fix="pass the final/ folder of a LoRA training run")
    if not (path / "adapter_model.safetensors").is_file():
        raise TailorError(f"adapter '{name}': {path} has no adapter_model.safetensors", where=str(path),
                          fix="tailor loads adapter weights only from safetensors (pickle files can run code)")


def load_model_for_serving(model_dir: str | Path, cfg: ServeConfig):
    """(model, tokenizer) with every adapter of cfg.adapters attached under its name."""
    from tailor.adapters.merge import adapter_base, is_adapter_dir
    from tailor.models.loading import load_model, load_tokenizer

    model_dir = Path(model_dir)
    base, tok_dir = model_dir, model_dir
    if is_adapter_dir(model_dir):
        _check_adapter_dir(model_dir.name, model_dir)
        base = Path(adapter_base(model_dir))
        has_tok = any((model_dir / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json"))
        tok_dir = model_dir if has_tok else base
    model = load_model(base, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code, device=cfg.device)
    tokenizer = load_tokenizer(tok_dir, trust_remote_code=cfg.trust_remote_code, chat_template=cfg.chat_template)
    if base != model_dir:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(model_dir)).merge_and_unload()
    for i, (name, path) in enumerate(cfg.adapters.items()):
        path = Path(path)
        _check_adapter_dir(name, path)
        if i == 0:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(path), adapter_name=name)
        else:
            model.load_adapter(str(path), adapter_name=name)
    model.eval()
    return model, tokenizer


def load_tokenizer_for_serving(model_dir: str | Path, cfg: ServeConfig):
    """(tokenizer, its directory) alone, for an engine that loads the weights itself (vLLM)."""
    from tailor.models.loading import load_tokenizer

    tokenizer = load_tokenizer(model_dir, trust_remote_code=cfg.trust_remote_code, chat_template=cfg.chat_template)
    return tokenizer, Path(model_dir)


def build_app(model_dir: str | Path, cfg: ServeConfig):
    """The app for `model_dir` with cfg's limits, rules and adapters (the engine starts with the app)."""
    from tailor.serving.app import create_app
    from tailor.serving.engine import Engine
    from tailor.serving.vllm_engine import VllmEngine, choose_engine

    name = cfg.model_name or Path(model_dir).resolve().name
    if name in cfg.adapters:
        raise TailorError(f"the adapter name '{name}' is also the base model's name", where="--adapter / serve.model_name",
                          fix="give the adapter (or the base, with --model-name) another name")
    if choose_engine(cfg, model_dir) == "vllm":
        for adapter, path in cfg.adapters.items():
            _check_adapter_dir(adapter, Path(path))
        tokenizer, tok_dir = load_tokenizer_for_serving(model_dir, cfg)
        engine = VllmEngine(model_dir, tokenizer, cfg, tokenizer_dir=tok_dir)
    else:
        model, tokenizer = load_model_for_serving(model_dir, cfg)
        engine = Engine(model, tokenizer, max_batch_size=cfg.max_batch_size, max_queue=cfg.max_queue,
                        max_context=cfg.max_context)
    return create_app(cfg, engine, model_name=name)


def serve(model_dir: str | Path, cfg: ServeConfig) -> None:
    """Load and serve until interrupted."""
    try:
        import uvicorn
    except ImportError:
        raise TailorError("serving needs the serve extra", fix="pip install 'tailor[serve]'") from None
    app = build_app(model_dir, cfg)
    engine = type(app.state.tailor.engine).__name__
    print(f"serving {app.state.tailor.model_name} with {engine} (adapters: {', '.join(cfg.adapters) or 'none'}) "
          f"on http://{cfg.host}:{cfg.port}  (OpenAPI at /docs)", flush=True)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning", timeout_graceful_shutdown=5)
