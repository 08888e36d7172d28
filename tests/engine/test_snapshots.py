"""Snapshot history: the promised snapshots survive thinning, disk stays bounded, branching equals continuing."""

import pytest

from engine.snapshots import SnapshotHistory


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
    saved = []
    for step in sorted({*range(every, total + 1, every), total}):
        history.save(step, f"state {step}".encode())
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
    for step in range(25, 301, 25):
        history.save(step, f"state {step}".encode(), b"thumb")
    assert history.steps() == [50, 100, 150, 200, 250, 300]
    assert history.load(100) == b"state 100" and history.thumbnail(100).read_bytes() == b"thumb"
    assert not history.thumbnail(25).exists()


def test_branching_from_a_snapshot_equals_continuing_from_it(engine, tiny_spec, tmp_path):
    from engine.events import Snapshotted
    from engine.run import load_snapshot

    spec = tiny_spec("a red apple", steps=10, progress_every=5)
    history = SnapshotHistory(tmp_path, every=3, budget=4)
    events = []
    final = engine.generate(spec, on_snapshot=events.append, snapshot_every=3).image
    for event in events:
        assert isinstance(event, Snapshotted)
        history.save(event.step, event.state, event.thumbnail)
    assert history.steps() == [3, 6, 9, 10]
    assert history.thumbnail(6).read_bytes()[8:12] == b"WEBP"
    branch = engine.start(spec, load_snapshot(history.load(3)))
    assert branch.step_index == 3
    while not branch.done:
        engine.step([branch])
    assert engine.result(branch, 0.0).image == final
    assert history.disk_bytes() > 0
