"""BigGAN, the DALL-E dVAE and SIREN: each loads its released format (stand-ins written by `generator_formats`),
runs on the CPU, is deterministic per seed, resumes from a snapshot to the same bytes, and takes part in
compositions and steering."""

from __future__ import annotations

import zipfile

import pytest
import torch

from engine.errors import CheckpointError, InvalidSpec
from engine.spec import JobSpec

SPECS = {
    "biggan": dict(generator="biggan", model="tiny-biggan", width=32, height=32),
    "dalle": dict(generator="dalle", model="tiny-dvae", width=32, height=24),
    "siren": dict(generator="siren", width=32, height=24, options={"layers": 3, "hidden": 32}),
}


def spec_for(name: str, **kw) -> JobSpec:
    fields = dict(steps=4, seed=3, cutn=4, clip_model="tiny-clip", progress_every=2, **SPECS[name])
    fields.update(kw)
    return JobSpec(kw.pop("prompt", "a red apple"), **{k: v for k, v in fields.items() if k != "prompt"})


def test_the_stand_ins_are_the_released_formats(generator_models):
    root, _ = generator_models
    weights = root / "biggan" / "tiny-biggan" / "pytorch_model.bin"
    assert not zipfile.is_zipfile(weights)  # torch's legacy format, as in 2019
    state = torch.load(weights, map_location="cpu", weights_only=True)
    assert {"generator.gen_z.weight_orig", "generator.gen_z.weight_u", "embeddings.weight"} <= set(state)
    for part in ("encoder", "decoder"):
        with pytest.raises(Exception, match="(?i)weights only"):
            torch.load(root / "dalle" / "tiny-dvae" / f"{part}.pkl", map_location="cpu", weights_only=True)


def test_biggan_loads_the_released_weights(generator_models):
    from engine.models.biggan import load_biggan

    root, saved = generator_models
    model = load_biggan(root / "biggan" / "tiny-biggan")
    z, classes = torch.randn(2, 16), torch.softmax(torch.randn(2, 1000), dim=1)
    with torch.no_grad():
        torch.testing.assert_close(model(z, classes, 0.6), saved["biggan"](z, classes, 0.6))
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_dvae_is_converted_once_then_loaded_weights_only(generator_models, tmp_path):
    import shutil

    from engine.models.dvae import load_dvae

    root, saved = generator_models
    shutil.copytree(root / "dalle", tmp_path / "dalle")
    model = load_dvae("tiny-dvae", tmp_path)
    folder = tmp_path / "dalle" / "tiny-dvae"
    for part in ("encoder", "decoder"):
        converted = torch.load(folder / f"{part}.pt", map_location="cpu", weights_only=True)
        assert converted["config"]["vocab_size"] == 512
        (folder / f"{part}.pkl").unlink()  # from now on the pickles are never read
    again = load_dvae("tiny-dvae", tmp_path)
    encoder, decoder = saved["dalle"]
    image = torch.rand(1, 3, 32, 24)
    with torch.no_grad():
        torch.testing.assert_close(again.encode(image), encoder(0.8 * image + 0.1))
        z = torch.softmax(torch.randn(1, 512, 4, 3), dim=1)
        torch.testing.assert_close(again.decode(z), torch.sigmoid(decoder(z)[:, :3]))
        torch.testing.assert_close(model.decode(z), again.decode(z))


@pytest.mark.parametrize("name", ["../dalle/tiny-dvae", "/etc", "a/b", ".hidden"])
def test_dvae_names_never_leave_the_models_directory(generator_models, name):
    from engine.models.dvae import load_dvae

    with pytest.raises(CheckpointError, match="not a model name"):
        load_dvae(name, generator_models[0])


