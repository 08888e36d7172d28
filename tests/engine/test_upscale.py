"""Upscale: the image is re-encoded at twice the size and the run goes on with the same prompts; the stages are
part of the spec, so snapshots, the Upscale of a finished run and recipe replay all give the same bytes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from engine.errors import InvalidSpec, OutOfMemory
from engine.images import read_recipe
from engine.spec import JobSpec
from tests.engine.test_generators import spec_for


def _first_upscaled_preview(engine, spec):
    """The source image (the run without its upscale) and the first preview at twice the size."""
    from PIL import Image

    from engine.loop import Callbacks, run_to_end

    source = engine.generate(spec.replace(upscales=()))
    previews = []
    run_to_end(engine, engine.start(spec), Callbacks(on_progress=lambda report, preview: previews.append(preview)))
    first = next(p for p in previews if p.size == (source.width * 2, source.height * 2))
    import io

    return Image.open(io.BytesIO(source.image)).convert("RGB"), first


def _pixels(picture) -> torch.Tensor:
    import numpy as np

    return torch.from_numpy(np.asarray(picture, dtype="float32") / 255).permute(2, 0, 1)[None]


@pytest.mark.parametrize("name", ["fourier", "siren"])
def test_the_first_upscaled_preview_resembles_the_source(gpool, name):
    fields = {"generator": "fourier", "width": 32, "height": 24, "options": None} if name == "fourier" else {}
    spec = spec_for("siren", steps=3, upscales=(2,), progress_every=1, **fields)
    engine = gpool.engine_for(spec)
    source, preview = _first_upscaled_preview(engine, spec)
    small = F.interpolate(_pixels(preview), size=source.size[::-1], mode="area")
    assert (small - _pixels(source)).abs().mean() < 0.02
    result = engine.generate(spec)
    assert (result.width, result.height) == (64, 48) and result.steps_done == 5


def test_vqgan_and_the_dvae_upscale_through_their_encoders(engine, tiny_spec, gpool):
    """The tiny random-weight autoencoders do not reconstruct, so the check is that the new latent is the encoder's
    reading of the resized image."""
    for eng, spec in (
        (engine, tiny_spec(steps=2, upscales=(1,))),
        (gpool.engine_for(spec_for("dalle")), spec_for("dalle", steps=2, upscales=(1,))),
    ):
        run = eng.start(spec)
        eng.step([run])
        assert run.stage == 0
        base = run.params.detach().clone()
        width, height = run.width, run.height
        run.step_index = 2  # at the stage boundary, as after the second step
        run.follow_stages()
        with torch.no_grad():
            bigger = F.interpolate(run.generator.decode(base), size=(height * 2, width * 2), mode="bicubic")
            expected = run.generator.encode(bigger.clamp(0, 1))
        assert (run.width, run.height) == (width * 2, height * 2)
        torch.testing.assert_close(run.params.detach(), expected)
        eng.step([run])
        assert run.done and eng.result(run, 0.0).width == width * 2


@pytest.mark.parametrize("name", ["dalle", "siren"])
def test_snapshots_across_the_upscale_resume_to_the_same_bytes(gpool, name):
    from engine.images import snapshot_bytes
    from engine.run import load_snapshot

    spec = spec_for(name, steps=2, upscales=(2,))
    engine = gpool.engine_for(spec)
    final = engine.generate(spec).image
    run = engine.start(spec)
    snaps = []
    while not run.done:
        engine.step([run])
        snaps.append(snapshot_bytes(run.snapshot()))
    for state in snaps[:-1]:  # before the boundary, at it (already upscaled) and after it
        resumed = engine.start(spec, load_snapshot(state))
        while not resumed.done:
            engine.step([resumed])
        assert engine.result(resumed, 0.0).image == final


def test_upscaling_a_finished_run_equals_a_run_planned_with_its_upscale(engine, tiny_spec):
    """The Upscale button: the finished run's snapshot, continued under the spec with one more stage."""
    from engine.images import snapshot_bytes
    from engine.run import load_snapshot

    spec = tiny_spec(steps=3)
    run = engine.start(spec)
    while not run.done:
        engine.step([run])
    finished = snapshot_bytes(run.snapshot())
    upscaled_spec = spec.upscaled(2)
    upscaled = engine.generate(upscaled_spec, snapshot=load_snapshot(finished))
    assert (upscaled.width, upscaled.height) == (128, 96)
    assert upscaled.image == engine.generate(upscaled_spec).image
    recipe = read_recipe(upscaled.image)
    assert recipe["spec"]["upscales"] == [2] and (recipe["width"], recipe["height"]) == (128, 96)
    assert JobSpec.from_dict(recipe["spec"]) == upscaled_spec


