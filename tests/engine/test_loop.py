"""The optimisation loop on tiny real-format models: learning, determinism, snapshots, cancellation, errors."""

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

from engine.errors import Cancelled, InvalidSpec, OutOfMemory
from engine.events import Failed, Finished, Snapshotted
from engine.images import read_recipe
from engine.run import load_snapshot, save_snapshot


def _clip_loss(engine, run):
    """The loss of the current image against the run's targets, without cutout randomness."""
    with torch.no_grad():
        image = run.image()
        emb = engine.perceptor.encode_image(
            torch.nn.functional.interpolate(image, size=(engine.perceptor.input_size,) * 2, mode="area")
        )
        from engine.losses import prompt_losses

        return prompt_losses(emb, run.targets, run.weights, run.stops).sum().item()


@pytest.mark.parametrize("generator", ["vqgan", "fourier"])
def test_loss_decreases(engine, tiny_spec, generator):
    spec = tiny_spec("a red apple", steps=40, cutn=16, generator=generator, lr=0.2)
    run = engine.start(spec)
    before = _clip_loss(engine, run)
    for _ in range(spec.steps):
        engine.step([run])
    after = _clip_loss(engine, run)
    assert after < before - 0.01, (before, after)


def test_same_seed_same_png_bytes(engine, tiny_spec):
    spec = tiny_spec(steps=5)
    a = engine.generate(spec)
    b = engine.generate(spec)
    c = engine.generate(spec.replace(seed=2))
    assert a.image == b.image
    assert a.image != c.image


def test_result_carries_size_scores_and_recipe(engine, tiny_spec):
    spec = tiny_spec("a lighthouse | storm:-0.5", width=72, height=40, steps=3)
    result = engine.generate(spec)
    assert (result.width, result.height) == (64, 32)  # rounded to the f16 grid
    assert Image.open(io.BytesIO(result.image)).size == (64, 32)
    assert [t for t, _ in result.scores] == ["a lighthouse", "storm"]
    assert all(-1 <= s <= 1 for _, s in result.scores)
    meta = read_recipe(result.image)
    assert meta["spec"] == spec.to_dict() and meta["steps_done"] == 3 and meta["width"] == 64
    assert Image.open(io.BytesIO(result.image)).text["seed"] == str(spec.seed)


def test_progress_reports(engine, tiny_spec):
    seen = []
    engine.generate(tiny_spec(steps=7, progress_every=3), on_progress=seen.append)
    assert [p.step for p in seen] == [3, 6, 7]
    assert all(p.steps == 7 and len(p.losses) == 1 and p.preview.startswith(b"\x89PNG") for p in seen)
    assert Image.open(io.BytesIO(seen[-1].preview)).size == (64, 48)


def test_resume_from_snapshot_equals_uninterrupted(engine, tiny_spec, tmp_path):
    spec = tiny_spec(steps=8)
    whole = engine.generate(spec)
    snaps = {}
    engine.generate(spec.replace(steps=8), on_snapshot=lambda s: snaps.setdefault(s.step, s), snapshot_every=3)
    assert sorted(snaps) == [3, 6, 8]  # every 3 steps, and the final state
    save_snapshot(load_snapshot(snaps[3].state), tmp_path / "s.pt")
    resumed = engine.generate(spec, snapshot=load_snapshot(tmp_path / "s.pt"))
    assert resumed.image == whole.image


def test_continue_adds_steps(engine, tiny_spec):
    spec = tiny_spec(steps=4)
    run = engine.start(spec)
    for _ in range(4):
        engine.step([run])
    longer = engine.generate(spec.replace(steps=6), snapshot=run.snapshot())
    assert longer.steps_done == 6
    assert longer.image == engine.generate(spec.replace(steps=6)).image


def test_cancellation_keeps_last_image(engine, tiny_spec):
    calls = {"n": 0}

    def should_stop():
        calls["n"] += 1
        return calls["n"] > 3

    with pytest.raises(Cancelled) as info:
        engine.generate(tiny_spec(steps=50), should_stop=should_stop)
    result = info.value.result
    assert result.cancelled and result.steps_done == 3
    assert result.image.startswith(b"\x89PNG")


def test_init_image_changes_outcome_and_is_followed(engine, tiny_spec, tmp_path):
    red = tmp_path / "red.png"
    Image.new("RGB", (100, 80), (230, 20, 20)).save(red)
    base = tiny_spec(steps=2, generator="fourier", lr=0.01)
    plain = engine.generate(base)
    init = engine.generate(base.replace(init_image=str(red)))
    assert plain.image != init.image
    pixels = torch.from_numpy(np.asarray(Image.open(io.BytesIO(init.image)), dtype=np.float32)).mean((0, 1))
    assert pixels[0] > 150 and pixels[1] < 80  # still red after two small steps


def test_init_image_for_vqgan_goes_through_the_encoder(engine, tiny_spec, tmp_path):
    path = tmp_path / "i.png"
    Image.new("RGB", (64, 48), (10, 200, 30)).save(path)
    run = engine.start(tiny_spec(init_image=str(path)))
    expected = engine.vqgan.encode(
        torch.tensor([10 / 255, 200 / 255, 30 / 255]).view(1, 3, 1, 1).expand(1, 3, 48, 64) * 2 - 1
    )
    assert torch.allclose(run.params.detach(), expected, atol=1e-4)


