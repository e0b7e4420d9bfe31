"""Batches for training: `PadCollator` for one sample per row, and packing of tokenized SFT samples into
full sequences with no attention across sample boundaries (`pack_dataset` + `PackingCollator`).

Mechanism: a packed row carries `position_ids` that restart at 0 for every sample, and the batch
carries NO `attention_mask` and `use_cache=False`. transformers' `masking_utils`
(`find_packed_sequence_indices`, called from `create_causal_mask` only when the mask is None and
there is no cache) reads the restarts and builds a block-diagonal causal mask for sdpa, eager and
flex attention. Flash-attention reads the restarts only in a batch of one row, so `check_attention`
refuses it at larger batches. Rotary embeddings see each sample's own positions, so a packed sample
computes exactly what it computes alone (tests/data/test_packing.py checks this on Llama, Qwen2 and
DeepseekV3 with sdpa and eager, and that a 2D mask, a cache or unreset positions leak).

Loss: HF causal-LM losses shift labels by one, so the last token of sample k would predict the first
token of sample k+1. That first label is set to -100; it is never predicted when the sample runs
alone either, so the loss-bearing tokens of a packed row are exactly those of its samples.

Padding rows of a batch get their own position run (0, 1, ...), label -100 and the pad id: they form
one more "sample" that real tokens cannot attend to (it comes later and is a different block).
With no attention mask, the Trainer's `include_num_input_tokens_seen="non_padding"` counts tokens
that differ from the pad id, which is exact when the pad token is not a data token (tailor's own
tokenizers); `PackingStats.tokens` gives the exact count of real tokens regardless.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import asdict, dataclass

import torch
from datasets import Dataset

from tailor.errors import TailorError

IGNORE = -100


@dataclass
class PackingStats:
    """What packing did: sequences in and out, real and loss-bearing tokens, how full rows are."""

    max_length: int
    samples: int = 0          # sequences before packing (after truncation/drops)
    packed: int = 0           # sequences after packing
    tokens: int = 0           # real tokens over all packed rows
    loss_tokens: int = 0      # tokens whose label is predicted (first token of each sample excluded)
    truncated: int = 0        # samples cut to max_length here (sft_dataset normally did that already)
    dropped: int = 0          # samples with no loss-bearing token, counted in the report

    @property
    def fill_ratio(self) -> float:
        """Real tokens / (rows x max_length): how much of each packed row is not padding."""
        return self.tokens / max(self.packed * self.max_length, 1)

    def to_dict(self) -> dict:
        return {**asdict(self), "fill_ratio": round(self.fill_ratio, 4),
                "samples_per_sequence": round(self.samples / max(self.packed, 1), 3)}


def pack_bins(lengths: list[int], max_length: int) -> list[list[int]]:
    """Best-fit-decreasing bin packing: lists of sample indices whose lengths sum to <= max_length.

    Longest first, each into the fullest bin that still has room (ties: the bin opened first), so
    the result depends only on `lengths`. Every index appears exactly once.
    """
    if max_length < 1:
        raise TailorError(f"max_length must be at least 1, got {max_length}", where="data.max_length")
    too_long = [i for i, n in enumerate(lengths) if n > max_length or n < 1]
    if too_long:
        i = too_long[0]
        raise TailorError(f"sample {i} has {lengths[i]} tokens, outside 1..{max_length}", where="packing",
                          fix="truncate samples to data.max_length and drop empty ones before packing")
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (room left, bin index), sorted: best fit = first with room >= n
    for i in sorted(range(len(lengths)), key=lambda k: (-lengths[k], k)):
        n = lengths[i]
        at = bisect.bisect_left(free, (n, -1))
        if at < len(free):
            room, b = free.pop(at)
        else:
            room, b = max_length, len(bins)
            bins.append([])
        bins[b].append(i)
        if room - n > 0:
            bisect.insort(free, (room - n, b))
    return bins


def pack_dataset(ds: Dataset, max_length: int, seed: int = 0, report=None) -> tuple[Dataset, PackingStats]:
    """Pack a dataset of `input_ids`/`labels` rows into rows of at most `max_length` tokens.

    Returns rows with `input_ids`, `labels` (-100 on each sample's first token), `position_ids`
    (restarting at 0 per sample) and `seq_lengths`, in a seeded shuffled order, plus statistics.
    Samples longer than `max_length` are truncated and samples without a loss-bearing token are
    dropped; both are counted in `report` (a `LoadReport`) when one is given.
    """
    missing = {"input_ids", "labels"} - set(ds.column_names)
    if missing:
        raise TailorError(f"cannot pack: dataset lacks column(s) {sorted(missing)} (has {ds.column_names})",
                          where="packing", fix="pack the output of sft_dataset or sft_examples (input_ids and labels)")
    stats = PackingStats(max_length=max_length)
    ids_list, labels_list = [], []
    for n, (ids, labels) in enumerate(zip(ds["input_ids"], ds["labels"])):
        if len(ids) != len(labels):
            raise TailorError(f"row {n} has {len(ids)} input_ids but {len(labels)} labels", where="packing",
                              fix="labels must align token by token with input_ids")
        if len(ids) > max_length:
            ids, labels = ids[:max_length], labels[:max_length]
            stats.truncated += 1
            if report is not None:
                report.skip("truncated to data.max_length at packing (kept)", f"row {n}")
        labels = [IGNORE, *labels[1:]] if labels else labels
        if all(lab == IGNORE for lab in labels):
            stats.dropped += 1
            if report is not None:
                report.skip("no loss-bearing token after the first (nothing to learn when packed)", f"row {n}")
            continue
        ids_list.append(list(ids))
        labels_list.append(labels)

    bins = pack_bins([len(x) for x in ids_list], max_length)
    random.Random(seed).shuffle(bins)
    rows: dict[str, list] = {"input_ids": [], "labels": [], "position_ids": [], "seq_lengths": []}
    for members in bins:
        ids, labels, pos, lens = [], [], [], []
        for i in members:
            ids += ids_list[i]
            labels += labels_list[i]
            pos += range(len(ids_list[i]))
            lens.append(len(ids_list[i]))
        rows["input_ids"].append(ids)
        rows["labels"].append(labels)
        rows["position_ids"].append(pos)
        rows["seq_lengths"].append(lens)
        stats.tokens += len(ids)
        stats.loss_tokens += sum(lab != IGNORE for lab in labels)
    stats.samples, stats.packed = len(ids_list), len(bins)
    return Dataset.from_dict(rows), stats


_ISOLATING = ("sdpa", "eager", "flex_attention")  # their masks come from create_causal_mask, which sees packing


def check_attention(model, batch_size: int) -> None:
    """Raise unless the model's attention implementation keeps packed samples apart at this batch size."""
    impl = getattr(model.config, "_attn_implementation", None) or "eager"
    if impl in _ISOLATING or (impl.startswith("flash_attention") and batch_size == 1):
        return
    raise TailorError(f"attention implementation '{impl}' does not isolate packed samples at batch size {batch_size}",
                      where="data.packing",
                      fix="use sdpa or eager attention, train.batch_size=1 with flash attention, or data.packing=false")


@dataclass
class PackingCollator:
    """Right-pad packed rows into a batch of input_ids, labels and position_ids, with no attention mask.

    Padding gets the pad id, label -100 and its own positions 0, 1, ...: a separate block that no
    real token attends to. An attention mask is deliberately absent, since a 2D mask would switch
    transformers back to one causal block per row (attention across samples); so is the KV cache.
    """

    pad_id: int

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        if any("position_ids" not in f for f in features):
            raise TailorError("PackingCollator needs rows with position_ids", where="data collator",
                              fix="build the dataset with tailor.data.packing.pack_dataset")
        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE, dtype=torch.long)
        pos = torch.arange(width, dtype=torch.long).repeat(len(features), 1)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            ids[i, :n] = torch.tensor(f["input_ids"])
            labels[i, :n] = torch.tensor(f["labels"])
            pos[i, :n] = torch.tensor(f["position_ids"])
            pos[i, n:] -= n
        # A cache (config.use_cache defaults to True outside the Trainer) also turns packed detection off.
        return {"input_ids": ids, "labels": labels, "position_ids": pos, "use_cache": False}


@dataclass
class PadCollator:
    """Right-pad input_ids with the pad id and labels with -100; attention mask marks real tokens."""

    pad_id: int

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            ids[i, :n] = torch.tensor(f["input_ids"])
            labels[i, :n] = torch.tensor(f["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def padding_waste(lengths: list[int], batch_size: int, seed: int = 0) -> float:
    """Share of the tokens of padded batches that are padding: `batch_size` samples per batch in a seeded random
    order (as the Trainer's sampler draws them), each batch padded to its longest sample. 0 for no samples."""
    if not lengths or batch_size < 1:
        return 0.0
    order = list(lengths)
    random.Random(seed).shuffle(order)
    padded = sum(max(order[i:i + batch_size]) * len(order[i:i + batch_size]) for i in range(0, len(order), batch_size))
    return 1.0 - sum(order) / padded
