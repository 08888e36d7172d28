"""The CLIP safety check on the tiny random-weight CLIP: its numbers are arbitrary but deterministic, so the tests
compare with a hand computation rather than with what a real model would say."""

from __future__ import annotations

import io
import json

import pytest
import torch
from PIL import Image

from bot.backends.celery.wire import decode, encode
from engine.events import Finished, Progress, Result
from engine.images import encode_png, from_pil, to_pil
from engine.moderation import decide, load_data
from engine.moderation_check import SafetyCheck

CANDIDATES = ["a red apple", "a blue sky", "a green forest", "a yellow car", "a black cat", "a white house"]


@pytest.fixture(scope="module")
def perceptor(engine):
    return engine.perceptor


def _image(perceptor, seed: int = 0, height: int | None = None, width: int | None = None) -> torch.Tensor:
    size = perceptor.input_size
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, height or size, width or size, generator=gen)  # (1, 3, H, W)


def test_score_is_a_probability_and_a_listed_label(perceptor):
    check = SafetyCheck(perceptor)
    for seed in range(3):
        unsafe, label = check.score(_image(perceptor, seed))
        assert 0.0 <= unsafe <= 1.0
        assert label in check.data.unsafe
        assert check.score(_image(perceptor, seed)) == (unsafe, label)  # deterministic, nothing kept


def test_score_equals_the_hand_computation(perceptor):
    data = load_data()
    check = SafetyCheck(perceptor)
    image = _image(perceptor, 1)
    with torch.no_grad():
        embedding = perceptor.encode_image(image)[0]  # (D,)
        texts = perceptor.encode_text(list(data.unsafe) + list(data.safe))  # (P, D)
    cosines = [float(t @ embedding) for t in texts]
    exps = [torch.tensor(100.0 * c).exp().item() for c in cosines]
    probs = [e / sum(exps) for e in exps]
    unsafe_probs = probs[: len(data.unsafe)]
    unsafe, label = check.score(image)
    assert unsafe == pytest.approx(sum(unsafe_probs), abs=1e-5)
    assert label == data.unsafe[unsafe_probs.index(max(unsafe_probs))]
    assert check.probabilities(image).sum().item() == pytest.approx(1.0, abs=1e-5)


def test_descriptions_are_encoded_once(perceptor, monkeypatch):
    calls = []
    original = perceptor.encode_text
    monkeypatch.setattr(perceptor, "encode_text", lambda texts: calls.append(texts) or original(texts))
    check = SafetyCheck(perceptor)
    for seed in range(3):
        check.score(_image(perceptor, seed))
    assert len(calls) == 1


def test_images_of_any_size_and_png_bytes(perceptor):
    check = SafetyCheck(perceptor)
    size = perceptor.input_size
    wide = _image(perceptor, 2, height=size * 2, width=size * 5)
    assert check.prepare(wide).shape == (1, 3, size, size)
    assert check.prepare(wide[0]).shape == (1, 3, size, size)  # (3, H, W) too
    square = _image(perceptor, 3)
    png = encode_png(to_pil(square))
    as_bytes = check.score(png)
    assert as_bytes == check.score(from_pil(to_pil(square)))  # the same pixels, whichever way they come
    assert 0.0 <= as_bytes[0] <= 1.0


def test_an_unsafe_description_that_fits_the_image_flags_it(perceptor, tmp_path):
    """Safety data whose one unsafe description is the image's best match among the candidates flags it; the same
    description among the safe ones does not."""
    image = _image(perceptor, 4)
    with torch.no_grad():
        cosines = perceptor.encode_text(CANDIDATES) @ perceptor.encode_image(image)[0]
    best = CANDIDATES[int(cosines.argmax())]
    others = [c for c in CANDIDATES if c != best]
    raw = json.loads(json.dumps(_builtin_raw()))
    raw.update(unsafe=[best], safe=others)
    for level in ("spoiler", "withhold", "strict"):
        raw["levels"][level]["threshold"] = 1 / len(CANDIDATES)  # the best of n is at least 1/n
    path = tmp_path / "safety.json"
    path.write_text(json.dumps(raw), encoding="utf-8")
    data = load_data(path)
    unsafe, label = SafetyCheck(perceptor, data).score(image)
    assert label == best and unsafe >= 1 / len(CANDIDATES)
    verdict = decide("withhold", unsafe, label, data=data)
    assert verdict.action == "withhold" and verdict.label == best
    assert decide("spoiler", unsafe, label, data=data).action == "spoiler"

    raw.update(unsafe=[others[0]], safe=[best, *others[1:]])  # the best match is now a safe description
    path.write_text(json.dumps(raw), encoding="utf-8")
    flipped, _ = SafetyCheck(perceptor, load_data(path)).score(image)
    assert flipped < unsafe


