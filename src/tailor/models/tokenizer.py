"""Train a byte-level BPE tokenizer locally, with DeepSeek-V3 special tokens and chat template.

Used when a model is built from a preset rather than loaded from a checkpoint: the tokenizer is
trained on the user's own text (nothing is downloaded), so it fits their language mix. Being
byte-level, every string round-trips exactly (Chinese, emoji, newlines) and no unk token exists.

Plain `tokenizer(text)` adds no special tokens; the chat template adds the BOS token itself, and
packing code adds EOS between documents. This keeps `decode(encode(x)) == x` and avoids the
double-BOS that appears when a rendered chat is tokenized by a tokenizer that also adds BOS.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

from tailor.data.templates import DEEPSEEK_CHAT_TEMPLATE, SPECIAL_TOKENS, TOOL_OUTPUT  # noqa: F401 (export and tests read them here)
from tailor.errors import TailorError

log = logging.getLogger(__name__)

# Each CJK ideograph, kana or hangul syllable is its own pre-token, so BPE never merges across
# Chinese word boundaries: with no spaces to mark words, a merge like "退回睡袋" would give the same
# entity different tokens in different contexts, which a model trained on a small domain corpus
# cannot untangle (measured: Chinese fact recall on training questions rose from ~50% with
# whole-run merges). Latin text keeps its usual word-level merges.
_CJK_RUN = r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u309f\u30a0-\u30ff\uac00-\ud7af]"
# Numbers are split into groups of at most 3 digits, so arithmetic sees a consistent segmentation.
_DIGITS = r"\p{N}{1,3}"


def _build_pre_tokenizer():
    from tokenizers import Regex, pre_tokenizers

    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_DIGITS), behavior="isolated"),
            pre_tokenizers.Split(Regex(_CJK_RUN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    out_dir: str | Path | None = None,
    min_frequency: int = 2,
    model_max_length: int = 2048,
):
    """Train a byte-level BPE on `texts` and return it as a `PreTrainedTokenizerFast`.

    The special tokens get the first ids (bos=0, eos=1, pad=2, matching DeepSeek-V3's config
    defaults) and are never split. The vocabulary can end up smaller than `vocab_size` when the
    corpus has fewer mergeable pairs than that; use `len(tokenizer)` for the model's vocab size.
    When `out_dir` is given, the tokenizer is saved there with `save_pretrained` and loads back with
    `AutoTokenizer.from_pretrained(out_dir)`, chat template included.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = list(SPECIAL_TOKENS.values())
    minimum = 256 + len(specials)
    if not isinstance(vocab_size, int) or vocab_size < minimum:
        raise TailorError(
            f"vocab_size={vocab_size} is too small for a byte-level tokenizer",
            where="tokenizer vocab_size",
            fix=f"use at least {minimum} (256 byte symbols + {len(specials)} special tokens); "
            "a few thousand is typical for a tiny model",
        )
    if min_frequency < 1:
        raise TailorError(
            f"min_frequency={min_frequency} must be at least 1", where="tokenizer min_frequency"
        )
    if isinstance(texts, (str, bytes)):
        # A lone string would be iterated character by character and train a useless tokenizer.
        raise TailorError(
            "texts must be an iterable of documents, not a single string",
            where="train_tokenizer(texts=...)",
            fix="pass a list of strings, e.g. [text], or corpus_from_files(paths)",
        )

    counts = {"documents": 0, "empty": 0}

    def documents() -> Iterator[str]:
        for text in texts:
            if not isinstance(text, str):
                raise TailorError(
                    f"tokenizer training text #{counts['documents'] + counts['empty'] + 1} is a "
                    f"{type(text).__name__}, not a string",
                    where="train_tokenizer(texts=...)",
                    fix="pass strings only (corpus_from_files extracts them from .txt/.jsonl/.json)",
                )
            if text.strip():
                counts["documents"] += 1
                yield text
            else:
                counts["empty"] += 1

    tok = Tokenizer(models.BPE())  # byte-level: every byte is in the alphabet, so no unk token
    tok.pre_tokenizer = _build_pre_tokenizer()
    tok.decoder = decoders.ByteLevel()
    # trim_offsets=False keeps each token's offsets covering its leading space, so character
    # spans (used for loss masks) map onto whole tokens.
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(documents(), trainer=trainer)
    if counts["documents"] == 0:
        raise TailorError(
            "the tokenizer training corpus is empty"
            + (f" ({counts['empty']} blank documents)" if counts["empty"] else ""),
            where="tokenizer training data",
            fix="pass files with text: .txt (one document per line) or .jsonl/.json records "
            "with a 'text' field or 'messages'",
        )
    log.info(
        "trained tokenizer: %d tokens (asked for %d) from %d documents (%d blank skipped)",
        tok.get_vocab_size(),
        vocab_size,
        counts["documents"],
        counts["empty"],
    )

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=SPECIAL_TOKENS["bos"],
        eos_token=SPECIAL_TOKENS["eos"],
        pad_token=SPECIAL_TOKENS["pad"],
        additional_special_tokens=[SPECIAL_TOKENS["user"], SPECIAL_TOKENS["assistant"]],
        model_max_length=model_max_length,
        # The default clean-up would turn "a ." into "a." and break exact round-trips.
        clean_up_tokenization_spaces=False,
        padding_side="right",
    )
    tokenizer.chat_template = DEEPSEEK_CHAT_TEMPLATE
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        tokenizer.save_pretrained(out)
    return tokenizer


def corpus_from_files(paths: str | Path | Iterable[str | Path]) -> Iterator[str]:
    """Yield the texts of data files for tokenizer training, read with tailor's data loader.

    Any file, folder or glob `tailor data prepare` reads works (.txt, .jsonl, .json, .csv, .parquet,
    saved datasets; messages, sharegpt, alpaca, text, classification, preference): every text of
    every record (message contents, text, chosen/rejected) is one document. All paths are checked
    before reading starts, so a typo in the last file fails at once; a malformed row stops with its
    file and line.
    """
    from tailor.config import SourceConfig
    from tailor.data.loading import source_files

    if isinstance(paths, (str, Path)):
        paths = [paths]
    paths = [str(p) for p in paths]
    if not paths:
        raise TailorError("no tokenizer training files given", fix="pass --data FILE [FILE ...]")
    for p in paths:
        source_files(p)  # raises for a missing path or an unsupported file type
    return _chain([SourceConfig(path=p) for p in paths])


def _chain(sources) -> Iterator[str]:
    from tailor.data.loading import iter_source
    from tailor.data.records import StepReport, iter_texts

    for src in sources:
        for rec in iter_source(src, "raise", StepReport(f"tokenizer corpus {src.path}")):
            yield from (t for t in iter_texts(rec) if t.strip())
