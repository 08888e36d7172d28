"""The Batcher: continuous batching of runs by shape, reports at the right steps, cancel, errors, snapshots."""

import torch

from engine.errors import OutOfMemory
from engine.snapshots import SnapshotHistory
from engine.worker import Batcher, ErrorReport, ProgressReport, ResultReport, SnapshotReport


def _drain(batcher, limit=200):
    reports = []
    for _ in range(limit):
        if not len(batcher):
            break
        reports.extend(batcher.advance())
    return reports


def _alone(engine, spec):
    run = engine.start(spec)
    while not run.done:
        engine.step([run])
    return run


def test_runs_of_one_shape_share_steps_and_end_as_if_alone(engine, tiny_spec, monkeypatch, tmp_path):
    specs = [tiny_spec(f"prompt {i}", seed=i, steps=6, progress_every=3) for i in range(3)]
    other = tiny_spec("a wider one", width=96, height=48, steps=4, progress_every=2)
    batch_sizes = []
    real_step = engine.step
    monkeypatch.setattr(engine, "step", lambda runs: (batch_sizes.append(len(runs)), real_step(runs))[1])

    batcher = Batcher(max_batch=2)
    runs = [engine.start(s) for s in [*specs, other]]
    for key, run in enumerate(runs):
        batcher.add(key, engine, run, lambda: False, SnapshotHistory(tmp_path / str(key), every=3))
    reports = _drain(batcher)

    # three runs of one shape in batches of at most two; the wider run steps on its own
    assert max(batch_sizes) == 2 and sorted(set(batch_sizes)) == [1, 2]
    results = {r.key: r.result for r in reports if isinstance(r, ResultReport)}
    assert sorted(results) == [0, 1, 2, 3]
    steps = {k: [r.progress.step for r in reports if isinstance(r, ProgressReport) and r.key == k] for k in results}
    assert steps[0] == [3, 6] and steps[3] == [2, 4]
    first = next(r.progress for r in reports if isinstance(r, ProgressReport) and r.key == 0)
    assert len(first.similarities) == 1 and -1 <= first.similarities[0] <= 1
    assert all(
        r.preview is not None and r.preview.size == (64, 48)
        for r in reports
        if isinstance(r, ProgressReport) and r.key == 0
    )
    snapshots = [(r.key, r.step) for r in reports if isinstance(r, SnapshotReport)]
    assert (0, 3) in snapshots and (0, 6) in snapshots  # every 3 steps, and the final state
    for key, spec in enumerate([*specs, other]):
        alone = _alone(engine, spec)
        assert torch.allclose(runs[key].params, alone.params, atol=1e-4), key
        assert results[key].steps_done == spec.steps and not results[key].cancelled


def test_a_run_joins_between_steps(engine, tiny_spec):
    """Continuous batching: a new run starts at once, while an older one is half done, and ends as if alone."""
    long_spec = tiny_spec("long", steps=12, progress_every=2)
    short_spec = tiny_spec("short", seed=5, steps=4, progress_every=2)
    batcher = Batcher(max_batch=4)
    long_run = engine.start(long_spec)
    batcher.add(1, engine, long_run, lambda: False)
    batcher.advance()
    assert long_run.step_index == 2
    short_run = engine.start(short_spec)
    batcher.add(2, engine, short_run, lambda: False)
    reports = _drain(batcher)
    finished = [r.key for r in reports if isinstance(r, ResultReport)]
    assert finished == [2, 1]  # the short one did not wait for the long one
    assert torch.allclose(short_run.params, _alone(engine, short_spec).params, atol=1e-4)
    assert torch.allclose(long_run.params, _alone(engine, long_spec).params, atol=1e-4)


def test_cancel_ends_with_the_current_image(engine, tiny_spec):
    cancelled = {"flag": False}
    batcher = Batcher()
    run = engine.start(tiny_spec(steps=50, progress_every=5))
    batcher.add(7, engine, run, lambda: cancelled["flag"])
    batcher.advance()
    cancelled["flag"] = True
    reports = batcher.advance()
    (result,) = [r.result for r in reports if isinstance(r, ResultReport)]
    assert result.cancelled and result.steps_done == 5 and not len(batcher)


def test_an_error_ends_only_its_batch(engine, tiny_spec, monkeypatch):
    batcher = Batcher(max_batch=4)
    wide = engine.start(tiny_spec("wide", width=96, steps=2, progress_every=1))
    small = engine.start(tiny_spec("small", steps=2, progress_every=1))
    batcher.add(1, engine, wide, lambda: False)
    batcher.add(2, engine, small, lambda: False)
    real_step = engine.step

    def step(runs):
        if runs[0].width == 96:
            raise OutOfMemory("too big")
        return real_step(runs)

    monkeypatch.setattr(engine, "step", step)
    reports = _drain(batcher)
    errors = [r for r in reports if isinstance(r, ErrorReport)]
    assert [(e.key, type(e.error)) for e in errors] == [(1, OutOfMemory)]
    assert any(isinstance(r, ResultReport) and r.key == 2 for r in reports)
