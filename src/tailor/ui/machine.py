"""What this machine has, read without importing torch (the UI process stays light): CPU model and instruction
sets, cores, memory, GPUs (nvidia-smi) and their memory."""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

# Instruction sets that decide CPU training and inference speed (bf16/VNNI/AMX matmuls, AVX-512 kernels).
FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8", "asimd", "sve")


@lru_cache(maxsize=1)
def machine_info() -> dict:
    cpu, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "Model") and cpu == "unknown CPU":
                cpu = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return {"cpu": cpu, "flags": [f for f in FLAGS if f in flags], "cores": os.cpu_count() or 1,
            "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "memory_gb": mem_gb, "gpus": gpus()}


def gpus() -> list[dict]:
    """NVIDIA GPUs with their memory (empty without nvidia-smi)."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run([exe, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    found = []
    for line in out.strip().splitlines():
        name, _, mem = line.rpartition(",")
        try:
            found.append({"name": name.strip(), "memory_gb": round(float(mem) / 1024, 1)})
        except ValueError:
            continue
    return found


def load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "-"
