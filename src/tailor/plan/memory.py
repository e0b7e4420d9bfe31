"""The memory model: peak bytes of one training process, broken down, from the model's shape and the run's settings.

    weights      every parameter in its storage dtype (QLoRA: NF4 linear layers, 4.13 bits with double-quantized
                 scales; FSDP full_shard / ZeRO-3: 1/N of them plus two gathered blocks; tensor parallel: the
                 attention, MLP, embedding and head matrices 1/N, as are their gradients and optimizer state)
    adapter      LoRA / DoRA matrices (float32, as peft keeps them), virtual tokens, IA3 scales
    gradients    one per trainable parameter, in its dtype (sharded by FSDP / ZeRO-2+)
    optimizer    AdamW 2 states, SGD with momentum 1, Adafactor factored rows + columns, 8-bit AdamW 2 bytes
                 (sharded by FSDP / ZeRO-1+)
    activations  what autograd saves for the backward pass: per token and decoder block, the tensors listed in
                 `_block_saved` (norms, projections, attention inputs and output, MLP), x the tokens of one
                 micro-batch; with gradient checkpointing only each block's input plus one block recomputed;
                 tensor parallel splits the attention and MLP tensors N ways (the residual stream stays whole)
    temporary    the loss (float32 logits, log-softmax and their gradients over the vocabulary), on CPU the heap
                 retention and runtime of CPU_HEAP_RETENTION / CPU_RUNTIME, bf16 autocast's
                 weight copies, DDP's gradient buckets, the optimizer step's largest scratch tensor; with
                 distillation the teacher's logits and the KL's vocabulary-sized tensors
    frozen       frozen copies beside the trained model: DPO/KTO/GRPO's reference model with full or freeze
                 training (with an adapter the reference is the base with the adapter disabled: no copy), the
                 distillation teacher's weights
    generation   GRPO's sampling, between optimizer steps (no gradients then): the KV cache of the step's answers
                 (train.batch_size x grad_accum rows of prompt + completion tokens) and the sampling logits
    overhead     the process before the model exists (CPU: interpreter, torch, transformers; CUDA: context and
                 kernels); predicted peaks are compared with measured ones above it

Peak = weights + adapter + optimizer + frozen + max(activations + temporary (+ gradients when accumulating or while
the last blocks' gradients exist), gradients + optimizer-step scratch, generation) + overhead. Paired preference
objectives (dpo, orpo, simpo) run chosen and rejected as two sequences per row; GRPO trains on prompt + completion. The per-token activation terms were
checked against saved-tensor hooks of transformers' Llama, Qwen2 and DeepSeek-V3 blocks and calibrated on real CPU
runs by bench/bench_plan.py (docs/stages/plan.md has the table).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from tailor.plan.shape import ModelShape

GIB = 2 ** 30
MIB = 2 ** 20
# CPU (glibc malloc): tensors under the largest mmap threshold (32 MiB) come from the heap, which keeps freed
# blocks; over a run the high-water mark rises above the live bytes by this share of the activations held there
# (fitted on bench/bench_plan.py's grid: 0.25-0.4 measured), plus what the first steps add to the process
# (OpenMP threads, oneDNN kernels, the Trainer): CPU_RUNTIME.
CPU_HEAP_RETENTION = 0.3
CPU_RUNTIME = 40 * MIB
MMAP_THRESHOLD_MAX = 32 * MIB
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)  # 4-bit codes, an 8-bit scale per 64 weights, a float32 scale per 256 scales
DTYPE_BYTES = {"float32": 4, "fp32": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2}


@dataclass
class MemoryBreakdown:
    """Predicted bytes of one training process, by what holds them (see tailor.plan.memory)."""

    weights: int
    adapter: int
    gradients: int
    optimizer: int
    activations: int
    temporary: int
    frozen: int
    generation: int
    overhead: int
    peak: int  # the high-water mark: not the sum, since gradients and activations do not all coexist

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RunSettings:
    """The settings of a run the memory and time models read (from a recipe, or given directly)."""

    method: str = "lora"               # full, freeze, lora, dora, qlora, prefix, prompt, ia3
    r: int = 16
    target_modules: object = "all-linear"
    lora_experts: bool | None = None
    freeze_last_n: int = 2
    num_virtual_tokens: int = 20
    weight_dtype: str = "float32"       # storage dtype of the base weights (model.dtype; auto = float32 to train)
    precision: str = "fp32"             # fp32, bf16 or fp16 (autocast)
    optimizer: str = "adamw"
    seq_len: int = 1024
    batch_size: int = 8
    grad_accum: int = 1
    gradient_checkpointing: bool = False
    nproc: int = 1
    distributed: str = "none"           # none, ddp, fsdp, deepspeed
    fsdp_sharding: str = "full_shard"
    tensor_parallel: int = 1            # train.tensor_parallel: the nproc processes split the matrices, share batches
    zero_stage: int = 2                 # deepspeed
    device: str = "cpu"
    padded: bool = False                # batches carry padding (an attention mask): sdpa repeats GQA keys/values
    objective: str = "sft"              # train.objective: classification has no vocabulary-sized loss
    reference: bool = False             # the objective scores a reference model (DPO/KTO; GRPO with a KL term):
                                        # a frozen copy under full / freeze, the adapter disabled under peft
    generations: int = 0                # grpo: answers sampled per prompt (0: no generation)
    completion_len: int = 0             # grpo: most tokens generated per answer
    teacher_parameters: int = 0         # distillation: the frozen teacher's parameters (0: no teacher)
    teacher_vocab: int = 0              # distillation: the teacher's vocabulary (its logits)
    head_share: float = 1.0             # share of a micro-batch's positions the output layer and the loss run at
                                        # (train.logits: loss: the positions whose next token carries loss)

    def to_dict(self) -> dict:
        return asdict(self)


PAIRED = ("dpo", "orpo", "simpo")  # objectives whose rows are a chosen and a rejected sequence


def trained_view(s: RunSettings) -> RunSettings:
    """The micro-batch the model trains on: paired preference rows as two sequences, GRPO's prompt + completion."""
    from dataclasses import replace

    rows = s.batch_size * (2 if s.objective in PAIRED else 1)
    seq = s.seq_len + (s.completion_len if s.objective == "grpo" else 0)
    return replace(s, batch_size=rows, seq_len=seq) if (rows, seq) != (s.batch_size, s.seq_len) else s


