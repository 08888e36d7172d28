"""Fixtures of the generator tests: a models directory with the BigGAN and dVAE stand-ins beside the tiny CLIP."""

from __future__ import annotations

import pytest

from tests.engine import generator_formats


@pytest.fixture(scope="session")
def generator_models(tmp_path_factory):
    """A models directory as `download` lays it out, with the tiny CLIP beside the stand-ins."""
    from engine.models.tiny import write_clip

    root = tmp_path_factory.mktemp("models")
    write_clip(root)
    saved = {
        "biggan": generator_formats.write_biggan(root / "biggan" / "tiny-biggan"),
        "dalle": generator_formats.write_dvae(root / "dalle" / "tiny-dvae"),
    }
    return root, saved


@pytest.fixture(scope="session")
def gpool(generator_models):
    from engine.loading import EnginePool, ModelSettings

    return EnginePool(ModelSettings(models_dir=generator_models[0], device="cpu"))
