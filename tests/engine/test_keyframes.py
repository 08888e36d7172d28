"""Keyframes in Disco's syntax, prompts keyed by frame and the Animation in a spec: parsed, interpolated, refused
with sentences, round-tripped through JSON. Standard library only, as the bot uses them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from engine.errors import InvalidSpec
from engine.keyframes import (
    MAX_FRAMES,
    PRESETS,
    Animation,
    Transform,
    format_keyframes,
    frame_steps_for,
    parse_frame_prompts,
    parse_keyframes,
    preset,
    value_at,
)
from engine.spec import MAX_TOTAL_STEPS, JobSpec


@pytest.mark.parametrize(
    ("text", "pairs"),
    [
        ("0: (1.0), 30: (1.04)", ((0, 1.0), (30, 1.04))),
        ("0:(1),10:(1.5)", ((0, 1.0), (10, 1.5))),
        ("  30: 1.04 , 0: (1.0) ", ((0, 1.0), (30, 1.04))),  # parentheses optional, sorted by frame
        ("1.02", ((0, 1.02),)),
        ("(0.98)", ((0, 0.98),)),
        ("0: (-1e-1)", ((0, -0.1),)),
    ],
)
def test_keyframe_text_is_read_as_disco_writes_it(text, pairs):
    name = "angle" if "-" in text else "zoom"
    assert parse_keyframes(text, name) == pairs


def test_other_forms_and_the_normal_text_round_trip():
    assert parse_keyframes(1.03, "zoom") == ((0, 1.03),)
    assert parse_keyframes({"0": 1, 12: 1.5}, "zoom") == ((0, 1.0), (12, 1.5))
    assert parse_keyframes([[5, 2], [0, -3]], "translation_x") == ((0, -3.0), (5, 2.0))
    pairs = ((0, 1.0), (7, 1.0123456789), (599, 0.5))
    assert format_keyframes(pairs) == "0: (1), 7: (1.0123456789), 599: (0.5)"
    assert parse_keyframes(format_keyframes(pairs), "zoom") == pairs


def test_values_are_interpolated_linearly_and_held_outside_the_keyframes():
    pairs = parse_keyframes("10: (1.0), 30: (1.4), 40: (1.2)", "zoom")
    assert [value_at(pairs, f) for f in (0, 10, 20, 25, 30, 35, 40, 100)] == pytest.approx(
        [1.0, 1.0, 1.2, 1.3, 1.4, 1.3, 1.2, 1.2]
    )
    animation = Animation(frames=41, zoom="10: (1.0), 30: (1.4)", angle="0: (0), 40: (-4)", translation_y=-2)
    assert animation.transform(20) == pytest.approx(Transform(1.2, -2.0, 0.0, -2.0))


@pytest.mark.parametrize(
    ("value", "name", "words"),
    [
        ("0: (1.0), 30 (1.04)", "zoom", r"not understood at '30 \(1.04\)'.*e\.g\. '0: \(1\.0\), 30: \(1\.04\)'"),
        ("0: (1+0.002*t)", "zoom", r"no expressions"),
        ("0: (1.0); 30: (1.04)", "zoom", r"separated by commas"),
        ("", "zoom", r"empty.*e\.g\."),
        ("0: (3)", "zoom", r"zoom at frame 0 is 3; it must be between 0\.5 and 2"),
        ("0: (90)", "angle", r"between -45 and 45 \(degrees"),
        ("0: (1), 0: (1.1)", "zoom", r"Frame 0 has two zoom keyframes"),
        (f"{MAX_FRAMES}: (1)", "zoom", rf"frames are numbered from 0 to {MAX_FRAMES - 1}"),
        (True, "zoom", r"must be keyframes such as"),
        ({"a": 1}, "zoom", r"frame must be a whole number"),
    ],
)
def test_bad_keyframes_are_answered_with_a_sentence(value, name, words):
    with pytest.raises(InvalidSpec, match=words) as caught:
        parse_keyframes(value, name)
    assert str(caught.value)[0].isupper() and str(caught.value).endswith((".", ")"))


def test_prompts_by_frame_keep_the_prompt_syntax():
    text = "0: a forest | oil painting:0.5; 60: a city at night; the rain"
    assert parse_frame_prompts(text) == ((0, "a forest | oil painting:0.5"), (60, "a city at night; the rain"))
    assert parse_frame_prompts({"60": "b", 0: "a"}) == ((0, "a"), (60, "b"))
    assert parse_frame_prompts([[3, "x"]]) == ((3, "x"),)
    assert parse_frame_prompts("") == () and parse_frame_prompts(None) == ()


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("a forest; 60: a city", r"start each with its frame number.*e\.g\. '0: a forest"),
        ("0: ; 5: b", r"prompt at frame 0 is empty"),
        ("0: a; 0: b", r"Frame 0 has two prompts"),
        ("0: a:999", r"weight '999'"),
        (42, r"must be text such as"),
    ],
)
def test_bad_prompts_by_frame_are_answered_with_a_sentence(value, words):
    with pytest.raises(InvalidSpec, match=words):
        parse_frame_prompts(value)


def test_where_the_frames_lie_among_the_steps():
    animation = Animation(frames=4, frame_steps=3)
    first = 5  # frame 0: steps 0-4, frame 1: 5-7, frame 2: 8-10, frame 3: 11-13
    assert animation.total_steps(first) == 14
    assert [animation.frame_at(s, first) for s in (0, 4, 5, 7, 8, 11, 13, 14)] == [0, 0, 1, 1, 2, 3, 3, 3]
    assert [animation.frames_done_at(s, first) for s in (4, 5, 13, 14)] == [0, 1, 3, 4]
    assert [animation.first_step(f, first) for f in range(4)] == [0, 5, 8, 11]


def test_animation_checks_its_numbers():
    for fields, words in (
        ({"frames": 0}, "frames must be from 1 to"),
        ({"frames": MAX_FRAMES + 1}, f"to {MAX_FRAMES}"),
        ({"fps": 2.5}, "fps must be a whole number"),
        ({"frame_steps": 0}, "frame_steps must be from 1"),
    ):
        with pytest.raises(InvalidSpec, match=words):
            Animation(**fields)
    with pytest.raises(InvalidSpec, match="no field speed"):
        Animation.from_dict({"speed": 2})


def test_presets_need_no_keyframes():
    assert set(PRESETS) == {"zoom-in", "zoom-out", "drift", "spin"}
    assert preset("zoom-in").transform(5).zoom > 1 > preset("zoom-out").transform(5).zoom
    assert preset("spin").transform(3).angle != 0 and preset("drift").transform(3).translation_x != 0
    chosen = preset("spin", frames=10, frame_steps=frame_steps_for(200), prompts="0: a; 5: b")
    assert (chosen.frames, chosen.frame_steps, chosen.prompts) == (10, 50, ((0, "a"), (5, "b")))
    with pytest.raises(InvalidSpec, match="no animation preset 'warp'; choose one of zoom-in, zoom-out"):
        preset("warp")


def test_an_animated_spec_round_trips_and_an_old_one_is_unchanged():
    animation = {"frames": 5, "frame_steps": 3, "zoom": "0: (1.0), 4: (1.04)", "prompts": "2: a bird | sky:0.5"}
    spec = JobSpec("a cat", steps=10, animation=animation)
    assert isinstance(spec.animation, Animation) and spec.total_steps == 10 + 4 * 3
    again = JobSpec.from_json(spec.to_json())
    assert again == spec and json.loads(spec.to_json())["animation"]["zoom"] == "0: (1), 4: (1.04)"
    assert JobSpec.from_dict(spec.to_public_dict()) == spec
    still = JobSpec("a cat")
    assert "animation" not in json.loads(still.to_json()) and JobSpec.from_json(still.to_json()).animation is None
    assert still.total_steps == still.steps


def test_prompts_by_frame_and_steering_compose():
    spec = JobSpec("a cat", steps=10, animation=Animation(frames=5, frame_steps=3, prompts="0: a dog; 3: a bird"))
    # frame 3 starts at step 10 + 2 * 3 = 16
    assert [spec.prompt_at(s) for s in (0, 15, 16, 21)] == ["a dog", "a dog", "a bird", "a bird"]
    steered = spec.replace(prompt_schedule=((12, "a fox"),))
    assert [steered.prompt_at(s) for s in (11, 12, 15, 16)] == ["a dog", "a fox", "a fox", "a bird"]
    keyless = JobSpec("a cat", steps=10, animation=Animation(frames=5, frame_steps=3, prompts="3: a bird"))
    assert [keyless.prompt_at(s) for s in (0, 16)] == ["a cat", "a bird"]


def test_continuing_an_animation_adds_frames():
    spec = JobSpec("a cat", steps=10, animation=Animation(frames=5, frame_steps=4))
    assert spec.extended(9).animation.frames == 8 and spec.extended(1).animation.frames == 6


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        (dict(generator="biggan"), r"BigGAN has no encoder, so it cannot animate"),
        (dict(upscales=(10,)), r"cannot be upscaled"),
        (dict(steps=10_000, animation=Animation(frames=600, frame_steps=100)), rf"at most {MAX_TOTAL_STEPS:,}"),
        (dict(animation={"prompts": "5: a / b"}), r"prompt at frame 5 has 2 parts; this single image has 1"),
        (dict(animation=[1, 2]), r"animation must be a JSON object"),
    ],
)
def test_a_spec_refuses_an_animation_it_cannot_make(fields, words):
    fields = {"animation": Animation(), **fields}
    with pytest.raises(InvalidSpec, match=words):
        JobSpec("a cat", **fields)


def test_keyframes_load_without_torch():
    code = "import sys, engine.keyframes, engine.spec; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
