"""How fast jobs go and how far along they are: /queue's report of the running jobs and every ETA come from here,
without a database read. Steps are counted in units of the default job's step (`engine.quality.relative_cost`): a
step of a costlier quality (several CLIP models, more cutouts) counts for more."""

from __future__ import annotations

from collections.abc import Iterable

from bot.jobs._models import RunningInfo
from bot.queue import Entry
from engine.events import Progress

DEFAULT_SECONDS_PER_STEP = 0.5


class Pace:
    """The measured seconds per step, the steps of each running job (with its author) and the steps each waiting job
    still has to run."""

    def __init__(self) -> None:
        self.seconds_per_step = DEFAULT_SECONDS_PER_STEP
        # running job id -> (author, step, steps, what one of its steps costs in default steps)
        self.progress: dict[int, tuple[int, int, int, float]] = {}
        self.waiting_steps: dict[int, float] = {}  # queued job id -> steps it still has to run, in default steps

    def record(self, progress: Progress, start_step: int, cost: float = 1.0) -> None:
        """Fold a progress report of a job that started at `start_step`, whose steps cost `cost` default steps each,
        into the measured pace (seconds per default step)."""
        done = (progress.step - start_step) * cost
        if done > 0 and progress.elapsed > 0:
            measured = progress.elapsed / done
            self.seconds_per_step = 0.8 * self.seconds_per_step + 0.2 * measured

    def running(self) -> list[RunningInfo]:
        """The running jobs with their authors and steps, for /queue."""
        return [RunningInfo(j, a, s, n) for j, (a, s, n, _cost) in self.progress.items()]

    def etas(self, waiting: Iterable[Entry], concurrency: int) -> dict[int, float]:
        """Seconds until each job of the waiting line (`waiting`, in order) is likely to finish: the steps ahead of it
        (running jobs first, then the waiting line) at the measured pace, `concurrency` jobs at a time."""
        steps = self._running_steps()
        rate = self.seconds_per_step / max(1, concurrency)
        found = {}
        for entry in waiting:
            steps += self.waiting_steps.get(entry.job_id, 0)
            found[entry.job_id] = steps * rate
        return found

    def running_eta(self, concurrency: int) -> float:
        """Seconds until the running jobs are likely to have finished (a running job's ETA)."""
        return self._running_steps() * self.seconds_per_step / max(1, concurrency)

    def _running_steps(self) -> float:
        return sum((n - s) * cost for _, s, n, cost in self.progress.values())
