import random
from types import SimpleNamespace

import pytest
import torch
from datasets import Dataset

from tests.conftest import CONVERSATIONS
from tailor.data.loading import LoadReport
from tailor.data.packing import PackingCollator, PadCollator, check_attention, pack_bins, pack_dataset
from tailor.data.tokenize import sft_dataset
from tailor.errors import TailorError
from tailor.models.loading import load_model

FAMILIES = ["llama_dir", "qwen2_dir", "deepseek_dir"]


@pytest.fixture(scope="module")
def sft_rows(tokenizer):
    # Lengths 25, 24, 32, 38 with the test tokenizer; max_length 64 packs them into two rows of different widths.
    return sft_dataset([{"messages": c} for c in CONVERSATIONS], tokenizer, max_length=64)


@pytest.fixture(scope="module")
def models():
    return {}


def _model(request, models, fixture, impl="sdpa", train=False):
    """One float32 model per family for the whole module (loading dominates these tests' time)."""
    if fixture not in models:
        models[fixture] = load_model(request.getfixturevalue(fixture), dtype="float32", device="cpu")
    model = models[fixture]
    model.set_attn_implementation(impl)
    return model.train(train)


def _samples(row):
    """Split a packed row back into its samples."""
    out, start = [], 0
    for n in row["seq_lengths"]:
        out.append((row["input_ids"][start:start + n], row["labels"][start:start + n], row["position_ids"][start:start + n]))
        start += n
    return out


