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
