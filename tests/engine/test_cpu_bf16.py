"""bf16 on a CPU that computes it natively: `auto` picks it (and says why), and a bf16 run stays within a stated
tolerance of the fp32 run: the loss at every step within LOSS_TOLERANCE (relative), the final pixels within
PIXEL_TOLERANCE (mean absolute, in [0, 1]). The runs are skipped where the CPU has no native bf16."""

from __future__ import annotations

import pytest
import torch

from engine.memory import uses_half
from engine.speed import Speed, cpu_bf16_flags, cpu_precision
from engine.speed.fast import autocast_dtype, cpu_computes_bf16, precision_reason

pytestmark = pytest.mark.native_bf16  # the machine's own capability, not the suite's fp32 (tests/conftest.py)

LOSS_TOLERANCE = 0.01  # bf16 keeps about 3 significant digits; the losses sum many of them
PIXEL_TOLERANCE = 0.02
CPU = torch.device("cpu")
needs_bf16 = pytest.mark.skipif(not cpu_computes_bf16(), reason="this CPU has no native bf16 (AVX512-BF16 or AMX)")

ZEN4 = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_vnni\n"
SAPPHIRE = "flags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
OLDER = "flags\t\t: fpu sse avx2 avx512f avx512bw\n"


def test_the_flags_of_native_bf16_are_read_from_cpuinfo():
    assert cpu_bf16_flags(ZEN4) == ("avx512_bf16",)
    assert cpu_bf16_flags(SAPPHIRE) == ("amx_bf16", "avx512_bf16")
    assert cpu_bf16_flags(OLDER) == () and cpu_bf16_flags("") == ()


def test_auto_is_bf16_exactly_where_the_cpu_computes_it_and_fp32_still_forces_fp32():
    native = cpu_computes_bf16()
    assert native == bool(cpu_bf16_flags())  # torch and /proc/cpuinfo agree on this machine
    assert autocast_dtype(Speed(), CPU) == (torch.bfloat16 if native else None)
    assert uses_half("auto", "cpu") == native  # the memory check (no torch) sees what the engine will do
    assert autocast_dtype(Speed(precision="fp32"), CPU) is None and not uses_half("fp32", "cpu")
    assert autocast_dtype(Speed(precision="bf16"), CPU) is torch.bfloat16
    reason = precision_reason(Speed(), CPU)
    assert reason.startswith("bf16 (auto: this CPU computes bf16 natively") if native else reason.startswith("fp32")
    assert cpu_precision("auto").split()[0] == reason.split()[0]
    assert precision_reason(Speed(precision="fp32"), CPU) == "fp32 (IMAGINE_PRECISION=fp32)"


def _trajectory(engine, spec) -> tuple[list[float], torch.Tensor]:
    run = engine.start(spec)
    losses = []
    while not run.done:
        engine.step([run])
        losses.append(float(run.last_losses.sum()))
    return losses, run.image()


def _assert_close(fp32, bf16) -> None:
    (l32, i32), (l16, i16) = fp32, bf16
    assert all(torch.isfinite(torch.tensor(l16)))
    worst = max(abs(a - b) / max(abs(a), 1e-6) for a, b in zip(l32, l16, strict=True))
    assert worst < LOSS_TOLERANCE, f"losses {l32} (fp32) vs {l16} (bf16)"
    assert (i32 - i16).abs().mean().item() < PIXEL_TOLERANCE


@needs_bf16
def test_a_bf16_run_of_the_real_size_models_stays_close_to_fp32():
    from engine.engine import Engine
    from engine.models.tiny import real_size_clip, real_size_vqgan
    from engine.spec import JobSpec

    torch.manual_seed(0)
    clip, vqgan = real_size_clip(), real_size_vqgan()
    spec = JobSpec("a lighthouse at dusk", width=128, height=128, steps=3, seed=3, cutn=8)
    runs = {p: _trajectory(Engine(clip, vqgan, device="cpu", speed=Speed(precision=p)), spec) for p in ("fp32", "bf16")}
    _assert_close(runs["fp32"], runs["bf16"])


@needs_bf16
@pytest.mark.parametrize("name", ["fourier", "siren", "pixels", "biggan", "dalle"])
def test_each_generator_runs_bf16_within_the_tolerance(generator_models, name):
    from engine.loading import EnginePool, ModelSettings
    from engine.spec import JobSpec

    fields = {
        "biggan": dict(model="tiny-biggan", width=32, height=32),
        "dalle": dict(model="tiny-dvae", width=32, height=24),
        "siren": dict(width=32, height=24, options={"layers": 3, "hidden": 32}),
    }.get(name, dict(width=32, height=24))
    spec = JobSpec("a red apple", generator=name, steps=4, seed=3, cutn=4, clip_model="tiny-clip", **fields)
    runs = {}
    for precision in ("fp32", "bf16"):
        pool = EnginePool(ModelSettings(models_dir=generator_models[0], device="cpu", speed=Speed(precision=precision)))
        runs[precision] = _trajectory(pool.engine_for(spec), spec)
    _assert_close(runs["fp32"], runs["bf16"])