@pytest.mark.parametrize("name", sorted(SPECS))
def test_each_generator_is_deterministic_and_resumes_to_the_same_bytes(gpool, name):
    from engine.images import snapshot_bytes
    from engine.run import load_snapshot

    spec = spec_for(name)
    engine = gpool.engine_for(spec)
    first = engine.generate(spec)
    assert (first.width, first.height) == (spec.width, spec.height) and first.steps_done == 4
    assert engine.generate(spec).image == first.image
    assert engine.generate(spec.replace(seed=4)).image != first.image

    run = engine.start(spec)
    start = run.image()
    engine.step([run])
    engine.step([run])
    assert not torch.equal(run.image(), start)  # the gradient reaches the image through the whole generator
    state = snapshot_bytes(run.snapshot())
    resumed = engine.start(spec, load_snapshot(state))
    while not resumed.done:
        engine.step([resumed])
    assert engine.result(resumed, 0.0).image == first.image


@pytest.mark.parametrize("name", sorted(SPECS))
def test_compositions_and_steering_run_on_each_generator(gpool, name):
    from engine.loop import Callbacks, Loop

    mirror = spec_for(name, prompt="a cat / a dog", layout="mirror", steps=2)
    panorama = spec_for(name, prompt="a cat / a dog", steps=2)
    engine = gpool.engine_for(mirror)
    for spec in (mirror, panorama):
        assert engine.generate(spec).steps_done == 2
    loop, seen = Loop(max_batch=2), []
    steered = spec_for(name, steps=3)
    loop.add("a", engine, engine.start(steered), Callbacks(on_event=seen.append))
    loop.add("b", engine, engine.start(steered.replace(seed=9)), Callbacks(on_event=seen.append))
    assert len(loop.batches()) == 1  # two runs of one generator share a step
    loop.round()
    assert loop.steer("a", "a blue pear").prompt_schedule == ((1, "a blue pear"),)
    while loop:
        loop.round()
    results = [e.result for e in seen if hasattr(e, "result")]
    assert len(results) == 2 and results[0].spec.prompt_at(2) == "a blue pear"


def test_biggan_refuses_other_sizes_init_images_and_upscales(gpool):
    spec = spec_for("biggan", width=64, height=64)
    with pytest.raises(InvalidSpec, match="makes 32x32 images only"):
        gpool.engine_for(spec).start(spec)
    with pytest.raises(InvalidSpec, match="no encoder"):
        spec_for("biggan", init_image="cat.png")
    with pytest.raises(InvalidSpec, match="cannot be upscaled"):
        spec_for("biggan", upscales=(10,))


def test_biggan_starts_from_an_imagenet_class(gpool):
    from engine.generators.biggan import imagenet_class

    assert imagenet_class("goldfish", 1000) == 1 and imagenet_class("Tabby cat", 1000) == 281
    spec = spec_for("biggan", options={"class_name": "goldfish"})
    run = gpool.engine_for(spec).start(spec)
    classes = torch.softmax(run.params[0, 16:], dim=0)
    assert classes.argmax() == 1 and classes[1] > 0.9
    with pytest.raises(InvalidSpec, match="not one ImageNet class"):
        gpool.engine_for(spec).start(spec.replace(options={"class_name": "dragon"}))
    with pytest.raises(InvalidSpec, match="siren generator has no option class_name"):
        spec_for("siren", options={"class_name": "goldfish"})
    with pytest.raises(InvalidSpec, match="class_name only means something to the biggan generator"):
        JobSpec.from_dict({"prompt": "x", "generator": "siren", "class_name": "goldfish"})


def test_siren_renders_any_size_and_fits_an_init_image(gpool, tmp_path):
    from PIL import Image

    picture = tmp_path / "stripes.png"
    pixels = torch.zeros(24, 30, 3, dtype=torch.uint8)
    pixels[:, :15] = 255
    Image.fromarray(pixels.numpy()).save(picture)
    spec = spec_for("siren", width=30, height=24, init_image=str(picture), steps=1)
    engine = gpool.engine_for(spec)
    run = engine.start(spec)
    image = run.image()
    assert image.shape == (1, 3, 24, 30)
    assert image[..., :12].mean() > image[..., 18:].mean() + 0.3  # the fit keeps the bright half bright


