"""Shared fixtures: tiny random-weight models written in the real file formats, once per session."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

# Property tests draw the same examples on every run, so CI is repeatable; search wider by hand with
# HYPOTHESIS_PROFILE=explore (random examples, more of them).
settings.register_profile("repeatable", derandomize=True, deadline=None)
settings.register_profile("explore", max_examples=5000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

# The suite computes in fp32 on every machine, so that its thresholds and bytes do not depend on the CPU a CI run
# draws (`auto` is bf16 on a CPU with native bf16; tests marked native_bf16, tests/engine/test_cpu_bf16.py, check that
# path on purpose). The environment reaches the bots and workers the tests start as processes.
os.environ["IMAGINE_PRECISION"] = "fp32"


@pytest.fixture(scope="session", autouse=True)
def _fp32_suite():
    """In-process engines see a CPU without native bf16, so `auto` means fp32 (session-wide: the shared engines are
    made before any test's own fixtures)."""
    import engine.memory
    from engine.speed import fast

    patch = pytest.MonkeyPatch()
    native = {"detect": fast.cpu_computes_bf16, "flags": engine.memory.cpu_bf16_flags}
    patch.setattr(fast, "cpu_computes_bf16", lambda: False)
    patch.setattr(engine.memory, "cpu_bf16_flags", lambda cpuinfo=None: ())
    yield native
    patch.undo()


@pytest.fixture(autouse=True)
def _native_bf16(request, monkeypatch, _fp32_suite):
    """A test marked native_bf16 sees the machine's own bf16 capability."""
    if request.node.get_closest_marker("native_bf16"):
        import engine.memory
        from engine.speed import fast

        monkeypatch.setattr(fast, "cpu_computes_bf16", _fp32_suite["detect"])
        monkeypatch.setattr(engine.memory, "cpu_bf16_flags", _fp32_suite["flags"])


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """A models directory holding tiny_f16, tiny_gumbel_f8 (taming .ckpt + .yaml) and tiny-clip (open_clip)."""
    from engine.models.tiny import write_tiny_models

    return write_tiny_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def pool(tiny_models):
    from engine.loading import EnginePool, ModelSettings

    return EnginePool(ModelSettings(models_dir=tiny_models, device="cpu"))


@pytest.fixture(scope="session")
def tiny_spec():
    """A factory for specs on the tiny models."""
    from engine.spec import JobSpec

    def make(prompt: str = "a red apple", **kw) -> JobSpec:
        defaults = dict(width=64, height=48, steps=6, seed=1, cutn=8, model="tiny_f16", clip_model="tiny-clip")
        defaults.update(kw)
        return JobSpec(prompt, **defaults)

    return make


@pytest.fixture(scope="session")
def engine(pool, tiny_spec):
    return pool.engine_for(tiny_spec())
