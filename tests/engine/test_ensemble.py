"""Several CLIP models guiding one image (tiny models at three input sizes, a ResNet among them): the gradient is the
weighted sum of the members', schedules give each member the counts of the step, a best-like job runs end to end
and replays from its recipe, and the pool, the batching and the memory check count every member."""

import io

import pytest
import torch
from PIL import Image

from engine.cutouts import NO_AUGMENT, Cutouts
from engine.engine import Engine
from engine.ensemble import member_cutouts, overview_cutouts
from engine.errors import CheckpointError, OutOfMemory
from engine.images import from_pil, read_recipe
from engine.losses import range_loss, saturation_loss, tv_loss
from engine.spec import JobSpec

MEMBERS = (("tiny-clip", 1.0), ("tiny-clip-48", 0.5), ("tiny-rn", 2.0))


def _spec(**kw) -> JobSpec:
    fields = dict(width=64, height=48, steps=4, seed=3, model="tiny_f16", perceptors=MEMBERS)
    fields.update(kw)
    return JobSpec("a red apple | a blue sky:0.5", **fields)


def _engine(pool, primary: str) -> Engine:
    """An engine whose own (primary) CLIP is `primary`, the others loaded through the pool."""
    return Engine(pool.perceptor(primary), pool.vqgan("tiny_f16"), device="cpu", clips=pool.member)


def _pixels(png: bytes) -> bytes:
    return Image.open(io.BytesIO(png)).convert("RGB").tobytes()


def _gradient(engine: Engine, spec: JobSpec, monkeypatch) -> torch.Tensor:
    """The gradient of one step's loss at the decoded image. (At the latent it is not linear in the loss: the
    generator's clamp lets a gradient through an out-of-range pixel only when it points back into range.)"""
    import engine.engine as engine_module

    grads = []

    def hooked(images, *args):
        if not grads:
            images.register_hook(lambda g: grads.append(g.clone()))
            grads.append(None)
        return member_cutouts(images, *args)

    monkeypatch.setattr(engine_module, "member_cutouts", hooked)
    run = engine.start(spec)
    engine.step([run])
    monkeypatch.undo()
    return grads[1]


def test_the_ensemble_gradient_is_the_weighted_sum_of_its_members(pool, monkeypatch):
    # overview cutouts draw no random numbers: each member sees the same cutouts alone as in the ensemble
    spec = _spec(cut_overview="4")
    together = _gradient(_engine(pool, "tiny-clip"), spec, monkeypatch)
    alone = [
        _gradient(_engine(pool, name), spec.replace(perceptors=((name, 1.0),)), monkeypatch) for name, _ in MEMBERS
    ]
    assert all(g.abs().sum() > 0 for g in alone)
    assert not torch.allclose(alone[0], alone[2], rtol=0.1)  # the members really differ
    expected = sum(weight * g for (_, weight), g in zip(MEMBERS, alone, strict=True))
    torch.testing.assert_close(together, expected, rtol=1e-4, atol=1e-7)
    # and a member's weight is a factor of its part
    doubled = _gradient(_engine(pool, "tiny-rn"), spec.replace(perceptors=(("tiny-rn", 3.0),)), monkeypatch)
    torch.testing.assert_close(doubled, 3 * alone[2], rtol=1e-4, atol=1e-7)


def test_schedules_give_each_member_the_counts_of_each_step(pool, monkeypatch):
    import engine.engine as engine_module

    seen = []

    def recording(images, gens, inner, overview, size, gray):
        batch = member_cutouts(images, gens, inner, overview, size, gray)
        seen.append((size, overview, inner.cutn if inner else 0, batch.images.shape[0], tuple(batch.images.shape[1:])))
        return batch

    monkeypatch.setattr(engine_module, "member_cutouts", recording)
    spec = _spec(cut_overview="[3]*2+[1]", cut_inner="[1]*2+[0]*1+[5]", steps=5)
    engine = _engine(pool, "tiny-clip")
    run = engine.start(spec)
    for _ in range(spec.steps):
        engine.step([run])
    counts = [(3, 1), (3, 1), (1, 0), (1, 5), (1, 5)]
    expected = [
        (size, over, inner, over + inner, (3, size, size))
        for over, inner in counts
        for size in (32, 48, 64)  # tiny-clip, tiny-clip-48, tiny-rn: each at its own input size
    ]
    assert seen == expected
    assert spec.cutn == 6


