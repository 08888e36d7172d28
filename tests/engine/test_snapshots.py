"""Snapshot history: the promised snapshots survive thinning, disk stays bounded, branching equals continuing."""

import pytest

from engine.snapshots import SnapshotHistory


class _FakeRun:
    """Only what SnapshotHistory.save needs."""

    def __init__(self):
        self.step_index = 0

    def snapshot(self):
        return {"step": self.step_index}


def _promised(saved: list[int], every: int, budget: int) -> set[int]:
    """The documented promise, from every step ever saved: the newest, and every multiple of the smallest
    stride every * 2**j that keeps the count within the budget."""
    stride = every
    while True:
        kept = {s for s in saved if s % stride == 0} | {saved[-1]}
        if len(kept) <= budget:
            return kept
        stride *= 2


@pytest.mark.parametrize(("every", "budget", "total"), [(1, 4, 20), (25, 6, 300), (10, 3, 95), (5, 6, 20)])
def test_thinning_keeps_the_promised_snapshots(tmp_path, every, budget, total):
    history = SnapshotHistory(tmp_path, every, budget)
    run = _FakeRun()
    saved = []
    for step in sorted({*range(every, total + 1, every), total}):
        run.step_index = step
        history.save(run)
        saved.append(step)
        steps = history.steps()
        assert set(steps) == _promised(saved, every, budget)
        assert len(steps) <= budget and steps[-1] == step
    if len(saved) <= budget:  # a short run keeps everything
        assert history.steps() == saved
    else:  # a long one keeps points spread over the whole run
        assert history.steps()[0] <= total // 2


def test_default_settings_for_a_300_step_job(tmp_path):
    history = SnapshotHistory(tmp_path, every=25, budget=6)
    run = _FakeRun()
    for step in range(25, 301, 25):
        run.step_index = step
        history.save(run)
    assert history.steps() == [50, 100, 150, 200, 250, 300]


def test_branching_from_a_snapshot_equals_continuing_from_it(engine, tiny_spec, tmp_path):
    spec = tiny_spec("a red apple", steps=10, progress_every=5)
    history = SnapshotHistory(tmp_path, every=3, budget=4)
    run = engine.start(spec)
    while not run.done:
        engine.step([run])
        if run.step_index % 3 == 0:
            history.save(run, engine.preview(run))
    history.save(run, engine.preview(run))
    final = engine.result(run, 0.0).image
    assert history.steps() == [3, 6, 9, 10]
    assert history.thumbnail(6).is_file()
    branch = engine.start(spec, history.load(3))
    assert branch.step_index == 3
    while not branch.done:
        engine.step([branch])
    assert engine.result(branch, 0.0).image == final
    assert history.disk_bytes() > 0