def test_an_upscale_that_does_not_fit_is_refused_with_a_sentence(engine, tiny_spec, monkeypatch):
    monkeypatch.setattr(engine, "free_bytes", lambda: 2**30)
    spec = tiny_spec(width=256, height=256, cutn=8, upscales=(5, 5))
    with pytest.raises(OutOfMemory, match=r"256x256 upscaled to 1024x1024 .* GiB"):
        engine.start(spec)
    engine.start(spec.replace(upscales=()))  # the size itself is not refused up front


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(width=2048, upscales=(10, 10)), "largest side"),
        (dict(upscales=(1, 1, 1, 1)), "at most 3"),
        (dict(upscales=(0,)), "between 1 and"),
    ],
)
def test_upscale_spec_validation(fields, message):
    with pytest.raises(InvalidSpec, match=message):
        JobSpec("x", **fields)


def test_old_specs_stay_valid_and_new_fields_round_trip():
    old = {"prompt": "a cat", "width": 64, "height": 64, "generator": "fourier", "model": "vqgan_imagenet_f16_16384"}
    spec = JobSpec.from_json(json.dumps(old))
    assert spec.upscales == () and spec.total_steps == spec.steps and spec.model == "vqgan_imagenet_f16_16384"
    new = JobSpec("a cat", generator="biggan", options={"truncation": 0.5, "class_name": "goldfish"})
    assert new.model == "biggan-deep-256" and new.lr == 0.07
    again = JobSpec.from_json(new.to_json())
    assert again == new and JobSpec.from_json(JobSpec("x", upscales=[3, 4]).to_json()).upscales == (3, 4)
    staged = JobSpec("x", steps=10, upscales=(5, 3))
    assert [staged.stage_at(s) for s in (0, 9, 10, 14, 15, 17)] == [0, 0, 1, 1, 2, 2] and staged.total_steps == 18
    assert staged.extended(4).upscales == (5, 7) and JobSpec("x", steps=10).extended(4).steps == 14
    assert JobSpec("x", steps=10).upscaled(50).upscaled(20).upscales == (50, 20)


def test_cli_upscale_is_recorded_and_replays(tiny_models, tmp_path):
    out, again = tmp_path / "up.png", tmp_path / "again.png"
    args = ["a tiny test", "--generator", "fourier", "--clip", "tiny-clip", "-s", "32x24", "--cutn", "4"]
    args += ["--device", "cpu", "--steps", "5", "--upscale", "2", "--seed", "5", "--models-dir", str(tiny_models)]
    args += ["--save-every", "5"]  # a frame at the step that upscales
    proc = subprocess.run([sys.executable, "-m", "engine", *args, "-o", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "then upscaled to 64x48, 2 steps" in proc.stderr
    recipe = read_recipe(out)
    assert recipe["spec"]["upscales"] == [2] and (recipe["width"], recipe["height"]) == (64, 48)
    assert (tmp_path / "up-00005.png").is_file()
    replay = ["--recipe", str(out), "-o", str(again), "-q", "--models-dir", str(tiny_models)]
    proc = subprocess.run([sys.executable, "-m", "engine", *replay], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert again.read_bytes() == out.read_bytes()
