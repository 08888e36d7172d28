import json
import math

import pytest

from engine.errors import InvalidSpec
from engine.events import Result
from engine.prompts import Prompt, parse_prompt, parse_prompts
from engine.spec import JobSpec


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a cat", [Prompt("a cat")]),
        ("a | b:0.5 | c:-1", [Prompt("a"), Prompt("b", 0.5), Prompt("c", -1.0)]),
        ("sunset:2:0.3", [Prompt("sunset", 2.0, 0.3)]),
        ("  padded  :  1.5 ", [Prompt("padded", 1.5)]),
        ("http://example.com/cat.png", [Prompt("http://example.com/cat.png")]),
        ("http://example.com/cat.png:0.5", [Prompt("http://example.com/cat.png", 0.5)]),
        ("12 o'clock: noon", [Prompt("12 o'clock: noon")]),
        ("a poster 16:9 wide", [Prompt("a poster 16:9 wide")]),
        ("ratio: a:b", [Prompt("ratio: a:b")]),
        ("x:.5", [Prompt("x", 0.5)]),
        ("x:1e-1", [Prompt("x", 0.1)]),
        ("a||b", [Prompt("a"), Prompt("b")]),
        ("colon at end:", [Prompt("colon at end:")]),
        ("cat:nan", [Prompt("cat:nan")]),
    ],
)
def test_prompt_table(text, expected):
    assert list(parse_prompts(text)) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("   |  | ", "empty"),
        ("cat:1,5", "not a number"),
        ("cat:0.5.3", "not a number"),
        ("cat:1e999", "finite"),
        (":0.5", "no text"),
        ("a:0 | b:0", "weight 0"),
        (" | ".join(f"p{i}" for i in range(9)), "at most 8"),
        ("x" * 1001, "limit is 1000"),
    ],
)
def test_prompt_errors(text, message):
    with pytest.raises(InvalidSpec, match=message):
        parse_prompts(text)


def test_prompt_str_round_trips():
    for text in ["a", "b:0.5", "c:-1:0.2"]:
        p = parse_prompt(text)
        assert parse_prompt(str(p)) == p


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("width", 8, "width must be between"),
        ("height", 5000, "height must be between"),
        ("steps", 0, "steps must be between"),
        ("cutn", 1000, "cutn must be between"),
        ("seed", -1, "seed must be between"),
        ("lr", 0, "learning rate"),
        ("lr", float("nan"), "finite number"),
        ("width", 64.5, "whole number"),
        ("steps", True, "whole number"),
        ("generator", "dalle-2", "Unknown generator"),
        ("cut_pow", -1.0, "cut_pow"),
        ("init_weight", -0.1, "negative"),
        ("image_prompts", tuple(f"p{i}.png" for i in range(9)), "image prompts"),
        ("moderation", "lenient", "Unknown moderation level 'lenient'; choose one of off, spoiler"),
        ("moderation", None, "Unknown moderation level"),
    ],
)
def test_spec_validation(field, value, message):
    with pytest.raises(InvalidSpec, match=message):
        JobSpec("a cat", **{field: value})


def test_spec_json_round_trip():
    spec = JobSpec("a | b:-0.5", width=512, height=288, seed=42, image_prompts=("x.png:0.5",), init_image="i.png")
    again = JobSpec.from_json(spec.to_json())
    assert again == spec
    assert json.loads(spec.to_json())["image_prompts"] == ["x.png:0.5"]
    with pytest.raises(InvalidSpec, match="Unknown spec fields"):
        JobSpec.from_dict({**spec.to_dict(), "bogus": 1})
    with pytest.raises(InvalidSpec, match="not valid JSON"):
        JobSpec.from_json("{")


def test_moderation_field():
    spec = JobSpec("a cat")
    assert spec.moderation == "off"  # the default checks nothing
    old = spec.to_dict()
    del old["moderation"]  # a spec written before moderation existed
    assert JobSpec.from_dict(old) == spec
    strict = spec.replace(moderation="strict")
    assert JobSpec.from_json(strict.to_json()).moderation == "strict"
    assert JobSpec.from_json(strict.extended(10).to_json()).moderation == "strict"


