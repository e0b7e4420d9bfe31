"""The schema: the single source of truth for YAML recipes, `key=value` overrides, flags and `--help`.

sections.py  shared sections (model, adapter, train, eval, distill, refresh) and the path/dtype/device types
alignment.py the preference and grpo sections (train.objective dpo, orpo, kto, simpo, grpo)
data.py      the data section (sources, cleaning, de-dup, augmentation, splits)
recipe.py    the recipe, the serve and quickstart settings, and the view of the recipe each command reads
commands.py  every command's positionals and flags (choices as Literals)
flags.py     argparse arguments generated from those classes; parsed values validated by them
paths.py     where a recipe's paths point (relative to the recipe; saved recipes hold absolute paths)
io.py        loading recipes, `key=value` overrides, help text
Everything is re-exported here: import from `tailor.config`.
"""

from tailor.config.alignment import GrpoConfig, PreferenceConfig, RewardSpec
from tailor.config.commands import *  # noqa: F401,F403  (every command's settings and choice Literals)
from tailor.config.commands import MEASURE_MAX_EXAMPLES, CommandSettings, HpoSettings
from tailor.config.documents import DocumentConfig
from tailor.config.data import (PII_KINDS, AugmentConfig, BackTranslationConfig, ChineseStep, CleanStep, ControlStep,
                                DataConfig, DedupConfig, EdaConfig, FillConfig, HtmlStep, LanguageStep, LengthStep,
                                NfkcStep, PiiStep, RegexStep, SourceConfig, SplitConfig, WhitespaceStep)
from tailor.config.io import (_nearest, _type_name, build, describe_fields, field_paths, help_text, load_recipe,
                              merge_settings, parse_overrides, parse_preset_overrides, read_yaml, save_recipe)
from tailor.config.paths import absolute_inputs, map_paths, path_role, relative_to_recipe
from tailor.config.recipe import (DataRecipe, DistillRecipe, HpoRecipe, OutputRule, QuickstartConfig, Recipe,
                                  RefreshRecipe, ServeConfig, TrainRecipe)
from tailor.config.sections import (AdapterConfig, DistillConfig, EvalConfig, InputPath, ModelConfig, OutputPath,
                                    PathRole, RefreshConfig, Section, TrainConfig, flag)

__all__ = [
    "AdapterConfig", "AugmentConfig", "BackTranslationConfig", "ChineseStep", "CleanStep", "CommandSettings",
    "ControlStep", "DataConfig", "DataRecipe", "DedupConfig", "DistillConfig", "DistillRecipe", "DocumentConfig", "EdaConfig",
    "EvalConfig", "FillConfig", "GrpoConfig", "PreferenceConfig", "RewardSpec", "HpoRecipe", "HpoSettings", "HtmlStep", "InputPath", "LanguageStep", "LengthStep",
    "MEASURE_MAX_EXAMPLES", "ModelConfig", "NfkcStep", "OutputPath", "OutputRule", "PII_KINDS", "PathRole", "PiiStep",
    "QuickstartConfig", "Recipe", "RefreshConfig", "RefreshRecipe", "RegexStep", "Section", "ServeConfig",
    "SourceConfig", "SplitConfig", "TrainConfig", "TrainRecipe", "WhitespaceStep", "_nearest", "_type_name",
    "absolute_inputs", "build", "describe_fields", "field_paths", "flag", "help_text", "load_recipe", "map_paths",
    "merge_settings", "parse_overrides", "parse_preset_overrides", "path_role", "read_yaml", "relative_to_recipe",
    "save_recipe",
]
