"""How much memory a job needs, and whether it fits: checked before a job is queued (bot) or models load (CLI).

Standard library only, so the bot checks a spec at submit time without torch. The device's side (free GPU
memory) comes from `engine.loading.device_budget`; on a CPU it is the machine's available RAM, read here.

    budget = Budget(available=20 * 2**30, half=True, where="the GPU")
    budget.check(*spec.final_size, spec.cutn, spec.generator)   # InvalidSpec: "... needs about 470 GB ..."
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from engine import quality
from engine.errors import InvalidSpec
from engine.generators import declaration
from engine.generators.base import Memory
from engine.speed import cpu_bf16_flags

# Memory one run's step needs on top of the models, in bytes: activations kept for the backward grow with the
# image's pixels (the decoder) and with the cutouts (CLIP). Each generator declares its costs (`Memory`; the
# defaults were read off the autograd graph of real-size steps, imagenet f16 VQGAN + ViT-B/32, fp32, see
# `bench/memory.py`); bf16/fp16 activations take about 0.6 of them.
MODELS_BYTES = 1_500_000_000  # the VQGAN and CLIP weights plus the CUDA context, roughly


def step_bytes(width: int, height: int, cutn: int, half: bool, cost: Memory = Memory()) -> int:
    """Estimated memory of one run's step at this size (activations for the backward, plus headroom)."""
    fp32 = cost.bytes_per_pixel * width * height + cost.bytes_per_cutout * cutn
    return int(fp32 * (0.6 if half else 1.0) * 1.2)


# A decoder's self-attention runs at its latent grid (VQGAN's: one token per 16x16 pixels): each of its four
# attention layers keeps a tokens x tokens matrix for the backward, and the softmax and its gradient add about two
# more at the peak (`Memory.attention_matrices`). Negligible at the sizes the bot offers (12 MB at 512x512), it is
# 100 GB at 4096x4096.


def uses_half(precision: str, device_type: str) -> bool:
    """Whether activations are bf16/fp16 under this precision setting on this kind of device (as engine.speed.fast:
    `auto` is bf16 on CUDA and on a CPU with native bf16)."""
    if precision in ("bf16", "fp16"):
        return True
    return precision == "auto" and (device_type == "cuda" or (device_type == "cpu" and bool(cpu_bf16_flags())))


def job_bytes(width: int, height: int, cutn: int, half: bool, cost: Memory = Memory()) -> int:
    """Estimated memory of one job's step at this size, beyond the models: the measured per-pixel and per-cutout
    costs (`step_bytes`) plus a decoder's attention matrices, which grow with the pixels squared."""
    attention = 0
    if cost.attention_stride:
        tokens = math.ceil(width / cost.attention_stride) * math.ceil(height / cost.attention_stride)
        attention = cost.attention_matrices * tokens * tokens * (2 if half else 4)
    return step_bytes(width, height, cutn, half, cost) + attention


def gigabytes(n: int) -> str:
    """Bytes as decimal gigabytes, e.g. `1.2 GB`."""
    return f"{n / 1e9:.1f} GB"


@dataclass(frozen=True)
class Budget:
    """The memory one job may use on a device once the models are loaded, and whether activations are half."""

    available: int
    half: bool = False
    where: str = "this machine"

    def check(
        self, width: int, height: int, cutn: int, generator: str = "vqgan", perceptors: tuple[str, ...] = ()
    ) -> None:
        """Raise InvalidSpec with a sentence when a job of this size cannot fit (at `generator`'s declared costs).
        `perceptors`: the CLIP models of an ensemble, each with `cutn` cutouts at its own cost and its weights
        beyond the one CLIP that MODELS_BYTES counts (engine.quality's table); none: one ViT-B/32-like CLIP."""
        names = tuple(perceptors) or ("ViT-B-32",)
        cutouts = round(cutn * sum(quality.clip_cost(name).activations for name in names))
        weights = max(0, sum(quality.clip_cost(n).weight_mb for n in names) - quality.clip_cost("ViT-B-32").weight_mb)
        need = job_bytes(width, height, cutouts, self.half, declaration(generator).memory) + weights * 1_000_000
        if need > self.available:
            room = gigabytes(max(0, self.available))
            each = f" for each of {len(names)} CLIP models" if len(names) > 1 else ""
            raise InvalidSpec(
                f"A {width}x{height} image with {cutn} cutouts{each} needs about {gigabytes(need)} of memory, and "
                f"{self.where} has {room} for a job. Choose a smaller size (or fewer cutouts, or a lower quality)."
            )

    def check_spec(self, spec) -> None:
        """`check` for a JobSpec: its largest stage, its cutouts per step and its CLIP models."""
        self.check(*spec.final_size, spec.cutn, spec.generator, tuple(name for name, _ in quality.members(spec)))


def available_ram() -> int | None:
    """Bytes of RAM available to new allocations now (Linux's MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def cpu_budget(precision: str = "auto") -> Budget | None:
    """The budget of a job on the CPU: the available RAM less the models; None where the RAM is unknown."""
    ram = available_ram()
    if ram is None:
        return None
    return Budget(ram - MODELS_BYTES, uses_half(precision, "cpu"), "this machine's memory")