def _is_lora(method: str) -> bool:
    return method in ("lora", "dora", "qlora")


def _targeted(shape: ModelShape, s: RunSettings):
    """The linear groups LoRA / IA3 wrap: all-linear = every linear but the head (experts as adapter.lora_experts says)."""
    names = s.target_modules
    out = []
    for lin in shape.linears:
        fused = lin.experts > 1
        if fused and s.lora_experts is False:
            continue
        if names == "all-linear" or (fused and s.lora_experts):
            out.append(lin)
        elif lin.name in names:
            out.append(lin)
    return out


def adapter_parameters(shape: ModelShape, s: RunSettings) -> int:
    """Parameters the adapter adds (LoRA: r x (in + out) per wrapped weight and expert; DoRA: + a magnitude per output)."""
    if _is_lora(s.method):
        n = sum(s.r * (lin.in_features + lin.out_features) * lin.count * lin.experts for lin in _targeted(shape, s))
        if s.method == "dora":
            n += sum(lin.out_features * lin.count for lin in _targeted(shape, s) if lin.experts == 1)
        return n
    if s.method == "prompt":
        return s.num_virtual_tokens * shape.hidden_size
    if s.method == "prefix":
        return s.num_virtual_tokens * 2 * shape.num_layers * shape.num_kv_heads * shape.head_dim
    if s.method == "ia3":
        return sum(lin.out_features * lin.count * lin.experts for lin in _targeted(shape, s))
    return 0


def trainable_parameters(shape: ModelShape, s: RunSettings) -> int:
    """Parameters that get a gradient and optimizer state."""
    if s.method == "full":
        return shape.parameters
    if s.method == "freeze":
        n = min(s.freeze_last_n, shape.num_layers)
        head = shape.by_kind.get("head", 0) or (shape.by_kind.get("embedding", 0) if shape.tied_embeddings else 0)
        return sum(shape.per_layer[shape.num_layers - n:]) + head + shape.hidden_size  # + the final norm
    return adapter_parameters(shape, s)


