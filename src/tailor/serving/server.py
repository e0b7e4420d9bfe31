"""`tailor serve`: load a model (and its LoRA adapters) and run the OpenAI-compatible server.

MODEL_DIR may be a model directory (a merged or compressed one loads the same way), or an adapter
directory, which is folded into its base so that the base name serves base + adapter. Each
`--adapter NAME=DIR` is loaded onto the same base with peft and chosen by a request's `model`.
Weights load only from safetensors; `trust_remote_code` stays off unless serve.model.trust_remote_code.
serve.engine picks the generation engine (the built-in one, or vLLM on a GPU: see vllm_engine).
Instead of MODEL_DIR, a ProductionSource (for serve.registry + serve.registry_model, the one that
tailor.mlops.follow builds) names the production version; the server switches to each newly promoted
one without dropping requests (see follow).
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
    from tailor.adapters.loading import is_adapter_dir

    if not is_adapter_dir(path):
        raise TailorError(f"adapter '{name}': {path} is not an adapter directory (no adapter_config.json)",
                          where="serve.adapters / --adapter", fix="pass the final/ folder of a LoRA training run")
    if not (path / "adapter_model.safetensors").is_file():
        raise TailorError(f"adapter '{name}': {path} has no adapter_model.safetensors", where=str(path),
                          fix="tailor loads adapter weights only from safetensors (pickle files can run code)")
    from tailor.models.loading import is_sequence_classifier

    if is_sequence_classifier(path):
        raise TailorError(f"adapter '{name}': {path} is a sequence-classification adapter; it predicts labels and cannot "
                          "serve chat completions", where=str(path / "adapter_config.json"),
                          fix="serve a causal-LM model or adapter; score classifiers with `tailor eval --task classification`")


def load_model_for_serving(model_dir: str | Path, cfg: ServeConfig, base: str | Path | None = None):
    """(model, tokenizer) with every adapter of cfg.adapters attached under its name.

    `base`: for an adapter directory, the base model to fold it into (default: the one its config records).
    """
    from tailor.adapters.loading import adapter_base, is_adapter_dir, load_causal_lm, tokenizer_dir
    from tailor.models.loading import load_tokenizer

    model_dir = Path(model_dir)
    base_dir, tok_dir = model_dir, model_dir
    if is_adapter_dir(model_dir):
        _check_adapter_dir(model_dir.name, model_dir)
        base_dir = Path(base or adapter_base(model_dir))
        tok_dir = tokenizer_dir(model_dir, base_dir)
    model = load_causal_lm(base_dir, dtype=cfg.model.dtype, trust_remote_code=cfg.model.trust_remote_code, device=cfg.device)
    tokenizer = load_tokenizer(tok_dir, trust_remote_code=cfg.model.trust_remote_code, chat_template=cfg.chat_template)
    if base_dir != model_dir:
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

    tokenizer = load_tokenizer(model_dir, trust_remote_code=cfg.model.trust_remote_code, chat_template=cfg.chat_template)
    return tokenizer, Path(model_dir)


def build_engine(model_dir: str | Path, cfg: ServeConfig, base: str | Path | None = None, metrics=None):
    """The engine serve.engine chooses for `model_dir` (not started); `base` as in load_model_for_serving."""
    from tailor.serving.engine import Engine
    from tailor.adapters.vision import is_vision_adapter
    from tailor.models.vision import is_vision_model_dir
    from tailor.serving.vision import load_vision_for_serving
    from tailor.serving.vllm_engine import VllmEngine, choose_engine

    processor = None
    if is_vision_model_dir(model_dir) or is_vision_adapter(model_dir, base):  # images in chat requests, through the same batched engine
        model, processor = load_vision_for_serving(model_dir, cfg, base)
        tokenizer = processor.tokenizer
    elif choose_engine(cfg, model_dir) == "vllm":
        for adapter, path in cfg.adapters.items():
            _check_adapter_dir(adapter, Path(path))
        tokenizer, tok_dir = load_tokenizer_for_serving(model_dir, cfg)
        return VllmEngine(model_dir, tokenizer, cfg, tokenizer_dir=tok_dir, metrics=metrics)
    else:
        model, tokenizer = load_model_for_serving(model_dir, cfg, base=base)
    if cfg.runtime:  # CPU speed-ups for the engine's decoding steps (serve.runtime=false: transformers' own path)
        from tailor import runtime

        runtime.enable(model)
    return Engine(model, tokenizer, max_batch_size=cfg.max_batch_size, max_queue=cfg.max_queue,
                  max_context=cfg.max_context, metrics=metrics, processor=processor)


def check_model_name(name: str, cfg: ServeConfig) -> None:
    """The base model's request name must not also name an adapter."""
    if name in cfg.adapters:
        raise TailorError(f"the adapter name '{name}' is also the base model's name", where="--adapter / serve.model_name",
                          fix="give the adapter (or the base, with --model-name) another name")


def build_app(model_dir: str | Path | None, cfg: ServeConfig, source=None):
    """The app for `model_dir` with cfg's limits, rules and adapters (the engine starts with the app).

    With `source` (a follow.ProductionSource, e.g. tailor.mlops.follow.registry_source(cfg)) instead of a
    directory: the source's production version, followed as it changes.
    """
    from tailor.serving.app import create_app

    if source is not None:
        if model_dir is not None:
            raise TailorError(f"got both a model directory ({model_dir}) and a registry to follow", where="tailor serve",
                              fix="pass either MODEL_DIR or --registry URL --registry-model NAME")
        from tailor.serving.follow import build_following_app

        return build_following_app(cfg, source)
    if cfg.registry or cfg.registry_model:  # set, but nobody turned it into a source: never ignore it
        raise TailorError("serve.registry / serve.registry_model are set but no source to follow was given",
                          where="build_app(source=...)", fix="pass source=tailor.mlops.follow.registry_source(cfg)")
    if model_dir is None:
        raise TailorError("tailor serve needs a model directory, or a registry to follow", where="tailor serve",
                          fix="tailor serve MODEL_DIR, or tailor serve --registry registry.db --registry-model NAME")
    name = cfg.model_name or Path(model_dir).resolve().name
    check_model_name(name, cfg)
    return create_app(cfg, build_engine(model_dir, cfg), model_name=name)


def serve(model_dir: str | Path | None, cfg: ServeConfig, source=None) -> None:
    """Load and serve until interrupted (model_dir None: follow `source`, as in build_app)."""
    try:
        import uvicorn
    except ImportError:
        raise TailorError("serving needs the serve extra", fix="pip install 'tailor[serve]'") from None
    app = build_app(model_dir, cfg, source)
    st = app.state.tailor
    engine = type(st.engine).__name__
    version = (f" version {st.version} from {cfg.registry} (checked every {cfg.registry_poll_seconds:g} s)"
               if st.follower else "")
    print(f"serving {st.model_name}{version} with {engine} (adapters: {', '.join(cfg.adapters) or 'none'}) "
          f"on http://{cfg.host}:{cfg.port}  (OpenAPI at /docs)", flush=True)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning", timeout_graceful_shutdown=5)