def test_spec_is_frozen_and_replace_validates():
    spec = JobSpec("a cat")
    with pytest.raises(AttributeError):
        spec.steps = 5
    assert spec.replace(steps=10).steps == 10
    with pytest.raises(InvalidSpec):
        spec.replace(steps=-1)


def test_result_score_ignores_negative_prompts():
    spec = JobSpec("good | bad:-1")
    result = Result(spec, b"", 1, 1, 1, (("good", 0.3), ("bad", 0.9)), 0.0)
    assert math.isclose(result.score, 0.3)


@pytest.mark.parametrize("name", ["/some/dir/m", "../m", "vqgan/../../m", "a\\b", "..", "", " m", "C:m", "~/m"])
def test_a_spec_names_models_and_never_points_at_files(name):
    with pytest.raises(InvalidSpec, match="not a path"):
        JobSpec("a cat", model=name)
    with pytest.raises(InvalidSpec, match="not a path"):
        JobSpec("a cat", clip_model=name)
    data = JobSpec("a cat").to_dict()
    data["model"] = name
    with pytest.raises(InvalidSpec, match="not a path"):
        JobSpec.from_dict(data)


@pytest.mark.parametrize("name", ["vqgan_imagenet_f16_16384", "ViT-B-32", "tiny-clip", "sflckr.v2"])
def test_plain_model_names_are_fine(name):
    assert JobSpec("a cat", model=name, clip_model=name).model == name


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a cat:1e308", "weight .* between -100 and 100"),
        ("a cat:-1e308", "weight .* between -100 and 100"),
        ("a cat:101", "weight .* between -100 and 100"),
        ("a cat:1:1e308", "stop .* between -5 and 5"),
        ("a cat:1:-6", "stop .* between -5 and 5"),
        ("a cat:1:1e999", "stop .* finite"),
    ],
)
def test_weights_and_stops_are_bounded(text, message):
    """A weight of 1e308 is inf in float32 and turned the whole run into NaN; a stop beyond the largest distance
    (pi^2 / 2) can only cut every gradient or none."""
    with pytest.raises(InvalidSpec, match=message):
        parse_prompts(text)
    with pytest.raises(InvalidSpec, match=message):
        JobSpec(text)


def test_the_bounds_themselves_are_allowed():
    assert list(parse_prompts("a:100 | b:-100:-5 | c:1:5")) == [
        Prompt("a", 100.0),
        Prompt("b", -100.0, -5.0),
        Prompt("c", 1.0, 5.0),
    ]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"image_prompts": ("x.png:1e308",)}, "weight"),
        ({"prompt_schedule": ((3, "a dog:1e308"),)}, "weight"),
        ({"init_weight": 1e308}, "init_weight"),
    ],
)
def test_every_weight_of_a_spec_is_bounded(changes, message):
    with pytest.raises(InvalidSpec, match=message):
        JobSpec("a cat", **changes)


def test_generator_options_are_the_generators_own_and_old_flat_fields_still_load():
    from engine.generators.biggan import BigGANOptions

    spec = JobSpec("a cat", generator="biggan", options={"truncation": 0.4})
    assert spec.options == BigGANOptions(truncation=0.4) and JobSpec.from_json(spec.to_json()) == spec
    old = {"prompt": "a cat", "generator": "siren", "siren_layers": 3, "siren_hidden": 16, "truncation": 1.0}
    assert (JobSpec.from_dict(old).options.layers, JobSpec.from_dict(old).options.hidden) == (3, 16)
    for bad, said in [
        (3, "options must be a JSON object"),
        ({"layers": 3}, "biggan generator has no option layers"),
        ({"truncation": 0}, "truncation must be above 0"),
        (BigGANOptions(truncation=0.5), None),
    ]:
        if said is None:
            assert JobSpec("x", generator="biggan", options=bad).options.truncation == 0.5
            with pytest.raises(InvalidSpec, match="biggan generator's options, not the siren's"):
                JobSpec("x", generator="siren", options=bad)
            continue
        with pytest.raises(InvalidSpec, match=said):
            JobSpec("x", generator="biggan", options=bad)
    with pytest.raises(InvalidSpec, match="temperature only means something to the dalle generator"):
        JobSpec.from_dict({"prompt": "x", "generator": "vqgan", "temperature": 0.5})