def quantized_parameters(shape: ModelShape) -> int:
    """Parameters bitsandbytes stores in 4 bits under QLoRA: nn.Linear weights but the head (fused experts stay)."""
    return sum(lin.in_features * lin.out_features * lin.count for lin in shape.linears if lin.experts == 1)


# Parameter kinds (ModelShape.by_kind) that transformers' tensor-parallel plans split; norms stay whole.
TP_SPLIT_KINDS = ("embedding", "attention", "mlp", "experts", "head")


def tensor_parallel_share(shape: ModelShape, s: RunSettings) -> float:
    """Share of the weights (and of their gradients and optimizer state) one process holds under
    train.tensor_parallel = N: attention, MLP, experts, embedding and head 1/N each, the rest whole."""
    if s.tensor_parallel <= 1 or not shape.parameters:
        return 1.0
    split = sum(shape.by_kind.get(k, 0) for k in TP_SPLIT_KINDS)
    return (shape.parameters - split + split / s.tensor_parallel) / shape.parameters


def _shards(s: RunSettings) -> tuple[int, int, int]:
    """(weights, gradients, optimizer) divisors under the distributed engine."""
    n = max(1, s.nproc)
    if n == 1 or s.distributed in ("none", "ddp"):
        return 1, 1, 1
    if s.distributed == "fsdp":
        return (n if s.fsdp_sharding == "full_shard" else 1), n, n
    stage = s.zero_stage  # deepspeed
    return (n if stage >= 3 else 1), (n if stage >= 2 else 1), (n if stage >= 1 else 1)


