"""The embedded default (`tailor quickstart`): a synthetic store-support domain, a tiny DeepSeek-V3 model
trained from scratch, LoRA SFT, evaluation and merge, composed only from the public stages."""

from tailor.quickstart.pipeline import QuickstartResult, recipe_path, run

__all__ = ["QuickstartResult", "recipe_path", "run"]
