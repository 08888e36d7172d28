"""The one stepping loop: every run, from the CLI, the bot's backends and the tests, is advanced here.

    loop = Loop(max_batch=4)
    loop.add(key, engine, engine.start(spec), Callbacks(on_event=..., should_stop=..., snapshot_every=25))
    while loop:
        loop.round()          # one step of every run; runs of one shape share a batched decode + CLIP pass

Runs join and leave between rounds (continuous batching). Each run reports through its own callbacks, called on
the loop's thread, in the k-diffusion style: `on_progress(progress, preview)` every `spec.progress_every` steps
and at the end (the preview is a PIL image, left to the caller to encode), `on_event(event)` with the events of
`engine.spec`: `Snapshotted` (state bytes and a thumbnail, every `snapshot_every` steps and at the end), then
exactly one `Finished` or `Failed`. `should_stop()` is asked before each step; a stopped run finishes with its
image so far. A run whose loss or latent became infinite or NaN fails (`Diverged`) at its next report, snapshot or
end, without an image. A single run is a loop of one (`run_to_end`).
"""

from __future__ import annotations

import dataclasses
import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.errors import Cancelled, EngineError
from engine.events import Event, Failed, Finished, Progress, Result, Snapshotted
from engine.images import snapshot_bytes
from engine.spec import JobSpec

if TYPE_CHECKING:  # the loop advances runs of engines; engine.run starts the loop lazily (Engine.generate)
    from engine.engine import Engine
    from engine.run import Run

log = logging.getLogger(__name__)

THUMB_SIDE = 160


def _never() -> bool:
    return False


@dataclass(frozen=True)
class Callbacks:
    """How one run reports to its owner (all optional)."""

    on_progress: Callable[[Progress, Any], None] | None = None
    on_event: Callable[[Event], None] | None = None
    should_stop: Callable[[], bool] = _never
    snapshot_every: int = 0
    on_step: Callable[[Run], None] | None = None  # after every step (a progress bar, frames on disk)


@dataclass
class _Entry:
    key: Any
    engine: Engine
    run: Run
    callbacks: Callbacks
    started: float = field(default_factory=time.monotonic)


def thumbnail(preview) -> bytes:
    """A small WebP of a PIL image, for snapshot pickers."""
    small = preview.copy()
    small.thumbnail((THUMB_SIDE, THUMB_SIDE))
    buffer = io.BytesIO()
    small.save(buffer, format="WEBP", quality=80)
    return buffer.getvalue()


class Loop:
    """The runs being advanced. Runs of one engine and one shape (`Run.group_key`) step together, at most
    `max_batch` at a time; different shapes take turns, one step each per round."""

    def __init__(self, max_batch: int = 1) -> None:
        self.max_batch = max(1, max_batch)
        self._entries: dict[Any, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Any) -> bool:
        return key in self._entries

    def add(self, key: Any, engine: Engine, run: Run, callbacks: Callbacks = Callbacks()) -> None:
        """Join at the next round."""
        self._entries[key] = _Entry(key, engine, run, callbacks)

    def steer(self, key: Any, text: str) -> JobSpec | None:
        """Aim run `key` at `text` from its next step; its new spec, or None if it is not in the loop."""
        entry = self._entries.get(key)
        return None if entry is None else entry.run.steer(text)

    def batches(self) -> list[list[_Entry]]:
        """The runs grouped for one round."""
        groups: dict[tuple, list[_Entry]] = {}
        for entry in self._entries.values():
            groups.setdefault((id(entry.engine), entry.run.group_key()), []).append(entry)
        out = []
        for entries in groups.values():
            out.extend(entries[i : i + self.max_batch] for i in range(0, len(entries), self.max_batch))
        return out

    def round(self) -> int:
        """Finish the runs that are done or asked to stop, then step every other run once. Returns how many runs
        are left. An error in a batched step fails every run of that batch; the others go on."""
        for entry in list(self._entries.values()):
            if entry.run.done or entry.callbacks.should_stop():
                self._finish(entry)
        for batch in self.batches():
            try:
                batch[0].engine.step([entry.run for entry in batch])
            except Exception as exc:  # noqa: BLE001 - each run learns of it; the loop goes on
                if not isinstance(exc, EngineError):
                    log.exception("a batched step of %d runs failed", len(batch))
                for entry in batch:
                    self._entries.pop(entry.key, None)
                    self._emit(entry, Failed(exc))
                continue
            for entry in batch:
                self._after_step(entry)
        return len(self._entries)

    def _emit(self, entry: _Entry, event: Event) -> None:
        if entry.callbacks.on_event is not None:
            entry.callbacks.on_event(event)

    def _after_step(self, entry: _Entry) -> None:
        run, engine, callbacks = entry.run, entry.engine, entry.callbacks
        if callbacks.on_step is not None:
            callbacks.on_step(run)
        at = run.step_index
        report = at % run.spec.progress_every == 0 or run.done
        snapshot = bool(callbacks.snapshot_every) and at % callbacks.snapshot_every == 0
        if report or snapshot:  # read the device anyway: a run gone NaN ends here, before its state is shown or kept
            try:
                engine.check_finite(run)
            except EngineError as exc:
                self._entries.pop(entry.key, None)
                self._emit(entry, Failed(exc))
                return
        preview = None  # one device-to-host copy per step, shared by the progress report and the thumbnail
        if callbacks.on_progress is not None and report:
            preview = engine.preview(run)
            callbacks.on_progress(engine.progress(run, time.monotonic() - entry.started, preview=False), preview)
        if run.done:
            self._finish(entry, preview)
        elif snapshot:
            self._snapshot(entry, preview)

    def _snapshot(self, entry: _Entry, preview=None) -> None:
        preview = preview if preview is not None else entry.engine.preview(entry.run)
        self._emit(entry, Snapshotted(entry.run.step_index, snapshot_bytes(entry.run.snapshot()), thumbnail(preview)))

    def _finish(self, entry: _Entry, preview=None) -> None:
        self._entries.pop(entry.key, None)
        try:
            result = entry.engine.result(entry.run, time.monotonic() - entry.started, cancelled=not entry.run.done)
            if entry.callbacks.snapshot_every:  # the final state, for Continue and Branch
                self._snapshot(entry, preview)
        except Exception as exc:  # noqa: BLE001
            if not isinstance(exc, EngineError):
                log.exception("finishing run %s failed", entry.key)
            self._emit(entry, Failed(exc))
            return
        self._emit(entry, Finished(result))


def run_to_end(engine: Engine, run: Run, callbacks: Callbacks = Callbacks()) -> Result:
    """Advance one run to its end in a loop of one. Raises the error of a `Failed` run, and `Cancelled` (with the
    image reached) for a run that `should_stop` stopped."""
    ends: list[Event] = []

    def on_event(event: Event) -> None:
        if isinstance(event, Finished | Failed):
            ends.append(event)
        if callbacks.on_event is not None:
            callbacks.on_event(event)

    loop = Loop()
    loop.add(0, engine, run, dataclasses.replace(callbacks, on_event=on_event))
    while loop:
        loop.round()
    end = ends[-1]
    if isinstance(end, Failed):
        raise end.error
    if end.result.cancelled:
        raise Cancelled(result=end.result)
    return end.result
