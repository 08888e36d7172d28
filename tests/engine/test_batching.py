"""The one loop: continuous batching of runs by shape, events at the right steps, cancel, errors, snapshots."""

import torch

from engine.errors import OutOfMemory
from engine.events import Failed, Finished, Snapshotted
from engine.loop import Callbacks, Loop, run_to_end


class _Recorder:
    """Collects each run's events and progress, as a backend's callbacks would."""

    def __init__(self):
        self.events, self.progress = [], []

    def callbacks(self, key, **kw):
        return Callbacks(
            on_progress=lambda p, preview: self.progress.append((key, p, preview)),
            on_event=lambda e: self.events.append((key, e)),
            **kw,
        )

    def of(self, kind):
        return [(k, e) for k, e in self.events if isinstance(e, kind)]


def _drain(loop, limit=200):
    for _ in range(limit):
        if not loop.round():
            break


def _alone(engine, spec):
    run = engine.start(spec)
    while not run.done:
        engine.step([run])
    return run


def test_runs_of_one_shape_share_steps_and_end_as_if_alone(engine, tiny_spec, monkeypatch):
    specs = [tiny_spec(f"prompt {i}", seed=i, steps=6, progress_every=3) for i in range(3)]
    other = tiny_spec("a wider one", width=96, height=48, steps=4, progress_every=2)
    batch_sizes = []
    real_step = engine.step
    monkeypatch.setattr(engine, "step", lambda runs: (batch_sizes.append(len(runs)), real_step(runs))[1])

    loop, seen = Loop(max_batch=2), _Recorder()
    runs = [engine.start(s) for s in [*specs, other]]
    for key, run in enumerate(runs):
        loop.add(key, engine, run, seen.callbacks(key, snapshot_every=3))
    _drain(loop)

    # three runs of one shape in batches of at most two; the wider run steps on its own
    assert max(batch_sizes) == 2 and sorted(set(batch_sizes)) == [1, 2]
    results = {k: e.result for k, e in seen.of(Finished)}
    assert sorted(results) == [0, 1, 2, 3]
    steps = {k: [p.step for key, p, _ in seen.progress if key == k] for k in results}
    assert steps[0] == [3, 6] and steps[3] == [2, 4]
    first = next(p for key, p, _ in seen.progress if key == 0)
    assert len(first.similarities) == 1 and -1 <= first.similarities[0] <= 1
    assert all(preview.size == (64, 48) for key, _, preview in seen.progress if key == 0)
    snapshots = [(k, e.step) for k, e in seen.of(Snapshotted)]
    assert (0, 3) in snapshots and (0, 6) in snapshots  # every 3 steps, and the final state
    assert all(e.state[:2] == b"PK" and e.thumbnail[8:12] == b"WEBP" for _, e in seen.of(Snapshotted))
    # each run's events end with exactly one Finished, after its last snapshot
    for key in results:
        mine = [type(e).__name__ for k, e in seen.events if k == key]
        assert mine[-1] == "Finished" and mine.count("Finished") == 1 and mine[-2] == "Snapshotted"
    for key, spec in enumerate([*specs, other]):
        alone = _alone(engine, spec)
        assert torch.allclose(runs[key].params, alone.params, atol=1e-4), key
        assert results[key].steps_done == spec.steps and not results[key].cancelled


def test_a_run_joins_between_steps(engine, tiny_spec):
    """Continuous batching: a new run starts at once, while an older one is half done, and ends as if alone."""
    long_spec = tiny_spec("long", steps=12, progress_every=2)
    short_spec = tiny_spec("short", seed=5, steps=4, progress_every=2)
    loop, seen = Loop(max_batch=4), _Recorder()
    long_run = engine.start(long_spec)
    loop.add(1, engine, long_run, seen.callbacks(1))
    loop.round()
    loop.round()
    assert long_run.step_index == 2
    short_run = engine.start(short_spec)
    loop.add(2, engine, short_run, seen.callbacks(2))
    _drain(loop)
    assert [k for k, _ in seen.of(Finished)] == [2, 1]  # the short one did not wait for the long one
    assert torch.allclose(short_run.params, _alone(engine, short_spec).params, atol=1e-4)
    assert torch.allclose(long_run.params, _alone(engine, long_spec).params, atol=1e-4)


def test_cancel_ends_with_the_current_image(engine, tiny_spec):
    cancelled = {"flag": False}
    loop, seen = Loop(), _Recorder()
    run = engine.start(tiny_spec(steps=50, progress_every=5))
    loop.add(7, engine, run, seen.callbacks(7, should_stop=lambda: cancelled["flag"]))
    for _ in range(5):
        loop.round()
    cancelled["flag"] = True
    assert loop.round() == 0
    ((_, end),) = seen.of(Finished)
    assert end.result.cancelled and end.result.steps_done == 5


def test_an_error_ends_only_its_batch(engine, tiny_spec, monkeypatch):
    loop, seen = Loop(max_batch=4), _Recorder()
    wide = engine.start(tiny_spec("wide", width=96, steps=2, progress_every=1))
    small = engine.start(tiny_spec("small", steps=2, progress_every=1))
    loop.add(1, engine, wide, seen.callbacks(1))
    loop.add(2, engine, small, seen.callbacks(2))
    real_step = engine.step

    def step(runs):
        if runs[0].width == 96:
            raise OutOfMemory("too big")
        return real_step(runs)

    monkeypatch.setattr(engine, "step", step)
    _drain(loop)
    assert [(k, type(e.error)) for k, e in seen.of(Failed)] == [(1, OutOfMemory)]
    assert [k for k, _ in seen.of(Finished)] == [2]


def test_a_loop_of_one_is_generate(engine, tiny_spec):
    spec = tiny_spec(steps=5, progress_every=2)
    assert run_to_end(engine, engine.start(spec)).image == engine.generate(spec).image