def test_image_prompt_changes_outcome(engine, tiny_spec, tmp_path):
    path = tmp_path / "target.png"
    Image.new("RGB", (50, 50), (0, 0, 255)).save(path)
    plain = engine.generate(tiny_spec(steps=3))
    guided = engine.generate(tiny_spec(steps=3, image_prompts=(f"{path}:2",)))
    assert plain.image != guided.image
    run = engine.start(tiny_spec(image_prompts=(str(path),)))
    assert run.targets.shape[0] == 2


def test_unreadable_init_image(engine, tiny_spec, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(InvalidSpec, match="^The init image is not a picture that can be read"):
        engine.start(tiny_spec(init_image=str(bad)))
    with pytest.raises(InvalidSpec, match="^The init image cannot be opened") as caught:
        engine.start(tiny_spec(init_image=str(tmp_path / "missing.png")))
    assert str(tmp_path) not in str(caught.value)  # members read these: no folders of the server


def test_size_smaller_than_the_grid():
    from engine.generators.base import check_size

    assert check_size(72, 40, 16, "vqgan") == (64, 32)
    with pytest.raises(InvalidSpec, match="needs at least 32x32 pixels, not 24x64"):
        check_size(24, 64, 32, "vqgan")


def test_out_of_memory_becomes_engine_error(engine, tiny_spec, monkeypatch):
    run = engine.start(tiny_spec())

    def boom(params):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(run.generator, "decode", boom)
    with pytest.raises(OutOfMemory, match="ran out of memory at 64x48 with 8 cutouts"):
        engine.step([run])


def test_batched_step_matches_single_steps(engine, tiny_spec):
    specs = [tiny_spec(f"prompt {i}", seed=i, steps=3) for i in range(3)]
    together = [engine.start(s) for s in specs]
    for _ in range(3):
        engine.step(together)
    for spec, run in zip(specs, together, strict=True):
        alone = engine.start(spec)
        for _ in range(3):
            engine.step([alone])
        assert torch.allclose(run.params, alone.params, atol=1e-4)


def test_runs_of_different_shapes_cannot_share_a_step(engine, tiny_spec):
    with pytest.raises(ValueError, match="different shapes"):
        engine.step([engine.start(tiny_spec()), engine.start(tiny_spec(width=32))])


def test_gumbel_model_generates(pool, tiny_spec):
    spec = tiny_spec(model="tiny_gumbel_f8", width=40, height=24, steps=2)
    result = pool.engine_for(spec).generate(spec)
    assert (result.width, result.height) == (40, 24)


def test_text_embeddings_are_cached_within_a_bound(engine, monkeypatch):
    import engine.engine as run_module

    monkeypatch.setattr(run_module, "TEXT_CACHE", 3)
    engine._text_cache.clear()
    encoded = []
    original = engine.perceptor.encode_text

    def counting(texts):
        encoded.extend(texts)
        return original(texts)

    monkeypatch.setattr(engine.perceptor, "encode_text", counting)
    first = engine.text_embeddings(["a", "b", "a"])
    assert encoded == ["a", "b"] and first.shape[0] == 3 and torch.equal(first[0], first[2])
    engine.text_embeddings(["a"])  # seen: not encoded again, and now the most recent
    assert encoded == ["a", "b"]
    engine.text_embeddings(["c", "d"])  # four texts, room for three: the least recently used ("b") goes
    assert list(engine._text_cache) == ["a", "c", "d"]
    again = engine.text_embeddings(["b"])
    assert encoded == ["a", "b", "c", "d", "b"] and torch.allclose(again[0], first[1])


def _diverging(engine, spec):
    """A run whose prompt weight is inf in float32 (what an unbounded weight of 1e308 became): NaN from step one."""
    run = engine.start(spec)
    run.weights = torch.tensor([1e308] * len(run.weights), device=run.weights.device)  # (P,) all inf
    return run


@pytest.mark.parametrize("generator", ["vqgan", "fourier"])
def test_a_run_that_turns_to_nan_fails_with_a_sentence_instead_of_an_image(engine, tiny_spec, generator):
    from engine.errors import EngineError, public_message
    from engine.loop import Callbacks, run_to_end

    run = _diverging(engine, tiny_spec(steps=4, generator=generator))
    events = []
    with pytest.raises(InvalidSpec, match="not a number") as caught:
        run_to_end(engine, run, Callbacks(on_event=events.append, snapshot_every=2))
    assert isinstance(caught.value, EngineError) and "weight" in public_message(caught.value)
    assert not any(isinstance(e, Finished | Snapshotted) for e in events)  # no NaN state kept to continue from
    assert [type(e) for e in events] == [Failed]


def test_a_run_that_turns_to_nan_is_refused_a_result(engine, tiny_spec):
    run = engine.start(tiny_spec(steps=2))
    engine.step([run])
    with torch.no_grad():
        run.params.fill_(float("nan"))  # the last step's update made z NaN (an infinite gradient)
    with pytest.raises(InvalidSpec, match="not a number"):
        engine.result(run, 0.0)


def test_a_nan_run_in_a_batch_fails_alone(engine, tiny_spec):
    from engine.loop import Callbacks, Loop

    spec = tiny_spec(steps=3, progress_every=1)
    ends = {}
    loop = Loop(max_batch=2)
    loop.add("bad", engine, _diverging(engine, spec), Callbacks(on_event=lambda e: ends.setdefault("bad", e)))
    loop.add("good", engine, engine.start(spec), Callbacks(on_event=lambda e: ends.setdefault("good", e)))
    assert len(loop.batches()) == 1  # they share each step
    while loop:
        loop.round()
    assert isinstance(ends["bad"], Failed) and isinstance(ends["good"], Finished)
    assert math.isfinite(ends["good"].result.score)
