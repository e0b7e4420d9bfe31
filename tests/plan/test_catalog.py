"""Every catalog model parses with AutoConfig, builds on the meta device, and counts within 2% of its published size."""

import json

import pytest
from transformers import AutoConfig

from tailor.errors import TailorError
from tailor.plan import catalog, catalog_config, shape_of
from tailor.plan.shape import config_from_dict

NAMES = sorted(catalog())


def test_the_catalog_holds_the_models_the_issue_names():
    for name in ["deepseek-r1-distill-qwen-1.5b", "deepseek-r1-distill-qwen-7b", "deepseek-r1-distill-qwen-14b",
                 "deepseek-r1-distill-qwen-32b", "deepseek-r1-distill-llama-8b", "deepseek-r1-distill-llama-70b",
                 "deepseek-v3", "qwen2.5-7b", "qwen3-8b", "llama-3.1-8b", "llama-3.2-1b"]:
        assert name in NAMES


@pytest.mark.parametrize("name", NAMES)
def test_catalog_config_parses_and_counts_its_published_size(name):
    raw = catalog_config(name)
    AutoConfig.for_model(raw["model_type"], **{k: v for k, v in raw.items() if k != "model_type"})
    shape = shape_of(config_from_dict(raw), raw, name=name)
    published = catalog()[name]["published_parameters"]
    assert abs(shape.parameters / published - 1) < 0.02, (name, shape.parameters, published)
    assert not shape.unknown
    if raw.get("tie_word_embeddings"):
        assert "head" not in shape.by_kind  # tied: one tensor, counted once


def test_moe_shapes_are_read():
    v3 = shape_of(config_from_dict(catalog_config("deepseek-v3")), catalog_config("deepseek-v3"))
    assert (v3.num_experts, v3.experts_per_token, v3.moe_layers, v3.kv_lora_rank) == (256, 8, 58, 512)
    assert v3.by_kind["experts"] > 0.9 * v3.parameters


def test_names_are_forgiving_and_unknown_names_list_the_catalog():
    assert catalog_config("deepseek-ai/DeepSeek-V3") == catalog_config("deepseek-v3")
    with pytest.raises(TailorError) as e:
        catalog_config("llama-4-9000b")
    assert "deepseek-r1-distill-qwen-7b" in e.value.fix and e.value.where == "--model"
    assert all(json.dumps(v) for v in catalog().values())