def _builtin_raw() -> dict:
    from importlib import resources

    return json.loads(resources.files("engine").joinpath("data/safety.json").read_text(encoding="utf-8"))


def test_a_run_fills_unsafe_only_when_moderated(engine, tiny_spec):
    off = engine.generate(tiny_spec(steps=2))
    assert off.unsafe is None and off.unsafe_label is None
    moderated = engine.generate(tiny_spec(steps=2, moderation="withhold"))
    assert 0.0 <= moderated.unsafe <= 1.0 and moderated.unsafe_label in load_data().unsafe
    pixels = [Image.open(io.BytesIO(r.image)).tobytes() for r in (off, moderated)]
    assert pixels[0] == pixels[1]  # the check only reports (the recipes differ: they name the level)
    again = engine.generate(tiny_spec(steps=2, moderation="spoiler"))
    assert (again.unsafe, again.unsafe_label) == (moderated.unsafe, moderated.unsafe_label)  # same image, same score


def test_previews_are_checked_only_at_the_strict_level(engine, tiny_spec):
    for level, checked in [("off", False), ("withhold", False), ("strict", True)]:
        seen = []
        engine.generate(tiny_spec(steps=4, progress_every=2, moderation=level), on_progress=seen.append)
        assert [p.step for p in seen] == [2, 4]
        assert all((p.unsafe is not None) == checked for p in seen), level
        assert all(p.unsafe is None or 0.0 <= p.unsafe <= 1.0 for p in seen)


def test_engines_of_one_clip_share_one_check(pool, tiny_spec):
    vqgan = pool.engine_for(tiny_spec())
    fourier = pool.engine_for(tiny_spec(generator="fourier"))
    assert vqgan is not fourier and vqgan.safety is fourier.safety


def test_the_wire_carries_the_new_fields(tiny_spec):
    spec = tiny_spec(moderation="strict")
    result = Result(spec, b"png", 64, 48, 6, (("a red apple", 0.25),), 1.5, unsafe=0.75, unsafe_label="a gory corpse")
    assert decode(encode(Finished(result))) == Finished(result)
    unchecked = Result(spec.replace(moderation="off"), b"png", 64, 48, 6, (("a red apple", 0.25),), 1.5)
    assert decode(encode(Finished(unchecked))) == Finished(unchecked)
    progress = Progress(3, 6, 0.5, (0.5,), 1.0, preview=b"png", width=64, height=48, unsafe=0.125)
    assert decode(encode(progress)) == progress
    assert decode(encode(Progress(3, 6, 0.5, (0.5,), 1.0))).unsafe is None


def test_messages_from_before_moderation_still_decode(tiny_spec):
    """A worker of the previous version sends events without the new fields."""
    spec = tiny_spec()
    old_spec = spec.to_dict()
    del old_spec["moderation"]
    old_finished = {
        b"type": b"finished",
        b"data": json.dumps(
            {
                "spec": json.dumps(old_spec),
                "width": 64,
                "height": 48,
                "steps_done": 6,
                "scores": [["a red apple", 0.25]],
                "elapsed": 1.0,
                "cancelled": False,
            }
        ).encode(),
        b"blob": b"png",
    }
    event = decode(old_finished)
    assert event.result.unsafe is None and event.result.spec == spec
    old_progress = {
        b"type": b"progress",
        b"data": json.dumps(
            {"step": 1, "steps": 2, "loss": 0.1, "losses": [0.1], "elapsed": 0.5, "width": 1, "height": 1}
            | {"similarities": [], "prompt": ""}
        ).encode(),
    }
    assert decode(old_progress).unsafe is None


def test_a_check_that_breaks_down_reads_as_unsafe(perceptor):
    """A NaN image (or a CLIP that returns NaN) gives NaN probabilities: never 0.0, which would post the image."""
    check = SafetyCheck(perceptor)
    image = torch.full((1, 3, perceptor.input_size, perceptor.input_size), float("nan"))
    assert torch.isnan(check.probabilities(image)).all()
    unsafe, label = check.score(image)
    assert unsafe == 1.0 and label in check.data.unsafe
    assert decide("withhold", unsafe, label).action == "withhold"
