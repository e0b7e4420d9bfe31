"""Token attributions for classification (`tailor eval --task classification --explain K`).

Captum's integrated gradients (Sundararajan et al. 2017) on the input embeddings of a sequence-classification
model: the gradient of the explained label's probability, integrated along the straight path from a reference
input (every token that is not a special token replaced by the vocabulary's mean embedding, rescaled to that
token's own norm: the pad embedding is often all zeros, and RMSNorm, blind to scale, turns a path through small
vectors into a jump that no quadrature follows) to the text's embeddings (`eval.explain_steps` points, Gauss-Legendre), summed
over the hidden size, gives each token's share of that probability's rise over the reference. Words (tokens joined
up to the next space) get the sum of their tokens' attributions. Chosen over SHAP: for a differentiable
model one backward pass per step is exact and deterministic, while SHAP's permutation and partition explainers
need hundreds to thousands of masked forward passes per text and sample them, and its Hugging Face path targets
pipelines rather than tailor's own scoring. The completeness check (attributions sum to f(x) - f(0)) is reported
as `delta` per example (below 0.001 in the test; raise eval.explain_steps if it is not small).

The K examples are the worst (lowest probability of the true label) or the most uncertain (smallest top-2
margin); each is explained for the label the model predicted. Written to explanations.jsonl (tokens with their
character spans in the text and their attribution, normalized to the largest magnitude) and rendered by
`tailor report` as highlighted text.
"""

from __future__ import annotations

from tailor.config import EvalConfig
from tailor.errors import TailorError


def choose(examples: list[dict], k: int, how: str) -> list[int]:
    if how == "uncertain":
        key = lambda i: (examples[i]["margin"], i)  # noqa: E731
    else:
        key = lambda i: (examples[i]["prob_label"], i)  # noqa: E731
    return sorted(range(len(examples)), key=key)[:k]


def explain(model, tokenizer, examples: list[dict], cfg: EvalConfig) -> list[dict]:
    """Attributions for cfg.explain examples (see the module docstring)."""
    import torch

    from tailor.evaluation.classification import is_classifier

    if not is_classifier(model):
        raise TailorError("--explain attributes a classifier head's decision; this model scores labels by their "
                          "likelihood as text", where="eval.explain / --explain",
                          fix="explain a model trained with train.objective=classification, or drop --explain")
    try:
        from captum.attr import IntegratedGradients
    except ImportError:
        raise TailorError("--explain needs Captum", where="eval.explain", fix='pip install -e ".[explain]"') from None
    labels = [str(model.config.id2label[i]) for i in range(model.config.num_labels)]
    with torch.no_grad():
        mean = model.get_input_embeddings().weight.float().mean(0)
    embed = model.get_input_embeddings()
    device = next(model.parameters()).device
    model.eval()

    def prob(embeds, target):
        logits = model(inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long, device=device)).logits
        return torch.softmax(logits.float(), dim=-1)[:, target]

    ig = IntegratedGradients(lambda e, target: prob(e, target))
    special_ids = set(tokenizer.all_special_ids)
    out = []
    for i in choose(examples, cfg.explain, cfg.explain_select):
        ex = examples[i]
        enc = tokenizer(ex["text"], add_special_tokens=True, truncation=True, max_length=cfg.max_length,
                        return_offsets_mapping=True)
        ids = torch.tensor([enc["input_ids"]], device=device)
        target = labels.index(ex["predicted"])
        special = torch.tensor([[t in special_ids for t in enc["input_ids"]]], device=device)
        with torch.no_grad():
            x = embed(ids).detach()
            base = torch.where(special[..., None], x, mean / mean.norm() * x.norm(dim=-1, keepdim=True))
        attr, delta = ig.attribute(x, baselines=base, additional_forward_args=(target,),
                                   n_steps=cfg.explain_steps, return_convergence_delta=True)
        scores = attr.sum(-1)[0].tolist()
        top = max((abs(s) for s in scores), default=0.0) or 1.0
        tokens = [{"text": ex["text"][a:b], "start": a, "end": b, "score": s / top, "raw": s,
                   "token": tokenizer.convert_ids_to_tokens(t)}
                  for (a, b), s, t in zip(enc["offset_mapping"], scores, enc["input_ids"])]
        ranked = sorted(words(ex["text"], tokens), key=lambda w: -w[1])
        out.append({"index": i, "where": ex["where"], "text": ex["text"], "label": ex["label"], "predicted": ex["predicted"],
                    "prob_label": ex["prob_label"], "explained_label": ex["predicted"], "delta": float(delta.abs().max()),
                    "tokens": tokens, "top": [w for w, _ in ranked[:5]]})
    return out


def words(text: str, tokens: list[dict]) -> list[tuple[str, float]]:
    """(word, summed attribution) for the whitespace-separated words of the text, from its tokens' character spans."""
    import re

    out = []
    for m in re.finditer(r"\S+", text):
        score = sum(t["raw"] for t in tokens if t["end"] > m.start() and t["start"] < m.end())
        out.append((m.group(), score))
    return out


def highlighted_html(row: dict) -> str:
    """The text with each token's background in green (pushes toward the explained label) or red (against)."""
    import html

    parts, pos = [], 0
    for t in sorted((t for t in row["tokens"] if t["end"] > t["start"]), key=lambda t: t["start"]):
        if t["start"] < pos:
            continue
        parts.append(html.escape(row["text"][pos:t["start"]]))
        s = max(-1.0, min(1.0, t["score"]))
        colour = f"rgba(22,163,74,{s:.2f})" if s >= 0 else f"rgba(220,38,38,{-s:.2f})"
        parts.append(f'<span class="attr" style="background:{colour}" title="{t["raw"]:+.4f}">{html.escape(t["text"])}</span>')
        pos = t["end"]
    parts.append(html.escape(row["text"][pos:]))
    return "".join(parts)
