"""Settings of preference optimization (train.objective dpo, orpo, kto, simpo) and of GRPO (train.objective grpo).

Both sections sit beside `train` in a recipe; tailor.training.recipes.preference and .grpo read them, and
tailor.training.args turns them into TRL's configs (DPOConfig, ORPOConfig, KTOConfig, CPOConfig, GRPOConfig).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from tailor.config.sections import InputPath, Section

# TRL's DPO loss variants (trl.DPOConfig.loss_type).
DpoLoss = Literal["sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
                  "aot_unpaired", "apo_zero", "apo_down", "discopop", "sigmoid_norm"]
# The built-in GRPO rewards (tailor.training.rewards).
BuiltinReward = Literal["exact", "normalized", "numeric", "contains", "format", "length", "language"]


class PreferenceConfig(Section):
    """train.objective dpo / orpo / kto / simpo: how far from the reference the policy may move, and the loss."""

    beta: float = Field(0.1, gt=0, description="dpo/kto: strength of the pull towards the reference model (higher = closer; for loss_type=ipo its tau); orpo: weight of the odds-ratio term (lambda); simpo: the reward scale.")
    loss_type: DpoLoss = Field("sigmoid", description="dpo: TRL's loss variant (sigmoid = the DPO paper; hinge, ipo, robust, exo_pair, nca_pair, bco_pair, sppo_hard, aot, aot_unpaired, apo_zero, apo_down, discopop, sigmoid_norm).")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="dpo with loss_type robust (share of flipped labels) or exo_pair (epsilon, must be > 0).")
    simpo_gamma: float = Field(0.5, ge=0, description="simpo: target reward margin between chosen and rejected.")
    desirable_weight: float = Field(1.0, gt=0, description="kto: loss weight of rows labelled true (raise it when they are fewer).")
    undesirable_weight: float = Field(1.0, gt=0, description="kto: loss weight of rows labelled false.")
    rpo_alpha: float | None = Field(None, ge=0, description="dpo: add this weight x the SFT loss on the chosen answers (RPO); None = off.")

    @model_validator(mode="after")
    def _exo_needs_smoothing(self) -> "PreferenceConfig":
        if self.loss_type == "exo_pair" and self.label_smoothing == 0:
            raise ValueError("preference.loss_type=exo_pair needs preference.label_smoothing > 0 (the EXO paper uses 1e-3)")
        return self


class RewardSpec(Section):
    """One GRPO reward: a built-in by `name`, or `function` from the Python `file`; the recipe sums them by weight."""

    name: BuiltinReward | None = Field(None, description="Built-in reward: exact / normalized / numeric / contains (the answer after any </think> against the row's reference), format (a <think>...</think> block then a non-empty answer), length (answer length towards options.target tokens-as-words), language (the answer in the prompt's language, zh or en).")
    file: InputPath | None = Field(None, description="A Python file defining the reward function (it runs your code, with your permissions): def f(prompts, completions, references, **kw) -> list[float | None].")
    function: str = Field("reward", description="Name of the function in `file`.")
    weight: float = Field(1.0, description="Weight of this reward in the sum GRPO trains on.")
    options: dict[str, Any] = Field(default_factory=dict, description="Settings of the reward: numeric {tolerance: 1e-6, relative: false}; length {target: 50}; language {language: auto|zh|en}; a file's function receives them as keywords.")

    @model_validator(mode="after")
    def _one_source(self) -> "RewardSpec":
        if bool(self.name) == bool(self.file):
            raise ValueError("a grpo reward needs exactly one of `name` (a built-in) or `file` (your Python file)")
        return self


class GrpoConfig(Section):
    """train.objective grpo: sampled answers per prompt, their rewards, and the KL pull towards the reference."""

    num_generations: int = Field(4, ge=2, description="Answers sampled per prompt; each is scored relative to its group's mean reward.")
    max_completion_length: int = Field(64, ge=1, description="Most tokens generated per answer.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the answers.")
    beta: float = Field(0.04, ge=0, description="Weight of the KL penalty to the reference model (0 = none, and no reference is kept).")
    rewards: list[RewardSpec] = Field(default_factory=lambda: [RewardSpec(name="numeric")], description="The rewards, summed with their weights (default: the numeric answer against the reference).")
    reference_field: str = Field("answer", description="The row's field holding the reference answer (else the conversation's last assistant turn).")
    missing_reference: Literal["error", "skip"] = Field("error", description="A row without a reference while a reference reward (exact, normalized, numeric, contains) is configured: error stops with the row named; skip leaves it out (counted in the data report).")
    use_vllm: bool = Field(False, description="Generate with vLLM (TRL's colocated engine; needs vLLM and a CUDA GPU).")

    @model_validator(mode="after")
    def _some_reward(self) -> "GrpoConfig":
        if not self.rewards:
            raise ValueError("grpo.rewards is empty: GRPO needs at least one reward")
        return self
