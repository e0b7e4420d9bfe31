"""A catalog of popular models' public config.json files, shipped with tailor, so a plan works before a model is
downloaded: `tailor plan RECIPE --model deepseek-r1-distill-qwen-7b`.

Each entry is the model's config.json as published on the Hugging Face Hub (the fields that shape the network:
sizes, layers, heads, experts, vocabulary, positions, tied embeddings); catalog/index.json names the source and
the published parameter count, which tests/plan/test_catalog.py checks the meta-device count against.
"""

from __future__ import annotations

import difflib
import json
from functools import lru_cache
from importlib import resources

from tailor.errors import TailorError


@lru_cache(maxsize=1)
def _index() -> dict:
    return json.loads(resources.files("tailor.plan").joinpath("catalog/index.json").read_text(encoding="utf-8"))


def catalog() -> dict[str, dict]:
    """name -> {source: the published config.json's address, published_parameters: the model's stated size}."""
    return {k: dict(v) for k, v in _index().items()}


def catalog_config(name: str) -> dict:
    """The config.json fields of catalog model `name`; an unknown name is a TailorError listing the catalog."""
    key = name.strip().lower()
    key = key.rsplit("/", 1)[-1] if "/" in key else key  # deepseek-ai/DeepSeek-V3 -> deepseek-v3
    if key not in _index():
        near = difflib.get_close_matches(key, list(_index()), n=1)
        raise TailorError(f"unknown model '{name}'" + (f". Did you mean '{near[0]}'?" if near else ""),
                          where="--model", fix="use one of: " + ", ".join(_index()))
    return json.loads(resources.files("tailor.plan").joinpath(f"catalog/{key}.json").read_text(encoding="utf-8"))
