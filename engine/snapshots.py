"""A run's snapshot history: a snapshot (and a small thumbnail) every K steps, thinned so that disk use stays
bounded.

The promise: at most `budget` snapshots per run, always the newest one, and, of the older ones, every multiple
of the current stride, which starts at K and doubles each time the history would outgrow the budget. So a short
run keeps every snapshot, and a long one keeps evenly spaced points from the start to the end (the early
composition-forming steps stay reachable). Files are named by step: `000150.pt` and `000150.webp`.
"""

from __future__ import annotations

from pathlib import Path

from engine.files import write_atomically


class SnapshotHistory:
    """One run's snapshots in a directory, as the bytes the loop emits (`engine.events.Snapshotted`).

    Standard library only: the bot keeps its jobs' histories with it, wherever the engine ran."""

    def __init__(self, directory: str | Path, every: int, budget: int = 6) -> None:
        if every < 1 or budget < 2:
            raise ValueError("snapshots need every >= 1 and a budget of at least 2")
        self.directory, self.every, self.budget = Path(directory), every, budget

    def steps(self) -> list[int]:
        """The steps that have a snapshot, oldest first."""
        if not self.directory.is_dir():
            return []
        return sorted(int(p.stem) for p in self.directory.glob("*.pt") if p.stem.isdigit())

    def path(self, step: int) -> Path:
        """The snapshot file of `step` (whether or not it exists)."""
        return self.directory / f"{step:06d}.pt"

    def thumbnail(self, step: int) -> Path:
        """The thumbnail file of `step` (whether or not it exists)."""
        return self.directory / f"{step:06d}.webp"

    def newest(self) -> Path | None:
        """The newest snapshot's file, or None if there is none."""
        steps = self.steps()
        return self.path(steps[-1]) if steps else None

    def save(self, step: int, state: bytes, thumbnail: bytes | None = None) -> Path:
        """Keep the state at `step` (and its thumbnail), written atomically, then thin."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if thumbnail is not None:
            write_atomically(self.thumbnail(step), thumbnail)
        path = self.path(step)
        write_atomically(path, state)
        self.thin()
        return path

    def keep(self, steps: list[int]) -> set[int]:
        """Which of `steps` the promise keeps. The stride follows from the newest step alone (as if every K-th
        step up to it had been saved), so it never shrinks back and old off-grid snapshots do not linger."""
        if not steps:
            return set()
        newest = steps[-1]
        grid = range(self.every, newest + 1, self.every)
        stride = self.every
        while len({s for s in grid if s % stride == 0} | {newest}) > self.budget:
            stride *= 2
        return {s for s in steps if s % stride == 0} | {newest}

    def thin(self) -> list[int]:
        """Delete the snapshots the promise does not keep; returns their steps."""
        steps = self.steps()
        kept = self.keep(steps)
        dropped = [s for s in steps if s not in kept]
        for step in dropped:
            self.path(step).unlink(missing_ok=True)
            self.thumbnail(step).unlink(missing_ok=True)
        return dropped

    def load(self, step: int) -> bytes:
        """The state bytes saved at `step`."""
        return self.path(step).read_bytes()

    def disk_bytes(self) -> int:
        """Bytes of every file in the directory (0 if it does not exist)."""
        return sum(p.stat().st_size for p in self.directory.iterdir()) if self.directory.is_dir() else 0
