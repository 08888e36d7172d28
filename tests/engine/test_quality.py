"""Quality presets (engine.quality, importable without torch): schedules give the counts they spell, presets expand
into specs that replay from their JSON and recipes, costs order the presets, the spec refuses bad ensembles and
schedules with sentences, and the command line's flags make the same specs."""

import subprocess
import sys

import pytest

from engine import quality
from engine.errors import InvalidSpec
from engine.spec import JobSpec


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[12]*400+[4]*600", [12] * 400 + [4] * 600),
        ("[12, 8]*3+[4]*2", [12, 8] * 3 + [4] * 2),  # a list repeated, as Python's list arithmetic
        ("[5]", [5]),
        ("[1,2,3]", [1, 2, 3]),
        (" [3] * 2 + [0] * 1 + [7] ", [3, 3, 0, 7]),
        ("16", [16]),
        (16, [16]),
    ],
)
def test_each_schedule_gives_the_counts_it_spells_per_step_then_keeps_the_last(text, expected):
    schedule = quality.cutout_schedule(text)
    assert [schedule.at(step) for step in range(len(expected))] == expected
    assert [schedule.at(len(expected) + k) for k in (0, 1, 10_000)] == [expected[-1]] * 3
    assert schedule.most == max(expected)
    assert schedule.mean(len(expected)) == pytest.approx(sum(expected) / len(expected))
    assert schedule.mean(len(expected) + 10) == pytest.approx(
        (sum(expected) + 10 * expected[-1]) / (len(expected) + 10)
    )


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("12*400", "cannot be read"),
        ("[12]*400+", "cannot be read"),
        ("[a]*3", "cannot be read"),
        ("", "cannot be read"),
        ("[1]*0", "at least once"),
        ("[300]", "at most 256"),
        ("[1]*100001", "more than 100000 steps"),
        ("[1, 2]*60000", "more than 100000 steps"),
        (None, "must be a count or a schedule"),
        (2.5, "must be a count or a schedule"),
    ],
)
def test_bad_schedules_are_refused_with_a_sentence(text, words):
    with pytest.raises(InvalidSpec, match=words):
        quality.cutout_schedule(text)


def test_step_counts_without_schedules_are_the_old_cutn():
    assert quality.step_counts(None, None, 32, 123) == (0, 32)
    assert quality.step_counts("[4]*2+[1]", None, 32, 0) == (4, 0)
    assert quality.step_counts("[4]*2+[1]", "[2]*3+[9]", 32, 2) == (1, 2)
    assert quality.step_counts("[4]*2+[1]", "[2]*3+[9]", 32, 3) == (1, 9)


def test_spec_with_schedules_plans_memory_for_the_largest_step_and_refuses_an_empty_one():
    spec = JobSpec("x", cut_overview="[12]*100+[2]*200", cut_inner="[4]*100+[20]*200", cutn=3)
    assert spec.cutn == 22
    assert JobSpec("x", cut_overview=8).cut_overview == "8" and JobSpec("x", cut_overview=8).cutn == 8
    with pytest.raises(InvalidSpec, match="no cutouts at all at step 5"):
        JobSpec("x", cut_overview="[2]*5+[0]", cut_inner="[0]")
    with pytest.raises(InvalidSpec, match="at most 256"):
        JobSpec("x", cut_overview="[200]", cut_inner="[100]")
    with pytest.raises(InvalidSpec, match="inner cutout schedule"):
        JobSpec("x", cut_inner="[x]")