def test_overview_cutouts_show_the_whole_image_and_grey_ones_are_grey():
    image = torch.rand(1, 3, 24, 32)
    batch = overview_cutouts(image, 5, 16)
    views = batch.images.view(5, 3, 16, 16)
    padded = torch.nn.functional.pad(image, (0, 0, 4, 4))
    whole = torch.nn.functional.interpolate(padded, size=(16, 16), mode="bilinear", antialias=True)
    torch.testing.assert_close(views[0], whole[0])
    torch.testing.assert_close(views[2], whole[0].flip(2))
    torch.testing.assert_close(views[4], views[0])  # a fifth starts the four variants again
    for grey in (views[1], views[3]):
        assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])
    assert batch.centers.tolist() == [[[0.5, 0.5]] * 5] and batch.sizes.tolist() == [[32.0] * 5]

    gen = torch.Generator().manual_seed(0)
    mixed = member_cutouts(image, [gen], Cutouts(16, 4, augment=NO_AUGMENT), 2, 16, gray=0.5).images
    assert mixed.shape == (6, 3, 16, 16)
    is_grey = [bool(torch.equal(c[0], c[1]) and torch.equal(c[1], c[2])) for c in mixed]
    assert is_grey == [True, True, False, False, False, True]  # inner first (half grey), then plain, grey


def test_image_losses_on_constructed_images():
    flat = torch.zeros(1, 3, 8, 8)
    assert tv_loss(flat).item() == 0
    stripes = torch.zeros(1, 3, 8, 8)
    stripes[..., ::2] = 1.0  # every horizontal neighbour differs by 1 except across the replicated last column
    assert tv_loss(stripes).item() == pytest.approx(7 / 8)
    inside = torch.rand(2, 3, 4, 4) * 2 - 1
    assert range_loss(inside).tolist() == [0, 0] and saturation_loss(inside).tolist() == [0, 0]
    over = torch.full((1, 3, 2, 2), 1.5)
    assert range_loss(over).item() == pytest.approx(0.25) and saturation_loss(over).item() == pytest.approx(0.5)


def test_image_losses_are_reported_and_change_the_gradient(pool):
    engine = _engine(pool, "tiny-clip")
    plain = engine.start(_spec(perceptors=()))
    run = engine.start(_spec(perceptors=(), tv_scale=5.0, range_scale=5.0, sat_scale=5.0))
    engine.step([plain])
    engine.step([run])
    assert set(run.last_terms) == {"tv", "range", "saturation"} and not plain.last_terms
    assert run.last_terms["tv"] > 0
    assert not torch.allclose(run.params.grad, plain.params.grad)


def test_a_best_like_ensemble_runs_end_to_end_and_replays_from_its_recipe(pool):
    spec = _spec(
        cut_overview="[4]*2+[1]",
        cut_inner="[1]*2+[3]",
        cut_pow=1.2,
        cut_gray=0.3,
        tv_scale=0.05,
        range_scale=0.03,
        sat_scale=0.01,
        steps=5,
    )
    pool.check(spec)
    engine = pool.engine_for(spec)
    progress = []
    result = engine.generate(spec, on_progress=progress.append)
    assert result.steps_done == 5 and len(progress[-1].similarities) == 2
    meta = read_recipe(result.image)
    assert meta["spec"]["perceptors"] == [list(m) for m in MEMBERS] and meta["spec"]["cut_inner"] == "[1]*2+[3]"
    replayed = JobSpec.from_dict(meta["spec"])
    assert replayed == spec
    assert pool.engine_for(replayed).generate(replayed).image == result.image
    # the scores are the primary CLIP's alone (engine.quality.SCORE_CONVENTION)
    alone = pool.engine_for(spec.replace(perceptors=()))
    image = from_pil(Image.open(io.BytesIO(result.image)))
    primary = alone.scores(image, [t for t, _ in result.scores])
    assert [s for _, s in result.scores] == pytest.approx(primary, abs=0.02)


def test_one_clip_named_in_perceptors_is_the_old_single_clip_job(pool):
    old = JobSpec("a red apple", width=64, height=48, steps=3, seed=5, model="tiny_f16", clip_model="tiny-clip")
    new = old.replace(perceptors=(("tiny-clip", 1.0),))
    pixels = [_pixels(pool.engine_for(spec).generate(spec).image) for spec in (old, new)]
    assert pixels[0] == pixels[1]


def test_members_are_loaded_once_and_shared_between_engines(pool):
    first = pool.engine_for(_spec())
    other = pool.engine_for(_spec(generator="pixels"))
    assert first is not other
    a, b = first.members(_spec()), other.members(_spec(generator="pixels"))
    assert [m.perceptor for m in a] == [m.perceptor for m in b] == [pool.perceptor(n) for n, _ in MEMBERS]
    assert [m.weight for m in a] == [1.0, 0.5, 2.0]


def test_runs_share_a_step_only_with_the_same_members_and_counts(pool):
    engine = _engine(pool, "tiny-clip")
    spec = _spec(cut_overview="[2]*1+[1]", cut_inner="[1]*1+[2]")
    one, two = engine.start(spec), engine.start(spec.replace(seed=4))
    other = engine.start(spec.replace(perceptors=MEMBERS[:2]))
    assert one.group_key() == two.group_key() != other.group_key()
    with pytest.raises(ValueError, match="cannot share a step"):
        engine.step([one, other])
    engine.step([one])  # one is a step ahead: its counts differ now
    assert one.group_key() != two.group_key()
    engine.step([two])
    # runs of one ensemble stepped together end as each would alone
    lone = engine.start(spec)
    for _ in range(2):
        engine.step([lone])
    engine.step([one, two])
    torch.testing.assert_close(one.params, lone.params, rtol=1e-4, atol=1e-5)


