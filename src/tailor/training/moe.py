"""Mixture-of-experts visibility and balance during training: expert load per layer, and DeepSeek-V3's bias update.

Expert load is read from the routers' own outputs by forward hooks: a transformers-v5 MoE router (DeepSeek-V3's
`DeepseekV3TopkRouter`) returns `(router_logits, topk_weights, topk_indices)`, so each training forward adds a
`bincount` of the chosen expert ids to a per-layer counter on the model's device. Nothing leaves the device until
a log event, so the hooks cost one small kernel per MoE layer and micro-batch.

Counted: tokens of training forwards only (not evaluation), each real token top_k times; padding is left out the
way the Trainer leaves it out of `num_input_tokens_seen` (the attention mask, or tokens equal to the pad id when a
batch has no mask, as packed batches do). Forwards recomputed in the backward pass by activation checkpointing
are not counted again. (FGM adversarial training runs a second real forward per micro-batch; that one counts.)

Balance: DeepSeek-V3 balances its experts without an auxiliary loss. Each router adds a bias
(`e_score_correction_bias`) to the scores used to choose experts, and after every step the bias moves by
`gamma * sign(mean_load - load)`: overloaded experts become less attractive, underloaded ones more
(DeepSeek-V3 technical report, section 2.1.2; gamma = 0.001 there). `train.moe_bias_update_speed` is gamma.
The report's complementary sequence-wise auxiliary loss has no counterpart in transformers' DeepseekV3 (5.x):
its config has `output_router_logits` (returns the router logits) but no auxiliary-loss coefficient, and the
model computes no such loss, so none is offered here.
"""

from __future__ import annotations

import logging
import re

import torch
from transformers import TrainerCallback

from tailor.errors import TailorError

log = logging.getLogger("tailor")

_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def find_routers(model) -> dict[int, torch.nn.Module]:
    """Decoder-layer index -> the MoE router module of that layer (empty for dense models).

    A router here is a module with integer `top_k` and `num_experts` and a 2-D `weight` of num_experts rows
    that it owns itself (so a peft wrapper around it is not taken for it), inside `layers.N.`.
    """
    found: dict[int, torch.nn.Module] = {}
    for name, module in model.named_modules():
        top_k, n = getattr(module, "top_k", None), getattr(module, "num_experts", None)
        weight = module._parameters.get("weight")
        m = _LAYER.search(name + ".")
        if not (isinstance(top_k, int) and isinstance(n, int) and weight is not None and m):
            continue
        if weight.ndim == 2 and weight.shape[0] == n:
            found.setdefault(int(m.group(1)), module)
    return dict(sorted(found.items()))


def coefficient_of_variation(counts) -> float:
    """std / mean of per-expert token counts (population std); 0 when every expert got the same, or none got any."""
    c = torch.as_tensor(counts, dtype=torch.float64)
    mean = c.mean()
    return float(c.std(unbiased=False) / mean) if mean > 0 else 0.0


def update_bias(bias: torch.Tensor, load: torch.Tensor, gamma: float) -> None:
    """DeepSeek-V3's auxiliary-loss-free balancing step, in place: bias += gamma * sign(mean(load) - load)."""
    load = load.to(device=bias.device, dtype=torch.float32)
    bias.add_(torch.sign(load.mean() - load).to(bias.dtype), alpha=gamma)


