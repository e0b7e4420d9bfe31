"""The schema: the single source of truth for YAML recipes, `key=value` overrides, flags and `--help`.

sections.py holds the shared sections (model, adapter, train, eval, distill, refresh), data.py the data
section, commands.py the recipe and the settings of each command built from those sections, io.py the
loading, overrides and help text. Everything is re-exported here: import from `tailor.config`.
"""

from tailor.config.commands import OutputRule, QuickstartConfig, Recipe, ServeConfig
from tailor.config.data import (PII_KINDS, AugmentConfig, BackTranslationConfig, ChineseStep, CleanStep, ControlStep,
                                DataConfig, DedupConfig, EdaConfig, FillConfig, HtmlStep, LanguageStep, LengthStep,
                                NfkcStep, PiiStep, RegexStep, SourceConfig, SplitConfig, WhitespaceStep)
from tailor.config.io import (_nearest, _type_name, build, describe_fields, field_paths, help_text, load_recipe,
                              merge_settings, parse_overrides, parse_preset_overrides, read_yaml, save_recipe)
from tailor.config.sections import (AdapterConfig, DistillConfig, EvalConfig, ModelConfig, RefreshConfig, Section,
                                    TrainConfig)

__all__ = [
    "AdapterConfig", "AugmentConfig", "BackTranslationConfig", "ChineseStep", "CleanStep", "ControlStep", "DataConfig",
    "DedupConfig", "DistillConfig", "EdaConfig", "EvalConfig", "FillConfig", "HtmlStep", "LanguageStep", "LengthStep",
    "ModelConfig", "NfkcStep", "OutputRule", "PII_KINDS", "PiiStep", "QuickstartConfig", "Recipe", "RegexStep",
    "RefreshConfig", "Section", "ServeConfig", "SourceConfig", "SplitConfig", "TrainConfig", "WhitespaceStep", "_nearest",
    "_type_name", "build", "describe_fields", "field_paths", "help_text", "load_recipe", "merge_settings",
    "parse_overrides", "parse_preset_overrides", "read_yaml", "save_recipe",
]
