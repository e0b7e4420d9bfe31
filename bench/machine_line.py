"""One line naming the machine a bench ran on: CPU model, core count, the instruction sets that decide CPU speed
(avx2, avx512f, avx512_bf16, amx_bf16) and the load average, for every figure a bench prints."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def machine() -> str:
    flags = ""
    try:
        info = Path("/proc/cpuinfo").read_text()
        model = next(line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name"))
        flags = " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in info)
    except (OSError, StopIteration):
        model = platform.processor()
    return f"{model} ({os.cpu_count()} cpus; {flags}); load {os.getloadavg()[0]:.2f}"
