"""What an execution backend runs on its worker thread: a Batcher that advances every active run, several runs of
the same shape in one batched decode + CLIP pass (continuous batching: runs join and leave between steps), and
reports progress, snapshots and results as plain tuples.

Synchronous, like the rest of the engine; used by the bot's embedded backend (and by any remote worker).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import EngineError
from engine.run import Engine, Run, load_snapshot
from engine.snapshots import SnapshotHistory
from engine.spec import Progress, Result

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProgressReport:
    """A progress report; the preview is a PIL image, encoded to PNG by the receiver (off the engine thread)."""

    key: int
    progress: Progress
    preview: object | None


@dataclass(frozen=True)
class SnapshotReport:
    key: int
    step: int
    path: Path


@dataclass(frozen=True)
class ResultReport:
    key: int
    result: Result


@dataclass(frozen=True)
class ErrorReport:
    key: int
    error: BaseException


Report = ProgressReport | SnapshotReport | ResultReport | ErrorReport


@dataclass
class Active:
    key: int
    engine: Engine
    run: Run
    cancelled: Callable[[], bool]
    history: SnapshotHistory | None = None
    started: float = field(default_factory=time.monotonic)


class Batcher:
    """The runs this worker is advancing. Runs of one engine and one shape (`Run.group_key`) step together, at
    most `max_batch` at a time; different shapes take turns, one step each."""

    def __init__(self, max_batch: int = 1) -> None:
        self.max_batch = max(1, max_batch)
        self.active: dict[int, Active] = {}

    def __len__(self) -> int:
        return len(self.active)

    def add(
        self,
        key: int,
        engine: Engine,
        run: Run,
        cancelled: Callable[[], bool],
        history: SnapshotHistory | None = None,
    ) -> None:
        """Join the batch at the next step; with a `history`, snapshot every `history.every` steps and at the end."""
        self.active[key] = Active(key, engine, run, cancelled, history)

    def steer(self, key: int, text: str) -> str | None:
        """Aim run `key` at `text` from its next step; returns its new spec (JSON), or None if it has ended."""
        item = self.active.get(key)
        if item is None:
            return None
        return item.run.steer(text).to_json()

    def batches(self) -> list[list[Active]]:
        """The runs grouped for this round of steps."""
        groups: dict[tuple, list[Active]] = {}
        for item in self.active.values():
            groups.setdefault((id(item.engine), item.run.group_key()), []).append(item)
        out = []
        for items in groups.values():
            out.extend(items[i : i + self.max_batch] for i in range(0, len(items), self.max_batch))
        return out

    def advance(self, max_rounds: int = 1000) -> list[Report]:
        """Step every active run (one step per round) until at least one has something to report; return it all.

        Cancelled runs finish at the start of a round; a run reports progress every `spec.progress_every` steps,
        snapshots every `history.every` steps, and its result (after a final snapshot) when it is done. An error
        in a batched step ends every run of that batch with an ErrorReport; the others go on.
        """
        reports: list[Report] = []
        for _ in range(max_rounds):
            for item in list(self.active.values()):
                if item.cancelled() or item.run.done:
                    self._finish(item, reports)
            for batch in self.batches():
                try:
                    batch[0].engine.step([item.run for item in batch])
                except Exception as exc:  # noqa: BLE001 - each job learns of it; the worker goes on
                    if not isinstance(exc, EngineError):
                        log.exception("a batched step of %d runs failed", len(batch))
                    for item in batch:
                        reports.append(ErrorReport(item.key, exc))
                        self.active.pop(item.key, None)
                    continue
                for item in batch:
                    self._after_step(item, reports)
            if reports or not self.active:
                return reports
        return reports

    def _after_step(self, item: Active, reports: list[Report]) -> None:
        run, engine = item.run, item.engine
        every = run.spec.progress_every
        at = run.step_index
        preview = None  # one device-to-host copy per step, shared by the report and the snapshot's thumbnail
        if at % every == 0 or run.done:
            progress = engine.progress(run, time.monotonic() - item.started, preview=False)
            preview = engine.preview(run)
            reports.append(ProgressReport(item.key, progress, preview))
        if run.done:
            self._finish(item, reports, preview)
        elif item.history is not None and at % item.history.every == 0:
            path = item.history.save(run, preview if preview is not None else engine.preview(run))
            reports.append(SnapshotReport(item.key, at, path))

    def _finish(self, item: Active, reports: list[Report], preview=None) -> None:
        self.active.pop(item.key, None)
        try:
            result = item.engine.result(item.run, time.monotonic() - item.started, cancelled=not item.run.done)
            if item.history is not None:  # the final state, for Continue and Branch
                path = item.history.save(item.run, preview if preview is not None else item.engine.preview(item.run))
                reports.append(SnapshotReport(item.key, item.run.step_index, path))
            reports.append(ResultReport(item.key, result))
        except Exception as exc:  # noqa: BLE001
            if not isinstance(exc, EngineError):
                log.exception("finishing run %s failed", item.key)
            reports.append(ErrorReport(item.key, exc))


def snapshot_from(path: Path) -> dict:
    return load_snapshot(path)
