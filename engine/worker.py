"""What an execution backend runs on its worker: advance a run to its next report, save and load snapshots.

Used by the bot's embedded backend on its engine thread (and by any remote worker); synchronous, like the rest
of the engine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from engine.run import Engine, Run, load_snapshot, save_snapshot
from engine.spec import Progress


def advance(engine: Engine, run: Run, every: int, started: float, cancelled: Callable[[], bool]) -> Progress:
    """Step until the next progress boundary (or the end, or a cancel) and report."""
    while not run.done and not cancelled():
        engine.step([run])
        if run.step_index % every == 0:
            break
    return engine.progress(run, time.monotonic() - started)


def snapshot_to(run: Run, path: Path) -> None:
    """Save the run's state at `path` (atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_snapshot(run.snapshot(), path)


def snapshot_from(path: Path) -> dict:
    return load_snapshot(path)
