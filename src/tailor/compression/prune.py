"""Pruning, chosen by name: `prune(model_dir, method, out_dir, amount)`.

- magnitude: zero the `amount` smallest-magnitude weights of every linear layer and fused MoE expert
  matrix (not embeddings or the lm_head), over all of them at once (scope=global) or in each one
  (scope=layer). The file stays dense, so it saves nothing on disk by itself: it is the input of
  sparse kernels or compression; sparsity per layer is reported.
- heads (Llama/Qwen2 attention): remove whole key/value groups (a KV head and the query heads that
  share it) with the smallest weight norms, the same number in every layer, so that
  num_attention_heads / num_key_value_heads stay a valid grouped-query layout; head_dim is kept.
- channels: remove the dense MLPs' intermediate channels with the smallest
  ||gate_j||·||up_j||·||down_:,j||; updates intermediate_size. On DeepSeek-V3 only the dense layers
  (the first first_k_dense_replace) have such MLPs; MoE layers are left alone (and reported).
- experts (DeepSeek-V3): remove the routed experts the router picks least often on calibration data,
  in every MoE layer; the router's weight and correction bias lose the same rows; updates n_routed_experts.

Structured methods save a smaller model whose config.json describes the new shapes; it loads with
plain `AutoModelForCausalLM.from_pretrained`. With recover_steps, a short full fine-tuning through
`tailor.training.train` follows (magnitude masks are re-applied after every optimizer step, so
pruned weights stay zero).
"""

from __future__ import annotations

import difflib
import json
import shutil
from pathlib import Path

import torch
from torch import nn

from tailor.errors import TailorError

METHODS = ("magnitude", "heads", "channels", "experts")
SCOPES = ("global", "layer")


def check_args(method: str, amount: float, scope: str = "global", recover_steps: int = 0,
               recover_data: list[str] | None = None) -> None:
    """TailorError for an unknown method or scope, an amount outside (0, 1), or recovery without data."""
    if method not in METHODS:
        near = difflib.get_close_matches(str(method), METHODS, n=1)
        raise TailorError(f"unknown pruning method '{method}'." + (f" Did you mean '{near[0]}'?" if near else ""),
                          where="--method", fix=f"use one of: {', '.join(METHODS)}")
    if not isinstance(amount, (int, float)) or not 0 < amount < 1:
        raise TailorError(f"amount={amount} must be a fraction between 0 and 1 (exclusive)", where="--amount",
                          fix="e.g. --amount 0.2 removes 20%")
    if scope not in SCOPES:
        raise TailorError(f"unknown scope '{scope}'", where="--scope", fix="use global or layer")
    if scope == "layer" and method != "magnitude":
        raise TailorError(f"--scope applies to magnitude pruning; {method} pruning removes the same number in every layer",
                          where="--scope", fix="drop --scope")
    if recover_steps < 0:
        raise TailorError(f"recover_steps={recover_steps} must be >= 0", where="--recover-steps")
    if recover_steps and not recover_data:
        raise TailorError("recovery fine-tuning needs training data", where="--data", fix="pass --data FILE.jsonl")


# ---------------------------------------------------------------------------------------------
# magnitude


def prunable_weights(model) -> dict[str, nn.Parameter]:
    """Linear weights and fused expert matrices, by name (embeddings and the lm_head are left out)."""
    head = model.get_output_embeddings()
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and module is not head:
            out[f"{name}.weight"] = module.weight
    for name, p in model.named_parameters():
        if p.dim() == 3:
            out[name] = p
    return out


@torch.no_grad()
def magnitude_prune(model, amount: float, scope: str = "global") -> dict[str, torch.Tensor]:
    """Zero the smallest weights in place; return {name: bool mask of the zeroed positions}."""
    weights = prunable_weights(model)
    masks = {}
    if scope == "layer":
        for name, w in weights.items():
            k = int(round(amount * w.numel()))
            mask = torch.zeros(w.numel(), dtype=torch.bool)
            mask[torch.topk(w.detach().abs().flatten(), k, largest=False).indices] = True
            masks[name] = mask.view_as(w)
    else:
        flat = torch.cat([w.detach().abs().flatten() for w in weights.values()])
        mask = torch.zeros(flat.numel(), dtype=torch.bool)
        mask[torch.topk(flat, int(round(amount * flat.numel())), largest=False).indices] = True
        start = 0
        for name, w in weights.items():
            masks[name] = mask[start:start + w.numel()].view_as(w)
            start += w.numel()
    for name, w in weights.items():
        w.masked_fill_(masks[name], 0.0)
    return masks


