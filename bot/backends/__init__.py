"""Execution backends: the narrow interface between the job service and whatever runs the engine.

    handle = backend.submit(job_id, spec, resume, snapshot_every)  # start a job (nothing runs until events are read)
    async for event in handle.events(): ...                         # Progress, Snapshotted, then Finished
    handle.cancel()                                                 # stop between steps: Finished(cancelled)

The events are the engine's own (`engine.events`): one vocabulary from the loop to the job service. Bytes cross this
seam, never paths: a resumed job gets its snapshot's bytes, and snapshots come back as bytes the job service
keeps; so a backend whose engine runs on another host needs no shared filesystem. A `Failed` run raises its error
from `events()` (an `EngineError` is a sentence for the member). `capacity` is how many jobs the backend runs at
once.

This module is the whole protocol (`JobHandle`, `Backend`, and `BackendBase` with the defaults); the backends live
beside it:

    bot.backends.embedded   the engine in this process, on one thread (`engine.loop`), batching jobs of one size
    bot.backends.celery     GPU workers on other hosts (`python -m bot.backends.celery.worker`), through Redis
    bot.backends.fake       no engine at all: scripted events, jobs held mid-run on request (for tests)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Protocol

from engine.events import Event, Failed, Finished, Progress, Snapshotted
from engine.spec import JobSpec

__all__ = ["Backend", "BackendBase", "Event", "Failed", "Finished", "JobHandle", "Progress", "Snapshotted"]


class JobHandle(Protocol):
    """One submitted job: its events, and ways to cancel and steer it."""

    def events(self) -> AsyncIterator[Event]:
        """The job's events up to its Finished; a Failed run raises its error instead."""
        ...

    def cancel(self) -> None:
        """Ask the job to stop between steps; it then finishes as cancelled."""
        ...

    async def steer(self, text: str) -> str | None:
        """Aim the running job at `text` from its next step; the new spec (JSON), or None if it is not running."""


class Backend(Protocol):
    """Everything the job service uses of a backend. `BackendBase` gives the defaults of all but `submit`."""

    capacity: int  # jobs run at once
    remote: bool  # its jobs outlive this process (a stop does not cancel them) and its engine cannot read our disk
    budget: Any  # an engine.memory.Budget: the memory one job may use there (refused at submit time); None: unchecked
    owner: str | None  # set by the job service: the database's install token, for keys kept outside the database
    on_capacity: Callable[[], None] | None  # set by the job service: called when room for more jobs appears
    can_describe: bool  # whether `describe` runs here (it needs the engine in this process)

    def submit(self, job_id: int, spec: JobSpec, resume: bytes | None, snapshot_every: int) -> JobHandle:
        """A handle for a job starting from `resume` (snapshot bytes, or None) that snapshots every `snapshot_every`
        steps; nothing runs until its events are read."""
        ...

    def need_capacity(self, still_needed: Callable[[], bool]) -> None:
        """Jobs wait for room: call `on_capacity` when some appears, for as long as `still_needed()` says so."""
        ...

    async def describe(self, image: bytes, clip_model: str, cache_dir: Path):
        """What CLIP sees in `image` (an `engine.describe.Description`); only where `can_describe`."""
        ...

    async def close(self) -> None:
        """Release what the backend holds (threads, connections) as the bot stops."""
        ...

    async def readiness(self) -> str | None:
        """None when jobs can run now (models loaded, workers alive), else a sentence saying why not (/readyz)."""
        ...

    async def observe(self) -> dict[str, float]:
        """Figures for the metrics: `engine_memory_<kind>_bytes`, `workers`, `worker_slots` (those it knows)."""
        ...


class BackendBase:
    """The defaults of a backend: local, unbudgeted, a fixed capacity (nothing to wait for), no /describe."""

    remote = False
    budget = None
    owner: str | None = None
    on_capacity: Callable[[], None] | None = None
    can_describe = False

    def need_capacity(self, still_needed: Callable[[], bool]) -> None:
        """Nothing to do: a fixed capacity frees up only as jobs end, and the job service starts the next then."""

    async def describe(self, image: bytes, clip_model: str, cache_dir: Path):
        """Not here: /describe needs the engine in the bot's own process."""
        from engine.errors import InvalidSpec

        raise InvalidSpec("/describe needs the engine in the bot's own process; this bot runs it on workers.")

    async def close(self) -> None:
        """Nothing to release."""

    async def readiness(self) -> str | None:
        """Always ready: nothing to load, nobody to wait for."""
        return None

    async def observe(self) -> dict[str, float]:
        """No figures of its own."""
        return {}