class ExpertLoad(TrainerCallback):
    """Count tokens routed to each expert of every MoE layer; log per-layer load and its coefficient of variation.

    Each training log event gets `moe/layerN/cv` (std/mean of the per-expert counts over the log window) and
    `moe/cv` (their mean) as scalars (JSONL, TensorBoard, Prometheus); `jsonl_fields()` gives the per-expert
    counts of that window (`moe_load`: {"layerN": [count per expert]}) for metrics.jsonl only. With
    `bias_update_speed` > 0, every optimizer step ends with `update_bias` on each router from that step's counts.
    """

    def __init__(self, model, pad_token_id: int | None = None, bias_update_speed: float = 0.0):
        self.routers = find_routers(model)
        if bias_update_speed and not (self.routers and all(_bias(r) is not None for r in self.routers.values())):
            raise TailorError("train.moe_bias_update_speed needs a mixture-of-experts model whose routers carry "
                              "DeepSeek-V3's e_score_correction_bias; this model has "
                              + ("routers without it" if self.routers else "no MoE routers (a dense model)"),
                              where="train.moe_bias_update_speed", fix="set train.moe_bias_update_speed=0 for this model")
        self.gamma = bias_update_speed
        self.pad_token_id = pad_token_id
        self._window: dict[int, torch.Tensor] = {}
        self._step: dict[int, torch.Tensor] = {}
        self._mask: torch.Tensor | None = None
        self._pending: dict = {}
        self.last_load: dict[str, list[int]] = {}  # the last log window's per-expert counts, by "layerN"
        self._handles = []
        if not self.routers:
            return
        stack = _decoder_stack(model, next(iter(self.routers.values())))
        self._handles.append(stack.register_forward_pre_hook(self._capture_mask, with_kwargs=True))
        for layer, router in self.routers.items():
            self._handles.append(router.register_forward_hook(self._counter(layer, router.num_experts)))

    @property
    def active(self) -> bool:
        return bool(self.routers)

    def _capture_mask(self, module, args, kwargs):
        mask = kwargs.get("attention_mask")
        ids = kwargs.get("input_ids", args[0] if args else None)
        if torch.is_tensor(mask) and mask.ndim == 2:
            self._mask = mask.reshape(-1) != 0
        elif torch.is_tensor(ids) and self.pad_token_id is not None:
            self._mask = ids.reshape(-1) != self.pad_token_id
        else:
            self._mask = None

    def _counter(self, layer: int, num_experts: int):
        def hook(module, args, output):
            # Evaluation forwards and checkpointing's recomputation inside backward are not new routing.
            if not module.training or _in_backward():
                return
            idx = output[-1]
            if self._mask is not None and self._mask.numel() == idx.shape[0]:
                idx = idx[self._mask.to(idx.device)]
            counts = torch.bincount(idx.reshape(-1), minlength=num_experts)
            for store in (self._step, self._window):
                if layer in store:
                    store[layer] += counts
                else:
                    store[layer] = counts.clone()
        return hook

    def on_step_end(self, args, state, control, **kw):
        if self.gamma and self._step:
            with torch.no_grad():
                for layer, counts in self._step.items():
                    if torch.distributed.is_available() and torch.distributed.is_initialized():
                        torch.distributed.all_reduce(counts)  # every rank applies the same global update
                    update_bias(_bias(self.routers[layer]), counts, self.gamma)
        self._step = {}

    def on_log(self, args, state, control, logs=None, **kw):
        if logs is None or "loss" not in logs:
            return
        if self._window and torch.distributed.is_available() and torch.distributed.is_initialized():
            for counts in self._window.values():
                torch.distributed.all_reduce(counts)  # the whole run's routing, like num_input_tokens_seen
        loads = {layer: c.tolist() for layer, c in sorted(self._window.items())}
        self._window = {}
        self.last_load = {f"layer{layer}": c for layer, c in loads.items()}
        if not loads:
            return
        cvs = {layer: coefficient_of_variation(c) for layer, c in loads.items()}
        for layer, cv in cvs.items():
            logs[f"moe/layer{layer}/cv"] = round(cv, 5)
        logs["moe/cv"] = round(sum(cvs.values()) / len(cvs), 5)
        self._pending = {"moe_load": self.last_load}

    def jsonl_fields(self) -> dict:
        """The per-expert counts of the last log window (once; empty afterwards)."""
        out, self._pending = self._pending, {}
        return out

    def on_train_end(self, args, state, control, **kw):
        for h in self._handles:
            h.remove()
        self._handles = []


def _in_backward() -> bool:
    """True while autograd runs a backward pass on this thread (where checkpointing recomputes forwards)."""
    return torch._C._current_graph_task_id() != -1


def _bias(router) -> torch.Tensor | None:
    b = router._buffers.get("e_score_correction_bias")
    return b if torch.is_tensor(b) else None


def _decoder_stack(model, router) -> torch.nn.Module:
    """The module that runs the decoder layers (it receives attention_mask and input_ids from the causal-LM head).

    Hooks go here rather than on the outer model: peft calls the wrapped model's forward() directly, which skips
    hooks on that module, while the causal-LM head calls its decoder stack as a module.
    """
    for module in model.modules():
        layers = getattr(module, "layers", None)
        if isinstance(layers, torch.nn.ModuleList) and any(router is m for m in layers.modules()):
            return module
    raise TailorError(f"could not find the decoder stack holding the MoE layers of {type(model).__name__}")


def expert_load_callback(model, recipe, pad_token_id: int | None) -> ExpertLoad | None:
    """The ExpertLoad callback for a run (None for a dense model), after checking `train.moe_bias_update_speed`.

    The bias update is refused with peft adapters: the biases are buffers of the base model, which an adapter
    directory does not hold, so the balance the run learned would be lost when final/ is saved.
    """
    from tailor.adapters import is_peft_method

    gamma = recipe.train.moe_bias_update_speed
    if gamma and not find_routers(model):
        ExpertLoad(model, pad_token_id, gamma)  # raises the dense-model error before the adapter one below
    if gamma and is_peft_method(recipe.adapter.method):
        raise TailorError(f"train.moe_bias_update_speed updates the routers' e_score_correction_bias, which belongs to "
                          f"the base model and is not saved in a {recipe.adapter.method} adapter",
                          where="train.moe_bias_update_speed",
                          fix="use adapter.method=full or freeze to balance the experts, or set train.moe_bias_update_speed=0")
    cb = ExpertLoad(model, pad_token_id, gamma)
    if not cb.active:
        return None
    log.info("MoE: logging expert load of %d layers%s", len(cb.routers),
             f"; bias update speed {gamma:g}" if gamma else "")
    return cb
