"""The training stage: `train(recipe)` runs the recipe for train.objective (tailor.training.recipes).

Distillation has its own entry, `tailor.training.recipes.distill.distill(recipe)`. Both return a TrainResult.
"""

from __future__ import annotations


def train(recipe, callbacks=None):
    """Train as the recipe says (train.objective: pretrain, sft or classification); returns a TrainResult.

    `callbacks` (transformers TrainerCallbacks) join the Trainer's own, after the telemetry and metric writers.
    """
    from tailor.training.recipes import recipe_for

    return recipe_for(recipe)(recipe, callbacks)


def __getattr__(name):
    # TrainResult and latest_checkpoint without importing transformers for every `import tailor.training`.
    if name == "TrainResult":
        from tailor.training.phases import TrainResult

        return TrainResult
    if name == "latest_checkpoint":
        from tailor.training.checkpoints import latest_checkpoint

        return latest_checkpoint
    raise AttributeError(f"module 'tailor.training' has no attribute {name!r}")
