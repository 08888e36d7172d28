"""What machine a figure was measured on: the CPU's model, its cores and its native-bf16 capability."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from engine.speed import cpu_bf16_flags


def cpu_name() -> str:
    """The CPU's model name, its cores and its native bf16 flags, e.g. `AMD EPYC, 2 cores, bf16: avx512_bf16`."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        info = ""
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "")
    flags = cpu_bf16_flags(info) if info else ()
    bf16 = f"bf16: {', '.join(flags)}" if flags else "no native bf16"
    return f"{name or platform.processor() or 'unknown CPU'}, {os.cpu_count()} cores, {bf16}"