def test_the_memory_check_counts_every_member(pool, monkeypatch):
    engine = _engine(pool, "tiny-clip")
    single = _spec(perceptors=(("ViT-B-32", 1.0),))
    best = JobSpec.from_quality("x", "best", width=256, height=256)
    from engine.memory import step_bytes

    enough = step_bytes(256, 256, single.cutn, False) * 2
    monkeypatch.setattr(engine, "free_bytes", lambda: enough)
    engine.check_memory(single.replace(width=256, height=256), 256, 256)
    with pytest.raises(OutOfMemory, match="for each of 3 CLIP models"):
        engine.check_memory(best, 256, 256)


def test_a_missing_member_is_named_with_its_download_command(pool):
    with pytest.raises(CheckpointError, match="download --clip RN50x4"):
        pool.check(_spec(perceptors=(("tiny-clip", 1.0), ("RN50x4", 1.0))))


def test_the_downloader_knows_the_ensembles_openai_files(tmp_path):
    from engine.models.__main__ import clip_sources

    for name, digest in [
        ("RN50", "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762"),
        ("RN50x4", "7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd"),
        ("ViT-B-16", "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f"),
        ("ViT-L-14-336", "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02"),
    ]:
        openai = clip_sources(name, tmp_path)[0]
        assert openai.sha256 == digest and openai.dest == tmp_path / "clip" / f"{name}-openai.pt"
        assert openai.url.startswith("https://openaipublic.azureedge.net/clip/models/")


def test_openais_resnet_torchscript_archive_loads_and_guides(tmp_path):
    """OpenAI's RN50/RN50x4 releases are TorchScript archives of its ModifiedResNet (stand-in written from the format:
    tests/engine/realformats.py); the loader reads the weights, batch-norm statistics included, into open_clip's."""
    from engine.models.clip import load_clip
    from tests.engine import realformats

    refs = realformats.write_openai_torchscript(
        tmp_path / "clip" / "tinyrn-openai.pt", resnet=(1, 2, 1, 1), width=8, image=64, embed=32
    )
    state = torch.jit.load(str(tmp_path / "clip" / "tinyrn-openai.pt")).state_dict()
    assert state["visual.layer1.0.conv1.weight"].dtype == torch.float16
    assert state["visual.bn1.running_var"].dtype == torch.float32 and "visual.attnpool.c_proj.weight" in state
    perceptor = load_clip("tinyrn", models_dir=tmp_path)
    assert type(perceptor.model.visual).__name__ == "ModifiedResNet" and perceptor.input_size == 64
    with torch.no_grad():
        image = perceptor.model.encode_image(refs["image"])
        text = perceptor.model.encode_text(refs["tokens"])
    torch.testing.assert_close(image, refs["image_embedding"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(text, refs["text_embedding"], rtol=1e-4, atol=1e-4)
    # it guides: a differentiable unit embedding at its own input size
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    perceptor.encode_image(x).sum().backward()
    assert x.grad.abs().sum() > 0


def test_an_rn50_archive_is_rn50_and_not_rn50x4(tmp_path):
    """The real RN50 layout (stem width 64, blocks 3-4-6-3, 1024-d embedding; a one-layer text tower keeps the file
    small): loaded under its name at 224, and refused under another architecture's name with a sentence."""
    from engine.models.clip import load_clip
    from tests.engine import realformats

    path = tmp_path / "clip" / "RN50-openai.pt"
    realformats.write_openai_torchscript(path, resnet=(3, 4, 6, 3), width=64, image=224, embed=1024, text_width=512)
    perceptor = load_clip("RN50", models_dir=tmp_path)
    assert perceptor.input_size == 224 and perceptor.encode_text(["a cat"]).shape == (1, 1024)
    with pytest.raises(CheckpointError, match="not a RN50x4 model"):
        load_clip("RN50x4", checkpoint=path)


def test_download_quality_fetches_every_clip_of_the_preset(tmp_path, monkeypatch, capsys):
    import engine.models.__main__ as models_main

    asked = []
    monkeypatch.setattr(models_main, "download", lambda names, clips, *a: asked.append((names, clips)) or [])
    assert models_main.main(["download", "--quality", "best", "--clip", "RN50", "--dir", str(tmp_path)]) == 0
    assert asked == [([], ["RN50", "ViT-B-32", "ViT-B-16", "RN50x4"])]
    assert models_main.main(["list", "--dir", str(tmp_path)]) == 0
    assert "quality best                 needs ViT-B-32, ViT-B-16, RN50x4" in capsys.readouterr().out
