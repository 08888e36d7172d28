"""Steering: a prompt change takes effect from the right step, keeps z and the optimiser, and replays exactly."""

import pytest
import torch

from engine.errors import InvalidSpec
from engine.events import Finished
from engine.images import read_recipe
from engine.loop import Callbacks, Loop
from engine.spec import JobSpec


def test_schedule_parsing_and_validation():
    spec = JobSpec("a castle", prompt_schedule=[[20, "a ruin"], [40, "a forest | fog:0.5"]])
    assert spec.prompt_schedule == ((20, "a ruin"), (40, "a forest | fog:0.5"))
    assert [spec.prompt_at(s) for s in (0, 19, 20, 39, 40, 500)] == ["a castle"] + ["a castle", "a ruin"] + [
        "a ruin",
        "a forest | fog:0.5",
        "a forest | fog:0.5",
    ]
    assert JobSpec.from_json(spec.to_json()) == spec
    with pytest.raises(InvalidSpec, match="increasing"):
        JobSpec("a", prompt_schedule=((5, "b"), (5, "c")))
    with pytest.raises(InvalidSpec, match="has 3 parts; this mirror image has 2"):
        JobSpec("heaven / hell", layout="mirror", prompt_schedule=((5, "a / b / c"),))
    with pytest.raises(InvalidSpec, match="empty"):
        JobSpec("a", prompt_schedule=((5, "  "),))


def test_a_scheduled_change_applies_from_its_step(engine, tiny_spec):
    plain = engine.start(tiny_spec("a red apple", steps=6))
    steered = engine.start(tiny_spec("a red apple", steps=6, prompt_schedule=((3, "a blue boat"),)))
    prompts = []
    for step in range(6):
        engine.step([plain])
        engine.step([steered])
        prompts.append(steered.prompt)
        if step < 3:  # the same computation until the change
            assert torch.equal(plain.params, steered.params), step
    assert prompts == ["a red apple"] * 3 + ["a blue boat"] * 3
    assert steered.texts == ["a blue boat"]
    assert not torch.equal(plain.params, steered.params)


def test_live_steering_is_recorded_and_the_recipe_replays_it(engine, tiny_spec):
    spec = tiny_spec("a red apple", steps=8, progress_every=4)
    loop = Loop()
    run = engine.start(spec)
    events = []
    loop.add(1, engine, run, Callbacks(on_event=events.append))
    for _ in range(4):
        loop.round()
    new_spec = loop.steer(1, "a lighthouse | storm:0.5")
    assert new_spec.prompt_schedule == ((4, "a lighthouse | storm:0.5"),)
    optimizer_state = run.optimizer.state_dict()["state"][0]["exp_avg"].clone()
    assert torch.count_nonzero(optimizer_state) > 0  # Adam's moments were kept, not reset
    while loop:
        loop.round()
    result = next(e.result for e in events if isinstance(e, Finished))
    recipe = read_recipe(result.image)
    assert recipe["spec"]["prompt_schedule"] == [[4, "a lighthouse | storm:0.5"]]
    assert [t for t, _ in result.scores] == ["a lighthouse", "storm"]
    replay = engine.generate(JobSpec.from_dict(recipe["spec"]))
    assert replay.image == result.image  # same bytes on the CPU
    assert loop.steer(1, "too late") is None


def test_resuming_a_steered_run_from_a_snapshot_continues_it(engine, tiny_spec):
    spec = tiny_spec("a red apple", steps=8, prompt_schedule=((2, "a blue boat"), (6, "a green hill")))
    whole = engine.generate(spec)
    run = engine.start(spec)
    for _ in range(4):
        engine.step([run])
    snapshot = run.snapshot()
    resumed = engine.start(spec, snapshot)
    assert resumed.prompt == "a blue boat"
    while not resumed.done:
        engine.step([resumed])
    assert engine.result(resumed, 0.0).image == whole.image