def sparsity(model) -> dict:
    """Share of exact zeros per prunable weight and overall."""
    weights = prunable_weights(model)
    per = {n: float((w == 0).sum()) / w.numel() for n, w in weights.items()}
    total = sum(w.numel() for w in weights.values())
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    return {"overall": zeros / total if total else 0.0, "per_layer": per}


def mask_callback(masks: dict[str, torch.Tensor]):
    """A Trainer callback that keeps pruned weights at zero after every optimizer step."""
    from transformers import TrainerCallback

    class ReapplyMasks(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            params = dict(model.named_parameters())
            with torch.no_grad():
                for name, m in masks.items():
                    params[name].masked_fill_(m.to(params[name].device), 0.0)

    return ReapplyMasks()


# ---------------------------------------------------------------------------------------------
# structured


def _keep_count(total: int, amount: float, minimum: int, what: str, where: str) -> int:
    keep = total - int(round(amount * total))
    if keep == total:
        raise TailorError(f"amount={amount} removes no {what} (there are {total} per layer)", where="--amount",
                          fix=f"raise --amount to at least {1 / total:.2f} to remove one")
    if keep < minimum:
        raise TailorError(f"amount={amount} would leave {keep} {what} per layer, fewer than the {minimum} needed ({where})",
                          where="--amount", fix="lower --amount")
    return keep


def _top(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Indices of the `keep` highest scores, in their original order (lowest index wins ties)."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))[:keep]
    return torch.tensor(sorted(order))


def _prune_heads(model, sd: dict, config, amount: float) -> dict:
    if config.model_type not in ("llama", "qwen2"):
        raise TailorError(f"head pruning supports Llama and Qwen2 attention, not '{config.model_type}'",
                          where="--method heads", fix="use channels, experts or magnitude pruning for this model")
    heads, kv = config.num_attention_heads, config.num_key_value_heads
    hd = getattr(config, "head_dim", None) or config.hidden_size // heads
    per_group = heads // kv
    keep = _keep_count(kv, amount, 1, "key/value head groups", "at least one KV group")
    kept = {}
    for i in range(config.num_hidden_layers):
        pre = f"model.layers.{i}.self_attn."
        q = sd[pre + "q_proj.weight"].view(kv, per_group * hd, -1)
        o = sd[pre + "o_proj.weight"].view(-1, kv, per_group * hd)
        k, v = sd[pre + "k_proj.weight"].view(kv, hd, -1), sd[pre + "v_proj.weight"].view(kv, hd, -1)
        score = (q.flatten(1).norm(dim=1) * o.permute(1, 0, 2).flatten(1).norm(dim=1)
                 + k.flatten(1).norm(dim=1) * v.flatten(1).norm(dim=1))
        idx = _top(score, keep)
        kept[i] = idx.tolist()
        sd[pre + "q_proj.weight"] = q[idx].reshape(keep * per_group * hd, -1).contiguous()
        sd[pre + "k_proj.weight"] = k[idx].reshape(keep * hd, -1).contiguous()
        sd[pre + "v_proj.weight"] = v[idx].reshape(keep * hd, -1).contiguous()
        sd[pre + "o_proj.weight"] = o[:, idx].reshape(o.shape[0], -1).contiguous()
        for name, size in (("q_proj", per_group * hd), ("k_proj", hd), ("v_proj", hd)):
            if pre + name + ".bias" in sd:
                sd[pre + name + ".bias"] = sd[pre + name + ".bias"].view(-1, size)[idx].flatten().contiguous()
    config.head_dim = hd  # it was derived from hidden_size / heads, which no longer holds
    config.num_attention_heads, config.num_key_value_heads = keep * per_group, keep
    return {"num_attention_heads": [heads, keep * per_group], "num_key_value_heads": [kv, keep],
            "kept_kv_groups_per_layer": kept}


def _prune_channels(model, sd: dict, config, amount: float) -> dict:
    dense = [i for i in range(config.num_hidden_layers) if f"model.layers.{i}.mlp.gate_proj.weight" in sd]
    if not dense:
        raise TailorError("the model has no dense MLP layers to prune channels from", where="--method channels",
                          fix="use experts pruning for MoE layers")
    size = config.intermediate_size
    keep = _keep_count(size, amount, 1, "MLP channels", "at least one channel")
    for i in dense:
        pre = f"model.layers.{i}.mlp."
        g, u, d = sd[pre + "gate_proj.weight"], sd[pre + "up_proj.weight"], sd[pre + "down_proj.weight"]
        idx = _top(g.norm(dim=1) * u.norm(dim=1) * d.norm(dim=0), keep)
        sd[pre + "gate_proj.weight"], sd[pre + "up_proj.weight"] = g[idx].contiguous(), u[idx].contiguous()
        sd[pre + "down_proj.weight"] = d[:, idx].contiguous()
    config.intermediate_size = keep
    moe = [i for i in range(config.num_hidden_layers) if i not in dense]
    return {"intermediate_size": [size, keep], "pruned_layers": dense,
            "untouched_layers": {i: "MoE layer (use --method experts)" for i in moe}}


@torch.no_grad()
def expert_usage(model, tokenizer, paths: list[str], max_examples: int = 256, max_length: int = 256) -> dict[int, torch.Tensor]:
    """Tokens routed to each expert, per MoE layer, over calibration records (text or chat)."""
    from tailor.data.records import record_text
    from tailor.data.loading import LoadReport, load_records, require_rows

    report = LoadReport()
    records = load_records(paths, "auto", "text", report)
    require_rows(records, report, paths, "calibration")
    counts: dict[int, torch.Tensor] = {}
    hooks = []
    for i, layer in enumerate(model.model.layers):
        gate = getattr(layer.mlp, "gate", None)
        if gate is None or not hasattr(layer.mlp, "experts"):
            continue
        counts[i] = torch.zeros(model.config.n_routed_experts, dtype=torch.long)

        def hook(module, args, output, i=i):
            counts[i] += torch.bincount(output[2].flatten().cpu(), minlength=counts[i].numel())

        hooks.append(gate.register_forward_hook(hook))
    try:
        for rec in records[:max_examples]:
            ids = tokenizer(record_text(rec), return_tensors="pt", truncation=True, max_length=max_length)
            model(input_ids=ids["input_ids"])
    finally:
        for h in hooks:
            h.remove()
    return counts


def _prune_experts(model, sd: dict, config, amount: float, tokenizer, calibration_data) -> dict:
    if config.model_type != "deepseek_v3" or not getattr(config, "n_routed_experts", None):
        raise TailorError(f"expert pruning needs a DeepSeek-V3 mixture-of-experts model; '{config.model_type}' is dense",
                          where="--method experts", fix="use heads, channels or magnitude pruning for dense models")
    if config.n_group != 1:
        raise TailorError(f"expert pruning supports n_group=1 routing; this model routes within {config.n_group} groups",
                          where="--method experts", fix="use magnitude pruning for group-routed models")
    if not calibration_data:
        raise TailorError("expert pruning measures expert usage on calibration data, and none was given",
                          where="--data", fix="pass --data FILE.jsonl (domain text or conversations)")
    n = config.n_routed_experts
    keep = _keep_count(n, amount, max(2, config.num_experts_per_tok), "routed experts",
                       f"num_experts_per_tok={config.num_experts_per_tok}, and top-2 group scoring needs 2")
    usage = expert_usage(model, tokenizer, list(calibration_data))
    kept = {}
    for i, c in usage.items():
        pre = f"model.layers.{i}.mlp."
        idx = _top(c.float(), keep)
        kept[i] = idx.tolist()
        for key in ("experts.gate_up_proj", "experts.down_proj", "gate.weight", "gate.e_score_correction_bias"):
            sd[pre + key] = sd[pre + key][idx].contiguous()
    config.n_routed_experts = keep
    return {"n_routed_experts": [n, keep], "usage_per_layer": {i: c.tolist() for i, c in usage.items()},
            "kept_experts_per_layer": kept,
            "removed_share_of_routed_tokens": {i: 1 - float(c[kept[i]].sum()) / max(1, int(c.sum()))
                                               for i, c in usage.items()}}


def _rebuild(sd: dict, config):
    """A model of the new config holding the sliced weights (a strict load proves the shapes agree)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    names = {k for k in model.state_dict()}
    missing = names - set(sd)
    tied = {k for k in missing if k == "lm_head.weight" and getattr(config, "tie_word_embeddings", False)}
    model.load_state_dict({k: v for k, v in sd.items() if k in names}, strict=not tied)
    if missing - tied:
        raise RuntimeError(f"pruned weights lack {sorted(missing - tied)[:3]}")  # a bug, not user input
    return model


# ---------------------------------------------------------------------------------------------
# entry point


def prune(model_dir, method: str, out_dir, amount: float = 0.2, scope: str = "global",
          calibration_data: list[str] | None = None, recover_steps: int = 0,
          recover_data: list[str] | None = None, seed: int = 0) -> dict:
    """Prune the model in `model_dir` and save it to `out_dir`; return the report (also pruning_report.json)."""
    import copy

    from tailor.models.loading import count_parameters, load_model, load_tokenizer

    check_args(method, amount, scope, recover_steps, recover_data)
    out = Path(out_dir)
    if out.resolve() == Path(model_dir).resolve():
        raise TailorError("the output directory is the model directory", where="--out", fix="pass a new directory")
    model = load_model(model_dir, dtype="float32", device="cpu")
    tokenizer = load_tokenizer(model_dir)
    _, before = count_parameters(model)
    masks = None
    report = {"method": method, "amount": amount, "source": str(Path(model_dir).resolve())}
    if method == "magnitude":
        report["scope"] = scope
        masks = magnitude_prune(model, amount, scope)
    else:
        sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
        config = copy.deepcopy(model.config)
        if method == "heads":
            report.update(_prune_heads(model, sd, config, amount))
        elif method == "channels":
            report.update(_prune_channels(model, sd, config, amount))
        else:
            report.update(_prune_experts(model, sd, config, amount, tokenizer, calibration_data or recover_data))
        generation_config = model.generation_config
        model = _rebuild(sd, config)
        model.generation_config = generation_config
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    if recover_steps:
        report["recovery"] = _recover(out, recover_steps, recover_data, masks, seed)
        model = load_model(out, dtype="float32", device="cpu")
    _, after = count_parameters(model)
    report.update(parameters=[before, after], sparsity=sparsity(model))
    (out / "pruning_report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    return report


def _recover(out: Path, steps: int, data: list[str], masks, seed: int) -> dict:
    """Short full fine-tuning of the pruned model in `out`; the result replaces it."""
    from tailor.config import Recipe, build
    from tailor.evaluation.measure import task_of
    from tailor.training import train

    objective = "sft" if task_of(list(data)) == "generation" else "pretrain"
    run_dir = out / "recovery"
    recipe = build(Recipe, {"model": {"path": str(out)}, "data": {"train": list(data), "max_length": 256},
                            "adapter": {"method": "full"},
                            "train": {"objective": objective, "max_steps": steps, "output_dir": str(run_dir),
                                      "lr": 1e-4, "batch_size": 8, "seed": seed, "save_steps": max(steps, 1),
                                      "logging_steps": max(1, min(10, steps))}}, "prune recovery")
    callbacks = [mask_callback(masks)] if masks else None
    result = train(recipe, callbacks=callbacks)
    for f in result.final_dir.iterdir():
        if f.is_file():
            shutil.copy2(f, out / f.name)
    for ckpt in run_dir.glob("checkpoint-*"):  # the final weights are in `out`; optimizer states are not needed
        shutil.rmtree(ckpt)
    return {"steps": result.metrics.get("steps"), "objective": objective,
            "train_loss": result.metrics.get("train_loss"), "run_dir": str(run_dir)}