@pytest.fixture
def release_server(generator_models):
    """The released files served over HTTP on loopback, under the names the release URLs end in."""
    import functools
    import http.server
    import shutil
    import threading

    root, _ = generator_models
    served = root.parent / "served"
    served.mkdir(exist_ok=True)
    shutil.copy(root / "biggan" / "tiny-biggan" / "config.json", served / "biggan-deep-256-config.json")
    shutil.copy(root / "biggan" / "tiny-biggan" / "pytorch_model.bin", served / "biggan-deep-256-pytorch_model.bin")
    for part in ("encoder", "decoder"):
        shutil.copy(root / "dalle" / "tiny-dvae" / f"{part}.pkl", served / f"{part}.pkl")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(served)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_download_lays_out_biggan_and_the_dvae_and_they_load(release_server, tmp_path, monkeypatch, capsys):
    import dataclasses

    from engine.loading import EnginePool, ModelSettings
    from engine.models import registry
    from engine.models.__main__ import main
    from engine.models.tiny import write_clip

    moved = {}
    for name in ("biggan-deep-256", "dalle-dvae"):
        entry = registry.GENERATOR_MODELS[name]
        files = tuple(
            (filename, registry.RemoteFile(tuple(f"{release_server}/{u.rsplit('/', 1)[1]}" for u in remote.urls)))
            for filename, remote in entry.files
        )
        moved[name] = dataclasses.replace(entry, files=files)
    monkeypatch.setattr(registry, "GENERATOR_MODELS", moved)
    assert main(["download", "biggan-deep-256", "dalle-dvae", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr()
    assert "pytorch_model.bin" in out.err and "decoder.pkl" in out.err  # the progress bars
    folder = tmp_path / "dalle" / "dalle-dvae"
    assert {p.name for p in folder.iterdir()} >= {"encoder.pkl", "decoder.pkl", "encoder.pt", "decoder.pt"}
    assert {p.name for p in (tmp_path / "biggan" / "biggan-deep-256").iterdir()} >= {"config.json", "pytorch_model.bin"}
    write_clip(tmp_path)
    pool = EnginePool(ModelSettings(models_dir=tmp_path, device="cpu"))
    for spec in (
        JobSpec("x", generator="biggan", width=32, height=32, clip_model="tiny-clip", steps=1, cutn=2),
        JobSpec("x", generator="dalle", width=16, height=16, clip_model="tiny-clip", steps=1, cutn=2),
    ):
        pool.check(spec)
        assert pool.engine_for(spec).generate(spec).steps_done == 1
    assert main(["list", "--dir", str(tmp_path)]) == 0
    assert "biggan-deep-256" in capsys.readouterr().out
    with pytest.raises(CheckpointError, match="not installed"):
        pool.check(JobSpec("x", generator="biggan", model="biggan-deep-512", width=512, height=512))


@pytest.mark.parametrize(
    "flags",
    [
        ["--generator", "biggan", "--model", "tiny-biggan", "-s", "32", "--class", "goldfish", "--truncation", "0.5"],
        ["--generator", "dalle", "--model", "tiny-dvae", "-s", "32x24", "--temperature", "0.5"],
        ["--generator", "siren", "-s", "32x24", "--siren-layers", "3", "--siren-hidden", "16"],
    ],
)
def test_cli_runs_each_generator_and_replays_its_recipe(tiny_models, tmp_path, flags):
    import subprocess
    import sys

    from engine.images import read_recipe

    out, again = tmp_path / "out.png", tmp_path / "again.png"
    common = ["--clip", "tiny-clip", "--cutn", "2", "--steps", "2", "--device", "cpu", "-q"]
    common += ["--models-dir", str(tiny_models)]
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "a lamp", *flags, *common, "-o", str(out)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    spec = JobSpec.from_dict(read_recipe(out)["spec"])
    assert spec.generator == flags[1]
    replay = ["--recipe", str(out), "-o", str(again), "-q", "--models-dir", str(tiny_models)]
    proc = subprocess.run([sys.executable, "-m", "engine", *replay], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert again.read_bytes() == out.read_bytes()