def test_ensembles_are_checked_and_the_first_clip_is_the_primary():
    spec = JobSpec("x", clip_model="ViT-B-16", perceptors=[["ViT-B-32", 1], ["RN50", 0.5]])
    assert spec.perceptors == (("ViT-B-32", 1.0), ("RN50", 0.5)) and spec.clip_model == "ViT-B-32"
    assert quality.score_model(spec) == "ViT-B-32" and quality.score_model(JobSpec("x", clip_model="RN50")) == "RN50"
    for bad, words in [
        ((("../ViT-B-32", 1.0),), "not a path"),
        ((("ViT-B-32", 0.0),), "above 0"),
        ((("ViT-B-32", float("nan")),), "must be a number"),
        ((("ViT-B-32", 1.0), ("ViT-B-32", 2.0)), "once"),
        (tuple((f"m{i}", 1.0) for i in range(5)), "At most 4"),
        ((("ViT-B-32",),), "pairs"),
    ]:
        with pytest.raises(InvalidSpec, match=words):
            JobSpec("x", perceptors=bad)
    for field, value in [("cut_gray", 1.5), ("tv_scale", -1), ("range_scale", float("inf")), ("quality", "ultra")]:
        with pytest.raises(InvalidSpec):
            JobSpec("x", **{field: value})


def test_presets_expand_into_specs_that_replay_from_their_json():
    for name in quality.PRESET_ORDER:
        spec = JobSpec("a lighthouse", seed=7).with_quality(name)
        preset = quality.PRESETS[name]
        assert spec.quality == name and spec.steps == preset.steps and spec.perceptors == preset.perceptors
        assert (spec.cut_overview, spec.cut_inner, spec.cut_pow) == (
            preset.cut_overview,
            preset.cut_inner,
            preset.cut_pow,
        )
        assert (spec.tv_scale, spec.range_scale, spec.sat_scale) == (
            preset.tv_scale,
            preset.range_scale,
            preset.sat_scale,
        )
        again = JobSpec.from_json(spec.to_json())
        assert again == spec and again.to_json() == spec.to_json()
        assert JobSpec.from_quality("a lighthouse", name, seed=7) == spec
    assert JobSpec.from_quality("x", "best", steps=50).steps == 50


def test_a_recipe_replays_the_values_it_recorded_when_the_preset_changes(monkeypatch):
    recorded = JobSpec("a lighthouse").with_quality("best").to_json()
    changed = quality.Preset("best", "changed", (("ViT-B-32", 1.0),), steps=10, tv_scale=9.0)
    monkeypatch.setitem(quality.PRESETS, "best", changed)
    replayed = JobSpec.from_json(recorded)
    assert replayed.perceptors == (("ViT-B-32", 1.0), ("ViT-B-16", 1.0), ("RN50x4", 1.0))
    assert replayed.steps == 400 and replayed.tv_scale == 0.05
    assert JobSpec("a lighthouse").with_quality("best").tv_scale == 9.0


def test_old_specs_keep_their_meaning_and_json():
    old = {"prompt": "a cat", "cutn": 16, "clip_model": "ViT-B-16"}
    spec = JobSpec.from_dict(old)
    assert spec.perceptors == () and spec.cut_overview is None and spec.cutn == 16 and spec.quality is None
    assert quality.members(spec) == (("ViT-B-16", 1.0),)
    assert not {"quality", "perceptors", "cut_overview", "cut_gray", "tv_scale"} & set(spec.to_dict())


def test_costs_rank_the_presets_and_draft_costs_what_the_default_job_costs():
    default = JobSpec("x")
    assert quality.cutout_cost(default) == 1.0 and quality.relative_cost(default) == 1.0
    costs = [quality.relative_cost(JobSpec.from_quality("x", n)) for n in quality.PRESET_ORDER]
    assert costs[0] == pytest.approx(1.0) and costs[0] < costs[1] < costs[2]
    # at a larger size the decoder's share grows, so the ensemble's premium shrinks
    big = quality.relative_cost(JobSpec.from_quality("x", "best", width=1024, height=1024))
    assert 1.0 < big < costs[2]
    # cutouts per step follow the schedule over the run
    spec = JobSpec("x", cut_overview="[10]*100+[2]", steps=200)
    assert quality.mean_cutouts(spec) == pytest.approx((10 * 100 + 2 * 100) / 200)
    assert quality.cutout_cost(spec.replace(perceptors=(("ViT-B-32", 1.0), ("ViT-B-16", 1.0)))) == pytest.approx(
        6 * (1 + quality.CLIP_COSTS["ViT-B-16"].compute) / 32
    )


