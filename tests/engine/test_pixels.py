"""The pixels generator: the example of a generator added as one module (engine/generators/pixels.py) and its line
in the registry. Everything else (the spec, the CLI flag, the bot's model list, the memory check, batching,
snapshots, upscales) comes from its declaration; these tests check that it does."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from engine import generators
from engine.errors import InvalidSpec
from engine.spec import JobSpec


def pixel_spec(**kw) -> JobSpec:
    fields = dict(generator="pixels", width=32, height=24, steps=4, seed=3, cutn=4, clip_model="tiny-clip")
    fields.update(kw)
    return JobSpec("a red apple", progress_every=2, **fields)


def test_the_declaration_reaches_the_spec():
    spec = pixel_spec(options={"cell": 8})
    assert spec.lr == 0.05 and spec.options.cell == 8
    assert JobSpec.from_json(spec.to_json()) == spec
    assert "pixels" in generators.NAMES
    with pytest.raises(InvalidSpec, match="pixel_cell must be between 1 and 64"):
        pixel_spec(options={"cell": 65})
    with pytest.raises(InvalidSpec, match="pixels generator has no option truncation"):
        pixel_spec(options={"truncation": 0.5})


def test_cells_are_one_colour_and_an_image_encodes_back():
    from engine.generators.pixels import PixelGenerator

    generator = PixelGenerator(cell=4)
    assert generator.output_size(30, 17) == (28, 16)
    params = generator.init_params(2, 28, 16, torch.Generator().manual_seed(0))
    image = generator.decode(params)
    assert image.shape == (2, 3, 16, 28)
    cells = image.unfold(2, 4, 4).unfold(3, 4, 4)  # (B, 3, 4, 7, 4, 4): each cell's 4x4 pixels
    assert torch.equal(cells.amax(dim=(-1, -2)), cells.amin(dim=(-1, -2)))
    assert torch.allclose(generator.decode(generator.encode(image)), image, atol=1e-5)
    bigger = generator.decode(generator.upscale(params, 28, 16))
    assert bigger.shape == (2, 3, 32, 56)


def test_it_runs_resumes_and_upscales_in_the_engine(gpool):
    from engine.images import snapshot_bytes
    from engine.run import load_snapshot

    spec = pixel_spec(options={"cell": 2})
    engine = gpool.engine_for(spec)
    first = engine.generate(spec)
    assert (first.width, first.height) == (32, 24) and engine.generate(spec).image == first.image
    run = engine.start(spec)
    engine.step([run])
    resumed = engine.start(spec, load_snapshot(snapshot_bytes(run.snapshot())))
    while not resumed.done:
        engine.step([resumed])
    assert engine.result(resumed, 0.0).image == first.image
    assert len(engine.generate(spec.replace(options={"cell": 1})).image) > 0
    upscaled = engine.generate(spec.replace(upscales=(2,)))
    assert (upscaled.width, upscaled.height) == (64, 48)


def test_the_cli_flag_comes_from_the_declaration(tiny_models, tmp_path):
    from engine.images import read_recipe

    out = tmp_path / "pixels.png"
    flags = ["--generator", "pixels", "--pixel-cell", "4", "-s", "32x24", "--clip", "tiny-clip", "--cutn", "2"]
    flags += ["--steps", "2", "--device", "cpu", "-q", "--models-dir", str(tiny_models), "-o", str(out)]
    proc = subprocess.run([sys.executable, "-m", "engine", "a lamp", *flags], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert JobSpec.from_dict(read_recipe(out)["spec"]).options.cell == 4
    wrong = [a for a in flags if a not in ("pixels",)]
    wrong[wrong.index("--generator") + 1 : wrong.index("--generator") + 1] = ["fourier"]
    proc = subprocess.run([sys.executable, "-m", "engine", "a lamp", *wrong], capture_output=True, text=True)
    assert proc.returncode != 0 and "--pixel-cell is an option of the pixels generator" in proc.stderr


def test_the_bot_offers_it_without_torch():
    code = (
        "import sys; from bot.catalog import Catalog; from bot.config import Settings; "
        "print(Catalog(Settings(token='x', models_dir='/nonexistent')).models().get('pixels'), "
        "'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.split() == ["pixels", "False"], out.stderr
