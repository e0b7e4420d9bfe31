"""Scale-out: `tailor train --nproc N` launches workers through torchrun; each runs the normal training stage.

The engines are the field's own, switched on through transformers' TrainingArguments (accelerate underneath):
`train.distributed` = ddp (DistributedDataParallel), fsdp (FSDP2: parameters, gradients and optimizer state
sharded) or deepspeed (ZeRO, from a JSON config; configs/deepspeed/ ships ZeRO-2 and ZeRO-3). On CPUs the
process group uses gloo. Only rank 0 writes final/, metrics.jsonl, train_summary.json and config.yaml;
checkpoints are written collectively (FSDP gathers or shards them across processes).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
from pathlib import Path

from tailor.config import Recipe, TrainConfig
from tailor.errors import TailorError

log = logging.getLogger("tailor")

FSDP_WRAP = {"transformer": "TRANSFORMER_BASED_WRAP", "none": "NO_WRAP"}
FSDP_STATE_DICT = {"full": "FULL_STATE_DICT", "sharded": "SHARDED_STATE_DICT"}
DEFAULT_MASTER_PORT = 29500


def world_size() -> int:
    """Processes in this run (1 outside a torchrun launch)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """True on global rank 0 (and in a plain single-process run): the one process that writes run files."""
    return int(os.environ.get("RANK", "0")) == 0


def check_distributed(recipe: Recipe, device_type: str, launched: bool | None = None, processes: int | None = None) -> None:
    """Refuse settings that cannot run, before any process starts work (the launcher and every worker call it).

    `launched` says whether this process is a torchrun worker (default: read from the environment); `processes`:
    the run's processes (default: WORLD_SIZE).
    """
    t, method = recipe.train, recipe.adapter.method
    if launched is None:
        launched = world_size() > 1 or "LOCAL_RANK" in os.environ
    if t.tensor_parallel > 1:
        from tailor.training.tensor_parallel import check_tensor_parallel

        check_tensor_parallel(recipe, launched, processes or world_size())
    if t.distributed == "none":
        return
    if not launched:
        raise TailorError(f"train.distributed={t.distributed} needs worker processes started by a launcher",
                          where="train.distributed",
                          fix="run `tailor train RECIPE --nproc N` (or torchrun ... -m tailor.cli train RECIPE), "
                              "or set train.distributed=none for one process")
    if t.distributed == "deepspeed":
        load_deepspeed_config(t.deepspeed_config)
        if importlib.util.find_spec("deepspeed") is None:
            raise TailorError("train.distributed=deepspeed needs the deepspeed package, which is not installed",
                              where="train.distributed",
                              fix="pip install deepspeed on a CUDA machine, or use train.distributed=fsdp (ZeRO-3-like "
                                  "sharding built into torch) or ddp")
        if device_type != "cuda":
            raise TailorError(f"train.distributed=deepspeed runs on CUDA GPUs; this run is on {device_type}",
                              where="train.distributed",
                              fix="use train.distributed=fsdp or ddp on this machine (both run on CPUs with gloo)")
    if t.distributed in ("fsdp", "deepspeed"):
        sharded = f"train.distributed={t.distributed}"
        if method == "qlora":
            raise TailorError(f"adapter.method=qlora with {sharded}: a 4-bit bitsandbytes base is not sharded here",
                              where="adapter.method", fix="use adapter.method=lora with fsdp, or qlora with ddp")
        if t.ema_decay:
            raise TailorError(f"train.ema_decay with {sharded}: the EMA keeps full copies of weights that are sharded",
                              where="train.ema_decay", fix="set train.ema_decay=0, or use train.distributed=ddp")
        if t.adversarial != "none":
            raise TailorError(f"train.adversarial={t.adversarial} with {sharded}: adversarial training moves the whole embedding matrix, "
                              "which is sharded", where="train.adversarial",
                              fix="set train.adversarial=none, or use train.distributed=ddp")


