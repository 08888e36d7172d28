"""Moderation levels: the data file, the decisions per level, the table (standard library only, no torch)."""

from __future__ import annotations

import json

import pytest

from engine.errors import InvalidSpec
from engine.moderation import (
    LEVELS,
    Verdict,
    checks_images,
    checks_previews,
    decide,
    levels_table,
    load_data,
    parse_data,
)


def test_the_builtin_data():
    data = load_data()
    assert tuple(data.levels) == LEVELS == ("off", "spoiler", "withhold", "strict")
    assert data.logit_scale == 100
    assert len(data.unsafe) >= 4 and len(data.safe) >= 4
    assert not set(data.unsafe) & set(data.safe)
    assert data.descriptions[: len(data.unsafe)] == data.unsafe
    assert data.levels["strict"].threshold < data.levels["withhold"].threshold  # strict is stricter


@pytest.mark.parametrize(
    ("level", "score", "action"),
    [
        ("off", 1.0, "post"),
        ("off", None, "post"),
        ("spoiler", 0.49, "post"),
        ("spoiler", 0.5, "spoiler"),
        ("spoiler", 0.99, "spoiler"),
        ("withhold", 0.49, "post"),
        ("withhold", 0.5, "withhold"),
        ("withhold", 0.31, "post"),
        ("strict", 0.31, "withhold"),
        ("strict", 0.29, "post"),
        ("strict", None, "post"),  # not checked: nothing to act on
    ],
)
def test_decide_per_level(level, score, action):
    verdict = decide(level, score, "a gory corpse")
    assert verdict.action == action
    assert verdict.level == level and verdict.unsafe == score
    assert verdict.threshold == load_data().levels[level].threshold
    assert verdict.label == (None if action == "post" else "a gory corpse")


def test_verdict_is_frozen():
    verdict = decide("withhold", 0.9, "x")
    assert verdict == Verdict("withhold", 0.9, "x", "withhold", 0.5)
    with pytest.raises(AttributeError):
        verdict.action = "post"


def test_which_levels_check_what():
    assert [checks_images(level) for level in LEVELS] == [False, True, True, True]
    assert [checks_previews(level) for level in LEVELS] == [False, False, False, True]


def test_unknown_levels_are_a_sentence():
    for bad in ("lenient", "", None, 3, "x" * 500):
        with pytest.raises(InvalidSpec, match=r"^Unknown moderation level .*; choose one of off, spoiler, .*\.$"):
            decide(bad, 0.5)


def test_levels_table():
    table = levels_table().splitlines()
    assert table[0].startswith("| level |") and len(table) == 2 + len(LEVELS)
    assert all(f"`{level}`" in row for level, row in zip(LEVELS, table[2:], strict=True))
    assert "| 0.3 |" in table[-1] and "| yes |" in table[-1] and "| - |" in table[2]


def _good() -> dict:
    return json.loads(json.dumps(_raw()))


def _raw() -> dict:
    from importlib import resources

    return json.loads(resources.files("engine").joinpath("data/safety.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(unsafe=[]), "'unsafe'"),
        (lambda d: d.update(safe=["ok", 3]), "'safe'"),
        (lambda d: d.update(logit_scale=0), "logit_scale"),
        (lambda d: d["levels"].pop("strict"), "levels"),
        (lambda d: d["levels"]["spoiler"].update(threshold=1.5), "between 0 and 1"),
        (lambda d: d["levels"]["spoiler"].update(threshold=None), "threshold goes with"),
        (lambda d: d["levels"]["off"].update(threshold=0.2), "threshold goes with"),
        (lambda d: d["levels"]["withhold"].update(action="delete"), "action must be one of"),
    ],
)
def test_bad_data_is_refused(change, message):
    data = _good()
    change(data)
    with pytest.raises(ValueError, match=message):
        parse_data(data)


def test_data_from_a_file(tmp_path):
    raw = _good()
    raw["levels"]["spoiler"]["threshold"] = 0.1
    path = tmp_path / "safety.json"
    path.write_text(json.dumps(raw), encoding="utf-8")
    data = load_data(path)
    assert decide("spoiler", 0.2, "x", data=data).action == "spoiler"
    assert decide("spoiler", 0.2, "x").action == "post"  # the built-in data is untouched


@pytest.mark.parametrize("score", [float("nan"), float("inf"), float("-inf"), -0.2, 1.5, "0.1", True])
@pytest.mark.parametrize("level", ["spoiler", "withhold", "strict"])
def test_a_score_that_is_not_a_probability_fails_closed(level, score):
    """A check that broke down (NaN compares False with every threshold) must not post the image."""
    verdict = decide(level, score, "a gory corpse")
    assert verdict.action == load_data().levels[level].action != "post"
    assert verdict.unsafe == 1.0 and verdict.label == "a gory corpse"


def test_an_invalid_score_at_the_off_level_is_not_checked():
    assert decide("off", float("nan")).action == "post"