def test_pack_bins_fills_bins_best_fit_decreasing():
    assert pack_bins([6, 4, 5, 5, 3, 7], 10) == [[5, 4], [0, 1], [2, 3]]
    rng = random.Random(0)
    lengths = [rng.randint(1, 100) for _ in range(500)]
    bins = pack_bins(lengths, 128)
    assert sorted(i for b in bins for i in b) == list(range(500))
    assert all(sum(lengths[i] for i in b) <= 128 for b in bins)
    lower = -(-sum(lengths) // 128)
    assert lower <= len(bins) <= lower * 11 // 9 + 1  # FFD/BFD guarantee: <= 11/9 OPT + 6/9
    assert pack_bins(lengths, 128) == bins


@pytest.mark.parametrize("lengths", [[5, 11], [5, 0]])
def test_pack_bins_rejects_samples_that_do_not_fit(lengths):
    with pytest.raises(TailorError, match="sample 1"):
        pack_bins(lengths, 10)


def test_pack_dataset_keeps_every_sample_and_restarts_positions(sft_rows):
    packed, stats = pack_dataset(sft_rows, 64, seed=0)
    assert (stats.samples, stats.packed) == (4, 2) and stats.tokens == sum(map(len, sft_rows["input_ids"]))
    assert stats.fill_ratio == pytest.approx(stats.tokens / 128)
    got = sorted((s[0], s[1][1:]) for row in packed for s in _samples(row))
    assert got == sorted((ids, labels[1:]) for ids, labels in zip(sft_rows["input_ids"], sft_rows["labels"]))
    for row in packed:
        assert len(row["input_ids"]) <= 64
        for ids, labels, pos in _samples(row):
            assert pos == list(range(len(ids))) and labels[0] == -100
    assert stats.loss_tokens == sum(lab != -100 for row in packed for lab in row["labels"])
    again, _ = pack_dataset(sft_rows, 64, seed=0)
    assert again["input_ids"] == packed["input_ids"]


def test_pack_dataset_counts_truncated_and_dropped_rows():
    ds = Dataset.from_dict({"input_ids": [list(range(3, 23)), [5, 6, 7], [8, 9]],
                            "labels": [list(range(3, 23)), [5, -100, -100], [-100, 9]]})
    report = LoadReport()
    packed, stats = pack_dataset(ds, 12, report=report)
    assert (stats.truncated, stats.dropped, stats.samples) == (1, 1, 2)
    assert sorted(packed["seq_lengths"]) == [[2], [12]]
    assert report.skipped["truncated to data.max_length at packing (kept)"] == 1
    assert report.examples["no loss-bearing token after the first (nothing to learn when packed)"] == "row 1"


def test_pack_dataset_rejects_bad_rows():
    with pytest.raises(TailorError, match="lacks column"):
        pack_dataset(Dataset.from_dict({"input_ids": [[1, 2]]}), 8)
    with pytest.raises(TailorError, match="row 0 has 2 input_ids but 1 labels"):
        pack_dataset(Dataset.from_dict({"input_ids": [[1, 2]], "labels": [[1]]}), 8)


def test_collator_pads_as_a_separate_block_without_attention_mask():
    rows = [{"input_ids": [5, 6, 7, 8, 9], "labels": [-100, 6, 7, -100, 9], "position_ids": [0, 1, 2, 0, 1]},
            {"input_ids": [5, 6], "labels": [-100, 6], "position_ids": [0, 1]}]
    b = PackingCollator(pad_id=2)(rows)
    assert "attention_mask" not in b and b["use_cache"] is False
    assert b["input_ids"][1].tolist() == [5, 6, 2, 2, 2]
    assert b["labels"][1].tolist() == [-100, 6, -100, -100, -100]
    assert b["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 0, 1, 2]]
    with pytest.raises(TailorError, match="position_ids"):
        PackingCollator(pad_id=2)([{"input_ids": [1], "labels": [1]}])


def test_check_attention_refuses_kernels_that_ignore_packing():
    def model(impl):
        return SimpleNamespace(config=SimpleNamespace(_attn_implementation=impl))

    for impl in ("sdpa", "eager", "flex_attention"):
        check_attention(model(impl), batch_size=8)
    check_attention(model("flash_attention_2"), batch_size=1)  # one row: flash reads the restarts itself
    with pytest.raises(TailorError, match="flash_attention_2.*batch size 8"):
        check_attention(model("flash_attention_2"), batch_size=8)
    with pytest.raises(TailorError, match="paged"):
        check_attention(model("paged|sdpa"), batch_size=1)


def _forward(model, batch):
    with torch.no_grad():
        return model(**{k: v for k, v in batch.items() if k != "labels"}).logits


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
@pytest.mark.parametrize("fixture", FAMILIES)
def test_packed_logits_equal_each_sample_alone(request, models, sft_rows, fixture, impl):
    model = _model(request, models, fixture, impl)
    packed, _ = pack_dataset(sft_rows, 64)
    batch = PackingCollator(pad_id=2)(list(packed))
    logits = _forward(model, batch)
    for r, row in enumerate(packed):
        start = 0
        for n in row["seq_lengths"]:
            alone = _forward(model, {"input_ids": batch["input_ids"][r:r + 1, start:start + n]})
            torch.testing.assert_close(logits[r:r + 1, start:start + n], alone, atol=1e-5, rtol=1e-5)
            start += n

    # The naive ways leak: the later samples of a row then see the earlier ones.
    later = [(r, row["seq_lengths"][0]) for r, row in enumerate(packed) if len(row["seq_lengths"]) > 1]
    assert later

    def gap(other):
        return max((other[r, s:] - logits[r, s:]).abs().max().item() for r, s in later if s < len(packed[r]["input_ids"]))

    ids = batch["input_ids"]
    assert gap(_forward(model, {"input_ids": ids, "use_cache": False})) > 1e-3  # positions not reset
    ones = torch.ones_like(ids)
    assert gap(_forward(model, {"input_ids": ids, "position_ids": batch["position_ids"], "attention_mask": ones})) > 1e-3
    assert gap(_forward(model, {"input_ids": ids, "position_ids": batch["position_ids"], "use_cache": True})) > 1e-3


@pytest.mark.parametrize("fixture", FAMILIES)
def test_padding_does_not_reach_real_tokens(request, models, sft_rows, fixture):
    model = _model(request, models, fixture)
    packed, _ = pack_dataset(sft_rows, 64)
    short = min(packed, key=lambda r: len(r["input_ids"]))
    wide = dict(short, input_ids=short["input_ids"] + [1] * 9, labels=short["labels"] + [-100] * 9,
                position_ids=short["position_ids"] + list(range(len(short["input_ids"]), len(short["input_ids"]) + 9)))
    n = len(short["input_ids"])
    alone = _forward(model, PackingCollator(pad_id=2)([short]))
    for pad_id in (2, 7):
        padded = _forward(model, PackingCollator(pad_id=pad_id)([short, wide]))
        torch.testing.assert_close(padded[0, :n], alone[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fixture", FAMILIES)
def test_packed_loss_and_gradients_equal_padded_batch(request, models, fixture):
    model = _model(request, models, fixture, train=True)
    rng = random.Random(1)
    # Labels on every token (the first included) so a boundary that is not masked would add loss terms.
    rows = [[rng.randrange(3, 300) for _ in range(n)] for n in (9, 14, 5, 11, 7)]
    ds = Dataset.from_dict({"input_ids": rows, "labels": rows})
    packed, stats = pack_dataset(ds, 24)
    packed_batch = PackingCollator(pad_id=2)(list(packed))
    padded_batch = PadCollator(pad_id=2)(list(ds))
    n_items = int((padded_batch["labels"][:, 1:] != -100).sum())
    assert n_items == stats.loss_tokens == sum(n - 1 for n in (9, 14, 5, 11, 7))

    def loss_and_grads(batch, **kw):
        model.zero_grad()
        loss = model(**batch, **kw).loss
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    for kw in ({}, {"num_items_in_batch": torch.tensor(n_items)}):
        loss_packed, grads_packed = loss_and_grads(packed_batch, **kw)
        loss_padded, grads_padded = loss_and_grads(padded_batch, **kw)
        torch.testing.assert_close(loss_packed, loss_padded, atol=1e-5, rtol=1e-5)
        for a, b in zip(grads_packed, grads_padded):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    model.zero_grad()

    # Without the -100 at each boundary, the last token of one sample is trained to predict the next sample.
    naive_labels = packed_batch["input_ids"].clone()
    for r, row in enumerate(packed):
        naive_labels[r, len(row["input_ids"]):] = -100
    naive = dict(packed_batch, labels=naive_labels)
    with torch.no_grad():
        assert abs(model(**naive).loss.item() - loss_padded.item()) > 1e-3