def load_deepspeed_config(path: str | None) -> dict:
    """Read and check a DeepSpeed JSON config: it parses, and zero_optimization.stage is 0-3.

    "auto" values are left for the Trainer, which fills them from train.* (batch size, grad accumulation,
    clipping, learning rate, precision).
    """
    if not path:
        raise TailorError("train.distributed=deepspeed needs train.deepspeed_config", where="train.deepspeed_config",
                          fix="point it at a DeepSpeed JSON file, e.g. configs/deepspeed/zero2.json or zero3.json")
    p = Path(path)
    if not p.is_file():
        raise TailorError(f"DeepSpeed config {path} not found", where="train.deepspeed_config",
                          fix="give an existing JSON file, e.g. configs/deepspeed/zero2.json or zero3.json")
    try:
        cfg = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise TailorError(f"DeepSpeed config is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
                          where=str(p), fix="fix the JSON syntax") from None
    stage = cfg.get("zero_optimization", {}).get("stage") if isinstance(cfg, dict) else None
    if stage not in (0, 1, 2, 3):
        raise TailorError(f"DeepSpeed config has zero_optimization.stage={stage!r}; expected 0, 1, 2 or 3",
                          where=f"{p}: zero_optimization.stage", fix="set it, e.g. 2 (ZeRO-2) or 3 (ZeRO-3)")
    for section, key in (("optimizer", "train.optimizer"), ("scheduler", "train.scheduler")):
        if section in cfg:
            log.warning("%s: its %s section replaces %s (leave it out to use tailor's)", p, section, key)
    return cfg


def distributed_arguments(t: TrainConfig, device_type: str) -> dict:
    """TrainingArguments keywords of the distributed engine (empty for a one-process run); args.py passes them on."""
    if world_size() == 1 and t.distributed == "none":
        return {}
    kw: dict = {}
    if device_type == "cpu":
        kw["ddp_backend"] = "gloo"  # accelerate would take mpi where torch has it; gloo is always there
    if t.distributed == "fsdp":
        kw["fsdp"] = True
        kw["fsdp_config"] = {
            "version": 2,
            "reshard_after_forward": t.fsdp_sharding == "full_shard",
            "auto_wrap_policy": FSDP_WRAP[t.fsdp_auto_wrap],
            "state_dict_type": FSDP_STATE_DICT[t.fsdp_state_dict],
            # FSDP's own checkpointing; args.py turns the Trainer's off (it would add an all-gather in the backward).
            "activation_checkpointing": t.gradient_checkpointing,
        }
    elif t.distributed == "deepspeed":
        kw["deepspeed"] = str(Path(t.deepspeed_config).resolve())
    if t.tensor_parallel > 1:
        # The Trainer checkpoints a model split at load time without its optimizer state (and refuses otherwise).
        kw["save_only_model"] = True
        if device_type == "cpu":
            from tailor.training.tensor_parallel import cpu_tensor_parallel

            kw["parallelism_config"] = cpu_tensor_parallel(t.tensor_parallel)
    return kw



# accelerate releases whose AcceleratorState layout fsdp_on_cpu was tested with (constraints.txt pins 1.15.0).
FSDP_ON_CPU_ACCELERATE = ("1.15",)


def fsdp_on_cpu(accelerator, plugin_args: dict) -> None:
    """Turn a multi-process CPU accelerator into an FSDP one (TailorTrainer calls it when it builds its accelerator).

    accelerate promotes a run to FSDP only on accelerator devices (AcceleratorState does it for MULTI_GPU, XPU, ...
    but not MULTI_CPU, and neither ACCELERATE_USE_FSDP nor a passed plugin changes that), so on CPUs `fsdp=True`
    would silently train as plain DDP. No public API sets it, so this sets what AcceleratorState sets on a GPU (the
    plugin and the distributed type, in its shared state and PartialState's) before the model is prepared; the
    Trainer's own FSDP2 path then runs over gloo. It writes accelerate's private state, so it runs only on the
    accelerate releases it was tested with; on others the run stops with a TailorError rather than train as DDP.
    """
    import accelerate
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    if not accelerate.__version__.startswith(tuple(v + "." for v in FSDP_ON_CPU_ACCELERATE)):
        raise TailorError(f"train.distributed=fsdp on CPUs needs accelerate {' or '.join(FSDP_ON_CPU_ACCELERATE)}.x "
                          f"(it sets accelerate's FSDP state itself); this is accelerate {accelerate.__version__}",
                          where="train.distributed", fix="use train.distributed=ddp on CPUs, or install the accelerate "
                          "version in constraints.txt")
    state = accelerator.state
    if state.distributed_type != DistributedType.MULTI_CPU:
        raise RuntimeError(f"FSDP was asked for but accelerate set up {state.distributed_type}")
    state.fsdp_plugin = FullyShardedDataParallelPlugin(**plugin_args)
    state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP


def save_model(trainer, out_dir: Path) -> None:
    """Save the trained model (or adapter) as a normal Hugging Face folder, whatever engine trained it.

    One process: `save_pretrained` as usual. DDP: rank 0 saves (every replica is identical). Tensor parallel:
    every rank joins save_pretrained's gather of the weights split at load time, rank 0 writes. FSDP: every rank
    joins the gather of the full state dict (whatever train.fsdp_state_dict says for checkpoints) and rank 0
    writes it, so the folder loads with plain `from_pretrained` / `PeftModel.from_pretrained`.
    DeepSpeed: the Trainer's own `save_model` (ZeRO-3 gathers 16-bit weights as its config says).
    """
    if getattr(trainer, "is_deepspeed_enabled", False):
        trainer.save_model(str(out_dir))
        return
    if getattr(trainer, "is_distributed_loading_by_transformers", False):
        # Tensor parallel: every rank joins save_pretrained's gather of the DTensor shards; rank 0 writes full tensors.
        trainer.model.save_pretrained(out_dir, is_main_process=trainer.args.should_save, safe_serialization=True)
        return
    model = trainer.accelerator.unwrap_model(trainer.model) if getattr(trainer, "is_fsdp_enabled", False) else trainer.model
    state_dict = None
    if getattr(trainer, "is_fsdp_enabled", False):
        state_dict = trainer.accelerator.get_state_dict(trainer.model)  # FSDP2: full tensors on rank 0
    if trainer.args.should_save:
        model.save_pretrained(out_dir, state_dict=state_dict, safe_serialization=True)
    if world_size() > 1:
        trainer.accelerator.wait_for_everyone()


def worker_command(recipe_path: str, overrides: list[str], verbose: bool) -> list[str]:
    """The module and arguments every worker runs: the ordinary `tailor train` of this recipe."""
    return ["-m", "tailor.cli", *(["-v"] if verbose else []), "train", str(Path(recipe_path).resolve()), *overrides]


def torchrun_args(nproc: int, nnodes: int, node_rank: int, master_addr: str | None, master_port: int | None) -> list[str]:
    """torchrun options: a one-node run finds a free port itself (--standalone) unless a port is given."""
    if nnodes == 1 and master_port is None and master_addr is None:
        return ["--standalone", f"--nproc-per-node={nproc}"]
    return [f"--nproc-per-node={nproc}", f"--nnodes={nnodes}", f"--node-rank={node_rank}",
            f"--master-addr={master_addr or '127.0.0.1'}", f"--master-port={master_port or DEFAULT_MASTER_PORT}"]


def check_launch(nproc: int, nnodes: int, node_rank: int, master_addr: str | None, master_port: int | None) -> None:
    """Refuse launcher flags that cannot start a run."""
    if nproc < 1:
        raise TailorError(f"--nproc {nproc}: the number of processes per node must be at least 1", where="--nproc",
                          fix="e.g. --nproc 2 (one per GPU, or a few per CPU machine)")
    if nnodes < 1:
        raise TailorError(f"--nnodes {nnodes}: must be at least 1", where="--nnodes")
    if not 0 <= node_rank < nnodes:
        raise TailorError(f"--node-rank {node_rank} is outside 0..{nnodes - 1} for --nnodes {nnodes}", where="--node-rank",
                          fix="number the machines 0, 1, ... with rank 0 on the --master-addr machine")
    if nnodes > 1 and not master_addr:
        raise TailorError(f"--nnodes {nnodes} needs --master-addr: the address of the node-rank 0 machine",
                          where="--master-addr", fix="e.g. --master-addr 10.0.0.1 on every node")
    if master_port is not None and not 0 < master_port < 65536:
        raise TailorError(f"--master-port {master_port} is not a TCP port", where="--master-port",
                          fix=f"e.g. --master-port {DEFAULT_MASTER_PORT}")
    if "LOCAL_RANK" in os.environ:
        raise TailorError("--nproc inside a process that torchrun already started", where="--nproc",
                          fix="leave out --nproc when launching with torchrun yourself")