def test_caps_and_ranks():
    assert [quality.rank(n) for n in ("draft", "normal", "best")] == [0, 1, 2]
    assert quality.capped("best", "normal") == "normal" and quality.capped("draft", "normal") == "draft"
    assert quality.capped("best", None) == "best"
    with pytest.raises(InvalidSpec, match="choose one of draft, normal, best"):
        quality.rank("ultra")
    assert quality.required_clips() == ("ViT-B-32", "ViT-B-16", "RN50x4")


def test_memory_budget_counts_every_clip():
    from engine.memory import Budget

    budget = Budget(available=4 * 10**9)
    budget.check_spec(JobSpec("x"))
    with pytest.raises(InvalidSpec, match="for each of 3 CLIP models"):
        budget.check_spec(JobSpec.from_quality("x", "best"))
    assert quality.memory_cutouts(JobSpec.from_quality("x", "best")) > quality.memory_cutouts(JobSpec("x"))
    assert quality.extra_weight_bytes(JobSpec("x")) == 0 < quality.extra_weight_bytes(JobSpec.from_quality("x", "best"))


def test_the_bot_can_use_presets_without_torch():
    code = "import sys, engine.quality, engine.spec; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _cli_spec(*argv):
    from engine.cli import build_parser, spec_from_args

    argv = ["a lighthouse", "--seed", "1", *argv]
    return spec_from_args(build_parser().parse_args(argv), argv)


def test_the_command_line_expands_a_preset_and_its_flags_override_it():
    assert _cli_spec("--quality", "best") == JobSpec("a lighthouse", seed=1).with_quality("best")
    spec = _cli_spec("--quality", "normal", "--steps", "20", "--tv-scale", "0.5")
    assert spec.steps == 20 and spec.tv_scale == 0.5 and spec.perceptors == quality.PRESETS["normal"].perceptors
    assert spec.quality is None  # no longer the preset's values
    spec = _cli_spec(
        "--clip-ensemble", "ViT-B-32:1, RN50:0.5,ViT-B-16", "--cut-overview", "[8]*10+[2]", "--cut-inner", "4"
    )
    assert spec.perceptors == (("ViT-B-32", 1.0), ("RN50", 0.5), ("ViT-B-16", 1.0)) and spec.cutn == 12
    assert (spec.cut_overview, spec.cut_inner, spec.steps) == ("[8]*10+[2]", "4", 300)
    assert _cli_spec() == JobSpec("a lighthouse", seed=1)
    from engine.errors import EngineError

    with pytest.raises(EngineError, match="disagree"):
        _cli_spec("--quality", "best", "--clip", "RN50")
    with pytest.raises(EngineError, match="NAME:WEIGHT"):
        _cli_spec("--clip-ensemble", "ViT-B-32:heavy")


def test_the_command_line_replays_a_recipes_ensemble(tmp_path):
    from PIL import Image

    from engine.images import encode_png, recipe

    spec = JobSpec("a lighthouse", seed=1).with_quality("best")
    path = tmp_path / "r.png"
    path.write_bytes(encode_png(Image.new("RGB", (8, 8)), recipe(spec, 256, 256, 400)))
    assert _cli_spec("--recipe", str(path)) == spec
    assert _cli_spec("--recipe", str(path), "--quality", "draft").perceptors == (("ViT-B-32", 1.0),)


@pytest.mark.parametrize("field", ["quality", "perceptors", "cut_overview", "cut_inner", "cut_gray", "tv_scale"])
@pytest.mark.parametrize(
    "value", [[], {}, "x", True, -1, 10**30, [[1, 2]], [["a"]], [[None, 1]], [["ViT-B-32", "1"]], "[1]*", [[[]]]]
)
def test_odd_json_in_the_quality_fields_gives_a_spec_or_a_sentence(field, value):
    import json

    try:
        spec = JobSpec.from_json(json.dumps({"prompt": "a cat", field: value}))
    except InvalidSpec:
        return
    assert JobSpec.from_json(spec.to_json()) == spec