def _optimizer_bytes(shape: ModelShape, s: RunSettings, trainable: int, state_bytes: int) -> int:
    if s.optimizer == "adamw":
        return 2 * trainable * state_bytes
    if s.optimizer == "adamw_8bit":
        return 2 * trainable + trainable // 2048 * 8  # 1 byte per state, a float32 scale per 2048
    if s.optimizer == "sgd":
        return trainable * state_bytes
    if s.optimizer == "adafactor":  # factored second moment: a row and a column vector per matrix
        if s.method == "full":
            return sum((lin.in_features + lin.out_features) * lin.count * lin.experts for lin in shape.linears) * 4 \
                + (shape.by_kind.get("embedding", 0) // max(shape.hidden_size, 1) + shape.hidden_size) * 4
        return trainable * 4 // 8
    return 2 * trainable * state_bytes


def _block_saved(shape: ModelShape, s: RunSettings, moe: bool) -> float:
    """Bytes autograd keeps per token for one decoder block (see the module docstring).

    Counted from saved-tensor hooks on transformers' blocks (CPU, sdpa): each norm keeps its input and normalized
    input in the weights' dtype and its output (the next matmul's input) in the compute dtype; attention keeps
    q, k, v after rope and its output (3 more query-sized tensors under autocast: the casts around rope and the
    output projection); a gated MLP keeps gate, up, act(gate) and their product. Multi-head latent attention
    keeps its latents (query latent 4x, key/value latent 3x), q, k, v and the output projection's input; when
    query/key and value head sizes differ, CPU sdpa runs the math kernel, which also keeps the attention
    probabilities (heads x sequence per token, float32 even under bf16 autocast). A routed MoE block keeps, per chosen expert, the gathered input,
    gate/up, act, product and weighted output, plus the shared experts' MLP.
    """
    h, i = shape.hidden_size, shape.intermediate_size
    half = s.precision in ("bf16", "fp16")
    lo = 2 if half else 4                               # matmul outputs under autocast
    hi = 4 if s.weight_dtype == "float32" else 2       # the residual stream and norms stay in the weights' dtype
    heads = shape.num_heads
    total = 2 * (2 * h * hi + h * lo)                   # two norms
    if shape.kv_lora_rank:  # multi-head latent attention (DeepSeek-V2/V3)
        qk, v = shape.qk_head_dim, shape.v_head_dim
        rope = qk - shape.qk_nope_head_dim
        attn = 4 * shape.q_lora_rank + 3 * shape.kv_lora_rank + rope + heads * (2 * qk + v) + heads * v
        total += attn * lo
        if qk != v and s.device.startswith("cpu"):
            total += heads * s.seq_len * 4              # math sdpa: attention probabilities (float32 under autocast too)
    else:
        qd, kvd = heads * shape.head_dim, shape.num_kv_heads * shape.head_dim
        kv_saved = qd if s.padded and kvd != qd else kvd  # sdpa with a mask repeats GQA keys and values
        total += ((5 if half else 2) * qd + 2 * kv_saved) * lo / s.tensor_parallel  # heads split by tensor parallel
    if moe:
        k, mi = shape.experts_per_token, shape.moe_intermediate_size
        total += k * (2 * h + 4 * mi) * lo               # gathered input, gate_up, act, product, weighted output
        total += 4 * mi * max(shape.shared_experts, 0) * lo
        total += 4 * shape.num_experts * 4               # float32 router logits, scores, top-k mask
    else:
        total += 4 * i * lo / s.tensor_parallel          # gate, up, act(gate), act x up (split by tensor parallel)
    return total


def activation_bytes(shape: ModelShape, s: RunSettings) -> tuple[int, int]:
    """(saved activations, loss temporaries) of one micro-batch."""
    tokens = s.batch_size * s.seq_len
    dense_layers = shape.num_layers - shape.moe_layers
    per_dense = _block_saved(shape, s, moe=False)
    per_moe = _block_saved(shape, s, moe=True) if shape.moe_layers else 0.0
    hi = 4 if s.weight_dtype == "float32" else 2
    frozen_below = _frozen_prefix(shape, s)
    if s.gradient_checkpointing:
        blocks = shape.num_layers * shape.hidden_size * hi + max(per_dense, per_moe)
    else:
        blocks = dense_layers * per_dense + shape.moe_layers * per_moe
        if frozen_below:  # blocks below every trainable parameter save nothing
            blocks -= frozen_below * per_dense
    lo = 2 if s.precision in ("bf16", "fp16") else 4
    saved = tokens * (blocks + shape.hidden_size * (2 * hi + lo))  # + the final norm
    # the loss: float32 logits, log-softmax output, its gradient and the logits' gradient over the vocabulary
    loss = tokens * s.head_share * shape.vocab_size * (3 * 4 + (lo if lo != 4 else 0))
    if s.objective == "classification":
        loss = 0  # a label head: the loss is over a few classes, not the vocabulary
    return int(saved), int(loss)


def heap_share(shape: ModelShape, s: RunSettings) -> float:
    """Share of the saved activations in tensors small enough for glibc's heap (under MMAP_THRESHOLD_MAX): the
    hidden-sized and intermediate-sized tensors of one micro-batch, weighted by how many of each a block keeps."""
    tokens = s.batch_size * s.seq_len
    lo = 2 if s.precision in ("bf16", "fp16") else 4
    inter = shape.moe_intermediate_size if shape.moe_layers and not shape.intermediate_size else shape.intermediate_size
    sizes = [(tokens * shape.hidden_size * 4, 6 * shape.hidden_size * 4), (tokens * inter * lo, 4 * inter * lo)]
    total = sum(w for _, w in sizes)
    return sum(w for size, w in sizes if size <= MMAP_THRESHOLD_MAX) / total if total else 1.0


def _frozen_prefix(shape: ModelShape, s: RunSettings) -> int:
    """Decoder blocks below every trainable parameter (freeze-last-N: backward stops before them)."""
    if s.method == "freeze":
        return max(0, shape.num_layers - s.freeze_last_n)
    return 0


def estimate_memory(shape: ModelShape, s: RunSettings, overhead: int) -> tuple[MemoryBreakdown, int, int]:
    """(breakdown, trainable parameters, adapter parameters) of one process of the run `s` on model `shape`."""
    planned, s = s, trained_view(s)
    wdiv, gdiv, odiv = _shards(s)
    wbytes = DTYPE_BYTES.get(s.weight_dtype, 4)
    if s.method == "qlora":
        q = quantized_parameters(shape)
        weights = q * NF4_BYTES + (shape.parameters - q) * 2  # the rest in the bf16/fp16 compute dtype
    else:
        weights = shape.parameters * wbytes
    gathered = 2 * max(shape.per_layer or [0]) * wbytes if wdiv > 1 else 0
    tp_share = tensor_parallel_share(shape, s)
    weights = weights / wdiv * tp_share + gathered
    adapter_n = adapter_parameters(shape, s)
    adapter = adapter_n * 4
    trainable = trainable_parameters(shape, s)
    tbytes = 4 if s.method not in ("full", "freeze") else wbytes
    gradients = trainable * tbytes / gdiv * tp_share
    optimizer = _optimizer_bytes(shape, s, trainable, tbytes) / odiv * tp_share
    saved, loss = activation_bytes(shape, s)
    temporary = loss
    if s.precision in ("bf16", "fp16") and s.method != "qlora" and wbytes == 4:
        # autocast keeps a half-precision copy of every matmul weight until the backward (embeddings are lookups)
        cast = shape.parameters - (0 if shape.tied_embeddings else shape.by_kind.get("embedding", 0))
        temporary += cast * 2 / wdiv * tp_share
    if s.distributed == "ddp" or (s.nproc > 1 and s.distributed == "none" and s.tensor_parallel == 1):
        temporary += trainable * tbytes  # DDP's gradient buckets
    # grads the backward has produced while the loss temporaries and most activations still exist: the head
    head_grads = (shape.by_kind.get("head", 0) or (shape.by_kind.get("embedding", 0) if shape.tied_embeddings else 0))
    head_grads = head_grads * tbytes if s.method in ("full", "freeze") else 0
    step_scratch = 2 * max((lin.in_features * lin.out_features * lin.experts for lin in shape.linears), default=0) * tbytes \
        if s.method in ("full", "freeze") and s.optimizer != "adamw" else 0
    if s.device.startswith("cpu"):
        temporary += CPU_RUNTIME + CPU_HEAP_RETENTION * heap_share(shape, s) * saved
        if _is_lora(s.method):
            # peft adds the adapter's output to the base output of every wrapped layer (base output, B(A(x)),
            # scaled, sum): output-sized temporaries that glibc's heap keeps between the saved activations
            # (fitted on bench/bench_plan.py's LoRA rows: about one output-sized tensor per wrapped layer)
            lo = 2 if s.precision in ("bf16", "fp16") else 4
            outs = sum(lin.out_features * lin.count for lin in _targeted(shape, s) if lin.experts == 1)
            temporary += s.batch_size * s.seq_len * outs * lo
    frozen = weights if s.reference and s.method in ("full", "freeze") else 0
    if s.teacher_parameters:
        frozen += s.teacher_parameters * wbytes
        # the teacher's logits, masked float32 copy and log-softmax at the temperature; the student's masked copy
        # and log-softmax at the temperature beside the hard-label loss (tailor.training.distill.loss_terms)
        temporary += s.batch_size * s.seq_len * (16 * s.teacher_vocab + 8 * shape.vocab_size)
    generation = generation_bytes(shape, planned)
    during_backward = saved + temporary + (gradients if s.grad_accum > 1 else head_grads / gdiv)
    at_step = gradients + step_scratch
    peak = weights + adapter + optimizer + frozen + max(during_backward, at_step, generation) + overhead
    b = MemoryBreakdown(weights=int(weights), adapter=int(adapter), gradients=int(gradients), optimizer=int(optimizer),
                        activations=int(saved), temporary=int(temporary), frozen=int(frozen),
                        generation=int(generation), overhead=int(overhead), peak=int(peak))
    return b, trainable, adapter_n


def generation_bytes(shape: ModelShape, s: RunSettings) -> int:
    """GRPO's sampling: the KV cache of the step's answers (train.batch_size x grad_accum rows, TRL's generation
    batch) over prompt + completion tokens, keys and values per layer in the compute dtype (multi-head latent
    attention caches full keys and values in transformers), plus the last position's logits and sampling
    probabilities (float32). 0 without generation."""
    if s.objective != "grpo" or not s.generations:
        return 0
    rows = s.batch_size * s.grad_accum
    tokens = rows * (s.seq_len + s.completion_len)
    lo = 2 if s.precision in ("bf16", "fp16") else DTYPE_BYTES.get(s.weight_dtype, 4)
    if shape.kv_lora_rank:
        per_token = shape.num_heads * (shape.qk_head_dim + shape.v_head_dim)
    else:
        per_token = 2 * shape.num_kv_heads * shape.head_dim
    return int(tokens * shape.num_layers * per_token * lo + rows * shape.vocab_size * 4 * 2)
