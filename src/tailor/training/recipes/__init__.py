"""Training recipes: one file per objective, each composing the shared phases (tailor.training.phases).

    train.objective   recipe                      reads
    pretrain, sft     recipes/lm.py:train         causal-LM tokens (packed with data.packing for sft)
    classification    recipes/classification.py  {"text", "label"} rows, a label head on the base
    dpo, orpo, kto,   recipes/preference.py       preference pairs / KTO's labelled answers (TRL's trainers)
      simpo
    grpo              recipes/grpo.py             prompts + reference answers; sampled answers scored by rewards (TRL)
    sft (a vision-    recipes/vision.py           conversations with <image> placeholders + images (processor's tokens)
      language model)
    contrastive       recipes/contrastive.py      image-caption pairs: CLIP-style symmetric InfoNCE (vision side)
    (tailor distill)  recipes/distill.py          causal-LM tokens + a frozen teacher's soft targets

Where new objectives go: a new file here with one `train(recipe, callbacks=None) -> TrainResult` that reads
top to bottom like the ones above, its objective name in `RECIPES` (and in the config's train.objective), and,
when its loss differs, a TailorTrainer subclass beside it (tailor.training.trainer). Preference optimization
(DPO, ORPO, KTO, CPO/SimPO) goes in recipes/preference.py and RL with verifiable rewards (GRPO) in recipes/grpo.py,
both building TRL's trainers; embedding models (contrastive loss) in recipes/contrastive.py.
"""

from __future__ import annotations

from typing import Callable

from tailor.config import Recipe
from tailor.errors import TailorError
from tailor.training.recipes import classification, contrastive, grpo, lm, preference, vision


# train.objective -> recipe function.
RECIPES: dict[str, Callable] = {"pretrain": lm.train, "sft": lm.train, "classification": classification.train,
                                "dpo": preference.train, "orpo": preference.train, "kto": preference.train,
                                "simpo": preference.train, "grpo": grpo.train, "contrastive": contrastive.train}


def recipe_for(recipe: Recipe) -> Callable:
    """The recipe function that trains `recipe.train.objective`."""
    objective = recipe.train.objective
    if objective not in RECIPES:
        raise TailorError(f"train.objective={objective} has no training recipe", where="train.objective",
                          fix=f"use one of: {', '.join(RECIPES)}")
    if objective == "sft" and vision.is_vision_recipe(recipe):
        return vision.train
    return RECIPES[objective]
