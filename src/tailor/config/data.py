"""The data section: sources, cleaning steps, de-duplication, augmentation and splits."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, field_validator, model_validator

from tailor.config.documents import DocumentConfig
from tailor.config.sections import ChatTemplate, InputPath, OutputPath, Section


class SourceConfig(Section):
    """One input: a file, folder, glob or saved `datasets` directory, or a dataset of a LLaMA-Factory registry."""

    path: InputPath | None = Field(None, description="A .json/.jsonl/.csv/.parquet/.txt file, a document (.pdf/.docx/.html/.htm/.md/.png/.jpg/.tiff), a folder, a glob (data/*.jsonl) or a saved `datasets` directory.")
    registry: InputPath | None = Field(None, description="A LLaMA-Factory dataset_info.json (or the folder holding it); use with `name`.")
    name: str | None = Field(None, description="Dataset name inside `registry`.")
    format: Literal["auto", "messages", "sharegpt", "alpaca", "text", "classification", "preference", "kto", "prompt"] = Field(
        "auto", description="Record format; auto detects it per record (kto = a conversation whose last assistant turn has a true/false `label`; prompt = a `prompt` without answers, e.g. GRPO prompts with an `answer` column).")
    columns: dict[str, str] = Field(default_factory=dict, description="Canonical field -> column in the file, e.g. {instruction: question, output: answer, messages: dialog}.")
    tags: dict[str, str] = Field(default_factory=dict, description="sharegpt keys and role names: role_tag, content_tag, user_tag, assistant_tag, system_tag, observation_tag, function_tag.")
    text_per: Literal["line", "file"] = Field("line", description="Plain .txt files: one document per line, or the whole file as one document.")
    split: Literal["auto", "train", "eval", "test"] = Field("auto", description="The split these rows go to; auto = data.split decides.")
    max_rows: int | None = Field(None, ge=1, description="Read at most this many rows from this source.")
    document: DocumentConfig = Field(default_factory=DocumentConfig, description="Documents (.pdf, .docx, .html, .md, images): text chunks or QA pairs, OCR, boilerplate removal.")

    @model_validator(mode="after")
    def _one_place(self) -> "SourceConfig":
        if bool(self.path) == bool(self.registry):
            raise ValueError("a source needs exactly one of `path` (files) or `registry` + `name` (dataset_info.json)")
        if self.registry and not self.name:
            raise ValueError("a registry source needs `name`: the dataset's key in dataset_info.json")
        return self


class _Step(Section):
    pass


class NfkcStep(_Step):
    step: Literal["nfkc"] = Field(description="Unicode NFKC normalization (full-width ASCII to half-width; CJK text kept).")


class ControlStep(_Step):
    step: Literal["strip_control"] = Field(description="Remove control and zero-width characters (newlines and tabs kept).")


class WhitespaceStep(_Step):
    step: Literal["whitespace"] = Field(description="Collapse runs of spaces, trim lines, at most one blank line in a row.")


class HtmlStep(_Step):
    step: Literal["html"] = Field(description="HTML to text: drop tags, scripts and styles, unescape entities, keep block breaks.")


class RegexStep(_Step):
    step: Literal["regex"] = Field(description="A user rule: replace every match, or drop rows that match.")
    pattern: str = Field(description="Python regular expression.")
    replace: str = Field("", description="Replacement (with action=replace); \\1 refers to groups.")
    action: Literal["replace", "drop"] = Field("replace", description="replace matches, or drop the whole row when it matches.")


class ChineseStep(_Step):
    step: Literal["chinese"] = Field(description="Convert Chinese script (OpenCC tables).")
    convert: Literal["t2s", "s2t"] = Field("t2s", description="t2s = traditional to simplified, s2t = simplified to traditional.")


class PinyinStep(_Step):
    step: Literal["pinyin"] = Field(description="Add pinyin to Chinese text (pypinyin, phrase-aware readings; the pinyin extra): annotate = each Chinese word followed by its reading, 退货(tuì huò); replace = the reading instead of the characters, tuìhuò.")
    mode: Literal["annotate", "replace"] = Field("annotate", description="annotate = keep the characters and add the reading in parentheses; replace = write the reading only (character and pinyin inputs then meet in one form).")
    tones: Literal["marks", "numbers", "none"] = Field("marks", description="marks = tuì huò, numbers = tui4 huo4, none = tui huo.")


PII_KINDS = ("email", "phone", "id_card", "bank_card", "ip")


class PiiStep(_Step):
    step: Literal["pii"] = Field(description="Mask personal data with typed placeholders like <EMAIL>, <PHONE>.")
    kinds: list[Literal["email", "phone", "id_card", "bank_card", "ip"]] = Field(
        default_factory=lambda: list(PII_KINDS), description="Which kinds of personal data to mask.")


class LengthStep(_Step):
    step: Literal["length"] = Field(description="Drop rows outside length bounds (characters of all text; tokens need a tokenizer).")
    min_chars: int | None = Field(None, ge=0, description="Drop rows with fewer characters.")
    max_chars: int | None = Field(None, ge=1, description="Drop rows with more characters.")
    min_tokens: int | None = Field(None, ge=0, description="Drop rows with fewer tokens (model.tokenizer or model.path).")
    max_tokens: int | None = Field(None, ge=1, description="Drop rows with more tokens.")


class LanguageStep(_Step):
    step: Literal["language"] = Field(description="Keep only rows whose detected language is listed (script-based: zh, ja, ko, ru, ar, en/latin).")
    keep: list[str] = Field(description="Languages to keep, e.g. [en, zh].")


CleanStep = Annotated[Union[NfkcStep, ControlStep, WhitespaceStep, HtmlStep, RegexStep, ChineseStep, PinyinStep, PiiStep, LengthStep,
                            LanguageStep], Field(discriminator="step")]


class DedupConfig(Section):
    exact: bool | None = Field(None, description="Drop exact duplicates (hash of the normalized text: case, spaces and punctuation folded); None = on for data.sources, off for data.train files.")
    near: bool | None = Field(None, description="Drop near duplicates found with MinHash LSH; None = on for data.sources, off for data.train files.")
    threshold: float = Field(0.8, gt=0, le=1, description="Estimated Jaccard similarity at or above which two rows are near duplicates.")
    num_perm: int = Field(128, ge=16, description="MinHash permutations (more = more exact, slower).")
    ngram: int = Field(5, ge=1, description="Character n-gram size of the shingles (character-based so it works for Chinese).")
    across_splits: bool = Field(True, description="Also drop eval/test rows that have an exact or near twin in train.")


class EdaConfig(Section):
    rate: float = Field(0.0, ge=0, le=1, description="Share of train rows that get augmented copies (0 = off).")
    copies: int = Field(1, ge=1, description="Augmented copies per chosen row.")
    alpha: float = Field(0.1, gt=0, le=0.5, description="Share of words each operation touches.")
    ops: list[Literal["synonym", "insert", "swap", "delete"]] = Field(
        default_factory=lambda: ["synonym", "insert", "swap", "delete"], description="EDA operations to draw from.")
    dictionary: InputPath | None = Field(None, description="User synonym file (JSON {word: [synonyms]} or TSV word<TAB>syn1,syn2) added to the built-in bilingual one.")
    fields: Literal["prompt", "all"] = Field("prompt", description="prompt = only user turns / instructions change (answers keep their facts); all = every text.")


class FillConfig(Section):
    templates: list[str] = Field(default_factory=list, description="Row templates with {slot} fields, as JSON objects in text (e.g. an alpaca or messages row); a slot may add filters: {slot|plural}, {slot|a} (a/an), {slot|lower}, {slot|upper}, {slot|capitalize}.")
    slots: dict[str, list[str]] = Field(default_factory=dict, description="Slot name -> values to fill in.")
    count: int = Field(0, ge=0, description="Rows to generate (0 = off); every slot combination at most once.")


class BackTranslationConfig(Section):
    model: InputPath | None = Field(None, description="Local model directory (seq2seq or causal LM) used as the translator (None = off).")
    pivot: str = Field("zh", description="Language to translate to and back from.")
    source: str = Field("en", description="Language of the rows being augmented.")
    rate: float = Field(0.0, ge=0, le=1, description="Share of train rows to back-translate.")
    max_new_tokens: int = Field(128, ge=1, description="Tokens per translation.")


class ImageAugmentConfig(Section):
    rotation: float = Field(0.0, ge=0, le=180, description="Rotate each training image by a random angle in [-rotation, rotation] degrees (0 = off).")
    scale: float = Field(1.0, gt=0, le=1, description="Crop each training image to a random share in [scale, 1] of its area, then resize back (1 = off).")
    color_jitter: float = Field(0.0, ge=0, lt=1, description="Scale brightness, contrast and saturation by random factors in [1 - color_jitter, 1 + color_jitter] (0 = off).")
    cutmix: float = Field(0.0, ge=0, le=1, description="Probability that a training image gets CutMix's box (a random share of its area) pasted, at the same place, from another training image of the same class: a row with the same answer (SFT) or the same caption (contrastive). Labels are not mixed: a free-text answer has no soft label, so only a same-class partner keeps it true. Rows with several images and images alone in their class are left unmixed (0 = off).")


class PinyinAugmentConfig(Section):
    rate: float = Field(0.0, ge=0, le=1, description="Share of train rows that get copies with Chinese words typed in pinyin (0 = off); rows without Chinese in the prompt are skipped and counted.")
    copies: int = Field(1, ge=1, description="Pinyin copies per chosen row.")
    share: float = Field(0.5, gt=0, le=1, description="Share of the Chinese words of each text written in pinyin (1 = all), drawn per word: 我想tuihuo.")
    tones: Literal["marks", "numbers", "none"] = Field("none", description="How the pinyin is typed: none = tuihuo (what most users type), numbers = tui4huo4, marks = tuìhuò.")
    fields: Literal["prompt", "all"] = Field("prompt", description="prompt = only user turns / instructions (answers keep their characters); all = every text.")


class AugmentConfig(Section):
    image: ImageAugmentConfig = Field(default_factory=ImageAugmentConfig, description="Vision-language training: train-only image augmentation, drawn anew for every batch.")
    eda: EdaConfig = Field(default_factory=EdaConfig, description="Easy data augmentation (synonym, insert, swap, delete).")
    fill: FillConfig = Field(default_factory=FillConfig, description="Rows generated from templates and slot values.")
    back_translation: BackTranslationConfig = Field(default_factory=BackTranslationConfig, description="Paraphrases through a pivot language.")
    pinyin: PinyinAugmentConfig = Field(default_factory=PinyinAugmentConfig, description="Copies of rows whose Chinese prompts are partly typed in pinyin (pypinyin; the pinyin extra), for users who mix pinyin and characters.")
    seed: int = Field(0, description="Seed for every augmentation draw.")


class SplitConfig(Section):
    eval: float = Field(0.0, ge=0, description="Validation split: a share (< 1) or a row count (>= 1).")
    test: float = Field(0.0, ge=0, description="Test split: a share (< 1) or a row count (>= 1).")
    stratify_by: str | None = Field(None, description="Keep this field's class proportions equal across splits (e.g. label).")
    group_by: str | None = Field(None, description="Keep all rows sharing this field's value in one split (e.g. customer_id).")
    time_column: str | None = Field(None, description="Order by this field: train strictly before eval before test.")
    seed: int = Field(0, description="Seed for the split.")

    @model_validator(mode="after")
    def _one_mode(self) -> "SplitConfig":
        if sum(x is not None for x in (self.stratify_by, self.group_by, self.time_column)) > 1:
            raise ValueError("choose at most one of split.stratify_by, split.group_by, split.time_column")
        return self


class DataConfig(Section):
    train: list[InputPath] = Field(default_factory=list, description="Training files (.jsonl/.json/.txt) or a prepared dataset directory (`tailor data prepare`).")
    eval: list[InputPath] = Field(default_factory=list, description="Validation files in the same formats; empty = hold out data.val_ratio of train.")
    val_ratio: float = Field(0.0, ge=0.0, lt=1.0, description="Share of data.train rows held out for validation (seeded by train.seed) when data.eval is empty.")
    format: Literal["auto", "text", "messages", "alpaca", "sharegpt"] = Field("auto", description="Record format; auto detects it per record.")
    text_field: str = Field("text", description="Field that holds raw text in `text` records.")
    max_length: int = Field(512, ge=8, description="Maximum tokens per training sequence (longer conversations are truncated and counted).")
    packing: bool | None = Field(None, description="Pack several samples into one sequence (no attention across them); default on for pretrain, off for sft. Pretraining without packing cuts each document into consecutive data.max_length blocks (no text lost, no block spans two documents); with packing, documents are concatenated and cut into full blocks (the tail shorter than a block is counted in the data report).")
    chat_template: ChatTemplate = None
    system_prompt: str | None = Field(None, description="System message prepended to conversations that have none.")
    sources: list[SourceConfig] = Field(default_factory=list, description="Inputs of `tailor data prepare` (files, folders, globs, registry entries).")
    on_error: Literal["raise", "skip"] = Field("raise", description="A malformed row stops the run with file, line and field (raise) or is skipped and counted (skip).")
    clean: list[CleanStep] = Field(default_factory=list, description="Ordered cleaning steps: nfkc, strip_control, whitespace, html, regex, chinese, pii, length, language.")
    dedup: DedupConfig = Field(default_factory=DedupConfig, description="Exact and near-duplicate removal, within and across splits.")
    augment: AugmentConfig = Field(default_factory=AugmentConfig, description="Train-split augmentation (never eval/test).")
    split: SplitConfig = Field(default_factory=SplitConfig, description="How rows are split into train/eval/test.")
    prepared_dir: OutputPath = Field("runs/data", description="Where `tailor data prepare` writes the prepared dataset (splits, report, cache key); relative = to the working directory.")
    num_proc: int = Field(1, ge=1, description="Processes for tokenization.")

    _one_file_is_a_list = field_validator("train", "eval", mode="before")(lambda v: [v] if isinstance(v, str) else v)

    @field_validator("clean", mode="before")
    @classmethod
    def _bare_step_names(cls, v):
        # `- nfkc` is shorthand for `- step: nfkc`.
        if isinstance(v, list):
            return [{"step": s} if isinstance(s, str) else s for s in v]
        return v