def launch(recipe_path: str, overrides: list[str], nproc: int, nnodes: int = 1, node_rank: int = 0,
           master_addr: str | None = None, master_port: int | None = None, verbose: bool = False) -> int:
    """Start `nproc` workers on this node through torchrun (torch.distributed.run) and wait for them.

    The recipe is loaded and checked here first, so a bad setting fails once, before any worker starts.
    More than one process with train.distributed=none means ddp (a notice says so). The training data
    (data.train files or data.sources) is prepared here, so workers read the cache instead of writing it concurrently. Returns the exit code
    (the first failed worker's: 2 for a user error).
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run as torchrun

    from tailor.config import load_recipe
    from tailor.models.loading import resolve_device

    check_launch(nproc, nnodes, node_rank, master_addr, master_port)
    recipe = load_recipe(recipe_path, overrides)
    total = nproc * nnodes
    if total > 1 and recipe.train.distributed == "none" and recipe.train.tensor_parallel == 1:
        log.warning("%d processes with train.distributed=none: training with ddp", total)
        overrides = [*overrides, "train.distributed=ddp"]
        recipe = load_recipe(recipe_path, overrides)
    device = resolve_device(recipe.train.device)
    check_distributed(recipe, device.type, launched=True, processes=total)
    import torch

    if device.type == "cuda":
        if nproc > torch.cuda.device_count():
            raise TailorError(f"--nproc {nproc} but this node has {torch.cuda.device_count()} CUDA GPUs", where="--nproc",
                              fix="one process per GPU: lower --nproc, or set train.device=cpu")
    m = recipe.model
    if recipe.train.objective != "classification" and (m.tokenizer or m.path):
        from tailor.data.training_data import prepare_training_data
        from tailor.models.loading import load_tokenizer
        from tailor.models.translation import translator_for

        tokenizer = load_tokenizer(m.tokenizer or m.path, trust_remote_code=m.trust_remote_code,
                                   chat_template=recipe.data.chat_template)
        prepare_training_data(recipe, tokenizer, translator=translator_for(recipe.data.augment.back_translation))
    argv = [*torchrun_args(nproc, nnodes, node_rank, master_addr, master_port),
            *worker_command(recipe_path, overrides, verbose)]
    log.info("launching: torchrun %s", " ".join(argv))
    env_threads = os.environ.setdefault("OMP_NUM_THREADS", "1")  # torchrun's default too; say it instead of warning
    # A CPU run on a GPU machine: accelerate would still place each worker's loss on cuda:N (seen on an H100:
    # "Calculated loss must be on the original device: cpu"); workers that see no GPU stay on the CPU.
    hide_gpus = device.type == "cpu" and torch.cuda.is_available()
    if hide_gpus:
        log.info("train.device is cpu: the worker processes see no GPU (CUDA_VISIBLE_DEVICES='')")
    log.info("%d worker processes on this node, OMP_NUM_THREADS=%s each", nproc, env_threads)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        if hide_gpus:  # for the workers only: this process keeps its GPUs for what it starts later
            os.environ["CUDA_VISIBLE_DEVICES"] = ""
        torchrun(get_args_parser().parse_args(argv))
    except ChildFailedError as exc:
        codes = [f.exitcode for f in exc.failures.values()]
        code = next((c for c in codes if c and c > 0), 1)
        print(f"error: {len(codes)} of {nproc} worker processes failed (exit code {code}); see their messages above",
              file=sys.stderr)
        return code
    finally:
        if hide_gpus:
            if visible is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = visible
    return 0
